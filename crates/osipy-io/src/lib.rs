//! # osipy-io
//!
//! The only osipy crate that touches image files.
//!
//! * [`read_nifti`], [`read_3d`], [`read_4d`]: `.nii` / `.nii.gz` of any stored
//!   data type to f64, with `scl_slope`/`scl_inter` applied, the affine from the
//!   sform (else the qform, else the voxel sizes) and the time step from
//!   pixdim[4] in seconds.
//! * [`write_map`], [`write_mask`], [`write_4d`], [`write_parameter_map`]:
//!   `.nii.gz` outputs with the source geometry and JSON sidecars, each written
//!   to a temporary name and renamed when complete ([`atomic_write`]).
//!
//! Malformed files (missing, truncated, corrupt, wrong dimensionality) give an
//! [`osipy_core::OsipyError::Io`] naming the file and the problem.
//! DICOM and BIDS support come with their own issue.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod atomic;
mod nifti_io;

pub use atomic::{atomic_write, write_json};
pub use nifti_io::{
    read_3d, read_4d, read_nifti, write_4d, write_map, write_mask, write_parameter_map, Geometry, NiftiVolume,
};
