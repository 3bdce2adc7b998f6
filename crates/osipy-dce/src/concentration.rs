//! Signal to concentration for spoiled gradient-echo (SPGR) acquisitions.
//!
//! SPGR steady state (e.g. Haacke et al., *Magnetic Resonance Imaging*, 1999):
//! $$S = M_0 \sin\alpha \frac{1 - E_1}{1 - E_1 \cos\alpha}, \qquad E_1 = e^{-T_R R_1}.$$
//! With the baseline signal $S_0$ (mean of the baseline frames) and the
//! pre-contrast $R_{10}$, $M_0$ follows; inverting for each frame gives
//! $$E_1 = \frac{1 - y}{1 - y \cos\alpha}, \quad y = \frac{S}{M_0 \sin\alpha}, \quad
//! R_1 = -\frac{\ln E_1}{T_R}, \quad C = \frac{R_1 - R_{10}}{r_1}$$
//! (fast-exchange linear relaxivity).
//!
//! The `linear` method assumes $\Delta R_1 = R_{10} (S - S_0) / S_0$, valid only
//! for small signal changes; prefer `spgr`.

use ndarray::ArrayView2;
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_fitting::{map_voxels, VoxelData};
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

/// Conversion method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcentrationMethod {
    /// Exact SPGR inversion.
    Spgr,
    /// Linear approximation `dR1 = R10 (S - S0) / S0`.
    Linear,
}

/// Acquisition settings of the conversion (SI units).
#[derive(Debug, Clone, PartialEq)]
pub struct SpgrParams {
    /// Repetition time (s).
    pub tr: f64,
    /// Flip angle (degrees).
    pub flip_angle: f64,
    /// Relaxivity r1 (1/s/mM).
    pub relaxivity: f64,
    /// Frames averaged into the baseline signal `S0` (e.g. `0..10`; OSIPI's
    /// reference code skips the first frame: `1..n`).
    pub baseline: Range<usize>,
}

impl SpgrParams {
    /// Checks values and units, with hints for common mistakes.
    pub fn validate(&self, n_frames: usize) -> Result<()> {
        if !(self.tr > 0.0 && self.tr < 1.0) {
            let hint = if self.tr >= 1.0 {
                " (it looks like milliseconds: give seconds, e.g. 0.005)"
            } else {
                ""
            };
            return Err(OsipyError::Metadata {
                field: "repetition time TR (s)".into(),
                found: self.tr.to_string(),
                expected: format!("a positive value in seconds below 1{hint}"),
            });
        }
        if !(self.flip_angle > 0.0 && self.flip_angle < 180.0) {
            return Err(OsipyError::Metadata {
                field: "flip angle (degrees)".into(),
                found: self.flip_angle.to_string(),
                expected: "a value in (0, 180) degrees".into(),
            });
        }
        if !(self.relaxivity > 0.0 && self.relaxivity.is_finite()) {
            return Err(OsipyError::Metadata {
                field: "relaxivity r1 (1/s/mM)".into(),
                found: self.relaxivity.to_string(),
                expected: "a positive value, e.g. 4.5 for gadoterate at 1.5 T".into(),
            });
        }
        if self.baseline.is_empty() || self.baseline.end > n_frames {
            return Err(OsipyError::Metadata {
                field: "baseline frames".into(),
                found: format!("{:?}", self.baseline),
                expected: format!("a non-empty range within the {n_frames} frames"),
            });
        }
        Ok(())
    }
}

/// Converts one voxel's signal curve to concentration (mM) in place of
/// `out`. Returns the voxel's quality: [`QualityCode::Converged`] when all
/// frames converted, [`QualityCode::NonFiniteInput`] for NaN signal or R10,
/// [`QualityCode::InvalidSignal`] for a non-positive baseline or frames
/// outside the SPGR signal range (those frames become NaN).
pub fn convert_curve(
    signal: &[f64],
    r10: f64,
    p: &SpgrParams,
    method: ConcentrationMethod,
    out: &mut [f64],
) -> QualityCode {
    for (o, s) in out.iter_mut().zip(signal) {
        *o = *s;
    }
    convert_curve_in_place(out, r10, p, method)
}

/// [`convert_curve`] in place: `curve` holds the signal and becomes the
/// concentration (the same values, bit for bit).
pub fn convert_curve_in_place(
    curve: &mut [f64],
    r10: f64,
    p: &SpgrParams,
    method: ConcentrationMethod,
) -> QualityCode {
    if !r10.is_finite() || curve.iter().any(|s| !s.is_finite()) {
        curve.fill(f64::NAN);
        return QualityCode::NonFiniteInput;
    }
    let base = &curve[p.baseline.clone()];
    let s0 = base.iter().sum::<f64>() / base.len() as f64;
    if !(s0 > 0.0) || !(r10 > 0.0) {
        curve.fill(f64::NAN);
        return QualityCode::InvalidSignal;
    }
    let mut ok = true;
    match method {
        ConcentrationMethod::Linear => {
            for s in curve.iter_mut() {
                *s = r10 * (*s - s0) / s0 / p.relaxivity;
            }
        }
        ConcentrationMethod::Spgr => {
            let a = p.flip_angle.to_radians();
            let (sa, ca) = (a.sin(), a.cos());
            let e10 = (-p.tr * r10).exp();
            let m0 = s0 * (1.0 - ca * e10) / (sa * (1.0 - e10));
            for o in curve.iter_mut() {
                let s = *o;
                let y = s / (m0 * sa);
                let e1 = (1.0 - y) / (1.0 - y * ca);
                if e1 > 0.0 && e1 < 1.0 {
                    *o = (-e1.ln() / p.tr - r10) / p.relaxivity;
                } else {
                    *o = f64::NAN;
                    ok = false;
                }
            }
        }
    }
    if ok {
        QualityCode::Converged
    } else {
        QualityCode::InvalidSignal
    }
}

/// Converts every row of `signal` (voxels x frames) with its voxel's `r10`
/// (1/s). Returns the concentrations (mM) and a quality code per voxel; bad
/// voxels never fail the call, only inconsistent inputs do.
pub fn signal_to_concentration(
    signal: ndarray::ArrayView2<'_, f64>,
    r10: &[f64],
    p: &SpgrParams,
    method: ConcentrationMethod,
    device: &Device,
) -> Result<(ndarray::Array2<f64>, Vec<QualityCode>)> {
    let mut out = signal.as_standard_layout().into_owned();
    let n_t = out.ncols();
    let flat = out
        .as_slice_mut()
        .ok_or_else(|| OsipyError::data("signal layout", "not contiguous", "a standard-layout array"))?;
    let quality = signal_to_concentration_in_place(flat, n_t, r10, p, method, device)?;
    Ok((out, quality))
}

/// [`signal_to_concentration`] in place: `data` holds the signal of each
/// voxel as a contiguous row of `n_t` frames, and each row becomes that
/// voxel's concentration (bit for bit the same values). A run then holds
/// one copy of the series, not two.
pub fn signal_to_concentration_in_place(
    data: &mut [f64],
    n_t: usize,
    r10: &[f64],
    p: &SpgrParams,
    method: ConcentrationMethod,
    device: &Device,
) -> Result<Vec<QualityCode>> {
    let n_vox = data.len().checked_div(n_t).unwrap_or(0);
    if n_t == 0 || n_vox * n_t != data.len() {
        return Err(OsipyError::data(
            "signal values",
            data.len().to_string(),
            format!("a whole number of voxels of {n_t} frames"),
        ));
    }
    osipy_core::check_per_voxel("number of R10 values", r10.len(), n_vox)?;
    p.validate(n_t)?;
    let quality: Vec<AtomicU8> = (0..n_vox).map(|_| AtomicU8::new(0)).collect();
    // Parallel over voxels: each row is converted in place, with its status.
    map_voxels(
        device,
        data,
        n_t,
        2048,
        None,
        || (),
        |_, v, row| {
            let q = convert_curve_in_place(row, r10[v], p, method);
            quality[v].store(q.code(), Ordering::Relaxed);
        },
    )?;
    Ok(quality
        .into_iter()
        .map(|q| QualityCode::from_code(q.into_inner()).unwrap_or(QualityCode::ModelFailure))
        .collect())
}

/// A signal series (voxels x frames, f64 or f32) read as concentration:
/// each voxel's curve is converted ([`convert_curve`], the same values bit
/// for bit) when a fit loads it, so a run holds the series once, as read,
/// and never a converted copy beside it.
///
/// A voxel that does not convert is refused with its quality code; one
/// without a pre-contrast R10 (not a positive number: its T1 is missing,
/// zero or negative) with [`QualityCode::InvalidSignal`].
#[derive(Debug, Clone)]
pub struct SignalAsConcentration<'a, T> {
    signal: ArrayView2<'a, T>,
    r10: &'a [f64],
    params: &'a SpgrParams,
    method: ConcentrationMethod,
}

impl<'a, T> SignalAsConcentration<'a, T> {
    /// The conversion of `signal` with one `r10` (1/s) per voxel; an error
    /// for a count or setting that does not fit the series.
    pub fn new(
        signal: ArrayView2<'a, T>,
        r10: &'a [f64],
        params: &'a SpgrParams,
        method: ConcentrationMethod,
    ) -> Result<Self> {
        let (n_vox, n_t) = signal.dim();
        osipy_core::check_per_voxel("number of R10 values", r10.len(), n_vox)?;
        params.validate(n_t)?;
        Ok(SignalAsConcentration {
            signal,
            r10,
            params,
            method,
        })
    }
}

impl<T: Copy + Into<f64> + Sync> VoxelData for SignalAsConcentration<'_, T> {
    fn dim(&self) -> (usize, usize) {
        self.signal.dim()
    }

    fn load(&self, v: usize, out: &mut [f64]) -> std::result::Result<(), QualityCode> {
        self.signal.load(v, out)?;
        let r10 = self.r10[v];
        match convert_curve_in_place(out, r10, self.params, self.method) {
            q if q.is_valid() => Ok(()),
            _ if r10.is_nan() => Err(QualityCode::InvalidSignal),
            q => Err(q),
        }
    }
}

/// Forward SPGR signal for `R1` (1/s): used by phantoms and tests.
pub fn spgr_signal(m0: f64, r1: f64, tr: f64, flip_angle_deg: f64) -> f64 {
    let a = flip_angle_deg.to_radians();
    let e1 = (-tr * r1).exp();
    m0 * a.sin() * (1.0 - e1) / (1.0 - a.cos() * e1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel conversion is the per-curve one, bit for bit, for any
    /// thread count, statuses included.
    #[test]
    fn whole_series_matches_curve_by_curve_for_any_thread_count() {
        let p = SpgrParams {
            tr: 0.005,
            flip_angle: 25.0,
            relaxivity: 4.5,
            baseline: 0..2,
        };
        let n_vox = 5000;
        let signal = ndarray::Array2::from_shape_fn((n_vox, 6), |(v, t)| {
            let c = if t < 2 {
                0.0
            } else {
                (v % 97) as f64 * 0.02 * t as f64
            };
            let s = spgr_signal(1000.0, 1.0 / 1.4 + 4.5 * c, p.tr, p.flip_angle);
            if v == 17 && t == 3 {
                f64::NAN
            } else {
                s
            }
        });
        let r10: Vec<f64> = (0..n_vox)
            .map(|v| if v == 40 { -1.0 } else { 1.0 / 1.4 })
            .collect();
        let one = signal_to_concentration(
            signal.view(),
            &r10,
            &p,
            ConcentrationMethod::Spgr,
            &Device::cpu(Some(1)),
        )
        .unwrap();
        let two = signal_to_concentration(
            signal.view(),
            &r10,
            &p,
            ConcentrationMethod::Spgr,
            &Device::cpu(Some(2)),
        )
        .unwrap();
        assert_eq!(one.1, two.1);
        assert!(one
            .0
            .iter()
            .zip(two.0.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let mut out = [0.0; 6];
        for v in [0, 17, 40, 4999] {
            let q = convert_curve(
                signal.row(v).as_slice().unwrap(),
                r10[v],
                &p,
                ConcentrationMethod::Spgr,
                &mut out,
            );
            assert_eq!(one.1[v], q, "voxel {v}");
            assert!(
                out.iter()
                    .zip(one.0.row(v))
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "voxel {v}"
            );
        }
        assert_eq!(one.1[17], QualityCode::NonFiniteInput);
    }

    #[test]
    fn spgr_round_trip_and_quality_flags() {
        // Forward-simulate C = 0, 0.5, 2 mM on R10 = 1/1.4 s, r1 = 4.5.
        let p = SpgrParams {
            tr: 0.005,
            flip_angle: 25.0,
            relaxivity: 4.5,
            baseline: 0..2,
        };
        let r10 = 1.0 / 1.4;
        let conc = [0.0, 0.0, 0.5, 2.0];
        let s: Vec<f64> = conc
            .iter()
            .map(|c| spgr_signal(1000.0, r10 + 4.5 * c, p.tr, p.flip_angle))
            .collect();
        let mut out = [0.0; 4];
        assert_eq!(
            convert_curve(&s, r10, &p, ConcentrationMethod::Spgr, &mut out),
            QualityCode::Converged
        );
        for (o, c) in out.iter().zip(conc) {
            assert!((o - c).abs() < 1e-10, "{o} vs {c}");
        }
        // The linear approximation underestimates large changes.
        convert_curve(&s, r10, &p, ConcentrationMethod::Linear, &mut out);
        assert!(out[3] < 2.0 && out[3] > 0.5);
        // Zero baseline, NaN, signal beyond the SPGR range.
        assert_eq!(
            convert_curve(
                &[0.0, 0.0, 1.0, 1.0],
                r10,
                &p,
                ConcentrationMethod::Spgr,
                &mut out
            ),
            QualityCode::InvalidSignal
        );
        assert_eq!(
            convert_curve(
                &[1.0, f64::NAN, 1.0, 1.0],
                r10,
                &p,
                ConcentrationMethod::Spgr,
                &mut out
            ),
            QualityCode::NonFiniteInput
        );
        let big = [s[0], s[1], s[0] * 1e6, s[3]];
        assert_eq!(
            convert_curve(&big, r10, &p, ConcentrationMethod::Spgr, &mut out),
            QualityCode::InvalidSignal
        );
        assert!(out[2].is_nan() && out[3].is_finite());
    }

    #[test]
    fn parameters_are_validated_with_unit_hints() {
        let p = SpgrParams {
            tr: 5.0,
            flip_angle: 25.0,
            relaxivity: 4.5,
            baseline: 0..2,
        };
        let e = p.validate(10).unwrap_err().to_string();
        assert!(e.contains("milliseconds"), "{e}");
        let p = SpgrParams {
            tr: 0.005,
            flip_angle: 25.0,
            relaxivity: 4.5,
            baseline: 0..20,
        };
        assert!(p
            .validate(10)
            .unwrap_err()
            .to_string()
            .contains("within the 10 frames"));
    }
}
