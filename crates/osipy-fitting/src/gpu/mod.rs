//! Least-squares fits on a GPU: one voxel per thread, the CPU engine's
//! method in CUDA C.
//!
//! ## Design
//! * One kernel serves every model: `lm.cu`, the bounded Levenberg-Marquardt
//!   of [`crate::lm`] written again in CUDA C with the same decisions and
//!   the same order of floating-point operations (compiled with
//!   `--fmad=false`, in f64). A model supplies only its prediction and
//!   analytic Jacobian as a CUDA device function, next to its Rust code,
//!   through [`crate::Model::gpu_kernel`] ([`GpuKernel`]).
//! * What is not per-iteration work stays on the CPU, shared with the CPU
//!   path: reading each voxel's samples ([`crate::VoxelData`]), the start
//!   point (the model's data-driven guess, the pins), and the verdict after
//!   the fit (R^2, its threshold, standard errors). So the GPU and CPU
//!   paths differ only in where the iterations run.
//! * Voxels go to the device in batches sized by its free memory, so a
//!   dataset larger than the GPU runs; a batch's rows are uploaded once,
//!   and only the rows to fit (in the mask, with readable data) are fitted.
//! * The program of a model (its source for a given sample and parameter
//!   count) is compiled once per process with NVRTC and kept.
//!
//! ## Without a GPU
//! [`emulated_fit_batch`] compiles the very same program with the system
//! C++ compiler (a few definitions stand in for CUDA's thread indices) and
//! runs it on the CPU, one voxel after another. The test suites use it to
//! check every kernel against the CPU engine on machines with no GPU; it
//! is a checking tool, not a fast path.

mod emulate;

#[cfg(feature = "cuda")]
mod cuda;

use crate::batch::{
    assess, free_count, start_point, validate, workspace, BatchFit, FitOptions, Results, VoxelOutcome,
};
use crate::data::VoxelData;
use crate::exec::map_parts;
use crate::lm::LmOutcome;
use crate::model::Model;
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result};

#[cfg(feature = "cuda")]
pub use cuda::compile_ptx;
pub use emulate::emulated_fit_batch;

/// The Levenberg-Marquardt kernel every model's program includes.
pub const LM_SOURCE: &str = include_str!("lm.cu");

/// The entry point of per-row map kernels ([`map_rows`]).
pub const MAP_SOURCE: &str = include_str!("map.cu");

/// A model's GPU form: its device function and the constants it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuKernel {
    /// Identifies the source (one program is compiled per key, sample
    /// count and parameter count), e.g. `dce_extended_tofts`.
    pub key: &'static str,
    /// CUDA C, in parts joined in order (shared helpers first), defining
    /// `__device__ void osipy_model(const double* c, const double* x,
    /// double* pred, double* jac)`: the prediction (`OSIPY_N`
    /// values) and the column-major Jacobian (`jac[j * OSIPY_N + i]`) at
    /// parameters `x`, reading the constants `c`. It must do the
    /// arithmetic of the model's Rust `predict_with_jacobian_in` (the
    /// equivalence tests compare them).
    pub source: &'static [&'static str],
    /// The constants, as `c` sees them (time grid, AIF, b-values...).
    pub consts: Vec<f64>,
}

/// What a program runs: the LM kernel for `p` parameters, or a map kernel
/// writing `record` values a row ([`map_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    /// `osipy_lm`, fitting parameters.
    Lm {
        /// Number of parameters.
        p: usize,
    },
    /// `osipy_map`, records of values a row.
    Map {
        /// Values a row writes.
        record: usize,
    },
}

impl Entry {
    /// The name of the entry point.
    pub fn function(self) -> &'static str {
        match self {
            Entry::Lm { .. } => "osipy_lm",
            Entry::Map { .. } => "osipy_map",
        }
    }
}

/// The whole program of `kernel` for `n` samples: the sizes, the kernel's
/// source, then the LM kernel and its entry point `osipy_lm`, or the entry
/// point `osipy_map`. `prelude` comes first (definitions a compiler needs).
pub fn program_source(kernel: &GpuKernel, n: usize, entry: Entry, prelude: &str) -> String {
    let (sizes, driver, instantiate) = match entry {
        Entry::Lm { p } => (format!("#define OSIPY_P {p}"), LM_SOURCE, "OSIPY_LM_KERNEL"),
        Entry::Map { record } => (
            format!("#define OSIPY_R {record}"),
            MAP_SOURCE,
            "OSIPY_MAP_KERNEL",
        ),
    };
    format!(
        "{prelude}\n#define OSIPY_N {n}\n{sizes}\n// kernel: {key}\n{source}\n{driver}\n{instantiate}\n",
        key = kernel.key,
        source = kernel.source.join("\n"),
    )
}

/// What NVRTC needs before a program: the constants `NAN` and `INFINITY`
/// (NVRTC has CUDA's math functions built in, not `<math.h>`).
pub const CUDA_PRELUDE: &str = "#ifndef NAN\n#define NAN __longlong_as_double(0x7ff8000000000000LL)\n#endif\n#ifndef INFINITY\n#define INFINITY __longlong_as_double(0x7ff0000000000000LL)\n#endif\n";

/// The options every program is compiled with by NVRTC: no fused
/// multiply-adds, IEEE division and square root.
pub const NVRTC_OPTIONS: [&str; 3] = ["--fmad=false", "--prec-div=true", "--prec-sqrt=true"];

/// One batch of rows for a kernel launch.
pub(crate) struct Batch<'a> {
    pub(crate) n: usize,
    pub(crate) p: usize,
    /// Samples, `rows x n`.
    pub(crate) data: &'a [f64],
    /// Start points, `rows x p`.
    pub(crate) x0: &'a [f64],
    pub(crate) lower: &'a [f64],
    pub(crate) upper: &'a [f64],
    pub(crate) free: &'a [i32],
    /// ftol, xtol, gtol.
    pub(crate) settings: [f64; 3],
    pub(crate) max_iterations: i32,
    /// The rows to fit.
    pub(crate) which: &'a [i32],
}

impl Batch<'_> {
    pub(crate) fn rows(&self) -> usize {
        self.data.len() / self.n.max(1)
    }
}

/// What a kernel launch writes, at the rows it fitted.
pub(crate) struct BatchOut {
    pub(crate) x: Vec<f64>,
    pub(crate) cov: Vec<f64>,
    pub(crate) ssr: Vec<f64>,
    pub(crate) iterations: Vec<i32>,
    pub(crate) status: Vec<i32>,
}

impl BatchOut {
    fn new(rows: usize, p: usize) -> BatchOut {
        BatchOut {
            x: vec![0.0; rows * p],
            cov: vec![0.0; rows * p],
            ssr: vec![0.0; rows],
            iterations: vec![0; rows],
            status: vec![0; rows],
        }
    }
}

/// Where a kernel runs: a CUDA device, or the C++ emulation.
pub(crate) trait Runner {
    /// How many rows of `bytes_per_row` (inputs and outputs) one launch takes.
    fn rows_per_batch(&self, bytes_per_row: usize) -> Result<usize>;
    /// Fits the batch's rows `which` with `kernel` into `out`.
    fn run(&self, kernel: &GpuKernel, batch: &Batch, out: &mut BatchOut) -> Result<()>;
    /// Runs the map kernel `kernel` on rows `which` of `data` (`n` a row),
    /// writing `record` values a row into `out` (rows not in `which` are
    /// left as they are).
    fn run_map(
        &self,
        kernel: &GpuKernel,
        n: usize,
        record: usize,
        data: &[f64],
        which: &[i32],
        out: &mut [f64],
    ) -> Result<()>;
}

/// Bytes a row of an LM launch moves: samples, start point, solution,
/// covariance and cost (f64), the row index, iterations and status (i32).
fn lm_row_bytes(n: usize, p: usize) -> usize {
    8 * (n + 3 * p + 1) + 12
}

/// Why a voxel's row is or is not fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    /// Fitted; whether a pinned value was not finite.
    Fit(bool),
    /// Not fitted, with this status.
    Skip(QualityCode),
}

/// [`crate::fit_batch`] on a GPU device: the CUDA runner with the `cuda`
/// feature; an error naming the cause otherwise, or for a model without a
/// GPU form (unless the device came from `auto`: then a logged CPU fit).
pub(crate) fn fit_batch_gpu(
    model: &dyn Model,
    data: &dyn VoxelData,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> Result<BatchFit> {
    let Device::Cuda {
        ordinal, fallback, ..
    } = *device
    else {
        return crate::fit_batch(model, data, mask, opts, device);
    };
    if model.gpu_kernel().is_none() {
        if fallback {
            tracing::info!(
                "model {} has no GPU kernel: fitting it on the CPU ({} threads)",
                model.name(),
                device.threads()
            );
            return crate::fit_batch(model, data, mask, opts, &device.host());
        }
        return Err(OsipyError::Validation(format!(
            "model {} has no GPU kernel: fit it on the CPU (--device cpu, or --device auto to let osipy choose per model)",
            model.name()
        )));
    }
    #[cfg(feature = "cuda")]
    {
        let runner = cuda::CudaRunner::new(ordinal)?;
        fit_with(&runner, model, data, mask, opts, device)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (data, mask, opts);
        Err(OsipyError::Fitting(format!(
            "CUDA device {ordinal} asked for, but this osipy was built without the `cuda` feature"
        )))
    }
}

/// A batch fit with the kernel run by `runner`; everything else (reading,
/// start points, verdicts) as on the CPU, on the device's host threads.
pub(crate) fn fit_with(
    runner: &dyn Runner,
    model: &dyn Model,
    data: &dyn VoxelData,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> Result<BatchFit> {
    let (n_vox, n) = data.dim();
    let bounds = validate(model, n_vox, n, mask, opts)?;
    let p = model.n_params();
    let kernel = model
        .gpu_kernel()
        .ok_or_else(|| OsipyError::Validation(format!("model {} has no GPU kernel", model.name())))?;
    let host = device.host();
    let chunk = opts.chunk_voxels.max(1);
    let rows = {
        let r = runner.rows_per_batch(lm_row_bytes(n, p))?.min(n_vox.max(1));
        (r / chunk).max(1) * chunk
    };
    let lower: Vec<f64> = bounds.iter().map(|b| b.0).collect();
    let upper: Vec<f64> = bounds.iter().map(|b| b.1).collect();
    let fitted = workspace(model, &bounds, opts).bounds.free;
    let free: Vec<i32> = fitted.iter().map(|&f| i32::from(f)).collect();
    let n_free = free_count(p, opts);
    let lm = &opts.lm;
    let max_iterations = i32::try_from(lm.max_iterations).unwrap_or(i32::MAX);
    let mut results = Results::new(n_vox, p);
    let mut parts = results.parts(chunk, p);
    let mut bdata = vec![0.0; rows * n];
    let mut bx0 = vec![0.0; rows * p];
    let mut brow = vec![Row::Skip(QualityCode::NotFitted); rows];
    let mut out = BatchOut::new(rows, p);
    for (b, batch_parts) in parts.chunks_mut(rows / chunk).enumerate() {
        let first = b * rows;
        let len: usize = batch_parts.iter().map(|o| o.len()).sum();
        // Each voxel's samples and start point, in parallel on the host.
        let mut packs: Vec<_> = bdata[..len * n]
            .chunks_mut(chunk * n)
            .zip(bx0[..len * p].chunks_mut(chunk * p))
            .zip(brow[..len].chunks_mut(chunk))
            .collect();
        map_parts(
            &host,
            &mut packs,
            || workspace(model, &bounds, opts),
            |ws, i, ((d, x0), row)| {
                for k in 0..row.len() {
                    let v = first + i * chunk + k;
                    row[k] = if mask.is_some_and(|m| !m[v]) {
                        Row::Skip(QualityCode::NotFitted)
                    } else {
                        match data.load(v, &mut ws.data) {
                            Err(code) => Row::Skip(code),
                            Ok(()) => {
                                let pinned_bad = start_point(model, ws, v, opts);
                                d[k * n..(k + 1) * n].copy_from_slice(&ws.data);
                                x0[k * p..(k + 1) * p].copy_from_slice(&ws.x);
                                Row::Fit(pinned_bad)
                            }
                        }
                    };
                }
            },
        )?;
        drop(packs);
        let which: Vec<i32> = (0..len)
            .filter(|&k| matches!(brow[k], Row::Fit(_)))
            .map(|k| k as i32)
            .collect();
        if !which.is_empty() {
            let batch = Batch {
                n,
                p,
                data: &bdata[..len * n],
                x0: &bx0[..len * p],
                lower: &lower,
                upper: &upper,
                free: &free,
                settings: [lm.ftol, lm.xtol, lm.gtol],
                max_iterations,
                which: &which,
            };
            runner.run(&kernel, &batch, &mut out)?;
        }
        // The verdicts, in parallel on the host.
        let mut unpacks: Vec<_> = batch_parts
            .iter_mut()
            .zip(bdata[..len * n].chunks(chunk * n))
            .zip(brow[..len].chunks(chunk))
            .enumerate()
            .collect();
        let out = &out;
        map_parts(
            &host,
            &mut unpacks,
            || (),
            |_, _, (i, ((part, d), row))| {
                for k in 0..row.len() {
                    let r = *i * chunk + k;
                    let voxel = match row[k] {
                        Row::Skip(code) => VoxelOutcome::not_fitted(code),
                        Row::Fit(pinned_bad) => {
                            let outcome = LmOutcome {
                                iterations: out.iterations[r].max(0) as usize,
                                status: u8::try_from(out.status[r])
                                    .ok()
                                    .and_then(QualityCode::from_code)
                                    .unwrap_or(QualityCode::ModelFailure),
                                ssr: out.ssr[r],
                            };
                            assess(
                                &d[k * n..(k + 1) * n],
                                &outcome,
                                pinned_bad,
                                n_free,
                                opts.r2_threshold,
                            )
                        }
                    };
                    part.write(
                        k,
                        p,
                        &out.x[r * p..(r + 1) * p],
                        &out.cov[r * p..(r + 1) * p],
                        &voxel,
                    );
                }
            },
        )?;
        if let Some(progress) = opts.progress.as_deref() {
            progress.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
    }
    drop(parts);
    Ok(results.into_fit(model))
}

/// How far two fits of the same voxels are apart: the largest relative
/// difference `|a - b| / max(|a|, |b|)` over every parameter of every voxel
/// (0 where both are equal or both NaN, infinite where only one is NaN),
/// and the number of voxels whose statuses differ. For the CPU/GPU
/// equivalence checks.
pub fn fit_difference(a: &BatchFit, b: &BatchFit) -> (f64, usize) {
    let mut worst: f64 = if a.params.dim() == b.params.dim() {
        0.0
    } else {
        f64::INFINITY
    };
    for (x, y) in a.params.iter().zip(&b.params) {
        let d = if x == y || (x.is_nan() && y.is_nan()) {
            0.0
        } else if x.is_nan() || y.is_nan() {
            f64::INFINITY
        } else {
            (x - y).abs() / x.abs().max(y.abs())
        };
        worst = worst.max(d);
    }
    let statuses = a.status.iter().zip(&b.status).filter(|(x, y)| x != y).count()
        + a.status.len().abs_diff(b.status.len());
    (worst, statuses)
}

/// A per-row map kernel on a GPU device: `kernel`'s source defines
/// `__device__ void osipy_row(const double* c, const double* row, double*
/// rec)`, which reads one row of `data` (`OSIPY_N` samples) and writes
/// `record` values (`OSIPY_R`). Rows whose `todo` is false are not run and
/// stay NaN. Rows go to the device in batches sized by its free memory.
/// An error on a CPU device, or in a build without the `cuda` feature.
pub fn map_rows(
    kernel: &GpuKernel,
    data: ndarray::ArrayView2<'_, f64>,
    todo: &[bool],
    record: usize,
    device: &Device,
) -> Result<Vec<f64>> {
    let Some(ordinal) = device.cuda_ordinal() else {
        return Err(OsipyError::Fitting(format!(
            "map kernel {} asked for on {}, which is not a GPU",
            kernel.key,
            device.describe()
        )));
    };
    #[cfg(feature = "cuda")]
    {
        map_rows_with(&cuda::CudaRunner::new(ordinal)?, kernel, data, todo, record)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (data, todo, record);
        Err(OsipyError::Fitting(format!(
            "CUDA device {ordinal} asked for, but this osipy was built without the `cuda` feature"
        )))
    }
}

/// [`map_rows`] with the kernel's C++ emulation on the CPU (for checking
/// map kernels without a GPU; see [`emulated_fit_batch`]).
pub fn emulated_map_rows(
    kernel: &GpuKernel,
    data: ndarray::ArrayView2<'_, f64>,
    todo: &[bool],
    record: usize,
) -> Result<Vec<f64>> {
    map_rows_with(&emulate::Emulator { rows: 1 << 16 }, kernel, data, todo, record)
}

fn map_rows_with(
    runner: &dyn Runner,
    kernel: &GpuKernel,
    data: ndarray::ArrayView2<'_, f64>,
    todo: &[bool],
    record: usize,
) -> Result<Vec<f64>> {
    let (rows, n) = data.dim();
    osipy_core::check_per_voxel("rows to run", todo.len(), rows)?;
    let mut out = vec![f64::NAN; rows * record];
    let batch = runner.rows_per_batch(8 * (n + record) + 4)?.clamp(1, rows.max(1));
    let mut buf = Vec::with_capacity(batch * n);
    for (b, out) in out.chunks_mut(batch * record).enumerate() {
        let first = b * batch;
        let len = out.len() / record;
        let which: Vec<i32> = (0..len).filter(|&k| todo[first + k]).map(|k| k as i32).collect();
        if which.is_empty() {
            continue;
        }
        buf.clear();
        for k in 0..len {
            buf.extend(data.row(first + k).iter());
        }
        runner.run_map(kernel, n, record, &buf, &which, out)?;
    }
    Ok(out)
}

/// Where [`equivalence`] fits the second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The kernel's C++ emulation ([`emulated_fit_batch`]).
    Emulation,
    /// The CUDA GPU of this ordinal.
    Gpu(usize),
}

/// The CPU/GPU equivalence check of a model: fits `data` with the CPU
/// engine and on `target` (both with 2 host threads) and returns
/// [`fit_difference`] of the two, or `None` when the target is a GPU and
/// none answers (the caller says the check was skipped; with
/// `OSIPY_REQUIRE_GPU` set that is an error instead).
pub fn equivalence(
    model: &dyn Model,
    data: ndarray::ArrayView2<'_, f64>,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    target: Target,
) -> Result<Option<(f64, usize)>> {
    let cpu = Device::Cpu { threads: 2 };
    let other = match target {
        Target::Emulation => emulated_fit_batch(model, data, mask, opts, &cpu)?,
        Target::Gpu(ordinal) => {
            let device = match Device::select(osipy_backend::DeviceChoice::Cuda(ordinal), Some(2)) {
                Ok((device, _)) => device,
                Err(e) if std::env::var_os("OSIPY_REQUIRE_GPU").is_some() => {
                    return Err(OsipyError::Fitting(format!("OSIPY_REQUIRE_GPU is set, but {e}")))
                }
                Err(_) => return Ok(None),
            };
            crate::fit_batch(model, data, mask, opts, &device)?
        }
    };
    let reference = crate::fit_batch(model, data, mask, opts, &cpu)?;
    Ok(Some(fit_difference(&reference, &other)))
}

/// Compiles `model`'s GPU program with NVRTC (for compute capability 9.0)
/// and checks it has the kernel's entry point. `Ok(false)` when NVRTC is
/// not installed and `OSIPY_REQUIRE_NVRTC` is not set (the caller says the
/// check was skipped); an error when the model has no GPU form, NVRTC is
/// required and missing, or the program does not compile.
#[cfg(feature = "cuda")]
pub fn nvrtc_compiles(model: &dyn Model) -> Result<bool> {
    let kernel = model
        .gpu_kernel()
        .ok_or_else(|| OsipyError::Validation(format!("model {} has no GPU kernel", model.name())))?;
    nvrtc_compiles_kernel(&kernel, model.n_samples(), Entry::Lm { p: model.n_params() })
}

/// [`nvrtc_compiles`] for any kernel and entry point (a map kernel, say).
#[cfg(feature = "cuda")]
pub fn nvrtc_compiles_kernel(kernel: &GpuKernel, n: usize, entry: Entry) -> Result<bool> {
    if !osipy_backend::cuda::nvrtc_present() && std::env::var_os("OSIPY_REQUIRE_NVRTC").is_none() {
        return Ok(false);
    }
    let ptx = compile_ptx(kernel, n, entry, Some("compute_90"))?;
    let name = entry.function();
    if !ptx.to_src().contains(&format!(".entry {name}")) {
        return Err(OsipyError::Fitting(format!(
            "the PTX of {} has no entry point {name}",
            kernel.key
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::BiExponential;
    use crate::{InitialGuess, PinValue};
    use ndarray::Array2;

    /// Many launches (batches of 2 and 3 chunks, a short last one) give the
    /// fit of one launch and of the CPU engine: the batch offsets, the rows
    /// to fit and the progress count are right.
    #[test]
    fn batches_of_any_size_give_the_same_fit() {
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 0.5).collect();
        let m = BiExponential::new(&t);
        let voxels = 101;
        let mut y = Array2::zeros((voxels, t.len()));
        let mut row = vec![0.0; t.len()];
        for v in 0..voxels {
            let a = 10.0 + v as f64;
            m.predict(&[a, 2.0 + 0.01 * v as f64, 100.0 - a, 0.2], &mut row);
            for (i, (o, s)) in y.row_mut(v).iter_mut().zip(&row).enumerate() {
                *o = s + 0.3 * (((v * 7 + i * 3) % 11) as f64 - 5.0) / 5.0;
            }
        }
        let mask: Vec<bool> = (0..voxels).map(|v| v % 9 != 2).collect();
        let mut guesses = Array2::from_elem((voxels, 4), f64::NAN);
        guesses.row_mut(7).assign(&ndarray::arr1(&[50.0, 1.0, 50.0, 0.1]));
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opts = FitOptions {
            chunk_voxels: 8,
            initial: InitialGuess::PerVoxel(guesses),
            pinned: vec![(
                3,
                PinValue::PerVoxel((0..voxels).map(|v| 0.2 + 0.001 * v as f64).collect()),
            )],
            progress: Some(progress.clone()),
            ..FitOptions::default()
        };
        let device = Device::Cpu { threads: 2 };
        let cpu = crate::fit_batch(&m, y.view(), Some(&mask), &opts, &device).unwrap();
        assert_eq!(progress.swap(0, std::sync::atomic::Ordering::Relaxed), voxels);
        for rows in [16, 24, 1000] {
            let fit = fit_with(
                &emulate::Emulator { rows },
                &m,
                &y.view(),
                Some(&mask),
                &opts,
                &device,
            )
            .unwrap();
            assert_eq!(fit_difference(&cpu, &fit), (0.0, 0), "{rows} rows a launch");
            assert_eq!(cpu.iterations, fit.iterations);
            assert_eq!(progress.swap(0, std::sync::atomic::Ordering::Relaxed), voxels);
        }
        assert!(cpu.status.iter().filter(|s| s.is_valid()).count() > 80);
    }
}
