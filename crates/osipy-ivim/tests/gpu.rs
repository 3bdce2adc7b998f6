//! The IVIM models' GPU kernels against the CPU engine: through the C++
//! emulation on every machine, on the GPU where one answers, and compiled
//! by NVRTC where it is installed (required in CI).

use ndarray::Array2;
use osipy_fitting::gpu::{equivalence, Target};
use osipy_fitting::rng::Rng;
use osipy_fitting::FitOptions;
use osipy_ivim::models::{model, MODEL_NAMES};

/// b-values of a typical abdominal protocol (s/mm^2), b = 0 twice.
const B: [f64; 12] = [
    0.0, 0.0, 10.0, 20.0, 40.0, 80.0, 110.0, 140.0, 170.0, 200.0, 400.0, 800.0,
];

/// Noisy bi-exponential decays (S0 ~ 1000, SNR ~ 100), one non-finite voxel.
fn curves(voxels: usize) -> Array2<f64> {
    let truth = model("biexponential", &B).unwrap();
    let mut rng = Rng::new(3);
    let mut y = Array2::zeros((voxels, B.len()));
    let mut row = [0.0; B.len()];
    for v in 0..voxels {
        let p = [
            800.0 + 400.0 * rng.uniform(),
            0.05 + 0.25 * rng.uniform(),
            0.0005 + 0.002 * rng.uniform(),
            0.01 + 0.08 * rng.uniform(),
        ];
        truth.predict(&p, &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 10.0 * rng.normal();
        }
    }
    y[[2, 5]] = f64::INFINITY;
    y
}

fn options() -> FitOptions {
    FitOptions {
        r2_threshold: Some(0.8),
        chunk_voxels: 64,
        ..FitOptions::default()
    }
}

#[test]
fn emulated_ivim_kernels_equal_the_cpu_engine() {
    let y = curves(300);
    let mask: Vec<bool> = (0..300).map(|v| v % 13 != 1).collect();
    for name in MODEL_NAMES {
        let m = model(name, &B).unwrap();
        let (diff, statuses) = equivalence(m.as_ref(), y.view(), Some(&mask), &options(), Target::Emulation)
            .unwrap()
            .unwrap();
        // Same arithmetic in the same order, same libm: equal to rounding.
        assert_eq!(statuses, 0, "{name}");
        assert!(diff <= 1e-12, "{name}: parameters differ by {diff:e}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn ivim_kernels_compile_with_nvrtc() {
    for name in MODEL_NAMES {
        let m = model(name, &B).unwrap();
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
fn gpu_ivim_fits_equal_the_cpu_engine() {
    let y = curves(20_000);
    for name in MODEL_NAMES {
        let m = model(name, &B).unwrap();
        match equivalence(m.as_ref(), y.view(), None, &options(), Target::Gpu(0)).unwrap() {
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
