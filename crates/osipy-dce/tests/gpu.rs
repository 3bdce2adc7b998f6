//! The DCE models' GPU kernels against the CPU engine: through the C++
//! emulation of the kernels on every machine, on the GPU where one
//! answers, and compiled by NVRTC where it is installed (required in CI).

use ndarray::Array2;
use osipy_backend::Device;
use osipy_dce::{model, PkInput};
use osipy_fitting::gpu::{equivalence, Target};
use osipy_fitting::rng::Rng;
use osipy_fitting::{fit_batch, FitOptions, Model};

/// The models with a GPU kernel: every built-in one.
const WITH_KERNEL: [&str; 5] = ["tofts", "extended_tofts", "patlak", "2cxm", "2cum"];

/// A uniform 80-frame grid of 4 s (the benchmark's), and a grid with two
/// frame rates (fast during the first pass), which takes the convolution's
/// other branch.
fn grids() -> [Vec<f64>; 2] {
    let uniform = (0..80).map(|i| i as f64 * 4.0).collect();
    let mut mixed: Vec<f64> = (0..30).map(|i| i as f64 * 2.0).collect();
    mixed.extend((0..30).map(|i| 60.0 + i as f64 * 6.0));
    [uniform, mixed]
}

/// Noisy curves of `m` around plausible parameters, with a non-finite voxel.
fn curves(m: &dyn Model, voxels: usize) -> Array2<f64> {
    let mut rng = Rng::new(11);
    let n = m.n_samples();
    let mut y = Array2::zeros((voxels, n));
    let mut row = vec![0.0; n];
    for v in 0..voxels {
        let p: Vec<f64> = m
            .params()
            .iter()
            .map(|s| match s.name {
                "Ktrans" => 0.02 + 0.4 * rng.uniform(),
                "ve" => 0.1 + 0.5 * rng.uniform(),
                "Fp" => 20.0 + 60.0 * rng.uniform(),
                "PS" => 0.02 + 0.2 * rng.uniform(),
                _ => 0.01 + 0.1 * rng.uniform(),
            })
            .collect();
        m.predict(&p, &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 0.01 * rng.normal();
        }
    }
    y[[1, 7]] = f64::NAN;
    y
}

fn input(t: &[f64]) -> PkInput {
    let cp = osipy_aif::Aif::parker().shift(20.0).plasma(t, 0.42).unwrap();
    PkInput::new(t, &cp).unwrap()
}

/// The models with a fitted delay, on curves whose bolus comes 0-6 s
/// after the AIF's.
#[test]
fn emulated_delayed_dce_kernels_equal_the_cpu_engine() {
    for t in grids() {
        for name in WITH_KERNEL {
            let m = osipy_dce::model_with_delay(name, input(&t)).unwrap();
            let plain = model(name, input(&t)).unwrap();
            let base = curves(plain.as_ref(), 60);
            let mut y = base.clone();
            let mut rng = Rng::new(17);
            let mut row = vec![0.0; t.len()];
            let mut p = vec![0.0; m.n_params()];
            for v in 0..60 {
                // Parameters near the plain model's guess for a curve, the
                // bolus delayed by up to 6 s.
                let k = plain.n_params();
                plain.initial_guess(&base.row(v).to_vec(), &mut p[..k]);
                for (x, s) in p[..k].iter_mut().zip(plain.params()) {
                    *x = x.clamp(s.bounds.0, s.bounds.1);
                }
                p[k] = 6.0 * rng.uniform();
                m.predict(&p, &mut row);
                for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
                    *o = s + 0.01 * rng.normal();
                }
            }
            let opts = FitOptions {
                chunk_voxels: 16,
                ..FitOptions::default()
            };
            let (diff, statuses) = equivalence(m.as_ref(), y.view(), None, &opts, Target::Emulation)
                .unwrap()
                .unwrap();
            assert_eq!(statuses, 0, "{name} delayed");
            assert!(diff <= 1e-12, "{name} delayed: parameters differ by {diff:e}");
            let fit = fit_batch(m.as_ref(), y.view(), None, &opts, &Device::cpu(Some(2))).unwrap();
            assert!(
                fit.status.iter().filter(|s| s.is_valid()).count() > 30,
                "{name} delayed"
            );
        }
    }
}

#[test]
fn emulated_dce_kernels_equal_the_cpu_engine() {
    for t in grids() {
        for name in WITH_KERNEL {
            let m = model(name, input(&t)).unwrap();
            let y = curves(m.as_ref(), 150);
            let mask: Vec<bool> = (0..150).map(|v| v % 11 != 3).collect();
            let opts = FitOptions {
                r2_threshold: Some(0.5),
                chunk_voxels: 32,
                ..FitOptions::default()
            };
            let (diff, statuses) = equivalence(m.as_ref(), y.view(), Some(&mask), &opts, Target::Emulation)
                .unwrap()
                .unwrap();
            // Same arithmetic in the same order, same libm: equal to rounding.
            assert_eq!(statuses, 0, "{name}");
            assert!(diff <= 1e-12, "{name}: parameters differ by {diff:e}");
            let fit = fit_batch(m.as_ref(), y.view(), Some(&mask), &opts, &Device::cpu(Some(2))).unwrap();
            assert!(fit.status.iter().filter(|s| s.is_valid()).count() > 100, "{name}");
        }
    }
}

#[test]
fn every_builtin_model_has_a_kernel_plain_and_delayed() {
    let t = &grids()[0];
    for name in WITH_KERNEL {
        let delayed = osipy_dce::model_with_delay(name, input(t)).unwrap();
        assert_eq!(delayed.gpu_kernel().unwrap().key, format!("dce_{name}_delayed"));
        let k = model(name, input(t)).unwrap().gpu_kernel().unwrap();
        assert_eq!(k.key, format!("dce_{name}"));
        assert_eq!(k.consts.len(), 64 + 2 * t.len());
    }
}

#[cfg(feature = "cuda")]
#[test]
fn dce_kernels_compile_with_nvrtc() {
    let t = &grids()[0];
    let plain = WITH_KERNEL.map(|name| (name, model(name, input(t)).unwrap()));
    let delayed = WITH_KERNEL.map(|name| (name, osipy_dce::model_with_delay(name, input(t)).unwrap()));
    for (name, m) in plain.into_iter().chain(delayed) {
        if !osipy_fitting::gpu::nvrtc_compiles(m.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}")) {
            eprintln!(
                "skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure"
            );
            return;
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn gpu_dce_fits_equal_the_cpu_engine() {
    for t in grids() {
        for name in WITH_KERNEL {
            let m = model(name, input(&t)).unwrap();
            let y = curves(m.as_ref(), 20_000);
            // The same curves fitted with a delay too.
            let d = osipy_dce::model_with_delay(name, input(&t)).unwrap();
            let r = equivalence(d.as_ref(), y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap();
            if let Some((diff, statuses)) = r {
                eprintln!("{name} delayed: max relative difference {diff:e}, {statuses} statuses differ");
                assert!(
                    diff < 1e-6 && statuses == 0,
                    "{name} delayed: {diff:e}, {statuses}"
                );
            }
            match equivalence(m.as_ref(), y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap() {
                None => {
                    eprintln!("skipped: no CUDA GPU answers on this machine");
                    return;
                }
                Some((diff, statuses)) => {
                    eprintln!("{name}: max relative difference {diff:e}, {statuses} statuses differ");
                    assert!(diff < 1e-6 && statuses == 0, "{name}: {diff:e}, {statuses}");
                }
            }
        }
    }
}

/// VFA signals of 4 flip angles with B1 pinned at 1 (the nominal angles'
/// sines and cosines) and pinned to a B1 map (sines and cosines computed).
fn vfa_cases() -> Vec<(osipy_dce::VfaModel, Array2<f64>, FitOptions)> {
    use osipy_fitting::PinValue;
    let params = osipy_dce::VfaParams {
        tr: 0.005,
        flip_angles: vec![2.0, 5.0, 10.0, 15.0],
    };
    let m = osipy_dce::VfaModel::new(&params).unwrap();
    let mut rng = Rng::new(5);
    let voxels = 200;
    let b1: Vec<f64> = (0..voxels).map(|_| 0.8 + 0.4 * rng.uniform()).collect();
    let mut y = Array2::zeros((voxels, 4));
    let mut row = [0.0; 4];
    for v in 0..voxels {
        m.predict(
            &[1000.0 + 500.0 * rng.uniform(), 0.5 + 1.5 * rng.uniform(), b1[v]],
            &mut row,
        );
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 0.2 * rng.normal();
        }
    }
    let pinned = |pin| FitOptions {
        pinned: vec![(2, pin)],
        ..FitOptions::default()
    };
    vec![
        (m.clone(), y.clone(), pinned(PinValue::Constant(1.0))),
        (m, y, pinned(PinValue::PerVoxel(b1))),
    ]
}

#[test]
fn emulated_vfa_kernel_equals_the_cpu_engine() {
    for (m, y, opts) in vfa_cases() {
        let (diff, statuses) = equivalence(&m, y.view(), None, &opts, Target::Emulation)
            .unwrap()
            .unwrap();
        assert_eq!(statuses, 0);
        assert!(diff <= 1e-12, "parameters differ by {diff:e}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn vfa_kernel_compiles_with_nvrtc_and_matches_on_a_gpu() {
    for (m, y, opts) in vfa_cases() {
        if !osipy_fitting::gpu::nvrtc_compiles(&m).unwrap_or_else(|e| panic!("{e}")) {
            eprintln!(
                "skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure"
            );
            return;
        }
        match equivalence(&m, y.view(), None, &opts, Target::Gpu(0)).unwrap() {
            None => eprintln!("skipped: no CUDA GPU answers on this machine"),
            Some((diff, statuses)) => {
                eprintln!("vfa: max relative difference {diff:e}, {statuses} statuses differ");
                assert!(diff < 1e-6 && statuses == 0, "vfa: {diff:e}, {statuses}");
            }
        }
    }
}

/// Look-Locker recoveries (the absolute value crosses zero) at 10
/// inversion times.
fn look_locker_case(voxels: usize) -> (osipy_dce::LookLockerModel, Array2<f64>) {
    let ti: Vec<f64> = (0..10).map(|i| 0.1 + 0.35 * i as f64).collect();
    let m = osipy_dce::LookLockerModel::new(&ti).unwrap();
    let mut rng = Rng::new(23);
    let mut y = Array2::zeros((voxels, ti.len()));
    let mut row = vec![0.0; ti.len()];
    for v in 0..voxels {
        let a = 500.0 + 500.0 * rng.uniform();
        m.predict(
            &[a, a * (1.6 + 0.3 * rng.uniform()), 0.4 + 1.2 * rng.uniform()],
            &mut row,
        );
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 2.0 * rng.normal();
        }
    }
    (m, y)
}

#[test]
fn emulated_look_locker_kernel_equals_the_cpu_engine() {
    let (m, y) = look_locker_case(200);
    let (diff, statuses) = equivalence(&m, y.view(), None, &FitOptions::default(), Target::Emulation)
        .unwrap()
        .unwrap();
    assert_eq!(statuses, 0);
    assert!(diff <= 1e-12, "parameters differ by {diff:e}");
    let fit = fit_batch(&m, y.view(), None, &FitOptions::default(), &Device::cpu(Some(2))).unwrap();
    assert!(fit.status.iter().filter(|s| s.is_valid()).count() > 150);
}

#[cfg(feature = "cuda")]
#[test]
fn look_locker_kernel_compiles_with_nvrtc_and_matches_on_a_gpu() {
    let (m, y) = look_locker_case(20_000);
    if !osipy_fitting::gpu::nvrtc_compiles(&m).unwrap_or_else(|e| panic!("{e}")) {
        eprintln!("skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure");
        return;
    }
    match equivalence(&m, y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap() {
        None => eprintln!("skipped: no CUDA GPU answers on this machine"),
        Some((diff, statuses)) => {
            eprintln!("look_locker: max relative difference {diff:e}, {statuses} statuses differ");
            assert!(diff < 1e-6 && statuses == 0, "look_locker: {diff:e}, {statuses}");
        }
    }
}
