//! CUDA devices through `cudarc` (the `cuda` feature).
//!
//! The driver library (`libcuda`) is loaded at run time; a machine without
//! it gets an error naming the cause from [`context`], never a panic. One
//! context per GPU ordinal is made on first use and kept for the process.
//! Kernels are compiled by the fitting engine with NVRTC (also loaded at
//! run time); [`cudarc`] is re-exported so the crates above use the same
//! version.

pub use cudarc;

use crate::BackendError;
use cudarc::driver::CudaContext;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: only tries to open the shared library by its usual names;
    // nothing from it is called.
    unsafe {
        cudarc::driver::sys::is_culib_present()
    }
}

/// Whether the NVRTC library (the run-time CUDA C++ compiler) can be loaded.
pub fn nvrtc_present() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: as in `driver_present`.
    unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    }
}

/// The context of GPU `ordinal`, made on first use and kept for the
/// process. Errors name the cause: no driver library, no such device, or
/// the driver's own error.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>, BackendError> {
    static CONTEXTS: OnceLock<Mutex<BTreeMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    let gpu = |cause: String| BackendError::Gpu { ordinal, cause };
    if !driver_present() {
        return Err(gpu(
            "the CUDA driver library (libcuda.so) was not found: this machine has no NVIDIA driver, or it is not on the library path".into(),
        ));
    }
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(c) = contexts.get(&ordinal) {
        return Ok(c.clone());
    }
    let count = CudaContext::device_count().map_err(|e| gpu(format!("the driver did not start: {e}")))?;
    if ordinal >= count.max(0) as usize {
        return Err(gpu(format!(
            "this machine has {count} CUDA device(s); valid ordinals are 0 to {}",
            count - 1
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| gpu(format!("the driver could not open it: {e}")))?;
    contexts.insert(ordinal, ctx.clone());
    Ok(ctx)
}

/// A line naming GPU `ordinal`: its name, compute capability and memory.
pub fn describe(ordinal: usize) -> Result<String, BackendError> {
    let ctx = context(ordinal)?;
    let gpu = |e: cudarc::driver::DriverError| BackendError::Gpu {
        ordinal,
        cause: e.to_string(),
    };
    let name = ctx.name().map_err(gpu)?;
    let (major, minor) = ctx.compute_capability().map_err(gpu)?;
    let total = ctx.total_mem().map_err(gpu)?;
    Ok(format!(
        "{name} (compute capability {major}.{minor}, {:.1} GiB)",
        total as f64 / (1u64 << 30) as f64
    ))
}
