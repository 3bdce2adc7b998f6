//! IVIM fitting strategies over many voxels.
//!
//! * `segmented` (two steps, e.g. Gurney-Champion et al., PLoS One 2018):
//!   1. a mono-exponential `A e^{-bD}` on the b-values at or above
//!      `b_threshold` gives D (the perfusion compartment has decayed there)
//!      and the intercept A;
//!   2. with D held, S0, f and D* are fitted to all b-values (default,
//!      `segmented_fit_f`), or only D* with `f = 1 - A / S0` and S0 the b = 0
//!      signal; started from the best of a logarithmic grid of D* values.
//!      Both steps run per voxel in one pass ([`crate::segmented`]).
//! * `full`: all four parameters by bounded LM, started from the segmented
//!   result.
//!
//! Signals are first averaged over repeated b-values and, by default,
//! normalised to the mean b = 0 signal (then S0 is ~1).

use crate::grid::{
    BayesOptions, DPrior, DstarPrior, GridPosterior, GridSettings, RatePrior, Sampler, Summary,
};
use crate::models::{Biexponential, BIEXP_BOUNDS};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_fitting::{
    fit_batch, map_parts, map_voxels, param_index, FitOptions, InitialGuess, LmSettings, Model, VoxelData,
};

/// How to fit (registry entries [`crate::IvimFitter`] carry one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvimStrategy {
    /// Two-step segmented fit.
    Segmented,
    /// Four-parameter fit started from the segmented result.
    Full,
    /// Posterior per voxel: the exact grid posterior ([`crate::grid`]) or
    /// NUTS sampling started from the full fit ([`crate::bayes`]).
    Bayesian,
}

/// Options of [`fit_ivim`].
#[derive(Debug, Clone)]
pub struct IvimFitOptions {
    /// Strategy.
    pub strategy: IvimStrategy,
    /// b-value (s/mm^2) at and above which perfusion is taken as decayed.
    pub b_threshold: f64,
    /// Normalise each voxel to its mean b = 0 signal.
    pub normalize: bool,
    /// In the segmented second step, fit S0 and f with D* (D held); if
    /// false, f comes from the step-1 intercept and S0 from the b = 0 signal.
    pub segmented_fit_f: bool,
    /// Bounds by parameter name (S0, f, D, Dstar); defaults in
    /// [`BIEXP_BOUNDS`].
    pub bounds: Vec<(String, f64, f64)>,
    /// LM iteration limit and tolerances.
    pub lm: LmSettings,
    /// Starting values of the `full` fit by parameter name, overriding the
    /// segmented start in every voxel.
    pub initial_guess: Vec<(String, f64)>,
    /// Settings of the `bayesian` strategy.
    pub bayes: crate::grid::BayesOptions,
    /// Progress counter: gains the voxels of each finished chunk of the
    /// final pass (segmented, full or bayesian).
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl Default for IvimFitOptions {
    fn default() -> Self {
        IvimFitOptions {
            strategy: IvimStrategy::Segmented,
            b_threshold: 200.0,
            normalize: true,
            segmented_fit_f: true,
            bounds: Vec::new(),
            lm: LmSettings {
                max_iterations: 500,
                ftol: 1e-8,
                xtol: 1e-8,
                ..LmSettings::default()
            },
            initial_guess: Vec::new(),
            bayes: crate::grid::BayesOptions::default(),
            progress: None,
        }
    }
}

/// Per-voxel results (voxels x [S0, f, D, Dstar]).
#[derive(Debug, Clone)]
pub struct IvimFit {
    /// Distinct b-values used, ascending (s/mm^2).
    pub b_values: Vec<f64>,
    /// Parameters S0 (signal units), f, D, D* (mm^2/s).
    pub params: Array2<f64>,
    /// Standard errors (NaN for parameters held fixed without one).
    pub std_errors: Array2<f64>,
    /// R^2 of the final curve against the (averaged, normalised) data.
    pub r2: Array1<f64>,
    /// Per-voxel quality.
    pub status: Vec<QualityCode>,
    /// `bayesian` only: 95 % credible intervals (voxels x [f lo, f hi, D lo,
    /// D hi, D* lo, D* hi]); `params` then hold posterior means (or medians,
    /// as configured) and `std_errors` posterior SDs.
    pub posterior_interval: Option<Array2<f64>>,
    /// `bayesian` with the grid and the population D prior: the fitted
    /// normal's mean and SD (mm^2/s).
    pub d_population: Option<(f64, f64)>,
    /// `bayesian` with the grid and the population D* prior: the fitted
    /// log-normal's median (mm^2/s) and SD of ln D*.
    pub dstar_population: Option<(f64, f64)>,
}

/// Averaged, normalised signals ready to fit.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Distinct b-values, ascending.
    pub b: Vec<f64>,
    /// Voxels x distinct b-values.
    pub data: Array2<f64>,
    /// Voxels failing preparation, with the reason.
    pub bad: Vec<Option<QualityCode>>,
    /// Per-voxel divisor applied (the mean b = 0 signal, or 1).
    pub scale: Vec<f64>,
}

/// Averages repeated b-values and (optionally) normalises to S(b = 0).
/// Voxels with non-finite samples are `NonFiniteInput`; voxels whose b = 0
/// signal is not positive (e.g. all-zero background) are `InvalidSignal`.
pub fn prepare<T: Copy + Into<f64>>(
    signal: ArrayView2<'_, T>,
    b: &[f64],
    normalize: bool,
) -> Result<Prepared> {
    let (n_vox, n_vol) = signal.dim();
    let prep = Preparation::new(b, n_vol, normalize)?;
    let nu = prep.b.len();
    let mut data = vec![0.0; n_vox * nu];
    let mut bad = vec![None; n_vox];
    let mut scale = vec![1.0; n_vox];
    for ((v, out), row) in data.chunks_mut(nu).enumerate().zip(signal.rows()) {
        match prep.voxel(row, out) {
            Ok(s0) => scale[v] = s0,
            Err(q) => bad[v] = Some(q),
        }
    }
    let data = Array2::from_shape_vec((n_vox, nu), data)
        .map_err(|e| OsipyError::data("prepared signal", e.to_string(), "voxels x b-values"))?;
    Ok(Prepared {
        b: prep.b,
        data,
        bad,
        scale,
    })
}

/// How one voxel's signal is prepared ([`prepare`]): the distinct
/// b-values, the volumes averaged into each, and whether to normalise.
/// Fits prepare each voxel as they load it ([`PreparedSignal`]), so no
/// prepared copy of the series is held.
#[derive(Debug, Clone)]
struct Preparation {
    /// Distinct b-values, ascending.
    b: Vec<f64>,
    /// The volumes of each distinct b-value.
    groups: Vec<Vec<usize>>,
    normalize: bool,
}

impl Preparation {
    /// The preparation of `n_vol` volumes at b-values `b`.
    fn new(b: &[f64], n_vol: usize, normalize: bool) -> Result<Preparation> {
        if b.len() != n_vol {
            return Err(OsipyError::data(
                "number of b-values",
                b.len().to_string(),
                format!("{n_vol}, one per volume"),
            ));
        }
        if let Some(x) = b.iter().find(|x| !(**x >= 0.0 && x.is_finite())) {
            return Err(OsipyError::data(
                "b-value",
                x.to_string(),
                "finite, non-negative values in s/mm^2",
            ));
        }
        if b.is_empty() {
            return Err(OsipyError::data(
                "b-values",
                "none",
                "one b-value per volume of the series",
            ));
        }
        let mut uniq: Vec<f64> = b.to_vec();
        uniq.sort_by(|a, c| a.total_cmp(c));
        uniq.dedup();
        if normalize && uniq[0] != 0.0 {
            return Err(OsipyError::data(
                "b-values",
                format!("{uniq:?} (no b = 0)"),
                "a b = 0 volume to normalise to; or set pipeline.normalize_signal = false",
            ));
        }
        let groups = uniq
            .iter()
            .map(|u| (0..n_vol).filter(|&i| b[i] == *u).collect())
            .collect();
        Ok(Preparation {
            b: uniq,
            groups,
            normalize,
        })
    }

    /// Writes the prepared samples of one voxel's `row` (one per volume)
    /// into `out` (one per distinct b-value) and returns the divisor applied
    /// (the b = 0 signal, or 1), or why the voxel cannot be fitted.
    fn voxel<T: Copy + Into<f64>>(
        &self,
        row: ArrayView1<'_, T>,
        out: &mut [f64],
    ) -> Result<f64, QualityCode> {
        if row.iter().any(|x| !(*x).into().is_finite()) {
            return Err(QualityCode::NonFiniteInput);
        }
        for (o, g) in out.iter_mut().zip(&self.groups) {
            *o = g.iter().map(|&i| row[i].into()).sum::<f64>() / g.len() as f64;
        }
        let s0 = if self.b[0] == 0.0 {
            out[0]
        } else {
            out.iter().cloned().fold(f64::MIN, f64::max)
        };
        if !(s0 > 0.0) {
            return Err(QualityCode::InvalidSignal);
        }
        if !self.normalize {
            return Ok(1.0);
        }
        out.iter_mut().for_each(|x| *x /= s0);
        Ok(s0)
    }
}

/// A series (voxels x volumes) whose voxels are prepared as a fit loads
/// them: what [`prepare`] gives, without the prepared copy.
struct PreparedSignal<'a, T> {
    signal: ArrayView2<'a, T>,
    prep: &'a Preparation,
}

impl<T: Copy + Into<f64> + Sync> VoxelData for PreparedSignal<'_, T> {
    fn dim(&self) -> (usize, usize) {
        (self.signal.nrows(), self.prep.b.len())
    }

    fn load(&self, v: usize, out: &mut [f64]) -> Result<(), QualityCode> {
        self.prep.voxel(self.signal.row(v), out).map(|_| ())
    }
}

fn bounds_with(model: &Biexponential, opts: &IvimFitOptions) -> Result<Vec<(f64, f64)>> {
    let mut b = BIEXP_BOUNDS.to_vec();
    for (name, lo, hi) in &opts.bounds {
        let j = param_index(model, name)?;
        if !(lo <= hi) {
            return Err(OsipyError::data(
                format!("bounds of {name}"),
                format!("[{lo}, {hi}]"),
                "lower <= upper",
            ));
        }
        // The rates need finite ranges: the segmented solver searches D* on a
        // grid between its bounds.
        let rate = name == "D" || name == "Dstar";
        if rate && !(*lo >= 0.0 && hi.is_finite() && (name == "D" || *hi > 0.0)) {
            return Err(OsipyError::data(
                format!("bounds of {name}"),
                format!("[{lo}, {hi}]"),
                "finite, non-negative mm^2/s (Dstar upper > 0), e.g. D [0, 0.005], Dstar [0.005, 0.2]",
            ));
        }
        b[j] = (*lo, *hi);
    }
    Ok(b)
}

/// Fits IVIM to `signal` (voxels x volumes; f64, or float32 as read) at
/// b-values `b` (s/mm^2).
///
/// The `segmented` and `full` strategies prepare each voxel as they load
/// it, and the segmented pass writes straight into the result arrays, so a
/// fit holds the series and its results only (the `bayesian` strategy
/// keeps a prepared copy for its samplers).
pub fn fit_ivim<T: Copy + Into<f64> + Sync>(
    signal: ArrayView2<'_, T>,
    b: &[f64],
    mask: Option<&[bool]>,
    opts: &IvimFitOptions,
    device: &Device,
) -> Result<IvimFit> {
    let (n_vox, n_vol) = signal.dim();
    let preparation = Preparation::new(b, n_vol, opts.normalize)?;
    if let Some(m) = mask {
        osipy_core::check_per_voxel("mask length", m.len(), n_vox)?;
    }
    let ub = &preparation.b;
    let bi = Biexponential::new(ub)?;
    let bounds = bounds_with(&bi, opts)?;
    // Starting values of the full fit by parameter index, checked up front.
    let initial_guess = opts
        .initial_guess
        .iter()
        .map(|(name, value)| Ok((param_index(&bi, name)?, *value)))
        .collect::<Result<Vec<_>>>()?;
    let high: Vec<usize> = (0..ub.len()).filter(|&k| ub[k] >= opts.b_threshold).collect();
    if high.len() < 2 {
        return Err(OsipyError::data(
            format!(
                "distinct b-values at or above b_threshold = {} s/mm^2",
                opts.b_threshold
            ),
            format!(
                "{} ({:?})",
                high.len(),
                high.iter().map(|&k| ub[k]).collect::<Vec<_>>()
            ),
            "at least 2 for the segmented step (lower pipeline.b_threshold or acquire more high b-values)",
        ));
    }
    if ub[0] != 0.0 {
        return Err(OsipyError::data(
            "b-values",
            format!("{ub:?} (no b = 0)"),
            "a b = 0 volume (S0 and f need one)",
        ));
    }
    let source = PreparedSignal {
        signal,
        prep: &preparation,
    };
    let nb = ub.len();
    let last_pass = |s: IvimStrategy| {
        if opts.strategy == s {
            opts.progress.as_deref()
        } else {
            None
        }
    };
    let solver = crate::segmented::Segmented::new(
        ub,
        &high,
        [bounds[0], bounds[1], bounds[2], bounds[3]],
        opts.segmented_fit_f,
        opts.lm,
    );
    let segmented_only = opts.strategy == IvimStrategy::Segmented;
    let mut seg = segmented_pass(
        &source,
        &solver,
        mask,
        segmented_only,
        last_pass(IvimStrategy::Segmented),
        device,
    )?;
    let lm_opts = FitOptions {
        lm: opts.lm,
        ..FitOptions::default()
    };
    let mut full_rms: Option<Array1<f64>> = None;
    let grid = opts.strategy == IvimStrategy::Bayesian && opts.bayes.sampler == Sampler::Grid;
    let mut posterior_interval = None;
    let mut dstar_population = None;
    let mut d_population = None;
    // The samplers read each voxel's prepared samples many times.
    let prep = if opts.strategy == IvimStrategy::Bayesian {
        Some(prepare(signal, b, opts.normalize)?)
    } else {
        None
    };
    if let (true, Some(prep)) = (grid, &prep) {
        let fit_mask: Vec<bool> = (0..n_vox)
            .map(|v| mask.is_none_or(|m| m[v]) && prep.bad[v].is_none())
            .collect();
        let post = grid_posterior(prep, &fit_mask, &bounds, opts, device)?;
        for (v, q) in seg.status.iter_mut().enumerate() {
            if fit_mask[v] {
                *q = if post.ok[v] {
                    QualityCode::Converged
                } else {
                    QualityCode::ModelFailure
                };
            }
        }
        seg.params.assign(&post.params);
        seg.se.assign(&post.se);
        posterior_interval = Some(post.interval);
        d_population = post.d_population;
        dstar_population = post.dstar_population;
    } else if opts.strategy != IvimStrategy::Segmented {
        for &(j, value) in &initial_guess {
            seg.params
                .column_mut(j)
                .iter_mut()
                .filter(|x| x.is_finite())
                .for_each(|x| *x = value);
        }
        // The segmented parameters become the starting points (moved, not
        // copied); the full fit replaces them and their standard errors.
        let start = std::mem::replace(&mut seg.params, Array2::zeros((0, 4)));
        seg.se = Array2::zeros((0, 4));
        let full_opts = FitOptions {
            bounds: Some(bounds.clone()),
            initial: InitialGuess::PerVoxel(start),
            progress: last_pass(IvimStrategy::Full)
                .map(|_| opts.progress.clone())
                .unwrap_or_default(),
            ..lm_opts
        };
        // Valid segmented voxels are in the mask and prepared.
        let full_mask: Vec<bool> = seg.status.iter().map(|q| q.is_valid()).collect();
        let r = fit_batch(&bi, &source, Some(&full_mask), &full_opts, device)?;
        drop(full_opts);
        for v in (0..n_vox).filter(|&v| full_mask[v]) {
            seg.status[v] = r.status[v];
        }
        seg.params = r.params;
        seg.se = r.std_errors;
        full_rms = Some(r.rms);
    }
    let SegmentedResult {
        mut params,
        mut se,
        r2,
        mut status,
        scale,
    } = seg;
    let mut r2 = Array1::from(r2);
    if let (false, Some(prep)) = (grid, &prep) {
        let rms = full_rms.unwrap_or_else(|| Array1::from_elem(n_vox, f64::NAN));
        let nbf = nb as f64;
        // Record per voxel: 4 means, 4 SDs, 6 interval bounds, 1 ok flag.
        let mut out = vec![f64::NAN; n_vox * 15];
        map_voxels(
            device,
            &mut out,
            15,
            16,
            last_pass(IvimStrategy::Bayesian),
            || (),
            |_, v, rec| {
                {
                    if !status[v].is_valid() {
                        return;
                    }
                    let start = [params[[v, 0]], params[[v, 1]], params[[v, 2]], params[[v, 3]]];
                    let sigma = rms[v] * (nbf / (nbf - 4.0)).sqrt();
                    // prep.data is a standard-layout array: rows are contiguous.
                    let Some(y) = prep.data.row(v).to_slice() else {
                        return;
                    };
                    if let Some(p) = crate::bayes::sample_voxel(
                        &bi,
                        y,
                        start,
                        sigma,
                        [bounds[1], bounds[2], bounds[3]],
                        &opts.bayes.nuts,
                        v as u64,
                    ) {
                        rec[..4].copy_from_slice(&p.mean);
                        rec[4..8].copy_from_slice(&p.sd);
                        for (q, (lo, hi)) in p.interval.iter().enumerate() {
                            rec[8 + 2 * q] = *lo;
                            rec[9 + 2 * q] = *hi;
                        }
                        rec[14] = 1.0;
                    }
                }
            },
        )?;
        let mut iv = Array2::from_elem((n_vox, 6), f64::NAN);
        for v in 0..n_vox {
            let rec = &out[v * 15..(v + 1) * 15];
            if rec[14] == 1.0 {
                for j in 0..4 {
                    params[[v, j]] = rec[j];
                    se[[v, j]] = rec[4 + j];
                }
                for q in 0..6 {
                    iv[[v, q]] = rec[8 + q];
                }
            } else if status[v].is_valid() {
                status[v] = QualityCode::ModelFailure;
                params.row_mut(v).fill(f64::NAN);
                se.row_mut(v).fill(f64::NAN);
            }
        }
        posterior_interval = Some(iv);
    }

    // R^2 of the final curves (parallel chunks); the segmented pass has it.
    if opts.strategy != IvimStrategy::Segmented {
        let r2v = r2
            .as_slice_mut()
            .ok_or_else(|| OsipyError::data("R^2 layout", "strided", "one contiguous value per voxel"))?;
        map_voxels(
            device,
            r2v,
            1,
            1024,
            None,
            || (vec![0.0; nb], vec![0.0; nb]),
            |(pred, y), v, out| {
                let out = &mut out[0];
                *out = f64::NAN;
                if !status[v].is_valid() || source.load(v, y).is_err() {
                    return;
                }
                let p = [params[[v, 0]], params[[v, 1]], params[[v, 2]], params[[v, 3]]];
                bi.predict(&p, pred);
                let mean = y.iter().sum::<f64>() / nb as f64;
                let sst: f64 = y.iter().map(|x| (x - mean) * (x - mean)).sum();
                let ssr: f64 = pred.iter().zip(y.iter()).map(|(p, x)| (p - x) * (p - x)).sum();
                *out = if sst > 0.0 { 1.0 - ssr / sst } else { 1.0 };
            },
        )?;
    }
    // S0 back to signal units (the segmented pass did it when it was the
    // whole fit: `scale` is then empty).
    for (v, s0) in scale.iter().enumerate() {
        params[[v, 0]] *= s0;
        se[[v, 0]] *= s0;
    }

    Ok(IvimFit {
        b_values: preparation.b.clone(),
        params,
        std_errors: se,
        r2,
        status,
        posterior_interval,
        d_population,
        dstar_population,
    })
}

/// Each column of the column-major `a` cut into `n_parts` slices of
/// [`SEGMENTED_CHUNK`] voxels (the last may be shorter): part i holds the
/// slice of every column.
fn column_parts(a: &mut Array2<f64>, n_parts: usize) -> Result<Vec<Vec<&mut [f64]>>> {
    let n_vox = a.nrows();
    let flat = a
        .as_slice_memory_order_mut()
        .ok_or_else(|| OsipyError::data("result layout", "strided", "contiguous columns"))?;
    let mut parts: Vec<Vec<&mut [f64]>> = (0..n_parts).map(|_| Vec::new()).collect();
    for column in flat.chunks_mut(n_vox.max(1)) {
        for (part, c) in parts.iter_mut().zip(column.chunks_mut(SEGMENTED_CHUNK)) {
            part.push(c);
        }
    }
    Ok(parts)
}

/// Voxels per work item of the segmented pass.
const SEGMENTED_CHUNK: usize = 1024;

/// What the segmented pass gives: the result arrays of [`IvimFit`] and,
/// unless S0 is already back in signal units, each voxel's normalising
/// divisor (else `scale` is empty).
struct SegmentedResult {
    params: Array2<f64>,
    se: Array2<f64>,
    r2: Vec<f64>,
    status: Vec<QualityCode>,
    scale: Vec<f64>,
}

/// One work item of the segmented pass: a chunk of voxels with its slice
/// of every result array (one slice per parameter column).
struct SegmentedPart<'a> {
    params: Vec<&'a mut [f64]>,
    se: Vec<&'a mut [f64]>,
    r2: &'a mut [f64],
    status: &'a mut [QualityCode],
    /// Empty when S0 goes back to signal units in the pass.
    scale: &'a mut [f64],
}

/// Both segmented steps in one parallel pass over the voxels of `mask`,
/// each prepared as it is loaded; the results are written straight into
/// column-major (one contiguous column per parameter) arrays, so no record
/// buffer or prepared copy of the series exists beside them. With
/// `signal_units` (the segmented result is final), S0 and its standard
/// error are multiplied back by the voxel's divisor in the pass and no
/// divisors are kept; otherwise they stay normalised, for a later fit to
/// start from, and the divisors are returned.
fn segmented_pass<T: Copy + Into<f64> + Sync>(
    source: &PreparedSignal<'_, T>,
    solver: &crate::segmented::Segmented<'_>,
    mask: Option<&[bool]>,
    signal_units: bool,
    progress: Option<&std::sync::atomic::AtomicUsize>,
    device: &Device,
) -> Result<SegmentedResult> {
    use ndarray::ShapeBuilder;
    let (n_vox, nb) = source.dim();
    // Zeroed (pages untouched until written), then set to NaN part by part
    // on the workers: filling them here was a serial pause before every
    // pass (a few ms per 2^18 voxels, once per slab of an IVIM run).
    let mut params = Array2::zeros((n_vox, 4).f());
    let mut se = Array2::zeros((n_vox, 4).f());
    let mut r2 = vec![0.0; n_vox];
    let mut status = vec![QualityCode::NotFitted; n_vox];
    let mut scale = if signal_units {
        Vec::new()
    } else {
        vec![1.0; n_vox]
    };
    let n_parts = n_vox.div_ceil(SEGMENTED_CHUNK);
    let scale_parts = scale
        .chunks_mut(SEGMENTED_CHUNK)
        .chain(std::iter::repeat_with(|| -> &mut [f64] { &mut [] }));
    let mut parts: Vec<SegmentedPart<'_>> = column_parts(&mut params, n_parts)?
        .into_iter()
        .zip(column_parts(&mut se, n_parts)?)
        .zip(r2.chunks_mut(SEGMENTED_CHUNK))
        .zip(status.chunks_mut(SEGMENTED_CHUNK))
        .zip(scale_parts)
        .map(|((((params, se), r2), status), scale)| SegmentedPart {
            params,
            se,
            r2,
            status,
            scale,
        })
        .collect();
    const REC: usize = crate::segmented::REC;
    map_parts(
        device,
        &mut parts,
        || (solver.scratch(), vec![0.0; nb], [0.0; REC]),
        |(scratch, y, rec), i, part| {
            let first = i * SEGMENTED_CHUNK;
            for column in part.params.iter_mut().chain(part.se.iter_mut()) {
                column.fill(f64::NAN);
            }
            part.r2.fill(f64::NAN);
            for k in 0..part.r2.len() {
                let v = first + k;
                if !mask.is_none_or(|m| m[v]) {
                    continue;
                }
                match source.prep.voxel(source.signal.row(v), y) {
                    Err(q) => part.status[k] = q,
                    Ok(s0) => {
                        solver.voxel(y, scratch, rec);
                        let q = QualityCode::from_code(rec[9] as u8).unwrap_or(QualityCode::ModelFailure);
                        part.status[k] = q;
                        if q.is_valid() {
                            for j in 0..4 {
                                part.params[j][k] = rec[j];
                                part.se[j][k] = rec[4 + j];
                            }
                            part.r2[k] = rec[8];
                        }
                        if signal_units {
                            part.params[0][k] *= s0;
                            part.se[0][k] *= s0;
                        } else {
                            part.scale[k] = s0;
                        }
                    }
                }
            }
            if let Some(p) = progress {
                p.fetch_add(part.r2.len(), std::sync::atomic::Ordering::Relaxed);
            }
        },
    )?;
    drop(parts);
    Ok(SegmentedResult {
        params,
        se,
        r2,
        status,
        scale,
    })
}

/// Result of [`grid_posterior`].
struct GridResult {
    params: Array2<f64>,
    se: Array2<f64>,
    interval: Array2<f64>,
    ok: Vec<bool>,
    d_population: Option<(f64, f64)>,
    dstar_population: Option<(f64, f64)>,
}

/// Voxels the population prior of D* is fitted to, at most (evenly strided
/// over the fitted voxels): enough to pin a mean and SD, and a bounded cost
/// on large volumes.
const POPULATION_VOXELS: usize = 5_000;
/// Cells of ln D* in the population fit.
const POPULATION_BINS: usize = 64;

/// The `bayesian` strategy on the grid ([`crate::grid`]): with the
/// population prior, first the D* prior from (a stride of) the fitted
/// voxels, then every voxel's posterior under it.
fn grid_posterior(
    prep: &Prepared,
    fit_mask: &[bool],
    bounds: &[(f64, f64)],
    opts: &IvimFitOptions,
    device: &Device,
) -> Result<GridResult> {
    let b3 = [bounds[1], bounds[2], bounds[3]];
    let bo: &BayesOptions = &opts.bayes;
    let nb = prep.b.len();
    let n_vox = fit_mask.len();
    let flat = prep
        .data
        .as_slice()
        .ok_or_else(|| OsipyError::data("prepared signal layout", "strided", "contiguous rows"))?;
    let settings = |d_prior, dstar_prior| GridSettings {
        points: bo.grid_points,
        d_prior,
        dstar_prior,
        ..GridSettings::default()
    };
    let make = |d_prior, dstar_prior| {
        GridPosterior::new(&prep.b, b3, settings(d_prior, dstar_prior)).ok_or_else(|| {
            OsipyError::Validation(format!(
                "the grid posterior needs finite bounds with lower < upper, a positive lower bound of Dstar for a log prior (Dstar bounds [{}, {}]) and pipeline.fitting.bayesian.grid_points >= 2 (found {})",
                b3[2].0, b3[2].1, bo.grid_points
            ))
        })
    };
    // Population priors: one pass over (a stride of) the fitted voxels
    // under flat priors, then EM per rate.
    let want_d = bo.d_prior == DPrior::Population;
    let want_s = bo.dstar_prior == DstarPrior::Population;
    let mut d_prior = RatePrior::Uniform;
    let mut dstar_prior = match bo.dstar_prior {
        DstarPrior::Uniform => RatePrior::Uniform,
        _ => RatePrior::LogUniform,
    };
    let (mut d_population, mut dstar_population) = (None, None);
    if want_d || want_s {
        let first = make(RatePrior::Uniform, RatePrior::LogUniform)?;
        let fitted: Vec<usize> = (0..n_vox).filter(|&v| fit_mask[v]).collect();
        let stride = fitted.len().div_ceil(POPULATION_VOXELS).max(1);
        let chosen: Vec<usize> = fitted.iter().copied().step_by(stride).collect();
        const K: usize = POPULATION_BINS;
        let mut lik = vec![0.0; chosen.len() * 2 * K];
        map_voxels(
            device,
            &mut lik,
            2 * K,
            256,
            None,
            || first.scratch(),
            |scratch, i, out| {
                let v = chosen[i];
                let (d, s) = out.split_at_mut(K);
                if !first.rate_marginals(&flat[v * nb..(v + 1) * nb], scratch, d, s) {
                    out.fill(0.0);
                }
            },
        )?;
        let none = || {
            OsipyError::Fitting(format!(
                "no voxel has a finite IVIM posterior ({} voxels to fit): the population priors cannot be estimated",
                fitted.len()
            ))
        };
        let rows = |offset: usize| -> Vec<f64> {
            lik.chunks_exact(2 * K)
                .flat_map(|r| r[offset..offset + K].iter().copied())
                .collect()
        };
        if want_d {
            let (mean, sd) = crate::grid::population_prior(&rows(0), K, b3[1], false).ok_or_else(none)?;
            d_prior = RatePrior::Normal { mean, sd };
            d_population = Some((mean, sd));
        }
        if want_s {
            let (median, sigma) = crate::grid::population_prior(&rows(K), K, b3[2], true).ok_or_else(none)?;
            dstar_prior = RatePrior::LogNormal { median, sigma };
            dstar_population = Some((median, sigma));
        }
    }
    let post = make(d_prior, dstar_prior)?;
    // Record: 4 values, 4 SDs, 6 interval bounds, 1 ok flag.
    const R: usize = 15;
    let mut rec = vec![f64::NAN; n_vox * R];
    map_voxels(
        device,
        &mut rec,
        R,
        256,
        opts.progress.as_deref(),
        || post.scratch(),
        |scratch, v, out| {
            if !fit_mask[v] {
                return;
            }
            if let Some(p) = post.voxel(&flat[v * nb..(v + 1) * nb], scratch) {
                out[..4].copy_from_slice(match bo.summary {
                    Summary::Mean => &p.mean,
                    Summary::Median => &p.median,
                });
                out[4..8].copy_from_slice(&p.sd);
                for (q, (lo, hi)) in p.interval.iter().enumerate() {
                    out[8 + 2 * q] = *lo;
                    out[9 + 2 * q] = *hi;
                }
                out[14] = 1.0;
            }
        },
    )?;
    let ok: Vec<bool> = (0..n_vox).map(|v| rec[v * R + 14] == 1.0).collect();
    let col = |range: std::ops::Range<usize>| {
        let w = range.len();
        Array2::from_shape_fn((n_vox, w), |(v, j)| {
            if ok[v] {
                rec[v * R + range.start + j]
            } else {
                f64::NAN
            }
        })
    };
    Ok(GridResult {
        params: col(0..4),
        se: col(4..8),
        interval: col(8..14),
        ok,
        d_population,
        dstar_population,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{generate, IvimPhantomSpec, Noise};

    /// The segmented pass, which prepares each voxel as it loads it and
    /// writes column-major results chunk by chunk, gives what the solver
    /// gives on the rows of [`prepare`] (the prepared copy it replaces),
    /// bit for bit: over several chunks, with masked, non-finite, zero and
    /// repeated-b voxels, on 1 and 2 threads, and through `fit_ivim`.
    #[test]
    fn segmented_pass_on_load_equals_the_solver_on_the_prepared_copy() {
        let spec = IvimPhantomSpec {
            shape: [15, 13, 12],
            snr: Some(30.0),
            noise: Noise::Rician,
            seed: 7,
            ..IvimPhantomSpec::default()
        };
        let ph = generate(&spec).unwrap();
        // A repeated b-value, so that preparing averages two volumes.
        let mut b = spec.b_values.clone();
        let repeat = b.len() - 1;
        b.push(b[repeat]);
        let base = ph.voxels().mapv(|x| x as f32);
        let n_vox = base.nrows();
        assert!(n_vox > 2 * SEGMENTED_CHUNK);
        let mut data = ndarray::Array2::zeros((n_vox, b.len()));
        for (v, mut row) in data.rows_mut().into_iter().enumerate() {
            for (t, x) in row.iter_mut().enumerate() {
                let src = base[[v, t.min(base.ncols() - 1)]];
                // The repeat differs a little, so that the average is exact work.
                *x = if t == base.ncols() { src * 1.01 } else { src };
            }
        }
        data[[3, 2]] = f32::NAN;
        data.row_mut(1500).fill(0.0);
        let mask: Vec<bool> = (0..n_vox).map(|v| v % 97 != 5).collect();

        let prep = prepare(data.view(), &b, true).unwrap();
        let high: Vec<usize> = (0..prep.b.len()).filter(|&k| prep.b[k] >= 200.0).collect();
        let bi = Biexponential::new(&prep.b).unwrap();
        let opts = IvimFitOptions::default();
        let bounds = bounds_with(&bi, &opts).unwrap();
        let solver = crate::segmented::Segmented::new(
            &prep.b,
            &high,
            [bounds[0], bounds[1], bounds[2], bounds[3]],
            true,
            opts.lm,
        );
        let mut scratch = solver.scratch();
        let mut rec = [0.0; crate::segmented::REC];
        let preparation = Preparation::new(&b, b.len(), true).unwrap();
        let source = PreparedSignal {
            signal: data.view(),
            prep: &preparation,
        };
        let mut seen_codes = std::collections::BTreeSet::new();
        for (threads, signal_units) in [(1, false), (2, false), (2, true)] {
            let device = Device::Cpu { threads };
            let got = segmented_pass(&source, &solver, Some(&mask), signal_units, None, &device).unwrap();
            // S0 and its SE in signal units, or normalised with the divisors kept.
            let unit = |v: usize, j: usize| {
                if signal_units && j == 0 {
                    prep.scale[v]
                } else {
                    1.0
                }
            };
            assert_eq!(got.scale.len(), if signal_units { 0 } else { n_vox });
            for v in 0..n_vox {
                let expected = if !mask[v] {
                    QualityCode::NotFitted
                } else if let Some(q) = prep.bad[v] {
                    q
                } else {
                    solver.voxel(prep.data.row(v).as_slice().unwrap(), &mut scratch, &mut rec);
                    QualityCode::from_code(rec[9] as u8).unwrap()
                };
                seen_codes.insert(expected.code());
                assert_eq!(got.status[v], expected, "voxel {v}");
                if expected.is_valid() {
                    for j in 0..4 {
                        assert_eq!(
                            got.params[[v, j]].to_bits(),
                            (rec[j] * unit(v, j)).to_bits(),
                            "voxel {v} parameter {j}"
                        );
                        assert_eq!(
                            got.se[[v, j]].to_bits(),
                            (rec[4 + j] * unit(v, j)).to_bits(),
                            "voxel {v} SE {j}"
                        );
                    }
                    assert_eq!(got.r2[v].to_bits(), rec[8].to_bits(), "voxel {v} R^2");
                    if !signal_units {
                        assert_eq!(got.scale[v].to_bits(), prep.scale[v].to_bits(), "voxel {v} scale");
                    }
                } else {
                    assert!(got.params.row(v).iter().all(|x| x.is_nan()), "voxel {v}");
                    assert!(got.se.row(v).iter().all(|x| x.is_nan()), "voxel {v} SE");
                    assert!(got.r2[v].is_nan(), "voxel {v} R^2");
                }
            }
        }
        // Fitted, masked, non-finite and invalid voxels were all compared.
        for q in [
            QualityCode::NotFitted,
            QualityCode::NonFiniteInput,
            QualityCode::InvalidSignal,
        ] {
            assert!(seen_codes.contains(&q.code()), "no voxel with {q:?}");
        }
        assert!(seen_codes
            .iter()
            .any(|c| QualityCode::from_code(*c).unwrap().is_valid()));

        // Through fit_ivim, S0 comes back in signal units.
        let fit = fit_ivim(data.view(), &b, Some(&mask), &opts, &Device::Cpu { threads: 2 }).unwrap();
        for v in (0..n_vox).filter(|&v| fit.status[v].is_valid()) {
            solver.voxel(prep.data.row(v).as_slice().unwrap(), &mut scratch, &mut rec);
            assert_eq!(
                fit.params[[v, 0]].to_bits(),
                (rec[0] * prep.scale[v]).to_bits(),
                "voxel {v}"
            );
            assert_eq!(fit.params[[v, 2]].to_bits(), rec[2].to_bits(), "voxel {v}");
        }
    }

    /// A series without volumes is an error naming the b-values, not a panic.
    #[test]
    fn no_b_values_is_an_error() {
        let empty = ndarray::Array2::<f32>::zeros((4, 0));
        let opts = IvimFitOptions::default();
        let e = fit_ivim(empty.view(), &[], None, &opts, &Device::Cpu { threads: 1 }).unwrap_err();
        assert!(e.to_string().contains("b-values"), "{e}");
        assert!(prepare(empty.view(), &[], false).is_err());
    }
}
