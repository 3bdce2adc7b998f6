//! Voxel-wise fitting of a composed model: the brute-force start
//! ([`MultiCompartment`]'s initial guess), then the shared bounded LM.

use crate::model::MultiCompartment;
use ndarray::{Array2, ArrayView2};
use osipy_backend::Device;
use osipy_core::{OsipyError, Result};
use osipy_fitting::{fit_batch, BatchFit, FitOptions, InitialGuess, Model};

/// The data the model fits: the signal itself, or for a spherical-mean
/// model the mean over each shell's volumes (voxels x shells).
pub fn model_data(
    model: &MultiCompartment,
    scheme: &crate::Scheme,
    signal: ArrayView2<'_, f64>,
) -> Result<Array2<f64>> {
    if signal.ncols() != scheme.len() {
        return Err(OsipyError::data(
            "DWI volumes",
            signal.ncols().to_string(),
            format!("{}, one per b-value", scheme.len()),
        ));
    }
    if !model.spherical_mean() {
        return Ok(signal.to_owned());
    }
    let mut out = Array2::zeros((signal.nrows(), scheme.shells.len()));
    for (v, row) in signal.outer_iter().enumerate() {
        for (k, sh) in scheme.shells.iter().enumerate() {
            out[[v, k]] = sh.volumes.iter().map(|&i| row[i]).sum::<f64>() / sh.volumes.len() as f64;
        }
    }
    Ok(out)
}

/// Fits `model` to `signal` (voxels x volumes, in the scheme's order) in
/// the voxels of `mask`, by LM from each of the `starts` best points of the
/// brute-force grid ([`MultiCompartment::grid_starts`], at most
/// [`crate::model::MAX_STARTS`]), keeping each voxel's fit with the lowest
/// residual. Orientations come back folded onto the upper hemisphere
/// ([`MultiCompartment::canonical_orientation`]).
pub fn fit_microstructure(
    model: &MultiCompartment,
    scheme: &crate::Scheme,
    signal: ArrayView2<'_, f64>,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    starts: usize,
    device: &Device,
) -> Result<BatchFit> {
    let data = model_data(model, scheme, signal)?;
    let np = model.n_params();
    let starts = starts.clamp(1, crate::model::MAX_STARTS);
    let mut fit = if starts == 1 {
        fit_batch(model, data.view(), mask, opts, device)?
    } else {
        // Every voxel's starts in one parallel pass, then one LM pass per start.
        let nv = data.nrows();
        let mut starts_flat = vec![f64::NAN; nv * starts * np];
        osipy_fitting::map_voxels(
            device,
            &mut starts_flat,
            starts * np,
            opts.chunk_voxels,
            None,
            || vec![0.0; model.scratch_len()],
            |buf, v, out| {
                if mask.is_none_or(|m| m[v]) {
                    if let Some(row) = data.row(v).as_slice() {
                        model.grid_starts(row, out, buf);
                    }
                }
            },
        )?;
        let guesses = Array2::from_shape_vec((nv, starts * np), starts_flat)
            .map_err(|e| OsipyError::Fitting(format!("grid starts: {e}")))?;
        let mut best: Option<BatchFit> = None;
        for k in 0..starts {
            let init = guesses.slice(ndarray::s![.., k * np..(k + 1) * np]).to_owned();
            let o = FitOptions {
                initial: InitialGuess::PerVoxel(init),
                progress: if k + 1 == starts {
                    opts.progress.clone()
                } else {
                    None
                },
                ..opts.clone()
            };
            let f = fit_batch(model, data.view(), mask, &o, device)?;
            best = Some(match best {
                None => f,
                Some(mut b) => {
                    for v in 0..f.rms.len() {
                        if f.rms[v] < b.rms[v] || (!b.rms[v].is_finite() && f.rms[v].is_finite()) {
                            b.params.row_mut(v).assign(&f.params.row(v));
                            b.std_errors.row_mut(v).assign(&f.std_errors.row(v));
                            b.r2[v] = f.r2[v];
                            b.rms[v] = f.rms[v];
                            b.iterations[v] = f.iterations[v];
                            b.status[v] = f.status[v];
                        }
                    }
                    b
                }
            });
        }
        best.ok_or_else(|| OsipyError::Fitting("no start was fitted".into()))?
    };
    let (mut x, mut se) = (vec![0.0; np], vec![0.0; np]);
    for (mut row, mut se_row) in fit.params.outer_iter_mut().zip(fit.std_errors.outer_iter_mut()) {
        if row.iter().all(|v| v.is_finite()) {
            x.iter_mut().zip(row.iter()).for_each(|(a, b)| *a = *b);
            se.iter_mut().zip(se_row.iter()).for_each(|(a, b)| *a = *b);
            model.canonical_orientation(&mut x, Some(&mut se));
            row.iter_mut().zip(&x).for_each(|(a, b)| *a = *b);
            se_row.iter_mut().zip(&se).for_each(|(a, b)| *a = *b);
        }
    }
    Ok(fit)
}

/// Posterior sampling (NUTS, [`osipy_fitting::bayes`]) of every voxel that
/// `lm` fitted validly, started from that fit: uniform priors on the
/// model's bounds (S0 on (0, 2 max y]), Jeffreys prior on the noise SD. The
/// returned fit holds posterior means as parameters and posterior SDs as
/// standard errors, with R^2 and RMS of the posterior-mean signal.
/// Orientations are summarised as directions: the mean of the draws' unit
/// vectors (each turned onto the hemisphere of the LM direction), folded as
/// in [`fit_microstructure`]; their theta and phi SDs are those of the draws
/// turned alike, with phi unwrapped about the mean. A voxel whose sampling
/// fails gets status `model_failure`. `progress`, when given, counts the
/// voxels done.
pub fn sample_microstructure(
    model: &MultiCompartment,
    scheme: &crate::Scheme,
    signal: ArrayView2<'_, f64>,
    lm: &BatchFit,
    settings: &osipy_fitting::bayes::BayesSettings,
    device: &Device,
    progress: Option<&std::sync::atomic::AtomicUsize>,
) -> Result<BatchFit> {
    use crate::compartment::direction;
    use osipy_core::QualityCode;
    let data = model_data(model, scheme, signal)?;
    let (nv, np, ns) = (data.nrows(), model.n_params(), model.n_samples());
    if lm.params.nrows() != nv || lm.params.ncols() != np {
        return Err(OsipyError::Fitting(format!(
            "the least-squares fit has {} x {} parameters; expected {nv} x {np}",
            lm.params.nrows(),
            lm.params.ncols()
        )));
    }
    let specs = model.params();
    let orient = model.orientations().to_vec();
    // Record: means, SDs, R^2, RMS, ok.
    let rec_len = 2 * np + 3;
    let mut out = vec![f64::NAN; nv * rec_len];
    osipy_fitting::map_voxels(
        device,
        &mut out,
        rec_len,
        8,
        progress,
        || vec![0.0; ns],
        |pred, v, rec| {
            if !lm.status[v].is_valid() {
                return;
            }
            let Some(y) = data.row(v).to_slice() else {
                return;
            };
            let ymax = y.iter().copied().fold(0.0, f64::max);
            let bounds: Vec<(f64, f64)> = specs
                .iter()
                .enumerate()
                .map(|(j, s)| if j == 0 { (0.0, 2.0 * ymax) } else { s.bounds })
                .collect();
            let start: Vec<f64> = lm.params.row(v).to_vec();
            let dof = (ns as f64 - np as f64).max(1.0);
            // The sampler starts from the residual SD (sigma is sampled). A
            // residual of 0 makes the posterior improper under the Jeffreys
            // prior: such a voxel is not sampled (status model_failure).
            let sigma = lm.rms[v] * (ns as f64 / dof).sqrt();
            let Some(p) =
                osipy_fitting::bayes::sample_posterior(model, y, &start, sigma, &bounds, settings, v as u64)
            else {
                return;
            };
            let mut mean = p.mean.clone();
            let mut sd = p.sd.clone();
            let k = p.draws.len() / np;
            for &(kt, kp) in &orient {
                let n0 = direction(start[kt], start[kp]);
                let aligned = |i: usize| {
                    let d = &p.draws[i * np..(i + 1) * np];
                    let n = direction(d[kt], d[kp]);
                    let s = if n[0] * n0[0] + n[1] * n0[1] + n[2] * n0[2] < 0.0 {
                        -1.0
                    } else {
                        1.0
                    };
                    [s * n[0], s * n[1], s * n[2]]
                };
                let mut m = [0.0; 3];
                for i in 0..k {
                    let n = aligned(i);
                    (0..3).for_each(|c| m[c] += n[c]);
                }
                let norm = (m[0] * m[0] + m[1] * m[1] + m[2] * m[2]).sqrt();
                if !(norm > 0.0) {
                    return;
                }
                let (theta, phi) = ((m[2] / norm).clamp(-1.0, 1.0).acos(), m[1].atan2(m[0]));
                let (mut st, mut sp) = (0.0, 0.0);
                for i in 0..k {
                    let n = aligned(i);
                    let dt = n[2].clamp(-1.0, 1.0).acos() - theta;
                    let dp = (n[1].atan2(n[0]) - phi + std::f64::consts::PI)
                        .rem_euclid(2.0 * std::f64::consts::PI)
                        - std::f64::consts::PI;
                    st += dt * dt;
                    sp += dp * dp;
                }
                let dof = (k as f64 - 1.0).max(1.0);
                mean[kt] = theta;
                mean[kp] = phi;
                sd[kt] = (st / dof).sqrt();
                sd[kp] = (sp / dof).sqrt();
            }
            model.canonical_orientation(&mut mean, Some(&mut sd));
            model.predict(&mean, pred);
            let ybar = y.iter().sum::<f64>() / ns as f64;
            let (mut ssr, mut sst) = (0.0, 0.0);
            for (a, b) in y.iter().zip(pred.iter()) {
                ssr += (a - b) * (a - b);
                sst += (a - ybar) * (a - ybar);
            }
            rec[..np].copy_from_slice(&mean);
            rec[np..2 * np].copy_from_slice(&sd);
            rec[2 * np] = if sst > 0.0 { 1.0 - ssr / sst } else { f64::NAN };
            rec[2 * np + 1] = (ssr / ns as f64).sqrt();
            rec[2 * np + 2] = 1.0;
        },
    )?;
    let mut fit = lm.clone();
    for v in 0..nv {
        let rec = &out[v * rec_len..(v + 1) * rec_len];
        if rec[2 * np + 2] == 1.0 {
            fit.params
                .row_mut(v)
                .assign(&ndarray::ArrayView1::from(&rec[..np]));
            fit.std_errors
                .row_mut(v)
                .assign(&ndarray::ArrayView1::from(&rec[np..2 * np]));
            fit.r2[v] = rec[2 * np];
            fit.rms[v] = rec[2 * np + 1];
        } else if fit.status[v].is_valid() {
            fit.status[v] = QualityCode::ModelFailure;
            fit.params.row_mut(v).fill(f64::NAN);
            fit.std_errors.row_mut(v).fill(f64::NAN);
        }
    }
    Ok(fit)
}
