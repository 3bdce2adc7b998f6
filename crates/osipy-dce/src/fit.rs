//! `fit_model`: a DCE model over a 4D concentration series, to maps.

use crate::models::{DceModelEntry, PkInput};
use ndarray::{ArrayView3, ArrayView4};
use osipy_backend::Device;
use osipy_core::{MapSet, OsipyError, ParameterMap, Provenance, Result, Unit};
use osipy_fitting::{lm_fitter, param_index, FitOptions, FitterFn, Lanes, Model, ParamSpec, VoxelData};

/// Options of [`fit_model`]. `Default` fits without delay with the engine's
/// defaults and the `lm` fitter.
#[derive(Debug, Clone)]
pub struct DceFitOptions {
    /// The least-squares fitter (a registry `fitters` entry; `lm` by default)
    /// and its name, for provenance.
    pub fitter: (FitterFn, String),
    /// Engine settings (iterations, tolerances, R^2 threshold, chunking).
    /// Its `bounds`, `pinned` and `initial` are replaced by the named
    /// settings below when those are given.
    pub fit: FitOptions,
    /// Fit an arterial delay (s) as an extra parameter `delay`.
    pub fit_delay: bool,
    /// Bounds by parameter name, e.g. `("vp", 0.0, 0.2)`.
    pub bounds: Vec<(String, f64, f64)>,
    /// Starting values by parameter name; the others come from the model's
    /// data-driven guess.
    pub initial_guess: Vec<(String, f64)>,
}

impl Default for DceFitOptions {
    fn default() -> Self {
        DceFitOptions {
            fitter: (lm_fitter, "lm".into()),
            fit: FitOptions::default(),
            fit_delay: false,
            bounds: Vec::new(),
            initial_guess: Vec::new(),
        }
    }
}

/// Result of [`fit_model`]: one map per model parameter (with standard
/// errors), then derived maps (`kep` for the Tofts models; no standard
/// error), R^2 (NaN outside the mask) and quality codes.
pub type DceFit = MapSet;

/// Overrides some starting values of a model, keeping the rest of its guess.
struct WithStart<'a> {
    inner: &'a dyn Model,
    start: Vec<(usize, f64)>,
}

impl WithStart<'_> {
    fn overwrite(&self, guess: &mut [f64]) {
        for (j, v) in &self.start {
            guess[*j] = *v;
        }
    }
}

impl Model for WithStart<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn params(&self) -> &[ParamSpec] {
        self.inner.params()
    }
    fn scratch_len(&self) -> usize {
        self.inner.scratch_len()
    }
    fn n_samples(&self) -> usize {
        self.inner.n_samples()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        self.inner.predict(p, out)
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        self.inner.predict_with_jacobian(p, out, jac)
    }
    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        self.inner.initial_guess(data, out);
        self.overwrite(out);
    }
    fn predict_in(&self, p: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        self.inner.predict_in(p, out, scratch)
    }
    fn predict_with_jacobian_in(
        &self,
        p: &[f64],
        out: &mut [f64],
        jac: &mut [f64],
        scratch: &mut [f64],
    ) -> bool {
        self.inner.predict_with_jacobian_in(p, out, jac, scratch)
    }
    fn initial_guess_in(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        self.inner.initial_guess_in(data, out, scratch);
        self.overwrite(out);
    }
    fn has_lanes(&self) -> bool {
        self.inner.has_lanes()
    }
    fn predict_with_jacobian_lanes(
        &self,
        p: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        scratch: &mut [Lanes],
    ) {
        self.inner.predict_with_jacobian_lanes(p, out, jac, scratch)
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        self.inner.gpu_kernel()
    }
}

/// Fits the DCE model `entry` (a registry entry, or
/// [`DceModelEntry::builtin`]) to `concentration` (x, y, z, t; mM) with the
/// plasma AIF `aif` (mM) at frame times `time` (s), inside `mask`.
///
/// Whole-call errors for inconsistent inputs (unknown model or parameter
/// names, shape mismatches, bad bounds); per-voxel failures are quality codes
/// with NaN values.
pub fn fit_model(
    entry: &DceModelEntry,
    concentration: ArrayView4<'_, f64>,
    aif: &[f64],
    time: &[f64],
    mask: Option<ArrayView3<'_, bool>>,
    options: &DceFitOptions,
    device: &Device,
) -> Result<DceFit> {
    let s = concentration.shape();
    let shape = [s[0], s[1], s[2]];
    osipy_core::check_series(s, time.len(), mask.as_ref().map(|m| m.shape()))?;
    let n_vox = shape.iter().product::<usize>();
    // A contiguous input is reshaped as a view; only other layouts are copied.
    let standard = concentration.as_standard_layout();
    let data = standard
        .view()
        .into_shape_with_order((n_vox, s[3]))
        .map_err(|e| OsipyError::data("concentration array", e.to_string(), "a 4D array"))?;
    let flat_mask: Option<Vec<bool>> = mask.map(|m| m.as_standard_layout().iter().copied().collect());
    fit_voxels(
        entry,
        &data,
        shape,
        aif,
        time,
        flat_mask.as_deref(),
        options,
        device,
    )
}

/// [`fit_model`] on concentration curves from any [`VoxelData`] (one row per
/// voxel of the grid `shape`, row-major over x, y, z): an array, or a
/// source that converts each voxel's signal as the fit reads it (the run's
/// streamed path). Voxels the source cannot load get its quality code.
#[allow(clippy::too_many_arguments)]
pub fn fit_voxels(
    entry: &DceModelEntry,
    data: &dyn VoxelData,
    shape: [usize; 3],
    aif: &[f64],
    time: &[f64],
    mask: Option<&[bool]>,
    options: &DceFitOptions,
    device: &Device,
) -> Result<DceFit> {
    let (n_vox, n_t) = data.dim();
    osipy_core::check_per_voxel("concentration curves", n_vox, shape.iter().product())?;
    if n_t != time.len() {
        return Err(OsipyError::data(
            "frames per concentration curve",
            n_t.to_string(),
            format!("{}, one per frame time", time.len()),
        ));
    }
    if let Some(m) = mask {
        osipy_core::check_per_voxel("mask", m.len(), n_vox)?;
    }
    let input = PkInput::new(time, aif)?;
    let base = if options.fit_delay {
        entry.build_delayed(input)?
    } else {
        entry.build(input)
    };
    let name = base.name().to_string();
    let mut fit_opts = options.fit.clone();
    for (p, lo, hi) in &options.bounds {
        fit_opts = fit_opts.bound_by_name(base.as_ref(), p, *lo, *hi)?;
    }
    let start = options
        .initial_guess
        .iter()
        .map(|(p, v)| param_index(base.as_ref(), p).map(|j| (j, *v)))
        .collect::<Result<Vec<_>>>()?;
    let m = WithStart {
        inner: base.as_ref(),
        start,
    };

    let fit = (options.fitter.0)(&m, data, mask, &fit_opts, device)?;

    let provenance = Provenance::default()
        .with_method("model", &name)
        .with_method("fitter", &options.fitter.1)
        .with_setting("fit_delay", options.fit_delay)
        .with_setting("max_iterations", fit_opts.lm.max_iterations)
        .with_setting("r2_threshold", fit_opts.r2_threshold);
    let mut maps = fit.parameter_maps(m.params(), shape, &provenance)?;
    // Derived kep = Ktrans / ve (1/min) for the Tofts models.
    if let (Some(k), Some(v)) = (
        maps.iter().find(|p| p.name == "Ktrans"),
        maps.iter().find(|p| p.name == "ve"),
    ) {
        let kep = &k.values / &v.values;
        let kep = ParameterMap::new(
            "kep",
            "k_ep",
            Unit::PerMinute,
            kep,
            k.quality.clone(),
            None,
            provenance.clone(),
        )?;
        maps.push(kep);
    }
    Ok(MapSet {
        r_squared: fit.r2_map(shape)?,
        quality: fit.quality_map(shape)?,
        maps,
    })
}
