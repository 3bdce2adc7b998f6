//! The in-memory input of an analysis: 4D data plus acquisition metadata.

use crate::{Modality, OsipyError, Result};
use ndarray::Array4;
use serde::{Deserialize, Serialize};

/// DCE acquisition parameters (SI units as in BIDS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DceAcquisition {
    /// Repetition time (s).
    pub tr: Option<f64>,
    /// Flip angle of the dynamic series (degrees).
    pub flip_angle: Option<f64>,
    /// Flip angles of a VFA T1 series (degrees).
    pub flip_angles: Vec<f64>,
    /// Contrast-agent relaxivity r1 (1/s/mM).
    pub relaxivity: Option<f64>,
    /// Number of pre-contrast frames.
    pub baseline_frames: Option<usize>,
    /// Assumed pre-contrast T1 (s) when no T1 data is given.
    pub t1_assumed: Option<f64>,
}

/// DSC acquisition parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DscAcquisition {
    /// Echo time (s).
    pub te: Option<f64>,
    /// Repetition time (s).
    pub tr: Option<f64>,
    /// Number of pre-bolus frames.
    pub baseline_frames: Option<usize>,
}

/// ASL acquisition parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AslAcquisition {
    /// Labelling scheme, e.g. `pcasl`, `pasl`.
    pub labeling: Option<String>,
    /// Labelling duration (s).
    pub label_duration: Option<f64>,
    /// Post-labelling delays (s), one per volume pair.
    pub plds: Vec<f64>,
    /// Labelling efficiency (fraction).
    pub labeling_efficiency: Option<f64>,
}

/// IVIM acquisition parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IvimAcquisition {
    /// Diffusion weightings (s/mm^2), one per volume.
    pub b_values: Vec<f64>,
}

/// Typed acquisition parameters, one variant per modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AcquisitionParams {
    /// DCE.
    Dce(DceAcquisition),
    /// DSC.
    Dsc(DscAcquisition),
    /// ASL.
    Asl(AslAcquisition),
    /// IVIM.
    Ivim(IvimAcquisition),
}

impl AcquisitionParams {
    /// The modality these parameters belong to.
    pub fn modality(&self) -> Modality {
        match self {
            AcquisitionParams::Dce(_) => Modality::Dce,
            AcquisitionParams::Dsc(_) => Modality::Dsc,
            AcquisitionParams::Asl(_) => Modality::Asl,
            AcquisitionParams::Ivim(_) => Modality::Ivim,
        }
    }
}

/// A 4D perfusion dataset: spatial axes first, the dynamic axis last.
#[derive(Debug, Clone)]
pub struct PerfusionDataset {
    /// Image data (x, y, z, t|b|PLD).
    pub data: Array4<f64>,
    /// Voxel-to-world affine (4x4, row-major, mm), from the NIfTI header.
    pub affine: [[f64; 4]; 4],
    /// Values of the last axis: frame times (s), b-values (s/mm^2) or PLDs (s).
    pub axis_values: Vec<f64>,
    /// Acquisition parameters; their variant fixes the modality.
    pub acquisition: AcquisitionParams,
    /// Where the data came from (file names), for provenance.
    pub source: Vec<String>,
}

impl PerfusionDataset {
    /// Builds a dataset, checking that the last axis matches `axis_values` and
    /// that the axis values are finite (and, for time, strictly increasing).
    pub fn new(
        data: Array4<f64>,
        affine: [[f64; 4]; 4],
        axis_values: Vec<f64>,
        acquisition: AcquisitionParams,
    ) -> Result<PerfusionDataset> {
        let n = data.shape()[3];
        if axis_values.len() != n {
            return Err(OsipyError::data(
                "number of time points/b-values/PLDs",
                axis_values.len().to_string(),
                format!("{n}, one per volume of the 4D data"),
            ));
        }
        if let Some(bad) = axis_values.iter().find(|v| !v.is_finite()) {
            return Err(OsipyError::data(
                "an axis value",
                bad.to_string(),
                "finite numbers",
            ));
        }
        if matches!(acquisition.modality(), Modality::Dce | Modality::Dsc) {
            check_increasing("frame times (s)", &axis_values)?;
        }
        Ok(PerfusionDataset {
            data,
            affine,
            axis_values,
            acquisition,
            source: Vec::new(),
        })
    }

    /// The modality, from the acquisition parameters.
    pub fn modality(&self) -> Modality {
        self.acquisition.modality()
    }

    /// Spatial shape (x, y, z).
    pub fn spatial_shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }
}

/// Errors unless `values` is strictly increasing.
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

/// The identity affine (1 mm isotropic voxels at the origin).
pub const IDENTITY_AFFINE: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_length_and_monotonic_time_are_checked() {
        let data = Array4::zeros((2, 2, 1, 3));
        let acq = AcquisitionParams::Dce(DceAcquisition::default());
        let ds =
            PerfusionDataset::new(data.clone(), IDENTITY_AFFINE, vec![0.0, 1.0, 2.0], acq.clone()).unwrap();
        assert_eq!(ds.modality(), Modality::Dce);
        assert_eq!(ds.spatial_shape(), [2, 2, 1]);

        let e = PerfusionDataset::new(data.clone(), IDENTITY_AFFINE, vec![0.0, 1.0], acq.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("2") && e.contains("3, one per volume"), "{e}");
        let e = PerfusionDataset::new(data.clone(), IDENTITY_AFFINE, vec![0.0, 2.0, 1.0], acq)
            .unwrap_err()
            .to_string();
        assert!(e.contains("strictly increasing") && e.contains("index 1"), "{e}");
        // IVIM b-values may repeat (averaged later), so no monotonic check.
        let ivim = AcquisitionParams::Ivim(IvimAcquisition {
            b_values: vec![0.0, 0.0, 500.0],
        });
        assert!(PerfusionDataset::new(data, IDENTITY_AFFINE, vec![0.0, 0.0, 500.0], ivim).is_ok());
    }
}
