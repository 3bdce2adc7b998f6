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
use ndarray::{Array1, Array2, ArrayView2};
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_fitting::{fit_batch, map_voxels, param_index, FitOptions, InitialGuess, LmSettings, Model};

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
    let groups: Vec<Vec<usize>> = uniq
        .iter()
        .map(|u| (0..n_vol).filter(|&i| b[i] == *u).collect())
        .collect();
    let nu = uniq.len();
    let mut data = vec![0.0; n_vox * nu];
    let mut bad = vec![None; n_vox];
    let mut scale = vec![1.0; n_vox];
    for ((v, out), row) in data.chunks_mut(nu).enumerate().zip(signal.rows()) {
        if row.iter().any(|x| !(*x).into().is_finite()) {
            bad[v] = Some(QualityCode::NonFiniteInput);
            continue;
        }
        for (o, g) in out.iter_mut().zip(&groups) {
            *o = g.iter().map(|&i| row[i].into()).sum::<f64>() / g.len() as f64;
        }
        let s0 = if uniq[0] == 0.0 {
            out[0]
        } else {
            out.iter().cloned().fold(f64::MIN, f64::max)
        };
        if !(s0 > 0.0) {
            bad[v] = Some(QualityCode::InvalidSignal);
            continue;
        }
        if normalize {
            out.iter_mut().for_each(|x| *x /= s0);
            scale[v] = s0;
        }
    }
    let data = Array2::from_shape_vec((n_vox, nu), data)
        .map_err(|e| OsipyError::data("prepared signal", e.to_string(), "voxels x b-values"))?;
    Ok(Prepared {
        b: uniq,
        data,
        bad,
        scale,
    })
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
pub fn fit_ivim<T: Copy + Into<f64>>(
    signal: ArrayView2<'_, T>,
    b: &[f64],
    mask: Option<&[bool]>,
    opts: &IvimFitOptions,
    device: &Device,
) -> Result<IvimFit> {
    let prep = prepare(signal, b, opts.normalize)?;
    let n_vox = signal.nrows();
    if let Some(m) = mask {
        osipy_core::check_per_voxel("mask length", m.len(), n_vox)?;
    }
    let bi = Biexponential::new(&prep.b)?;
    let bounds = bounds_with(&bi, opts)?;
    // Starting values of the full fit by parameter index, checked up front.
    let initial_guess = opts
        .initial_guess
        .iter()
        .map(|(name, value)| Ok((param_index(&bi, name)?, *value)))
        .collect::<Result<Vec<_>>>()?;
    let high: Vec<usize> = (0..prep.b.len())
        .filter(|&k| prep.b[k] >= opts.b_threshold)
        .collect();
    if high.len() < 2 {
        return Err(OsipyError::data(
            format!(
                "distinct b-values at or above b_threshold = {} s/mm^2",
                opts.b_threshold
            ),
            format!(
                "{} ({:?})",
                high.len(),
                high.iter().map(|&k| prep.b[k]).collect::<Vec<_>>()
            ),
            "at least 2 for the segmented step (lower pipeline.b_threshold or acquire more high b-values)",
        ));
    }
    if prep.b[0] != 0.0 {
        return Err(OsipyError::data(
            "b-values",
            format!("{:?} (no b = 0)", prep.b),
            "a b = 0 volume (S0 and f need one)",
        ));
    }
    let fit_mask: Vec<bool> = (0..n_vox)
        .map(|v| mask.is_none_or(|m| m[v]) && prep.bad[v].is_none())
        .collect();
    // Both segmented steps in one parallel pass (see `segmented`).
    let nb = prep.b.len();
    let solver = crate::segmented::Segmented::new(
        &prep.b,
        &high,
        [bounds[0], bounds[1], bounds[2], bounds[3]],
        opts.segmented_fit_f,
        opts.lm,
    );
    // Standard layout by construction: voxel v is `flat[v * nb..(v + 1) * nb]`.
    let flat = prep
        .data
        .as_slice()
        .ok_or_else(|| OsipyError::data("prepared signal layout", "strided", "contiguous rows"))?;
    const REC: usize = crate::segmented::REC;
    let mut rec = vec![f64::NAN; n_vox * REC];
    let last_pass = |s: IvimStrategy| {
        if opts.strategy == s {
            opts.progress.as_deref()
        } else {
            None
        }
    };
    map_voxels(
        device,
        &mut rec,
        REC,
        1024,
        last_pass(IvimStrategy::Segmented),
        || solver.scratch(),
        |scratch, v, out| {
            if fit_mask[v] {
                solver.voxel(&flat[v * nb..(v + 1) * nb], scratch, out);
            }
        },
    )?;
    let mut params = Array2::from_elem((n_vox, 4), f64::NAN);
    let mut se = Array2::from_elem((n_vox, 4), f64::NAN);
    let mut r2 = Array1::from_elem(n_vox, f64::NAN);
    let mut status: Vec<QualityCode> = (0..n_vox)
        .map(|v| {
            if let Some(q) = prep.bad[v].filter(|_| mask.is_none_or(|m| m[v])) {
                q
            } else if !fit_mask[v] {
                QualityCode::NotFitted
            } else {
                let r = &rec[v * REC..(v + 1) * REC];
                QualityCode::from_code(r[9] as u8).unwrap_or(QualityCode::ModelFailure)
            }
        })
        .collect();
    for v in (0..n_vox).filter(|&v| status[v].is_valid()) {
        let r = &rec[v * REC..(v + 1) * REC];
        for j in 0..4 {
            params[[v, j]] = r[j];
            se[[v, j]] = r[4 + j];
        }
        r2[v] = r[8];
    }
    let lm_opts = FitOptions {
        lm: opts.lm,
        ..FitOptions::default()
    };
    let mut full_rms: Option<Array1<f64>> = None;
    let grid = opts.strategy == IvimStrategy::Bayesian && opts.bayes.sampler == Sampler::Grid;
    let mut posterior_interval = None;
    let mut dstar_population = None;
    let mut d_population = None;
    if grid {
        let post = grid_posterior(&prep, &fit_mask, &bounds, opts, device)?;
        status = (0..n_vox)
            .map(|v| {
                if fit_mask[v] {
                    if post.ok[v] {
                        QualityCode::Converged
                    } else {
                        QualityCode::ModelFailure
                    }
                } else {
                    status[v]
                }
            })
            .collect();
        params = post.params;
        se = post.se;
        posterior_interval = Some(post.interval);
        d_population = post.d_population;
        dstar_population = post.dstar_population;
    } else if opts.strategy != IvimStrategy::Segmented {
        for &(j, value) in &initial_guess {
            params
                .column_mut(j)
                .iter_mut()
                .filter(|x| x.is_finite())
                .for_each(|x| *x = value);
        }
        let valid: Vec<bool> = status.iter().map(|q| q.is_valid()).collect();
        let full_opts = FitOptions {
            bounds: Some(bounds.clone()),
            initial: InitialGuess::PerVoxel(params.clone()),
            progress: last_pass(IvimStrategy::Full)
                .map(|_| opts.progress.clone())
                .unwrap_or_default(),
            ..lm_opts
        };
        let full_mask: Vec<bool> = (0..n_vox).map(|v| fit_mask[v] && valid[v]).collect();
        let r = fit_batch(&bi, prep.data.view(), Some(&full_mask), &full_opts, device)?;
        for v in (0..n_vox).filter(|&v| full_mask[v]) {
            status[v] = r.status[v];
        }
        params = r.params;
        se = r.std_errors;
        full_rms = Some(r.rms);
    }
    if opts.strategy == IvimStrategy::Bayesian && !grid {
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
        let mut r2v = vec![f64::NAN; n_vox];
        map_voxels(
            device,
            &mut r2v,
            1,
            1024,
            None,
            || vec![0.0; nb],
            |pred, v, out| {
                let out = &mut out[0];
                if !status[v].is_valid() {
                    return;
                }
                let p = [params[[v, 0]], params[[v, 1]], params[[v, 2]], params[[v, 3]]];
                bi.predict(&p, pred);
                let y = prep.data.row(v);
                let mean = y.mean().unwrap_or(0.0);
                let sst: f64 = y.iter().map(|x| (x - mean) * (x - mean)).sum();
                let ssr: f64 = pred.iter().zip(y).map(|(p, x)| (p - x) * (p - x)).sum();
                *out = if sst > 0.0 { 1.0 - ssr / sst } else { 1.0 };
            },
        )?;
        r2 = Array1::from(r2v);
    }
    // S0 back to signal units.
    for v in 0..n_vox {
        params[[v, 0]] *= prep.scale[v];
        se[[v, 0]] *= prep.scale[v];
    }

    Ok(IvimFit {
        b_values: prep.b,
        params,
        std_errors: se,
        r2,
        status,
        posterior_interval,
        d_population,
        dstar_population,
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
