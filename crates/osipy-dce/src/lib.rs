//! # osipy-dce
//!
//! DCE-MRI: SPGR signal-to-concentration conversion ([`concentration`]) and
//! pharmacokinetic models (`tofts`, `extended_tofts`, `patlak`,
//! `2cxm`, `2cum`) with OSIPI CAPLEX names and units, exact AIF convolution,
//! analytic Jacobians for every model (the arterial-delay column is a forward
//! difference) and linearised initial guesses. See [`models`].
//!
//! VFA T1 mapping ([`t1`]) and [`fit_model`] (4D concentration to maps).
//! Look-Locker T1 ([`look_locker_t1`]). Synthetic datasets with known truth:
//! [`phantom`].
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod concentration;
mod fit;
mod lls;
pub mod models;
pub mod phantom;
mod pipeline;
pub mod t1;

pub use concentration::{
    convert_curve, convert_curve_in_place, signal_to_concentration, signal_to_concentration_in_place,
    spgr_signal, ConcentrationMethod, SignalAsConcentration, SpgrParams,
};
pub use fit::{fit_model, fit_voxels, DceFit, DceFitOptions};
pub use models::{model, model_with_delay, DceModelEntry, DelayedPkModel, PkInput, PkModel, DELAY_BOUNDS};
pub use pipeline::{
    demo_case_sized, AifSource, Dce, DceAcquisitionConfig, DceConfig, DceFittingConfig, SignalConversion,
};
pub use t1::{
    look_locker_t1, vfa_signal, vfa_t1, LookLockerModel, T1Fit, T1Mapping, VfaMethod, VfaModel, VfaParams,
};

use osipy_core::{Registry, Result};

/// Registers the DCE models in `reg`.
pub fn register(reg: &mut Registry) -> Result<()> {
    for spec in &models::SPECS {
        reg.register(spec.name, spec.description, DceModelEntry::from_spec(spec))?;
    }
    Ok(())
}
