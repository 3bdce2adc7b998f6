//! Bounded Levenberg-Marquardt, one voxel at a time in a preallocated workspace.
//!
//! ## Method
//! Minimises `0.5 * sum (y_i - f_i(p))^2` over the box `lo <= p <= hi`.
//! Each iteration solves the Marquardt-scaled damped normal equations
//! `(J'J + lambda * diag(J'J)) delta = J'r` (Marquardt 1963) with the damping
//! update of Nielsen (1999): on an accepted step
//! `lambda *= max(1/3, 1 - (2 rho - 1)^3)`, on a rejected one
//! `lambda *= nu, nu *= 2`, where `rho` is actual over predicted cost reduction.
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

/// Scratch memory for fitting one voxel; sized once, reused for every voxel
/// a worker handles so the iteration loop never allocates.
#[derive(Debug, Clone)]
pub struct Workspace {
    n: usize,
    p: usize,
    pub(crate) x: Vec<f64>,
    x_trial: Vec<f64>,
    pub(crate) lower: Vec<f64>,
    pub(crate) upper: Vec<f64>,
    pub(crate) free: Vec<bool>,
    pred: Vec<f64>,
    pred_trial: Vec<f64>,
    resid: Vec<f64>,
    jac: Vec<f64>,
    jac_trial: Vec<f64>,
    fd: Vec<f64>,
    idx: Vec<usize>,
    a: Vec<f64>,
    chol: Vec<f64>,
    g: Vec<f64>,
    step: Vec<f64>,
    pub(crate) cov_diag: Vec<f64>,
    pub(crate) data: Vec<f64>,
}

impl Workspace {
    /// A workspace for `n_samples` samples and `n_params` parameters.
    pub fn new(n_samples: usize, n_params: usize) -> Workspace {
        let (n, p) = (n_samples, n_params);
        Workspace {
            n,
            p,
            x: vec![0.0; p],
            x_trial: vec![0.0; p],
            lower: vec![f64::NEG_INFINITY; p],
            upper: vec![f64::INFINITY; p],
            free: vec![true; p],
            pred: vec![0.0; n],
            pred_trial: vec![0.0; n],
            resid: vec![0.0; n],
            jac: vec![0.0; n * p],
            jac_trial: vec![0.0; n * p],
            fd: vec![0.0; n],
            idx: vec![0; p],
            a: vec![0.0; p * p],
            chol: vec![0.0; p * p],
            g: vec![0.0; p],
            step: vec![0.0; p],
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
        &self.pred
    }
}

/// Evaluates prediction and Jacobian at `x`; falls back to forward finite
/// differences (stepping inward at an upper bound) when the model has no
/// analytic Jacobian. Returns false if anything is non-finite.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    model: &dyn Model,
    x: &mut [f64],
    lower: &[f64],
    upper: &[f64],
    free: &[bool],
    pred: &mut [f64],
    jac: &mut [f64],
    fd: &mut [f64],
    with_jac: bool,
) -> (bool, bool) {
    let n = pred.len();
    if !with_jac {
        model.predict(x, pred);
        return (all_finite(pred), false);
    }
    let analytic = model.predict_with_jacobian(x, pred, jac);
    if !analytic {
        for j in 0..x.len() {
            let col = &mut jac[j * n..(j + 1) * n];
            if !free[j] {
                col.fill(0.0);
                continue;
            }
            let xj = x[j];
            let mut h = 1.5e-8 * xj.abs().max(1e-6);
            if xj + h > upper[j] {
                h = -h;
            }
            if xj + h < lower[j] {
                h = 0.5 * (upper[j] - lower[j]).min(h.abs());
            }
            x[j] = xj + h;
            model.predict(x, fd);
            x[j] = xj;
            for i in 0..n {
                col[i] = (fd[i] - pred[i]) / h;
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

/// Fits one voxel. On entry `ws.data` holds the samples, `ws.x` the starting
/// point, `ws.lower`/`ws.upper` the bounds and `ws.free` which parameters are
/// fitted (pinned ones keep their `ws.x` value). On return `ws.x` holds the
/// solution and `ws.cov_diag` the diagonal of `(J'J)^-1` for free parameters
/// (NaN for pinned ones).
pub fn fit_one(model: &dyn Model, ws: &mut Workspace, settings: &LmSettings) -> LmOutcome {
    let n = ws.n;
    let p = ws.p;
    ws.cov_diag.fill(f64::NAN);
    if !all_finite(&ws.data) {
        return LmOutcome {
            iterations: 0,
            status: QualityCode::NonFiniteInput,
            ssr: f64::NAN,
        };
    }
    for j in 0..p {
        ws.x[j] = ws.x[j].clamp(ws.lower[j], ws.upper[j]);
    }
    let (ok, analytic) = evaluate(
        model,
        &mut ws.x,
        &ws.lower,
        &ws.upper,
        &ws.free,
        &mut ws.pred,
        &mut ws.jac,
        &mut ws.fd,
        true,
    );
    if !ok {
        return LmOutcome {
            iterations: 0,
            status: QualityCode::ModelFailure,
            ssr: f64::NAN,
        };
    }
    let mut cost = ssr(&ws.data, &ws.pred);
    let mut lambda = 1e-3;
    let mut nu = 2.0;
    let mut status = QualityCode::MaxIterations;
    let mut iterations = 0;

    while iterations < settings.max_iterations {
        iterations += 1;
        if cost == 0.0 {
            status = QualityCode::Converged;
            break;
        }
        // Gradient g = J'r over free parameters and the active set.
        let rnorm = cost.sqrt();
        residual(&ws.data, &ws.pred, &mut ws.resid);
        let mut m = 0;
        let mut gscaled: f64 = 0.0;
        for j in 0..p {
            if !ws.free[j] {
                continue;
            }
            let col = &ws.jac[j * n..(j + 1) * n];
            let gj = dot(col, &ws.resid);
            let cn = dot(col, col);
            // Active: on a bound with the descent direction pointing out.
            let at_lo = ws.x[j] <= ws.lower[j] && gj < 0.0;
            let at_hi = ws.x[j] >= ws.upper[j] && gj > 0.0;
            if at_lo || at_hi {
                continue;
            }
            if cn > 0.0 {
                gscaled = gscaled.max(gj.abs() / (cn.sqrt() * rnorm));
            }
            ws.idx[m] = j;
            ws.g[m] = gj;
            m += 1;
        }
        if m == 0 || gscaled <= settings.gtol {
            status = QualityCode::Converged;
            break;
        }
        // A = J'J on the inactive free set (row-major m x m, lower triangle).
        let mut max_diag: f64 = 0.0;
        for a in 0..m {
            let ca = &ws.jac[ws.idx[a] * n..(ws.idx[a] + 1) * n];
            for b in 0..=a {
                let cb = &ws.jac[ws.idx[b] * n..(ws.idx[b] + 1) * n];
                let s = dot(ca, cb);
                ws.a[a * m + b] = s;
                ws.a[b * m + a] = s;
            }
            max_diag = max_diag.max(ws.a[a * m + a]);
        }
        let floor = max_diag * 1e-12;
        // Inner loop: raise damping until a step lowers the cost.
        let mut accepted = false;
        let mut tiny_step = false;
        loop {
            ws.chol[..m * m].copy_from_slice(&ws.a[..m * m]);
            for a in 0..m {
                ws.chol[a * m + a] += lambda * ws.a[a * m + a].max(floor);
                ws.step[a] = ws.g[a];
            }
            if !cholesky_solve(&mut ws.chol[..m * m], m, &mut ws.step[..m]) {
                lambda *= nu;
                nu *= 2.0;
                if lambda > 1e16 {
                    break;
                }
                continue;
            }
            ws.x_trial.copy_from_slice(&ws.x);
            for a in 0..m {
                let j = ws.idx[a];
                ws.x_trial[j] = (ws.x[j] + ws.step[a]).clamp(ws.lower[j], ws.upper[j]);
            }
            // Actual (projected) step and its predicted reduction.
            let mut step_norm = 0.0;
            let mut x_norm = 0.0;
            let mut pred_red = 0.0;
            for a in 0..m {
                let j = ws.idx[a];
                let d = ws.x_trial[j] - ws.x[j];
                ws.step[a] = d;
                step_norm += d * d;
                x_norm += ws.x[j] * ws.x[j];
                pred_red += 2.0 * d * ws.g[a];
            }
            for a in 0..m {
                let mut s = 0.0;
                for b in 0..m {
                    s += ws.a[a * m + b] * ws.step[b];
                }
                pred_red -= ws.step[a] * s;
            }
            if step_norm.sqrt() <= settings.xtol * (x_norm.sqrt() + settings.xtol) {
                tiny_step = true;
                break;
            }
            // Analytic models get their Jacobian with the prediction almost for
            // free, so it is computed here and kept if the step is accepted.
            let (ok, _) = evaluate(
                model,
                &mut ws.x_trial,
                &ws.lower,
                &ws.upper,
                &ws.free,
                &mut ws.pred_trial,
                &mut ws.jac_trial,
                &mut ws.fd,
                analytic,
            );
            let cost_trial = if ok {
                ssr(&ws.data, &ws.pred_trial)
            } else {
                f64::INFINITY
            };
            if cost_trial < cost {
                let rho = if pred_red > 0.0 {
                    (cost - cost_trial) / pred_red
                } else {
                    0.5
                };
                lambda *= (1.0 - (2.0 * rho - 1.0).powi(3)).max(1.0 / 3.0);
                nu = 2.0;
                let rel = (cost - cost_trial) / cost;
                std::mem::swap(&mut ws.x, &mut ws.x_trial);
                std::mem::swap(&mut ws.pred, &mut ws.pred_trial);
                if analytic {
                    std::mem::swap(&mut ws.jac, &mut ws.jac_trial);
                }
                cost = cost_trial;
                accepted = true;
                if rel <= settings.ftol {
                    tiny_step = true;
                }
                break;
            }
            lambda *= nu;
            nu *= 2.0;
            if lambda > 1e16 {
                break;
            }
        }
        if accepted {
            if !analytic
                && !evaluate(
                    model,
                    &mut ws.x,
                    &ws.lower,
                    &ws.upper,
                    &ws.free,
                    &mut ws.pred,
                    &mut ws.jac,
                    &mut ws.fd,
                    true,
                )
                .0
            {
                status = QualityCode::ModelFailure;
                break;
            }
            if tiny_step {
                status = QualityCode::Converged;
                break;
            }
        } else if tiny_step {
            status = QualityCode::Converged;
            break;
        } else {
            // Damping exhausted without a usable step: no descent direction
            // exists numerically. Converged if the gradient is small relative
            // to the cost, else the system is singular.
            status = if gscaled <= 1e-6 {
                QualityCode::Converged
            } else {
                QualityCode::Singular
            };
            break;
        }
    }

    // Covariance diagonal (J'J)^-1 over the free parameters that are not on
    // a bound: a parameter on a bound is held there (as by the active set), so
    // it has no standard error, and its column must not make the others
    // unidentifiable (e.g. D* is undefined when f sits at 0).
    if status == QualityCode::Converged || status == QualityCode::MaxIterations {
        let mut m = 0;
        for j in 0..p {
            if ws.free[j] && ws.x[j] > ws.lower[j] && ws.x[j] < ws.upper[j] {
                ws.idx[m] = j;
                m += 1;
            }
        }
        for a in 0..m {
            let ca = &ws.jac[ws.idx[a] * n..(ws.idx[a] + 1) * n];
            for b in 0..=a {
                let cb = &ws.jac[ws.idx[b] * n..(ws.idx[b] + 1) * n];
                let s = dot(ca, cb);
                ws.a[a * m + b] = s;
                ws.a[b * m + a] = s;
            }
        }
        // Factor once; column a of the inverse solves A x = e_a.
        ws.chol[..m * m].copy_from_slice(&ws.a[..m * m]);
        let ok = cholesky_factor(&mut ws.chol[..m * m], m);
        if ok {
            for a in 0..m {
                ws.step[..m].fill(0.0);
                ws.step[a] = 1.0;
                cholesky_subst(&ws.chol[..m * m], m, &mut ws.step[..m]);
                ws.cov_diag[ws.idx[a]] = ws.step[a];
            }
        }
        if !ok {
            ws.cov_diag.fill(f64::NAN);
            if status == QualityCode::Converged {
                status = QualityCode::Singular;
            }
        }
    }
    if status == QualityCode::Converged
        && (0..p).any(|j| ws.free[j] && (ws.x[j] <= ws.lower[j] || ws.x[j] >= ws.upper[j]))
    {
        status = QualityCode::AtBound;
    }
    LmOutcome {
        iterations,
        status,
        ssr: cost,
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
