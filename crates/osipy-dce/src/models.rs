//! Pharmacokinetic models with OSIPI CAPLEX names and units.
//!
//! Time is in seconds; `Ktrans` and `PS` are in 1/min, `Fp` in ml/100ml/min,
//! `ve` and `vp` are fractions. The plasma AIF `cp` is convolved exactly
//! (recursive exponential convolution, exact for a piecewise-linear AIF;
//! Flouri et al. MRM 2016): no rectangle rule.
//!
//! With $c_p$ the plasma AIF and $*$ convolution:
//!
//! * `tofts` (Ktrans, ve; Tofts et al., JMRI 1999):
//!   $$C(t) = K^{trans}\, c_p(t) * e^{-k_{ep} t}, \qquad k_{ep} = K^{trans}/v_e$$
//! * `extended_tofts` (Ktrans, ve, vp; Tofts et al. 1999):
//!   $$C(t) = v_p\, c_p(t) + K^{trans}\, c_p(t) * e^{-k_{ep} t}$$
//! * `patlak` (Ktrans, vp; Patlak et al., JCBFM 1983):
//!   $$C(t) = v_p\, c_p(t) + K^{trans} \int_0^t c_p(s)\, ds$$
//! * `2cum` (Fp, PS, vp; Sourbron & Buckley, NMR Biomed 2013):
//!   $$C(t) = F_p \left[(1-E)\, c_p(t) * e^{-t/T_p} + E \int_0^t c_p(s)\, ds\right], \quad
//!   E = \frac{PS}{F_p + PS}, \quad T_p = \frac{v_p}{F_p + PS}$$
//! * `2cxm` (Fp, PS, ve, vp; Sourbron & Buckley, MRM 2011 and NMR Biomed 2013):
//!   $$C(t) = c_p(t) * \left[A_1 e^{-\alpha t} + (F_p - A_1) e^{-\beta t}\right], \quad
//!   A_1 = F_p \frac{F_p / v_p - \beta}{\alpha - \beta}$$
//!   where $\alpha, \beta$ are the roots of $x^2 - s x + q$ with
//!   $s = (F_p + PS)/v_p + PS/v_e$ and $q = F_p PS / (v_p v_e)$ (the eigenvalues of
//!   the compartment matrix; the amplitudes follow from $h(0) = F_p$ and
//!   $h'(0) = -F_p^2 / v_p$).
//!
//! Initial guesses are linear least squares on integrated forms of each
//! model's differential equation (Murase, MRM 2004; Flouri et al. 2016).

use crate::lls::Normal;
use osipy_convolution::{check_grid, exp_conv, exp_conv_with_derivative, exp_conv_with_derivative_lanes};
use osipy_core::{Extension, KindInfo, OsipyError, Result, Unit};
use osipy_fitting::{Lanes, Model, ParamSpec, LANES};

/// 1/min to 1/s.
const PER_MIN: f64 = 1.0 / 60.0;
/// ml/100ml/min to ml/ml/s.
const FLOW: f64 = 1.0 / 6000.0;

/// The fixed inputs of every PK model: frame times (s) and the plasma AIF (mM)
/// sampled at those times.
#[derive(Debug, Clone, PartialEq)]
pub struct PkInput {
    t: Vec<f64>,
    cp: Vec<f64>,
}

impl PkInput {
    /// Checks and binds times (s, strictly increasing) and plasma AIF (mM).
    pub fn new(time: &[f64], cp: &[f64]) -> Result<PkInput> {
        check_grid(time, "plasma AIF", cp)?;
        Ok(PkInput {
            t: time.to_vec(),
            cp: cp.to_vec(),
        })
    }

    /// Frame times (s).
    pub fn time(&self) -> &[f64] {
        &self.t
    }

    /// Plasma AIF (mM).
    pub fn cp(&self) -> &[f64] {
        &self.cp
    }
}

/// Streams running trapezoid integrals for the linearised initial guesses:
/// calls `f([cp_i, C_i, int cp, int int cp, int C, int int C])` for i >= 1
/// (units: mM and s).
fn integrals(t: &[f64], cp: &[f64], c: &[f64], mut f: impl FnMut([f64; 6])) {
    let (mut icp, mut iicp, mut ic, mut iic) = (0.0, 0.0, 0.0, 0.0);
    for i in 1..t.len() {
        let dt = t[i] - t[i - 1];
        let (icp0, ic0) = (icp, ic);
        icp += 0.5 * dt * (cp[i] + cp[i - 1]);
        ic += 0.5 * dt * (c[i] + c[i - 1]);
        iicp += 0.5 * dt * (icp + icp0);
        iic += 0.5 * dt * (ic + ic0);
        f([cp[i], c[i], icp, iicp, ic, iic]);
    }
}

/// A model's numerics with the AIF passed at call time: prediction into
/// `out` and, when `jac` is given and the model has an analytic Jacobian,
/// the Jacobian (returning `true`).
pub(crate) type Kernel =
    fn(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool;

/// A model's prediction and Jacobian for [`LANES`] voxels at once
/// ([`Model::predict_with_jacobian_lanes`]) with the AIF passed at call
/// time: per lane, exactly the arithmetic of its `Kernel`.
pub(crate) type LaneKernel = fn(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]);

/// A model's linearised initial guess with the AIF passed at call time.
pub(crate) type Guess = fn(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]);

/// Rate and flow unit conversions to per-second.
fn tofts_into(
    t: &[f64],
    cp: &[f64],
    ktrans: f64,
    ve: f64,
    out: &mut [f64],
    jac: Option<(&mut [f64], &mut [f64])>,
) {
    let k = ktrans * PER_MIN;
    let kep = k / ve;
    match jac {
        None => {
            exp_conv(t, cp, kep, out);
            out.iter_mut().for_each(|o| *o *= k);
        }
        Some((dk, dve)) => {
            exp_conv_with_derivative(t, cp, kep, out, dve);
            // Through kep = K / ve: dC/dK = conv + K dconv / ve, dC/dve = -K dconv kep / ve.
            let (k_ve, kkep_ve) = (k / ve, k * kep / ve);
            for i in 0..out.len() {
                let (conv, dconv) = (out[i], dve[i]);
                out[i] = k * conv;
                dk[i] = (conv + k_ve * dconv) * PER_MIN;
                dve[i] = -kkep_ve * dconv;
            }
        }
    }
}

/// [`tofts_into`] with the Jacobian, in lockstep lanes; with `vp` the
/// extended model's plasma term and its column as in [`etofts_kernel`].
#[inline(always)]
fn tofts_lanes_into(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes], vp: bool) {
    let n = out.len();
    let (dk, rest) = jac.split_at_mut(n);
    let (dve, dvp) = rest.split_at_mut(n);
    let k: Lanes = std::array::from_fn(|l| p[0][l] * PER_MIN);
    let kep: Lanes = std::array::from_fn(|l| k[l] / p[1][l]);
    exp_conv_with_derivative_lanes(t, cp, &kep, out, &mut dve[..n]);
    let k_ve: Lanes = std::array::from_fn(|l| k[l] / p[1][l]);
    let kkep_ve: Lanes = std::array::from_fn(|l| k[l] * kep[l] / p[1][l]);
    for i in 0..n {
        for l in 0..LANES {
            let (conv, dconv) = (out[i][l], dve[i][l]);
            out[i][l] = k[l] * conv;
            dk[i][l] = (conv + k_ve[l] * dconv) * PER_MIN;
            dve[i][l] = -kkep_ve[l] * dconv;
        }
    }
    if vp {
        for i in 0..n {
            dvp[i] = [cp[i]; LANES];
            for l in 0..LANES {
                out[i][l] += p[2][l] * cp[i];
            }
        }
    }
}

fn tofts_lanes(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]) {
    osipy_backend::simd::wide(
        #[inline(always)]
        || tofts_lanes_into(t, cp, p, out, jac, false),
    )
}

fn etofts_lanes(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]) {
    osipy_backend::simd::wide(
        #[inline(always)]
        || tofts_lanes_into(t, cp, p, out, jac, true),
    )
}

fn tofts_kernel(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool {
    let n = out.len();
    let cols = jac.map(|j| j.split_at_mut(n));
    let has = cols.is_some();
    tofts_into(t, cp, p[0], p[1], out, cols);
    has
}

/// `C = K int cp - kep int C` (Murase 2004).
fn tofts_guess(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]) {
    let mut n = Normal::<2>::new();
    integrals(t, cp, c, |[_, ci, icp, _, ic, _]| n.add([icp, -ic], ci));
    let (k, kep) = n.solve().map(|x| (x[0], x[1])).unwrap_or((0.0, 0.0));
    out[0] = (k / PER_MIN).max(1e-3);
    out[1] = if kep > 0.0 && k > 0.0 { k / kep } else { 0.3 };
}

fn etofts_kernel(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool {
    let n = out.len();
    let has = jac.is_some();
    match jac {
        None => tofts_into(t, cp, p[0], p[1], out, None),
        Some(j) => {
            let (dk, rest) = j.split_at_mut(n);
            let (dve, dvp) = rest.split_at_mut(n);
            tofts_into(t, cp, p[0], p[1], out, Some((dk, dve)));
            dvp.copy_from_slice(cp);
        }
    }
    for (o, c) in out.iter_mut().zip(cp) {
        *o += p[2] * c;
    }
    has
}

/// `C = vp cp + (K + kep vp) int cp - kep int C`.
fn etofts_guess(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]) {
    let mut n = Normal::<3>::new();
    integrals(t, cp, c, |[cpi, ci, icp, _, ic, _]| n.add([cpi, icp, -ic], ci));
    match n.solve() {
        Some([vp, k1, kep]) if kep > 0.0 => {
            let k = k1 - kep * vp;
            out[0] = (k / PER_MIN).max(1e-3);
            out[1] = if k > 0.0 { k / kep } else { 0.3 };
            out[2] = vp.max(0.0);
        }
        _ => out.copy_from_slice(&[0.1, 0.3, 0.02]),
    }
}

fn patlak_kernel(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool {
    // int cp is the zero-rate exponential convolution (exact trapezoid).
    exp_conv(t, cp, 0.0, out);
    let has = jac.is_some();
    if let Some(j) = jac {
        let (dk, dvp) = j.split_at_mut(out.len());
        for i in 0..out.len() {
            dk[i] = out[i] * PER_MIN;
        }
        dvp.copy_from_slice(cp);
    }
    for (o, c) in out.iter_mut().zip(cp) {
        *o = p[0] * PER_MIN * *o + p[1] * c;
    }
    has
}

/// [`patlak_kernel`] with the Jacobian, in lockstep lanes. The integral of
/// `cp` is the same for every lane: it is formed once, in the first
/// column of `dvp` (scratch until the end).
fn patlak_lanes(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]) {
    osipy_backend::simd::wide(
        #[inline(always)]
        || {
            let n = out.len();
            let (dk, dvp) = jac.split_at_mut(n);
            let icp = &mut dvp.as_flattened_mut()[..n];
            exp_conv(t, cp, 0.0, icp);
            let k: Lanes = std::array::from_fn(|l| p[0][l] * PER_MIN);
            for i in 0..n {
                dk[i] = [icp[i] * PER_MIN; LANES];
                for l in 0..LANES {
                    out[i][l] = k[l] * icp[i] + p[1][l] * cp[i];
                }
            }
            for i in 0..n {
                dvp[i] = [cp[i]; LANES];
            }
        },
    )
}

/// Patlak is linear: the least-squares solution is exact.
fn patlak_guess(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]) {
    let mut n = Normal::<2>::new();
    integrals(t, cp, c, |[cpi, ci, icp, _, _, _]| n.add([icp, cpi], ci));
    let [k, vp] = n.solve().unwrap_or([0.0, 0.0]);
    out[0] = k / PER_MIN;
    out[1] = vp;
}

/// 2CUM: `C = a E(k) + b int cp` with `a = F^2/S`, `b = F P/S`, `k = S/vp`,
/// `S = F + P` (per-second units).
fn tcum_kernel(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool {
    let n = out.len();
    let (f, ps, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2]);
    let s = f + ps;
    let (a, b) = (f * f / s, f * ps / s);
    let has = jac.is_some();
    match jac {
        None => {
            exp_conv(t, cp, s / vp, out);
            let mut icp = 0.0;
            for i in 0..n {
                if i > 0 {
                    icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
                }
                out[i] = a * out[i] + b * icp;
            }
        }
        Some(j) => {
            let (df, rest) = j.split_at_mut(n);
            let (dps, dvp) = rest.split_at_mut(n);
            // E in out, dE/dk in dvp (scratch until the end).
            exp_conv_with_derivative(t, cp, s / vp, out, dvp);
            let mut icp = 0.0;
            for i in 0..n {
                if i > 0 {
                    icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
                }
                let (e, d) = (out[i], dvp[i]);
                out[i] = a * e + b * icp;
                df[i] = (f * (f + 2.0 * ps) / (s * s) * e + a * d / vp + ps * ps / (s * s) * icp) * FLOW;
                dps[i] = (-(f * f) / (s * s) * e + a * d / vp + f * f / (s * s) * icp) * PER_MIN;
                dvp[i] = -a * d * s / (vp * vp);
            }
        }
    }
    has
}

/// [`tcum_kernel`] with the Jacobian, in lockstep lanes: per lane, the
/// same expressions in the same order.
fn tcum_lanes(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]) {
    osipy_backend::simd::wide(
        #[inline(always)]
        || {
            let n = out.len();
            let (df, rest) = jac.split_at_mut(n);
            let (dps, dvp) = rest.split_at_mut(n);
            let f: Lanes = std::array::from_fn(|l| p[0][l] * FLOW);
            let ps: Lanes = std::array::from_fn(|l| p[1][l] * PER_MIN);
            let vp = p[2];
            let s: Lanes = std::array::from_fn(|l| f[l] + ps[l]);
            let a: Lanes = std::array::from_fn(|l| f[l] * f[l] / s[l]);
            let b: Lanes = std::array::from_fn(|l| f[l] * ps[l] / s[l]);
            let k: Lanes = std::array::from_fn(|l| s[l] / vp[l]);
            // The lane-constant factors, each the same sub-expression as in
            // the one-voxel kernel.
            let s2: Lanes = std::array::from_fn(|l| s[l] * s[l]);
            let e_f: Lanes = std::array::from_fn(|l| f[l] * (f[l] + 2.0 * ps[l]) / s2[l]);
            let i_f: Lanes = std::array::from_fn(|l| ps[l] * ps[l] / s2[l]);
            let e_ps: Lanes = std::array::from_fn(|l| -(f[l] * f[l]) / s2[l]);
            let i_ps: Lanes = std::array::from_fn(|l| f[l] * f[l] / s2[l]);
            let vp2: Lanes = std::array::from_fn(|l| vp[l] * vp[l]);
            // E in out, dE/dk in dvp (scratch until the end).
            exp_conv_with_derivative_lanes(t, cp, &k, out, dvp);
            let mut icp = 0.0;
            for i in 0..n {
                if i > 0 {
                    icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
                }
                for l in 0..LANES {
                    let (e, d) = (out[i][l], dvp[i][l]);
                    out[i][l] = a[l] * e + b[l] * icp;
                    df[i][l] = (e_f[l] * e + a[l] * d / vp[l] + i_f[l] * icp) * FLOW;
                    dps[i][l] = (e_ps[l] * e + a[l] * d / vp[l] + i_ps[l] * icp) * PER_MIN;
                    dvp[i][l] = -a[l] * d * s[l] / vp2[l];
                }
            }
        },
    )
}

/// `C = -s int C + F int ca + q int int ca`, `s = (F+P)/vp`, `q = F P / vp`.
fn tcum_guess(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]) {
    let mut n = Normal::<3>::new();
    integrals(t, cp, c, |[_, ci, icp, iicp, ic, _]| n.add([-ic, icp, iicp], ci));
    match n.solve() {
        Some([s, f, q]) if f > 0.0 && s > q / f => {
            let vp = f / (s - q / f);
            out[0] = f / FLOW;
            out[1] = (q * vp / f).max(0.0) / PER_MIN;
            out[2] = vp;
        }
        _ => out.copy_from_slice(&[20.0, 0.01, 0.05]),
    }
}

/// Impulse response `A1 e^{-alpha t} + A2 e^{-beta t}` of the 2CXM, from the
/// eigenvalues of its compartment matrix: `alpha, beta` are the roots of
/// `x^2 - s x + q` with `s = (F+P)/vp + P/ve`, `q = F P / (vp ve)`, and
/// `h(0) = F`, `h'(0) = -F^2/vp` fix the amplitudes.
fn tcxm_irf(p: &[f64]) -> (f64, f64, f64, f64) {
    let (f, ps, ve, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2], p[3]);
    let s = (f + ps) / vp + ps / ve;
    let q = f * ps / (vp * ve);
    let disc = (s * s - 4.0 * q).max(0.0).sqrt();
    let alpha = 0.5 * (s + disc);
    // beta = q / alpha avoids cancellation when q is small.
    let beta = if alpha > 0.0 { q / alpha } else { 0.0 };
    let a1 = if alpha > beta {
        f * (f / vp - beta) / (alpha - beta)
    } else {
        f
    };
    (a1, alpha, f - a1, beta)
}

/// 2CXM prediction and analytic Jacobian.
///
/// `C = A1 E(alpha) + A2 E(beta)` with `E(k) = cp * e^{-k t}`. With
/// `alpha + beta = s` and `alpha beta = q`, the eigenvalue derivatives are
/// `d alpha = (alpha ds - dq) / (alpha - beta)`, `d beta = (dq - beta ds) / (alpha - beta)`;
/// `A1 = F (F/vp - beta) / (alpha - beta)`, `A2 = F - A1` are differentiated by
/// the quotient rule, and `dE/dk` comes from the convolution recursion.
fn tcxm_kernel(t: &[f64], cp: &[f64], p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) -> bool {
    let Some(jac) = jac else {
        let (a1, alpha, a2, beta) = tcxm_irf(p);
        // Both exponential recursions advanced together, so no second buffer.
        out[0] = 0.0;
        let (mut c1, mut c2) = (0.0, 0.0);
        for i in 0..t.len() - 1 {
            c1 = step(t[i + 1] - t[i], cp[i], cp[i + 1], alpha, c1);
            c2 = step(t[i + 1] - t[i], cp[i], cp[i + 1], beta, c2);
            out[i + 1] = a1 * c1 + a2 * c2;
        }
        return false;
    };
    let n = out.len();
    let c = TcxmCoefficients::new(p);
    // Scratch in the Jacobian columns: E(alpha), E'(alpha), E(beta), E'(beta).
    let (c0, rest) = jac.split_at_mut(n);
    let (c1, rest) = rest.split_at_mut(n);
    let (c2, c3) = rest.split_at_mut(n);
    exp_conv_with_derivative(t, cp, c.alpha, c0, c1);
    exp_conv_with_derivative(t, cp, c.beta, c2, c3);
    for i in 0..n {
        let (ea, dea, eb, deb) = (c0[i], c1[i], c2[i], c3[i]);
        out[i] = c.a1 * ea + c.a2 * eb;
        (c0[i], c1[i], c2[i], c3[i]) = (
            c.d(0, ea, dea, eb, deb),
            c.d(1, ea, dea, eb, deb),
            c.d(2, ea, dea, eb, deb),
            c.d(3, ea, dea, eb, deb),
        );
    }
    true
}

/// The 2CXM amplitudes, eigenvalues and their derivatives by (F, P, ve, vp)
/// for one parameter vector (see [`tcxm_kernel`]).
struct TcxmCoefficients {
    a1: f64,
    alpha: f64,
    a2: f64,
    beta: f64,
    da: [f64; 4],
    db: [f64; 4],
    da1: [f64; 4],
    da2: [f64; 4],
}

impl TcxmCoefficients {
    fn new(p: &[f64]) -> Self {
        let (a1, alpha, a2, beta) = tcxm_irf(p);
        let (f, ps, ve, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2], p[3]);
        let q = f * ps / (vp * ve);
        let gap = alpha - beta;
        // d(s, q, F, F/vp) / d(F, P, ve, vp), per-second units.
        let ds = [
            1.0 / vp,
            1.0 / vp + 1.0 / ve,
            -ps / (ve * ve),
            -(f + ps) / (vp * vp),
        ];
        let dq = [ps / (vp * ve), f / (vp * ve), -q / ve, -q / vp];
        let df = [1.0, 0.0, 0.0, 0.0];
        let dfvp = [1.0 / vp, 0.0, 0.0, -f / (vp * vp)];
        let num = f * (f / vp - beta);
        let mut c = TcxmCoefficients {
            a1,
            alpha,
            a2,
            beta,
            da: [0.0; 4],
            db: [0.0; 4],
            da1: [0.0; 4],
            da2: [0.0; 4],
        };
        for j in 0..4 {
            c.da[j] = (alpha * ds[j] - dq[j]) / gap;
            c.db[j] = (dq[j] - beta * ds[j]) / gap;
            let dnum = df[j] * (f / vp - beta) + f * (dfvp[j] - c.db[j]);
            c.da1[j] = (dnum * gap - num * (c.da[j] - c.db[j])) / (gap * gap);
            c.da2[j] = df[j] - c.da1[j];
        }
        c
    }

    /// Column `j` of the Jacobian at one time point, from `E(alpha)`,
    /// `E'(alpha)`, `E(beta)` and `E'(beta)` there.
    #[inline(always)]
    fn d(&self, j: usize, ea: f64, dea: f64, eb: f64, deb: f64) -> f64 {
        const UNIT: [f64; 4] = [FLOW, PER_MIN, 1.0, 1.0];
        (self.da1[j] * ea + self.a1 * dea * self.da[j] + self.da2[j] * eb + self.a2 * deb * self.db[j])
            * UNIT[j]
    }
}

/// [`tcxm_kernel`] with the Jacobian, in lockstep lanes: each lane's
/// coefficients as one voxel's, then both convolutions four lanes at a time.
fn tcxm_lanes(t: &[f64], cp: &[f64], p: &[Lanes], out: &mut [Lanes], jac: &mut [Lanes]) {
    osipy_backend::simd::wide(
        #[inline(always)]
        || {
            let n = out.len();
            let c: [TcxmCoefficients; LANES] =
                std::array::from_fn(|l| TcxmCoefficients::new(&[p[0][l], p[1][l], p[2][l], p[3][l]]));
            let alpha: Lanes = std::array::from_fn(|l| c[l].alpha);
            let beta: Lanes = std::array::from_fn(|l| c[l].beta);
            let (c0, rest) = jac.split_at_mut(n);
            let (c1, rest) = rest.split_at_mut(n);
            let (c2, c3) = rest.split_at_mut(n);
            exp_conv_with_derivative_lanes(t, cp, &alpha, c0, c1);
            exp_conv_with_derivative_lanes(t, cp, &beta, c2, c3);
            for i in 0..n {
                for l in 0..LANES {
                    let (ea, dea, eb, deb) = (c0[i][l], c1[i][l], c2[i][l], c3[i][l]);
                    let cl = &c[l];
                    out[i][l] = cl.a1 * ea + cl.a2 * eb;
                    c0[i][l] = cl.d(0, ea, dea, eb, deb);
                    c1[i][l] = cl.d(1, ea, dea, eb, deb);
                    c2[i][l] = cl.d(2, ea, dea, eb, deb);
                    c3[i][l] = cl.d(3, ea, dea, eb, deb);
                }
            }
        },
    )
}

/// One interval of the exponential-convolution recursion (see
/// `osipy_convolution::exp_conv`): state `c` at the interval start to its end.
fn step(dt: f64, a0: f64, a1: f64, k: f64, c: f64) -> f64 {
    let mut buf = [0.0; 2];
    exp_conv(&[0.0, dt], &[a0, a1], k, &mut buf);
    (-k * dt).exp() * c + buf[1]
}

/// `C = -s int C - q int int C + F int ca + r int int ca` (Flouri et al. 2016).
fn tcxm_guess(t: &[f64], cp: &[f64], c: &[f64], out: &mut [f64]) {
    let mut n = Normal::<4>::new();
    integrals(t, cp, c, |[_, ci, icp, iicp, ic, iic]| {
        n.add([-ic, -iic, icp, iicp], ci)
    });
    let guess = n.solve().and_then(|[s, q, f, r]| {
        let vp = f * f / (s * f - r);
        let ps_ve = q * vp / f;
        let ps = vp * (s - ps_ve) - f;
        let ve = ps / ps_ve;
        (f > 0.0 && vp > 0.0 && ps > 0.0 && ve > 0.0).then_some([
            f / FLOW,
            ps / PER_MIN,
            ve.min(1.0),
            vp.min(1.0),
        ])
    });
    out.copy_from_slice(&guess.unwrap_or([20.0, 0.1, 0.2, 0.05]));
}

/// Static description of one PK model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) params: &'static [ParamSpec],
    pub(crate) kernel: Kernel,
    pub(crate) guess: Guess,
    /// The lockstep form of `kernel` (prediction and Jacobian), if any.
    pub(crate) lanes: Option<LaneKernel>,
    /// The GPU form of `kernel`, plain and with a fitted delay.
    pub(crate) gpu: GpuSpec,
}

/// The GPU forms of a model (`models.cu`): keys and CUDA C parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GpuSpec {
    key: &'static str,
    source: &'static [&'static str],
    delayed_key: &'static str,
    delayed_source: &'static [&'static str],
}

impl GpuSpec {
    /// The kernel of `source` under `key` with the model's constants.
    fn kernel(
        key: &'static str,
        source: &'static [&'static str],
        input: &PkInput,
    ) -> osipy_fitting::gpu::GpuKernel {
        let mut consts = osipy_convolution::gpu_series_tables();
        consts.extend_from_slice(&input.t);
        consts.extend_from_slice(&input.cp);
        osipy_fitting::gpu::GpuKernel { key, source, consts }
    }
}

/// The CUDA C of the PK models with a GPU form (see `models.cu`).
const MODELS_GPU: &str = include_str!("models.cu");

const PM: Unit = Unit::PerMinute;
const FR: Unit = Unit::Dimensionless;
const FL: Unit = Unit::Ml100mlMin;
const KTRANS: ParamSpec = ParamSpec::new("Ktrans", "K^{trans}", PM, (0.0, 5.0));
const VE: ParamSpec = ParamSpec::new("ve", "v_e", FR, (1e-3, 1.0));
const VP: ParamSpec = ParamSpec::new("vp", "v_p", FR, (0.0, 1.0));
const FP: ParamSpec = ParamSpec::new("Fp", "F_p", FL, (1e-3, 200.0));
const PS: ParamSpec = ParamSpec::new("PS", "PS", PM, (0.0, 5.0));
// The two-compartment models keep ve and vp off zero (their kernels divide by them).
const VE_2C: ParamSpec = ParamSpec::new("ve", "v_e", FR, (1e-4, 1.0));
const VP_2C: ParamSpec = ParamSpec::new("vp", "v_p", FR, (1e-4, 1.0));

/// Every DCE model, in registry order.
pub(crate) const SPECS: [Spec; 5] = [
    Spec {
        name: "tofts",
        description: "standard Tofts (Ktrans, ve)",
        params: &[KTRANS, VE],
        kernel: tofts_kernel,
        guess: tofts_guess,
        lanes: Some(tofts_lanes),
        gpu: GpuSpec {
            key: "dce_tofts",
            source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_TOFTS",
                MODELS_GPU,
            ],
            delayed_key: "dce_tofts_delayed",
            delayed_source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_TOFTS",
                "#define OSIPY_DCE_DELAYED",
                MODELS_GPU,
            ],
        },
    },
    Spec {
        name: "extended_tofts",
        description: "extended Tofts (Ktrans, ve, vp)",
        params: &[KTRANS, VE, VP],
        kernel: etofts_kernel,
        guess: etofts_guess,
        lanes: Some(etofts_lanes),
        gpu: GpuSpec {
            key: "dce_extended_tofts",
            source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_EXTENDED_TOFTS",
                MODELS_GPU,
            ],
            delayed_key: "dce_extended_tofts_delayed",
            delayed_source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_EXTENDED_TOFTS",
                "#define OSIPY_DCE_DELAYED",
                MODELS_GPU,
            ],
        },
    },
    Spec {
        name: "patlak",
        description: "Patlak (Ktrans, vp)",
        params: &[KTRANS, VP],
        kernel: patlak_kernel,
        guess: patlak_guess,
        lanes: Some(patlak_lanes),
        gpu: GpuSpec {
            key: "dce_patlak",
            source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_PATLAK",
                MODELS_GPU,
            ],
            delayed_key: "dce_patlak_delayed",
            delayed_source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_PATLAK",
                "#define OSIPY_DCE_DELAYED",
                MODELS_GPU,
            ],
        },
    },
    Spec {
        name: "2cxm",
        description: "two-compartment exchange (Fp, PS, ve, vp)",
        params: &[FP, PS, VE_2C, VP_2C],
        kernel: tcxm_kernel,
        guess: tcxm_guess,
        lanes: Some(tcxm_lanes),
        gpu: GpuSpec {
            key: "dce_2cxm",
            source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_2CXM",
                MODELS_GPU,
            ],
            delayed_key: "dce_2cxm_delayed",
            delayed_source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_2CXM",
                "#define OSIPY_DCE_DELAYED",
                MODELS_GPU,
            ],
        },
    },
    Spec {
        name: "2cum",
        description: "two-compartment uptake (Fp, PS, vp)",
        params: &[FP, PS, VP_2C],
        kernel: tcum_kernel,
        guess: tcum_guess,
        lanes: Some(tcum_lanes),
        gpu: GpuSpec {
            key: "dce_2cum",
            source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_2CUM",
                MODELS_GPU,
            ],
            delayed_key: "dce_2cum_delayed",
            delayed_source: &[
                osipy_convolution::EXP_CONV_GPU,
                "#define OSIPY_DCE_2CUM",
                "#define OSIPY_DCE_DELAYED",
                MODELS_GPU,
            ],
        },
    },
];

fn spec(name: &str) -> Result<&'static Spec> {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| OsipyError::UnknownName {
            kind: "DCE model".into(),
            name: name.into(),
            valid: SPECS.iter().map(|s| s.name.to_string()).collect(),
        })
}

/// A PK model bound to its input: one of the built-in model specs with times and AIF.
#[derive(Debug, Clone)]
pub struct PkModel {
    spec: &'static Spec,
    input: PkInput,
}

impl Model for PkModel {
    fn name(&self) -> &str {
        self.spec.name
    }
    fn params(&self) -> &[ParamSpec] {
        self.spec.params
    }
    fn n_samples(&self) -> usize {
        self.input.t.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        (self.spec.kernel)(&self.input.t, &self.input.cp, p, out, None);
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        (self.spec.kernel)(&self.input.t, &self.input.cp, p, out, Some(jac))
    }
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        (self.spec.guess)(&self.input.t, &self.input.cp, c, out)
    }
    fn has_lanes(&self) -> bool {
        self.spec.lanes.is_some()
    }
    fn predict_with_jacobian_lanes(
        &self,
        p: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        _scratch: &mut [Lanes],
    ) {
        match self.spec.lanes {
            Some(lanes) => lanes(&self.input.t, &self.input.cp, p, out, jac),
            None => osipy_fitting::lanes_one_by_one(self, p, out, jac),
        }
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        let g = &self.spec.gpu;
        Some(GpuSpec::kernel(g.key, g.source, &self.input))
    }
}

/// The registry entry of a DCE model: what builds it for a given time grid
/// and AIF. Built-in models come from the crate's model table; a library user registers a
/// model of their own with [`DceModelEntry::new`].
#[derive(Debug, Clone, Copy)]
pub struct DceModelEntry {
    build: Builder,
}

#[derive(Debug, Clone, Copy)]
enum Builder {
    Spec(&'static Spec),
    Custom(fn(PkInput) -> Box<dyn Model>),
}

impl Extension for DceModelEntry {
    const KIND: KindInfo = KindInfo {
        id: "dce_models",
        label: "DCE model",
        config_key: "dce: pipeline.model",
    };
}

impl DceModelEntry {
    pub(crate) fn from_spec(spec: &'static Spec) -> Self {
        DceModelEntry {
            build: Builder::Spec(spec),
        }
    }

    /// An entry for a model of your own: `build` binds it to the frame times
    /// and plasma AIF of a run. Such models fit without an arterial delay.
    pub fn new(build: fn(PkInput) -> Box<dyn Model>) -> Self {
        DceModelEntry {
            build: Builder::Custom(build),
        }
    }

    /// The built-in model called `name` (for callers without a registry);
    /// the error lists the built-in names.
    pub fn builtin(name: &str) -> Result<Self> {
        spec(name).map(DceModelEntry::from_spec)
    }

    /// The model bound to `input`.
    pub fn build(&self, input: PkInput) -> Box<dyn Model> {
        match self.build {
            Builder::Spec(spec) => Box::new(PkModel { spec, input }),
            Builder::Custom(f) => f(input),
        }
    }

    /// The model bound to `input` with a fitted arterial delay (s); an error
    /// for custom models, whose kernels cannot take a shifted AIF.
    pub fn build_delayed(&self, input: PkInput) -> Result<Box<dyn Model>> {
        match self.build {
            Builder::Spec(spec) => Ok(Box::new(DelayedPkModel::new(spec, input))),
            Builder::Custom(f) => Err(OsipyError::Validation(format!(
                "model {} is a custom model: fit_delay needs one of the built-in models",
                f(input).name()
            ))),
        }
    }
}

/// Builds the built-in model called `name` bound to `input`; the error lists
/// the names.
pub fn model(name: &str, input: PkInput) -> Result<Box<dyn Model>> {
    Ok(DceModelEntry::builtin(name)?.build(input))
}

/// Default bounds of the fitted arterial delay (s), as in the OSIPI DCE tests.
pub const DELAY_BOUNDS: (f64, f64) = (-10.0, 10.0);

/// `out[i] = cp(t_i - tau)`, linear interpolation, zero before the first
/// sample and held after the last.
fn shift_into(t: &[f64], cp: &[f64], tau: f64, out: &mut [f64]) {
    let n = t.len();
    let mut k = 0;
    for i in 0..n {
        let x = t[i] - tau;
        out[i] = if x < t[0] {
            0.0
        } else if x >= t[n - 1] {
            cp[n - 1]
        } else {
            while t[k + 1] <= x {
                k += 1;
            }
            while t[k] > x {
                k -= 1;
            }
            cp[k] + (x - t[k]) / (t[k + 1] - t[k]) * (cp[k + 1] - cp[k])
        };
    }
}

/// A PK model with an extra fitted parameter `delay` (s): the AIF is used as
/// `cp(t - delay)`. The delay column of the Jacobian is a forward difference
/// (the shifted AIF is piecewise linear in the delay); the others are the
/// model's own. The shifted AIFs and a trial prediction live in the scratch
/// the fitter hands in ([`Model::scratch_len`]: three series).
#[derive(Debug, Clone)]
pub struct DelayedPkModel {
    spec: &'static Spec,
    input: PkInput,
    params: Vec<ParamSpec>,
}

/// The fitted arterial delay.
const DELAY: ParamSpec = ParamSpec::new("delay", "delay", Unit::Seconds, DELAY_BOUNDS);

impl DelayedPkModel {
    fn new(spec: &'static Spec, input: PkInput) -> Self {
        let mut params = spec.params.to_vec();
        params.push(DELAY);
        DelayedPkModel { spec, input, params }
    }

    /// Splits `scratch` into the three series (shifted AIF, shifted AIF at
    /// delay + h, prediction).
    fn split<'a>(&self, scratch: &'a mut [f64]) -> (&'a mut [f64], &'a mut [f64], &'a mut [f64]) {
        let n = self.input.t.len();
        let (a, rest) = scratch[..3 * n].split_at_mut(n);
        let (b, c) = rest.split_at_mut(n);
        (a, b, c)
    }
}

impl Model for DelayedPkModel {
    fn name(&self) -> &str {
        self.spec.name
    }
    fn params(&self) -> &[ParamSpec] {
        &self.params
    }
    fn n_samples(&self) -> usize {
        self.input.t.len()
    }
    fn scratch_len(&self) -> usize {
        3 * self.input.t.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        self.predict_in(p, out, &mut vec![0.0; self.scratch_len()])
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        self.predict_with_jacobian_in(p, out, jac, &mut vec![0.0; self.scratch_len()])
    }
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        self.initial_guess_in(c, out, &mut vec![0.0; self.scratch_len()])
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        let g = &self.spec.gpu;
        Some(GpuSpec::kernel(g.delayed_key, g.delayed_source, &self.input))
    }
    fn predict_in(&self, p: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let m = self.spec.params.len();
        let (cp, _, _) = self.split(scratch);
        shift_into(&self.input.t, &self.input.cp, p[m], cp);
        (self.spec.kernel)(&self.input.t, cp, &p[..m], out, None);
    }
    fn predict_with_jacobian_in(
        &self,
        p: &[f64],
        out: &mut [f64],
        jac: &mut [f64],
        scratch: &mut [f64],
    ) -> bool {
        let (m, n) = (self.spec.params.len(), out.len());
        let t = &self.input.t;
        let (cp, cp_h, pred_h) = self.split(scratch);
        shift_into(t, &self.input.cp, p[m], cp);
        let (inner, dtau) = jac.split_at_mut(m * n);
        if !(self.spec.kernel)(t, cp, &p[..m], out, Some(inner)) {
            return false;
        }
        let h = 1e-3;
        shift_into(t, &self.input.cp, p[m] + h, cp_h);
        (self.spec.kernel)(t, cp_h, &p[..m], pred_h, None);
        for i in 0..n {
            dtau[i] = (pred_h[i] - out[i]) / h;
        }
        true
    }
    /// The model's own guess at 11 delays across the bounds; keeps the
    /// delay (and guess) with the smallest residual.
    fn initial_guess_in(&self, c: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let m = self.spec.params.len();
        let (lo, hi) = DELAY_BOUNDS;
        let t = &self.input.t;
        let (cp, _, pred) = self.split(scratch);
        let mut best = f64::INFINITY;
        let mut trial = [0.0; 8];
        for k in 0..=10 {
            let tau = lo + (hi - lo) * k as f64 / 10.0;
            shift_into(t, &self.input.cp, tau, cp);
            (self.spec.guess)(t, cp, c, &mut trial[..m]);
            for (x, spec) in trial[..m].iter_mut().zip(self.spec.params) {
                *x = x.clamp(spec.bounds.0, spec.bounds.1);
            }
            (self.spec.kernel)(t, cp, &trial[..m], pred, None);
            let sse: f64 = pred.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
            if sse < best {
                best = sse;
                out[..m].copy_from_slice(&trial[..m]);
                out[m] = tau;
            }
        }
        if !best.is_finite() {
            (self.spec.guess)(t, &self.input.cp, c, &mut out[..m]);
            out[m] = 0.0;
        }
    }
}

/// Builds the built-in model called `name` with a fitted arterial delay.
pub fn model_with_delay(name: &str, input: PkInput) -> Result<Box<dyn Model>> {
    DceModelEntry::builtin(name)?.build_delayed(input)
}
