//! The batched entry point: many voxels, one model, parallel and deterministic.

use crate::data::VoxelData;
use crate::exec::map_parts;
use crate::lanes::{fit_lockstep, LaneWork};
use crate::lm::{fit_one, LmOutcome, LmSettings, Workspace};
use crate::model::{Model, ParamSpec};
use ndarray::{Array1, Array2, Array3, ArrayView2};
use osipy_backend::Device;
use osipy_core::{OsipyError, ParameterMap, Provenance, QualityCode, Result};

/// The value of a pinned (held fixed) parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum PinValue {
    /// The same value in every voxel.
    Constant(f64),
    /// One value per voxel (length = number of voxels), e.g. a D map held
    /// fixed in a segmented IVIM fit.
    PerVoxel(Vec<f64>),
}

/// Where the iterations start.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum InitialGuess {
    /// The model's data-driven guess ([`Model::initial_guess`]).
    #[default]
    Model,
    /// The same starting point in every voxel (`n_params` values).
    Constant(Vec<f64>),
    /// One starting point per voxel (`voxels x n_params`); rows with a
    /// non-finite value fall back to the model's guess.
    PerVoxel(Array2<f64>),
}

/// Options of a batched fit. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Iteration limit and tolerances.
    pub lm: LmSettings,
    /// Bounds per parameter; `None` uses the model's defaults.
    pub bounds: Option<Vec<(f64, f64)>>,
    /// Parameters held fixed, by index.
    pub pinned: Vec<(usize, PinValue)>,
    /// Starting point.
    pub initial: InitialGuess,
    /// Voxels with R^2 below this are flagged [`QualityCode::LowR2`] (NaN).
    pub r2_threshold: Option<f64>,
    /// Voxels per parallel work item (fixed, so results do not depend on
    /// the thread count).
    pub chunk_voxels: usize,
    /// Progress counter: the number of voxels finished so far is added here
    /// after each chunk, for a progress bar polled from another thread.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    /// Fit [`crate::LANES`] voxels at a time through one model evaluation
    /// when the model has a lockstep form ([`Model::has_lanes`]). The
    /// results are the same bit for bit either way; `false` fits one voxel
    /// at a time.
    pub lockstep: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            lm: LmSettings::default(),
            bounds: None,
            pinned: Vec::new(),
            initial: InitialGuess::Model,
            r2_threshold: None,
            chunk_voxels: 256,
            progress: None,
            lockstep: true,
        }
    }
}

impl FitOptions {
    /// Pins the parameter called `name` of `model` to `value`.
    pub fn pin_by_name(mut self, model: &dyn Model, name: &str, value: PinValue) -> Result<Self> {
        let idx = param_index(model, name)?;
        self.pinned.retain(|(i, _)| *i != idx);
        self.pinned.push((idx, value));
        Ok(self)
    }

    /// Sets the bounds of the parameter called `name` of `model`.
    pub fn bound_by_name(mut self, model: &dyn Model, name: &str, lower: f64, upper: f64) -> Result<Self> {
        let idx = param_index(model, name)?;
        let mut b = self.bounds.take().unwrap_or_else(|| model.default_bounds());
        b[idx] = (lower, upper);
        self.bounds = Some(b);
        Ok(self)
    }
}

/// Bounds by parameter name from a config's `[pipeline.fitting] bounds`
/// table, checked (`lower <= upper`, neither NaN).
pub fn named_bounds(
    bounds: &std::collections::BTreeMap<String, [f64; 2]>,
) -> Result<Vec<(String, f64, f64)>> {
    bounds
        .iter()
        .map(|(name, [lo, hi])| {
            if lo <= hi {
                Ok((name.clone(), *lo, *hi))
            } else {
                Err(OsipyError::Metadata {
                    field: format!("pipeline.fitting.bounds.{name}"),
                    found: format!("[{lo}, {hi}]"),
                    expected: "[lower, upper] with lower <= upper".into(),
                })
            }
        })
        .collect()
}

/// Index of parameter `name` in `model`, or an error listing the names.
pub fn param_index(model: &dyn Model, name: &str) -> Result<usize> {
    model
        .params()
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| OsipyError::UnknownName {
            kind: format!("parameter of model {}", model.name()),
            name: name.to_string(),
            valid: model.param_names().iter().map(|s| s.to_string()).collect(),
        })
}

/// Per-voxel results of a batched fit. Rows are voxels; invalid voxels
/// (see [`QualityCode::is_valid`]) have NaN parameters and errors.
#[derive(Debug, Clone)]
pub struct BatchFit {
    /// Parameter names, in column order.
    pub param_names: Vec<String>,
    /// Fitted parameters (voxels x params).
    pub params: Array2<f64>,
    /// Standard errors from the covariance `s^2 (J'J)^-1`, with
    /// `s^2 = SSR / (n - p_free)`; NaN for pinned parameters and for
    /// parameters that ended on a bound (status `at_bound`).
    pub std_errors: Array2<f64>,
    /// Coefficient of determination `1 - SSR/SST`.
    pub r2: Array1<f64>,
    /// Residual root-mean-square, `sqrt(SSR / n)`, in data units.
    pub rms: Array1<f64>,
    /// Iterations used.
    pub iterations: Array1<u32>,
    /// Per-voxel status.
    pub status: Array1<QualityCode>,
}

impl BatchFit {
    /// Reshapes a per-voxel column onto the (x, y, z) grid. Voxel `v` is grid
    /// index `v` in row-major (C) order, as produced by
    /// `Array4::into_shape((nx * ny * nz, nt))` on an x, y, z, t array.
    fn to_grid<T: Clone>(col: impl Iterator<Item = T>, shape: [usize; 3]) -> Result<Array3<T>> {
        let v: Vec<T> = col.collect();
        let n = v.len();
        Array3::from_shape_vec(shape, v).map_err(|_| {
            OsipyError::data(
                "grid shape for fitted voxels",
                format!("{shape:?}"),
                format!("{n} voxels in total"),
            )
        })
    }

    /// Per-voxel quality codes on the (x, y, z) grid.
    pub fn quality_map(&self, shape: [usize; 3]) -> Result<Array3<QualityCode>> {
        Self::to_grid(self.status.iter().copied(), shape)
    }

    /// R^2 on the (x, y, z) grid (NaN outside the mask).
    pub fn r2_map(&self, shape: [usize; 3]) -> Result<Array3<f64>> {
        Self::to_grid(
            self.r2.iter().zip(&self.status).map(|(r, s)| {
                if *s == QualityCode::NotFitted {
                    f64::NAN
                } else {
                    *r
                }
            }),
            shape,
        )
    }

    /// One [`ParameterMap`] per model parameter (name, symbol and unit from
    /// the model's `params`), with standard errors and the quality mask, on
    /// the (x, y, z) grid.
    pub fn parameter_maps(
        &self,
        params: &[ParamSpec],
        shape: [usize; 3],
        provenance: &Provenance,
    ) -> Result<Vec<ParameterMap>> {
        if params.len() != self.param_names.len() {
            return Err(OsipyError::data(
                "number of parameter specs",
                params.len().to_string(),
                format!("{}, one per parameter", self.param_names.len()),
            ));
        }
        let quality = self.quality_map(shape)?;
        params
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                ParameterMap::new(
                    spec.name,
                    spec.symbol,
                    spec.unit,
                    Self::to_grid(self.params.column(j).iter().copied(), shape)?,
                    quality.clone(),
                    Some(Self::to_grid(self.std_errors.column(j).iter().copied(), shape)?),
                    provenance.clone(),
                )
            })
            .collect()
    }

    /// Number of voxels per status, as (name, count) for non-zero counts.
    pub fn status_counts(&self) -> Vec<(&'static str, usize)> {
        QualityCode::ALL
            .iter()
            .map(|q| (q.name(), self.status.iter().filter(|s| *s == q).count()))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

/// Checks options against the model and the voxel count; returns the bounds.
pub(crate) fn validate(
    model: &dyn Model,
    n_voxels: usize,
    n_cols: usize,
    mask: Option<&[bool]>,
    opts: &FitOptions,
) -> Result<Vec<(f64, f64)>> {
    let p = model.n_params();
    if p == 0 {
        return Err(OsipyError::data(
            format!("number of parameters of model {}", model.name()),
            "0",
            "at least one parameter to fit",
        ));
    }
    if n_cols != model.n_samples() {
        return Err(OsipyError::data(
            format!("number of samples per voxel for model {}", model.name()),
            n_cols.to_string(),
            format!(
                "{} (the time points / b-values the model was built with)",
                model.n_samples()
            ),
        ));
    }
    if let Some(m) = mask {
        osipy_core::check_per_voxel("mask length", m.len(), n_voxels)?;
    }
    let bounds = opts.bounds.clone().unwrap_or_else(|| model.default_bounds());
    if bounds.len() != p {
        return Err(OsipyError::data(
            "number of bounds",
            bounds.len().to_string(),
            format!("{p}, one per parameter"),
        ));
    }
    for (name, (lo, hi)) in model.param_names().iter().zip(&bounds) {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(OsipyError::data(
                format!("bounds of {name}"),
                format!("[{lo}, {hi}]"),
                "lower <= upper, neither NaN",
            ));
        }
    }
    for (idx, v) in &opts.pinned {
        if *idx >= p {
            return Err(OsipyError::data(
                "pinned parameter index",
                idx.to_string(),
                format!("below {p}"),
            ));
        }
        if let PinValue::PerVoxel(values) = v {
            if values.len() != n_voxels {
                return Err(OsipyError::data(
                    format!("per-voxel values pinning {}", model.param_names()[*idx]),
                    values.len().to_string(),
                    format!("{n_voxels}, one per voxel"),
                ));
            }
        }
    }
    match &opts.initial {
        InitialGuess::Model => {}
        InitialGuess::Constant(v) if v.len() != p => {
            return Err(OsipyError::data(
                "initial guess length",
                v.len().to_string(),
                format!("{p}, one per parameter"),
            ));
        }
        InitialGuess::PerVoxel(a) if a.shape() != [n_voxels, p] => {
            return Err(OsipyError::data(
                "per-voxel initial guesses",
                format!("shape {:?}", a.shape()),
                format!("[{n_voxels}, {p}]"),
            ));
        }
        _ => {}
    }
    if let Some(t) = opts.r2_threshold {
        if !(t.is_finite() && t <= 1.0) {
            return Err(OsipyError::data(
                "R^2 threshold",
                t.to_string(),
                "a finite number at most 1, e.g. 0.5",
            ));
        }
    }
    Ok(bounds)
}

/// Writes the starting point of voxel `v` into `ws.x`: a constant or per-voxel
/// guess when given (rows with a non-finite value fall back to the model's),
/// else the model's; then the pinned values; then any non-finite value is
/// replaced by the middle of its bounds (or 0). Returns whether a pinned value
/// was not finite.
pub(crate) fn start_point(model: &dyn Model, ws: &mut Workspace, v: usize, opts: &FitOptions) -> bool {
    let given = match &opts.initial {
        InitialGuess::Constant(c) => {
            ws.x.copy_from_slice(c);
            true
        }
        InitialGuess::PerVoxel(a) => {
            let row = a.row(v);
            let finite = row.iter().all(|x| x.is_finite());
            if finite {
                for (x, r0) in ws.x.iter_mut().zip(row) {
                    *x = *r0;
                }
            }
            finite
        }
        InitialGuess::Model => false,
    };
    if !given {
        ws.initial_guess(model);
    }
    for (j, pin) in &opts.pinned {
        ws.x[*j] = match pin {
            PinValue::Constant(c) => *c,
            PinValue::PerVoxel(vals) => vals[v],
        };
    }
    let pinned_bad = opts.pinned.iter().any(|(j, _)| !ws.x[*j].is_finite());
    for j in 0..ws.x.len() {
        if !ws.x[j].is_finite() {
            let (lo, hi) = (ws.bounds.lower[j], ws.bounds.upper[j]);
            ws.x[j] = if lo.is_finite() && hi.is_finite() {
                0.5 * (lo + hi)
            } else {
                0.0
            };
        }
    }
    pinned_bad
}

/// One voxel's verdict after the fit.
pub(crate) struct VoxelOutcome {
    status: QualityCode,
    r2: f64,
    rms: f64,
    iterations: u32,
    /// Residual variance `SSR / (n - p_free)` (NaN without degrees of freedom).
    s2: f64,
}

impl VoxelOutcome {
    /// A voxel left unfitted (masked out, or its data could not be loaded).
    pub(crate) fn not_fitted(status: QualityCode) -> Self {
        VoxelOutcome {
            status,
            r2: f64::NAN,
            rms: f64::NAN,
            iterations: 0,
            s2: f64::NAN,
        }
    }
}

/// R^2 = 1 - SSR/SST (1 for a perfect fit of constant data), the R^2
/// threshold, the residual variance, and the status.
pub(crate) fn assess(
    data: &[f64],
    outcome: &LmOutcome,
    pinned_bad: bool,
    n_free: usize,
    r2_threshold: Option<f64>,
) -> VoxelOutcome {
    let n = data.len();
    let mut status = if pinned_bad {
        QualityCode::NonFiniteInput
    } else {
        outcome.status
    };
    let mean = data.iter().sum::<f64>() / n as f64;
    let sst: f64 = data.iter().map(|y| (y - mean) * (y - mean)).sum();
    let r2 = if sst > 0.0 {
        1.0 - outcome.ssr / sst
    } else if outcome.ssr == 0.0 {
        1.0
    } else {
        0.0
    };
    if status.is_valid() {
        if let Some(t) = r2_threshold {
            if !(r2 >= t) {
                status = QualityCode::LowR2;
            }
        }
    }
    let dof = n as f64 - n_free as f64;
    VoxelOutcome {
        status,
        r2,
        rms: (outcome.ssr / n as f64).sqrt(),
        iterations: outcome.iterations as u32,
        s2: if dof > 0.0 { outcome.ssr / dof } else { f64::NAN },
    }
}

/// One work item's share of the result arrays: a fixed chunk of voxels.
pub(crate) struct VoxelOutputs<'a> {
    params: &'a mut [f64],
    se: &'a mut [f64],
    r2: &'a mut [f64],
    rms: &'a mut [f64],
    iterations: &'a mut [u32],
    status: &'a mut [QualityCode],
}

impl VoxelOutputs<'_> {
    /// Number of voxels in this part.
    pub(crate) fn len(&self) -> usize {
        self.r2.len()
    }

    /// Writes voxel `k` of the chunk: parameters `x` and standard errors
    /// from the covariance diagonal `cov_diag` (NaN unless the status is
    /// valid), R^2, RMS, iterations and status.
    pub(crate) fn write(&mut self, k: usize, p: usize, x: &[f64], cov_diag: &[f64], voxel: &VoxelOutcome) {
        let pr = &mut self.params[k * p..(k + 1) * p];
        let se = &mut self.se[k * p..(k + 1) * p];
        if voxel.status.is_valid() {
            pr.copy_from_slice(x);
            for j in 0..p {
                se[j] = (voxel.s2 * cov_diag[j]).sqrt();
            }
        } else {
            pr.fill(f64::NAN);
            se.fill(f64::NAN);
        }
        self.r2[k] = voxel.r2;
        self.rms[k] = voxel.rms;
        self.iterations[k] = voxel.iterations;
        self.status[k] = voxel.status;
    }
}

/// Fits `model` to every masked row of `data` (voxels x samples): an array
/// view, or any [`VoxelData`] that computes the rows as they are needed.
///
/// Whole-call errors only for inconsistent inputs (sample count, mask length,
/// bounds, pins, initial-guess shape). Per-voxel failures, and voxels whose
/// data could not be loaded, are recorded in [`BatchFit::status`] with NaN
/// parameters. Runs in parallel on `device` in fixed chunks: results are
/// bit-identical for any thread count.
pub fn fit_batch<D: VoxelData>(
    model: &dyn Model,
    data: D,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> Result<BatchFit> {
    let (n_vox, n_cols) = data.dim();
    let bounds = validate(model, n_vox, n_cols, mask, opts)?;
    let p = model.n_params();
    // On a GPU the iterations run there (crate::gpu), all else as below.
    if device.cuda_ordinal().is_some() {
        return crate::gpu::fit_batch_gpu(model, &data, mask, opts, device);
    }
    let mut results = Results::new(n_vox, p);
    let chunk = opts.chunk_voxels.max(1);
    let mut parts = results.parts(chunk, p);
    let lockstep = opts.lockstep && model.has_lanes();
    let init = || {
        let ws = workspace(model, &bounds, opts);
        let lanes = lockstep.then(|| LaneWork::new(model, &ws));
        (ws, lanes)
    };
    let n_free = free_count(p, opts);
    // Loads voxel `v` into `ws`: its data and start point. Returns whether
    // a pinned value was not finite, or why the voxel is not fitted.
    let load = |ws: &mut Workspace, v: usize, masked: bool| {
        if masked {
            return Err(QualityCode::NotFitted);
        }
        data.load(v, &mut ws.data)?;
        Ok(start_point(model, ws, v, opts))
    };
    map_parts(device, &mut parts, init, |(ws, lanes), part, out| {
        let first = part * chunk;
        let masked = |k: usize| mask.is_some_and(|m| !m[first + k]);
        match lanes {
            Some(lw) => {
                // The lane loops get AVX2 where the CPU has it (same results).
                osipy_backend::simd::wide(
                    #[inline(always)]
                    || {
                        fit_lockstep(
                            model,
                            lw,
                            &opts.lm,
                            out.r2.len(),
                            |ws, k| load(ws, first + k, masked(k)),
                            |ws, k, result| {
                                let voxel = match result {
                                    Ok((outcome, pinned_bad)) => {
                                        assess(&ws.data, outcome, pinned_bad, n_free, opts.r2_threshold)
                                    }
                                    Err(code) => VoxelOutcome::not_fitted(code),
                                };
                                out.write(k, p, &ws.x, &ws.cov_diag, &voxel);
                            },
                        )
                    },
                )
            }
            None => {
                for k in 0..out.r2.len() {
                    let voxel = match load(ws, first + k, masked(k)) {
                        Ok(pinned_bad) => {
                            let outcome = fit_one(model, ws, &opts.lm);
                            assess(&ws.data, &outcome, pinned_bad, n_free, opts.r2_threshold)
                        }
                        Err(code) => VoxelOutcome::not_fitted(code),
                    };
                    out.write(k, p, &ws.x, &ws.cov_diag, &voxel);
                }
            }
        }
        if let Some(progress) = opts.progress.as_deref() {
            progress.fetch_add(out.r2.len(), std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    drop(parts);
    Ok(results.into_fit(model))
}

/// A worker's workspace for `model` with these bounds, pinned parameters
/// held.
pub(crate) fn workspace(model: &dyn Model, bounds: &[(f64, f64)], opts: &FitOptions) -> Workspace {
    let mut ws = Workspace::new(model);
    for (j, (lo, hi)) in bounds.iter().enumerate() {
        ws.bounds.lower[j] = *lo;
        ws.bounds.upper[j] = *hi;
    }
    for (j, _) in &opts.pinned {
        ws.bounds.free[*j] = false;
    }
    ws
}

/// Number of fitted (not pinned) parameters of `p`.
pub(crate) fn free_count(p: usize, opts: &FitOptions) -> usize {
    p - (0..p).filter(|j| opts.pinned.iter().any(|(i, _)| i == j)).count()
}

/// The result arrays of a batch fit, before they become a [`BatchFit`].
pub(crate) struct Results {
    params: Array2<f64>,
    std_errors: Array2<f64>,
    r2: Array1<f64>,
    rms: Array1<f64>,
    iterations: Array1<u32>,
    status: Array1<QualityCode>,
}

impl Results {
    /// Arrays for `n_vox` voxels of `p` parameters, every voxel unfitted.
    pub(crate) fn new(n_vox: usize, p: usize) -> Results {
        Results {
            params: Array2::zeros((n_vox, p)),
            std_errors: Array2::zeros((n_vox, p)),
            r2: Array1::zeros(n_vox),
            rms: Array1::zeros(n_vox),
            iterations: Array1::zeros(n_vox),
            status: Array1::from_elem(n_vox, QualityCode::NotFitted),
        }
    }

    /// The arrays cut into work items of `chunk` voxels each. The workers
    /// write them in place: no record buffer, and each page is first
    /// touched by the thread that fills it.
    pub(crate) fn parts(&mut self, chunk: usize, p: usize) -> Vec<VoxelOutputs<'_>> {
        fn rows(a: &mut Array2<f64>, len: usize) -> Vec<&mut [f64]> {
            a.as_slice_mut()
                .into_iter()
                .flat_map(|s| s.chunks_mut(len))
                .collect()
        }
        let (params, se) = (
            rows(&mut self.params, chunk * p),
            rows(&mut self.std_errors, chunk * p),
        );
        let r2 = self
            .r2
            .as_slice_mut()
            .into_iter()
            .flat_map(|s| s.chunks_mut(chunk));
        let rms = self
            .rms
            .as_slice_mut()
            .into_iter()
            .flat_map(|s| s.chunks_mut(chunk));
        let it = self
            .iterations
            .as_slice_mut()
            .into_iter()
            .flat_map(|s| s.chunks_mut(chunk));
        let st = self
            .status
            .as_slice_mut()
            .into_iter()
            .flat_map(|s| s.chunks_mut(chunk));
        params
            .into_iter()
            .zip(se)
            .zip(r2)
            .zip(rms)
            .zip(it)
            .zip(st)
            .map(|(((((params, se), r2), rms), iterations), status)| VoxelOutputs {
                params,
                se,
                r2,
                rms,
                iterations,
                status,
            })
            .collect()
    }

    /// The finished fit of `model`.
    pub(crate) fn into_fit(self, model: &dyn Model) -> BatchFit {
        BatchFit {
            param_names: model.params().iter().map(|p| p.name.to_string()).collect(),
            params: self.params,
            std_errors: self.std_errors,
            r2: self.r2,
            rms: self.rms,
            iterations: self.iterations,
            status: self.status,
        }
    }
}

/// Result of fitting a single curve.
#[derive(Debug, Clone, PartialEq)]
pub struct VoxelFit {
    /// Fitted parameters (NaN if the fit failed).
    pub params: Vec<f64>,
    /// Standard errors.
    pub std_errors: Vec<f64>,
    /// Coefficient of determination.
    pub r2: f64,
    /// Residual RMS.
    pub rms: f64,
    /// Iterations used.
    pub iterations: u32,
    /// Status.
    pub status: QualityCode,
}

/// Fits a single curve (convenience wrapper over [`fit_batch`] on one thread).
pub fn fit_curve(model: &dyn Model, data: &[f64], opts: &FitOptions) -> Result<VoxelFit> {
    let view = ArrayView2::from_shape((1, data.len()), data)
        .map_err(|e| OsipyError::data("curve", e.to_string(), "a 1-D sample vector"))?;
    let r = fit_batch(model, view, None, opts, &Device::Cpu { threads: 1 })?;
    Ok(VoxelFit {
        params: r.params.row(0).to_vec(),
        std_errors: r.std_errors.row(0).to_vec(),
        r2: r.r2[0],
        rms: r.rms[0],
        iterations: r.iterations[0],
        status: r.status[0],
    })
}
