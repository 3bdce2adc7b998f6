//! A fitted parameter as a 3D map with quality mask and uncertainty.

use crate::{OsipyError, Provenance, QualityCode, Result, Unit};
use ndarray::Array3;

/// One parameter over the image grid.
///
/// Invariant: where `quality[v]` is not valid ([`QualityCode::is_valid`]) the
/// value is NaN; a failed voxel is never a silent 0.
#[derive(Debug, Clone)]
pub struct ParameterMap {
    /// OSIPI/CAPLEX name, e.g. `Ktrans`, `ve`, `Dstar`.
    pub name: String,
    /// Symbol for display, e.g. `K^trans`, `D*`.
    pub symbol: String,
    /// Unit of `values` and `std_error`.
    pub unit: Unit,
    /// Values on the (x, y, z) grid.
    pub values: Array3<f64>,
    /// Per-voxel quality code.
    pub quality: Array3<QualityCode>,
    /// Per-voxel standard error (same unit), when the method gives one.
    pub std_error: Option<Array3<f64>>,
    /// What produced the map.
    pub provenance: Provenance,
}

impl ParameterMap {
    /// Builds a map and enforces the NaN-where-invalid invariant.
    ///
    /// Errors when the quality or standard-error grid differs in shape.
    pub fn new(
        name: &str,
        symbol: &str,
        unit: Unit,
        mut values: Array3<f64>,
        quality: Array3<QualityCode>,
        mut std_error: Option<Array3<f64>>,
        provenance: Provenance,
    ) -> Result<ParameterMap> {
        if values.shape() != quality.shape() {
            return Err(OsipyError::data(
                format!("quality mask of {name}"),
                format!("shape {:?}", quality.shape()),
                format!("the value map's shape {:?}", values.shape()),
            ));
        }
        if let Some(se) = &std_error {
            if se.shape() != values.shape() {
                return Err(OsipyError::data(
                    format!("standard-error map of {name}"),
                    format!("shape {:?}", se.shape()),
                    format!("the value map's shape {:?}", values.shape()),
                ));
            }
        }
        ndarray::Zip::from(&mut values).and(&quality).for_each(|v, q| {
            if !q.is_valid() {
                *v = f64::NAN;
            }
        });
        if let Some(se) = std_error.as_mut() {
            ndarray::Zip::from(se).and(&quality).for_each(|v, q| {
                if !q.is_valid() {
                    *v = f64::NAN;
                }
            });
        }
        Ok(ParameterMap {
            name: name.to_string(),
            symbol: symbol.to_string(),
            unit,
            values,
            quality,
            std_error,
            provenance,
        })
    }

    /// Grid shape (x, y, z).
    pub fn shape(&self) -> [usize; 3] {
        let s = self.values.shape();
        [s[0], s[1], s[2]]
    }

    /// Boolean mask: true where the value is valid.
    pub fn valid_mask(&self) -> Array3<bool> {
        self.quality.mapv(|q| q.is_valid())
    }

    /// Number of voxels per quality code, in code order, as (name, count).
    pub fn quality_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts = [0usize; QualityCode::ALL.len()];
        for q in self.quality.iter() {
            counts[q.code() as usize] += 1;
        }
        QualityCode::ALL
            .iter()
            .zip(counts)
            .map(|(q, c)| (q.name(), c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_voxels_become_nan_and_shapes_are_checked() {
        let values = Array3::from_elem((2, 1, 1), 0.5);
        let mut quality = Array3::from_elem((2, 1, 1), QualityCode::Converged);
        quality[[1, 0, 0]] = QualityCode::Singular;
        let se = Some(Array3::from_elem((2, 1, 1), 0.1));
        let m = ParameterMap::new(
            "ve",
            "v_e",
            Unit::Dimensionless,
            values,
            quality.clone(),
            se,
            Provenance::default(),
        )
        .unwrap();
        assert_eq!(m.values[[0, 0, 0]], 0.5);
        assert!(m.values[[1, 0, 0]].is_nan());
        assert!(m.std_error.as_ref().unwrap()[[1, 0, 0]].is_nan());
        assert!(!m.valid_mask()[[1, 0, 0]]);
        let counts = m.quality_counts();
        assert_eq!(counts[1], ("converged", 1));
        assert_eq!(counts[5], ("singular", 1));

        let err = ParameterMap::new(
            "ve",
            "v_e",
            Unit::Dimensionless,
            Array3::zeros((3, 1, 1)),
            quality,
            None,
            Provenance::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[2, 1, 1]") && err.contains("[3, 1, 1]"), "{err}");
    }
}
