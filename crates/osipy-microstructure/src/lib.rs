//! # osipy-microstructure
//!
//! Diffusion MRI microstructure in the manner of dmipy (Fick et al. 2019):
//! compartments ([`compartment`]) composed into multi-compartment models with
//! volume fractions and parameter links ([`model`]), fitted voxel by voxel by
//! a brute-force grid start and the shared bounded LM engine, with presets
//! for ball-and-stick, NODDI-Watson, SMT and SANDI ([`presets`]).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod compartment;
mod fit;
pub mod model;
pub mod phantom;
mod pipeline;
pub mod presets;
pub mod scheme;
pub mod simulate;
pub mod special;

pub use compartment::{Compartment, Dispersion, Kind, COMPARTMENTS};
pub use fit::{fit_microstructure, model_data, sample_microstructure};
pub use model::{LinkValue, ModelSpec, MultiCompartment};
pub use pipeline::{
    demo_case_sized, fractional_anisotropy, model_spec, to_maps, Microstructure, MicrostructureConfig,
    MicrostructureFittingConfig,
};
pub use presets::{Preset, PRESETS};
pub use scheme::{parse_bvecs, Scheme, Shell};

use osipy_core::{Registry, Result};

/// Registers the compartments and the preset models.
pub fn register(reg: &mut Registry) -> Result<()> {
    for (name, about, c) in COMPARTMENTS {
        reg.register(name, about, *c)?;
    }
    for (name, about, p) in PRESETS {
        reg.register(name, about, *p)?;
    }
    Ok(())
}
