//! # osipy-aif
//!
//! Arterial input functions for tracer-kinetic analysis.
//!
//! * Population AIFs with their published parameters (constructors such as
//!   [`Aif::parker`], and the registry table `population_aifs`, [`PopulationAif`]):
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

use osipy_core::{Extension, KindInfo, Registry, Result};

/// Registry entry of a population AIF: builds it.
#[derive(Debug, Clone, Copy)]
pub struct PopulationAif(pub fn() -> Aif);

impl Extension for PopulationAif {
    const KIND: KindInfo = KindInfo {
        id: "population_aifs",
        label: "population AIF",
        config_key: "dce: pipeline.population_aif",
    };
}

/// Registers the population AIFs in `reg`.
pub fn register(reg: &mut Registry) -> Result<()> {
    for (name, description, ctor) in aif::POPULATION {
        reg.register(name, description, PopulationAif(ctor))?;
    }
    Ok(())
}
