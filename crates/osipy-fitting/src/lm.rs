//! Bounded Levenberg-Marquardt, one voxel at a time in a preallocated workspace.
//!
//! ## Method
//! Minimises $\tfrac12 \sum_i (y_i - f_i(p))^2$ over the box $l \le p \le u$.
//! Each iteration solves the Marquardt-scaled damped normal equations
//! (Marquardt, J. SIAM 1963)
//! $$\left(J^\top J + \lambda\, \mathrm{diag}(J^\top J)\right) \delta = J^\top r$$
//! with the damping update of Nielsen (IMM report, 1999): on an accepted step
//! $\lambda \leftarrow \lambda \max\left(\tfrac13, 1 - (2\rho - 1)^3\right)$, on a rejected
//! one $\lambda \leftarrow \nu\lambda,\ \nu \leftarrow 2\nu$, where $\rho$ is the actual
//! over the predicted cost reduction.
//!
//! ## Bound handling (projection with an active set)
//! Iterates never leave the box: a trial point is projected onto it
//! (component-wise clamp), and a parameter sitting on a bound whose gradient
//! pushes outward is held fixed for that iteration (it is *active*), so the
//! step is computed in the remaining free subspace. This is the projected LM
//! of Kanzow, Yamashita & Fukushima (J. Comput. Appl. Math. 2004). We chose it
//! over the common alternatives because
//! * models are only defined inside their bounds (negative rate constants or
//!   fractions above 1 make several perfusion models blow up), so iterates
//!   must stay feasible, which penalty methods do not ensure;
//! * unlike a sine/log reparameterisation (MINUIT, lmfit) it does not distort
//!   the cost surface or the covariance, and a parameter can sit exactly on a
//!   bound (vp = 0 is physiological), which a transform only reaches at
//!   infinity;
//! * it costs nothing beyond a clamp and a sign test per parameter.
//!
//! ## Convergence
//! Converged when any of: relative cost reduction of an accepted step below
//! `ftol`; relative step length below `xtol`; scaled gradient
//! `max_j |(J'r)_j| / (|J_j| |r|)` below `gtol` (MINPACK's test, the cosine
//! between residual and each Jacobian column); or a perfect fit.

use crate::model::Model;
use osipy_core::QualityCode;

/// Convergence and iteration settings of the LM engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmSettings {
    /// Maximum number of iterations (each evaluates the model once).
    pub max_iterations: usize,
    /// Relative cost-reduction tolerance.
    pub ftol: f64,
    /// Relative step-length tolerance.
    pub xtol: f64,
    /// Scaled-gradient tolerance.
    pub gtol: f64,
}

impl LmSettings {
    /// Settings from a config's `[pipeline.fitting]` `max_iterations` and
    /// `tolerance` (used for both the cost and the step test), checked:
    /// at least one iteration, a tolerance in (0, 1).
    pub fn from_config(max_iterations: usize, tolerance: f64) -> osipy_core::Result<LmSettings> {
        let bad = |field: &str, found: String, expected: &str| osipy_core::OsipyError::Metadata {
            field: format!("pipeline.fitting.{field}"),
            found,
            expected: expected.into(),
        };
        if max_iterations == 0 {
            return Err(bad("max_iterations", "0".into(), "at least 1"));
        }
        if !(tolerance > 0.0 && tolerance < 1.0) {
            return Err(bad(
                "tolerance",
                tolerance.to_string(),
                "a value in (0, 1), e.g. 1e-6",
            ));
        }
        Ok(LmSettings {
            max_iterations,
            ftol: tolerance,
            xtol: tolerance,
            ..LmSettings::default()
        })
    }
}

impl Default for LmSettings {
    fn default() -> Self {
        LmSettings {
            max_iterations: 100,
            ftol: 1e-10,
            xtol: 1e-10,
            gtol: 1e-10,
        }
    }
}

/// Outcome of one voxel's fit (before R^2 threshold checks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmOutcome {
    /// Iterations used.
    pub iterations: usize,
    /// Final status.
    pub status: QualityCode,
    /// Residual sum of squares at the solution.
    pub ssr: f64,
}

/// Box constraints of one fit: bounds and which parameters are fitted.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub(crate) lower: Vec<f64>,
    pub(crate) upper: Vec<f64>,
    /// False for pinned parameters (held at their starting value).
    pub(crate) free: Vec<bool>,
}

/// A model evaluation: prediction and column-major Jacobian.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    pub(crate) pred: Vec<f64>,
    pub(crate) jac: Vec<f64>,
}

/// The damped normal equations on the inactive free set: the parameter
/// index of each row, the gradient `J'r`, `J'J`, its factor and the step;
/// `full` is `J'J` over all free parameters (`p x p`) and `gall` is `J'r`
/// for all of them, from which `a` and `g` are taken once the active set
/// is known.
#[derive(Debug, Clone)]
pub(crate) struct NormalEquations {
    pub(crate) full: Vec<f64>,
    pub(crate) gall: Vec<f64>,
    idx: Vec<usize>,
    g: Vec<f64>,
    a: Vec<f64>,
    chol: Vec<f64>,
    step: Vec<f64>,
}

/// Evaluation scratch: the residual, a finite-difference column and the
/// model's own scratch ([`Model::scratch_len`]).
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    resid: Vec<f64>,
    fd: Vec<f64>,
    pub(crate) model: Vec<f64>,
}

/// Scratch memory for fitting one voxel; sized once, reused for every voxel
/// a worker handles so the iteration loop never allocates. Named parts:
/// the iterate and trial point, the bounds, the current and trial
/// evaluations, the normal equations and the evaluation scratch.
#[derive(Debug, Clone)]
pub struct Workspace {
    n: usize,
    p: usize,
    pub(crate) x: Vec<f64>,
    pub(crate) x_trial: Vec<f64>,
    pub(crate) bounds: Bounds,
    pub(crate) current: Evaluation,
    trial: Evaluation,
    pub(crate) normal: NormalEquations,
    pub(crate) scratch: Scratch,
    pub(crate) cov_diag: Vec<f64>,
    pub(crate) data: Vec<f64>,
}

impl Workspace {
    /// A workspace for `model` (its samples, parameters and scratch), with
    /// the model's default bounds and every parameter free.
    pub fn new(model: &dyn Model) -> Workspace {
        let (n, p) = (model.n_samples(), model.n_params());
        let evaluation = || Evaluation {
            pred: vec![0.0; n],
            jac: vec![0.0; n * p],
        };
        let (lower, upper) = model.params().iter().map(|s| s.bounds).unzip();
        Workspace {
            n,
            p,
            x: vec![0.0; p],
            x_trial: vec![0.0; p],
            bounds: Bounds {
                lower,
                upper,
                free: vec![true; p],
            },
            current: evaluation(),
            trial: evaluation(),
            normal: NormalEquations {
                full: vec![0.0; p * p],
                gall: vec![0.0; p],
                idx: vec![0; p],
                g: vec![0.0; p],
                a: vec![0.0; p * p],
                chol: vec![0.0; p * p],
                step: vec![0.0; p],
            },
            scratch: Scratch {
                resid: vec![0.0; n],
                fd: vec![0.0; n],
                model: vec![0.0; model.scratch_len()],
            },
            cov_diag: vec![f64::NAN; p],
            data: vec![0.0; n],
        }
    }

    /// The current parameter vector.
    pub fn params(&self) -> &[f64] {
        &self.x
    }

    /// Model prediction at the current parameters.
    pub fn prediction(&self) -> &[f64] {
        &self.current.pred
    }

    /// Prediction and Jacobian at the current point; (all finite, analytic).
    fn evaluate_current(&mut self, model: &dyn Model) -> (bool, bool) {
        evaluate(
            model,
            &mut self.x,
            &self.bounds,
            &mut self.current,
            &mut self.scratch,
            true,
        )
    }

    /// The model's initial guess for the data in the workspace, into `x`.
    pub(crate) fn initial_guess(&mut self, model: &dyn Model) {
        model.initial_guess_in(&self.data, &mut self.x, &mut self.scratch.model);
    }
}

/// Evaluates prediction and Jacobian at `x` into `eval`; falls back to
/// forward finite differences (stepping inward at an upper bound) when the
/// model has no analytic Jacobian. Returns (all finite, analytic).
fn evaluate(
    model: &dyn Model,
    x: &mut [f64],
    bounds: &Bounds,
    eval: &mut Evaluation,
    scratch: &mut Scratch,
    with_jac: bool,
) -> (bool, bool) {
    let Evaluation { pred, jac } = eval;
    let n = pred.len();
    if !with_jac {
        model.predict_in(x, pred, &mut scratch.model);
        return (all_finite(pred), false);
    }
    let analytic = model.predict_with_jacobian_in(x, pred, jac, &mut scratch.model);
    if !analytic {
        for j in 0..x.len() {
            let col = &mut jac[j * n..(j + 1) * n];
            if !bounds.free[j] {
                col.fill(0.0);
                continue;
            }
            let xj = x[j];
            let mut h = 1.5e-8 * xj.abs().max(1e-6);
            if xj + h > bounds.upper[j] {
                h = -h;
            }
            if xj + h < bounds.lower[j] {
                h = 0.5 * (bounds.upper[j] - bounds.lower[j]).min(h.abs());
            }
            x[j] = xj + h;
            model.predict_in(x, &mut scratch.fd, &mut scratch.model);
            x[j] = xj;
            for i in 0..n {
                col[i] = (scratch.fd[i] - pred[i]) / h;
            }
        }
    }
    (all_finite(pred) && all_finite(jac), analytic)
}

/// In-place Cholesky factorisation `a = L L'` of the `m x m` row-major
/// matrix (lower triangle read and overwritten). Returns false if `a` is not
/// numerically positive definite.
fn cholesky_factor(a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let mut d = a[j * m + j];
        for k in 0..j {
            d -= a[j * m + k] * a[j * m + k];
        }
        if !(d > 0.0) || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * m + j] = d;
        for i in (j + 1)..m {
            let mut s = a[i * m + j];
            for k in 0..j {
                s -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = s / d;
        }
    }
    true
}

/// Solves `L L' x = b` in place with a factor from [`cholesky_factor`].
fn cholesky_subst(l: &[f64], m: usize, b: &mut [f64]) {
    for i in 0..m {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * m + k] * b[k];
        }
        b[i] = s / l[i * m + i];
    }
    for i in (0..m).rev() {
        let mut s = b[i];
        for k in (i + 1)..m {
            s -= l[k * m + i] * b[k];
        }
        b[i] = s / l[i * m + i];
    }
}

/// Cholesky factorisation and solve of `a x = b` (see [`cholesky_factor`]).
fn cholesky_solve(a: &mut [f64], m: usize, b: &mut [f64]) -> bool {
    if !cholesky_factor(a, m) {
        return false;
    }
    cholesky_subst(a, m, b);
    true
}

/// Dot product with four independent accumulators, so the compiler can use
/// SIMD; the summation order is fixed, so results stay deterministic.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[4 * c + l] * b[4 * c + l];
        }
    }
    let mut tail = 0.0;
    for i in 4 * chunks..n {
        tail += a[i] * b[i];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// True when every value is finite: `x * 0` is 0 for finite `x` and NaN
/// otherwise, so one branch-free sum decides.
#[inline]
fn all_finite(v: &[f64]) -> bool {
    let mut acc = [0.0f64; 4];
    let chunks = v.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += v[4 * c + l] * 0.0;
        }
    }
    let mut tail = 0.0;
    for x in &v[4 * chunks..] {
        tail += x * 0.0;
    }
    (acc[0] + acc[1] + acc[2] + acc[3] + tail) == 0.0
}

/// Residual `data - pred` into `r`.
#[inline]
fn residual(data: &[f64], pred: &[f64], r: &mut [f64]) {
    for ((ri, y), f) in r.iter_mut().zip(data).zip(pred) {
        *ri = y - f;
    }
}

/// Sum of squared residuals (four accumulators, fixed order).
fn ssr(data: &[f64], pred: &[f64]) -> f64 {
    let n = data.len().min(pred.len());
    let mut acc = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        for l in 0..4 {
            let d = data[4 * c + l] - pred[4 * c + l];
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0;
    for i in 4 * chunks..n {
        tail += (data[i] - pred[i]) * (data[i] - pred[i]);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Fills `normal.a` (row-major `m x m`, both triangles) with `J'J` over the
/// columns `normal.idx[..m]`; returns its largest diagonal entry.
fn gram(jac: &[f64], n: usize, m: usize, normal: &mut NormalEquations) -> f64 {
    let mut max_diag: f64 = 0.0;
    for a in 0..m {
        let ca = &jac[normal.idx[a] * n..(normal.idx[a] + 1) * n];
        for b in 0..=a {
            let cb = &jac[normal.idx[b] * n..(normal.idx[b] + 1) * n];
            let s = dot(ca, cb);
            normal.a[a * m + b] = s;
            normal.a[b * m + a] = s;
        }
        max_diag = max_diag.max(normal.a[a * m + a]);
    }
    max_diag
}

/// The sums one iteration needs at the current point: `J'J` over all free
/// columns into `normal.full` (its diagonal is the column norms the scaled
/// gradient needs) and `J'r` for every free parameter into `normal.gall`.
/// The lockstep driver ([`crate::lanes`]) computes the same sums for several
/// voxels at once, with the same arithmetic per voxel.
fn reductions(ws: &mut Workspace) {
    let (n, p) = (ws.n, ws.p);
    residual(&ws.data, &ws.current.pred, &mut ws.scratch.resid);
    let full = &mut ws.normal.full;
    for a in 0..p {
        if !ws.bounds.free[a] {
            continue;
        }
        let ca = &ws.current.jac[a * n..(a + 1) * n];
        for b in 0..=a {
            if ws.bounds.free[b] {
                let s = dot(ca, &ws.current.jac[b * n..(b + 1) * n]);
                full[a * p + b] = s;
                full[b * p + a] = s;
            }
        }
        ws.normal.gall[a] = dot(ca, &ws.scratch.resid);
    }
}

/// From the sums of [`reductions`]: the gradient `g = J'r` on the free
/// parameters that are not held by the active set (on a bound with the
/// descent direction pointing out), into `normal.idx` / `normal.g`, and
/// `J'J` on them into `normal.a`. Returns their number, the scaled gradient
/// `max_j |(J'r)_j| / (|J_j| |r|)` (MINPACK's test) and the largest
/// diagonal entry of `normal.a`.
fn select(ws: &mut Workspace, cost: f64) -> (usize, f64, f64) {
    let p = ws.p;
    let rnorm = cost.sqrt();
    let nm = &mut ws.normal;
    let mut m = 0;
    let mut gscaled: f64 = 0.0;
    for j in 0..p {
        if !ws.bounds.free[j] {
            continue;
        }
        let gj = nm.gall[j];
        let cn = nm.full[j * p + j];
        let at_lo = ws.x[j] <= ws.bounds.lower[j] && gj < 0.0;
        let at_hi = ws.x[j] >= ws.bounds.upper[j] && gj > 0.0;
        if at_lo || at_hi {
            continue;
        }
        if cn > 0.0 {
            gscaled = gscaled.max(gj.abs() / (cn.sqrt() * rnorm));
        }
        nm.idx[m] = j;
        nm.g[m] = gj;
        m += 1;
    }
    let mut max_diag: f64 = 0.0;
    for a in 0..m {
        for b in 0..m {
            nm.a[a * m + b] = nm.full[nm.idx[a] * p + nm.idx[b]];
        }
        max_diag = max_diag.max(nm.a[a * m + a]);
    }
    (m, gscaled, max_diag)
}

/// The damping carried between iterations (Nielsen 1999) and the cost.
struct Damping {
    cost: f64,
    lambda: f64,
    nu: f64,
}

impl Damping {
    /// A rejected step: `lambda *= nu, nu *= 2`; false once damping is exhausted.
    fn reject(&mut self) -> bool {
        self.lambda *= self.nu;
        self.nu *= 2.0;
        self.lambda <= 1e16
    }
}

/// The status when damping is exhausted without a usable step: no descent
/// direction exists numerically. Converged if the gradient is small
/// relative to the cost, else the system is singular.
fn exhausted(gscaled: f64) -> QualityCode {
    if gscaled <= 1e-6 {
        QualityCode::Converged
    } else {
        QualityCode::Singular
    }
}

/// What one voxel's fit carries from one model evaluation to the next: the
/// damping and cost, the iteration count, the iteration's system (`m`
/// parameters in `normal.idx`, the floor of the Marquardt scaling), its
/// scaled gradient and the predicted reduction of the pending trial step.
///
/// The scalar driver [`fit_one`] and the lockstep driver
/// ([`crate::lanes`]) both step through it, so the two make the same
/// decisions with the same arithmetic.
pub(crate) struct LmState {
    damping: Damping,
    iterations: usize,
    m: usize,
    floor: f64,
    gscaled: f64,
    pred_red: f64,
}

/// What a voxel's fit needs next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// The model at `ws.x_trial`, then [`LmState::after_trial`].
    Evaluate,
    /// The fit has ended with this status: then [`finish`].
    Done(QualityCode),
}

/// The verdict on a trial point.
pub(crate) enum Verdict {
    /// The trial lowered the cost. The caller makes it the current point
    /// (parameters, prediction, Jacobian) and, unless `tiny` (converged),
    /// forms the [`reductions`] there and calls [`LmState::iterate`].
    Accepted { tiny: bool },
    /// The trial was rejected; what comes next.
    Rejected(Next),
}

impl LmState {
    /// The state after the first evaluation of the start point, of cost `cost`.
    pub(crate) fn new(cost: f64) -> LmState {
        LmState {
            damping: Damping {
                cost,
                lambda: 1e-3,
                nu: 2.0,
            },
            iterations: 0,
            m: 0,
            floor: 0.0,
            gscaled: 0.0,
            pred_red: 0.0,
        }
    }

    /// Starts an iteration at the current point, whose [`reductions`] are in
    /// `ws.normal`, and proposes a step.
    pub(crate) fn iterate(&mut self, ws: &mut Workspace, settings: &LmSettings) -> Next {
        if self.iterations >= settings.max_iterations {
            return Next::Done(QualityCode::MaxIterations);
        }
        self.iterations += 1;
        if self.damping.cost == 0.0 {
            return Next::Done(QualityCode::Converged);
        }
        let (m, gscaled, max_diag) = select(ws, self.damping.cost);
        if m == 0 || gscaled <= settings.gtol {
            return Next::Done(QualityCode::Converged);
        }
        (self.m, self.floor, self.gscaled) = (m, max_diag * 1e-12, gscaled);
        self.propose(ws, settings)
    }

    /// Raises the damping until the damped normal equations can be solved,
    /// and puts the projected trial point into `ws.x_trial`.
    fn propose(&mut self, ws: &mut Workspace, settings: &LmSettings) -> Next {
        let (m, floor) = (self.m, self.floor);
        let damping = &mut self.damping;
        let nm = &mut ws.normal;
        loop {
            nm.chol[..m * m].copy_from_slice(&nm.a[..m * m]);
            for a in 0..m {
                nm.chol[a * m + a] += damping.lambda * nm.a[a * m + a].max(floor);
                nm.step[a] = nm.g[a];
            }
            if !cholesky_solve(&mut nm.chol[..m * m], m, &mut nm.step[..m]) {
                if !damping.reject() {
                    return Next::Done(exhausted(self.gscaled));
                }
                continue;
            }
            ws.x_trial.copy_from_slice(&ws.x);
            for a in 0..m {
                let j = nm.idx[a];
                ws.x_trial[j] = (ws.x[j] + nm.step[a]).clamp(ws.bounds.lower[j], ws.bounds.upper[j]);
            }
            // Actual (projected) step and its predicted reduction.
            let mut step_norm = 0.0;
            let mut x_norm = 0.0;
            let mut pred_red = 0.0;
            for a in 0..m {
                let j = nm.idx[a];
                let d = ws.x_trial[j] - ws.x[j];
                nm.step[a] = d;
                step_norm += d * d;
                x_norm += ws.x[j] * ws.x[j];
                pred_red += 2.0 * d * nm.g[a];
            }
            for a in 0..m {
                let mut s = 0.0;
                for b in 0..m {
                    s += nm.a[a * m + b] * nm.step[b];
                }
                pred_red -= nm.step[a] * s;
            }
            if step_norm.sqrt() <= settings.xtol * (x_norm.sqrt() + settings.xtol) {
                return Next::Done(QualityCode::Converged);
            }
            self.pred_red = pred_red;
            return Next::Evaluate;
        }
    }

    /// Judges the trial point by its cost (infinite when its evaluation was
    /// not finite): accepted if it lowers the cost, else more damping and a
    /// new proposal.
    pub(crate) fn after_trial(
        &mut self,
        ws: &mut Workspace,
        cost_trial: f64,
        settings: &LmSettings,
    ) -> Verdict {
        let damping = &mut self.damping;
        if cost_trial < damping.cost {
            let rho = if self.pred_red > 0.0 {
                (damping.cost - cost_trial) / self.pred_red
            } else {
                0.5
            };
            damping.lambda *= (1.0 - (2.0 * rho - 1.0).powi(3)).max(1.0 / 3.0);
            damping.nu = 2.0;
            let rel = (damping.cost - cost_trial) / damping.cost;
            damping.cost = cost_trial;
            return Verdict::Accepted {
                tiny: rel <= settings.ftol,
            };
        }
        if !damping.reject() {
            return Verdict::Rejected(Next::Done(exhausted(self.gscaled)));
        }
        Verdict::Rejected(self.propose(ws, settings))
    }
}

/// Diagonal of `(J'J)^-1` over the free parameters that are not on a bound
/// into `ws.cov_diag`: a parameter on a bound is held there (as by the active
/// set), so it has no standard error, and its column must not make the
/// others unidentifiable (e.g. D* is undefined when f sits at 0). Returns
/// false when `J'J` is singular.
fn covariance(ws: &mut Workspace) -> bool {
    let mut m = 0;
    for j in 0..ws.p {
        if ws.bounds.free[j] && ws.x[j] > ws.bounds.lower[j] && ws.x[j] < ws.bounds.upper[j] {
            ws.normal.idx[m] = j;
            m += 1;
        }
    }
    gram(&ws.current.jac, ws.n, m, &mut ws.normal);
    // Factor once; column a of the inverse solves A x = e_a.
    let nm = &mut ws.normal;
    nm.chol[..m * m].copy_from_slice(&nm.a[..m * m]);
    if !cholesky_factor(&mut nm.chol[..m * m], m) {
        ws.cov_diag.fill(f64::NAN);
        return false;
    }
    for a in 0..m {
        nm.step[..m].fill(0.0);
        nm.step[a] = 1.0;
        cholesky_subst(&nm.chol[..m * m], m, &mut nm.step[..m]);
        ws.cov_diag[nm.idx[a]] = nm.step[a];
    }
    true
}

/// The outcome of a voxel that could not be fitted at all.
pub(crate) fn failed(status: QualityCode) -> LmOutcome {
    LmOutcome {
        iterations: 0,
        status,
        ssr: f64::NAN,
    }
}

/// Before the first evaluation: clears the covariance, checks the data and
/// clamps the start point into the bounds. Returns the outcome when the
/// voxel cannot be fitted (non-finite data).
pub(crate) fn begin(ws: &mut Workspace) -> Option<LmOutcome> {
    ws.cov_diag.fill(f64::NAN);
    if !all_finite(&ws.data) {
        return Some(failed(QualityCode::NonFiniteInput));
    }
    for j in 0..ws.p {
        ws.x[j] = ws.x[j].clamp(ws.bounds.lower[j], ws.bounds.upper[j]);
    }
    None
}

/// The end of a voxel's fit with `status`: the covariance diagonal at the
/// solution (for converged and max-iteration fits; `ws.current.jac` must
/// hold the Jacobian there) and the at-bound check.
pub(crate) fn finish(ws: &mut Workspace, status: QualityCode, st: &LmState) -> LmOutcome {
    let mut status = status;
    if status == QualityCode::Converged || status == QualityCode::MaxIterations {
        let identifiable = covariance(ws);
        if !identifiable && status == QualityCode::Converged {
            status = QualityCode::Singular;
        }
    }
    let on_bound = |j: usize| ws.x[j] <= ws.bounds.lower[j] || ws.x[j] >= ws.bounds.upper[j];
    if status == QualityCode::Converged && (0..ws.p).any(|j| ws.bounds.free[j] && on_bound(j)) {
        status = QualityCode::AtBound;
    }
    LmOutcome {
        iterations: st.iterations,
        status,
        ssr: st.damping.cost,
    }
}

/// Fits one voxel. On entry `ws.data` holds the samples, `ws.x` the starting
/// point, `ws.bounds` the bounds and which parameters are fitted (pinned ones
/// keep their `ws.x` value). On return `ws.x` holds the solution and
/// `ws.cov_diag` the diagonal of `(J'J)^-1` for free parameters (NaN for
/// pinned ones).
pub fn fit_one(model: &dyn Model, ws: &mut Workspace, settings: &LmSettings) -> LmOutcome {
    if let Some(outcome) = begin(ws) {
        return outcome;
    }
    let (ok, analytic) = ws.evaluate_current(model);
    if !ok {
        return failed(QualityCode::ModelFailure);
    }
    let mut st = LmState::new(ssr(&ws.data, &ws.current.pred));
    reductions(ws);
    let mut next = st.iterate(ws, settings);
    loop {
        match next {
            Next::Done(status) => return finish(ws, status, &st),
            Next::Evaluate => {
                // Analytic models get their Jacobian with the prediction
                // almost for free, so it is computed here and kept if the
                // step is accepted.
                let (ok, _) = evaluate(
                    model,
                    &mut ws.x_trial,
                    &ws.bounds,
                    &mut ws.trial,
                    &mut ws.scratch,
                    analytic,
                );
                let cost_trial = if ok {
                    ssr(&ws.data, &ws.trial.pred)
                } else {
                    f64::INFINITY
                };
                next = match st.after_trial(ws, cost_trial, settings) {
                    Verdict::Rejected(next) => next,
                    Verdict::Accepted { tiny } => {
                        std::mem::swap(&mut ws.x, &mut ws.x_trial);
                        std::mem::swap(&mut ws.current.pred, &mut ws.trial.pred);
                        if analytic {
                            std::mem::swap(&mut ws.current.jac, &mut ws.trial.jac);
                        }
                        if !analytic && !ws.evaluate_current(model).0 {
                            Next::Done(QualityCode::ModelFailure)
                        } else if tiny {
                            Next::Done(QualityCode::Converged)
                        } else {
                            reductions(ws);
                            st.iterate(ws, settings)
                        }
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] -> x = [0.5, 0] (by hand).
        let mut a = [4.0, 2.0, 2.0, 3.0];
        let mut b = [2.0, 1.0];
        assert!(cholesky_solve(&mut a, 2, &mut b));
        assert!((b[0] - 0.5).abs() < 1e-15 && b[1].abs() < 1e-15);
        let mut singular = [1.0, 1.0, 1.0, 1.0];
        let mut b = [1.0, 1.0];
        assert!(!cholesky_solve(&mut singular, 2, &mut b));
    }
}
