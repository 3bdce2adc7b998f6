//! Bayesian IVIM: posterior sampling per voxel with the No-U-Turn Sampler
//! (Hoffman & Gelman, JMLR 2014) from the `nuts-rs` crate.
//!
//! **Model and priors.** `y_i ~ Normal(S0 [(1-f) e^{-b_i D} + f e^{-b_i D*}], sigma^2)`
//! with uniform priors on the parameter bounds (f, D, D* as configured; S0 on
//! (0, 2 max y]) and the Jeffreys prior `p(sigma) ∝ 1/sigma` on the noise SD,
//! which is sampled too (starting from the least-squares residual SD), so
//! the posterior accounts for the uncertainty of the noise level.
//! Sampling runs on unconstrained coordinates `u`, `x = lo + (hi - lo) sigmoid(u)`,
//! with the log-Jacobian of that map added, so the uniform priors hold exactly.
//! Each voxel's chain is seeded from the configured seed and the voxel index,
//! so results are reproducible and independent of the thread count.

use crate::models::Biexponential;
use nuts_rs::rand::SeedableRng;
use nuts_rs::{Chain, CpuLogpFunc, CpuMath, CpuMathError, DiagNutsSettings, HasDims, LogpError, Settings};
use osipy_fitting::Model;
use std::collections::HashMap;

/// Sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesSettings {
    /// Tuning (warm-up) iterations per voxel, discarded.
    pub tune: u64,
    /// Posterior draws kept per voxel.
    pub draws: u64,
    /// Base random seed.
    pub seed: u64,
}

impl Default for BayesSettings {
    fn default() -> Self {
        BayesSettings {
            tune: 300,
            draws: 500,
            seed: 42,
        }
    }
}

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

#[derive(Debug, thiserror::Error)]
#[error("non-finite log posterior")]
struct NonFinite;

impl LogpError for NonFinite {
    fn is_recoverable(&self) -> bool {
        true
    }
}

struct Posterior<'a> {
    model: &'a Biexponential,
    y: &'a [f64],
    lo: [f64; 4],
    width: [f64; 4],
    pred: Vec<f64>,
    jac: Vec<f64>,
}

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

impl Posterior<'_> {
    fn to_params(&self, u: &[f64]) -> [f64; 4] {
        std::array::from_fn(|j| self.lo[j] + self.width[j] * sigmoid(u[j]))
    }
}

impl HasDims for Posterior<'_> {
    fn dim_sizes(&self) -> HashMap<String, u64> {
        HashMap::from([("unconstrained_parameter".to_string(), 5)])
    }
}

impl CpuLogpFunc for Posterior<'_> {
    type LogpError = NonFinite;
    type ExpandedVector = Vec<f64>;
    type FlowParameters = ();

    fn dim(&self) -> usize {
        5
    }

    fn logp(&mut self, u: &[f64], grad: &mut [f64]) -> Result<f64, NonFinite> {
        let x = self.to_params(u);
        let n = self.y.len();
        self.model
            .predict_with_jacobian(&x, &mut self.pred, &mut self.jac);
        // u[4] = ln sigma; the Jeffreys prior is flat in ln sigma.
        let inv_var = (-2.0 * u[4]).exp();
        let ssr: f64 = (0..n).map(|i| (self.y[i] - self.pred[i]).powi(2)).sum();
        let mut ll = -(n as f64) * u[4] - 0.5 * inv_var * ssr;
        grad[4] = -(n as f64) + inv_var * ssr;
        for j in 0..4 {
            let s = sigmoid(u[j]);
            let dxdu = self.width[j] * s * (1.0 - s);
            let col = &self.jac[j * n..(j + 1) * n];
            let dll: f64 = (0..n)
                .map(|i| inv_var * (self.y[i] - self.pred[i]) * col[i])
                .sum();
            // log |dx/du| = log width + log s + log(1 - s); its u-derivative is 1 - 2s.
            ll += dxdu.ln();
            grad[j] = dll * dxdu + (1.0 - 2.0 * s);
        }
        if ll.is_finite() && grad.iter().all(|g| g.is_finite()) {
            Ok(ll)
        } else {
            Err(NonFinite)
        }
    }

    fn expand_vector<R: nuts_rs::rand::Rng + ?Sized>(
        &mut self,
        _rng: &mut R,
        u: &[f64],
    ) -> Result<Vec<f64>, CpuMathError> {
        Ok(u.to_vec())
    }
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
    if !(sigma > 0.0 && ymax > 0.0) {
        return None;
    }
    let lo = [0.0, bounds[0].0, bounds[1].0, bounds[2].0];
    let hi = [2.0 * ymax, bounds[0].1, bounds[1].1, bounds[2].1];
    let width: [f64; 4] = std::array::from_fn(|j| hi[j] - lo[j]);
    if width.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return None;
    }
    let post = Posterior {
        model,
        y,
        lo,
        width,
        pred: vec![0.0; y.len()],
        jac: vec![0.0; 4 * y.len()],
    };
    // Start strictly inside the box (the logit is infinite on a bound).
    let mut u0: Vec<f64> = (0..4)
        .map(|j| {
            let t = ((start[j] - lo[j]) / width[j]).clamp(1e-4, 1.0 - 1e-4);
            (t / (1.0 - t)).ln()
        })
        .collect();
    u0.push(sigma.ln());
    let s = DiagNutsSettings {
        num_tune: settings.tune,
        num_draws: settings.draws,
        maxdepth: 8,
        ..Default::default()
    };
    let mut rng =
        nuts_rs::rand::rngs::StdRng::seed_from_u64(settings.seed ^ voxel.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut chain = s.new_chain(0, CpuMath::new(post), &mut rng).ok()?;
    chain.set_position(&u0).ok()?;
    let mut draws: Vec<[f64; 4]> = Vec::with_capacity(settings.draws as usize);
    for _ in 0..(settings.tune + settings.draws) {
        let (u, progress) = chain.draw().ok()?;
        if !progress.tuning {
            draws.push(std::array::from_fn(|j| lo[j] + width[j] * sigmoid(u[j])));
        }
    }
    if draws.is_empty() {
        return None;
    }
    let k = draws.len() as f64;
    let mean: [f64; 4] = std::array::from_fn(|j| draws.iter().map(|d| d[j]).sum::<f64>() / k);
    let sd: [f64; 4] = std::array::from_fn(|j| {
        (draws.iter().map(|d| (d[j] - mean[j]).powi(2)).sum::<f64>() / (k - 1.0).max(1.0)).sqrt()
    });
    let interval: [(f64, f64); 3] = std::array::from_fn(|q| {
        let mut v: Vec<f64> = draws.iter().map(|d| d[q + 1]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        (at(0.025), at(0.975))
    });
    Some(PosteriorSummary { mean, sd, interval })
}
