//! # osipy-aif
//!
//! Arterial input functions for tracer-kinetic analysis.
//!
//! * Population AIFs with their published parameters ([`Aif::population`]):
//!   `parker` (2006), `georgiou` (2019), `fritz_hansen` (1996), `weinmann`
//!   (1984), `mcgrath` (2009, preclinical). Time in seconds, concentration in
//!   mM; each knows whether it is blood or plasma, and [`Aif::plasma`] /
//!   [`Aif::blood`] convert with the hematocrit.
//! * Measured AIFs from arrays ([`Aif::measured`]) and a delay on any AIF
//!   ([`Aif::shift`]).
//! * Automatic detection from a 4D concentration series ([`detect_aif`]).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod aif;
mod detect;
pub mod special;

pub use aif::{
    check_hct, Aif, AifShape, BiexpParams, Compartment, GeorgiouParams, McGrathParams, ParkerParams,
};
pub use detect::{detect_aif, AifVoxel, DetectOptions, DetectedAif};

use osipy_core::{Kind, Registry, Result};

/// Payload of a population-AIF registry entry.
pub type PopulationAifFn = fn() -> Aif;

/// Payload of an AIF-detector registry entry.
pub type DetectorFn = for<'a> fn(
    ndarray::ArrayView4<'a, f64>,
    &[f64],
    Option<ndarray::ArrayView3<'a, bool>>,
    &DetectOptions,
) -> Result<DetectedAif>;

/// Registers the population AIFs and the detector in `reg`.
pub fn register(reg: &mut Registry) -> Result<()> {
    for (name, description, ctor) in aif::POPULATION {
        reg.register::<PopulationAifFn>(Kind::PopulationAif, name, description, ctor)?;
    }
    reg.register::<DetectorFn>(
        Kind::AifDetector,
        "peak_score",
        "candidates above a peak-height percentile, scored on peak, arrival and width",
        detect_aif,
    )
}
