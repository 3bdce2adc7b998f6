//! # osipy-core
//!
//! The shared vocabulary of osipy: the error type, units, modalities,
//! per-voxel quality codes, [`ParameterMap`], [`PerfusionDataset`] with typed
//! acquisition parameters, [`Provenance`], and the typed [`Registry`] that
//! every extension point (models, fitters, AIFs, ...) is listed in.
//!
//! This crate does no numerics and reads no files.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod dataset;
mod error;
mod modality;
mod parameter_map;
mod provenance;
mod quality;
pub mod registry;
pub mod units;

pub use dataset::{
    check_increasing, AcquisitionParams, AslAcquisition, DceAcquisition, DscAcquisition, IvimAcquisition,
    PerfusionDataset, IDENTITY_AFFINE,
};
pub use error::{OsipyError, Result};
pub use modality::Modality;
pub use parameter_map::ParameterMap;
pub use provenance::Provenance;
pub use quality::QualityCode;
pub use registry::{Entry, Kind, Registry};
pub use units::Unit;
