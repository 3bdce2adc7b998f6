//! # osipy-backend
//!
//! The compute seam of osipy: which device runs the numerics, how many threads,
//! and one deterministic parallel map over voxel chunks.
//!
//! Everything above this crate passes a [`Device`] explicitly; nothing reads a
//! global thread pool. The CPU path is always built. [`Device::Cuda`] is an
//! NVIDIA GPU, reached through `cudarc` (driver API and NVRTC, both loaded at
//! run time) when the crate is built with the `cuda` feature: the binary then
//! still builds and runs on machines with no CUDA toolkit or driver.
//! [`Device::select`] turns a [`DeviceChoice`] (`cpu`, `cuda`, `cuda:N`,
//! `auto`) into a device: `cuda` asked for and missing is an error naming the
//! cause; only `auto` falls back to the CPU, and says why.
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
//! | `cuda` | no | [`Device::Cuda`] through `cudarc` (dynamic loading): the [`cuda`] module |

use rayon::prelude::*;

#[cfg(feature = "cuda")]
pub mod cuda;
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
    /// A device name that is not `cpu`, `cuda`, `cuda:N` or `auto`.
    #[error("unknown device {value:?} in {source_name}: expected cpu, cuda, cuda:N (a GPU ordinal such as cuda:1) or auto")]
    InvalidDevice {
        /// The text that was given.
        value: String,
        /// Where it came from (a flag or a config key).
        source_name: String,
    },
    /// A CUDA device was asked for and cannot be used.
    #[error("CUDA device {ordinal} cannot be used: {cause}")]
    Gpu {
        /// The device ordinal asked for.
        ordinal: usize,
        /// Why, in words (no driver, no such device, a driver error, a
        /// build without the `cuda` feature).
        cause: String,
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
    /// An NVIDIA GPU (the `cuda` feature): least-squares fits run there;
    /// reading, start points, the per-voxel verdicts and every stage
    /// without a GPU kernel run on `threads` CPU threads.
    Cuda {
        /// The GPU's ordinal (0 for the first).
        ordinal: usize,
        /// CPU worker threads for the host side.
        threads: usize,
        /// Chosen by `auto`: a model without a GPU kernel then fits on the
        /// CPU with a logged message instead of stopping the run.
        fallback: bool,
    },
}

/// What a user asked for (`--device`, `backend.device`), before it is
/// checked against the machine by [`Device::select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal; an error if it cannot be used.
    Cuda(usize),
    /// The first CUDA GPU when one answers, else the CPU (logged).
    Auto,
}

impl DeviceChoice {
    /// Parses `cpu`, `cuda`, `cuda:N` or `auto`; `source_name` names the
    /// flag or key in the error.
    pub fn parse(value: &str, source_name: &str) -> Result<DeviceChoice, BackendError> {
        let bad = || BackendError::InvalidDevice {
            value: value.to_string(),
            source_name: source_name.to_string(),
        };
        match value.trim() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Auto),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => f.write_str("auto"),
        }
    }
}

/// Why `auto` chose the CPU, when it did (for the run's log).
pub type FallbackReason = Option<String>;

impl Device {
    /// A CPU device with `threads` workers; `None` means all available cores.
    pub fn cpu(threads: Option<usize>) -> Device {
        let threads = threads.filter(|&t| t > 0).unwrap_or_else(available_cores);
        Device::Cpu { threads }
    }

    /// The best device on this machine: the first GPU when the `cuda`
    /// feature is built and a GPU answers, else the CPU; the thread count
    /// from `OSIPY_NUM_THREADS` when that is set (an invalid value is an
    /// error, not silently ignored) or all cores.
    pub fn auto() -> Result<Device, BackendError> {
        Ok(Device::select(DeviceChoice::Auto, threads_from_env()?)?.0)
    }

    /// The device `choice` names, with `threads` CPU threads (`None`: all
    /// cores). `cuda` is checked now (driver, device): an error naming the
    /// cause when it cannot be used, and always an error in a build without
    /// the `cuda` feature. `auto` returns the CPU when no GPU answers, with
    /// the reason beside it.
    pub fn select(
        choice: DeviceChoice,
        threads: Option<usize>,
    ) -> Result<(Device, FallbackReason), BackendError> {
        let threads = threads.filter(|&t| t > 0).unwrap_or_else(available_cores);
        let cuda = |ordinal, fallback| -> Result<Device, BackendError> {
            gpu_check(ordinal)?;
            Ok(Device::Cuda {
                ordinal,
                threads,
                fallback,
            })
        };
        match choice {
            DeviceChoice::Cpu => Ok((Device::Cpu { threads }, None)),
            DeviceChoice::Cuda(ordinal) => Ok((cuda(ordinal, false)?, None)),
            DeviceChoice::Auto => match cuda(0, true) {
                Ok(d) => Ok((d, None)),
                Err(e) => Ok((Device::Cpu { threads }, Some(e.to_string()))),
            },
        }
    }

    /// Number of worker threads this device uses for CPU work.
    pub fn threads(&self) -> usize {
        match self {
            Device::Cpu { threads } | Device::Cuda { threads, .. } => (*threads).max(1),
        }
    }

    /// The GPU ordinal, for a CUDA device.
    pub fn cuda_ordinal(&self) -> Option<usize> {
        match self {
            Device::Cuda { ordinal, .. } => Some(*ordinal),
            Device::Cpu { .. } => None,
        }
    }

    /// This device's CPU side: the same thread count on the CPU (for stages
    /// that have no GPU kernel).
    pub fn host(&self) -> Device {
        Device::Cpu {
            threads: self.threads(),
        }
    }

    /// A short human-readable name, e.g. `cpu (2 threads)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu { threads } => format!("cpu ({threads} threads)"),
            Device::Cuda { ordinal, threads, .. } => format!("cuda:{ordinal} ({threads} host threads)"),
        }
    }
}

/// Whether GPU `ordinal` can be used: with the `cuda` feature, the driver
/// library loads, initialises and has that device; without it, an error
/// saying so.
fn gpu_check(ordinal: usize) -> Result<(), BackendError> {
    #[cfg(feature = "cuda")]
    {
        cuda::context(ordinal).map(|_| ())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(BackendError::Gpu {
            ordinal,
            cause: "this osipy was built without the `cuda` feature; rebuild with `cargo build --release --features cuda`, or use the CPU (--device cpu)".into(),
        })
    }
}

impl Default for Device {
    fn default() -> Self {
        Device::cpu(None)
    }
}

/// Whether a GPU backend is built in and its first device answers.
pub fn is_gpu_available() -> bool {
    gpu_check(0).is_ok()
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
        assert_eq!(Device::cpu(Some(2)).describe(), "cpu (2 threads)");
    }

    #[test]
    fn device_names_parse_and_bad_ones_are_named() {
        for (text, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            (" auto ", DeviceChoice::Auto),
        ] {
            let got = DeviceChoice::parse(text, "--device").unwrap();
            assert_eq!(got, want);
            assert_eq!(DeviceChoice::parse(&got.to_string(), "x").unwrap(), want);
        }
        for bad in ["gpu", "cuda:", "cuda:-1", "CUDA", ""] {
            let msg = DeviceChoice::parse(bad, "backend.device")
                .unwrap_err()
                .to_string();
            assert!(msg.contains("backend.device") && msg.contains("cuda:N"), "{msg}");
        }
    }

    #[test]
    fn cpu_is_always_selectable_and_auto_says_why_it_fell_back() {
        let (d, why) = Device::select(DeviceChoice::Cpu, Some(3)).unwrap();
        assert_eq!((d, why), (Device::Cpu { threads: 3 }, None));
        let (d, why) = Device::select(DeviceChoice::Auto, Some(2)).unwrap();
        match d {
            Device::Cpu { threads } => {
                assert_eq!(threads, 2);
                assert!(why.unwrap().contains("CUDA device 0"));
                assert!(!is_gpu_available());
                let e = Device::select(DeviceChoice::Cuda(0), Some(2))
                    .unwrap_err()
                    .to_string();
                assert!(e.starts_with("CUDA device 0 cannot be used: "), "{e}");
            }
            Device::Cuda {
                ordinal,
                threads,
                fallback,
            } => {
                assert_eq!((ordinal, threads, fallback), (0, 2, true));
                assert!(why.is_none() && is_gpu_available());
            }
        }
        let e = Device::select(DeviceChoice::Cuda(4096), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CUDA device 4096"), "{e}");
    }
}
