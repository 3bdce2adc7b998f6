//! Synthetic ASL series with known CBF, ATT and arterial blood volume.
//!
//! CBF varies along x, ATT along y; every z slice repeats the pattern.
//! Each PLD is acquired as `repeats` control/label pairs (control first):
//! control = M0 (the readout is fully relaxed), label = control - ΔM with
//! ΔM = M0 ([`tissue`] + [`arterial`]) from the general kinetic model,
//! plus Gaussian noise of SD M0 / `snr` on every volume, seeded. The M0
//! image is a spin echo at `m0_tr` (TE 0), so a short TR leaves the T1
//! saturation that calibration must correct.

use crate::kinetics::{arterial, tissue, LabelingScheme, Physio, Timing, WHITE_PAPER_3T};
use crate::signal::spin_echo;
use ndarray::{Array3, Array4};
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct AslPhantomSpec {
    /// Grid (x, y, z).
    pub shape: [usize; 3],
    /// Labeling scheme.
    pub scheme: LabelingScheme,
    /// PLDs (s; TIs for PASL).
    pub plds: Vec<f64>,
    /// Label duration (s; TI1 for PASL).
    pub tau: f64,
    /// Control/label pairs per PLD.
    pub repeats: usize,
    /// Tissue M0 (signal units).
    pub m0: f64,
    /// TR of the M0 image (s; `None`: fully relaxed).
    pub m0_tr: Option<f64>,
    /// Constants of the forward model.
    pub physio: Physio,
    /// CBF levels (ml/100g/min), along x.
    pub cbf: Vec<f64>,
    /// ATT levels (s), along y.
    pub att: Vec<f64>,
    /// Arterial blood volume (fraction) and its arrival time (s), everywhere.
    pub arterial: Option<(f64, f64)>,
    /// M0 / noise SD (`None`: noise-free).
    pub snr: Option<f64>,
    /// Noise seed.
    pub seed: u64,
}

impl Default for AslPhantomSpec {
    /// The white-paper pCASL protocol (τ 1.8 s) at 6 PLDs 0.5-3.0 s,
    /// constants of the bench (T1b 1.65 s, T1 1.33 s, λ 0.9, α 0.85).
    fn default() -> Self {
        AslPhantomSpec {
            shape: [8, 8, 2],
            scheme: LabelingScheme::Pcasl,
            plds: vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
            tau: 1.8,
            repeats: 1,
            m0: 1000.0,
            m0_tr: None,
            physio: WHITE_PAPER_3T,
            cbf: vec![20.0, 40.0, 60.0, 80.0],
            att: vec![0.6, 1.0, 1.4, 1.8],
            arterial: None,
            snr: None,
            seed: 7,
        }
    }
}

/// A generated phantom.
#[derive(Debug, Clone)]
pub struct AslPhantom {
    /// control, label, control, label, ... (x, y, z, volumes): each PLD's
    /// `repeats` pairs, PLDs in the order given.
    pub series: Array4<f64>,
    /// PLD of each volume (s).
    pub volume_plds: Vec<f64>,
    /// The M0 image.
    pub m0: Array3<f64>,
    /// True CBF.
    pub cbf: Array3<f64>,
    /// True ATT.
    pub att: Array3<f64>,
    /// True aBV (zero without the arterial component).
    pub abv: Array3<f64>,
}

/// Generates the phantom of `spec`.
pub fn generate(spec: &AslPhantomSpec) -> Result<AslPhantom> {
    if spec.cbf.is_empty() || spec.att.is_empty() || spec.plds.is_empty() || spec.repeats == 0 {
        return Err(OsipyError::data(
            "ASL phantom spec",
            "an empty level list, PLD list or zero repeats",
            "at least one CBF, ATT and PLD, and one repeat",
        ));
    }
    let [nx, ny, nz] = spec.shape;
    let level =
        |levels: &[f64], i: usize, n: usize| levels[(i * levels.len() / n.max(1)).min(levels.len() - 1)];
    let cbf = Array3::from_shape_fn(spec.shape, |(x, _, _)| level(&spec.cbf, x, nx));
    let att = Array3::from_shape_fn(spec.shape, |(_, y, _)| level(&spec.att, y, ny));
    let (abv_level, aatt) = spec.arterial.unwrap_or((0.0, 0.0));
    let abv = Array3::from_elem(spec.shape, abv_level);
    let volume_plds: Vec<f64> = spec
        .plds
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, 2 * spec.repeats))
        .collect();
    let n_vol = volume_plds.len();
    let mut rng = Rng::new(spec.seed);
    let sd = spec.snr.map_or(0.0, |s| spec.m0 / s);
    let mut series = Array4::zeros((nx, ny, nz, n_vol));
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                for (i, pld) in volume_plds.iter().enumerate() {
                    let s = Timing {
                        pld: *pld,
                        tau: spec.tau,
                    };
                    let mut control = spec.m0;
                    if i % 2 == 1 {
                        let dm = tissue(spec.scheme, cbf[[x, y, z]], att[[x, y, z]], s, &spec.physio)
                            + arterial(spec.scheme, abv_level, aatt, s, &spec.physio);
                        control -= spec.m0 * dm;
                    }
                    series[[x, y, z, i]] = control + sd * rng.normal();
                }
            }
        }
    }
    let relaxed = spec.m0_tr.map_or(spec.m0, |tr| {
        spin_echo(spec.m0, spec.physio.t1_tissue, 1.0, 0.0, tr)
    });
    let m0 = Array3::from_shape_fn(spec.shape, |_| relaxed + sd * rng.normal());
    Ok(AslPhantom {
        series,
        volume_plds,
        m0,
        cbf,
        att,
        abv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_free_differences_are_the_model() {
        let spec = AslPhantomSpec::default();
        let ph = generate(&spec).unwrap();
        assert_eq!(ph.series.shape(), &[8, 8, 2, 12]);
        let (x, y) = (5, 2);
        let s = Timing { pld: 1.5, tau: 1.8 };
        let dm = ph.series[[x, y, 0, 4]] - ph.series[[x, y, 0, 5]];
        let expect = 1000.0 * tissue(spec.scheme, ph.cbf[[x, y, 0]], ph.att[[x, y, 0]], s, &spec.physio);
        assert!((dm - expect).abs() < 1e-9 && expect > 1.0, "{dm} vs {expect}");
        assert_eq!(ph.cbf[[5, 0, 0]], 60.0);
        assert_eq!(ph.att[[0, 4, 0]], 1.4);
    }

    #[test]
    fn noise_is_seeded() {
        let spec = AslPhantomSpec {
            snr: Some(100.0),
            ..AslPhantomSpec::default()
        };
        assert_eq!(generate(&spec).unwrap().series, generate(&spec).unwrap().series);
        let other = AslPhantomSpec {
            seed: 8,
            ..spec.clone()
        };
        assert_ne!(generate(&spec).unwrap().series, generate(&other).unwrap().series);
    }
}
