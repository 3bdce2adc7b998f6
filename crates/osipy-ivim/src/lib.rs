//! # osipy-ivim
//!
//! Intravoxel incoherent motion (IVIM) diffusion MRI: the bi-exponential,
//! simplified and mono-exponential models ([`models`]) with analytic
//! Jacobians, and the `segmented` (a true two-step fit), `full` and
//! `bayesian` (the exact grid posterior, [`grid`], or NUTS sampling,
//! [`bayes`]) fitting strategies
//! ([`fit_ivim`]). Signals are averaged over repeated b-values and
//! normalised to S(b = 0); voxels with non-finite or non-positive signal are
//! flagged in the quality codes. D and D* in mm^2/s, b in s/mm^2.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod bayes;
mod fit;
pub mod grid;
pub mod models;
pub mod phantom;
mod pipeline;
mod segmented;

pub use fit::{fit_ivim, prepare, IvimFit, IvimFitOptions, IvimStrategy, Prepared};
pub use models::{model, Biexponential, MonoExponentialAdc, Simplified, BIEXP_BOUNDS};
pub use pipeline::{demo_case_sized, BayesianConfig, Ivim, IvimConfig, IvimFitter, IvimFittingConfig};

use osipy_core::{Registry, Result};

/// Registers the IVIM fitting strategies.
pub fn register(reg: &mut Registry) -> Result<()> {
    reg.register(
        "segmented",
        "two steps: D from b >= threshold, then S0, f, D* (or D* alone) with D fixed",
        IvimFitter(IvimStrategy::Segmented),
    )?;
    reg.register(
        "full",
        "all four parameters by bounded LM, started from segmented",
        IvimFitter(IvimStrategy::Full),
    )?;
    reg.register(
        "bayesian",
        "posterior per voxel on an exact grid (S0 and noise marginalised, D* prior fitted to the volume); or NUTS",
        IvimFitter(IvimStrategy::Bayesian),
    )
}
