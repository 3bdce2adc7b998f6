//! # osipy
//!
//! Quantitative MRI perfusion analysis following OSIPI conventions. This
//! umbrella crate only re-exports the workspace's crates, each part behind a
//! cargo feature, so users can depend on one crate and pick what they need.
//!
//! ## Map of the workspace
//! ```text
//! backend -> core -> fitting -> { aif, convolution } -> io -> { dce, dsc, asl, ivim, microstructure, report } -> pipeline -> cli
//! ```
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`backend`] | `osipy-backend` | `Device`, thread counts, deterministic parallel voxel chunks |
//! | [`core`] | `osipy-core` | errors, units, `ParameterMap`, `MapSet`, registries typed by entry |
//! | `fitting` | `osipy-fitting` | the bounded, batched Levenberg-Marquardt engine |
//! | `aif` | `osipy-aif` | population, measured and detected AIFs |
//! | `convolution` | `osipy-convolution` | exact convolution, FFT, deconvolution matrices |
//! | `io` | `osipy-io` | the input model (`Inputs`, `Dataset`), NIfTI, map output with sidecars, the modality seam |
//! | `dce` | `osipy-dce` | DCE T1 mapping, concentration, pharmacokinetic models; the DCE modality |
//! | `ivim` | `osipy-ivim` | IVIM models and segmented / full / Bayesian fitting; the IVIM modality |
//! | `dsc` | `osipy-dsc` | DSC deltaR2*, SVD / Tikhonov deconvolution, perfusion maps; the DSC modality |
//! | `asl` | `osipy-asl` | ASL differences, M0 calibration, single-PLD and Buxton multi-PLD CBF / ATT; the ASL modality |
//! | `microstructure` | `osipy-microstructure` | dmipy-style compartments, Watson dispersion, composition, NODDI / SMT / SANDI presets; the microstructure modality |
//! | `report` | `osipy-report` | PNG figures (map montages, quality, curves, histograms) and the self-contained `report.html` |
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `fitting` | yes | `osipy::fitting` |
//! | `aif` | yes | `osipy::aif` |
//! | `convolution` | yes | `osipy::convolution` |
//! | `io` | yes | `osipy::io` |
//! | `dce` | yes | `osipy::dce` |
//! | `ivim` | yes | `osipy::ivim` |
//! | `dsc` | yes | `osipy::dsc` |
//! | `asl` | yes | `osipy::asl` |
//! | `microstructure` | yes | `osipy::microstructure` |
//! | `report` | yes | `osipy::report` |

pub use osipy_backend as backend;
pub use osipy_core as core;

#[cfg(feature = "aif")]
pub use osipy_aif as aif;
#[cfg(feature = "asl")]
pub use osipy_asl as asl;
#[cfg(feature = "convolution")]
pub use osipy_convolution as convolution;
#[cfg(feature = "dce")]
pub use osipy_dce as dce;
#[cfg(feature = "dsc")]
pub use osipy_dsc as dsc;
#[cfg(feature = "fitting")]
pub use osipy_fitting as fitting;
#[cfg(feature = "io")]
pub use osipy_io as io;
#[cfg(feature = "ivim")]
pub use osipy_ivim as ivim;
#[cfg(feature = "microstructure")]
pub use osipy_microstructure as microstructure;
#[cfg(feature = "report")]
pub use osipy_report as report;

/// Software version, as written into provenance records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A registry holding every method of the crates enabled in this build
/// (the pipeline crate assembles the full built-in set once modalities exist).
pub fn registry() -> core::Result<core::Registry> {
    #[allow(unused_mut)]
    let mut reg = core::Registry::new();
    #[cfg(feature = "fitting")]
    fitting::register(&mut reg)?;
    #[cfg(feature = "aif")]
    aif::register(&mut reg)?;
    #[cfg(feature = "dce")]
    dce::register(&mut reg)?;
    #[cfg(feature = "ivim")]
    ivim::register(&mut reg)?;
    #[cfg(feature = "dsc")]
    dsc::register(&mut reg)?;
    #[cfg(feature = "asl")]
    asl::register(&mut reg)?;
    #[cfg(feature = "microstructure")]
    microstructure::register(&mut reg)?;
    Ok(reg)
}

/// The code blocks of the README and `docs/` run as doctests, so the docs stay true.
#[cfg(doctest)]
mod docs {
    #[doc = include_str!("../../../README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/fitting.md")]
    struct Fitting;
    #[doc = include_str!("../../../docs/aif.md")]
    struct AifDoc;
    #[doc = include_str!("../../../docs/convolution.md")]
    struct Convolution;
    #[doc = include_str!("../../../docs/nifti.md")]
    struct Nifti;
    #[doc = include_str!("../../../docs/threads.md")]
    struct Threads;
    #[doc = include_str!("../../../docs/development.md")]
    struct Development;
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_collects_every_enabled_crate() {
        let reg = super::registry().unwrap();
        assert_eq!(reg.names::<crate::fitting::Fitter>(), ["lm"]);
        assert_eq!(reg.names::<crate::aif::PopulationAif>().len(), 5);
        assert_eq!(
            reg.names::<crate::dce::DceModelEntry>(),
            ["2cum", "2cxm", "extended_tofts", "patlak", "tofts"]
        );
        assert_eq!(
            reg.names::<crate::ivim::IvimFitter>(),
            ["bayesian", "full", "segmented"]
        );
        assert_eq!(
            reg.names::<crate::dsc::deconv::Deconvolution>(),
            ["csvd", "osvd", "ssvd", "tikhonov", "vascular_model"]
        );
        assert_eq!(
            reg.names::<crate::dsc::leakage::LeakageCorrection>(),
            ["bidirectional", "bsw"]
        );
        assert_eq!(
            reg.names::<crate::asl::quantify::Quantification>(),
            [
                "buxton_multi_pld",
                "casl_single_pld",
                "pasl_single_pld",
                "pcasl_single_pld"
            ]
        );
        assert_eq!(
            reg.names::<crate::asl::context::DifferenceMethod>(),
            ["mean", "pairwise", "surround"]
        );
        assert_eq!(
            reg.names::<crate::asl::m0::M0Calibration>(),
            ["reference_region", "single", "voxelwise"]
        );
        assert_eq!(
            reg.names::<crate::microstructure::Compartment>(),
            [
                "ball",
                "cylinder_callaghan",
                "cylinder_gpd",
                "cylinder_soderman",
                "dot",
                "plane_callaghan",
                "plane_short_pulse",
                "sphere_callaghan",
                "sphere_gpd",
                "sphere_short_pulse",
                "stick",
                "tensor",
                "watson_stick",
                "watson_zeppelin",
                "zeppelin"
            ]
        );
        assert_eq!(
            reg.names::<crate::microstructure::Preset>(),
            ["ball_stick", "custom", "dti", "noddi_watson", "sandi", "smt"]
        );
        // Only what a config can select is registered: thirteen tables.
        assert_eq!(reg.tables().len(), 13);
    }
}
