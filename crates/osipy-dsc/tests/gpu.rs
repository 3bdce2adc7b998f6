//! The DSC gamma-variate's and vascular model's GPU kernels against the CPU engine: through the
//! C++ emulation on every machine, on the GPU where one answers, and
//! compiled by NVRTC where it is installed (required in CI).

use ndarray::Array2;
use osipy_dsc::gamma::GammaVariate;
use osipy_fitting::gpu::{equivalence, Target};
use osipy_fitting::rng::Rng;
use osipy_fitting::{FitOptions, Model};

/// First-pass curves (1.5 s frames) with noise, as the recirculation
/// removal fits them, and the model on their times.
fn case(times: &[f64], voxels: usize) -> Array2<f64> {
    let mut rng = Rng::new(9);
    let m = GammaVariate { times };
    let mut y = Array2::zeros((voxels, times.len()));
    let mut row = vec![0.0; times.len()];
    for v in 0..voxels {
        let p = [
            5.0 + 20.0 * rng.uniform(),
            8.0 + 6.0 * rng.uniform(),
            3.0 + 3.0 * rng.uniform(),
            2.0 + 3.0 * rng.uniform(),
        ];
        m.predict(&p, &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 0.2 * rng.normal();
        }
    }
    y
}

/// How many of the voxels the CPU engine fits validly (the comparison
/// must cover real fits, not failures).
fn valid(m: &dyn Model, y: &Array2<f64>) -> usize {
    let fit = osipy_fitting::fit_batch(
        m,
        y.view(),
        None,
        &FitOptions::default(),
        &osipy_backend::Device::cpu(Some(2)),
    )
    .unwrap();
    fit.status.iter().filter(|s| s.is_valid()).count()
}

fn times() -> Vec<f64> {
    (0..24).map(|i| i as f64 * 1.5).collect()
}

#[test]
fn emulated_gamma_variate_kernel_equals_the_cpu_engine() {
    let t = times();
    let m = GammaVariate { times: &t };
    let y = case(&t, 200);
    let (diff, statuses) = equivalence(&m, y.view(), None, &FitOptions::default(), Target::Emulation)
        .unwrap()
        .unwrap();
    assert_eq!(statuses, 0);
    assert!(valid(&m, &y) > 100);
    assert!(diff <= 1e-12, "parameters differ by {diff:e}");
}

#[cfg(feature = "cuda")]
#[test]
fn gamma_variate_kernel_compiles_with_nvrtc_and_matches_on_a_gpu() {
    let t = times();
    let m = GammaVariate { times: &t };
    if !osipy_fitting::gpu::nvrtc_compiles(&m).unwrap_or_else(|e| panic!("{e}")) {
        eprintln!("skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure");
        return;
    }
    let y = case(&t, 20_000);
    match equivalence(&m, y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap() {
        None => eprintln!("skipped: no CUDA GPU answers on this machine"),
        Some((diff, statuses)) => {
            eprintln!("gamma_variate: max relative difference {diff:e}, {statuses} statuses differ");
            assert!(
                diff < 1e-6 && statuses == 0,
                "gamma_variate: {diff:e}, {statuses}"
            );
        }
    }
}

/// The vascular model on a gamma-variate AIF (40 frames of 1.5 s), shape 3,
/// with curves around flow 0.005-0.02 /s, MTT 2-8 s, delay 0-3 s.
fn vascular_case(voxels: usize) -> (osipy_dsc::vascular::VascularModel, Array2<f64>) {
    let t: Vec<f64> = (0..40).map(|i| i as f64 * 1.5).collect();
    let aif: Vec<f64> = t
        .iter()
        .map(|t| GammaVariate::value(&[10.0, 6.0, 4.0, 3.0], *t))
        .collect();
    let m = osipy_dsc::vascular::VascularModel::new(&aif, 1.5, 3).unwrap();
    let mut rng = Rng::new(21);
    let mut y = Array2::zeros((voxels, t.len()));
    let mut row = vec![0.0; t.len()];
    for v in 0..voxels {
        let p = [
            0.005 + 0.015 * rng.uniform(),
            2.0 + 6.0 * rng.uniform(),
            3.0 * rng.uniform(),
        ];
        m.predict(&p, &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 0.01 * rng.normal();
        }
    }
    (m, y)
}

#[test]
fn emulated_vascular_kernel_equals_the_cpu_engine() {
    let (m, y) = vascular_case(150);
    let (diff, statuses) = equivalence(&m, y.view(), None, &FitOptions::default(), Target::Emulation)
        .unwrap()
        .unwrap();
    assert_eq!(statuses, 0);
    assert!(valid(&m, &y) > 100);
    assert!(diff <= 1e-12, "parameters differ by {diff:e}");
}

#[cfg(feature = "cuda")]
#[test]
fn vascular_kernel_compiles_with_nvrtc_and_matches_on_a_gpu() {
    let (m, y) = vascular_case(20_000);
    if !osipy_fitting::gpu::nvrtc_compiles(&m).unwrap_or_else(|e| panic!("{e}")) {
        eprintln!("skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure");
        return;
    }
    match equivalence(&m, y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap() {
        None => eprintln!("skipped: no CUDA GPU answers on this machine"),
        Some((diff, statuses)) => {
            eprintln!("vascular_model: max relative difference {diff:e}, {statuses} statuses differ");
            assert!(
                diff < 1e-6 && statuses == 0,
                "vascular_model: {diff:e}, {statuses}"
            );
        }
    }
}

/// The SVD deconvolutions on a GPU: every method's kernel compiles with
/// NVRTC, and where a GPU answers its flows, Tmax and statuses equal the
/// CPU's to 1e-9.
#[cfg(feature = "cuda")]
#[test]
fn svd_kernels_compile_with_nvrtc_and_match_on_a_gpu() {
    use osipy_dsc::deconv::{csvd, osvd, ssvd, svd_gpu_kernels, tikhonov, DeconvInput, DeconvSettings};
    let t: Vec<f64> = (0..40).map(|i| i as f64 * 1.5).collect();
    let aif: Vec<f64> = t
        .iter()
        .map(|t| GammaVariate::value(&[10.0, 6.0, 4.0, 3.0], *t))
        .collect();
    let (_, curves) = vascular_case(5000);
    let mask = vec![true; 5000];
    let input = DeconvInput {
        curves: curves.view(),
        mask: &mask,
        aif: &aif,
        times: &t,
    };
    let settings = DeconvSettings::default();
    let (kernels, n) = svd_gpu_kernels(&input, &settings).unwrap();
    assert_eq!(kernels.len(), 4);
    for kernel in &kernels {
        let entry = osipy_fitting::gpu::Entry::Map { record: 3 };
        if !osipy_fitting::gpu::nvrtc_compiles_kernel(kernel, n, entry).unwrap_or_else(|e| panic!("{e}")) {
            eprintln!(
                "skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure"
            );
            return;
        }
    }
    let gpu = match osipy_backend::Device::select(osipy_backend::DeviceChoice::Cuda(0), Some(2)) {
        Ok((d, _)) => d,
        Err(e) if std::env::var_os("OSIPY_REQUIRE_GPU").is_some() => panic!("{e}"),
        Err(_) => {
            eprintln!("skipped: no CUDA GPU answers on this machine");
            return;
        }
    };
    for (name, method) in [
        ("ssvd", ssvd as osipy_dsc::deconv::DeconvFn),
        ("csvd", csvd),
        ("osvd", osvd),
        ("tikhonov", tikhonov),
    ] {
        let a = method(&input, &settings, &gpu.host()).unwrap();
        let b = method(&input, &settings, &gpu).unwrap();
        assert_eq!(a.status, b.status, "{name}");
        for (x, y) in a.flow.iter().zip(&b.flow).chain(a.tmax.iter().zip(&b.tmax)) {
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x.is_nan() && y.is_nan()),
                "{name}: {x} vs {y}"
            );
        }
    }
}
