//! Synthetic DWI from known parameters of any composed model, with Gaussian
//! or Rician noise (the magnitude of a complex signal with Gaussian noise of
//! the same SD in both channels; Gudbjartsson & Patz 1995), SD = S0 / SNR,
//! seeded.

use crate::model::MultiCompartment;
use ndarray::{Array2, ArrayView2};
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;
use osipy_fitting::Model;

/// Noise model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// Additive Gaussian.
    Gaussian,
    /// Rician (magnitude of complex Gaussian).
    Rician,
}

/// Signals (voxels x samples) of `model` at `params` (voxels x the model's
/// free parameters, internal units), with noise of SD S0 / `snr` when
/// `snr` is given.
pub fn simulate_signals(
    model: &MultiCompartment,
    params: ArrayView2<'_, f64>,
    snr: Option<f64>,
    noise: Noise,
    seed: u64,
) -> Result<Array2<f64>> {
    if params.ncols() != model.n_params() {
        return Err(OsipyError::data(
            "phantom parameters per voxel",
            params.ncols().to_string(),
            format!("{} ({})", model.n_params(), model.param_names().join(", ")),
        ));
    }
    let n = model.n_samples();
    let mut out = Array2::zeros((params.nrows(), n));
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0; params.ncols()];
    let mut s = vec![0.0; n];
    for (v, p) in params.outer_iter().enumerate() {
        x.iter_mut().zip(p.iter()).for_each(|(a, b)| *a = *b);
        model.predict(&x, &mut s);
        for i in 0..n {
            out[[v, i]] = match snr {
                None => s[i],
                Some(snr) => {
                    let sd = x[0] / snr;
                    match noise {
                        Noise::Gaussian => s[i] + sd * rng.normal(),
                        Noise::Rician => {
                            let (re, im) = (s[i] + sd * rng.normal(), sd * rng.normal());
                            (re * re + im * im).sqrt()
                        }
                    }
                }
            };
        }
    }
    Ok(out)
}
