//! Bayesian IVIM: posterior sampling per voxel with the No-U-Turn Sampler
//! (Hoffman & Gelman, JMLR 2014) from the `nuts-rs` crate, through the
//! shared [`osipy_fitting::bayes`].
//!
//! **Model and priors.** `y_i ~ Normal(S0 [(1-f) e^{-b_i D} + f e^{-b_i D*}], sigma^2)`
//! with uniform priors on the parameter bounds (f, D, D* as configured; S0 on
//! (0, 2 max y]) and the Jeffreys prior `p(sigma) ∝ 1/sigma` on the noise SD,
//! which is sampled too (starting from the least-squares residual SD), so
//! the posterior accounts for the uncertainty of the noise level.
//! Sampling and seeding as in [`osipy_fitting::bayes`].

use crate::models::Biexponential;
use osipy_fitting::bayes::sample_posterior;
pub use osipy_fitting::bayes::BayesSettings;

/// Posterior summary of one voxel: means and SDs of (S0, f, D, D*), and the
/// 2.5 % / 97.5 % quantiles of (f, D, D*).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PosteriorSummary {
    /// Posterior means (S0, f, D, D*).
    pub mean: [f64; 4],
    /// Posterior standard deviations.
    pub sd: [f64; 4],
    /// 95 % equal-tailed credible intervals of f, D, D* as (low, high).
    pub interval: [(f64, f64); 3],
}

/// Samples one voxel's posterior. `start` is the least-squares estimate
/// (S0, f, D, D*), `sigma` the starting noise SD, `bounds` those of f, D, D* (S0's
/// prior is (0, 2 max y]). Returns `None` when sampling fails.
pub fn sample_voxel(
    model: &Biexponential,
    y: &[f64],
    start: [f64; 4],
    sigma: f64,
    bounds: [(f64, f64); 3],
    settings: &BayesSettings,
    voxel: u64,
) -> Option<PosteriorSummary> {
    let ymax = y.iter().cloned().fold(0.0, f64::max);
    if !(ymax > 0.0) {
        return None;
    }
    let b = [(0.0, 2.0 * ymax), bounds[0], bounds[1], bounds[2]];
    let p = sample_posterior(model, y, &start, sigma, &b, settings, voxel)?;
    Some(PosteriorSummary {
        mean: std::array::from_fn(|j| p.mean[j]),
        sd: std::array::from_fn(|j| p.sd[j]),
        interval: std::array::from_fn(|q| p.interval[q + 1]),
    })
}
