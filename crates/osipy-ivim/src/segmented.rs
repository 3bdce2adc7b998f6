//! The per-voxel segmented solver (both steps in one pass, no allocation).
//!
//! Each step is a separable least-squares problem: linear in the amplitudes,
//! non-linear in one rate. For a given rate the optimal amplitudes solve a
//! small (box- or polygon-constrained) linear least-squares problem, so the
//! cost is minimised over the rate alone (variable projection, Golub and
//! Pereyra, SIAM J. Numer. Anal. 1973). The rate is refined by Gauss-Newton
//! on that profile with Kaufman's Jacobian (BIT 1975), a step halved until
//! the exact profile cost decreases and projected onto the bounds. The
//! profile's gradient is exact even when an amplitude constraint is active
//! (it is the partial derivative of the cost at the optimal amplitudes), so
//! every accepted step is a descent step.
//!
//! * Step 1: `y = A e^{-bD}` on b >= `b_threshold`, `A >= 0`, started from the
//!   log-linear fit weighted by `y^2` (the weights that make it approximate
//!   least squares on the signal).
//! * Step 2, D held: `y = A e^{-bD} + c e^{-bD*}` on all b-values, with
//!   `S0 = A + c` and `f = c / S0` inside their bounds (linear constraints on
//!   `(A, c)`), started from the best of a logarithmic D* grid whose
//!   exponentials are shared by all voxels. Without `fit_f`, `A` and `c` are
//!   the step-1 intercept and `S0 f` with S0 the measured b = 0 signal.
//!
//! Standard errors come from `(J'J)^-1 s^2` with `s^2 = SSR / (n - p)`, in
//! the (S0, f, D*) parametrisation, for fitted parameters not on a bound (the
//! convention of the generic LM engine, which the tests compare against).

use osipy_core::QualityCode;
use osipy_fitting::LmSettings;

/// Output record per voxel: S0, f, D, D*, their four standard errors, R^2,
/// status code.
pub(crate) const REC: usize = 10;

/// Problem set-up shared by all voxels.
pub(crate) struct Segmented<'a> {
    /// Distinct b-values (s/mm^2), ascending, b[0] = 0.
    b: &'a [f64],
    /// Indices of the b-values at or above the threshold.
    high: &'a [usize],
    /// Bounds of S0, f, D, D* (same order as the bi-exponential model).
    bounds: [(f64, f64); 4],
    /// Fit S0 and f in step 2 (else from step 1 and the b = 0 signal).
    fit_f: bool,
    /// Iteration limit and tolerances.
    lm: LmSettings,
    /// D* start grid (mm^2/s).
    grid: Vec<f64>,
    /// `e^{-b_i D*_g}` at index `i * stride + g` (b-major), `stride` being
    /// the grid length rounded up to a multiple of 4 (padding is zero).
    egrid_t: Vec<f64>,
    /// `sum_i e^{-2 b_i D*_g}` per grid point (`stride` long).
    a22grid: Vec<f64>,
    /// Exponentials over all b-values and over the high ones.
    plan_all: ExpPlan,
    plan_high: ExpPlan,
}

/// Evaluates `e^{-b_i x}` for ascending b-values with one exponential per
/// *distinct gap* between consecutive b-values, chaining
/// `e^{-b_i x} = e^{-b_(i-1) x} e^{-(b_i - b_(i-1)) x}` (b-value schemes
/// repeat their steps: 12 typical b-values have about 5 distinct gaps). Each
/// product adds at most one rounding, so 12 terms stay within ~1e-15 relative.
pub(crate) struct ExpPlan {
    first: f64,
    gaps: Vec<f64>,
    step_gap: Vec<usize>,
}

impl ExpPlan {
    /// Plan for ascending b-values.
    pub fn new(b: &[f64]) -> ExpPlan {
        let mut gaps: Vec<f64> = Vec::new();
        let mut step_gap = Vec::new();
        for w in b.windows(2) {
            let g = w[1] - w[0];
            let k = gaps.iter().position(|x| *x == g).unwrap_or_else(|| {
                gaps.push(g);
                gaps.len() - 1
            });
            step_gap.push(k);
        }
        ExpPlan {
            first: b.first().copied().unwrap_or(0.0),
            gaps,
            step_gap,
        }
    }

    /// Writes `e^{-b_i x}` to `out` (one per b-value); `q` is scratch with a
    /// slot per distinct gap (the number of b-values is always enough).
    #[inline]
    pub fn eval(&self, x: f64, q: &mut [f64], out: &mut [f64]) {
        for (qk, g) in q.iter_mut().zip(&self.gaps) {
            *qk = (-g * x).exp();
        }
        let mut e = (-self.first * x).exp();
        out[0] = e;
        for (o, k) in out[1..].iter_mut().zip(&self.step_gap) {
            e *= q[*k];
            *o = e;
        }
    }
}

/// Per-worker scratch memory.
pub(crate) struct Scratch {
    q: Vec<f64>,
    e1: Vec<f64>,
    e2: Vec<f64>,
    g12: Vec<f64>,
    gcost: Vec<f64>,
    gr2: Vec<f64>,
}

impl Scratch {
    /// Scratch for `nb` distinct b-values and a grid stride of `ng`.
    fn new(nb: usize, ng: usize) -> Scratch {
        Scratch {
            q: vec![0.0; nb],
            e1: vec![0.0; nb],
            e2: vec![0.0; nb],
            g12: vec![0.0; ng],
            gr2: vec![0.0; ng],
            gcost: vec![0.0; ng],
        }
    }
}

/// Linear constraint `a1 A + a2 c <= beta` on the step-2 amplitudes.
type Cons = (f64, f64, f64);

/// Minimises `x'Mx - 2 r'x` over `{x : a.x <= beta for all constraints}`
/// (convex, 2-D): the unconstrained minimum if feasible, else the best
/// feasible point with one or two constraints active (KKT enumeration).
/// Returns `(A, c, any constraint active)`, or `None` if nothing is feasible.
fn qp2(m: [f64; 3], r: [f64; 2], cons: &[Cons]) -> Option<(f64, f64, bool)> {
    let [m11, m12, m22] = m;
    let q = |x: f64, y: f64| m11 * x * x + 2.0 * m12 * x * y + m22 * y * y - 2.0 * (r[0] * x + r[1] * y);
    let tol = |beta: f64| 1e-12 * (1.0 + beta.abs());
    let feasible = |x: f64, y: f64, skip: [usize; 2]| {
        cons.iter()
            .enumerate()
            .all(|(k, (a1, a2, beta))| skip.contains(&k) || a1 * x + a2 * y <= beta + tol(*beta))
    };
    if let Some((x, y)) = unconstrained(m, r, cons) {
        return Some((x, y, false));
    }
    let mut best: Option<(f64, f64, f64)> = None;
    let mut keep = |x: f64, y: f64| {
        let v = q(x, y);
        if x.is_finite() && y.is_finite() && best.is_none_or(|b| v < b.0) {
            best = Some((v, x, y));
        }
    };
    for (k, &(a1, a2, beta)) in cons.iter().enumerate() {
        // On the line a.x = beta: x = x0 + t d with d along the line.
        let n2 = a1 * a1 + a2 * a2;
        let (x0, y0) = (beta * a1 / n2, beta * a2 / n2);
        let (dx, dy) = (-a2, a1);
        let dmd = m11 * dx * dx + 2.0 * m12 * dx * dy + m22 * dy * dy;
        let t = if dmd > 0.0 {
            (r[0] * dx + r[1] * dy - (m11 * x0 * dx + m12 * (x0 * dy + y0 * dx) + m22 * y0 * dy)) / dmd
        } else {
            0.0
        };
        let (x, y) = (x0 + t * dx, y0 + t * dy);
        if feasible(x, y, [k, usize::MAX]) {
            keep(x, y);
        }
        for (l, &(b1, b2, gamma)) in cons.iter().enumerate().skip(k + 1) {
            let d = a1 * b2 - a2 * b1;
            if d.abs() > 1e-14 {
                let x = (beta * b2 - a2 * gamma) / d;
                let y = (a1 * gamma - beta * b1) / d;
                if feasible(x, y, [k, l]) {
                    keep(x, y);
                }
            }
        }
    }
    best.map(|(_, x, y)| (x, y, true))
}

/// The unconstrained minimiser of [`qp2`]'s problem if it is feasible.
#[inline]
fn unconstrained(m: [f64; 3], r: [f64; 2], cons: &[Cons]) -> Option<(f64, f64)> {
    let [m11, m12, m22] = m;
    let det = m11 * m22 - m12 * m12;
    if !(det > 1e-14 * m11 * m22) {
        return None;
    }
    let x = (m22 * r[0] - m12 * r[1]) / det;
    let y = (m11 * r[1] - m12 * r[0]) / det;
    cons.iter()
        .all(|(a1, a2, beta)| a1 * x + a2 * y <= beta + 1e-12 * (1.0 + beta.abs()))
        .then_some((x, y))
}

/// Diagonal of the inverse of the symmetric matrix `m` restricted to the
/// rows and columns marked `free` (NaN elsewhere, and everywhere if that
/// sub-matrix is singular).
fn inverse_diagonal(m: [[f64; 3]; 3], free: [bool; 3]) -> [f64; 3] {
    let (mut idx, mut k) = ([0usize; 3], 0);
    for j in (0..3).filter(|&j| free[j]) {
        idx[k] = j;
        k += 1;
    }
    let mut out = [f64::NAN; 3];
    let g = |r: usize, q: usize| m[idx[r]][idx[q]];
    match k {
        1 => out[idx[0]] = 1.0 / g(0, 0),
        2 => {
            let det = g(0, 0) * g(1, 1) - g(0, 1) * g(0, 1);
            if det > 0.0 {
                out[idx[0]] = g(1, 1) / det;
                out[idx[1]] = g(0, 0) / det;
            }
        }
        3 => {
            let c00 = g(1, 1) * g(2, 2) - g(1, 2) * g(1, 2);
            let c11 = g(0, 0) * g(2, 2) - g(0, 2) * g(0, 2);
            let c22 = g(0, 0) * g(1, 1) - g(0, 1) * g(0, 1);
            let det = g(0, 0) * c00
                + g(0, 1) * (g(1, 2) * g(0, 2) - g(0, 1) * g(2, 2))
                + g(0, 2) * (g(0, 1) * g(1, 2) - g(1, 1) * g(0, 2));
            if det > 0.0 {
                out = [c00 / det, c11 / det, c22 / det];
            }
        }
        _ => {}
    }
    out
}

/// Result of a one-rate refinement.
struct Refined {
    rate: f64,
    status: QualityCode,
}

impl<'a> Segmented<'a> {
    /// Set-up for distinct ascending b-values `b` (b[0] = 0), the indices
    /// `high` of those at or above the threshold, finite D and D* bounds.
    pub fn new(
        b: &'a [f64],
        high: &'a [usize],
        bounds: [(f64, f64); 4],
        fit_f: bool,
        lm: LmSettings,
    ) -> Self {
        // 24 log-spaced D* values across the bounds (from 1/1000 of the
        // upper bound when the lower one is 0).
        let (hi, lo) = (bounds[3].1, bounds[3].0);
        let lo = if lo > 0.0 { lo } else { (hi * 1e-3).min(hi) };
        let grid: Vec<f64> = (0..24).map(|i| lo * (hi / lo).powf(i as f64 / 23.0)).collect();
        let nb = b.len();
        let stride = grid.len().div_ceil(4) * 4;
        let mut egrid_t = vec![0.0; nb * stride];
        for (i, bi) in b.iter().enumerate() {
            for (g, ds) in grid.iter().enumerate() {
                egrid_t[i * stride + g] = (-bi * ds).exp();
            }
        }
        let a22grid = (0..stride)
            .map(|g| (0..nb).map(|i| egrid_t[i * stride + g].powi(2)).sum())
            .collect();
        let hb: Vec<f64> = high.iter().map(|&k| b[k]).collect();
        Segmented {
            b,
            high,
            bounds,
            fit_f,
            lm,
            grid,
            egrid_t,
            a22grid,
            plan_all: ExpPlan::new(b),
            plan_high: ExpPlan::new(&hb),
        }
    }

    /// Scratch memory for one worker.
    pub fn scratch(&self) -> Scratch {
        Scratch::new(self.b.len(), self.a22grid.len())
    }

    /// Fits one voxel's prepared samples `y` (one per distinct b-value) and
    /// writes the [`REC`] record to `out`.
    pub fn voxel(&self, y: &[f64], s: &mut Scratch, out: &mut [f64]) {
        out[..9].fill(f64::NAN);
        let status = self.voxel_inner(y, s, out);
        if !status.is_valid() {
            out[..9].fill(f64::NAN);
        }
        out[9] = status.code() as f64;
    }

    fn voxel_inner(&self, y: &[f64], s: &mut Scratch, out: &mut [f64]) -> QualityCode {
        let (b, nb) = (self.b, self.b.len());
        let [s0b, fb, _, dsb] = self.bounds;
        // ---- Step 1: A e^{-bD} on the high b-values.
        let (a1, d, st1, se_a1, se_d) = match self.step1(y, &mut s.e1, &mut s.q) {
            Ok(x) => x,
            Err(q) => return q,
        };
        self.plan_all.eval(d, &mut s.q, &mut s.e1);
        // ---- Step 2: amplitudes and D* with D held.
        let y0 = y[0];
        let (fixed_a, fixed_c) = {
            let f1 = (1.0 - a1 / y0).clamp(fb.0, fb.1);
            (y0 * (1.0 - f1), y0 * f1)
        };
        // Constraints on (A, c): S0 = A + c in [lo, hi]; f = c / S0 in [lo, hi].
        let mut cons = [(0.0, 0.0, 0.0); 4];
        let mut nc = 0;
        let mut push = |c: Cons| {
            if c.2.is_finite() {
                cons[nc] = c;
                nc += 1;
            }
        };
        push((-1.0, -1.0, -s0b.0));
        push((1.0, 1.0, s0b.1));
        push((fb.0, fb.0 - 1.0, 0.0));
        push((-fb.1, 1.0 - fb.1, 0.0));
        let cons = &cons[..nc];
        let (a11, r1) = (dot(&s.e1, &s.e1), dot(&s.e1, y));
        // Amplitudes for given e2 sums; (A, c, constraint active).
        let amps = |a12: f64, a22: f64, r2: f64| -> Option<(f64, f64, bool)> {
            if self.fit_f {
                qp2([a11, a12, a22], [r1, r2], cons)
            } else {
                Some((fixed_a, fixed_c, false))
            }
        };
        // Grid start. e1 . e_g and y . e_g for blocks of four grid points at once, kept
        // in registers: the grid is stored b-major, padded to a multiple of 4.
        let ng = self.grid.len();
        let stride = self.a22grid.len();
        for g0 in (0..stride).step_by(4) {
            let (mut a4, mut r4) = ([0.0; 4], [0.0; 4]);
            for i in 0..nb {
                let row = &self.egrid_t[i * stride + g0..i * stride + g0 + 4];
                let (e, yi) = (s.e1[i], y[i]);
                for k in 0..4 {
                    a4[k] += e * row[k];
                    r4[k] += yi * row[k];
                }
            }
            s.g12[g0..g0 + 4].copy_from_slice(&a4);
            s.gr2[g0..g0 + 4].copy_from_slice(&r4);
        }
        // The quadratic form gives each grid cost without residuals. Ranking
        // uses grid points whose unconstrained amplitudes are feasible (the
        // constrained cost is never lower than the unconstrained one); only
        // if there is none are the constrained amplitudes solved everywhere.
        let yy = dot(y, y);
        let mut best = (f64::INFINITY, 0usize);
        for constrained in [false, true] {
            for g in 0..ng {
                s.gcost[g] = f64::INFINITY;
                let (a12, a22, r2) = (s.g12[g], self.a22grid[g], s.gr2[g]);
                let sol = if !self.fit_f {
                    Some((fixed_a, fixed_c))
                } else if constrained {
                    qp2([a11, a12, a22], [r1, r2], cons).map(|x| (x.0, x.1))
                } else {
                    unconstrained([a11, a12, a22], [r1, r2], cons)
                };
                if let Some((a, c)) = sol {
                    let cost = yy - 2.0 * (a * r1 + c * r2) + a * a * a11 + 2.0 * a * c * a12 + c * c * a22;
                    s.gcost[g] = cost;
                    if cost < best.0 {
                        best = (cost, g);
                    }
                }
            }
            if best.0.is_finite() || !self.fit_f {
                break;
            }
        }
        if !best.0.is_finite() {
            return QualityCode::ModelFailure;
        }
        // Refinement of D* on the profile. `e2` always holds e^{-b D*} at the
        // last evaluated D*; `at` is that D*.
        let e1 = &s.e1;
        let e2 = &mut s.e2;
        let q = &mut s.q;
        let profile = |ds: f64, e2: &mut [f64], q: &mut [f64]| -> Option<(f64, f64, f64, bool)> {
            self.plan_all.eval(ds, q, e2);
            let (a, c, active) = amps(dot(e1, e2), dot(e2, e2), dot(y, e2))?;
            let cost: f64 = (0..nb).map(|i| (y[i] - a * e1[i] - c * e2[i]).powi(2)).sum();
            Some((cost, a, c, active))
        };
        // Start at the vertex of the parabola through the best grid point and
        // its neighbours (in log D*, where the grid is uniform), kept between
        // the neighbours: the refinement then needs fewer steps.
        let g = best.1;
        let mut ds = self.grid[g];
        if g > 0 && g + 1 < ng {
            let (cm, cp) = (s.gcost[g - 1], s.gcost[g + 1]);
            let den = cm - 2.0 * best.0 + cp;
            if cm.is_finite() && cp.is_finite() && den > 0.0 {
                let t = (0.5 * (cm - cp) / den).clamp(-1.0, 1.0);
                ds = (ds * (self.grid[g + 1] / ds).powf(t)).clamp(dsb.0, dsb.1);
            }
        }
        let Some(mut cur) = profile(ds, e2, q) else {
            return QualityCode::ModelFailure;
        };
        let mut at = ds;
        let mut st2 = QualityCode::MaxIterations;
        if !(cur.2 > 0.0) {
            // No perfusion signal: D* is not identifiable; report its lower bound.
            ds = dsb.0;
            at = ds;
            cur = match profile(ds, e2, q) {
                Some(p) => p,
                None => return QualityCode::ModelFailure,
            };
            st2 = QualityCode::AtBound;
        } else {
            for _ in 0..self.lm.max_iterations.max(1) {
                let (cost, a, c, _) = cur;
                // Gradient of the profile and its Gauss-Newton curvature.
                let (mut g, mut vv, mut w1, mut w2) = (0.0, 0.0, 0.0, 0.0);
                for i in 0..nb {
                    let v = b[i] * e2[i];
                    g += v * (y[i] - a * e1[i] - c * e2[i]);
                    vv += v * v;
                    w1 += v * e1[i];
                    w2 += v * e2[i];
                }
                let proj = if self.fit_f {
                    let (a12, a22) = (dot(e1, e2), dot(e2, e2));
                    let det = a11 * a22 - a12 * a12;
                    (a22 * w1 * w1 - 2.0 * a12 * w1 * w2 + a11 * w2 * w2) / det
                } else {
                    0.0
                };
                let h = c * (vv - proj).max(1e-3 * vv);
                let full = -g / h;
                let outward = (ds <= dsb.0 && full < 0.0) || (ds >= dsb.1 && full > 0.0);
                if outward || full == 0.0 || cost == 0.0 || !full.is_finite() {
                    st2 = if outward {
                        QualityCode::AtBound
                    } else {
                        QualityCode::Converged
                    };
                    break;
                }
                let mut last = None;
                let r = self.descend(ds, cost, full, dsb, |x| {
                    let p = profile(x, &mut *e2, &mut *q);
                    at = x;
                    last = p;
                    p.map(|p| p.0)
                });
                ds = r.rate;
                if at == ds {
                    if let Some(p) = last {
                        cur = p;
                    }
                } else {
                    at = ds;
                    cur = match profile(ds, e2, q) {
                        Some(p) => p,
                        None => return QualityCode::ModelFailure,
                    };
                }
                if r.status != QualityCode::MaxIterations {
                    st2 = r.status;
                    break;
                }
            }
        }
        debug_assert_eq!(at, ds);
        let (cost, a, c, active) = cur;
        let ssr = cost;
        // ---- Standard errors, in the (S0, f, D*) parametrisation and, as in
        // the generic LM engine, only for fitted parameters not on a bound.
        let mut se = [f64::NAN; 4];
        se[2] = se_d;
        let (s0, f) = (a + c, c / (a + c));
        if !(s0 > 0.0 && f.is_finite() && ssr.is_finite()) {
            return QualityCode::ModelFailure;
        }
        let inside = |x: f64, bd: (f64, f64)| x > bd.0 && x < bd.1;
        let free = [
            self.fit_f && inside(s0, s0b),
            self.fit_f && inside(f, fb),
            inside(ds, dsb),
        ];
        let mut jtj = [[0.0; 3]; 3];
        for i in 0..nb {
            let j = [
                (1.0 - f) * e1[i] + f * e2[i],
                s0 * (e2[i] - e1[i]),
                -s0 * f * b[i] * e2[i],
            ];
            for r in 0..3 {
                for q in 0..3 {
                    jtj[r][q] += j[r] * j[q];
                }
            }
        }
        let n_fit = if self.fit_f { 3.0 } else { 1.0 };
        let dof = nb as f64 - n_fit;
        let s2 = if dof > 0.0 { ssr / dof } else { f64::NAN };
        let var = inverse_diagonal(jtj, free);
        se[0] = (s2 * var[0]).sqrt();
        se[1] = (s2 * var[1]).sqrt();
        se[3] = (s2 * var[2]).sqrt();
        if !self.fit_f {
            // f = 1 - A / S0(b = 0): the standard error of A over S0.
            se[1] = se_a1 / y0;
        }
        // ---- Record.
        let mean = y.iter().sum::<f64>() / nb as f64;
        let sst: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
        out[0] = s0;
        out[1] = f;
        out[2] = d;
        out[3] = ds;
        out[4..8].copy_from_slice(&se);
        out[8] = if sst > 0.0 { 1.0 - ssr / sst } else { 1.0 };
        let at_bound = active || st1 == QualityCode::AtBound || st2 == QualityCode::AtBound;
        match st2 {
            QualityCode::Converged | QualityCode::AtBound if at_bound => QualityCode::AtBound,
            q => q,
        }
    }

    /// Step 1: returns `(A, D, status, SE of A, SE of D)` or the failure code.
    fn step1(
        &self,
        y: &[f64],
        e: &mut [f64],
        q: &mut [f64],
    ) -> Result<(f64, f64, QualityCode, f64, f64), QualityCode> {
        let b = self.b;
        let db = self.bounds[2];
        let hi = self.high;
        // Log-linear start weighted by y^2.
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &k in hi {
            if y[k] > 0.0 {
                let (w, l) = (y[k] * y[k], y[k].ln());
                sw += w;
                sx += w * b[k];
                sy += w * l;
                sxx += w * b[k] * b[k];
                sxy += w * b[k] * l;
            }
        }
        let den = sw * sxx - sx * sx;
        let mut d = if den > 0.0 {
            -(sw * sxy - sx * sy) / den
        } else {
            f64::NAN
        };
        if !d.is_finite() {
            d = 0.5 * (db.0 + db.1);
        }
        d = d.clamp(db.0, db.1);
        // Profile: optimal A >= 0 for a given D and the cost there; fills
        // `e` with e^{-bD} on the high b-values.
        let profile = |d: f64, e: &mut [f64], q: &mut [f64]| -> (f64, f64) {
            self.plan_high.eval(d, q, e);
            let (mut see, mut sye) = (0.0, 0.0);
            for (j, &k) in hi.iter().enumerate() {
                see += e[j] * e[j];
                sye += y[k] * e[j];
            }
            let a = (sye / see).max(0.0);
            let cost = hi
                .iter()
                .enumerate()
                .map(|(j, &k)| (y[k] - a * e[j]).powi(2))
                .sum();
            (a, cost)
        };
        let (mut a, mut cost) = profile(d, e, q);
        if !(a > 0.0) {
            // No positive decay to fit above the threshold.
            return Err(QualityCode::InvalidSignal);
        }
        // Sums over the high b-values at the current `e`.
        let sums = |e: &[f64], a: f64| {
            let (mut see, mut tee, mut uee, mut tr) = (0.0, 0.0, 0.0, 0.0);
            for (j, &k) in hi.iter().enumerate() {
                let be = b[k] * e[j];
                see += e[j] * e[j];
                tee += be * e[j];
                uee += be * be;
                tr += be * (y[k] - a * e[j]);
            }
            (see, tee, uee, tr)
        };
        let mut status = QualityCode::MaxIterations;
        for _ in 0..self.lm.max_iterations.max(1) {
            let (see, tee, uee, tr) = sums(e, a);
            let h = a * (uee - tee * tee / see).max(1e-3 * uee);
            // d(cost)/dD = 2 A sum b e r; step = -gradient / GN curvature.
            let full = -tr / h;
            let outward = (d <= db.0 && full < 0.0) || (d >= db.1 && full > 0.0);
            if outward || full == 0.0 || cost == 0.0 || !full.is_finite() {
                status = if outward {
                    QualityCode::AtBound
                } else {
                    QualityCode::Converged
                };
                break;
            }
            let (mut at, mut last) = (d, (a, cost));
            let r = self.descend(d, cost, full, db, |x| {
                last = profile(x, &mut *e, &mut *q);
                at = x;
                (last.0 > 0.0).then_some(last.1)
            });
            d = r.rate;
            (a, cost) = if at == d { last } else { profile(d, e, q) };
            if r.status != QualityCode::MaxIterations {
                status = r.status;
                break;
            }
        }
        if !(a > 0.0) || !cost.is_finite() {
            return Err(QualityCode::ModelFailure);
        }
        // Covariance of (A, D): J = [e, -A b e].
        let (see, tee, uee, _) = sums(e, a);
        let dof = hi.len() as f64 - 2.0;
        let s2 = cost / dof;
        let det = see * uee - tee * tee;
        let (se_a, se_d) = if !(dof > 0.0) {
            (f64::NAN, f64::NAN)
        } else if d <= db.0 || d >= db.1 {
            // D on a bound is held there: no standard error, A alone.
            ((s2 / see).sqrt(), f64::NAN)
        } else if det > 0.0 {
            ((s2 * uee / det).sqrt(), (s2 * see / (a * a * det)).sqrt())
        } else {
            (f64::NAN, f64::NAN)
        };
        Ok((a, d, status, se_a, se_d))
    }

    /// One safeguarded step from `x` (cost `cost`) along `full`, projected
    /// onto `bounds` and halved until `cost_at` decreases. Converged when the
    /// accepted step or cost reduction is below the tolerances, or when no
    /// decrease is found (a minimum to rounding); `MaxIterations` means
    /// "keep iterating".
    fn descend(
        &self,
        x: f64,
        cost: f64,
        full: f64,
        bounds: (f64, f64),
        mut cost_at: impl FnMut(f64) -> Option<f64>,
    ) -> Refined {
        let mut t = 1.0;
        for _ in 0..40 {
            let xn = (x + t * full).clamp(bounds.0, bounds.1);
            let step = xn - x;
            if step == 0.0 {
                break;
            }
            if let Some(cn) = cost_at(xn) {
                if cn <= cost {
                    let small_step = step.abs() <= self.lm.xtol * x.abs().max(xn.abs());
                    let small_gain = cost - cn <= self.lm.ftol * cost;
                    let status = if small_step || small_gain {
                        if xn <= bounds.0 || xn >= bounds.1 {
                            QualityCode::AtBound
                        } else {
                            QualityCode::Converged
                        }
                    } else {
                        QualityCode::MaxIterations
                    };
                    return Refined { rate: xn, status };
                }
            }
            t *= 0.5;
        }
        Refined {
            rate: x,
            status: if x <= bounds.0 || x >= bounds.1 {
                QualityCode::AtBound
            } else {
                QualityCode::Converged
            },
        }
    }
}

/// Dot product with four independent accumulators (the sums are short, so a
/// single running sum would be bound by the latency of each addition).
#[inline]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x4, y4) = (x[..n].chunks_exact(4), y[..n].chunks_exact(4));
    let (xr, yr) = (x4.remainder(), y4.remainder());
    let mut acc = [0.0; 4];
    for (a, b) in x4.zip(y4) {
        for k in 0..4 {
            acc[k] += a[k] * b[k];
        }
    }
    let tail: f64 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp2_matches_brute_force_on_the_feasible_polygon() {
        // M from two exponentials; constraints A >= 0, c >= 0, 0.2 <= f <= 0.3.
        let m = [2.0, 0.7, 0.5];
        let cons = [
            (0.0, -1.0, 0.0),
            (-1.0, 0.0, 0.0),
            (0.2, -0.8, 0.0),
            (-0.3, 0.7, 0.0),
        ];
        for r in [[1.0, 0.3], [0.2, 1.0], [-1.0, 0.5], [1.0, -2.0]] {
            let (x, y, _) = qp2(m, r, &cons).unwrap();
            let q = |x: f64, y: f64| {
                m[0] * x * x + 2.0 * m[1] * x * y + m[2] * y * y - 2.0 * (r[0] * x + r[1] * y)
            };
            let mut best = f64::INFINITY;
            for i in 0..=400 {
                for j in 0..=400 {
                    let (a, c) = (i as f64 * 0.01, j as f64 * 0.01);
                    if cons.iter().all(|(p, s, beta)| p * a + s * c <= beta + 1e-12) {
                        best = best.min(q(a, c));
                    }
                }
            }
            assert!(cons.iter().all(|(p, s, beta)| p * x + s * y <= beta + 1e-9));
            assert!(q(x, y) <= best + 1e-12, "{r:?}: {} vs grid {best}", q(x, y));
        }
    }

    #[test]
    fn exp_plan_matches_direct_exponentials() {
        let b = [
            0.0, 10.0, 20.0, 30.0, 50.0, 80.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1000.0,
        ];
        let plan = ExpPlan::new(&b);
        assert_eq!(plan.gaps.len(), 5);
        let (mut q, mut out) = (vec![0.0; b.len()], vec![0.0; b.len()]);
        for x in [0.0, 1e-4, 1.3e-3, 0.05, 0.2] {
            plan.eval(x, &mut q, &mut out);
            for (o, bi) in out.iter().zip(&b) {
                let want = (-bi * x).exp();
                assert!((o - want).abs() <= 1e-14 * want, "b {bi} x {x}: {o} vs {want}");
            }
        }
        let high = ExpPlan::new(&[200.0, 500.0, 800.0]);
        high.eval(2e-3, &mut q, &mut out);
        assert!((out[2] - (-1.6f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn inverse_diagonal_matches_the_inverse_of_the_free_block() {
        let m = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        // Full inverse diagonal via the adjugate, computed independently.
        let det = 4.0 * (6.0 - 0.04) - 1.0 * (2.0 - 0.1) + 0.5 * (0.2 - 1.5);
        let d = inverse_diagonal(m, [true; 3]);
        let want = [(6.0 - 0.04) / det, (8.0 - 0.25) / det, (12.0 - 1.0) / det];
        for k in 0..3 {
            assert!((d[k] - want[k]).abs() < 1e-14, "{k}: {} vs {}", d[k], want[k]);
        }
        let d = inverse_diagonal(m, [true, false, true]);
        let det2 = 4.0 * 2.0 - 0.25;
        assert!((d[0] - 2.0 / det2).abs() < 1e-14 && d[1].is_nan() && (d[2] - 4.0 / det2).abs() < 1e-14);
        let d = inverse_diagonal(m, [false, true, false]);
        assert!(d[0].is_nan() && (d[1] - 1.0 / 3.0).abs() < 1e-15 && d[2].is_nan());
    }
}
