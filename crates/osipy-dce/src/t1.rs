//! T1 mapping from variable-flip-angle (VFA) SPGR series.
//!
//! Signal model (SPGR steady state):
//! $$S(\alpha) = M_0 \sin(B_1 \alpha) \frac{1 - E_1}{1 - E_1 \cos(B_1 \alpha)}, \qquad E_1 = e^{-T_R / T_1},$$
//! with $B_1$ the relative transmit field scaling the nominal flip angles.
//!
//! * `linear` (DESPOT1; Deoni et al., MRM 2003):
//!   $$\frac{S}{\sin\alpha} = E_1 \frac{S}{\tan\alpha} + M_0 (1 - E_1),$$
//!   a straight line whose slope is $E_1$.
//! * `nonlinear`: the signal equation fitted by the bounded LM engine, started
//!   from DESPOT1; `b` is a parameter pinned per voxel to the B1 map (or 1).

use ndarray::ArrayView2;
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result, Unit};
use osipy_fitting::{fit_batch, FitOptions, Lanes, Model, ParamSpec, PinValue, LANES};

/// VFA acquisition settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VfaParams {
    /// Repetition time (s).
    pub tr: f64,
    /// Nominal flip angles (degrees), one per volume.
    pub flip_angles: Vec<f64>,
}

/// T1 mapping methods (`pipeline.t1_mapping_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum T1Mapping {
    /// Variable flip angle ([`vfa_t1`]).
    Vfa,
    /// Look-Locker inversion recovery ([`look_locker_t1`]).
    LookLocker,
}

/// Fitting method for VFA T1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfaMethod {
    /// DESPOT1 linear regression.
    Linear,
    /// Non-linear least squares on the signal equation.
    NonLinear,
}

/// T1 mapping result, one entry per voxel.
#[derive(Debug, Clone)]
pub struct T1Fit {
    /// T1 (s); NaN where invalid.
    pub t1: Vec<f64>,
    /// R1 = 1/T1 (1/s); NaN where invalid.
    pub r1: Vec<f64>,
    /// Equilibrium signal M0 (signal units).
    pub m0: Vec<f64>,
    /// Per-voxel quality.
    pub quality: Vec<QualityCode>,
}

/// The VFA signal model with parameters (M0, T1, B1).
#[derive(Debug, Clone)]
pub struct VfaModel {
    tr: f64,
    angles: Vec<f64>,
    /// sin, cos and tan of each nominal angle (B1 = 1, the usual case):
    /// computed once, the same values as computing them per evaluation.
    nominal: Vec<[f64; 3]>,
}

const VFA: [ParamSpec; 3] = [
    ParamSpec::new("M0", "M_0", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("T1", "T_1", Unit::Seconds, (1e-3, 20.0)),
    ParamSpec::new("B1", "B_1", Unit::Dimensionless, (0.1, 3.0)),
];

impl VfaModel {
    /// Binds TR (s) and nominal flip angles (degrees).
    pub fn new(p: &VfaParams) -> Result<VfaModel> {
        p.validate()?;
        let angles: Vec<f64> = p.flip_angles.iter().map(|a| a.to_radians()).collect();
        Ok(VfaModel {
            tr: p.tr,
            nominal: angles.iter().map(|a| [a.sin(), a.cos(), a.tan()]).collect(),
            angles,
        })
    }

    /// sin and cos of flip angle `i` scaled by `b1` (`b1 * angle` is the
    /// nominal angle itself when `b1` is 1).
    #[inline]
    fn sin_cos(&self, i: usize, b1: f64) -> (f64, f64) {
        if b1 == 1.0 {
            (self.nominal[i][0], self.nominal[i][1])
        } else {
            let a = b1 * self.angles[i];
            (a.sin(), a.cos())
        }
    }
}

impl VfaParams {
    /// Checks TR (seconds, with a milliseconds hint) and the flip angles.
    pub fn validate(&self) -> Result<()> {
        if !(self.tr > 0.0 && self.tr < 1.0) {
            let hint = if self.tr >= 1.0 {
                " (it looks like milliseconds: give seconds, e.g. 0.005)"
            } else {
                ""
            };
            return Err(OsipyError::Metadata {
                field: "VFA repetition time TR (s)".into(),
                found: self.tr.to_string(),
                expected: format!("a positive value in seconds below 1{hint}"),
            });
        }
        if self.flip_angles.len() < 2 {
            return Err(OsipyError::Metadata {
                field: "VFA flip angles (degrees)".into(),
                found: format!("{:?}", self.flip_angles),
                expected: "at least two flip angles, one per volume of the VFA series".into(),
            });
        }
        if let Some(a) = self.flip_angles.iter().find(|a| !(**a > 0.0 && **a < 180.0)) {
            return Err(OsipyError::Metadata {
                field: "VFA flip angle (degrees)".into(),
                found: a.to_string(),
                expected: "values in (0, 180) degrees".into(),
            });
        }
        Ok(())
    }
}

impl Model for VfaModel {
    fn name(&self) -> &str {
        "vfa"
    }
    fn params(&self) -> &[ParamSpec] {
        &VFA
    }
    fn n_samples(&self) -> usize {
        self.angles.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        let e1 = (-self.tr / p[1]).exp();
        for (i, o) in out.iter_mut().enumerate() {
            let (s, c) = self.sin_cos(i, p[2]);
            *o = p[0] * s * (1.0 - e1) / (1.0 - c * e1);
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let e1 = (-self.tr / p[1]).exp();
        let de1 = e1 * self.tr / (p[1] * p[1]); // dE1/dT1
        let (dm0, rest) = jac.split_at_mut(n);
        let (dt1, db1) = rest.split_at_mut(n);
        for i in 0..n {
            let (s, c) = self.sin_cos(i, p[2]);
            let den = 1.0 - c * e1;
            let f = s * (1.0 - e1) / den;
            out[i] = p[0] * f;
            dm0[i] = f;
            // d/dE1 [(1 - E1)/(1 - c E1)] = (c - 1)/(1 - c E1)^2.
            dt1[i] = p[0] * s * (c - 1.0) / (den * den) * de1;
            // d/da [sin a (1-E1)/(1 - cos a E1)] = (1-E1)(cos a - E1)/(1 - cos a E1)^2.
            db1[i] = p[0] * (1.0 - e1) * (c - e1) / (den * den) * self.angles[i];
        }
        true
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        let mut consts = vec![self.tr];
        consts.extend_from_slice(&self.angles);
        consts.extend(self.nominal.iter().map(|n| n[0]));
        consts.extend(self.nominal.iter().map(|n| n[1]));
        Some(osipy_fitting::gpu::GpuKernel {
            key: "dce_vfa_t1",
            source: &[include_str!("t1.cu")],
            consts,
        })
    }
    fn has_lanes(&self) -> bool {
        true
    }
    /// Lockstep form of `predict_with_jacobian`, lane by lane the same
    /// arithmetic (the T1 map beside a DCE series' read is this fit).
    fn predict_with_jacobian_lanes(
        &self,
        p: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        _: &mut [Lanes],
    ) {
        let n = out.len();
        let (dm0, rest) = jac.split_at_mut(n);
        let (dt1, db1) = rest.split_at_mut(n);
        osipy_backend::simd::wide(
            #[inline(always)]
            || {
                let mut e1 = [0.0; LANES];
                let mut de1 = [0.0; LANES];
                for l in 0..LANES {
                    e1[l] = (-self.tr / p[1][l]).exp();
                    de1[l] = e1[l] * self.tr / (p[1][l] * p[1][l]);
                }
                for i in 0..n {
                    for l in 0..LANES {
                        let (s, c) = self.sin_cos(i, p[2][l]);
                        let den = 1.0 - c * e1[l];
                        let f = s * (1.0 - e1[l]) / den;
                        out[i][l] = p[0][l] * f;
                        dm0[i][l] = f;
                        dt1[i][l] = p[0][l] * s * (c - 1.0) / (den * den) * de1[l];
                        db1[i][l] = p[0][l] * (1.0 - e1[l]) * (c - e1[l]) / (den * den) * self.angles[i];
                    }
                }
            },
        )
    }
    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let (m0, t1) = despot1_nominal(self.tr, &self.nominal, data)
            .unwrap_or((data.iter().cloned().fold(0.0, f64::max) * 5.0, 1.0));
        out.copy_from_slice(&[m0, t1.clamp(VFA[1].bounds.0, VFA[1].bounds.1), 1.0]);
    }
}

/// DESPOT1 regression for one voxel: returns (M0, T1) or `None` when the
/// slope is outside (0, 1) (no physical T1).
fn despot1(tr: f64, angles: &[f64], s: &[f64], b1: f64) -> Option<(f64, f64)> {
    let trig = angles.iter().map(|a| {
        let a = b1 * a;
        (a.tan(), a.sin())
    });
    despot1_with(tr, trig, s)
}

/// [`despot1`] at the nominal angles (B1 = 1), whose sin and tan are known.
fn despot1_nominal(tr: f64, nominal: &[[f64; 3]], s: &[f64]) -> Option<(f64, f64)> {
    despot1_with(tr, nominal.iter().map(|t| (t[2], t[0])), s)
}

/// DESPOT1 from (tan, sin) of each angle.
fn despot1_with(tr: f64, trig: impl ExactSizeIterator<Item = (f64, f64)>, s: &[f64]) -> Option<(f64, f64)> {
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    let n = trig.len() as f64;
    for ((tan, sin), si) in trig.zip(s) {
        let (x, y) = (si / tan, si / sin);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let det = n * sxx - sx * sx;
    if !(det.abs() > 0.0) {
        return None;
    }
    let slope = (n * sxy - sx * sy) / det;
    let icpt = (sy - slope * sx) / n;
    (slope > 0.0 && slope < 1.0).then(|| (icpt / (1.0 - slope), -tr / slope.ln()))
}

/// Maps T1 from a VFA series `signal` (voxels x flip angles), with an
/// optional relative B1 map (one value per voxel, 1 = nominal).
pub fn vfa_t1(
    signal: ArrayView2<'_, f64>,
    params: &VfaParams,
    b1: Option<&[f64]>,
    method: VfaMethod,
    mask: Option<&[bool]>,
    device: &Device,
) -> Result<T1Fit> {
    let model = VfaModel::new(params)?;
    let (n_vox, n_a) = signal.dim();
    if n_a != params.flip_angles.len() {
        return Err(OsipyError::data(
            "number of VFA volumes",
            n_a.to_string(),
            format!(
                "{} (one per flip angle {:?})",
                params.flip_angles.len(),
                params.flip_angles
            ),
        ));
    }
    if let Some(b) = b1 {
        osipy_core::check_per_voxel("B1 map size", b.len(), n_vox)?;
    }
    let b1_of = |v: usize| b1.map_or(1.0, |b| b[v]);
    match method {
        VfaMethod::Linear => {
            let mut fit = T1Fit {
                t1: vec![f64::NAN; n_vox],
                r1: vec![f64::NAN; n_vox],
                m0: vec![f64::NAN; n_vox],
                quality: vec![QualityCode::NotFitted; n_vox],
            };
            let mut row = vec![0.0; n_a];
            for v in 0..n_vox {
                if mask.is_some_and(|m| !m[v]) {
                    continue;
                }
                row.iter_mut().zip(signal.row(v)).for_each(|(r, s)| *r = *s);
                if row.iter().any(|s| !s.is_finite()) || !b1_of(v).is_finite() {
                    fit.quality[v] = QualityCode::NonFiniteInput;
                    continue;
                }
                match despot1(params.tr, &model.angles, &row, b1_of(v)) {
                    Some((m0, t1)) => {
                        fit.t1[v] = t1;
                        fit.r1[v] = 1.0 / t1;
                        fit.m0[v] = m0;
                        fit.quality[v] = QualityCode::Converged;
                    }
                    None => fit.quality[v] = QualityCode::InvalidSignal,
                }
            }
            Ok(fit)
        }
        VfaMethod::NonLinear => {
            let pin = match b1 {
                Some(b) => PinValue::PerVoxel(b.to_vec()),
                None => PinValue::Constant(1.0),
            };
            let opts = FitOptions::default().pin_by_name(&model, "B1", pin)?;
            // A voxel without any positive signal has no T1 to find.
            let no_signal: Vec<bool> = (0..n_vox)
                .map(|v| signal.row(v).iter().all(|s| *s <= 0.0))
                .collect();
            let fit_mask: Vec<bool> = (0..n_vox)
                .map(|v| mask.is_none_or(|m| m[v]) && !no_signal[v])
                .collect();
            let r = fit_batch(&model, signal, Some(&fit_mask), &opts, device)?;
            let t1: Vec<f64> = r.params.column(1).to_vec();
            let mut quality = r.status.to_vec();
            for v in 0..n_vox {
                if no_signal[v] && mask.is_none_or(|m| m[v]) {
                    quality[v] = QualityCode::InvalidSignal;
                }
            }
            Ok(T1Fit {
                r1: t1.iter().map(|t| 1.0 / t).collect(),
                t1,
                m0: r.params.column(0).to_vec(),
                quality,
            })
        }
    }
}

/// Helper for tests and phantoms: a VFA series for given (M0, T1, B1).
pub fn vfa_signal(params: &VfaParams, m0: f64, t1: f64, b1: f64) -> Result<Vec<f64>> {
    let model = VfaModel::new(params)?;
    let mut out = vec![0.0; params.flip_angles.len()];
    model.predict(&[m0, t1, b1], &mut out);
    Ok(out)
}

/// Look-Locker (inversion-recovery) T1 with parameters (A, B, T1*): the
/// magnitude signal `|A - B exp(-TI / T1*)|` at inversion times TI (s), and
/// the Deichmann-Haase correction `T1 = T1* (B / A - 1)` (Deichmann & Haase,
/// J Magn Reson 1992; 96:608).
#[derive(Debug, Clone)]
pub struct LookLockerModel {
    ti: Vec<f64>,
}

const LL: [ParamSpec; 3] = [
    ParamSpec::new("A", "A", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("B", "B", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("T1star", "T_1^*", Unit::Seconds, (1e-3, 20.0)),
];

impl LookLockerModel {
    /// Binds the inversion times (s, strictly increasing, non-negative).
    pub fn new(inversion_times: &[f64]) -> Result<LookLockerModel> {
        if inversion_times.len() < 3 {
            return Err(OsipyError::Metadata {
                field: "inversion times (s)".into(),
                found: format!("{inversion_times:?}"),
                expected: "at least three inversion times, one per Look-Locker volume".into(),
            });
        }
        if let Some(ti) = inversion_times.iter().find(|t| !(**t >= 0.0 && **t < 60.0)) {
            let hint = if *ti >= 60.0 {
                " (it looks like milliseconds: give seconds)"
            } else {
                ""
            };
            return Err(OsipyError::Metadata {
                field: "inversion time (s)".into(),
                found: ti.to_string(),
                expected: format!("a value in [0, 60) seconds{hint}"),
            });
        }
        osipy_core::check_increasing("inversion times (s)", inversion_times)?;
        Ok(LookLockerModel {
            ti: inversion_times.to_vec(),
        })
    }
}

impl Model for LookLockerModel {
    fn name(&self) -> &str {
        "look_locker"
    }
    fn params(&self) -> &[ParamSpec] {
        &LL
    }
    fn n_samples(&self) -> usize {
        self.ti.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, ti) in out.iter_mut().zip(&self.ti) {
            *o = (p[0] - p[1] * (-ti / p[2]).exp()).abs();
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (da, rest) = jac.split_at_mut(n);
        let (db, dt) = rest.split_at_mut(n);
        for i in 0..n {
            let e = (-self.ti[i] / p[2]).exp();
            let f = p[0] - p[1] * e;
            // d|f| = sign(f) df (f = 0 has measure zero).
            let sg = if f < 0.0 { -1.0 } else { 1.0 };
            out[i] = f.abs();
            da[i] = sg;
            db[i] = -sg * e;
            dt[i] = -sg * p[1] * e * self.ti[i] / (p[2] * p[2]);
        }
        true
    }
    /// A from the late plateau, B = A + |S(first TI)|, T1* from the signal
    /// minimum (the null point, where A = B exp(-TI/T1*)).
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        Some(osipy_fitting::gpu::GpuKernel {
            key: "dce_look_locker_t1",
            source: &[include_str!("look_locker.cu")],
            consts: self.ti.clone(),
        })
    }
    fn initial_guess(&self, s: &[f64], out: &mut [f64]) {
        let n = s.len();
        let a = s[n - 1].abs().max(1e-12);
        let b = a + s[0].abs();
        let (imin, _) =
            s.iter().enumerate().fold(
                (0, f64::INFINITY),
                |m, (i, v)| if v.abs() < m.1 { (i, v.abs()) } else { m },
            );
        let ln = (b / a).ln();
        let t1s = if ln > 0.0 && self.ti[imin] > 0.0 {
            self.ti[imin] / ln
        } else {
            self.ti[n - 1] / 3.0
        };
        out.copy_from_slice(&[a, b, t1s]);
    }
}

/// Maps T1 from a Look-Locker series (voxels x inversion times, magnitude)
/// with the Deichmann-Haase correction. Voxels with `B <= A` (no inversion)
/// are flagged [`QualityCode::InvalidSignal`].
pub fn look_locker_t1(
    signal: ArrayView2<'_, f64>,
    inversion_times: &[f64],
    mask: Option<&[bool]>,
    device: &Device,
) -> Result<T1Fit> {
    let model = LookLockerModel::new(inversion_times)?;
    if signal.ncols() != inversion_times.len() {
        return Err(OsipyError::data(
            "number of Look-Locker volumes",
            signal.ncols().to_string(),
            format!("{} (one per inversion time)", inversion_times.len()),
        ));
    }
    let r = fit_batch(&model, signal, mask, &FitOptions::default(), device)?;
    let mut fit = T1Fit {
        t1: Vec::new(),
        r1: Vec::new(),
        m0: Vec::new(),
        quality: r.status.to_vec(),
    };
    for v in 0..signal.nrows() {
        let (a, b, t1s) = (r.params[[v, 0]], r.params[[v, 1]], r.params[[v, 2]]);
        let mut t1 = t1s * (b / a - 1.0);
        if fit.quality[v].is_valid() && !(t1 > 0.0 && t1.is_finite()) {
            fit.quality[v] = QualityCode::InvalidSignal;
        }
        if !fit.quality[v].is_valid() {
            t1 = f64::NAN;
        }
        fit.t1.push(t1);
        fit.r1.push(1.0 / t1);
        fit.m0.push(if fit.quality[v].is_valid() { a } else { f64::NAN });
    }
    Ok(fit)
}
