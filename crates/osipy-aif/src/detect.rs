//! Automatic AIF detection from a 4D concentration series.
//!
//! Arterial voxels enhance most, earliest and most briefly (Rempp et al.,
//! Radiology 1994; Mouridsen et al., MRM 2006). Detection therefore
//! 1. keeps masked voxels with finite curves and a positive peak,
//! 2. keeps the candidates whose peak is at or above the `peak_percentile`
//!    of all peaks,
//! 3. scores each candidate on peak height (higher is better), arrival time
//!    (earlier) and full width at half maximum (narrower), each rescaled to
//!    [0, 1] over the candidates and combined with the configured weights,
//! 4. returns the `n_voxels` best (ties broken by voxel index, so the result is
//!    deterministic) and their mean curve.

use ndarray::{ArrayView3, ArrayView4};
use osipy_core::{OsipyError, Result};

/// Settings of [`detect_aif`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// Number of voxels averaged into the AIF.
    pub n_voxels: usize,
    /// Percentile (0-100) of peak height a voxel must reach to be a candidate.
    pub peak_percentile: f64,
    /// Weight of the peak-height score.
    pub weight_peak: f64,
    /// Weight of the arrival-time score.
    pub weight_arrival: f64,
    /// Weight of the width score.
    pub weight_width: f64,
    /// Fraction of the peak that defines arrival (first crossing).
    pub arrival_fraction: f64,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            n_voxels: 5,
            peak_percentile: 95.0,
            weight_peak: 0.5,
            weight_arrival: 0.25,
            weight_width: 0.25,
            arrival_fraction: 0.1,
        }
    }
}

/// One chosen voxel.
#[derive(Debug, Clone, PartialEq)]
pub struct AifVoxel {
    /// Voxel index (x, y, z).
    pub index: [usize; 3],
    /// Combined score in [0, 1].
    pub score: f64,
    /// Peak concentration (mM).
    pub peak: f64,
    /// Arrival time (s).
    pub arrival: f64,
    /// Full width at half maximum (s).
    pub fwhm: f64,
}

/// Result of [`detect_aif`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedAif {
    /// Frame times (s).
    pub time: Vec<f64>,
    /// Mean concentration curve of the chosen voxels (mM).
    pub curve: Vec<f64>,
    /// The chosen voxels, best first.
    pub voxels: Vec<AifVoxel>,
}

struct Features {
    index: [usize; 3],
    peak: f64,
    arrival: f64,
    fwhm: f64,
}

fn features(time: &[f64], c: &[f64], arrival_fraction: f64) -> Option<(f64, f64, f64)> {
    if c.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (imax, peak) = c
        .iter()
        .enumerate()
        .fold((0, f64::MIN), |m, (i, v)| if *v > m.1 { (i, *v) } else { m });
    if !(peak > 0.0) {
        return None;
    }
    let arrival_idx = c
        .iter()
        .position(|v| *v >= arrival_fraction * peak)
        .unwrap_or(imax);
    let half = 0.5 * peak;
    let mut lo = imax;
    while lo > 0 && c[lo - 1] >= half {
        lo -= 1;
    }
    let mut hi = imax;
    while hi + 1 < c.len() && c[hi + 1] >= half {
        hi += 1;
    }
    Some((peak, time[arrival_idx], time[hi] - time[lo]))
}

fn rescale(v: f64, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        (v - lo) / (hi - lo)
    } else {
        1.0
    }
}

/// Finds arterial voxels in `conc` (x, y, z, t; mM) within `mask` and
/// returns their mean curve. Errors when the inputs disagree in shape or no
/// voxel enhances.
pub fn detect_aif(
    conc: ArrayView4<'_, f64>,
    time: &[f64],
    mask: Option<ArrayView3<'_, bool>>,
    opts: &DetectOptions,
) -> Result<DetectedAif> {
    let s = conc.shape();
    osipy_core::check_series(s, time.len(), mask.as_ref().map(|m| m.shape()))?;
    if opts.n_voxels == 0 || !(0.0..=100.0).contains(&opts.peak_percentile) {
        return Err(OsipyError::Aif(format!(
            "detection settings n_voxels = {}, peak_percentile = {}; expected n_voxels >= 1 and a percentile in [0, 100]",
            opts.n_voxels, opts.peak_percentile
        )));
    }
    let mut cands = Vec::new();
    let mut curve = vec![0.0; s[3]];
    for x in 0..s[0] {
        for y in 0..s[1] {
            for z in 0..s[2] {
                if mask.as_ref().is_some_and(|m| !m[[x, y, z]]) {
                    continue;
                }
                for (t, c) in curve.iter_mut().enumerate() {
                    *c = conc[[x, y, z, t]];
                }
                if let Some((peak, arrival, fwhm)) = features(time, &curve, opts.arrival_fraction) {
                    cands.push(Features {
                        index: [x, y, z],
                        peak,
                        arrival,
                        fwhm,
                    });
                }
            }
        }
    }
    if cands.is_empty() {
        return Err(OsipyError::Aif(
            "no voxel in the mask has a finite, positively enhancing concentration curve; check the mask and the signal-to-concentration step, or give a population or measured AIF".into(),
        ));
    }
    let mut peaks: Vec<f64> = cands.iter().map(|c| c.peak).collect();
    peaks.sort_by(|a, b| a.total_cmp(b));
    let rank = ((opts.peak_percentile / 100.0) * (peaks.len() - 1) as f64).floor() as usize;
    let threshold = peaks[rank];
    cands.retain(|c| c.peak >= threshold);
    let range = |f: fn(&Features) -> f64| {
        cands
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (p_lo, p_hi) = range(|c| c.peak);
    let (a_lo, a_hi) = range(|c| c.arrival);
    let (w_lo, w_hi) = range(|c| c.fwhm);
    let wsum = opts.weight_peak + opts.weight_arrival + opts.weight_width;
    let mut scored: Vec<AifVoxel> = cands
        .iter()
        .map(|c| {
            let score = (opts.weight_peak * rescale(c.peak, p_lo, p_hi)
                + opts.weight_arrival * (1.0 - rescale(c.arrival, a_lo, a_hi))
                + opts.weight_width * (1.0 - rescale(c.fwhm, w_lo, w_hi)))
                / wsum.max(f64::MIN_POSITIVE);
            AifVoxel {
                index: c.index,
                score,
                peak: c.peak,
                arrival: c.arrival,
                fwhm: c.fwhm,
            }
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    scored.truncate(opts.n_voxels);
    let mut mean = vec![0.0; s[3]];
    for v in &scored {
        for (t, m) in mean.iter_mut().enumerate() {
            *m += conc[[v.index[0], v.index[1], v.index[2], t]];
        }
    }
    let k = scored.len() as f64;
    mean.iter_mut().for_each(|m| *m /= k);
    Ok(DetectedAif {
        time: time.to_vec(),
        curve: mean,
        voxels: scored,
    })
}
