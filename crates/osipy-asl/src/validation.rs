//! Phantom checks of `cargo xtask dro-validate`: single- and multi-PLD,
//! pCASL and PASL, several noise levels, CBF and ATT (and aBV) error
//! statistics against the phantom's truth.

use crate::context::{DifferenceInput, DifferenceMethod, Groups, VolumeType};
use crate::kinetics::{LabelingScheme, Physio};
use crate::m0::{M0Calibration, M0Input, M0Settings, ReferenceTissue};
use crate::phantom::{generate, AslPhantom, AslPhantomSpec};
use crate::pipeline::rows;
use crate::quantify::{QuantInput, Quantification};
use crate::AslFittingConfig;
use ndarray::Array3;
use osipy_backend::Device;
use osipy_core::{OsipyError, Registry, Result};
use osipy_fitting::{FitOptions, LmSettings};
use osipy_io::dro::{compare, DroRow, ErrorStats};

/// Maps of one analysis, by name, on the phantom grid.
pub type Maps = Vec<(&'static str, Array3<f64>)>;

/// Analyses a phantom as the pipeline does: `pairwise` differences,
/// `voxelwise` M0 (corrected with the phantom's M0 TR), then
/// `quantification` with the phantom's constants.
pub fn analyse(ph: &AslPhantom, spec: &AslPhantomSpec, quantification: &str, reg: &Registry) -> Result<Maps> {
    let series = rows(&ph.series)?;
    let n_vol = ph.volume_plds.len();
    let types: Vec<VolumeType> = (0..n_vol)
        .map(|i| {
            if i % 2 == 0 {
                VolumeType::Control
            } else {
                VolumeType::Label
            }
        })
        .collect();
    let groups = Groups::new(&types, &ph.volume_plds, &vec![spec.tau; n_vol]);
    let dm = (reg.get::<DifferenceMethod>("pairwise")?.0)(&DifferenceInput {
        series: series.view(),
        types: &types,
        groups: &groups,
    })?;
    let mask = vec![true; series.nrows()];
    let m0_image: Vec<f64> = ph.m0.iter().copied().collect();
    let settings = M0Settings {
        value: None,
        tr: spec.m0_tr,
        te: None,
        t1_tissue: spec.physio.t1_tissue,
        lambda: spec.physio.lambda,
        reference: ReferenceTissue::Csf.defaults(),
    };
    let m0 = (reg.get::<M0Calibration>("voxelwise")?.0)(&M0Input {
        image: Some(&m0_image),
        source: "phantom",
        mask: &mask,
        reference: None,
        settings: &settings,
    })?;
    let mut dm = dm;
    for (mut row, m) in dm.rows_mut().into_iter().zip(&m0) {
        row.mapv_inplace(|x| x / m);
    }
    let q = reg.get::<Quantification>(quantification)?;
    let defaults = AslFittingConfig::default();
    let out = (q.run)(
        &QuantInput {
            dm_over_m0: dm.view(),
            mask: &mask,
            timings: &groups.timings,
            scheme: spec.scheme,
            physio: spec.physio,
            arterial: spec.arterial.is_some(),
            fit: &FitOptions {
                lm: LmSettings::from_config(defaults.max_iterations, defaults.tolerance)?,
                ..FitOptions::default()
            },
        },
        &Device::cpu(None),
    )?;
    out.maps
        .into_iter()
        .map(|m| {
            let values: Vec<f64> = m
                .values
                .iter()
                .zip(&out.status)
                .map(|(v, s)| if s.is_valid() { *v } else { f64::NAN })
                .collect();
            Array3::from_shape_vec(spec.shape, values)
                .map(|a| (m.name, a))
                .map_err(|e| OsipyError::data("map", e.to_string(), "the phantom grid"))
        })
        .collect()
}

fn stats(maps: &Maps, name: &str, truth: &Array3<f64>) -> Result<ErrorStats> {
    let (_, est) = maps.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        OsipyError::data(
            "quantification output",
            format!("no {name} map"),
            name.to_string(),
        )
    })?;
    compare(name, est, truth, None)
}

fn row(suite: &str, case: String, s: &ErrorStats, tolerance: f64, why: &str) -> DroRow {
    DroRow {
        suite: suite.into(),
        case,
        parameter: s.name.clone(),
        n: s.n,
        median_error: s.median_abs_rel_error,
        p90_error: s.p90_abs_rel_error,
        bias: s.median_signed_rel_error,
        n_fail: s.n_invalid,
        tolerance: format!("median |rel. error| <= {tolerance} ({why})"),
        pass: s.median_abs_rel_error <= tolerance && s.n_invalid == 0,
    }
}

/// Noise SD as a fraction of M0 of the bench (`bench_asl.py`: 5e-4 on
/// each ΔM): with one pair per PLD and independent noise on control and
/// label, M0 / SD = sqrt(2) / 5e-4.
pub const BENCH_SNR: f64 = std::f64::consts::SQRT_2 / 5e-4;

/// Median CBF and ATT error allowed for multi-PLD fits at the bench's
/// noise and below: 5 % (the goal).
const MULTI_TOLERANCE: f64 = 0.05;

/// CBF and ATT with the arterial component fitted too (4 parameters from
/// the same 12 samples, aATT partly confounded with ATT): 10 %.
const ARTERIAL_TOLERANCE: f64 = 0.10;

/// The same at twice the bench's noise: 10 %.
const MULTI_NOISY_TOLERANCE: f64 = 0.10;

/// Single-PLD CBF where the consensus formula's assumptions hold (ATT <=
/// PLD, label decaying with blood T1: tissue T1 = blood T1): only the
/// outflow term f/λ of T1' separates it from the kinetic model, a bias
/// below 2 %; 5 %.
const SINGLE_TOLERANCE: f64 = 0.05;

/// Multi-PLD phantoms.
fn multi_specs() -> Vec<(String, AslPhantomSpec)> {
    let pcasl = AslPhantomSpec {
        plds: (1..=12).map(|i| 0.25 * i as f64).collect(),
        ..AslPhantomSpec::default()
    };
    let pasl = AslPhantomSpec {
        scheme: LabelingScheme::Pasl,
        plds: (1..=10).map(|i| 0.3 * i as f64).collect(),
        tau: 0.8,
        att: vec![0.4, 0.6, 0.8, 1.0],
        physio: Physio {
            alpha: 0.98,
            ..pcasl.physio
        },
        ..pcasl.clone()
    };
    let mut out = Vec::new();
    for (name, base) in [("pcasl 12 PLDs", pcasl), ("pasl 10 TIs", pasl)] {
        for (label, snr) in [("bench noise", BENCH_SNR), ("2x bench noise", BENCH_SNR / 2.0)] {
            out.push((
                format!("{name}, {label} (M0/SD {snr:.0})"),
                AslPhantomSpec {
                    snr: Some(snr),
                    ..base.clone()
                },
            ));
        }
    }
    out
}

/// The rows of `dro-validate`.
pub fn phantom_rows(reg: &Registry) -> Result<Vec<DroRow>> {
    let mut rows = Vec::new();
    for (case, spec) in multi_specs() {
        let ph = generate(&spec)?;
        let maps = analyse(&ph, &spec, "buxton_multi_pld", reg)?;
        let tol = if spec.snr.is_some_and(|s| s < BENCH_SNR) {
            MULTI_NOISY_TOLERANCE
        } else {
            MULTI_TOLERANCE
        };
        for (name, truth) in [("CBF", &ph.cbf), ("ATT", &ph.att)] {
            let s = stats(&maps, name, truth)?;
            rows.push(row(
                "asl-multi-pld",
                case.clone(),
                &s,
                tol,
                "issue goal at the bench's noise",
            ));
        }
    }
    // Arterial component: aBV 1 %, arriving at 0.4 s.
    let spec = AslPhantomSpec {
        plds: (1..=12).map(|i| 0.25 * i as f64).collect(),
        arterial: Some((0.01, 0.4)),
        snr: Some(BENCH_SNR),
        ..AslPhantomSpec::default()
    };
    let ph = generate(&spec)?;
    let maps = analyse(&ph, &spec, "buxton_multi_pld", reg)?;
    for (name, truth, tol) in [
        ("CBF", &ph.cbf, ARTERIAL_TOLERANCE),
        ("ATT", &ph.att, ARTERIAL_TOLERANCE),
        ("aBV", &ph.abv, 0.25),
    ] {
        let s = stats(&maps, name, truth)?;
        rows.push(row(
            "asl-arterial",
            "pcasl 12 PLDs, aBV 0.01 at 0.4 s, bench noise".into(),
            &s,
            tol,
            if name == "aBV" {
                "a small signal at few early PLDs: 25 %"
            } else {
                "two more parameters from the same 12 samples: 10 %"
            },
        ));
    }
    // Single PLD, noise-free and at the bench's noise with 10 pairs, with
    // tissue T1 = blood T1 (the formula's assumption; with tissue T1
    // 1.33 s the formula reads 10-30 % low, see docs/asl.md).
    for (scheme, pld, tau, att, method) in [
        (
            LabelingScheme::Pcasl,
            2.0,
            1.8,
            vec![0.6, 1.0, 1.4, 1.8],
            "pcasl_single_pld",
        ),
        (
            LabelingScheme::Pasl,
            1.8,
            0.8,
            vec![0.4, 0.6, 0.8, 1.0],
            "pasl_single_pld",
        ),
    ] {
        for snr in [None, Some(BENCH_SNR)] {
            let spec = AslPhantomSpec {
                scheme,
                plds: vec![pld],
                tau,
                att: att.clone(),
                repeats: 10,
                snr,
                physio: Physio {
                    t1_tissue: 1.65,
                    alpha: scheme.default_efficiency(),
                    ..AslPhantomSpec::default().physio
                },
                ..AslPhantomSpec::default()
            };
            let ph = generate(&spec)?;
            let maps = analyse(&ph, &spec, method, reg)?;
            let s = stats(&maps, "CBF", &ph.cbf)?;
            rows.push(row(
                "asl-single-pld",
                format!(
                    "{method}, PLD {pld} s, ATT <= {} s, T1 = T1b, {}",
                    att[att.len() - 1],
                    snr.map_or("noise-free".to_string(), |s| format!("10 pairs, M0/SD {s:.0}"))
                ),
                &s,
                SINGLE_TOLERANCE,
                "white-paper model bias",
            ));
        }
    }
    Ok(rows)
}
