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
    for n in 1..2 * (N - 1) {
        let (a, b) = recurrence(n);
        let p2 = T::c(a) * t * p1 - T::c(b) * p0;
        p0 = p1;
        p1 = p2;
        if (n + 1) % 2 == 0 {
            out[n.div_ceil(2)] = p1;
        }
    }
}

/// ((2n + 1) / (n + 1), n / (n + 1)): P_(n+1) = a t P_n - b P_(n-1), from a
/// table (divisions cost more than the rest of the recurrence).
#[inline]
fn recurrence(n: usize) -> (f64, f64) {
    const LEN: usize = 64;
    const TABLE: [(f64, f64); LEN] = {
        let mut t = [(0.0, 0.0); LEN];
        let mut n = 0;
        while n < LEN {
            t[n] = ((2 * n + 1) as f64 / (n + 1) as f64, n as f64 / (n + 1) as f64);
            n += 1;
        }
        t
    };
    if n < LEN {
        TABLE[n]
    } else {
        let nf = n as f64;
        ((2.0 * nf + 1.0) / (nf + 1.0), nf / (nf + 1.0))
    }
}

/// Even Legendre polynomials P_0, P_2, ... at `t` and their derivatives,
/// by the recurrences (n + 1) P_(n+1) = (2n + 1) t P_n - n P_(n-1) and
/// P'_(n+1) = P'_(n-1) + (2n + 1) P_n (no division: exact at t = +-1).
pub fn even_legendre_with_derivative<const N: usize>(t: f64, p: &mut [f64; N], dp: &mut [f64; N]) {
    // (P_(n-1), P_n) and (P'_(n-1), P'_n), starting at n = 1.
    let (mut p0, mut p1) = (1.0, t);
    let (mut d0, mut d1) = (0.0, 1.0);
    p[0] = 1.0;
    dp[0] = 0.0;
    for n in 1..2 * (N - 1) {
        let (a, b) = recurrence(n);
        let p2 = a * t * p1 - b * p0;
        let d2 = d0 + (2 * n + 1) as f64 * p1;
        p0 = p1;
        p1 = p2;
        d0 = d1;
        d1 = d2;
        if (n + 1) % 2 == 0 {
            p[n.div_ceil(2)] = p1;
            dp[n.div_ceil(2)] = d1;
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

/// One term of a Callaghan series: order n, root alpha of the Bessel
/// function's derivative (J_n' for the cylinder, j_n' for the sphere) and
/// its weight (cylinder: 4 for n = 0, 8 alpha^2 / (alpha^2 - n^2) else;
/// sphere: 6 (2n + 1) alpha^2 / (alpha^2 - n (n + 1))). Callaghan 1995.
#[derive(Debug, Clone, Copy)]
pub struct CallaghanTerm {
    /// Order n.
    pub n: u32,
    /// The root alpha.
    pub alpha: f64,
    /// The weight.
    pub weight: f64,
    /// The highest n of this and every earlier term (terms sorted by alpha).
    pub n_max: u32,
}

/// Roots kept in the Callaghan series: alpha below this, n up to
/// [`CALLAGHAN_N_MAX`]. With x = 2 pi q R up to 20 the omitted terms sum to
/// less than 1e-4 (tested: the series is complete, sum = 1, at zero
/// diffusion time).
pub const CALLAGHAN_ALPHA_MAX: f64 = 100.0;
/// Highest Bessel order of the Callaghan series.
pub const CALLAGHAN_N_MAX: u32 = 50;

fn callaghan_table(
    derivative: impl Fn(u32, f64) -> f64,
    weight: impl Fn(u32, f64) -> f64,
) -> Vec<CallaghanTerm> {
    let mut t = Vec::new();
    for n in 0..=CALLAGHAN_N_MAX {
        for alpha in roots_below(|x| derivative(n, x), CALLAGHAN_ALPHA_MAX) {
            t.push(CallaghanTerm {
                n,
                alpha,
                weight: weight(n, alpha),
                n_max: 0,
            });
        }
    }
    t.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
    let mut m = 0;
    for x in &mut t {
        m = m.max(x.n);
        x.n_max = m;
    }
    t
}

/// J_n'(x) (integer n).
pub fn bessel_j_derivative(n: u32, x: f64) -> f64 {
    if n == 0 {
        -puruspe::Jn(1, x)
    } else {
        0.5 * (puruspe::Jn(n - 1, x) - puruspe::Jn(n + 1, x))
    }
}

/// The cylinder's Callaghan terms (positive roots of J_n'), by root.
pub fn callaghan_cylinder_terms() -> &'static [CallaghanTerm] {
    static T: OnceLock<Vec<CallaghanTerm>> = OnceLock::new();
    T.get_or_init(|| {
        callaghan_table(bessel_j_derivative, |n, a| {
            if n == 0 {
                4.0
            } else {
                8.0 * a * a / (a * a - (n * n) as f64)
            }
        })
    })
}

/// The sphere's Callaghan terms (positive roots of j_n'), by root.
pub fn callaghan_sphere_terms() -> &'static [CallaghanTerm] {
    static T: OnceLock<Vec<CallaghanTerm>> = OnceLock::new();
    T.get_or_init(|| {
        callaghan_table(
            |n, x| {
                let mut j = [0.0; CALLAGHAN_N_MAX as usize + 2];
                spherical_bessel(x, &mut j[..n as usize + 2]);
                spherical_derivative(n, x, &j)
            },
            |n, a| {
                let nn = (n * (n + 1)) as f64;
                6.0 * (2 * n + 1) as f64 * a * a / (a * a - nn)
            },
        )
    })
}

/// Spherical Bessel functions j_0(x) ... j_{len-1}(x), x >= 0: upward
/// recurrence where it is stable (x > len), else Miller's downward
/// recurrence normalised by j_0 or j_1 (Abramowitz & Stegun 10.1.19).
pub fn spherical_bessel(x: f64, out: &mut [f64]) {
    let len = out.len();
    if len == 0 {
        return;
    }
    if x < 1e-8 {
        out.iter_mut().for_each(|v| *v = 0.0);
        out[0] = 1.0;
        return;
    }
    let (s, c) = x.sin_cos();
    let j0 = s / x;
    let j1 = s / (x * x) - c / x;
    if x > len as f64 {
        out[0] = j0;
        if len > 1 {
            out[1] = j1;
        }
        for n in 1..len.saturating_sub(1) {
            out[n + 1] = (2 * n + 1) as f64 / x * out[n] - out[n - 1];
        }
        return;
    }
    let start = len + 20 + x as usize;
    let (mut f_next, mut f) = (0.0, 1e-300);
    for n in (1..=start).rev() {
        let f_prev = (2 * n + 1) as f64 / x * f - f_next;
        f_next = f;
        f = f_prev;
        if n - 1 < len {
            out[n - 1] = f;
        }
        if f.abs() > 1e250 {
            // Rescale everything computed so far.
            f /= 1e250;
            f_next /= 1e250;
            for v in out.iter_mut().skip(n - 1) {
                *v /= 1e250;
            }
        }
    }
    // Normalise by whichever of j_0, j_1 is further from a zero.
    let scale = if j0.abs() >= j1.abs() || len < 2 {
        j0 / out[0]
    } else {
        j1 / out[1]
    };
    out.iter_mut().for_each(|v| *v *= scale);
}

/// j_n'(x) from j_0 ... j_{n+1} at x > 0.
pub fn spherical_derivative(n: u32, x: f64, j: &[f64]) -> f64 {
    let n = n as usize;
    if n == 0 {
        -j[1]
    } else {
        j[n - 1] - (n + 1) as f64 / x * j[n]
    }
}

/// Every positive root of `f` below `max`, bracketed on a 0.02 grid from
/// 0.02 and refined by bisection.
fn roots_below(f: impl Fn(f64) -> f64, max: f64) -> Vec<f64> {
    let mut roots = Vec::new();
    let mut a = 0.02;
    let mut fa = f(a);
    while a < max {
        let b = a + 0.02;
        let fb = f(b);
        if fa != 0.0 && fb != 0.0 && fa.signum() != fb.signum() {
            roots.push(bisect(&f, a, b, fa));
        }
        a = b;
        fa = fb;
    }
    roots.retain(|&r| r < max);
    roots
}

fn bisect(f: &impl Fn(f64) -> f64, a: f64, b: f64, fa: f64) -> f64 {
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
    0.5 * (lo + hi)
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
            roots.push(bisect(&f, a, b, fa));
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
    fn legendre_derivatives_match_finite_differences() {
        for t in [-1.0, -0.7, 0.0, 0.33, 0.9, 1.0] {
            let (mut p, mut dp) = ([0.0; 11], [0.0; 11]);
            even_legendre_with_derivative(t, &mut p, &mut dp);
            let mut q = [0.0; 11];
            even_legendre(t, &mut q);
            let h = 1e-6;
            let (mut up, mut dn) = ([0.0; 11], [0.0; 11]);
            even_legendre(t + h, &mut up);
            even_legendre(t - h, &mut dn);
            for l in 0..11 {
                assert!((p[l] - q[l]).abs() < 1e-13, "P_{}({t})", 2 * l);
                let fd = (up[l] - dn[l]) / (2.0 * h);
                assert!(
                    (dp[l] - fd).abs() < 1e-5 * fd.abs().max(1.0),
                    "P'_{}({t}): {} vs {fd}",
                    2 * l,
                    dp[l]
                );
            }
            // P'_l(1) = l (l + 1) / 2.
            if t == 1.0 {
                for l in 0..11 {
                    assert!((dp[l] - (2 * l * (2 * l + 1)) as f64 / 2.0).abs() < 1e-9);
                }
            }
        }
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

    #[test]
    fn spherical_bessel_matches_closed_forms() {
        for x in [0.01, 0.3, 1.0, 2.5, 7.0, 19.0, 45.0] {
            let mut j = [0.0; 6];
            spherical_bessel(x, &mut j);
            let (s, c) = (f64::sin(x), f64::cos(x));
            let j0 = s / x;
            let j1 = s / (x * x) - c / x;
            let j2 = (3.0 / (x * x) - 1.0) * s / x - 3.0 * c / (x * x);
            let j3 = (15.0 / x.powi(3) - 6.0 / x) * s / x - (15.0 / (x * x) - 1.0) * c / x;
            for (n, closed) in [j0, j1, j2, j3].into_iter().enumerate() {
                // The closed forms cancel at small x: there the series
                // x^n / (2n+1)!! (1 - x^2 / (2 (2n+3)) + x^4 / (8 (2n+3) (2n+5))),
                // A&S 10.1.2, below x = 0.05.
                let want = if x < 0.05 {
                    let dfact: f64 = (1..=n).map(|k| (2 * k + 1) as f64).product();
                    let (a, b) = ((2 * n + 3) as f64, (2 * n + 5) as f64);
                    x.powi(n as i32) / dfact * (1.0 - x * x / (2.0 * a) + x.powi(4) / (8.0 * a * b))
                } else {
                    closed
                };
                // (Closed forms below x = 1 lose up to 1e-9 to cancellation.)
                let tol = if x < 1.0 { 1e-8 } else { 1e-11 };
                assert!(
                    (j[n] - want).abs() < tol * want.abs(),
                    "j_{n}({x}) = {} vs {want}",
                    j[n]
                );
            }
        }
    }

    #[test]
    fn callaghan_roots_match_tables() {
        // J_n' roots (Abramowitz & Stegun table 9.5): j'_{0,1} = 3.8317,
        // j'_{1,1} = 1.8412, j'_{2,1} = 3.0542; spherical j_n' roots:
        // a'_{0,1} = 4.4934 (= first zero of j_1), a'_{1,1} = 2.0816, a'_{2,1} = 3.3421.
        let find = |t: &[CallaghanTerm], n: u32| t.iter().find(|x| x.n == n).map(|x| x.alpha).unwrap();
        let c = callaghan_cylinder_terms();
        for (n, want) in [(0, 3.831_705_97), (1, 1.841_183_78), (2, 3.054_236_93)] {
            assert!((find(c, n) - want).abs() < 1e-7, "J_{n}'");
        }
        let s = callaghan_sphere_terms();
        for (n, want) in [(0, 4.493_409_46), (1, 2.081_575_98), (2, 3.342_093_67)] {
            assert!(
                (find(s, n) - want).abs() < 1e-7,
                "j_{n}': {} vs {want}",
                find(s, n)
            );
        }
        assert!(c
            .windows(2)
            .all(|w| w[0].alpha <= w[1].alpha && w[0].n_max <= w[1].n_max));
    }
}
