//! # osipy-dsc
//!
//! Dynamic susceptibility contrast (DSC) MRI: signal to deltaR2\*
//! ([`signal`]), bolus-arrival detection, deconvolution by the AIF
//! ([`deconv`]: `ssvd`, `csvd`, `osvd`, `tikhonov`; [`vascular`]: the
//! model-based `vascular_model` with standard errors), contrast-leakage
//! correction ([`leakage`]: `bsw`, `bidirectional`), gamma-variate
//! recirculation removal ([`gamma`]), perfusion maps and normalisation
//! ([`perfusion`]), a phantom with known truth ([`phantom`]) and the checks
//! of `cargo xtask dro-validate` ([`validation`]). The modality's pipeline
//! is [`Dsc`].
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod deconv;
pub mod gamma;
pub mod leakage;
pub mod perfusion;
pub mod phantom;
mod pipeline;
pub mod signal;
pub mod validation;
pub mod vascular;

pub use pipeline::{Dsc, DscAifSource, DscConfig};

use osipy_core::{Registry, Result};

/// Registers the DSC deconvolution methods, bolus-arrival detectors,
/// leakage corrections and normalisers.
pub fn register(reg: &mut Registry) -> Result<()> {
    use deconv::{csvd, osvd, ssvd, tikhonov, Deconvolution};
    use perfusion::{norm_mean, norm_median, norm_robust_mean, Normalizer};
    use signal::{arrival_baseline_sd, arrival_signal_drop, BolusArrival};
    reg.register(
        "ssvd",
        "truncated SVD of the Toeplitz AIF matrix (Østergaard 1996); delay-sensitive",
        Deconvolution(ssvd),
    )?;
    reg.register(
        "csvd",
        "truncated SVD of the block-circulant AIF matrix (Wu 2003); delay-insensitive",
        Deconvolution(csvd),
    )?;
    reg.register(
        "osvd",
        "block-circulant SVD, truncation per voxel by oscillation index (Wu 2003)",
        Deconvolution(osvd),
    )?;
    reg.register(
        "tikhonov",
        "Tikhonov-regularised block-circulant inverse, lambda per voxel by GCV",
        Deconvolution(tikhonov),
    )?;
    reg.register(
        "vascular_model",
        "LM fit of a gamma transit-time residue with delay (Mouridsen 2006): CBF, MTT, delay with standard errors",
        Deconvolution(vascular::vascular_model),
    )?;
    reg.register(
        "signal_drop",
        "first frame with 10 % of the deepest drop of the mean signal",
        BolusArrival(arrival_signal_drop),
    )?;
    reg.register(
        "baseline_sd",
        "first frame 4 SD below the mean of the frames before it",
        BolusArrival(arrival_baseline_sd),
    )?;
    reg.register(
        "bsw",
        "Boxerman-Schmainda-Weisskoff: K1 ref - K2 int ref, reference = non-enhancing voxels",
        leakage::LeakageCorrection(leakage::bsw),
    )?;
    reg.register(
        "bidirectional",
        "Bjornerud 2011 / Leu 2016: leakage with efflux rate kep, reference = non-enhancing voxels",
        leakage::LeakageCorrection(leakage::bidirectional),
    )?;
    reg.register("mean", "mean of the reference region", Normalizer(norm_mean))?;
    reg.register(
        "median",
        "median of the reference region",
        Normalizer(norm_median),
    )?;
    reg.register(
        "robust_mean",
        "mean within 3 scaled MADs of the median",
        Normalizer(norm_robust_mean),
    )?;
    Ok(())
}
