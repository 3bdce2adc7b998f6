//! The multi-PLD Buxton model's GPU kernel against the CPU engine: through
//! the C++ emulation on every machine, on the GPU where one answers, and
//! compiled by NVRTC where it is installed (required in CI).

use ndarray::Array2;
use osipy_asl::kinetics::{LabelingScheme, Timing, WHITE_PAPER_3T};
use osipy_asl::multi_pld::BuxtonModel;
use osipy_fitting::gpu::{equivalence, Target};
use osipy_fitting::rng::Rng;
use osipy_fitting::{FitOptions, Model};

/// pCASL (with and without the arterial component) and PASL protocols,
/// PLDs on both sides of the arrival times, and label durations that
/// change between PLDs (the fill is recomputed).
fn cases() -> Vec<(&'static str, BuxtonModel)> {
    let pcasl: Vec<Timing> = (1..=10)
        .map(|i| Timing {
            pld: 0.25 * i as f64,
            tau: if i <= 5 { 1.8 } else { 1.2 },
        })
        .collect();
    let pasl: Vec<Timing> = (1..=10)
        .map(|i| Timing {
            pld: 0.3 * i as f64,
            tau: 0.8,
        })
        .collect();
    let p = WHITE_PAPER_3T;
    vec![
        (
            "pcasl",
            BuxtonModel::new(LabelingScheme::Pcasl, pcasl.clone(), p, false).unwrap(),
        ),
        (
            "pasl",
            BuxtonModel::new(LabelingScheme::Pasl, pasl, p, false).unwrap(),
        ),
        (
            "pcasl_arterial",
            BuxtonModel::new(LabelingScheme::Pcasl, pcasl, p, true).unwrap(),
        ),
    ]
}

/// ΔM/M0 curves around CBF 20-80 ml/100g/min, ATT 0.3-2 s (and aBV,
/// aATT), with noise of 2 % of a typical peak.
fn curves(m: &BuxtonModel, voxels: usize) -> Array2<f64> {
    let mut rng = Rng::new(13);
    let n = m.n_samples();
    let mut y = Array2::zeros((voxels, n));
    let mut row = vec![0.0; n];
    for v in 0..voxels {
        let mut p = vec![20.0 + 60.0 * rng.uniform(), 0.3 + 1.7 * rng.uniform()];
        if m.n_params() == 4 {
            p.extend([0.002 + 0.01 * rng.uniform(), 0.2 + 0.6 * rng.uniform()]);
        }
        m.predict(&p, &mut row);
        for (o, s) in y.row_mut(v).iter_mut().zip(&row) {
            *o = s + 2e-4 * rng.normal();
        }
    }
    y
}

#[test]
fn emulated_buxton_kernels_equal_the_cpu_engine() {
    for (name, m) in cases() {
        let y = curves(&m, 150);
        let (diff, statuses) = equivalence(&m, y.view(), None, &FitOptions::default(), Target::Emulation)
            .unwrap()
            .unwrap();
        // Without the arterial term the arithmetic is the CPU's to the bit;
        // with it, erf is the C library's in the kernel and puruspe's in
        // Rust (about an ulp apart), so the fits agree to the 1e-6.
        let tolerance = if m.n_params() == 4 { 1e-6 } else { 1e-12 };
        eprintln!("{name}: max relative difference {diff:e}, {statuses} statuses differ");
        assert_eq!(statuses, 0, "{name}");
        assert!(diff <= tolerance, "{name}: parameters differ by {diff:e}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn buxton_kernels_compile_with_nvrtc_and_match_on_a_gpu() {
    for (name, m) in cases() {
        if !osipy_fitting::gpu::nvrtc_compiles(&m).unwrap_or_else(|e| panic!("{name}: {e}")) {
            eprintln!(
                "skipped: NVRTC (libnvrtc.so) not found; set OSIPY_REQUIRE_NVRTC=1 to make this a failure"
            );
            return;
        }
        let y = curves(&m, 20_000);
        match equivalence(&m, y.view(), None, &FitOptions::default(), Target::Gpu(0)).unwrap() {
            None => eprintln!("skipped: no CUDA GPU answers on this machine"),
            Some((diff, statuses)) => {
                eprintln!("{name}: max relative difference {diff:e}, {statuses} statuses differ");
                assert!(diff < 1e-6 && statuses == 0, "{name}: {diff:e}, {statuses}");
            }
        }
    }
}
