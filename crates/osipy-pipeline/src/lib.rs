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
mod ivim;
mod output;

pub use config::Config;
pub use dce::{resolve_inputs, Inputs, RunOptions, RunSummary};

use osipy_core::{Modality, OsipyError, Registry, Result};

/// Runs the analysis `config` describes on the files in `opts.data_dir`,
/// writing into `opts.out_dir`.
pub fn run_analysis(config: &Config, opts: &RunOptions) -> Result<RunSummary> {
    config.validate()?;
    match config.modality {
        Modality::Dce => dce::run_dce(config, opts),
        Modality::Ivim => ivim::run_ivim(config, opts),
        other => Err(OsipyError::UnknownName {
            kind: "modality with a pipeline in this build".into(),
            name: other.as_str().into(),
            valid: config::AVAILABLE_MODALITIES
                .iter()
                .map(|m| m.as_str().to_string())
                .collect(),
        }),
    }
}

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
