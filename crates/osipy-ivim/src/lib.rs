//! # osipy-ivim
//!
//! Intravoxel incoherent motion (IVIM) diffusion MRI: the bi-exponential,
//! simplified and mono-exponential models ([`models`]) with analytic
//! Jacobians, and the `segmented` (a true two-step fit), `full` and
//! `bayesian` (NUTS posterior sampling, [`bayes`]) fitting strategies
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
pub mod models;
pub mod phantom;
mod segmented;

pub use fit::{fit_ivim, prepare, IvimFit, IvimFitOptions, IvimStrategy, Prepared};
pub use models::{model, Biexponential, MonoExponentialAdc, Simplified, BIEXP_BOUNDS};

use osipy_core::{Kind, Registry, Result};

/// Payload of an IVIM model registry entry.
pub type IvimModelFactory = fn(&[f64]) -> Result<Box<dyn osipy_fitting::Model>>;

/// Registers the IVIM models and fitting strategies.
pub fn register(reg: &mut Registry) -> Result<()> {
    reg.register::<IvimModelFactory>(
        Kind::IvimModel,
        "biexponential",
        "S0 [(1-f) e^{-bD} + f e^{-bD*}] (Le Bihan 1988)",
        |b| models::model("biexponential", b),
    )?;
    reg.register::<IvimModelFactory>(
        Kind::IvimModel,
        "simplified",
        "S0 (1-f) e^{-bD} above b = 0 (perfusion decayed)",
        |b| models::model("simplified", b),
    )?;
    reg.register::<IvimModelFactory>(Kind::IvimModel, "mono_exponential", "S0 e^{-b ADC}", |b| {
        models::model("mono_exponential", b)
    })?;
    reg.register(
        Kind::IvimFitter,
        "segmented",
        "two steps: D from b >= threshold, then S0, f, D* (or D* alone) with D fixed",
        IvimStrategy::Segmented,
    )?;
    reg.register(
        Kind::IvimFitter,
        "full",
        "all four parameters by bounded LM, started from segmented",
        IvimStrategy::Full,
    )?;
    reg.register(
        Kind::IvimFitter,
        "bayesian",
        "NUTS posterior sampling per voxel (uniform priors on bounds, Jeffreys prior on noise), seeded",
        IvimStrategy::Bayesian,
    )
}
