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
