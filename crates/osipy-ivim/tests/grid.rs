//! The grid posterior of the `bayesian` strategy: its marginalisation, its
//! refinement, its calibration and the population prior of D*.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_fitting::rng::Rng;
use osipy_fitting::Model;
use osipy_ivim::grid::{
    population_prior, BayesOptions, DPrior, DstarPrior, GridPosterior, GridSettings, RatePrior, Summary,
};
use osipy_ivim::{fit_ivim, Biexponential, IvimFit, IvimFitOptions, IvimStrategy, BIEXP_BOUNDS};

const B: [f64; 12] = [
    0.0, 10.0, 20.0, 30.0, 50.0, 80.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1000.0,
];

fn noisy(truth: [f64; 4], n: usize, snr: f64, seed: u64) -> Array2<f64> {
    let m = Biexponential::new(&B).unwrap();
    let mut clean = vec![0.0; B.len()];
    m.predict(&truth, &mut clean);
    let mut rng = Rng::new(seed);
    Array2::from_shape_fn((n, B.len()), |(_, i)| clean[i] + rng.normal() / snr)
}

/// `fit_ivim` with the `bayesian` strategy and `bayes` on `threads` threads.
fn bayesian(data: &Array2<f64>, bayes: BayesOptions, threads: usize) -> osipy_core::Result<IvimFit> {
    let opts = IvimFitOptions {
        strategy: IvimStrategy::Bayesian,
        bayes,
        ..Default::default()
    };
    fit_ivim(data.view(), &B, None, &opts, &Device::cpu(Some(threads)))
}

/// Log marginal likelihood of (f, D, D*) with S0 (flat) and sigma (1/sigma)
/// integrated out numerically: Simpson's rule over S0 and ln sigma.
fn numeric_marginal(y: &[f64], theta: [f64; 3]) -> f64 {
    let g: Vec<f64> = B
        .iter()
        .map(|b| (1.0 - theta[0]) * (-b * theta[1]).exp() + theta[0] * (-b * theta[2]).exp())
        .collect();
    let n = y.len() as f64;
    let (s0_lo, s0_hi, ns) = (0.8, 1.2, 800);
    let (ls_lo, ls_hi, nl) = ((1e-3f64).ln(), (0.2f64).ln(), 800);
    let simpson = |k: usize, m: usize| {
        if k == 0 || k == m {
            1.0
        } else if k % 2 == 1 {
            4.0
        } else {
            2.0
        }
    };
    let mut total = 0.0;
    for a in 0..=ns {
        let s0 = s0_lo + (s0_hi - s0_lo) * a as f64 / ns as f64;
        let ssr: f64 = y.iter().zip(&g).map(|(y, g)| (y - s0 * g).powi(2)).sum();
        for c in 0..=nl {
            let ls = ls_lo + (ls_hi - ls_lo) * c as f64 / nl as f64;
            // sigma^-n exp(-ssr / 2 sigma^2), with d sigma / sigma = d ln sigma.
            let l = (-n * ls - 0.5 * ssr * (-2.0 * ls).exp()).exp();
            total += simpson(a, ns) * simpson(c, nl) * l;
        }
    }
    total.ln()
}

#[test]
fn the_closed_form_marginal_matches_numerical_integration() {
    // Differences of the log marginal between parameter points are what the
    // grid uses; the closed form (g.g)^-1/2 RSS^-(n-1)/2 must reproduce them.
    let y = noisy([1.0, 0.15, 1.0e-3, 0.03], 1, 50.0, 3);
    let y = y.row(0).to_vec();
    let closed = |t: [f64; 3]| {
        let g: Vec<f64> = B
            .iter()
            .map(|b| (1.0 - t[0]) * (-b * t[1]).exp() + t[0] * (-b * t[2]).exp())
            .collect();
        let gg: f64 = g.iter().map(|x| x * x).sum();
        let gy: f64 = g.iter().zip(&y).map(|(a, b)| a * b).sum();
        let yy: f64 = y.iter().map(|x| x * x).sum();
        let m = 0.5 * (y.len() as f64 - 1.0);
        -0.5 * gg.ln() - m * (yy - gy * gy / gg).ln()
    };
    let points = [
        [0.15, 1.0e-3, 0.03],
        [0.10, 1.1e-3, 0.05],
        [0.20, 0.9e-3, 0.02],
        [0.12, 1.0e-3, 0.1],
    ];
    let reference = numeric_marginal(&y, points[0]) - closed(points[0]);
    for p in &points[1..] {
        let d = numeric_marginal(&y, *p) - closed(*p) - reference;
        assert!(
            d.abs() < 1e-3,
            "{p:?}: numeric - closed differs by {d} from the first point's"
        );
    }
}

/// Posterior means of (f, D, D*) on a dense, fixed grid computed here (f
/// linear, D linear, ln D* on the bounds; 160 x 400 x 160 cells).
fn dense_means(y: &[f64], bounds: [(f64, f64); 3]) -> [f64; 3] {
    let yy: f64 = y.iter().map(|x| x * x).sum();
    let m = 0.5 * (y.len() as f64 - 1.0);
    let (nf, nd, ns) = (160, 400, 160);
    let (lo_s, hi_s) = (bounds[2].0.ln(), bounds[2].1.ln());
    let ds: Vec<Vec<f64>> = (0..ns)
        .map(|e| {
            let x = (lo_s + (hi_s - lo_s) * (e as f64 + 0.5) / ns as f64).exp();
            B.iter().map(|b| (-b * x).exp()).collect()
        })
        .collect();
    let mut logp = Vec::with_capacity(nf * nd * ns);
    for a in 0..nf {
        let f = (a as f64 + 0.5) / nf as f64;
        for c in 0..nd {
            let d = bounds[1].1 * (c as f64 + 0.5) / nd as f64;
            let ed: Vec<f64> = B.iter().map(|b| (-b * d).exp()).collect();
            for es in &ds {
                let (mut gg, mut gy) = (0.0, 0.0);
                for i in 0..B.len() {
                    let g = (1.0 - f) * ed[i] + f * es[i];
                    gg += g * g;
                    gy += g * y[i];
                }
                logp.push(-0.5 * gg.ln() - m * (yy - gy * gy / gg).ln());
            }
        }
    }
    let max = logp.iter().cloned().fold(f64::MIN, f64::max);
    let (mut w, mut mf, mut md, mut ms) = (0.0, 0.0, 0.0, 0.0);
    for (idx, lp) in logp.iter().enumerate() {
        let (a, c, e) = (idx / (nd * ns), (idx / ns) % nd, idx % ns);
        let p = (lp - max).exp();
        w += p;
        mf += p * (a as f64 + 0.5) / nf as f64;
        md += p * bounds[1].1 * (c as f64 + 0.5) / nd as f64;
        ms += p * (lo_s + (hi_s - lo_s) * (e as f64 + 0.5) / ns as f64).exp();
    }
    [mf / w, md / w, ms / w]
}

#[test]
fn the_refined_grid_agrees_with_a_dense_fixed_grid() {
    // Posterior means of the adaptive grid (default settings) against the
    // dense grid, on voxels across SNR 20 to 200 and across the phantom's
    // range of f and D*.
    let bounds = [BIEXP_BOUNDS[1], BIEXP_BOUNDS[2], BIEXP_BOUNDS[3]];
    let cases = [
        ([1.0, 0.2, 1.2e-3, 0.04], 40.0, 11),
        ([1.0, 0.1, 0.8e-3, 0.1], 20.0, 12),
        ([1.0, 0.3, 1.5e-3, 0.02], 100.0, 13),
        ([1.0, 0.05, 2.0e-3, 0.15], 50.0, 14),
        ([1.0, 0.15, 1.0e-3, 0.05], 200.0, 15),
    ];
    let mut worst = 0.0f64;
    for (truth, snr, seed) in cases {
        let y = noisy(truth, 1, snr, seed).row(0).to_vec();
        let dense = dense_means(&y, bounds);
        let g = GridPosterior::new(&B, bounds, GridSettings::default()).unwrap();
        let got = g.voxel(&y, &mut g.scratch()).unwrap();
        for q in 0..3 {
            let e = (got.mean[q + 1] - dense[q]).abs() / got.sd[q + 1];
            eprintln!("{truth:?} SNR {snr}, parameter {q}: |grid - dense| = {e:.4} SD");
            worst = worst.max(e);
        }
    }
    // Measured 0.015 (2026-12-03); the midpoint rule's error of the dense
    // grid itself is below 0.005 SD here.
    assert!(worst < 0.03, "worst {worst} posterior SD");
}

fn coverage(opts: &IvimFitOptions, truth: [f64; 4], snr: f64) -> ([f64; 3], ndarray::Array2<f64>) {
    let n = 200;
    let data = noisy(truth, n, snr, 2024);
    let fit = fit_ivim(data.view(), &B, None, opts, &Device::Cpu { threads: 2 }).unwrap();
    assert!(
        fit.status.iter().all(|s| s.is_valid()),
        "every voxel has a posterior"
    );
    let iv = fit.posterior_interval.as_ref().unwrap();
    let rate = std::array::from_fn(|q| {
        let t = truth[q + 1];
        (0..n)
            .filter(|&v| iv[[v, 2 * q]] <= t && t <= iv[[v, 2 * q + 1]])
            .count() as f64
            / n as f64
    });
    // Same numbers on one thread, bit for bit.
    let one = fit_ivim(data.view(), &B, None, opts, &Device::Cpu { threads: 1 }).unwrap();
    assert!(one
        .params
        .iter()
        .chain(one.std_errors.iter())
        .zip(fit.params.iter().chain(fit.std_errors.iter()))
        .all(|(a, c)| a.to_bits() == c.to_bits()));
    (rate, fit.params)
}

#[test]
fn grid_credible_intervals_cover_the_truth_at_the_stated_rate() {
    // 200 voxels, one truth, independent Gaussian noise at SNR 50. A
    // calibrated posterior covers the truth with its 95 % interval ~95 % of
    // the time; the binomial SD at n = 200 is 1.5 %, so [0.90, 1.0] is
    // accepted. Both fixed priors of D*, and the fitted population prior.
    let truth = [1.0, 0.15, 1.0e-3, 0.03];
    for prior in [
        DstarPrior::LogUniform,
        DstarPrior::Uniform,
        DstarPrior::Population,
    ] {
        let opts = IvimFitOptions {
            strategy: IvimStrategy::Bayesian,
            bayes: BayesOptions {
                dstar_prior: prior,
                ..Default::default()
            },
            ..Default::default()
        };
        let (rate, params) = coverage(&opts, truth, 50.0);
        for (q, r) in rate.iter().enumerate() {
            assert!((0.90..=1.0).contains(r), "{prior:?}, parameter {q}: coverage {r}");
        }
        // The well-determined f and D: posterior means within 10 % of the
        // truth on average.
        for j in [1, 2] {
            let mean = params.column(j).mean().unwrap();
            assert!(
                (mean / truth[j] - 1.0).abs() < 0.1,
                "{prior:?}: column {j} mean {mean}"
            );
        }
    }
}

#[test]
fn median_summary_lies_inside_the_interval_and_differs_from_the_mean() {
    let data = noisy([1.0, 0.1, 1.0e-3, 0.05], 20, 20.0, 5);
    let fit = |summary| {
        bayesian(
            &data,
            BayesOptions {
                summary,
                dstar_prior: DstarPrior::LogUniform,
                ..Default::default()
            },
            1,
        )
        .unwrap()
    };
    let (mean, median) = (fit(Summary::Mean), fit(Summary::Median));
    let iv = median.posterior_interval.unwrap();
    for v in 0..20 {
        for q in 0..3 {
            let x = median.params[[v, q + 1]];
            assert!(iv[[v, 2 * q]] <= x && x <= iv[[v, 2 * q + 1]]);
        }
    }
    // D* posteriors are skewed at SNR 20: median and mean differ.
    assert!((0..20).any(|v| (mean.params[[v, 3]] / median.params[[v, 3]] - 1.0).abs() > 0.05));
}

#[test]
fn the_population_priors_recover_known_distributions_of_d_and_dstar() {
    // 3000 voxels with ln D* ~ Normal(ln 0.04, 0.4^2) (kept inside the
    // bounds), D ~ Normal(1.2e-3, (0.3e-3)^2), f = 0.3, SNR 200: both rates
    // are well determined in most voxels, so the fitted log-normal must find
    // the population's median (within 10 %) and SD of ln D* (within 25 %),
    // and the fitted normal the mean (within 5 %) and SD (within 25 %) of D.
    let (median, sigma) = (0.04f64, 0.4f64);
    let n = 3000;
    let mut rng = Rng::new(99);
    let m = Biexponential::new(&B).unwrap();
    let mut clean = vec![0.0; B.len()];
    let mut data = Array2::zeros((n, B.len()));
    for v in 0..n {
        let ds = (median.ln() + sigma * rng.normal()).exp().clamp(0.006, 0.19);
        let d = 1.2e-3 + 0.3e-3 * rng.normal();
        m.predict(&[1.0, 0.3, d, ds], &mut clean);
        for i in 0..B.len() {
            data[[v, i]] = clean[i] + rng.normal() / 200.0;
        }
    }
    let bounds = [BIEXP_BOUNDS[1], BIEXP_BOUNDS[2], BIEXP_BOUNDS[3]];
    let settings = GridSettings {
        dstar_prior: RatePrior::LogUniform,
        ..Default::default()
    };
    let g = GridPosterior::new(&B, bounds, settings).unwrap();
    let mut s = g.scratch();
    let k = 64;
    let mut lik = vec![0.0; n * 2 * k];
    for v in 0..n {
        let (d, ds) = lik[v * 2 * k..(v + 1) * 2 * k].split_at_mut(k);
        assert!(g.rate_marginals(data.row(v).as_slice().unwrap(), &mut s, d, ds));
    }
    let dstar_rows: Vec<f64> = lik
        .chunks_exact(2 * k)
        .flat_map(|r| r[k..].iter().copied())
        .collect();
    let (m_fit, s_fit) = population_prior(&dstar_rows, k, bounds[2], true).unwrap();
    assert!((m_fit / median - 1.0).abs() < 0.1, "median {m_fit}");
    assert!((s_fit / sigma - 1.0).abs() < 0.25, "sigma {s_fit}");
    // Through fit_ivim, the same prior is reported.
    let population = BayesOptions {
        d_prior: DPrior::Population,
        ..Default::default()
    };
    let fit = bayesian(&data, population, 2).unwrap();
    let (m2, s2) = fit.dstar_population.unwrap();
    assert!((m2 / m_fit - 1.0).abs() < 1e-9 && (s2 / s_fit - 1.0).abs() < 1e-9);
    let (d_mean, d_sd) = fit.d_population.unwrap();
    assert!((d_mean / 1.2e-3 - 1.0).abs() < 0.05, "D mean {d_mean}");
    assert!((d_sd / 0.3e-3 - 1.0).abs() < 0.25, "D SD {d_sd}");
}

#[test]
fn a_voxel_without_signal_is_flagged_not_fitted() {
    let mut data = noisy([1.0, 0.1, 1.0e-3, 0.03], 4, 50.0, 1);
    data.row_mut(2).fill(0.0);
    let fit = bayesian(&data, BayesOptions::default(), 1).unwrap();
    assert!(!fit.status[2].is_valid() && fit.params[[2, 2]].is_nan());
    assert!([0, 1, 3]
        .iter()
        .all(|&v| fit.status[v].is_valid() && fit.params[[v, 2]].is_finite()));
}

#[test]
fn a_log_prior_on_a_zero_lower_bound_is_an_error_that_names_the_bounds() {
    let data = noisy([1.0, 0.1, 1.0e-3, 0.03], 4, 50.0, 1);
    let opts = IvimFitOptions {
        strategy: IvimStrategy::Bayesian,
        bounds: vec![("Dstar".into(), 0.0, 0.2)],
        ..Default::default()
    };
    let err = fit_ivim(data.view(), &B, None, &opts, &Device::cpu(Some(1)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("positive lower bound of Dstar") && err.contains("[0, 0.2]"),
        "{err}"
    );
    // A uniform prior takes that range.
    let uniform = IvimFitOptions {
        bayes: BayesOptions {
            dstar_prior: DstarPrior::Uniform,
            ..Default::default()
        },
        ..opts
    };
    assert!(fit_ivim(data.view(), &B, None, &uniform, &Device::cpu(Some(1))).is_ok());
}
