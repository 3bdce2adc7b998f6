//! The one result type of every modality's analysis.

use crate::{ParameterMap, QualityCode};
use ndarray::Array3;

/// Parameter maps (each with its standard error and provenance), the R^2 of
/// the fit and the per-voxel quality, on the image grid.
#[derive(Debug, Clone)]
pub struct MapSet {
    /// One map per reported parameter, then derived maps.
    pub maps: Vec<ParameterMap>,
    /// R^2 per voxel (NaN where nothing was fitted).
    pub r_squared: Array3<f64>,
    /// Quality code per voxel.
    pub quality: Array3<QualityCode>,
}

impl MapSet {
    /// The map called `name`, if present.
    pub fn map(&self, name: &str) -> Option<&ParameterMap> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// Marks voxel `(x, y, z)` with `code` in the quality grid and in every
    /// map (making its values NaN when the code is not valid).
    pub fn set_quality(&mut self, index: (usize, usize, usize), code: QualityCode) {
        self.quality[index] = code;
        for m in &mut self.maps {
            m.quality[index] = code;
            if !code.is_valid() {
                m.values[index] = f64::NAN;
                if let Some(se) = &mut m.std_error {
                    se[index] = f64::NAN;
                }
            }
        }
    }
}
