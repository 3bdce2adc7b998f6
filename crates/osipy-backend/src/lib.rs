//! # osipy-backend
//!
//! The compute seam of osipy: which device runs the numerics, how many threads,
//! and one deterministic parallel map over voxel chunks.
//!
//! Everything above this crate passes a [`Device`] explicitly; nothing reads a
//! global thread pool. The CPU path is always built. A `Device::Cuda` variant is
//! reserved for the `cuda` feature (added with the GPU work); until then
//! [`is_gpu_available`] answers `false` and [`Device::auto`] picks the CPU.
//!
//! ## Determinism
//! [`for_each_chunk`] hands every chunk of items to exactly one closure call with
//! the index of its first item, and each item writes only its own output slots.
//! As long as the per-item computation does not depend on which other items share
//! its chunk, results are bit-identical for any thread count (tested below).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none yet) | | the `cuda` feature arrives with the GPU issue |

use rayon::prelude::*;

pub mod simd;

/// Environment variable read by [`Device::auto`] and [`threads_from_env`].
pub const THREADS_ENV: &str = "OSIPY_NUM_THREADS";

/// Errors of the backend layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// `OSIPY_NUM_THREADS` (or a caller-given count) is not a positive integer.
    #[error(
        "invalid thread count {value:?} in {source_name}: expected a positive integer such as 1, 2 or 8"
    )]
    InvalidThreads {
        /// The text that was given.
        value: String,
        /// Where it came from (an environment variable or an argument).
        source_name: String,
    },
    /// The rayon thread pool could not be created.
    #[error("could not start a pool of {threads} worker threads: {message}")]
    ThreadPool {
        /// Requested thread count.
        threads: usize,
        /// The underlying error text.
        message: String,
    },
}

/// Where numerical work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// The CPU, with this many worker threads (at least 1).
    Cpu {
        /// Number of worker threads.
        threads: usize,
    },
}

impl Device {
    /// A CPU device with `threads` workers; `None` means all available cores.
    pub fn cpu(threads: Option<usize>) -> Device {
        let threads = threads.filter(|&t| t > 0).unwrap_or_else(available_cores);
        Device::Cpu { threads }
    }

    /// The best device on this machine. Without the `cuda` feature this is the
    /// CPU, with the thread count from `OSIPY_NUM_THREADS` when that is set
    /// (an invalid value is an error, not silently ignored) or all cores.
    pub fn auto() -> Result<Device, BackendError> {
        Ok(Device::cpu(threads_from_env()?))
    }

    /// Number of worker threads this device uses for CPU work.
    pub fn threads(&self) -> usize {
        match self {
            Device::Cpu { threads } => (*threads).max(1),
        }
    }

    /// A short human-readable name, e.g. `cpu (2 threads)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu { threads } => format!("cpu ({threads} threads)"),
        }
    }
}

impl Default for Device {
    fn default() -> Self {
        Device::cpu(None)
    }
}

/// Whether a GPU backend is built in and answers. Always `false` until the
/// `cuda` feature exists.
pub fn is_gpu_available() -> bool {
    false
}

/// Number of logical cores, at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Parses a thread count given as text (from a CLI flag or the environment).
pub fn parse_threads(value: &str, source_name: &str) -> Result<usize, BackendError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(BackendError::InvalidThreads {
            value: value.to_string(),
            source_name: source_name.to_string(),
        }),
    }
}

/// Thread count from `OSIPY_NUM_THREADS`: `Ok(None)` when unset or empty.
pub fn threads_from_env() -> Result<Option<usize>, BackendError> {
    match std::env::var(THREADS_ENV) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => parse_threads(&v, THREADS_ENV).map(Some),
        Err(_) => Ok(None),
    }
}

/// Runs `f` over `out` split into chunks of `chunk_items * item_len` values, in
/// parallel on `device`.
///
/// * `out` holds `n_items * item_len` values (item-major); its length must be a
///   multiple of `item_len`.
/// * `init` makes one scratch workspace per worker task (allocated once per
///   chunk batch, never inside the per-item work), passed to `f` as `&mut W`.
/// * `f(workspace, first_item, chunk)` fills `chunk`, which holds items
///   `first_item .. first_item + chunk.len() / item_len`.
///
/// Chunks are fixed by `chunk_items`, not by the thread count, so the same
/// input gives the same output for 1, 2 or 8 threads.
pub fn for_each_chunk<T, W, I, F>(
    device: &Device,
    out: &mut [T],
    item_len: usize,
    chunk_items: usize,
    init: I,
    f: F,
) -> Result<(), BackendError>
where
    T: Send,
    I: Fn() -> W + Sync + Send,
    F: Fn(&mut W, usize, &mut [T]) + Sync + Send,
{
    let item_len = item_len.max(1);
    let chunk_items = chunk_items.max(1);
    let chunk_len = chunk_items * item_len;
    let threads = device.threads();
    if threads == 1 || out.len() <= chunk_len {
        let mut ws = init();
        for (i, chunk) in out.chunks_mut(chunk_len).enumerate() {
            f(&mut ws, i * chunk_items, chunk);
        }
        return Ok(());
    }
    pool(threads)?.install(|| {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each_init(&init, |ws, (i, chunk)| f(ws, i * chunk_items, chunk));
    });
    Ok(())
}

/// The worker pool of `threads` threads: built on first use and kept for the
/// process, so a run (or a test binary) builds each pool once, not per call.
fn pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>, BackendError> {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| BackendError::ThreadPool {
                threads,
                message: e.to_string(),
            })?,
    );
    pools.insert(threads, p.clone());
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-item computation whose floating-point result depends on the
    /// order of operations, so any cross-item mixing would show.
    fn work(ws: &mut Vec<f64>, first: usize, chunk: &mut [f64]) {
        for (k, slot) in chunk.chunks_mut(2).enumerate() {
            let i = (first + k) as f64;
            ws.clear();
            ws.extend((0..50).map(|j| (i * 0.37 + j as f64).sin()));
            slot[0] = ws.iter().sum::<f64>();
            slot[1] = ws.iter().map(|v| v * v).sum::<f64>().sqrt();
        }
    }

    #[test]
    fn bit_identical_for_1_2_8_threads() {
        let n = 10_007;
        let run = |threads| {
            let mut out = vec![0.0f64; n * 2];
            for_each_chunk(&Device::Cpu { threads }, &mut out, 2, 64, Vec::new, work).unwrap();
            out
        };
        let a = run(1);
        let b = run(2);
        let c = run(8);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()));
        // The pool of a thread count is built once and reused.
        assert!(std::sync::Arc::ptr_eq(&pool(2).unwrap(), &pool(2).unwrap()));
        // Every item was visited: item 0 has sum of sin(j) for j < 50, non-zero.
        assert!(a[0] != 0.0 && a[2 * (n - 1)] != 0.0);
    }

    #[test]
    fn thread_parsing_rejects_bad_values() {
        assert_eq!(parse_threads("4", "test").unwrap(), 4);
        assert_eq!(parse_threads(" 2 ", "test").unwrap(), 2);
        for bad in ["0", "-1", "two", "1.5", ""] {
            let err = parse_threads(bad, "OSIPY_NUM_THREADS").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("OSIPY_NUM_THREADS") && msg.contains("positive integer"),
                "{msg}"
            );
        }
    }

    #[test]
    fn cpu_device_has_at_least_one_thread() {
        assert_eq!(Device::cpu(Some(3)).threads(), 3);
        assert!(Device::cpu(None).threads() >= 1);
        assert!(Device::cpu(Some(0)).threads() >= 1);
        assert!(!is_gpu_available());
        assert_eq!(Device::cpu(Some(2)).describe(), "cpu (2 threads)");
    }
}
