//! # osipy-fitting
//!
//! The single non-linear least-squares engine of osipy.
//!
//! * [`Model`]: parameter names, units, default bounds, `predict`, analytic
//!   `jacobian` (finite differences when a model has none, checked by
//!   [`check_jacobian`]) and a data-driven initial guess. A model value is
//!   bound to its fixed inputs (time + AIF, b-values, PLDs) at construction;
//!   any parameter can be pinned through [`FitOptions::pinned`].
//! * [`fit_batch`]: bounded Levenberg-Marquardt over a `voxels x samples`
//!   array with a mask, parallel over voxel chunks through
//!   [`osipy_backend::Device`], bit-identical for any thread count, no
//!   allocation inside the iteration loop. Failed voxels are NaN with a
//!   [`osipy_core::QualityCode`], never an error for the whole call.
//! * The bound handling and convergence tests are documented in [`lm`].
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cuda` | no | fits on [`osipy_backend::Device::Cuda`]: the kernels of [`gpu`] compiled with NVRTC and run through `cudarc` |

mod batch;
pub mod bayes;
mod data;
pub mod dual;
mod exec;
pub mod gpu;
mod lanes;
pub mod lm;
mod model;
pub mod models;
pub mod rng;

pub use batch::{
    fit_batch, fit_curve, named_bounds, param_index, BatchFit, FitOptions, InitialGuess, PinValue, VoxelFit,
};
pub use data::VoxelData;
pub use exec::{built_devices, map_parts, map_voxels};
pub use lm::LmSettings;
pub use model::{
    check_jacobian, check_lanes, finite_difference_jacobian, lanes_one_by_one, Lanes, Model, ParamSpec, LANES,
};

use osipy_backend::Device;
use osipy_core::{Extension, KindInfo, Registry, Result};

/// Signature of a batched least-squares fitter.
pub type FitterFn = fn(&dyn Model, &dyn VoxelData, Option<&[bool]>, &FitOptions, &Device) -> Result<BatchFit>;

/// Registry entry of a least-squares fitter: the function that runs.
#[derive(Debug, Clone, Copy)]
pub struct Fitter(pub FitterFn);

impl Extension for Fitter {
    const KIND: KindInfo = KindInfo {
        id: "fitters",
        label: "fitter",
        config_key: "dce: pipeline.fitting.fitter",
    };
}

/// Registers this crate's fitters (`lm`) in `reg`.
pub fn register(reg: &mut Registry) -> Result<()> {
    reg.register(
        "lm",
        "bounded Levenberg-Marquardt (projected, active set; Marquardt 1963, Kanzow et al. 2004)",
        Fitter(lm_fitter),
    )
}

/// [`fit_batch`] as a [`FitterFn`]: the registry's `lm` fitter.
pub fn lm_fitter(
    model: &dyn Model,
    data: &dyn VoxelData,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> Result<BatchFit> {
    fit_batch(model, data, mask, opts, device)
}
