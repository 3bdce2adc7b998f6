//! # osipy-convolution
//!
//! Convolution and deconvolution for tracer-kinetic models.
//!
//! | routine | what it computes | grid |
//! |---|---|---|
//! | [`piecewise_linear`] | exact `(a * b)(t)` of two piecewise-linear functions | any increasing |
//! | [`exp_conv`] / [`exp_conv_with_derivative`] | exact `int_0^t a(s) e^{-k(t-s)} ds` for piecewise-linear `a`, and `d/dk` | any increasing |
//! | [`biexp_conv`] | `int_0^t a(s) [w1 e^{-k1(t-s)} + w2 e^{-k2(t-s)}] ds` | any increasing |
//! | [`fft_convolve`] | discrete (rectangle-rule) convolution `dt * sum a_j b_{i-j}` by FFT | uniform |
//! | [`convolution_matrix`] | causal Toeplitz or block-circulant matrix of `a` | uniform |
//! | [`tsvd_inverse`], [`tikhonov_inverse`] | regularised pseudo-inverses (faer SVD) | |
//!
//! Time is measured from `t[0]`: a sampled function is the linear
//! interpolant of its samples on `[t[0], t[n-1]]` and zero before `t[0]`.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

use ndarray::Array2;
use osipy_core::{check_increasing, OsipyError, Result};

mod exponential;
pub use exponential::{
    biexp_conv, exp_conv, exp_conv_with_derivative, exp_conv_with_derivative_lanes, exponential,
    gpu_series_tables, EXP_CONV_GPU,
};

/// Checks a time grid and the samples defined on it.
pub fn check_grid(t: &[f64], what: &str, values: &[f64]) -> Result<()> {
    if t.len() < 2 {
        return Err(OsipyError::data(
            "time grid length",
            t.len().to_string(),
            "at least 2 points",
        ));
    }
    if values.len() != t.len() {
        return Err(OsipyError::data(
            format!("length of {what}"),
            values.len().to_string(),
            format!("{}, the number of time points", t.len()),
        ));
    }
    if let Some(bad) = t.iter().chain(values).find(|v| !v.is_finite()) {
        return Err(OsipyError::data(
            format!("a sample of {what} or time"),
            bad.to_string(),
            "finite numbers",
        ));
    }
    check_increasing("time points (s)", t)
}

/// Linear interpolation of samples `y` on grid `t` at `x` (zero outside
/// `[t[0], t[n-1]]` on the left, held at the last value on the right).
fn interp(t: &[f64], y: &[f64], hint: &mut usize, x: f64) -> f64 {
    let n = t.len();
    if x < t[0] {
        return 0.0;
    }
    if x >= t[n - 1] {
        return y[n - 1];
    }
    let mut k = (*hint).min(n - 2);
    while k > 0 && t[k] > x {
        k -= 1;
    }
    while k + 2 < n && t[k + 1] <= x {
        k += 1;
    }
    *hint = k;
    let w = (x - t[k]) / (t[k + 1] - t[k]);
    y[k] + w * (y[k + 1] - y[k])
}

/// Exact convolution `c(t_i) = int_{t0}^{t_i} a(s) b(t_i - s + t0) ds` of two
/// piecewise-linear functions sampled on the same increasing grid.
///
/// Between the merged breakpoints (the grid points and the reflected grid
/// points `t_i - t_k + t0`) both factors are linear, so their product is
/// quadratic and Simpson's rule integrates it exactly. O(n^2) per call.
pub fn piecewise_linear(t: &[f64], a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_grid(t, "first function", a)?;
    check_grid(t, "second function", b)?;
    let n = t.len();
    let t0 = t[0];
    let mut out = vec![0.0; n];
    let mut bps: Vec<f64> = Vec::with_capacity(2 * n);
    for i in 1..n {
        let ti = t[i];
        bps.clear();
        bps.extend(t[..=i].iter().copied());
        bps.extend(t[..=i].iter().map(|tk| ti - tk + t0));
        bps.sort_by(|x, y| x.total_cmp(y));
        bps.dedup_by(|x, y| (*x - *y).abs() <= 1e-12 * (1.0 + y.abs()));
        let (mut ha, mut hb) = (0usize, 0usize);
        let mut f = |s: f64| interp(t, a, &mut ha, s) * interp(t, b, &mut hb, ti - s + t0);
        let mut acc = 0.0;
        for w in bps.windows(2) {
            let (lo, hi) = (w[0].max(t0), w[1].min(ti));
            if hi <= lo {
                continue;
            }
            let mid = 0.5 * (lo + hi);
            acc += (hi - lo) / 6.0 * (f(lo) + 4.0 * f(mid) + f(hi));
        }
        out[i] = acc;
    }
    Ok(out)
}

/// Discrete convolution on a uniform grid, `c_i = dt * sum_{j<=i} a_j b_{i-j}`
/// (the rectangle rule), computed with a zero-padded FFT (rustfft) so there
/// is no circular wrap-around. Output has the length of `a`.
pub fn fft_convolve(a: &[f64], b: &[f64], dt: f64) -> Result<Vec<f64>> {
    use rustfft::{num_complex::Complex, FftPlanner};
    if a.len() != b.len() || a.is_empty() {
        return Err(OsipyError::data(
            "lengths of the two signals",
            format!("{} and {}", a.len(), b.len()),
            "equal, non-zero lengths",
        ));
    }
    if !(dt > 0.0 && dt.is_finite()) {
        return Err(OsipyError::data(
            "time step dt (s)",
            dt.to_string(),
            "a positive finite number",
        ));
    }
    let n = a.len();
    let len = (2 * n).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(len);
    let inv = planner.plan_fft_inverse(len);
    let pad = |x: &[f64]| {
        let mut v: Vec<Complex<f64>> = x.iter().map(|&r| Complex::new(r, 0.0)).collect();
        v.resize(len, Complex::new(0.0, 0.0));
        v
    };
    let mut fa = pad(a);
    let mut fb = pad(b);
    fwd.process(&mut fa);
    fwd.process(&mut fb);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x *= *y;
    }
    inv.process(&mut fa);
    let scale = dt / len as f64;
    Ok(fa[..n].iter().map(|c| c.re * scale).collect())
}

/// Structure of a convolution matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixKind {
    /// Lower-triangular Toeplitz `A_ij = dt a_{i-j}` (i >= j): causal,
    /// sensitive to delays between input and tissue (Østergaard et al. 1996).
    Toeplitz,
    /// Block-circulant `D_ij = dt a_{(i-j) mod 2n}` on a grid zero-padded to
    /// 2n samples: insensitive to arrival delays (Wu et al. 2003).
    BlockCirculant,
}

/// Convolution matrix of `a` (uniform step `dt`), so that `A x` is the
/// rectangle-rule convolution of `a` with `x` (`x` zero-padded to 2n for
/// [`MatrixKind::BlockCirculant`]).
pub fn convolution_matrix(a: &[f64], dt: f64, kind: MatrixKind) -> Result<Array2<f64>> {
    if a.is_empty() || a.iter().any(|v| !v.is_finite()) {
        return Err(OsipyError::data(
            "input function",
            "empty or non-finite",
            "finite samples",
        ));
    }
    if !(dt > 0.0 && dt.is_finite()) {
        return Err(OsipyError::data(
            "time step dt (s)",
            dt.to_string(),
            "a positive finite number",
        ));
    }
    let n = a.len();
    Ok(match kind {
        MatrixKind::Toeplitz => {
            Array2::from_shape_fn((n, n), |(i, j)| if i >= j { dt * a[i - j] } else { 0.0 })
        }
        MatrixKind::BlockCirculant => {
            let l = 2 * n;
            Array2::from_shape_fn((l, l), |(i, j)| {
                let k = (i + l - j) % l;
                if k < n {
                    dt * a[k]
                } else {
                    0.0
                }
            })
        }
    })
}

/// Pseudo-inverse with spectral filter `phi(s)`: `V diag(phi(s_i)) U^T`.
fn filtered_inverse(m: &Array2<f64>, phi: impl Fn(f64, f64) -> f64) -> Result<Array2<f64>> {
    let (r, c) = m.dim();
    let fm = faer::Mat::<f64>::from_fn(r, c, |i, j| m[[i, j]]);
    let svd = fm.thin_svd().map_err(|e| {
        OsipyError::Fitting(format!(
            "SVD of the {r}x{c} convolution matrix did not converge: {e:?}"
        ))
    })?;
    let (u, v, s) = (svd.U(), svd.V(), svd.S().column_vector());
    let k = s.nrows();
    let smax = (0..k).map(|i| s[i]).fold(0.0, f64::max);
    let w: Vec<f64> = (0..k).map(|i| phi(s[i], smax)).collect();
    Ok(Array2::from_shape_fn((c, r), |(i, j)| {
        (0..k).map(|q| v[(i, q)] * w[q] * u[(j, q)]).sum()
    }))
}

/// Truncated-SVD pseudo-inverse: singular values below `threshold * s_max`
/// are discarded (e.g. 0.2 for oSVD-like regularisation, Østergaard 1996).
pub fn tsvd_inverse(m: &Array2<f64>, threshold: f64) -> Result<Array2<f64>> {
    if !(0.0..1.0).contains(&threshold) {
        return Err(OsipyError::data(
            "TSVD threshold",
            threshold.to_string(),
            "a fraction in [0, 1)",
        ));
    }
    filtered_inverse(m, |s, smax| {
        if s > threshold * smax && s > 0.0 {
            1.0 / s
        } else {
            0.0
        }
    })
}

/// Tikhonov-regularised pseudo-inverse with filter `s / (s^2 + (lambda s_max)^2)`;
/// `lambda` is relative to the largest singular value.
pub fn tikhonov_inverse(m: &Array2<f64>, lambda: f64) -> Result<Array2<f64>> {
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(OsipyError::data(
            "Tikhonov lambda",
            lambda.to_string(),
            "a non-negative number, e.g. 0.1",
        ));
    }
    filtered_inverse(m, |s, smax| {
        let l = lambda * smax;
        if s == 0.0 && l == 0.0 {
            0.0
        } else {
            s / (s * s + l * l)
        }
    })
}

/// [`fft_convolve`] on a time grid `t`, checked to be uniform (the error
/// points to [`piecewise_linear`] for other grids).
pub fn fft_on_grid(t: &[f64], a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_grid(t, "first function", a)?;
    check_grid(t, "second function", b)?;
    let dt = t[1] - t[0];
    if let Some(w) = t
        .windows(2)
        .find(|w| ((w[1] - w[0]) - dt).abs() > 1e-9 * dt.abs().max(1.0))
    {
        return Err(OsipyError::data(
            "time grid for FFT convolution",
            format!("a step of {} s where the first step is {dt} s", w[1] - w[0]),
            "a uniform grid; use piecewise_linear for non-uniform grids",
        ));
    }
    fft_convolve(a, b, dt)
}
