//! Lockstep fitting: [`LANES`] voxels share each model evaluation.
//!
//! The LM control flow of every voxel (damping, active set, acceptance,
//! convergence) is the scalar engine's own ([`LmState`]); only the work
//! that touches every sample is done for all lanes at once, in
//! structure-of-arrays layout (`buf[i][lane]`): the model's prediction and
//! Jacobian ([`Model::predict_with_jacobian_lanes`]), the finiteness check,
//! the cost and the sums `J'J`, `J'r`. Each lane sees exactly the arithmetic
//! of the one-voxel path, in the same order, so a lockstep fit equals the
//! scalar fit bit for bit (tested), and the loops over lanes vectorise.
//!
//! Each round evaluates one trial point per lane. A lane whose voxel has
//! finished takes the next voxel of the chunk at once, so lanes stay busy
//! although voxels need different numbers of iterations. This layout (one
//! voxel per lane, samples outermost) is the one a GPU kernel uses with one
//! voxel per thread.

use crate::lm::{begin, failed, finish, LmOutcome, LmSettings, LmState, Next, Verdict, Workspace};
use crate::model::{Lanes, Model, LANES};
use osipy_core::QualityCode;

/// Scratch memory of the lockstep driver: one scalar [`Workspace`] per lane
/// (the voxel's data, parameters, bounds and normal equations) and the
/// shared lane buffers, sized once per worker.
#[derive(Debug, Clone)]
pub(crate) struct LaneWork {
    n: usize,
    p: usize,
    /// Which parameters are fitted (the same in every lane).
    free: Vec<bool>,
    pub(crate) ws: Vec<Workspace>,
    /// The evaluation point of each lane (`p` rows).
    x: Vec<Lanes>,
    data: Vec<Lanes>,
    cur_pred: Vec<Lanes>,
    cur_jac: Vec<Lanes>,
    trial_pred: Vec<Lanes>,
    trial_jac: Vec<Lanes>,
    resid: Vec<Lanes>,
    scratch: Vec<Lanes>,
}

impl LaneWork {
    /// Lane buffers for `model`, each lane's workspace a copy of `ws`
    /// (bounds and pinned parameters already set).
    pub(crate) fn new(model: &dyn Model, ws: &Workspace) -> LaneWork {
        let (n, p) = (model.n_samples(), model.n_params());
        let z = [0.0; LANES];
        LaneWork {
            n,
            p,
            free: ws.bounds.free.clone(),
            ws: vec![ws.clone(); LANES],
            x: vec![z; p],
            data: vec![z; n],
            cur_pred: vec![z; n],
            cur_jac: vec![z; n * p],
            trial_pred: vec![z; n],
            trial_jac: vec![z; n * p],
            resid: vec![z; n],
            scratch: vec![z; model.scratch_len()],
        }
    }
}

/// A voxel in a lane: its index in the chunk, whether a pinned value was not
/// finite, and its LM state (`None` until its start point is evaluated).
struct Slot {
    k: usize,
    pinned_bad: bool,
    state: Option<LmState>,
}

/// Fits voxels `0..count` of a chunk in lockstep. `start(ws, k)` loads voxel
/// `k` into `ws` (data and start point) and returns whether a pinned value
/// was not finite, or the quality code of a voxel that is not fitted;
/// `store(ws, k, result)` takes each voxel's end: its fit (outcome and
/// whether a pinned value was not finite) or that code.
#[inline(always)]
pub(crate) fn fit_lockstep(
    model: &dyn Model,
    lw: &mut LaneWork,
    settings: &LmSettings,
    count: usize,
    mut start: impl FnMut(&mut Workspace, usize) -> Result<bool, QualityCode>,
    mut store: impl FnMut(&Workspace, usize, Result<(&LmOutcome, bool), QualityCode>),
) {
    let (n, p) = (lw.n, lw.p);
    let mut slots: [Option<Slot>; LANES] = std::array::from_fn(|_| None);
    let mut next_voxel = 0;
    loop {
        // Every idle lane takes the next voxel that needs an evaluation.
        for (l, slot) in slots.iter_mut().enumerate() {
            while slot.is_none() && next_voxel < count {
                let k = next_voxel;
                next_voxel += 1;
                let ws = &mut lw.ws[l];
                let pinned_bad = match start(ws, k) {
                    Ok(pinned_bad) => pinned_bad,
                    Err(code) => {
                        store(ws, k, Err(code));
                        continue;
                    }
                };
                if let Some(outcome) = begin(ws) {
                    store(ws, k, Ok((&outcome, pinned_bad)));
                    continue;
                }
                for j in 0..p {
                    lw.x[j][l] = ws.x[j];
                }
                for i in 0..n {
                    lw.data[i][l] = ws.data[i];
                }
                *slot = Some(Slot {
                    k,
                    pinned_bad,
                    state: None,
                });
            }
        }
        if slots.iter().all(Option::is_none) {
            return;
        }

        model.predict_with_jacobian_lanes(&lw.x, &mut lw.trial_pred, &mut lw.trial_jac, &mut lw.scratch);
        let finite_pred = all_finite(&lw.trial_pred);
        let finite_jac = all_finite(&lw.trial_jac);
        let cost = ssr(&lw.data, &lw.trial_pred);

        // Verdicts: a start point is taken when finite; a trial by its cost.
        let mut accepted = [false; LANES];
        let mut next = [Next::Evaluate; LANES];
        for (l, slot) in slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let ws = &mut lw.ws[l];
            let ok = finite_pred[l] && finite_jac[l];
            match &mut s.state {
                None if !ok => {
                    store(ws, s.k, Ok((&failed(QualityCode::ModelFailure), s.pinned_bad)));
                    *slot = None;
                }
                None => {
                    s.state = Some(LmState::new(cost[l]));
                    accepted[l] = true;
                }
                Some(st) => {
                    let c = if ok { cost[l] } else { f64::INFINITY };
                    match st.after_trial(ws, c, settings) {
                        Verdict::Accepted { tiny } => {
                            std::mem::swap(&mut ws.x, &mut ws.x_trial);
                            accepted[l] = true;
                            if tiny {
                                next[l] = Next::Done(QualityCode::Converged);
                            }
                        }
                        Verdict::Rejected(after) => next[l] = after,
                    }
                }
            }
        }

        // Accepted lanes move to their trial point; those going on get the
        // sums of the next iteration.
        if accepted.iter().any(|a| *a) {
            blend(&mut lw.cur_pred, &lw.trial_pred, &accepted);
            blend(&mut lw.cur_jac, &lw.trial_jac, &accepted);
            let going_on: [bool; LANES] = std::array::from_fn(|l| accepted[l] && next[l] == Next::Evaluate);
            if going_on.iter().any(|g| *g) {
                lane_reductions(lw, &going_on);
            }
        }
        for (l, slot) in slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let ws = &mut lw.ws[l];
            let Some(st) = &mut s.state else { continue };
            let step = if accepted[l] && next[l] == Next::Evaluate {
                st.iterate(ws, settings)
            } else {
                next[l]
            };
            match step {
                Next::Evaluate => {
                    for j in 0..p {
                        lw.x[j][l] = ws.x_trial[j];
                    }
                }
                Next::Done(status) => {
                    for (c, v) in ws.current.jac.iter_mut().zip(&lw.cur_jac) {
                        *c = v[l];
                    }
                    let outcome = finish(ws, status, st);
                    store(ws, s.k, Ok((&outcome, s.pinned_bad)));
                    *slot = None;
                }
            }
        }
    }
}

/// `J'J` over the free columns and `J'r` at the current point of every lane
/// in `lanes`, into that lane's workspace: [`crate::lm`]'s sums with the
/// same arithmetic per lane.
#[inline(always)]
fn lane_reductions(lw: &mut LaneWork, lanes: &[bool; LANES]) {
    let (n, p) = (lw.n, lw.p);
    for ((r, d), f) in lw.resid.iter_mut().zip(&lw.data).zip(&lw.cur_pred) {
        for l in 0..LANES {
            r[l] = d[l] - f[l];
        }
    }
    for a in 0..p {
        if !lw.free[a] {
            continue;
        }
        let ca = &lw.cur_jac[a * n..(a + 1) * n];
        for b in 0..=a {
            if lw.free[b] {
                let s = dot(ca, &lw.cur_jac[b * n..(b + 1) * n]);
                for l in (0..LANES).filter(|l| lanes[*l]) {
                    let full = &mut lw.ws[l].normal.full;
                    full[a * p + b] = s[l];
                    full[b * p + a] = s[l];
                }
            }
        }
        let g = dot(ca, &lw.resid);
        for l in (0..LANES).filter(|l| lanes[*l]) {
            lw.ws[l].normal.gall[a] = g[l];
        }
    }
}

/// `dst[i][l] = src[i][l]` for the lanes in `take`.
#[inline(always)]
fn blend(dst: &mut [Lanes], src: &[Lanes], take: &[bool; LANES]) {
    for (d, s) in dst.iter_mut().zip(src) {
        for l in 0..LANES {
            d[l] = if take[l] { s[l] } else { d[l] };
        }
    }
}

/// Per lane, [`crate::lm`]'s `dot`: four accumulators over the samples,
/// summed as `(a0 + a1) + (a2 + a3) + tail`.
#[inline(always)]
fn dot(a: &[Lanes], b: &[Lanes]) -> Lanes {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [[0.0f64; LANES]; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        for (q, aq) in acc.iter_mut().enumerate() {
            let (x, y) = (&a[4 * c + q], &b[4 * c + q]);
            for l in 0..LANES {
                aq[l] += x[l] * y[l];
            }
        }
    }
    let mut tail = [0.0f64; LANES];
    for i in 4 * chunks..n {
        for l in 0..LANES {
            tail[l] += a[i][l] * b[i][l];
        }
    }
    std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]) + tail[l])
}

/// Per lane, [`crate::lm`]'s `ssr`: the residual sum of squares with the
/// same accumulators as [`dot`].
#[inline(always)]
fn ssr(data: &[Lanes], pred: &[Lanes]) -> Lanes {
    let n = data.len().min(pred.len());
    let mut acc = [[0.0f64; LANES]; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        for (q, aq) in acc.iter_mut().enumerate() {
            let (y, f) = (&data[4 * c + q], &pred[4 * c + q]);
            for l in 0..LANES {
                let d = y[l] - f[l];
                aq[l] += d * d;
            }
        }
    }
    let mut tail = [0.0f64; LANES];
    for i in 4 * chunks..n {
        for l in 0..LANES {
            tail[l] += (data[i][l] - pred[i][l]) * (data[i][l] - pred[i][l]);
        }
    }
    std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]) + tail[l])
}

/// Per lane, whether every value is finite (`x * 0` is 0 only for finite `x`).
#[inline(always)]
fn all_finite(v: &[Lanes]) -> [bool; LANES] {
    let mut acc = [0.0f64; LANES];
    for x in v {
        for l in 0..LANES {
            acc[l] += x[l] * 0.0;
        }
    }
    acc.map(|a| a == 0.0)
}
