//! Posterior sampling of any [`Model`] per voxel with the No-U-Turn Sampler
//! (Hoffman & Gelman, JMLR 2014) from the `nuts-rs` crate.
//!
//! **Likelihood and priors.** `y_i ~ Normal(model_i(x), sigma^2)` with
//! uniform priors on each parameter's bounds and the Jeffreys prior
//! `p(sigma) ∝ 1/sigma` on the noise SD, which is sampled too (starting from
//! the least-squares residual SD), so the posterior accounts for the
//! uncertainty of the noise level. Sampling runs on unconstrained
//! coordinates `u`, `x = lo + (hi - lo) sigmoid(u)`, with the log-Jacobian of
//! that map added, so the uniform priors hold exactly. Each voxel's chain is
//! seeded from the configured seed and the voxel index, so results are
//! reproducible and independent of the thread count.

use crate::Model;
use nuts_rs::rand::SeedableRng;
use nuts_rs::{Chain, CpuLogpFunc, CpuMath, CpuMathError, DiagNutsSettings, HasDims, LogpError, Settings};
use std::collections::HashMap;

/// Sampler settings (a config table: `tune`, `draws`, `seed`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// Posterior summary of one voxel, per parameter: mean, SD and the 2.5 % /
/// 97.5 % quantiles.
#[derive(Debug, Clone, PartialEq)]
pub struct PosteriorSummary {
    /// Posterior means.
    pub mean: Vec<f64>,
    /// Posterior standard deviations.
    pub sd: Vec<f64>,
    /// 95 % equal-tailed credible intervals as (low, high).
    pub interval: Vec<(f64, f64)>,
    /// The kept draws (draws x parameters, row-major), for summaries the
    /// caller defines (an orientation's mean direction, for instance).
    pub draws: Vec<f64>,
}

#[derive(Debug)]
struct NonFinite;

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("non-finite log posterior")
    }
}

impl std::error::Error for NonFinite {}

impl LogpError for NonFinite {
    fn is_recoverable(&self) -> bool {
        true
    }
}

struct Posterior<'a, M: Model + ?Sized> {
    model: &'a M,
    y: &'a [f64],
    lo: Vec<f64>,
    width: Vec<f64>,
    x: Vec<f64>,
    pred: Vec<f64>,
    jac: Vec<f64>,
}

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

impl<M: Model + ?Sized> HasDims for Posterior<'_, M> {
    fn dim_sizes(&self) -> HashMap<String, u64> {
        HashMap::from([("unconstrained_parameter".to_string(), self.lo.len() as u64 + 1)])
    }
}

impl<M: Model + ?Sized> CpuLogpFunc for Posterior<'_, M> {
    type LogpError = NonFinite;
    type ExpandedVector = Vec<f64>;
    type FlowParameters = ();

    fn dim(&self) -> usize {
        self.lo.len() + 1
    }

    fn logp(&mut self, u: &[f64], grad: &mut [f64]) -> Result<f64, NonFinite> {
        let np = self.lo.len();
        for j in 0..np {
            self.x[j] = self.lo[j] + self.width[j] * sigmoid(u[j]);
        }
        let n = self.y.len();
        if !self
            .model
            .predict_with_jacobian(&self.x, &mut self.pred, &mut self.jac)
        {
            return Err(NonFinite);
        }
        // u[np] = ln sigma; the Jeffreys prior is flat in ln sigma.
        let ls = u[np];
        let inv_var = (-2.0 * ls).exp();
        let ssr: f64 = (0..n).map(|i| (self.y[i] - self.pred[i]).powi(2)).sum();
        let mut ll = -(n as f64) * ls - 0.5 * inv_var * ssr;
        grad[np] = -(n as f64) + inv_var * ssr;
        for j in 0..np {
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

/// Samples one voxel's posterior under `model`. `start` is the
/// least-squares estimate, `sigma` the starting noise SD, `bounds` the
/// uniform priors' supports (finite, low < high). Returns `None` when
/// sampling fails.
pub fn sample_posterior<M: Model + ?Sized>(
    model: &M,
    y: &[f64],
    start: &[f64],
    sigma: f64,
    bounds: &[(f64, f64)],
    settings: &BayesSettings,
    voxel: u64,
) -> Option<PosteriorSummary> {
    let np = bounds.len();
    if !(sigma > 0.0) || start.len() != np || y.len() != model.n_samples() {
        return None;
    }
    let lo: Vec<f64> = bounds.iter().map(|b| b.0).collect();
    let width: Vec<f64> = bounds.iter().map(|b| b.1 - b.0).collect();
    if width.iter().any(|w| !(*w > 0.0 && w.is_finite())) || lo.iter().any(|l| !l.is_finite()) {
        return None;
    }
    let post = Posterior {
        model,
        y,
        lo: lo.clone(),
        width: width.clone(),
        x: vec![0.0; np],
        pred: vec![0.0; y.len()],
        jac: vec![0.0; np * y.len()],
    };
    // Start strictly inside the box (the logit is infinite on a bound).
    let mut u0: Vec<f64> = (0..np)
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
    let mut draws: Vec<f64> = Vec::with_capacity(settings.draws as usize * np);
    for _ in 0..(settings.tune + settings.draws) {
        let (u, progress) = chain.draw().ok()?;
        if !progress.tuning {
            draws.extend((0..np).map(|j| lo[j] + width[j] * sigmoid(u[j])));
        }
    }
    if draws.is_empty() {
        return None;
    }
    let k = (draws.len() / np) as f64;
    let col = |j: usize| draws.iter().skip(j).step_by(np).copied();
    let mean: Vec<f64> = (0..np).map(|j| col(j).sum::<f64>() / k).collect();
    let sd: Vec<f64> = (0..np)
        .map(|j| (col(j).map(|d| (d - mean[j]).powi(2)).sum::<f64>() / (k - 1.0).max(1.0)).sqrt())
        .collect();
    let interval: Vec<(f64, f64)> = (0..np)
        .map(|j| {
            let mut v: Vec<f64> = col(j).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
            (at(0.025), at(0.975))
        })
        .collect();
    Some(PosteriorSummary {
        mean,
        sd,
        interval,
        draws,
    })
}
