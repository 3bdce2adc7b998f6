//! # osipy-io
//!
//! The only osipy crate that touches image files.
//!
//! * [`read_nifti`], [`read_3d`], [`read_4d`]: `.nii` / `.nii.gz` of any stored
//!   data type to f64, with `scl_slope`/`scl_inter` applied, the affine from the
//!   sform (else the qform, else the voxel sizes) and the time step from
//!   `pixdim[4]` in seconds. [`read_4d_any`] holds a series as float32 when
//!   that is exact (half the memory).
//! * [`write_map`], [`write_mask`], [`write_4d`], [`write_parameter_map`]:
//!   `.nii.gz` outputs with the source geometry and JSON sidecars, each written
//!   to a temporary name and renamed when complete ([`atomic_write`]).
//!
//! Malformed files (missing, truncated, corrupt, wrong dimensionality) give an
//! [`osipy_core::OsipyError::Io`] naming the file and the problem.
//! * [`Inputs`]: a modality's input roles resolved from the `[data]` table
//!   or discovered in the data folder, with readers for series, volumes,
//!   numeric tables, value lists and JSON sidecars; [`Dataset`] is the one
//!   input model (4D data, geometry, dynamic axis with unit, mask, typed
//!   acquisition parameters with their sources).
//! * [`modality`]: the modality seam ([`ModalityDef`]) and the run context.
//!
//! * [`dicom`]: DICOM folders (classic and enhanced MR) read into the same
//!   input model, with vendor b-values and frame times.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod atomic;
pub mod bids;
pub mod curves;
mod dataset;
pub mod dicom;
pub mod dro;
mod inputs;
pub mod modality;
mod nifti_io;
pub mod peers;

pub use curves::{aif_plot, voxel_curves, CurveAxes, Plot, Trace};
pub use dataset::{Acquisition, AnyDataset, AxisUnit, Dataset, DynamicAxis, Sample, Sourced};
pub use dro::DroRow;
pub use inputs::{
    check_grid, is_nifti, parse_numbers, parse_value_list, participant, read_numbers, read_text_file,
    read_value_list, DataValue, InputKind, InputSpec, Inputs, Series, FORMAT, MASK, MAX_TEXT_BYTES, SERIES,
    SESSION, SHARED, SUBJECT, TIME_FILE,
};
pub use modality::{
    check_flip_angle, check_positive, check_seconds, choice_names, Choice, DemoCase, DemoFile, ModalityDef,
    ModalityInfo, Outputs, Progress, RunContext, Volume,
};

pub use atomic::{atomic_write, write_json};
pub use nifti_io::{
    read_3d, read_4d, read_4d_any, read_nifti, write_4d, write_4d_f64, write_map, write_mask,
    write_parameter_map, write_parameter_map_as, write_parameter_map_with, AnySeries4, Geometry, NiftiVolume,
};
