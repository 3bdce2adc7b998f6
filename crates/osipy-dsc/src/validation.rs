//! Phantom and OSIPI checks of `cargo xtask dro-validate`.

use crate::deconv::{DeconvInput, DeconvSettings, Deconvolution};
use crate::leakage::LeakageCorrection;
use crate::perfusion::cbv_ratio;
use crate::phantom::{generate, DscPhantom, DscPhantomSpec, Residue};
use crate::pipeline::stats;
use crate::signal::{signal_to_delta_r2, DeltaR2};
use osipy_backend::Device;
use osipy_core::{OsipyError, Registry, Result};
use osipy_io::dro::{percentile, DroRow, ErrorStats};

/// The phantom's deltaR2\* (S0 from the frames before the bolus), the
/// voxels it is valid in, and the device used.
fn delta_r2(ph: &DscPhantom, spec: &DscPhantomSpec) -> Result<(DeltaR2, Vec<bool>, Device)> {
    let n_vox: usize = spec.shape.iter().product();
    let rows = ph
        .signal
        .view()
        .into_shape_with_order((n_vox, spec.frames))
        .map_err(|e| OsipyError::data("phantom", e.to_string(), "a 4D array"))?;
    let baseline = ((spec.t0 / spec.dt) as usize).saturating_sub(1);
    let device = Device::cpu(None);
    let dr2 = signal_to_delta_r2(rows, None, spec.te, baseline, &device)?;
    let valid = dr2.status.iter().map(|s| s.is_none()).collect();
    Ok((dr2, valid, device))
}

/// CBF, CBV and MTT of a phantom by `method` (S0 from the 9 frames before
/// the bolus, the phantom's AIF).
pub fn analyse(
    ph: &DscPhantom,
    spec: &DscPhantomSpec,
    method: &str,
    reg: &Registry,
) -> Result<[Vec<f64>; 3]> {
    let (dr2, mask, device) = delta_r2(ph, spec)?;
    let n_vox = mask.len();
    let input = DeconvInput {
        curves: dr2.curves.view(),
        mask: &mask,
        aif: &ph.aif,
        times: &ph.times,
    };
    // vascular_model is told the phantom's residue family (shape 3: gamma).
    let settings = DeconvSettings {
        transit_shape: if spec.residue == Residue::Exponential {
            1
        } else {
            3
        },
        ..DeconvSettings::default()
    };
    let d = (reg.get::<Deconvolution>(method)?.0)(&input, &settings, &device)?;
    let k = spec.factor;
    let cbf: Vec<f64> = d.flow.iter().map(|f| 6000.0 * k * f).collect();
    let cbv: Vec<f64> = (0..n_vox)
        .map(|v| 100.0 * k * cbv_ratio(dr2.curves.row(v).as_slice().unwrap_or(&[]), &ph.aif, &ph.times))
        .collect();
    // A fitted MTT (model-based methods) replaces CBV / CBF, as in the pipeline.
    let mtt = match d.extra.iter().find(|e| e.name == "MTT") {
        Some(m) => m.values.clone(),
        None => cbv.iter().zip(&cbf).map(|(v, f)| 60.0 * v / f).collect(),
    };
    Ok([cbf, cbv, mtt])
}

/// Median absolute relative error allowed for CBF and MTT on the SNR
/// phantoms (gamma residue, 1.5 s sampling): 35 %, the size of the known
/// underestimation of high flows by regularised SVD deconvolution
/// (Østergaard et al. 1996; Wu et al. 2003). Noise-free, block-circulant
/// truncation at 0.1 already gives -15 % on this phantom (the truncated
/// inverse cannot follow the residue's fast initial fall).
const FLOW_TOLERANCE: f64 = 0.35;

/// The same for `vascular_model`, fitted with the phantom's residue family:
/// its error is noise plus the linear interpolation of the 1.5 s AIF
/// samples (+5 % CBF noise-free), so 15 %.
const MODEL_TOLERANCE: f64 = 0.15;

/// CBV is an area ratio, the same for every method; its error is the
/// integrated noise, which scales as 1 / SNR: allowed `CBV_NOISE / snr`
/// (10 % at SNR 100).
const CBV_NOISE: f64 = 10.0;

/// On an exponential residue (a jump at the arrival, which no truncated
/// inverse can follow at 1.5 s sampling) SVD deconvolution underestimates
/// CBF by 30-40 % even noise-free (Østergaard et al. 1996, Fig. 5): the
/// exponential rows check CBF against this looser bound.
const EXPONENTIAL_TOLERANCE: f64 = 0.45;

/// Largest relative change of CBF over a 0-4 s delay sweep for the
/// delay-insensitive methods (the acceptance figure).
const DELAY_TOLERANCE: f64 = 0.05;

/// The same for `tikhonov`, which the issue does not call delay-insensitive.
const TIKHONOV_DELAY_TOLERANCE: f64 = 0.10;

/// Leakage phantom: the leaky quarter of the voxels must have corrected
/// CBV within 10 % of the truth (median), where the uncorrected CBV is not
/// (the acceptance figure).
const LEAKAGE_TOLERANCE: f64 = 0.10;

/// CBV error a correction may add to non-leaky tissue of varied MTT.
const NO_HARM_TOLERANCE: f64 = 0.10;

/// The same for `bsw`, whose K2 also absorbs first-pass shape differences
/// (Bjornerud et al. 2011): 15 %.
const BSW_NO_HARM_TOLERANCE: f64 = 0.15;

/// Leakage rate of the leaky voxels of the phantom (1/s, on the AIF's
/// integral): T1 leakage that lowers their uncorrected CBV by 25-45 %.
const PHANTOM_K2: f64 = 4e-4;

/// One MTT for the whole leakage phantom, so that every first pass has the
/// reference's shape (the assumption of both corrections). With MTT spread
/// over 3-8 s the corrections also fit part of the first-pass shape
/// difference as leakage: we measured median CBV errors of 9-10 % after
/// `bsw` on such a phantom even noise-free.
const MTT: f64 = 4.5;

/// CBV of the leaky voxels (all voxels when `k2` is 0) without and with
/// `method` on a phantom whose leaky quarter has leakage rate `k2` and
/// efflux rate `kep`, MTT levels `mtt`, at `snr` (`None`: noise-free):
/// (uncorrected, corrected) error stats.
pub fn leakage_case(
    method: &str,
    (k2, kep): (f64, f64),
    mtt: &[f64],
    snr: Option<f64>,
    reg: &Registry,
) -> Result<(ErrorStats, ErrorStats)> {
    let spec = DscPhantomSpec {
        shape: [8, 8, 4],
        k2: vec![0.0, 0.0, 0.0, k2],
        kep,
        mtt: mtt.to_vec(),
        snr,
        seed: 13,
        ..DscPhantomSpec::default()
    };
    let ph = generate(&spec)?;
    let (dr2, valid, device) = delta_r2(&ph, &spec)?;
    let n_vox = valid.len();
    let correct = reg.get::<LeakageCorrection>(method)?.0;
    let l = correct(dr2.curves.view(), &valid, &ph.times, &device)?;
    // The leaky quarter (z = 3), or every voxel of a phantom without leakage.
    let leaky: Vec<usize> = (0..n_vox).filter(|v| k2 == 0.0 || v % 4 == 3).collect();
    let cbv = |curves: ndarray::ArrayView2<'_, f64>| -> Vec<f64> {
        leaky
            .iter()
            .map(|v| {
                100.0 * spec.factor * cbv_ratio(curves.row(*v).as_slice().unwrap_or(&[]), &ph.aif, &ph.times)
            })
            .collect()
    };
    let truth = ndarray::Array3::from_shape_fn((leaky.len(), 1, 1), |(i, _, _)| {
        ph.cbv.as_slice().map_or(f64::NAN, |c| c[leaky[i]])
    });
    Ok((
        stats("CBV", &cbv(dr2.curves.view()), &truth)?,
        stats("CBV", &cbv(l.corrected.view()), &truth)?,
    ))
}

/// Leakage rows: each correction on a phantom with its own leakage model
/// (`bsw`: unidirectional; `bidirectional`: efflux 0.02 /s), and each on a
/// phantom without leakage but with MTT 3-8 s, where a correction should
/// do no harm: CBV within [`NO_HARM_TOLERANCE`] (`bsw`, which reads part of
/// the first-pass shape difference as leakage, within
/// [`BSW_NO_HARM_TOLERANCE`]).
fn leakage_rows(reg: &Registry) -> Result<Vec<DroRow>> {
    let mut rows = Vec::new();
    for method in reg.names::<LeakageCorrection>() {
        let kep = if method == "bidirectional" { 0.02 } else { 0.0 };
        let (raw, fixed) = leakage_case(&method, (PHANTOM_K2, kep), &[MTT], Some(200.0), reg)?;
        let pass = fixed.median_abs_rel_error <= LEAKAGE_TOLERANCE
            && raw.median_abs_rel_error > LEAKAGE_TOLERANCE
            && fixed.n_invalid == 0;
        rows.push(DroRow {
            suite: "dsc-leakage".into(),
            case: format!(
                "{method}, leaky voxels (K2 {PHANTOM_K2} /s, kep {kep} /s), SNR 200; uncorrected median error {:.3}",
                raw.median_abs_rel_error
            ),
            parameter: "CBV".into(),
            n: fixed.n,
            median_error: fixed.median_abs_rel_error,
            p90_error: fixed.p90_abs_rel_error,
            bias: fixed.median_signed_rel_error,
            n_fail: fixed.n_invalid,
            tolerance: format!(
                "corrected median |rel. error| <= {LEAKAGE_TOLERANCE}, uncorrected > {LEAKAGE_TOLERANCE}"
            ),
            pass,
        });
        let (raw, fixed) = leakage_case(&method, (0.0, 0.0), &[3.0, 4.5, 6.0, 8.0], Some(200.0), reg)?;
        let tol = if method == "bsw" {
            BSW_NO_HARM_TOLERANCE
        } else {
            NO_HARM_TOLERANCE
        };
        rows.push(DroRow {
            suite: "dsc-leakage".into(),
            case: format!(
                "{method}, no leakage, MTT 3-8 s, SNR 200; uncorrected median error {:.3}",
                raw.median_abs_rel_error
            ),
            parameter: "CBV".into(),
            n: fixed.n,
            median_error: fixed.median_abs_rel_error,
            p90_error: fixed.p90_abs_rel_error,
            bias: fixed.median_signed_rel_error,
            n_fail: fixed.n_invalid,
            tolerance: format!("corrected median |rel. error| <= {tol} (no harm)"),
            pass: fixed.median_abs_rel_error <= tol && fixed.n_invalid == 0,
        });
    }
    Ok(rows)
}

/// Phantom rows: error statistics per method at SNR 50, 100, 200, and a
/// delay sweep.
pub fn phantom_rows(reg: &Registry) -> Result<Vec<DroRow>> {
    let mut rows = Vec::new();
    let methods = reg.names::<Deconvolution>();
    let cases = [
        (Residue::Gamma, 50.0),
        (Residue::Gamma, 100.0),
        (Residue::Gamma, 200.0),
        (Residue::Exponential, 100.0),
    ];
    for (residue, snr) in cases {
        let spec = DscPhantomSpec {
            shape: [8, 8, 4],
            snr: Some(snr),
            residue,
            seed: 11,
            ..DscPhantomSpec::default()
        };
        let ph = generate(&spec)?;
        let exponential = residue == Residue::Exponential;
        let tolerances = if exponential {
            vec![("CBF", EXPONENTIAL_TOLERANCE)]
        } else {
            vec![
                ("CBF", FLOW_TOLERANCE),
                ("CBV", CBV_NOISE / snr),
                ("MTT", FLOW_TOLERANCE),
            ]
        };
        for m in &methods {
            let maps = analyse(&ph, &spec, m, reg)?;
            let tolerances: Vec<(&str, f64)> = if m == "vascular_model" {
                tolerances
                    .iter()
                    .map(|(n, t)| (*n, if *n == "CBV" { *t } else { MODEL_TOLERANCE }))
                    .collect()
            } else {
                tolerances.clone()
            };
            for ((name, tol), (est, truth)) in tolerances
                .iter()
                .zip(maps.iter().zip([&ph.cbf, &ph.cbv, &ph.mtt]))
            {
                let s = stats(name, est, truth)?;
                let pass = s.median_abs_rel_error <= *tol && s.n_invalid == 0;
                rows.push(DroRow {
                    suite: "dsc-phantom".into(),
                    case: format!("{m} snr {snr}, {} residue, {} voxels", residue.name(), s.n),
                    parameter: name.to_string(),
                    n: s.n,
                    median_error: s.median_abs_rel_error,
                    p90_error: s.p90_abs_rel_error,
                    bias: s.median_signed_rel_error,
                    n_fail: s.n_invalid,
                    tolerance: format!("median |rel. error| <= {tol} (see osipy-dsc validation.rs)"),
                    pass,
                });
            }
        }
    }
    // Delay sweep at SNR 100, tissue delays -2 to 4 s along z (negative:
    // the tissue curve arrives before the AIF, as with an AIF chosen
    // downstream), 64 voxels per delay.
    const DELAYS: [f64; 7] = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0];
    let spec = DscPhantomSpec {
        shape: [8, 8, DELAYS.len()],
        residue: Residue::Gamma,
        seed: 12,
        delay: DELAYS.to_vec(),
        ..DscPhantomSpec::default()
    };
    let ph = generate(&spec)?;
    let nz = DELAYS.len();
    let zero = 2;
    rows.extend(leakage_rows(reg)?);
    let truth = ph.cbf.as_slice().unwrap_or(&[]);
    for m in &methods {
        let [cbf, _, _] = analyse(&ph, &spec, m, reg)?;
        // Median of estimate / truth over the 64 voxels of a delay (robust
        // to the odd noisy voxel).
        let at = |z: usize| -> f64 {
            let mut r: Vec<f64> = (0..64)
                .map(|xy| cbf[xy * nz + z] / truth[xy * nz + z])
                .filter(|x| x.is_finite())
                .collect();
            r.sort_by(f64::total_cmp);
            percentile(&r, 0.5)
        };
        let largest = |zs: &mut dyn Iterator<Item = usize>| {
            zs.map(|z| (at(z) - at(zero)) / at(zero))
                .fold(0.0f64, |a, c| if c.abs() > a.abs() { c } else { a })
        };
        let (change, range, pass, tolerance) = match m.as_str() {
            "ssvd" => {
                let c = largest(&mut (0..zero));
                (
                    c,
                    "-2 and -1 s",
                    c.abs() > DELAY_TOLERANCE,
                    format!("changes by more than {DELAY_TOLERANCE} when the tissue leads the AIF (Toeplitz: causal, delay-sensitive; Wu et al. 2003; shown for contrast)"),
                )
            }
            "tikhonov" => {
                let c = largest(&mut (0..nz));
                (
                    c,
                    "-2 to 4 s",
                    c.abs() < TIKHONOV_DELAY_TOLERANCE,
                    format!("|largest change| < {TIKHONOV_DELAY_TOLERANCE} (block-circulant, but GCV picks lambda per curve, so the smoothing moves with the delay)"),
                )
            }
            _ => {
                let c = largest(&mut (0..nz));
                (
                    c,
                    "-2 to 4 s",
                    c.abs() < DELAY_TOLERANCE,
                    format!("|largest change| < {DELAY_TOLERANCE} (delay-insensitive method)"),
                )
            }
        };
        rows.push(DroRow {
            suite: "dsc-delay".into(),
            case: format!("{m}, delays {range}, SNR 100, median CBF / truth per delay vs delay 0"),
            parameter: "CBF".into(),
            n: 64 * nz,
            median_error: change.abs(),
            p90_error: change.abs(),
            bias: change,
            n_fail: usize::from(!pass),
            tolerance,
            pass,
        });
    }
    Ok(rows)
}
