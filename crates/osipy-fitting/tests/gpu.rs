//! The GPU kernels against the CPU engine: through the C++ emulation on
//! every machine, on the GPU itself where one answers, and compiled by
//! NVRTC where it is installed (required in CI).

use ndarray::Array2;
use osipy_backend::Device;
use osipy_fitting::gpu::{emulated_fit_batch, fit_difference, program_source, GpuKernel};
use osipy_fitting::models::{BiExponential, MonoExponential};
use osipy_fitting::rng::Rng;
use osipy_fitting::{fit_batch, FitOptions, Model, PinValue};

/// Noisy bi-exponential decays with a few voxels the fit must reject.
fn phantom(t: &[f64], voxels: usize) -> Array2<f64> {
    let mut rng = Rng::new(7);
    let model = BiExponential::new(t);
    let mut y = Array2::zeros((voxels, t.len()));
    let mut row = vec![0.0; t.len()];
    for v in 0..voxels {
        let a1 = 20.0 + 60.0 * rng.uniform();
        let k1 = 1.0 + 4.0 * rng.uniform();
        let k2 = 0.05 + 0.3 * rng.uniform();
        model.predict(&[a1, k1, 100.0 - a1, k2], &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 0.5 * rng.normal();
        }
    }
    y[[3, 2]] = f64::NAN; // non-finite input
    y.row_mut(5).fill(0.0); // flat
    y
}

fn times() -> Vec<f64> {
    (0..16).map(|i| i as f64 * 0.4).collect()
}

/// Options that reach every branch of the host side: a mask, a pinned
/// per-voxel value (one of them NaN), an R^2 threshold, small chunks.
fn options(voxels: usize, p: usize) -> FitOptions {
    let mut pin = vec![100.0; voxels];
    pin[9] = f64::NAN;
    FitOptions {
        r2_threshold: Some(0.9),
        chunk_voxels: 13,
        pinned: if p == 2 {
            vec![]
        } else {
            vec![(2, PinValue::PerVoxel(pin))]
        },
        ..FitOptions::default()
    }
}

#[test]
fn emulated_kernels_equal_the_cpu_engine() {
    let t = times();
    let voxels = 211;
    let y = phantom(&t, voxels);
    let mask: Vec<bool> = (0..voxels).map(|v| v % 17 != 4).collect();
    let models: [Box<dyn Model>; 2] = [
        Box::new(MonoExponential::new(&t)),
        Box::new(BiExponential::new(&t)),
    ];
    for model in &models {
        for opts in [options(voxels, model.n_params()), FitOptions::default()] {
            let device = Device::Cpu { threads: 2 };
            let cpu = fit_batch(model.as_ref(), y.view(), Some(&mask), &opts, &device).unwrap();
            let emu = emulated_fit_batch(model.as_ref(), y.view(), Some(&mask), &opts, &device).unwrap();
            let (diff, statuses) = fit_difference(&cpu, &emu);
            // The kernel does the CPU engine's arithmetic in the same order
            // with the same libm: agreement to rounding, here exactly.
            assert_eq!(statuses, 0, "{}: statuses differ", model.name());
            assert!(diff <= 1e-12, "{}: parameters differ by {diff:e}", model.name());
            for (a, b) in cpu.r2.iter().zip(&emu.r2) {
                assert!(a == b || (a.is_nan() && b.is_nan()));
            }
            for (a, b) in cpu.std_errors.iter().zip(&emu.std_errors) {
                assert!(a == b || (a.is_nan() && b.is_nan()));
            }
            assert_eq!(cpu.iterations, emu.iterations);
            // The phantom's special voxels took their paths.
            assert!(cpu.status.iter().any(|s| s.is_valid()));
            assert_eq!(emu.status[3], osipy_core::QualityCode::NonFiniteInput);
            assert_eq!(emu.status[4], osipy_core::QualityCode::NotFitted);
        }
    }
}

#[test]
fn a_model_without_a_gpu_kernel_is_an_error_on_a_gpu() {
    struct NoKernel(MonoExponential);
    impl Model for NoKernel {
        fn name(&self) -> &str {
            "no_kernel"
        }
        fn params(&self) -> &[osipy_fitting::ParamSpec] {
            self.0.params()
        }
        fn n_samples(&self) -> usize {
            self.0.n_samples()
        }
        fn predict(&self, p: &[f64], out: &mut [f64]) {
            self.0.predict(p, out)
        }
        fn initial_guess(&self, d: &[f64], out: &mut [f64]) {
            self.0.initial_guess(d, out)
        }
    }
    let t = times();
    let y = phantom(&t, 12);
    let m = NoKernel(MonoExponential::new(&t));
    let strict = Device::Cuda {
        ordinal: 0,
        threads: 1,
        fallback: false,
    };
    let e = fit_batch(&m, y.view(), None, &FitOptions::default(), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model no_kernel has no GPU kernel") && e.contains("--device cpu"),
        "{e}"
    );
    let e = emulated_fit_batch(&m, y.view(), None, &FitOptions::default(), &Device::cpu(Some(1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no GPU kernel"), "{e}");
    // With `auto`'s device the model is fitted on the CPU instead.
    let auto = Device::Cuda {
        ordinal: 0,
        threads: 1,
        fallback: true,
    };
    let fit = fit_batch(&m, y.view(), None, &FitOptions::default(), &auto).unwrap();
    let cpu = fit_batch(&m, y.view(), None, &FitOptions::default(), &Device::cpu(Some(1))).unwrap();
    assert_eq!(fit_difference(&fit, &cpu), (0.0, 0));
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_naming_it() {
    let broken = GpuKernel {
        key: "broken",
        source: &["__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) { undefined_name; }"],
        consts: vec![0.0; 4],
    };
    struct Broken(MonoExponential, GpuKernel);
    impl Model for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn params(&self) -> &[osipy_fitting::ParamSpec] {
            self.0.params()
        }
        fn n_samples(&self) -> usize {
            self.0.n_samples()
        }
        fn predict(&self, p: &[f64], out: &mut [f64]) {
            self.0.predict(p, out)
        }
        fn initial_guess(&self, d: &[f64], out: &mut [f64]) {
            self.0.initial_guess(d, out)
        }
        fn gpu_kernel(&self) -> Option<GpuKernel> {
            Some(self.1.clone())
        }
    }
    let t = times();
    let m = Broken(MonoExponential::new(&t), broken.clone());
    let y = phantom(&t, 12);
    let e = emulated_fit_batch(&m, y.view(), None, &FitOptions::default(), &Device::cpu(Some(1)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GPU program of model kernel broken did not compile"),
        "{e}"
    );
    assert!(e.contains("undefined_name"), "{e}");
    // The program names its sizes and model.
    let src = program_source(&broken, 16, osipy_fitting::gpu::Entry::Lm { p: 2 }, "");
    assert!(
        src.contains("#define OSIPY_N 16")
            && src.contains("#define OSIPY_P 2")
            && src.contains("OSIPY_LM_KERNEL")
    );
}

/// The real device, where one answers (else skipped, saying so).
#[cfg(feature = "cuda")]
#[test]
fn gpu_fits_equal_the_cpu_engine() {
    if !osipy_backend::is_gpu_available() {
        eprintln!("skipped: no CUDA GPU answers on this machine");
        return;
    }
    let t = times();
    let voxels = 5000;
    let y = phantom(&t, voxels);
    let gpu = Device::Cuda {
        ordinal: 0,
        threads: 2,
        fallback: false,
    };
    for model in [
        Box::new(MonoExponential::new(&t)) as Box<dyn Model>,
        Box::new(BiExponential::new(&t)),
    ] {
        let opts = options(voxels, model.n_params());
        let cpu = fit_batch(model.as_ref(), y.view(), None, &opts, &Device::cpu(Some(2))).unwrap();
        let dev = fit_batch(model.as_ref(), y.view(), None, &opts, &gpu).unwrap();
        let (diff, statuses) = fit_difference(&cpu, &dev);
        eprintln!(
            "{}: max relative difference {diff:e}, {statuses} statuses differ",
            model.name()
        );
        assert!(
            diff < 1e-6 && statuses == 0,
            "{}: {diff:e}, {statuses}",
            model.name()
        );
    }
}

/// Every kernel of this crate compiles with NVRTC. Where NVRTC is not
/// installed the test says so and passes, unless OSIPY_REQUIRE_NVRTC is set
/// (as in CI, which installs it).
#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    if !osipy_backend::cuda::nvrtc_present() && std::env::var_os("OSIPY_REQUIRE_NVRTC").is_none() {
        eprintln!("skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure");
        return;
    }
    let t = times();
    for model in [
        Box::new(MonoExponential::new(&t)) as Box<dyn Model>,
        Box::new(BiExponential::new(&t)),
    ] {
        let k = model.gpu_kernel().unwrap();
        let ptx = osipy_fitting::gpu::compile_ptx(
            &k,
            model.n_samples(),
            osipy_fitting::gpu::Entry::Lm { p: model.n_params() },
            Some("compute_90"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(ptx.to_src().contains(".entry osipy_lm"), "{}", model.name());
    }
}
