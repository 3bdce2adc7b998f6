//! Signal to deltaR2\* and bolus arrival.
//!
//! For a gradient- or spin-echo EPI series the transverse relaxation rate
//! change is `deltaR2*(t) = -ln(S(t) / S0) / TE` (Rosen et al., MRM 1990;
//! Østergaard, JMRI 2005), with `S0` the mean of the baseline (pre-bolus)
//! frames. Voxels with non-finite samples are flagged `non_finite_input`,
//! voxels with a non-positive sample or baseline `invalid_signal`; their
//! curves are NaN.

use ndarray::{Array2, ArrayView2};
use osipy_backend::Device;
use osipy_core::{Extension, KindInfo, OsipyError, QualityCode, Result};
use osipy_fitting::map_voxels;

/// Fewest baseline frames accepted (a mean of one frame is all noise).
pub const MIN_BASELINE_FRAMES: usize = 2;

/// deltaR2\* curves (voxels x frames, 1/s) and a status per voxel (`None`
/// when the conversion succeeded).
#[derive(Debug, Clone)]
pub struct DeltaR2 {
    /// deltaR2\* (1/s), NaN rows for flagged voxels.
    pub curves: Array2<f64>,
    /// Why a voxel has no curve.
    pub status: Vec<Option<QualityCode>>,
}

/// Converts `signal` (voxels x frames) to deltaR2\* with echo time `te` (s)
/// and `S0` the mean of the first `baseline` frames. Voxels outside `mask`
/// are left NaN with no status. Errors when `te` is not a positive time or
/// the baseline does not fit the series.
pub fn signal_to_delta_r2(
    signal: ArrayView2<'_, f64>,
    mask: Option<&[bool]>,
    te: f64,
    baseline: usize,
    device: &Device,
) -> Result<DeltaR2> {
    let (n_vox, nt) = signal.dim();
    if !(te > 0.0 && te.is_finite()) {
        return Err(OsipyError::metadata(
            "echo time TE (s)",
            te,
            "a positive time in seconds, e.g. 0.03",
        ));
    }
    check_baseline(baseline, nt)?;
    if let Some(m) = mask {
        osipy_core::check_per_voxel("mask length", m.len(), n_vox)?;
    }
    let rec = nt + 1;
    let mut out = vec![f64::NAN; n_vox * rec];
    map_voxels(
        device,
        &mut out,
        rec,
        1024,
        None,
        || (),
        |_, v, r| {
            let (curve, status) = r.split_at_mut(nt);
            status[0] = 0.0;
            if mask.is_some_and(|m| !m[v]) {
                return;
            }
            let s = signal.row(v);
            if s.iter().any(|x| !x.is_finite()) {
                status[0] = QualityCode::NonFiniteInput.code() as f64;
                return;
            }
            let s0 = s.iter().take(baseline).sum::<f64>() / baseline as f64;
            if !(s0 > 0.0) || s.iter().any(|x| *x <= 0.0) {
                status[0] = QualityCode::InvalidSignal.code() as f64;
                return;
            }
            for (c, x) in curve.iter_mut().zip(s) {
                *c = -(x / s0).ln() / te;
            }
        },
    )?;
    let mut status = Vec::with_capacity(n_vox);
    let mut curves = Array2::from_elem((n_vox, nt), f64::NAN);
    for (v, r) in out.chunks_exact(rec).enumerate() {
        let code = r[nt] as u8;
        status.push(if code == 0 {
            None
        } else {
            QualityCode::from_code(code)
        });
        curves
            .row_mut(v)
            .iter_mut()
            .zip(&r[..nt])
            .for_each(|(c, x)| *c = *x);
    }
    Ok(DeltaR2 { curves, status })
}

/// Checks a number of baseline frames against a series of `nt` frames.
pub fn check_baseline(baseline: usize, nt: usize) -> Result<()> {
    if baseline < MIN_BASELINE_FRAMES || baseline + 2 > nt {
        return Err(OsipyError::Metadata {
            field: "pipeline.baseline_frames".into(),
            found: baseline.to_string(),
            expected: format!(
                "between {MIN_BASELINE_FRAMES} and {} pre-bolus frames (the series has {nt} frames)",
                nt.saturating_sub(2).max(MIN_BASELINE_FRAMES)
            ),
        });
    }
    Ok(())
}

/// The mean of `rows` (voxels x frames) over the voxels in `mask` whose
/// samples are all finite; `None` when there is none.
pub fn mean_curve(rows: ArrayView2<'_, f64>, mask: &[bool]) -> Option<Vec<f64>> {
    let mut sum = vec![0.0; rows.ncols()];
    let mut n = 0usize;
    for (row, _) in rows.rows().into_iter().zip(mask).filter(|(_, m)| **m) {
        if row.iter().all(|x| x.is_finite()) {
            sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
            n += 1;
        }
    }
    (n > 0).then(|| sum.into_iter().map(|s| s / n as f64).collect())
}

/// Registry entry of a bolus-arrival detector: from the mean signal curve
/// of the mask, the index of the first frame the bolus reaches (`None` when
/// no arrival is found).
#[derive(Debug, Clone, Copy)]
pub struct BolusArrival(pub fn(&[f64]) -> Option<usize>);

impl Extension for BolusArrival {
    const KIND: KindInfo = KindInfo {
        id: "dsc_bolus_arrival",
        label: "DSC bolus-arrival detector",
        config_key: "dsc: pipeline.bolus_arrival",
    };
}

/// `signal_drop`: the first frame whose drop below the early baseline
/// reaches 10 % of the deepest drop. The early baseline is the mean of the
/// frames before half the time of the minimum.
pub fn arrival_signal_drop(m: &[f64]) -> Option<usize> {
    let i_min = argmin(m)?;
    if i_min < 2 {
        return None;
    }
    let early = &m[..(i_min / 2).max(1)];
    let reference = early.iter().sum::<f64>() / early.len() as f64;
    let depth = reference - m[i_min];
    if !(depth > 0.0) {
        return None;
    }
    (0..=i_min).find(|&i| reference - m[i] >= 0.1 * depth)
}

/// `baseline_sd`: the first frame (from the third) more than four standard
/// deviations below the mean of the frames before it.
pub fn arrival_baseline_sd(m: &[f64]) -> Option<usize> {
    let i_min = argmin(m)?;
    (2..=i_min).find(|&i| {
        let b = &m[..i];
        let mean = b.iter().sum::<f64>() / i as f64;
        let var = b.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (i - 1) as f64;
        m[i] < mean - 4.0 * var.sqrt()
    })
}

fn argmin(m: &[f64]) -> Option<usize> {
    if m.iter().any(|x| !x.is_finite()) {
        return None;
    }
    m.iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Baseline frames before a detected arrival: the frames before it, less
/// one as a margin against the first, slight signal drop.
pub fn baseline_before(arrival: usize) -> usize {
    arrival.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bolus(n: usize, at: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let t = i as f64 - at as f64;
                let drop: f64 = if t > 0.0 {
                    0.3 * (t / 3.0).powi(2) * (-(t - 3.0) / 1.5).exp().min(1.0)
                } else {
                    0.0
                };
                100.0 * (1.0 - drop.min(0.5))
            })
            .collect()
    }

    #[test]
    fn delta_r2_matches_the_definition_and_flags_bad_voxels() {
        let te: f64 = 0.03;
        let s0 = 500.0;
        let dr2 = [0.0, 0.0, 0.0, 5.0, 20.0, 8.0];
        let good: Vec<f64> = dr2.iter().map(|r| s0 * (-te * r).exp()).collect();
        let mut rows = good.clone();
        rows.extend([1.0, 1.0, 1.0, 0.0, 1.0, 1.0]); // a zero sample
        rows.extend([1.0, f64::NAN, 1.0, 1.0, 1.0, 1.0]);
        rows.extend(good.clone()); // outside the mask
        let a = Array2::from_shape_vec((4, 6), rows).unwrap();
        let out = signal_to_delta_r2(
            a.view(),
            Some(&[true, true, true, false]),
            te,
            3,
            &Device::cpu(Some(1)),
        )
        .unwrap();
        for (c, t) in out.curves.row(0).iter().zip(dr2) {
            assert!((c - t).abs() < 1e-12, "{c} vs {t}");
        }
        assert_eq!(
            out.status,
            [
                None,
                Some(QualityCode::InvalidSignal),
                Some(QualityCode::NonFiniteInput),
                None
            ]
        );
        assert!(out.curves.row(3).iter().all(|x| x.is_nan()));
    }

    #[test]
    fn bad_echo_time_and_baseline_are_errors() {
        let a = Array2::from_elem((1, 10), 1.0);
        let d = Device::cpu(Some(1));
        let e = signal_to_delta_r2(a.view(), None, 0.0, 3, &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TE"), "{e}");
        let e = signal_to_delta_r2(a.view(), None, 0.03, 1, &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("baseline_frames") && e.contains("10 frames"), "{e}");
        assert!(signal_to_delta_r2(a.view(), None, 0.03, 9, &d).is_err());
    }

    #[test]
    fn arrival_detectors_find_the_bolus() {
        for at in [5, 10, 20] {
            let m = bolus(60, at);
            for detect in [arrival_signal_drop, arrival_baseline_sd] {
                let a = detect(&m).unwrap();
                assert!(
                    a > at && a <= at + 2,
                    "arrival {a} for a bolus starting after frame {at}"
                );
                assert!(baseline_before(a) <= at);
            }
        }
        assert_eq!(arrival_signal_drop(&[1.0; 20]), None);
        assert_eq!(arrival_signal_drop(&[1.0, f64::NAN, 0.5]), None);
    }
}
