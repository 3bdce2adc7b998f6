//! # osipy-core
//!
//! The shared vocabulary of osipy: the error type, units, per-voxel quality
//! codes, [`ParameterMap`] and [`MapSet`] (the result of every analysis),
//! [`Provenance`], and the typed [`Registry`] that every extension point
//! (models, fitters, AIFs, ...) is listed in.
//!
//! This crate does no numerics and reads no files (a tidy test checks both).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod error;
mod mapset;
mod parameter_map;
mod provenance;
mod quality;
pub mod registry;
pub mod units;

pub use error::{OsipyError, Result};
pub use mapset::MapSet;
pub use parameter_map::ParameterMap;
pub use provenance::Provenance;
pub use quality::QualityCode;
pub use registry::{Extension, KindInfo, Listing, Registry};
pub use units::Unit;

/// Errors unless `values` is strictly increasing; `what` names them.
pub fn check_increasing(what: &str, values: &[f64]) -> Result<()> {
    for (i, w) in values.windows(2).enumerate() {
        if !(w[1] > w[0]) {
            return Err(OsipyError::data(
                what,
                format!("{} at index {} followed by {} at index {}", w[0], i, w[1], i + 1),
                "strictly increasing values",
            ));
        }
    }
    Ok(())
}

/// Errors unless a 4D series of `shape` (x, y, z, frames) has `n_times`
/// frame times and the mask (if any) its spatial shape.
pub fn check_series(shape: &[usize], n_times: usize, mask: Option<&[usize]>) -> Result<()> {
    if shape.len() != 4 || n_times != shape[3] {
        return Err(OsipyError::data(
            "number of frame times",
            n_times.to_string(),
            format!("{}, the frames of the series", shape.get(3).copied().unwrap_or(0)),
        ));
    }
    match mask {
        Some(m) if m != &shape[..3] => Err(OsipyError::data(
            "mask shape",
            format!("{m:?}"),
            format!("{:?}, the series' spatial shape", &shape[..3]),
        )),
        _ => Ok(()),
    }
}

/// Errors unless a per-voxel array (`what`, e.g. "mask length") has `len`
/// entries, one per voxel of `n_vox`.
pub fn check_per_voxel(what: &str, len: usize, n_vox: usize) -> Result<()> {
    if len == n_vox {
        Ok(())
    } else {
        Err(OsipyError::data(
            what,
            len.to_string(),
            format!("{n_vox}, one per voxel"),
        ))
    }
}

/// Per-voxel values, voxel `v = (x ny + y) nz + z` (row-major, as a fit's
/// rows), as an (x, y, z) array on `grid`.
pub fn on_grid<T>(grid: [usize; 3], value: impl Fn(usize) -> T) -> ndarray::Array3<T> {
    ndarray::Array3::from_shape_fn(grid, |(x, y, z)| value((x * grid[1] + y) * grid[2] + z))
}

/// Errors unless `len` fitted voxels fill `grid`.
pub fn check_grid(len: usize, grid: [usize; 3]) -> Result<()> {
    let n = grid.iter().product::<usize>();
    if len == n {
        Ok(())
    } else {
        Err(OsipyError::data(
            "fitted voxels",
            len.to_string(),
            format!("{n}, the voxels of the grid {grid:?}"),
        ))
    }
}

/// The identity affine (1 mm isotropic voxels at the origin).
pub const IDENTITY_AFFINE: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];
