//! Bayesian IVIM: calibration of the posterior on synthetic data.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::QualityCode;
use osipy_fitting::rng::Rng;
use osipy_fitting::Model;
use osipy_ivim::bayes::BayesSettings;
use osipy_ivim::grid::{BayesOptions, Sampler};
use osipy_ivim::{fit_ivim, Biexponential, IvimFitOptions, IvimStrategy};

#[test]
fn nuts_credible_intervals_cover_the_truth_at_the_stated_rate() {
    // 120 voxels, same truth, independent Gaussian noise (SNR 50 at b = 0).
    // A calibrated posterior puts the truth inside the 95 % interval ~95 %
    // of the time; binomial SD at n = 120 is 2 %, so we accept [0.87, 1.0].
    let b = [
        0.0, 10.0, 20.0, 30.0, 50.0, 80.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1000.0,
    ];
    let truth = [1.0, 0.15, 1.0e-3, 0.03];
    let m = Biexponential::new(&b).unwrap();
    let mut clean = vec![0.0; b.len()];
    m.predict(&truth, &mut clean);
    let n = 120;
    let mut rng = Rng::new(2024);
    let data = Array2::from_shape_fn((n, b.len()), |(_, i)| clean[i] + rng.normal() / 50.0);
    let opts = IvimFitOptions {
        strategy: IvimStrategy::Bayesian,
        bayes: BayesOptions {
            sampler: Sampler::Nuts,
            nuts: BayesSettings {
                tune: 300,
                draws: 400,
                seed: 7,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let fit = fit_ivim(data.view(), &b, None, &opts, &Device::Cpu { threads: 2 }).unwrap();
    let iv = fit.posterior_interval.as_ref().unwrap();
    let valid: Vec<usize> = (0..n).filter(|&v| fit.status[v].is_valid()).collect();
    assert!(
        valid.len() >= n - 2,
        "{:?}",
        fit.status.iter().filter(|s| !s.is_valid()).collect::<Vec<_>>()
    );
    for (q, (name, t)) in [("f", truth[1]), ("D", truth[2]), ("Dstar", truth[3])]
        .iter()
        .enumerate()
    {
        let covered = valid
            .iter()
            .filter(|&&v| iv[[v, 2 * q]] <= *t && *t <= iv[[v, 2 * q + 1]])
            .count();
        let rate = covered as f64 / valid.len() as f64;
        assert!((0.87..=1.0).contains(&rate), "{name}: coverage {rate}");
        // Posterior means of the well-identified f and D sit near the truth.
        // D* is weakly identified at SNR 50: under its flat prior on
        // [0.005, 0.2] the posterior is wide and right-skewed, so its mean
        // lies above the truth (measured: 0.044 vs 0.03) while its interval
        // stays calibrated (checked above).
        if *name != "Dstar" {
            let mean: f64 = valid.iter().map(|&v| fit.params[[v, q + 1]]).sum::<f64>() / valid.len() as f64;
            assert!((mean / t - 1.0).abs() < 0.1, "{name}: mean {mean} vs {t}");
        }
        // Posterior SDs are positive.
        assert!(valid.iter().all(|&v| fit.std_errors[[v, q + 1]] > 0.0));
    }
    // Reproducible: same seed, same draws, whatever the thread count.
    let one = fit_ivim(data.view(), &b, None, &opts, &Device::Cpu { threads: 1 }).unwrap();
    assert!(one
        .params
        .iter()
        .zip(fit.params.iter())
        .all(|(a, c)| a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan())));
    assert!(fit.status.iter().all(|s| *s != QualityCode::NotFitted));
}
