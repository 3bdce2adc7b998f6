//! # osipy-pipeline
//!
//! From files to maps: the run [`config`] (TOML), data discovery, the DCE
//! pipeline ([`run_analysis`]), the built-in registry assembled from every
//! crate's `register` ([`builtin_registry`]) and DRO comparison statistics
//! ([`dro`]).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod config;
mod dce;
pub mod dro;

pub use config::Config;
pub use dce::{resolve_inputs, run_analysis, Inputs, RunOptions, RunSummary};

use osipy_core::{Registry, Result};

/// Every method built into this version, from each crate's `register`.
pub fn builtin_registry() -> Result<Registry> {
    let mut reg = Registry::new();
    osipy_fitting::register(&mut reg)?;
    osipy_aif::register(&mut reg)?;
    osipy_convolution::register(&mut reg)?;
    osipy_dce::register(&mut reg)?;
    osipy_ivim::register(&mut reg)?;
    Ok(reg)
}
