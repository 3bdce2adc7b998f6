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

/// `(f1, f2, f1', f2')` at `x` (see the module doc).
#[inline]
fn kernels(x: f64) -> (f64, f64, f64, f64) {
    if x.abs() < SERIES_LIMIT {
        // f1 = sum (-x)^n/(n+1)!, f2 = sum (-x)^n/(n+2)!, and their derivatives.
        let (mut f1, mut f2, mut d1, mut d2) = (0.0, 0.0, 0.0, 0.0);
        let mut pow = 1.0; // (-x)^n
        let mut pow_prev = 0.0; // (-x)^(n-1) * (-1): derivative helper
        let mut fact1 = 1.0; // (n+1)!
        let mut fact2 = 2.0; // (n+2)!
        for n in 0..SERIES_TERMS {
            let nf = n as f64;
            f1 += pow / fact1;
            f2 += pow / fact2;
            if n >= 1 {
                // d/dx (-x)^n = -n (-x)^(n-1)
                d1 += -nf * pow_prev / fact1;
                d2 += -nf * pow_prev / fact2;
            }
            pow_prev = pow;
            pow *= -x;
            fact1 *= nf + 2.0;
            fact2 *= nf + 3.0;
        }
        (f1, f2, d1, d2)
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
    for i in 0..t.len() - 1 {
        let dt = t[i + 1] - t[i];
        let x = k * dt;
        let (f1, f2, _, _) = kernels(x);
        c = (-x).exp() * c + dt * (a[i] * f1 + (a[i + 1] - a[i]) * f2);
        out[i + 1] = c;
    }
}

/// As [`exp_conv`], also writing `dc/dk` into `dout` (same units as `out`
/// times time).
pub fn exp_conv_with_derivative(t: &[f64], a: &[f64], k: f64, out: &mut [f64], dout: &mut [f64]) {
    debug_assert!(a.len() == t.len() && out.len() == t.len() && dout.len() == t.len());
    if t.is_empty() {
        return;
    }
    out[0] = 0.0;
    dout[0] = 0.0;
    let (mut c, mut d) = (0.0, 0.0);
    for i in 0..t.len() - 1 {
        let dt = t[i + 1] - t[i];
        let x = k * dt;
        let e = (-x).exp();
        let (f1, f2, d1, d2) = kernels(x);
        let da = a[i + 1] - a[i];
        d = -dt * e * c + e * d + dt * dt * (a[i] * d1 + da * d2);
        c = e * c + dt * (a[i] * f1 + da * f2);
        out[i + 1] = c;
        dout[i + 1] = d;
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
