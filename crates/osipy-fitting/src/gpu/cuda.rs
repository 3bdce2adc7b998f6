//! The CUDA runner: NVRTC compiles each program once per process and GPU,
//! and each batch is one upload, one launch, one download.

use super::{program_source, Batch, BatchOut, Entry, GpuKernel, Runner, CUDA_PRELUDE, NVRTC_OPTIONS};
use osipy_backend::cuda::cudarc;
use osipy_core::{OsipyError, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig, PushKernelArg};

/// Threads per block of the LM kernel.
const BLOCK: u32 = 128;

/// Largest batch (rows) one launch takes, to bound the host buffers.
const MAX_ROWS: usize = 1 << 20;

/// One GPU thread a row: `n_fit` threads in blocks of [`BLOCK`].
fn launch_config(n_fit: i32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n_fit.max(0) as u32).div_ceil(BLOCK), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) struct CudaRunner {
    ordinal: usize,
    ctx: Arc<CudaContext>,
}

impl CudaRunner {
    pub(crate) fn new(ordinal: usize) -> Result<CudaRunner> {
        let ctx = osipy_backend::cuda::context(ordinal)?;
        Ok(CudaRunner { ordinal, ctx })
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> OsipyError {
        OsipyError::Fitting(format!("CUDA device {}: {what}: {e}", self.ordinal))
    }

    /// The compiled entry point of `kernel` for `n` samples and `entry`,
    /// compiled on first use.
    fn function(&self, kernel: &GpuKernel, n: usize, entry: Entry) -> Result<CudaFunction> {
        type Cache = Mutex<BTreeMap<(usize, &'static str, usize, Entry), CudaFunction>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (self.ordinal, kernel.key, n, entry);
        if let Some(f) = cache.get(&key) {
            return Ok(f.clone());
        }
        let ptx = compile_ptx(kernel, n, entry, None)?;
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(|e| self.error(&format!("loading the program of {}", kernel.key), e))?;
        let name = entry.function();
        let f = module
            .load_function(name)
            .map_err(|e| self.error(&format!("finding the kernel {name}"), e))?;
        cache.insert(key, f.clone());
        Ok(f)
    }
}

/// Compiles `kernel`'s program for `n` samples and `entry` to PTX with NVRTC (`arch`: a virtual architecture such as `compute_90`, or
/// NVRTC's default). An error names the kernel and carries NVRTC's log.
pub fn compile_ptx(
    kernel: &GpuKernel,
    n: usize,
    entry: Entry,
    arch: Option<&'static str>,
) -> Result<cudarc::nvrtc::Ptx> {
    if !osipy_backend::cuda::nvrtc_present() {
        return Err(OsipyError::Fitting(
            "the CUDA run-time compiler NVRTC (libnvrtc.so) was not found: install the CUDA toolkit or the nvidia-cuda-nvrtc-cu12 package and put its lib folder on LD_LIBRARY_PATH".into(),
        ));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect(),
        arch,
        name: Some(format!("{}.cu", kernel.key)),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(program_source(kernel, n, entry, CUDA_PRELUDE), opts).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        };
        OsipyError::Fitting(format!(
            "the GPU program of {} did not compile:\n{log}",
            kernel.key
        ))
    })
}

impl Runner for CudaRunner {
    fn rows_per_batch(&self, bytes_per_row: usize) -> Result<usize> {
        let (free, _) = self
            .ctx
            .mem_get_info()
            .map_err(|e| self.error("reading free memory", e))?;
        Ok((free / 2 / bytes_per_row.max(1)).clamp(1, MAX_ROWS))
    }

    fn run(&self, kernel: &GpuKernel, batch: &Batch, out: &mut BatchOut) -> Result<()> {
        let (n, p, rows) = (batch.n, batch.p, batch.rows());
        let f = self.function(kernel, n, Entry::Lm { p })?;
        let stream = self.ctx.default_stream();
        let up = |e| self.error("copying a batch to the device", e);
        let c = stream.clone_htod(&kernel.consts).map_err(up)?;
        let data = stream.clone_htod(batch.data).map_err(up)?;
        let x0 = stream.clone_htod(batch.x0).map_err(up)?;
        let lower = stream.clone_htod(batch.lower).map_err(up)?;
        let upper = stream.clone_htod(batch.upper).map_err(up)?;
        let free = stream.clone_htod(batch.free).map_err(up)?;
        let settings = stream.clone_htod(&batch.settings[..]).map_err(up)?;
        let which = stream.clone_htod(batch.which).map_err(up)?;
        let alloc = |e| self.error("allocating results", e);
        let mut x = stream.alloc_zeros::<f64>(rows * p).map_err(alloc)?;
        let mut cov = stream.alloc_zeros::<f64>(rows * p).map_err(alloc)?;
        let mut ssr = stream.alloc_zeros::<f64>(rows).map_err(alloc)?;
        let mut iterations = stream.alloc_zeros::<i32>(rows).map_err(alloc)?;
        let mut status = stream.alloc_zeros::<i32>(rows).map_err(alloc)?;
        let n_fit = batch.which.len() as i32;
        let cfg = launch_config(n_fit);
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(&c)
            .arg(&data)
            .arg(&x0)
            .arg(&lower)
            .arg(&upper)
            .arg(&free)
            .arg(&settings)
            .arg(&batch.max_iterations)
            .arg(&which)
            .arg(&n_fit)
            .arg(&mut x)
            .arg(&mut cov)
            .arg(&mut ssr)
            .arg(&mut iterations)
            .arg(&mut status);
        #[allow(unsafe_code)]
        // SAFETY: the arguments match `osipy_lm`'s signature in lm.cu in
        // number, order and type; every buffer holds the rows the kernel
        // indexes (`which` < rows, as `fit_with` builds it).
        unsafe { launch.launch(cfg) }.map_err(|e| self.error("launching the kernel", e))?;
        let down = |e| self.error("copying results back", e);
        stream.memcpy_dtoh(&x, &mut out.x[..rows * p]).map_err(down)?;
        stream.memcpy_dtoh(&cov, &mut out.cov[..rows * p]).map_err(down)?;
        stream.memcpy_dtoh(&ssr, &mut out.ssr[..rows]).map_err(down)?;
        stream
            .memcpy_dtoh(&iterations, &mut out.iterations[..rows])
            .map_err(down)?;
        stream
            .memcpy_dtoh(&status, &mut out.status[..rows])
            .map_err(down)?;
        stream
            .synchronize()
            .map_err(|e| self.error("running the kernel", e))?;
        Ok(())
    }

    fn run_map(
        &self,
        kernel: &GpuKernel,
        n: usize,
        record: usize,
        data: &[f64],
        which: &[i32],
        out: &mut [f64],
    ) -> Result<()> {
        let rows = data.len() / n.max(1);
        let f = self.function(kernel, n, Entry::Map { record })?;
        let stream = self.ctx.default_stream();
        let up = |e| self.error("copying a batch to the device", e);
        let c = stream.clone_htod(&kernel.consts).map_err(up)?;
        let d = stream.clone_htod(data).map_err(up)?;
        let w = stream.clone_htod(which).map_err(up)?;
        let mut o = stream.clone_htod(&out[..rows * record]).map_err(up)?;
        let n_fit = which.len() as i32;
        let cfg = launch_config(n_fit);
        let mut launch = stream.launch_builder(&f);
        launch.arg(&c).arg(&d).arg(&w).arg(&n_fit).arg(&mut o);
        #[allow(unsafe_code)]
        // SAFETY: the arguments match `osipy_map`'s signature in map.cu;
        // `which` holds rows below `rows`, and `o` has `record` values a row.
        unsafe { launch.launch(cfg) }.map_err(|e| self.error("launching the kernel", e))?;
        stream
            .memcpy_dtoh(&o, &mut out[..rows * record])
            .map_err(|e| self.error("copying results back", e))?;
        stream
            .synchronize()
            .map_err(|e| self.error("running the kernel", e))?;
        Ok(())
    }
}
