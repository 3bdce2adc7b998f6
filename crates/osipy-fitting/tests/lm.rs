//! Integration tests of the batched LM engine on models with known truth.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::QualityCode;
use osipy_fitting::models::{BiExponential, MonoExponential};
use osipy_fitting::rng::Rng;
use osipy_fitting::{fit_batch, fit_curve, FitOptions, InitialGuess, Model, PinValue};

fn times() -> Vec<f64> {
    (0..12).map(|i| i as f64 * 0.25).collect()
}

fn synth(model: &dyn Model, truth: &[f64], n_vox: usize, sigma: f64, seed: u64) -> Array2<f64> {
    let mut rng = Rng::new(seed);
    let mut y = vec![0.0; model.n_samples()];
    model.predict(truth, &mut y);
    Array2::from_shape_fn((n_vox, y.len()), |(_, i)| y[i] + sigma * rng.normal())
}

const CPU1: Device = Device::Cpu { threads: 1 };
const CPU2: Device = Device::Cpu { threads: 2 };

#[test]
fn recovers_noise_free_mono_and_bi_exponential() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let r = fit_curve(
        &mono,
        &synth(&mono, &[120.0, 0.8], 1, 0.0, 1).row(0).to_vec(),
        &FitOptions::default(),
    )
    .unwrap();
    assert_eq!(r.status, QualityCode::Converged);
    // Noise-free: exact up to floating-point round-off.
    assert!(
        (r.params[0] - 120.0).abs() < 1e-8 && (r.params[1] - 0.8).abs() < 1e-10,
        "{r:?}"
    );
    assert!(r.r2 > 1.0 - 1e-12);

    let bi = BiExponential::new(&t);
    let truth = [70.0, 4.0, 30.0, 0.3];
    let r = fit_curve(
        &bi,
        &synth(&bi, &truth, 1, 0.0, 1).row(0).to_vec(),
        &FitOptions::default(),
    )
    .unwrap();
    assert_eq!(r.status, QualityCode::Converged, "{r:?}");
    for (p, q) in r.params.iter().zip(truth) {
        assert!((p - q).abs() < 1e-6 * q, "{:?} vs {truth:?}", r.params);
    }
}

#[test]
fn noisy_fits_are_unbiased_and_standard_errors_are_calibrated() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let truth = [100.0, 0.6];
    let sigma = 2.0;
    let n = 4000;
    let data = synth(&mono, &truth, n, sigma, 42);
    let fit = fit_batch(&mono, data.view(), None, &FitOptions::default(), &CPU2).unwrap();
    assert!(fit.status.iter().all(|s| *s == QualityCode::Converged));
    for j in 0..2 {
        let col = fit.params.column(j);
        let mean = col.mean().unwrap();
        let sd = col.std(1.0);
        // Bias below 5 standard errors of the mean.
        assert!(
            (mean - truth[j]).abs() < 5.0 * sd / (n as f64).sqrt(),
            "param {j}: mean {mean}, sd {sd}"
        );
        // The covariance-based standard error matches the empirical spread
        // within 10 % (LS asymptotics; 4000 draws give ~1 % sampling error).
        let se_mean = fit.std_errors.column(j).mean().unwrap();
        assert!(
            (se_mean / sd - 1.0).abs() < 0.1,
            "param {j}: se {se_mean} vs sd {sd}"
        );
        // 1-SE intervals cover the truth ~68.3 % of the time.
        let covered = (0..n)
            .filter(|&v| (fit.params[[v, j]] - truth[j]).abs() <= fit.std_errors[[v, j]])
            .count();
        let rate = covered as f64 / n as f64;
        assert!((rate - 0.683).abs() < 0.04, "param {j}: coverage {rate}");
    }
    // Residual RMS estimates the noise level.
    let rms = fit.rms.mean().unwrap();
    assert!((rms / sigma - 1.0).abs() < 0.15, "rms {rms}");
}

#[test]
fn noisy_bi_exponential_is_recovered() {
    let t: Vec<f64> = (0..12).map(|i| i as f64 * 0.5).collect();
    let bi = BiExponential::new(&t);
    let truth = [60.0, 2.0, 40.0, 0.2];
    let data = synth(&bi, &truth, 500, 0.2, 7);
    let fit = fit_batch(&bi, data.view(), None, &FitOptions::default(), &CPU2).unwrap();
    let ok = fit.status.iter().filter(|s| s.is_valid()).count();
    assert!(ok >= 495, "{:?}", fit.status_counts());
    for j in 0..4 {
        let col: Vec<f64> = fit
            .params
            .column(j)
            .iter()
            .cloned()
            .filter(|v| v.is_finite())
            .collect();
        let mut sorted = col.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = sorted[sorted.len() / 2];
        // SNR 500 at t=0: medians within 5 % of truth.
        assert!(
            (median / truth[j] - 1.0).abs() < 0.05,
            "param {j}: median {median}"
        );
    }
}

#[test]
fn bounds_are_respected_and_flagged() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let data = synth(&mono, &[100.0, 0.8], 3, 0.5, 3);
    let opts = FitOptions::default().bound_by_name(&mono, "k", 0.0, 0.5).unwrap();
    let fit = fit_batch(&mono, data.view(), None, &opts, &CPU1).unwrap();
    for v in 0..3 {
        assert_eq!(fit.status[v], QualityCode::AtBound);
        assert_eq!(fit.params[[v, 1]], 0.5);
        assert!(fit.params[[v, 0]] > 0.0);
    }
    // A start outside the box is projected into it.
    let opts = FitOptions {
        initial: InitialGuess::Constant(vec![-50.0, 9.0]),
        ..opts
    };
    let fit = fit_batch(&mono, data.view(), None, &opts, &CPU1).unwrap();
    assert!(fit.params.column(1).iter().all(|k| *k <= 0.5 && *k >= 0.0));
}

#[test]
fn pinned_parameters_stay_fixed_constant_and_per_voxel() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let mut data = synth(&mono, &[100.0, 0.8], 2, 0.0, 3);
    let mut y = vec![0.0; 12];
    mono.predict(&[50.0, 0.3], &mut y);
    data.row_mut(1).assign(&ndarray::ArrayView1::from(&y));
    // Pin S0 per voxel to the truth: k is recovered exactly.
    let opts = FitOptions::default()
        .pin_by_name(&mono, "S0", PinValue::PerVoxel(vec![100.0, 50.0]))
        .unwrap();
    let fit = fit_batch(&mono, data.view(), None, &opts, &CPU1).unwrap();
    assert_eq!(fit.params[[0, 0]], 100.0);
    assert_eq!(fit.params[[1, 0]], 50.0);
    assert!((fit.params[[0, 1]] - 0.8).abs() < 1e-10 && (fit.params[[1, 1]] - 0.3).abs() < 1e-10);
    assert!(
        fit.std_errors[[0, 0]].is_nan(),
        "pinned parameters have no standard error"
    );
    // Pin S0 to a wrong constant: k moves, S0 does not.
    let opts = FitOptions::default()
        .pin_by_name(&mono, "S0", PinValue::Constant(90.0))
        .unwrap();
    let fit = fit_batch(&mono, data.view(), None, &opts, &CPU1).unwrap();
    assert_eq!(fit.params[[0, 0]], 90.0);
    assert!(fit.params[[0, 1]] < 0.8);
    // Unknown parameter names list the valid ones.
    let e = FitOptions::default()
        .pin_by_name(&mono, "T1", PinValue::Constant(1.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"T1\"") && e.contains("S0, k"), "{e}");
}

#[test]
fn nan_input_mask_and_non_convergence_are_per_voxel() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let mut data = synth(&mono, &[100.0, 0.8], 4, 0.5, 9);
    data[[1, 5]] = f64::NAN;
    let mask = [true, true, false, true];
    let fit = fit_batch(&mono, data.view(), Some(&mask), &FitOptions::default(), &CPU1).unwrap();
    assert_eq!(fit.status[0], QualityCode::Converged);
    assert_eq!(fit.status[1], QualityCode::NonFiniteInput);
    assert_eq!(fit.status[2], QualityCode::NotFitted);
    assert_eq!(fit.status[3], QualityCode::Converged);
    assert!(fit.params.row(1).iter().all(|v| v.is_nan()));
    assert!(fit.params.row(2).iter().all(|v| v.is_nan()));

    let bi = BiExponential::new(&t);
    let data = synth(&bi, &[70.0, 4.0, 30.0, 0.3], 1, 0.1, 9);
    let mut opts = FitOptions {
        initial: InitialGuess::Constant(vec![1.0, 0.01, 1.0, 0.02]),
        ..Default::default()
    };
    opts.lm.max_iterations = 2;
    let fit = fit_batch(&bi, data.view(), None, &opts, &CPU1).unwrap();
    assert_eq!(fit.status[0], QualityCode::MaxIterations);
    assert!(fit.params[[0, 0]].is_nan());
    assert_eq!(fit.iterations[0], 2);
}

#[test]
fn r2_threshold_marks_poor_fits_invalid() {
    let t = times();
    let mono = MonoExponential::new(&t);
    // Voxel 0: clean decay. Voxel 1: flat signal plus noise (R^2 ~ 0).
    let mut data = synth(&mono, &[100.0, 0.8], 2, 0.5, 5);
    let mut rng = Rng::new(99);
    for i in 0..12 {
        data[[1, i]] = 50.0 + 5.0 * rng.normal();
    }
    let opts = FitOptions {
        r2_threshold: Some(0.9),
        ..Default::default()
    };
    let fit = fit_batch(&mono, data.view(), None, &opts, &CPU1).unwrap();
    assert_eq!(fit.status[0], QualityCode::Converged);
    assert_eq!(fit.status[1], QualityCode::LowR2);
    assert!(fit.r2[1] < 0.9 && fit.params[[1, 1]].is_nan());
}

#[test]
fn bit_identical_for_one_and_two_threads() {
    let t = times();
    let bi = BiExponential::new(&t);
    let data = synth(&bi, &[60.0, 2.0, 40.0, 0.2], 3000, 0.5, 11);
    let opts = FitOptions {
        chunk_voxels: 64,
        ..Default::default()
    };
    let a = fit_batch(&bi, data.view(), None, &opts, &CPU1).unwrap();
    let b = fit_batch(&bi, data.view(), None, &opts, &CPU2).unwrap();
    let c = fit_batch(&bi, data.view(), None, &opts, &Device::Cpu { threads: 8 }).unwrap();
    let same = |x: &ndarray::Array2<f64>, y: &ndarray::Array2<f64>| {
        x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    };
    assert!(same(&a.params, &b.params) && same(&a.std_errors, &b.std_errors) && same(&a.params, &c.params));
    assert_eq!(a.status, b.status);
    assert_eq!(a.iterations, b.iterations);
}

/// The mono-exponential without its analytic Jacobian, to exercise the
/// finite-difference fallback.
struct NoJacobian(MonoExponential);
impl Model for NoJacobian {
    fn name(&self) -> &str {
        "mono_fd"
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
        out.copy_from_slice(&[d[0], 0.1]);
    }
}

#[test]
fn finite_difference_fallback_reaches_the_same_optimum() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let data = synth(&mono, &[100.0, 0.8], 50, 1.0, 13);
    let a = fit_batch(&mono, data.view(), None, &FitOptions::default(), &CPU1).unwrap();
    let b = fit_batch(
        &NoJacobian(mono.clone()),
        data.view(),
        None,
        &FitOptions::default(),
        &CPU1,
    )
    .unwrap();
    assert!(b.status.iter().all(|s| *s == QualityCode::Converged));
    for (p, q) in a.params.iter().zip(&b.params) {
        // Same least-squares optimum; FD Jacobians only change the path.
        assert!((p - q).abs() < 1e-6 * p.abs().max(1.0), "{p} vs {q}");
    }
    assert!(osipy_fitting::check_jacobian(&NoJacobian(mono), &[1.0, 1.0]).is_none());
}

#[test]
fn whole_call_errors_name_the_problem() {
    let mono = MonoExponential::new(&times());
    let data = Array2::<f64>::zeros((3, 10));
    let e = fit_batch(&mono, data.view(), None, &FitOptions::default(), &CPU1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("10") && e.contains("12"), "{e}");
    let data = Array2::<f64>::zeros((3, 12));
    let e = fit_batch(&mono, data.view(), Some(&[true]), &FitOptions::default(), &CPU1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask length") && e.contains("3, one per voxel"), "{e}");
    let opts = FitOptions {
        bounds: Some(vec![(0.0, 1.0), (2.0, 1.0)]),
        ..Default::default()
    };
    let e = fit_batch(&mono, data.view(), None, &opts, &CPU1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bounds of k") && e.contains("[2, 1]"), "{e}");
    let opts = FitOptions {
        r2_threshold: Some(f64::NAN),
        ..Default::default()
    };
    assert!(fit_batch(&mono, data.view(), None, &opts, &CPU1).is_err());
    // A model with nothing to fit.
    struct Constant;
    impl Model for Constant {
        fn name(&self) -> &str {
            "constant"
        }
        fn params(&self) -> &[osipy_fitting::ParamSpec] {
            &[]
        }
        fn n_samples(&self) -> usize {
            12
        }
        fn predict(&self, _: &[f64], out: &mut [f64]) {
            out.fill(1.0);
        }
        fn initial_guess(&self, _: &[f64], _: &mut [f64]) {}
    }
    let e = fit_batch(&Constant, data.view(), None, &FitOptions::default(), &CPU1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model constant") && e.contains("at least one parameter"),
        "{e}"
    );
}

#[test]
fn fitter_registry_lists_lm() {
    let mut reg = osipy_core::Registry::new();
    osipy_fitting::register(&mut reg).unwrap();
    assert_eq!(reg.names::<osipy_fitting::Fitter>(), ["lm"]);
    let f = reg.get::<osipy_fitting::Fitter>("lm").unwrap().0;
    let mono = MonoExponential::new(&times());
    let data = synth(&mono, &[10.0, 0.5], 1, 0.0, 1);
    let r = f(&mono, &data.view(), None, &FitOptions::default(), &CPU1).unwrap();
    assert!((r.params[[0, 1]] - 0.5).abs() < 1e-9);
}

#[test]
fn batch_results_map_back_onto_the_grid() {
    // A 2x3x2 grid in row-major voxel order; voxel (1, 2, 0) is masked out.
    let t = times();
    let mono = MonoExponential::new(&t);
    let shape = [2, 3, 2];
    let data = Array2::from_shape_fn((12, 12), |(v, i)| (10.0 + v as f64) * (-0.5 * t[i]).exp());
    let mut mask = vec![true; 12];
    let masked = (3 + 2) * 2; // row-major index of (1, 2, 0): (x * 3 + y) * 2 + z
    mask[masked] = false;
    let fit = fit_batch(&mono, data.view(), Some(&mask), &FitOptions::default(), &CPU1).unwrap();
    let prov = osipy_core::Provenance::default().with_method("model", "mono_exponential");
    let maps = fit.parameter_maps(mono.params(), shape, &prov).unwrap();
    assert_eq!(maps.len(), 2);
    assert_eq!(maps[0].name, "S0");
    // S0 at (x, y, z) is 10 + row-major index.
    assert!((maps[0].values[[1, 1, 1]] - (10.0 + 9.0)).abs() < 1e-8);
    assert!(maps[0].values[[1, 2, 0]].is_nan());
    assert_eq!(maps[1].quality[[1, 2, 0]], QualityCode::NotFitted);
    assert!(fit.r2_map(shape).unwrap()[[1, 2, 0]].is_nan());
    assert!(fit.r2_map(shape).unwrap()[[0, 0, 0]] > 0.999_999);
    let e = fit
        .parameter_maps(mono.params(), [2, 2, 2], &prov)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 2, 2]") && e.contains("12 voxels"), "{e}");
}

#[test]
fn progress_counter_reaches_the_voxel_count() {
    let t = times();
    let mono = MonoExponential::new(&t);
    let data = synth(&mono, &[100.0, 0.8], 1000, 0.5, 21);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let opts = FitOptions {
        chunk_voxels: 64,
        progress: Some(counter.clone()),
        ..Default::default()
    };
    fit_batch(&mono, data.view(), None, &opts, &CPU2).unwrap();
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1000);
}
