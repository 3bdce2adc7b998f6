//! The [`Model`] trait every fitted signal model implements.

use osipy_core::Unit;

/// One parameter of a model: what a GPU backend, a map writer or a config
/// check needs to know about it, in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// OSIPI/CAPLEX name, as in configs and file names (`Ktrans`).
    pub name: &'static str,
    /// Symbol for display (`K^trans`).
    pub symbol: &'static str,
    /// Unit of the value.
    pub unit: Unit,
    /// Default (lower, upper) bounds; infinities for none.
    pub bounds: (f64, f64),
}

impl ParamSpec {
    /// A parameter called `name` (shown as `symbol`) in `unit` within `bounds`.
    pub const fn new(name: &'static str, symbol: &'static str, unit: Unit, bounds: (f64, f64)) -> Self {
        ParamSpec {
            name,
            symbol,
            unit,
            bounds,
        }
    }
}

/// Voxels a model evaluates at once in lockstep
/// ([`Model::predict_with_jacobian_lanes`]): four f64 lanes, one AVX2
/// register (two SSE2 registers).
pub const LANES: usize = 4;

/// One value per lockstep lane.
pub type Lanes = [f64; LANES];

/// A signal model bound to its fixed inputs (time + AIF, b-values, PLDs...).
///
/// Binding happens at construction: a model value already knows its sample
/// points, so `predict` maps parameters to `n_samples()` predicted values.
///
/// Jacobians are column-major: `jac[j * n_samples + i] = d predict_i / d p_j`,
/// so each parameter's column is contiguous.
pub trait Model: Send + Sync {
    /// Registry-style name of the model.
    fn name(&self) -> &str;

    /// One spec per parameter, in order: name, symbol, unit, default bounds.
    fn params(&self) -> &[ParamSpec];

    /// Parameter names in order (set-up helper; allocates).
    fn param_names(&self) -> Vec<&'static str> {
        self.params().iter().map(|p| p.name).collect()
    }

    /// Unit of each parameter (set-up helper; allocates).
    fn param_units(&self) -> Vec<Unit> {
        self.params().iter().map(|p| p.unit).collect()
    }

    /// Default bounds of each parameter (set-up helper; allocates).
    fn default_bounds(&self) -> Vec<(f64, f64)> {
        self.params().iter().map(|p| p.bounds).collect()
    }

    /// Number of samples `predict` produces.
    fn n_samples(&self) -> usize;

    /// Number of parameters.
    fn n_params(&self) -> usize {
        self.params().len()
    }

    /// Scratch values the model needs per evaluation (e.g. a shifted AIF).
    /// The fitter allocates them once per worker and passes them to the
    /// `*_in` methods, so models keep no thread-local or shared state.
    fn scratch_len(&self) -> usize {
        0
    }

    /// Writes the model prediction for `params` into `out` (`n_samples` long).
    fn predict(&self, params: &[f64], out: &mut [f64]);

    /// Writes the analytic Jacobian into `jac` (`n_samples * n_params`,
    /// column-major) and returns `true`; returns `false` when the model has no
    /// analytic Jacobian, in which case the fitter uses finite differences.
    fn jacobian(&self, params: &[f64], jac: &mut [f64]) -> bool {
        let _ = (params, jac);
        false
    }

    /// Prediction and Jacobian together (models override this to share work,
    /// e.g. exponentials). Returns whether `jac` was filled analytically.
    fn predict_with_jacobian(&self, params: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        self.predict(params, out);
        self.jacobian(params, jac)
    }

    /// Writes a data-driven starting point into `out` (`n_params` long).
    /// It need not be inside the bounds: the fitter clamps it.
    fn initial_guess(&self, data: &[f64], out: &mut [f64]);

    /// [`Model::predict_with_jacobian`] with `scratch_len` scratch values;
    /// what the fitter calls. Models with scratch override it.
    fn predict_with_jacobian_in(
        &self,
        params: &[f64],
        out: &mut [f64],
        jac: &mut [f64],
        scratch: &mut [f64],
    ) -> bool {
        let _ = scratch;
        self.predict_with_jacobian(params, out, jac)
    }

    /// [`Model::predict`] with scratch; what the fitter calls.
    fn predict_in(&self, params: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let _ = scratch;
        self.predict(params, out)
    }

    /// [`Model::initial_guess`] with scratch; what the fitter calls.
    fn initial_guess_in(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let _ = scratch;
        self.initial_guess(data, out)
    }

    /// Whether the model evaluates [`LANES`] voxels in lockstep through its
    /// own [`Model::predict_with_jacobian_lanes`]. The fitter then runs the
    /// voxels of a chunk `LANES` at a time through each evaluation; the
    /// results equal the one-voxel fits bit for bit. A model that wraps
    /// another forwards both lane methods, or its fits lose the lockstep
    /// path.
    fn has_lanes(&self) -> bool {
        false
    }

    /// Prediction and analytic Jacobian for [`LANES`] parameter vectors at
    /// once, in structure-of-arrays layout: `params[j][l]` is parameter `j`
    /// of lane `l`, `out[i][l]` sample `i`, `jac[j * n_samples + i][l]` the
    /// Jacobian (column-major per lane, as in [`Model::jacobian`]);
    /// `scratch` holds `scratch_len()` lanes.
    ///
    /// An override must do, lane by lane, exactly the arithmetic of
    /// [`Model::predict_with_jacobian_in`] in the same order (no fused
    /// multiply-adds it does not use), so that lockstep fits equal one-voxel
    /// fits bit for bit. The default evaluates lane by lane
    /// ([`lanes_one_by_one`]); it allocates, so models that return true from
    /// [`Model::has_lanes`] override it.
    fn predict_with_jacobian_lanes(
        &self,
        params: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        scratch: &mut [Lanes],
    ) {
        let _ = scratch;
        lanes_one_by_one(self, params, out, jac);
    }

    /// The model's GPU form ([`crate::gpu`]): its prediction and analytic
    /// Jacobian as CUDA C source, and the constants they read (time grid,
    /// AIF, b-values...). `None` (the default) when the model has none: a
    /// fit of it on a GPU device is then an error, or with `auto` a logged
    /// CPU fit. A model that wraps another forwards this.
    fn gpu_kernel(&self) -> Option<crate::gpu::GpuKernel> {
        None
    }
}

/// [`Model::predict_with_jacobian_lanes`] done lane by lane through
/// [`Model::predict_with_jacobian_in`]: the reference a lockstep override is
/// tested against. It allocates its buffers, and it is for models with an
/// analytic Jacobian (lockstep fitting needs one).
pub fn lanes_one_by_one<M: Model + ?Sized>(
    model: &M,
    params: &[Lanes],
    out: &mut [Lanes],
    jac: &mut [Lanes],
) {
    let (n, p) = (model.n_samples(), model.n_params());
    let mut x = vec![0.0; p];
    let mut pred = vec![0.0; n];
    let mut j = vec![0.0; n * p];
    let mut scratch = vec![0.0; model.scratch_len()];
    for l in 0..LANES {
        for (xj, pj) in x.iter_mut().zip(params) {
            *xj = pj[l];
        }
        model.predict_with_jacobian_in(&x, &mut pred, &mut j, &mut scratch);
        for (o, v) in out.iter_mut().zip(&pred) {
            o[l] = *v;
        }
        for (o, v) in jac.iter_mut().zip(&j) {
            o[l] = *v;
        }
    }
}

/// Whether the model's lane kernel ([`Model::predict_with_jacobian_lanes`])
/// gives, bit for bit, the one-voxel prediction and Jacobian
/// ([`lanes_one_by_one`]) for the given parameter vectors (taken
/// [`LANES`] at a time; a short last group repeats its first vector).
/// Returns the number of differing values (0 when the kernel is exact).
pub fn check_lanes(model: &dyn Model, params: &[Vec<f64>]) -> usize {
    let (n, p) = (model.n_samples(), model.n_params());
    let mut differing = 0;
    for group in params.chunks(LANES) {
        let x: Vec<Lanes> = (0..p)
            .map(|j| std::array::from_fn(|l| group.get(l).unwrap_or(&group[0])[j]))
            .collect();
        let (mut out, mut jac) = (vec![[0.0; LANES]; n], vec![[0.0; LANES]; n * p]);
        let mut scratch = vec![[0.0; LANES]; model.scratch_len()];
        model.predict_with_jacobian_lanes(&x, &mut out, &mut jac, &mut scratch);
        let (mut out1, mut jac1) = (vec![[0.0; LANES]; n], vec![[0.0; LANES]; n * p]);
        lanes_one_by_one(model, &x, &mut out1, &mut jac1);
        differing += out
            .iter()
            .chain(&jac)
            .zip(out1.iter().chain(&jac1))
            .map(|(a, b)| (0..LANES).filter(|l| a[*l].to_bits() != b[*l].to_bits()).count())
            .sum::<usize>();
    }
    differing
}

/// Finite-difference Jacobian (central differences), column-major, used to
/// check analytic Jacobians. `h_rel` is the relative step (e.g. 1e-6).
pub fn finite_difference_jacobian(model: &dyn Model, params: &[f64], h_rel: f64) -> Vec<f64> {
    let n = model.n_samples();
    let p = model.n_params();
    let mut jac = vec![0.0; n * p];
    let mut plus = vec![0.0; n];
    let mut minus = vec![0.0; n];
    let mut x = params.to_vec();
    for j in 0..p {
        let h = h_rel * params[j].abs().max(1e-8);
        x[j] = params[j] + h;
        model.predict(&x, &mut plus);
        x[j] = params[j] - h;
        model.predict(&x, &mut minus);
        x[j] = params[j];
        for i in 0..n {
            jac[j * n + i] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    jac
}

/// Largest difference between the model's analytic Jacobian (as the fitter
/// gets it, from [`Model::predict_with_jacobian`]) and a central
/// finite-difference one, relative to the largest entry of each column.
/// Returns `None` when the model has no analytic Jacobian.
pub fn check_jacobian(model: &dyn Model, params: &[f64]) -> Option<f64> {
    let n = model.n_samples();
    let p = model.n_params();
    let mut jac = vec![0.0; n * p];
    let mut out = vec![0.0; n];
    if !model.predict_with_jacobian(params, &mut out, &mut jac) {
        return None;
    }
    let mut direct = vec![0.0; n];
    model.predict(params, &mut direct);
    if out
        .iter()
        .zip(&direct)
        .any(|(a, b)| (a - b).abs() > 1e-12 * b.abs().max(1e-300))
    {
        // predict_with_jacobian must predict what predict predicts.
        return Some(f64::INFINITY);
    }
    let fd = finite_difference_jacobian(model, params, 1e-6);
    let mut worst: f64 = 0.0;
    for j in 0..p {
        let col = &jac[j * n..(j + 1) * n];
        let fcol = &fd[j * n..(j + 1) * n];
        let scale = col
            .iter()
            .chain(fcol)
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-300);
        for (a, b) in col.iter().zip(fcol) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    Some(worst)
}
