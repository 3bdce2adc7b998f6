//! Quadrature, Legendre polynomials and the Bessel-function roots the
//! restricted compartments need, computed once per process.

use std::sync::OnceLock;

/// Gauss-Legendre nodes and weights on [0, 1] (`n` points), by Newton's
/// iteration on P_n (Golub & Welsch's nodes; Abramowitz & Stegun 25.4.29).
pub fn gauss_legendre_01(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n {
        // Tricomi's first guess, then Newton.
        let mut t = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (p, d) = legendre_and_derivative(n, t);
            dp = d;
            let step = p / d;
            t -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        let (_, d) = legendre_and_derivative(n, t);
        dp = if d.is_finite() { d } else { dp };
        // Map [-1, 1] to [0, 1].
        x[i] = 0.5 * (1.0 - t);
        w[i] = 1.0 / ((1.0 - t * t) * dp * dp);
    }
    (x, w)
}

/// P_n(t) and P_n'(t) by the three-term recurrence.
fn legendre_and_derivative(n: usize, t: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, t);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let k = k as f64;
        let p2 = ((2.0 * k - 1.0) * t * p1 - (k - 1.0) * p0) / k;
        p0 = p1;
        p1 = p2;
    }
    let n = n as f64;
    (p1, n * (t * p1 - p0) / (t * t - 1.0))
}

/// Even Legendre polynomials P_0, P_2, ..., P_{2(N-1)} at `t`, generic over
/// the number type (the orientation enters through `t`).
pub fn even_legendre<T: osipy_fitting::dual::Num, const N: usize>(t: T, out: &mut [T; N]) {
    let (mut p0, mut p1) = (T::c(1.0), t);
    out[0] = p0;
    let mut k = 1usize;
    while k < 2 * (N - 1) {
        let kk = (k + 1) as f64;
        let p2 = (T::c(2.0 * kk - 1.0) * t * p1 - T::c(kk - 1.0) * p0) / T::c(kk);
        p0 = p1;
        p1 = p2;
        k += 1;
        if k % 2 == 0 {
            out[k / 2] = p1;
        }
    }
}

/// Roots x_m of J1'(x) = 0 (cylinder, van Gelderen 1994): 1.8412, 5.3314...
pub fn cylinder_roots() -> &'static [f64] {
    static ROOTS: OnceLock<Vec<f64>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let d = |x: f64| puruspe::Jn(0, x) - puruspe::Jn(1, x) / x;
        roots_of(d, N_ROOTS)
    })
}

/// Roots x_m of j1'(x) = 0, the spherical Bessel function's derivative
/// (sphere, Murday & Cotts 1968): 2.0816, 5.9404...
pub fn sphere_roots() -> &'static [f64] {
    static ROOTS: OnceLock<Vec<f64>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let d = |x: f64| {
            let (s, c) = x.sin_cos();
            2.0 * c / (x * x) - 2.0 * s / (x * x * x) + s / x
        };
        roots_of(d, N_ROOTS)
    })
}

/// Terms kept in the GPD sums; the m-th term falls as x_m^-8, so the 50th is
/// below 1e-10 of the first.
pub const N_ROOTS: usize = 50;

/// The first `n` positive roots of `f`, bracketed on a 0.05 grid from 0.5
/// and refined by bisection to machine precision.
fn roots_of(f: impl Fn(f64) -> f64, n: usize) -> Vec<f64> {
    let mut roots = Vec::with_capacity(n);
    let mut a = 0.5;
    let mut fa = f(a);
    while roots.len() < n {
        let b = a + 0.05;
        let fb = f(b);
        if fa.signum() != fb.signum() {
            let (mut lo, mut hi, mut flo) = (a, b, fa);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                let fm = f(mid);
                if fm.signum() == flo.signum() {
                    lo = mid;
                    flo = fm;
                } else {
                    hi = mid;
                }
                if hi - lo < 1e-15 * hi {
                    break;
                }
            }
            roots.push(0.5 * (lo + hi));
        }
        a = b;
        fa = fb;
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        let (x, w) = gauss_legendre_01(8);
        // Exact for degree <= 15: the integral of t^k over [0, 1] is 1 / (k + 1).
        for k in 0..=15 {
            let s: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(k)).sum();
            assert!((s - 1.0 / (k as f64 + 1.0)).abs() < 1e-14, "k = {k}: {s}");
        }
    }

    #[test]
    fn even_legendre_matches_closed_forms() {
        let t = 0.3f64;
        let mut p = [0.0; 4];
        even_legendre(t, &mut p);
        assert!((p[1] - 0.5 * (3.0 * t * t - 1.0)).abs() < 1e-15);
        assert!((p[2] - (35.0 * t.powi(4) - 30.0 * t * t + 3.0) / 8.0).abs() < 1e-15);
        let p6 = (231.0 * t.powi(6) - 315.0 * t.powi(4) + 105.0 * t * t - 5.0) / 16.0;
        assert!((p[3] - p6).abs() < 1e-15);
    }

    #[test]
    fn bessel_roots_match_tables() {
        // Abramowitz & Stegun table 9.5 (j'_{1,m}); spherical: j'_{1,m}.
        let c = cylinder_roots();
        for (r, t) in c
            .iter()
            .zip([1.841_183_78, 5.331_442_77, 8.536_316_37, 11.706_004_9])
        {
            assert!((r - t).abs() < 1e-7, "{r} vs {t}");
        }
        let s = sphere_roots();
        for (r, t) in s
            .iter()
            .zip([2.081_575_98, 5.940_369_99, 9.205_840_14, 12.404_445_0])
        {
            assert!((r - t).abs() < 1e-7, "{r} vs {t}");
        }
        assert_eq!(c.len(), N_ROOTS);
    }
}
