//! Where per-voxel work runs: the device dispatch of the fitting engine.
//!
//! [`map_voxels`] is the entry point modality crates use for per-voxel
//! kernels of their own (a sampler, R^2 of final curves), and [`map_parts`]
//! the one for kernels writing several result arrays at once (a segmented
//! solver; [`crate::fit_batch`] runs on it). It dispatches on the [`Device`]: the
//! CPU path hands fixed chunks of voxels to the backend's thread pool (built
//! once per process and thread count), so results are bit-identical for any
//! thread count. On a GPU device these per-voxel kernels (CPU code) run on
//! its host threads; least-squares fits go to the GPU in
//! [`crate::fit_batch`] ([`crate::gpu`]).

use osipy_backend::{for_each_chunk, Device};
use osipy_core::{OsipyError, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `kernel(workspace, voxel, record)` for every voxel on `device`.
///
/// * `out` holds `record_len` values per voxel (voxel-major); the kernel
///   writes only its own record.
/// * `init` makes one scratch workspace per worker (never per voxel).
/// * `chunk_voxels` fixes the work items, independent of the thread count.
/// * `progress`, when given, gains the number of voxels of each finished chunk.
pub fn map_voxels<W, I, F>(
    device: &Device,
    out: &mut [f64],
    record_len: usize,
    chunk_voxels: usize,
    progress: Option<&AtomicUsize>,
    init: I,
    kernel: F,
) -> Result<()>
where
    I: Fn() -> W + Sync + Send,
    F: Fn(&mut W, usize, &mut [f64]) + Sync + Send,
{
    let record_len = record_len.max(1);
    match device {
        Device::Cpu { .. } | Device::Cuda { .. } => {
            for_each_chunk(device, out, record_len, chunk_voxels, init, |ws, first, chunk| {
                for (k, rec) in chunk.chunks_mut(record_len).enumerate() {
                    kernel(ws, first + k, rec);
                }
                if let Some(p) = progress {
                    p.fetch_add(chunk.len() / record_len, Ordering::Relaxed);
                }
            })
            .map_err(OsipyError::from)
        }
        other => Err(OsipyError::Fitting(format!(
            "device {} has no fitting backend in this build",
            other.describe()
        ))),
    }
}

/// Runs `kernel(workspace, part_index, part)` for every element of `parts`
/// on `device`: each part is one fixed work item (e.g. a chunk of voxels
/// with its slices of several output arrays), so the results do not depend
/// on the thread count. `init` makes one workspace per worker.
///
/// [`map_voxels`] writes one record per voxel into one array; this is for
/// kernels that write straight into several result arrays (one slice of
/// each per part), with no record buffer beside them.
pub fn map_parts<T, W, I, F>(device: &Device, parts: &mut [T], init: I, kernel: F) -> Result<()>
where
    T: Send,
    I: Fn() -> W + Sync + Send,
    F: Fn(&mut W, usize, &mut T) + Sync + Send,
{
    match device {
        Device::Cpu { .. } | Device::Cuda { .. } => {
            for_each_chunk(device, parts, 1, 1, init, |ws, i, part| {
                kernel(ws, i, &mut part[0])
            })
            .map_err(OsipyError::from)
        }
        other => Err(OsipyError::Fitting(format!(
            "device {} has no fitting backend in this build",
            other.describe()
        ))),
    }
}

/// Every device this build can run fits on, for the shared test suite
/// (`tests/devices.rs`): the CPU with 1 and 2 threads, and with the `cuda`
/// feature the first GPU when one answers.
pub fn built_devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut devices = vec![Device::Cpu { threads: 1 }, Device::Cpu { threads: 2 }];
    #[cfg(feature = "cuda")]
    if osipy_backend::is_gpu_available() {
        devices.push(Device::Cuda {
            ordinal: 0,
            threads: 2,
            fallback: false,
        });
    }
    devices
}
