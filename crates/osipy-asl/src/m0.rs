//! M0 calibration (registry `asl_m0`): the equilibrium magnetisation of
//! tissue per voxel that ΔM is divided by, from an M0 image, one value, or
//! a reference region.

use osipy_core::{Extension, KindInfo, OsipyError, Result};
use osipy_io::Choice;
use serde::{Deserialize, Serialize};

/// Reference tissue of `m0_method = "reference_region"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceTissue {
    /// Cerebrospinal fluid (ventricles).
    Csf,
    /// White matter.
    Wm,
    /// Grey matter.
    Gm,
}

impl Choice for ReferenceTissue {
    const ALL: &'static [Self] = &[ReferenceTissue::Csf, ReferenceTissue::Wm, ReferenceTissue::Gm];
}

impl ReferenceTissue {
    /// Default (T1 s, T2\* s, tissue/blood partition coefficient ml/g) at
    /// 3 T: the reference-tissue defaults of BASIL's calibration
    /// (Chappell et al.; oxford_asl), partition coefficients from
    /// Herscovitch and Raichle 1985 (GM 0.98, WM 0.82) and CSF 1.15.
    pub fn defaults(self) -> (f64, f64, f64) {
        match self {
            ReferenceTissue::Csf => (4.3, 0.4, 1.15),
            ReferenceTissue::Wm => (1.0, 0.05, 0.82),
            ReferenceTissue::Gm => (1.3, 0.05, 0.98),
        }
    }
}

/// Settings of a calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct M0Settings {
    /// One M0 for every voxel (`single`).
    pub value: Option<f64>,
    /// TR (s) of the M0 image: its T1 saturation is corrected when known.
    pub tr: Option<f64>,
    /// TE (s) of the M0 image (`reference_region`'s T2\* correction).
    pub te: Option<f64>,
    /// T1 of tissue (s), for the saturation correction of voxelwise M0.
    pub t1_tissue: f64,
    /// Blood-brain partition coefficient λ (ml/g).
    pub lambda: f64,
    /// Reference tissue (T1 s, T2\* s, partition coefficient ml/g).
    pub reference: (f64, f64, f64),
}

/// What a calibration reads: the M0 image (one value per voxel), the
/// analysis mask and the reference region, when there are.
#[derive(Debug, Clone, Copy)]
pub struct M0Input<'a> {
    /// M0 image (signal units), one value per voxel.
    pub image: Option<&'a [f64]>,
    /// Where the image came from, for messages.
    pub source: &'a str,
    /// Analysis mask.
    pub mask: &'a [bool],
    /// Reference region (`reference_region`).
    pub reference: Option<&'a [bool]>,
    /// Settings.
    pub settings: &'a M0Settings,
}

/// A calibration: the tissue M0 of each voxel (NaN where unknown).
#[derive(Debug, Clone, Copy)]
pub struct M0Calibration(pub fn(&M0Input<'_>) -> Result<Vec<f64>>);

impl Extension for M0Calibration {
    const KIND: KindInfo = KindInfo {
        id: "asl_m0",
        label: "ASL M0 calibration methods",
        config_key: "pipeline.m0_method",
    };
}

/// Saturation-recovery correction 1 / (1 - e^(-TR/T1)) of an image taken
/// with repetition time `tr` (1 when TR is unknown).
pub fn saturation_factor(tr: Option<f64>, t1: f64) -> f64 {
    tr.map_or(1.0, |tr| 1.0 / -(-tr / t1).exp_m1())
}

fn image<'a>(input: &M0Input<'a>, method: &str) -> Result<&'a [f64]> {
    input.image.ok_or_else(|| OsipyError::MissingParameter {
        name: "data.m0".into(),
        needed_for: format!("m0_method = \"{method}\""),
        hint: "an M0 image (data.m0, or m0scan volumes listed in data.aslcontext); or m0_method = \"single\" with m0_value"
            .into(),
    })
}

/// `voxelwise`: the M0 image, corrected for T1 saturation when its TR is
/// known: M0 = S / (1 - e^(-TR/T1 tissue)).
pub fn voxelwise(input: &M0Input<'_>) -> Result<Vec<f64>> {
    let img = image(input, "voxelwise")?;
    let k = saturation_factor(input.settings.tr, input.settings.t1_tissue);
    Ok(img.iter().map(|s| s * k).collect())
}

/// `single`: `m0_value` for every voxel; else the median of the corrected
/// M0 image within the mask.
pub fn single(input: &M0Input<'_>) -> Result<Vec<f64>> {
    let value = match input.settings.value {
        Some(v) => v,
        None => {
            let img = voxelwise(input)?;
            let mut inside: Vec<f64> = img
                .iter()
                .zip(input.mask)
                .filter(|(v, m)| **m && v.is_finite() && **v > 0.0)
                .map(|(v, _)| *v)
                .collect();
            if inside.is_empty() {
                return Err(OsipyError::data(
                    format!("M0 image {} in the mask", input.source),
                    "no positive finite value",
                    "an M0 image with signal in the mask; or pipeline.m0_value",
                ));
            }
            inside.sort_by(f64::total_cmp);
            inside[inside.len() / 2]
        }
    };
    Ok(vec![value; input.mask.len()])
}

/// `reference_region`: the mean M0 signal of a reference tissue,
/// corrected for T1 saturation and T2\* decay and divided by its partition
/// coefficient, is the M0 of arterial blood, M0b = S e^(TE/T2\*) /
/// ((1 - e^(-TR/T1)) pc); the tissue M0 is λ M0b in every voxel (so that
/// quantification's M0b = M0 / λ is this value).
pub fn reference_region(input: &M0Input<'_>) -> Result<Vec<f64>> {
    let img = image(input, "reference_region")?;
    let region = input.reference.ok_or_else(|| OsipyError::MissingParameter {
        name: "data.m0_reference_mask".into(),
        needed_for: "m0_method = \"reference_region\"".into(),
        hint: "a 3D mask of the reference tissue (CSF, white matter) on the ASL grid".into(),
    })?;
    let te = input.settings.te.ok_or_else(|| OsipyError::MissingParameter {
        name: "pipeline.m0_te".into(),
        needed_for: "the T2* correction of m0_method = \"reference_region\"".into(),
        hint: "echo time of the M0 image in s, e.g. m0_te = 0.014 (or EchoTime in its JSON sidecar)".into(),
    })?;
    let values: Vec<f64> = img
        .iter()
        .zip(region)
        .filter(|(v, r)| **r && v.is_finite())
        .map(|(v, _)| *v)
        .collect();
    if values.is_empty() {
        return Err(OsipyError::data(
            "data.m0_reference_mask",
            "no voxel with a finite M0",
            "a non-empty reference region",
        ));
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let (t1, t2s, pc) = input.settings.reference;
    let m0b = mean * saturation_factor(input.settings.tr, t1) * (te / t2s).exp() / pc;
    Ok(vec![input.settings.lambda * m0b; img.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> M0Settings {
        M0Settings {
            value: None,
            tr: Some(2.0),
            te: Some(0.01),
            t1_tissue: 1.33,
            lambda: 0.9,
            reference: ReferenceTissue::Csf.defaults(),
        }
    }

    #[test]
    fn voxelwise_corrects_a_short_tr() {
        let s = settings();
        let img = [1000.0 * -(-2.0f64 / 1.33).exp_m1()];
        let input = M0Input {
            image: Some(&img),
            source: "m0",
            mask: &[true],
            reference: None,
            settings: &s,
        };
        assert!((voxelwise(&input).unwrap()[0] - 1000.0).abs() < 1e-9);
        let none = M0Input { image: None, ..input };
        let e = voxelwise(&none).unwrap_err().to_string();
        assert!(e.contains("data.m0") && e.contains("m0scan"), "{e}");
    }

    #[test]
    fn single_takes_the_value_or_the_median() {
        let s = M0Settings {
            tr: None,
            ..settings()
        };
        let img = [1.0, 5.0, 3.0, 100.0];
        let input = M0Input {
            image: Some(&img),
            source: "m0",
            mask: &[true, true, true, false],
            reference: None,
            settings: &s,
        };
        assert_eq!(single(&input).unwrap(), vec![3.0; 4]);
        let fixed = M0Settings {
            value: Some(7.0),
            ..s.clone()
        };
        let input = M0Input {
            settings: &fixed,
            ..input
        };
        assert_eq!(single(&input).unwrap(), vec![7.0; 4]);
    }

    #[test]
    fn reference_region_gives_lambda_times_blood_m0() {
        let s = settings();
        let (t1, t2s, pc) = s.reference;
        // A CSF signal for a blood M0 of 800.
        let csf = 800.0 * pc * -(-2.0 / t1).exp_m1() * (-0.01 / t2s).exp();
        let img = [csf, csf, 123.0];
        let input = M0Input {
            image: Some(&img),
            source: "m0",
            mask: &[true; 3],
            reference: Some(&[true, true, false]),
            settings: &s,
        };
        let m0 = reference_region(&input).unwrap();
        assert!(m0.iter().all(|v| (v - 0.9 * 800.0).abs() < 1e-9), "{m0:?}");
        let e = reference_region(&M0Input {
            reference: None,
            ..input
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.m0_reference_mask"), "{e}");
    }
}
