//! # osipy-asl
//!
//! Arterial spin labeling (ASL) MRI: what each volume is and the
//! label/control differences ([`context`]: `pairwise`, `surround`,
//! `mean`), M0 calibration ([`m0`]: `single`, `voxelwise`,
//! `reference_region`), the labeling schemes and the general kinetic
//! model ([`kinetics`]), single-PLD and multi-PLD quantification
//! ([`quantify`], [`multi_pld`]: CBF, ATT and an optional arterial
//! component), MRI signal equations and a phantom with known truth
//! ([`signal`], [`phantom`]) and the checks of `cargo xtask dro-validate`
//! ([`validation`]). The modality's pipeline is [`Asl`].
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod context;
pub mod kinetics;
pub mod m0;
pub mod multi_pld;
pub mod phantom;
mod pipeline;
pub mod quantify;
pub mod signal;
pub mod validation;

pub use pipeline::{Asl, AslConfig, AslFittingConfig, OneOrMany};

use kinetics::LabelingScheme;
use osipy_core::{Registry, Result};
use quantify::Quantification;

/// Registers the ASL difference methods, M0 calibrations and
/// quantification models.
pub fn register(reg: &mut Registry) -> Result<()> {
    use context::{mean, pairwise, surround, DifferenceMethod};
    use m0::{reference_region, single, voxelwise, M0Calibration};
    reg.register(
        "pairwise",
        "k-th control minus k-th label of each PLD, averaged",
        DifferenceMethod(pairwise),
    )?;
    reg.register(
        "surround",
        "each label minus the mean of its neighbouring controls (cancels linear drift)",
        DifferenceMethod(surround),
    )?;
    reg.register(
        "mean",
        "mean control minus mean label of each PLD (unequal counts allowed)",
        DifferenceMethod(mean),
    )?;
    reg.register(
        "voxelwise",
        "M0 image per voxel, T1-saturation corrected when its TR is known",
        M0Calibration(voxelwise),
    )?;
    reg.register(
        "single",
        "one M0 for all voxels: m0_value, else the median of the M0 image in the mask",
        M0Calibration(single),
    )?;
    reg.register(
        "reference_region",
        "M0 of blood from a CSF / white-matter region (T1, T2*, partition coefficient)",
        M0Calibration(reference_region),
    )?;
    for (name, scheme, desc) in [
        (
            "pcasl_single_pld",
            LabelingScheme::Pcasl,
            "white-paper single-PLD formula for pCASL (Alsop 2015, eq. 1)",
        ),
        (
            "casl_single_pld",
            LabelingScheme::Casl,
            "white-paper single-PLD formula for CASL (Alsop 2015, eq. 1)",
        ),
        (
            "pasl_single_pld",
            LabelingScheme::Pasl,
            "white-paper single-TI formula for PASL with QUIPSS II / Q2TIPS (Alsop 2015, eq. 2)",
        ),
    ] {
        reg.register(
            name,
            desc,
            Quantification {
                scheme: Some(scheme),
                multi_pld: false,
                run: quantify::single_pld,
            },
        )?;
    }
    reg.register(
        "buxton_multi_pld",
        "general kinetic model (Buxton 1998) fitted per voxel: CBF, ATT (+ aBV, aATT) with standard errors",
        Quantification {
            scheme: None,
            multi_pld: true,
            run: quantify::buxton_multi_pld,
        },
    )?;
    Ok(())
}
