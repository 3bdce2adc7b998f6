//! Posterior sampling of a composed model (NUTS from the LM fit): calibrated
//! uncertainty on a phantom with known truth, and reproducible for any
//! thread count.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::Registry;
use osipy_fitting::bayes::BayesSettings;
use osipy_fitting::FitOptions;
use osipy_microstructure::phantom::{simulate_signals, Noise};
use osipy_microstructure::scheme::{fibonacci_directions, Sources};
use osipy_microstructure::{fit_microstructure, presets, sample_microstructure, MultiCompartment, Scheme};
use std::collections::BTreeMap;

fn setup(n: usize) -> (Scheme, MultiCompartment, Array2<f64>, Array2<f64>) {
    let mut b = vec![0.0; 3];
    let mut g = vec![[0.0, 0.0, 1.0]; 3];
    for (k, shell) in [1000.0, 2000.0].into_iter().enumerate() {
        for d in fibonacci_directions(20, k as f64) {
            b.push(shell);
            g.push(d);
        }
    }
    let src = Sources {
        bval: "test.bval",
        bvec: "test.bvec",
    };
    let s = Scheme::new(&b, &g, None, None, None, src).unwrap();
    let mut reg = Registry::new();
    osipy_microstructure::register(&mut reg).unwrap();
    let m = MultiCompartment::new(&presets::ball_stick(), &s, &reg, &BTreeMap::new()).unwrap();
    // S0, ball_D, stick_theta, stick_phi, stick_lambda_par, ball_partial_fraction.
    let mut rng = osipy_fitting::rng::Rng::new(3);
    let mut truth = Array2::zeros((n, 6));
    for v in 0..n {
        let z: f64 = rng.uniform();
        truth.row_mut(v).assign(&ndarray::arr1(&[
            100.0,
            2.5 + rng.uniform(),
            z.acos(),
            std::f64::consts::PI * (2.0 * rng.uniform() - 1.0),
            1.4 + 0.6 * rng.uniform(),
            0.2 + 0.3 * rng.uniform(),
        ]));
    }
    let data = simulate_signals(&m, truth.view(), Some(30.0), Noise::Gaussian, 9).unwrap();
    (s, m, truth, data)
}

/// The posterior mean +- 1.96 SD covers the truth at about its nominal
/// 95 % (at least 85 % of 120 voxel-parameter pairs: the binomial spread
/// at 95 % is 2 %), and the posterior means are as close as the LM fit's.
#[test]
fn posterior_intervals_cover_the_truth() {
    let n = 40;
    let (s, m, truth, data) = setup(n);
    let dev = Device::cpu(None);
    let lm = fit_microstructure(&m, &s, data.view(), None, &FitOptions::default(), 3, &dev).unwrap();
    let settings = BayesSettings {
        tune: 200,
        draws: 300,
        seed: 5,
    };
    let post = sample_microstructure(&m, &s, data.view(), &lm, &settings, &dev, None).unwrap();
    let (mut covered, mut pairs) = (0, 0);
    let (mut err_lm, mut err_post) = (0.0, 0.0);
    for v in 0..n {
        assert!(post.status[v].is_valid(), "voxel {v}: {:?}", post.status[v]);
        for j in [1usize, 4, 5] {
            let (mean, sd, t) = (post.params[[v, j]], post.std_errors[[v, j]], truth[[v, j]]);
            assert!(sd > 0.0 && sd.is_finite(), "voxel {v} parameter {j}: SD {sd}");
            pairs += 1;
            if (mean - t).abs() <= 1.96 * sd {
                covered += 1;
            }
            err_lm += ((lm.params[[v, j]] - t) / t).abs();
            err_post += ((mean - t) / t).abs();
        }
        // The direction: the posterior mean agrees with the LM one.
        let n = |t: f64, p: f64| [t.sin() * p.cos(), t.sin() * p.sin(), t.cos()];
        let (a, b) = (
            n(post.params[[v, 2]], post.params[[v, 3]]),
            n(lm.params[[v, 2]], lm.params[[v, 3]]),
        );
        let c: f64 = (0..3).map(|k| a[k] * b[k]).sum();
        assert!(
            c.abs() > 0.99,
            "voxel {v}: posterior and LM directions differ ({c})"
        );
    }
    let rate = covered as f64 / pairs as f64;
    eprintln!(
        "coverage {rate:.3} ({covered}/{pairs}); mean |rel err| LM {:.4}, posterior {:.4}",
        err_lm / pairs as f64,
        err_post / pairs as f64
    );
    assert!(rate >= 0.85, "coverage {rate}");
    assert!(
        err_post <= 1.25 * err_lm,
        "posterior means {err_post} vs LM {err_lm}"
    );
}

#[test]
fn posteriors_are_identical_for_any_thread_count() {
    let (s, m, _, data) = setup(6);
    let settings = BayesSettings {
        tune: 100,
        draws: 100,
        seed: 1,
    };
    let fits: Vec<_> = [1, 2]
        .into_iter()
        .map(|t| {
            let dev = Device::cpu(Some(t));
            let lm = fit_microstructure(&m, &s, data.view(), None, &FitOptions::default(), 1, &dev).unwrap();
            sample_microstructure(&m, &s, data.view(), &lm, &settings, &dev, None).unwrap()
        })
        .collect();
    assert_eq!(fits[0].params, fits[1].params);
    assert_eq!(fits[0].std_errors, fits[1].std_errors);
    assert!(fits[0].params.iter().all(|v| v.is_finite()));
}
