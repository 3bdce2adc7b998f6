//! Recursive exponential convolution, exact for a piecewise-linear input.
//!
//! For `c(t) = int_{t0}^{t} a(s) e^{-k(t-s)} ds` with `a` linear between
//! samples, each interval adds a closed-form term (Flouri, Lesnic & Sourbron,
//! MRM 2016, "Fitting the two-compartment model in DCE-MRI by linear
//! inversion", and Sourbron's recursive scheme):
//!
//! `c_{i+1} = E c_i + dt [a_i f1(x) + (a_{i+1} - a_i) f2(x)]`,
//! with `dt = t_{i+1} - t_i`, `x = k dt`, `E = e^{-x}`,
//! `f1(x) = (1 - e^{-x}) / x`, `f2(x) = (x - 1 + e^{-x}) / x^2`.
//!
//! Differentiating the recursion gives `dc/dk` exactly, for analytic
//! Jacobians of tracer-kinetic models. Near `x = 0` the closed forms cancel
//! catastrophically, so their Taylor series are used for `|x| < 0.5`.

use osipy_core::Result;

const SERIES_LIMIT: f64 = 0.5;
const SERIES_TERMS: usize = 16;

/// Taylor coefficients in `y = -x`, built at compile time:
/// `f1 = sum y^n/(n+1)!`, `f2 = sum y^n/(n+2)!`,
/// `f1' = -sum (n+1) y^n/(n+2)!`, `f2' = -sum (n+1) y^n/(n+3)!`.
const fn series_tables() -> [[f64; SERIES_TERMS]; 4] {
    let mut t = [[0.0; SERIES_TERMS]; 4];
    let mut n = 0;
    while n < SERIES_TERMS {
        // (n+1)!, (n+2)!, (n+3)! as f64.
        let mut f1 = 1.0;
        let mut k = 2;
        while k <= n + 1 {
            f1 *= k as f64;
            k += 1;
        }
        let f2 = f1 * (n + 2) as f64;
        let f3 = f2 * (n + 3) as f64;
        t[0][n] = 1.0 / f1;
        t[1][n] = 1.0 / f2;
        t[2][n] = -((n + 1) as f64) / f2;
        t[3][n] = -((n + 1) as f64) / f3;
        n += 1;
    }
    t
}

const TABLES: [[f64; SERIES_TERMS]; 4] = series_tables();

/// [`exp_conv`] and [`exp_conv_with_derivative`] in CUDA C, for GPU model
/// kernels (`osipy_exp_conv`, `osipy_exp_conv_d`): the same branches and
/// order of operations. They read the Taylor tables from
/// [`gpu_series_tables`], which the model passes among its constants.
pub const EXP_CONV_GPU: &str = include_str!("exponential.cu");

/// The four Taylor tables of the kernels (16 values each, in order), as
/// the GPU source [`EXP_CONV_GPU`] reads them.
pub fn gpu_series_tables() -> Vec<f64> {
    TABLES.iter().flatten().copied().collect()
}

/// `(f1, f2, f1', f2')` at `x` (see the module doc).
#[inline]
fn kernels(x: f64) -> (f64, f64, f64, f64) {
    if x.abs() < SERIES_LIMIT {
        // Horner evaluation: no divisions.
        let y = -x;
        let mut acc = [0.0f64; 4];
        for n in (0..SERIES_TERMS).rev() {
            for (a, tab) in acc.iter_mut().zip(&TABLES) {
                *a = *a * y + tab[n];
            }
        }
        (acc[0], acc[1], acc[2], acc[3])
    } else {
        let e = (-x).exp();
        let om = -(-x).exp_m1(); // 1 - e^{-x}
        let x2 = x * x;
        let f1 = om / x;
        let f2 = (x - om) / x2;
        let d1 = (x * e - om) / x2;
        let d2 = (om * x - 2.0 * (x - om)) / (x2 * x);
        (f1, f2, d1, d2)
    }
}

/// Writes `c(t_i) = int_{t0}^{t_i} a(s) e^{-k(t_i - s)} ds` into `out`.
///
/// Hot-path routine: no checks beyond debug assertions. `t` must be strictly
/// increasing and `a`, `out` as long as `t`; `k` in 1/(time unit of `t`).
pub fn exp_conv(t: &[f64], a: &[f64], k: f64, out: &mut [f64]) {
    debug_assert!(a.len() == t.len() && out.len() == t.len());
    if t.is_empty() {
        return;
    }
    out[0] = 0.0;
    let mut c = 0.0;
    // The kernels depend only on the step: on uniform grids they are computed
    // once per call, not once per sample.
    let mut last_dt = f64::NAN;
    // e, dt f1, dt f2 for the current step length.
    let (mut e, mut g1, mut g2) = (0.0, 0.0, 0.0);
    for i in 0..t.len() - 1 {
        let dt = t[i + 1] - t[i];
        if dt != last_dt {
            let x = k * dt;
            let (f1, f2, _, _) = kernels(x);
            (e, g1, g2) = ((-x).exp(), dt * f1, dt * f2);
            last_dt = dt;
        }
        c = e * c + a[i] * g1 + (a[i + 1] - a[i]) * g2;
        out[i + 1] = c;
    }
}

/// Whether all steps of `t` are bitwise equal (then per-step kernels are
/// computed once).
/// Branch-free, so the check vectorises: it runs on every call of the
/// fitters' model evaluations.
fn is_uniform(t: &[f64]) -> bool {
    if t.len() < 3 {
        return true;
    }
    let dt = t[1] - t[0];
    let mut differ = 0u8;
    for w in t.windows(2) {
        differ |= u8::from(w[1] - w[0] != dt);
    }
    differ == 0
}

/// As [`exp_conv`], also writing `dc/dk` into `dout` (same units as `out`
/// times time).
pub fn exp_conv_with_derivative(t: &[f64], a: &[f64], k: f64, out: &mut [f64], dout: &mut [f64]) {
    debug_assert!(a.len() == t.len() && out.len() == t.len() && dout.len() == t.len());
    let n = t.len();
    if n == 0 {
        return;
    }
    out[0] = 0.0;
    dout[0] = 0.0;
    if n >= 2 && is_uniform(t) {
        // Uniform grid: independent increments first (vectorisable), then
        // the two recurrences, two samples per step.
        let dt = t[1] - t[0];
        let x = k * dt;
        let (f1, f2, d1, d2) = kernels(x);
        let e = (-x).exp();
        let (dte, g1, g2, h1, h2) = (dt * e, dt * f1, dt * f2, dt * dt * d1, dt * dt * d2);
        for i in 0..n - 1 {
            let da = a[i + 1] - a[i];
            out[i + 1] = a[i] * g1 + da * g2;
            dout[i + 1] = a[i] * h1 + da * h2;
        }
        recur_pair(e, dte, out, dout);
        return;
    }
    let (mut c, mut d) = (0.0, 0.0);
    let mut last_dt = f64::NAN;
    // Per step length: e, dt e, dt f1, dt f2, dt^2 f1', dt^2 f2'.
    let (mut e, mut dte, mut g1, mut g2, mut h1, mut h2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n - 1 {
        let dt = t[i + 1] - t[i];
        if dt != last_dt {
            let x = k * dt;
            let (f1, f2, d1, d2) = kernels(x);
            e = (-x).exp();
            (dte, g1, g2, h1, h2) = (dt * e, dt * f1, dt * f2, dt * dt * d1, dt * dt * d2);
            last_dt = dt;
        }
        let da = a[i + 1] - a[i];
        d = e * d - dte * c + a[i] * h1 + da * h2;
        c = e * c + a[i] * g1 + da * g2;
        out[i + 1] = c;
        dout[i + 1] = d;
    }
}

/// In place, the two coupled recurrences of the uniform grid,
/// `c[i] = e c[i-1] + u[i]` and `d[i] = e d[i-1] - dte c[i-1] + w[i]`
/// (`u`, `w` the increments held in `c`, `d` on entry; `c[0] = d[0] = 0`),
/// advancing two samples per step so each dependency chain is half as long,
/// and both chains run side by side:
/// `c[i+1] = e^2 c[i-1] + (e u[i] + u[i+1])`,
/// `d[i+1] = e^2 d[i-1] - 2 e dte c[i-1] + (e w[i] + w[i+1] - dte u[i])`.
#[inline]
fn recur_pair(e: f64, dte: f64, c: &mut [f64], d: &mut [f64]) {
    let n = c.len().min(d.len());
    let (c, d) = (&mut c[..n], &mut d[..n]);
    let (e2, edte2) = (e * e, 2.0 * e * dte);
    let (mut cp, mut dp) = (c[0], d[0]);
    let mut i = 1;
    while i + 1 < n {
        let (u0, u1, w0, w1) = (c[i], c[i + 1], d[i], d[i + 1]);
        c[i] = e * cp + u0;
        d[i] = e * dp - dte * cp + w0;
        let dn = e2 * dp - edte2 * cp + ((e * w0 + w1) - dte * u0);
        cp = e2 * cp + (e * u0 + u1);
        dp = dn;
        c[i + 1] = cp;
        d[i + 1] = dp;
        i += 2;
    }
    if i < n {
        let cn = e * cp + c[i];
        d[i] += e * dp - dte * cp;
        c[i] = cn;
    }
}

/// [`exp_conv_with_derivative`] for `W` rate constants at once, in lockstep
/// lanes: `out[i][l]` and `dout[i][l]` are sample `i` for rate `k[l]`. Each
/// lane does exactly the arithmetic of the one-rate form in the same order
/// (no fused multiply-adds), so the results are equal bit for bit; the
/// loops over lanes vectorise, and the lanes' recurrences run side by side.
#[inline(always)]
pub fn exp_conv_with_derivative_lanes<const W: usize>(
    t: &[f64],
    a: &[f64],
    k: &[f64; W],
    out: &mut [[f64; W]],
    dout: &mut [[f64; W]],
) {
    debug_assert!(a.len() == t.len() && out.len() == t.len() && dout.len() == t.len());
    let n = t.len();
    if n == 0 {
        return;
    }
    out[0] = [0.0; W];
    dout[0] = [0.0; W];
    let mut s = LaneSteps::<W>::default();
    if n >= 2 && is_uniform(t) {
        s.set(k, t[1] - t[0]);
        let LaneSteps {
            e,
            dte,
            g1,
            g2,
            h1,
            h2,
        } = s;
        for i in 0..n - 1 {
            let da = a[i + 1] - a[i];
            for l in 0..W {
                out[i + 1][l] = a[i] * g1[l] + da * g2[l];
                dout[i + 1][l] = a[i] * h1[l] + da * h2[l];
            }
        }
        recur_pair_lanes(&e, &dte, out, dout);
        return;
    }
    let (mut c, mut d) = ([0.0; W], [0.0; W]);
    let mut last_dt = f64::NAN;
    for i in 0..n - 1 {
        let dt = t[i + 1] - t[i];
        if dt != last_dt {
            s.set(k, dt);
            last_dt = dt;
        }
        let da = a[i + 1] - a[i];
        let LaneSteps {
            e,
            dte,
            g1,
            g2,
            h1,
            h2,
        } = &s;
        for l in 0..W {
            d[l] = e[l] * d[l] - dte[l] * c[l] + a[i] * h1[l] + da * h2[l];
            c[l] = e[l] * c[l] + a[i] * g1[l] + da * g2[l];
        }
        out[i + 1] = c;
        dout[i + 1] = d;
    }
}

/// Per lane, the step factors of one step length `dt`: `e`, `dt e`,
/// `dt f1`, `dt f2`, `dt^2 f1'`, `dt^2 f2'` (see the module doc).
struct LaneSteps<const W: usize> {
    e: [f64; W],
    dte: [f64; W],
    g1: [f64; W],
    g2: [f64; W],
    h1: [f64; W],
    h2: [f64; W],
}

impl<const W: usize> Default for LaneSteps<W> {
    fn default() -> Self {
        let z = [0.0; W];
        LaneSteps {
            e: z,
            dte: z,
            g1: z,
            g2: z,
            h1: z,
            h2: z,
        }
    }
}

impl<const W: usize> LaneSteps<W> {
    /// The factors for rates `k` and step `dt`, as [`exp_conv_with_derivative`]
    /// computes them.
    #[inline(always)]
    fn set(&mut self, k: &[f64; W], dt: f64) {
        for l in 0..W {
            let x = k[l] * dt;
            let (f1, f2, d1, d2) = kernels(x);
            self.e[l] = (-x).exp();
            self.dte[l] = dt * self.e[l];
            (self.g1[l], self.g2[l], self.h1[l], self.h2[l]) = (dt * f1, dt * f2, dt * dt * d1, dt * dt * d2);
        }
    }
}

/// [`recur_pair`] for `W` lanes, with each lane's arithmetic unchanged.
#[inline(always)]
fn recur_pair_lanes<const W: usize>(e: &[f64; W], dte: &[f64; W], c: &mut [[f64; W]], d: &mut [[f64; W]]) {
    let n = c.len().min(d.len());
    let (c, d) = (&mut c[..n], &mut d[..n]);
    let e2: [f64; W] = std::array::from_fn(|l| e[l] * e[l]);
    let edte2: [f64; W] = std::array::from_fn(|l| 2.0 * e[l] * dte[l]);
    let (mut cp, mut dp) = (c[0], d[0]);
    let mut i = 1;
    while i + 1 < n {
        let (u0, u1, w0, w1) = (c[i], c[i + 1], d[i], d[i + 1]);
        for l in 0..W {
            c[i][l] = e[l] * cp[l] + u0[l];
            d[i][l] = e[l] * dp[l] - dte[l] * cp[l] + w0[l];
            let dn = e2[l] * dp[l] - edte2[l] * cp[l] + ((e[l] * w0[l] + w1[l]) - dte[l] * u0[l]);
            cp[l] = e2[l] * cp[l] + (e[l] * u0[l] + u1[l]);
            dp[l] = dn;
        }
        c[i + 1] = cp;
        d[i + 1] = dp;
        i += 2;
    }
    if i < n {
        for l in 0..W {
            let cn = e[l] * cp[l] + c[i][l];
            d[i][l] += e[l] * dp[l] - dte[l] * cp[l];
            c[i][l] = cn;
        }
    }
}

/// `int_{t0}^{t} a(s) [w1 e^{-k1(t-s)} + w2 e^{-k2(t-s)}] ds` into `out`,
/// with `components = [(k1, w1), (k2, w2)]`; `scratch` must be as long as `t`.
pub fn biexp_conv(t: &[f64], a: &[f64], components: [(f64, f64); 2], out: &mut [f64], scratch: &mut [f64]) {
    let [(k1, w1), (k2, w2)] = components;
    exp_conv(t, a, k1, out);
    exp_conv(t, a, k2, scratch);
    for (o, s) in out.iter_mut().zip(scratch.iter()) {
        *o = w1 * *o + w2 * *s;
    }
}

/// Checked, allocating form of [`exp_conv`].
pub fn exponential(t: &[f64], a: &[f64], k: f64) -> Result<Vec<f64>> {
    crate::check_grid(t, "input function", a)?;
    if !k.is_finite() {
        return Err(osipy_core::OsipyError::data(
            "rate constant k",
            k.to_string(),
            "a finite number",
        ));
    }
    let mut out = vec![0.0; t.len()];
    exp_conv(t, a, k, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_closed_forms_agree_at_the_switch() {
        // Just below and above the switch the two branches must agree to
        // near machine precision (the closed form loses ~eps/x^3 there).
        let a = kernels(SERIES_LIMIT * (1.0 - 1e-12));
        let b = kernels(SERIES_LIMIT * (1.0 + 1e-12));
        for (u, v) in [(a.0, b.0), (a.1, b.1), (a.2, b.2), (a.3, b.3)] {
            assert!((u - v).abs() < 1e-12, "{u} vs {v}");
        }
        let z = kernels(0.0);
        assert_eq!((z.0, z.1), (1.0, 0.5));
        assert!((z.2 + 0.5).abs() < 1e-15 && (z.3 + 1.0 / 6.0).abs() < 1e-15);
    }
}
