//! The GPU programs run on the CPU, for checking kernels without a GPU.
//!
//! The program of a model ([`super::program_source`]) is compiled by the
//! system C++ compiler (`c++`, or `$CXX`) after a few definitions that stand
//! in for CUDA's qualifiers and thread indices, with a `main` that reads a
//! batch from a file, runs the kernel for every row to fit (one "thread"
//! after another) and writes the outputs. The arithmetic is the kernel's
//! own, with contraction into fused multiply-adds off, as on the device.

use super::{program_source, Batch, BatchOut, Entry, GpuKernel, Runner};
use crate::batch::{BatchFit, FitOptions};
use crate::data::VoxelData;
use crate::model::Model;
use osipy_backend::Device;
use osipy_core::{OsipyError, Result};
use std::path::Path;
use std::process::Command;

/// What stands in for CUDA before the program, and the harnesses' reader.
const SHIM: &str = r#"#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#define __device__
#define __global__
#define __forceinline__ inline
struct osipy_dim3 { int x, y, z; };
static osipy_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, threadIdx = {0, 0, 0};
// The harnesses' input reader: a short file is an error, not garbage.
static void osipy_read(FILE* f, void* p, size_t size, size_t count) {
    if (count && fread(p, size, count, f) != count) { fprintf(stderr, "short input\n"); exit(2); }
}
"#;

/// The harness after the program: reads a batch, runs every row, writes
/// the outputs (formats as in `Emulator::run`).
const MAIN: &str = r#"
int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* f = fopen(argv[1], "rb");
    if (!f) return 2;
    int head[4];
    osipy_read(f, head, sizeof(int), 4);
    int rows = head[0], n_fit = head[1], max_iterations = head[2], n_consts = head[3];
    double settings[3];
    osipy_read(f, settings, sizeof(double), 3);
    double* c = (double*)malloc(sizeof(double) * (n_consts + 1));
    double lower[OSIPY_P], upper[OSIPY_P];
    int free_[OSIPY_P];
    int* which = (int*)malloc(sizeof(int) * (n_fit + 1));
    double* data = (double*)malloc(sizeof(double) * ((size_t)rows * OSIPY_N + 1));
    double* x0 = (double*)malloc(sizeof(double) * ((size_t)rows * OSIPY_P + 1));
    osipy_read(f, c, sizeof(double), n_consts);
    osipy_read(f, lower, sizeof(double), OSIPY_P);
    osipy_read(f, upper, sizeof(double), OSIPY_P);
    osipy_read(f, free_, sizeof(int), OSIPY_P);
    osipy_read(f, which, sizeof(int), n_fit);
    osipy_read(f, data, sizeof(double), (size_t)rows * OSIPY_N);
    osipy_read(f, x0, sizeof(double), (size_t)rows * OSIPY_P);
    fclose(f);
    double* x = (double*)calloc((size_t)rows * OSIPY_P + 1, sizeof(double));
    double* cov = (double*)calloc((size_t)rows * OSIPY_P + 1, sizeof(double));
    double* ssr = (double*)calloc(rows + 1, sizeof(double));
    int* iterations = (int*)calloc(rows + 1, sizeof(int));
    int* status = (int*)calloc(rows + 1, sizeof(int));
    for (int k = 0; k < n_fit; k++) {
        blockIdx.x = k;
        osipy_lm(c, data, x0, lower, upper, free_, settings, max_iterations, which, n_fit, x, cov,
                 ssr, iterations, status);
    }
    FILE* o = fopen(argv[2], "wb");
    if (!o) return 2;
    fwrite(x, sizeof(double), (size_t)rows * OSIPY_P, o);
    fwrite(cov, sizeof(double), (size_t)rows * OSIPY_P, o);
    fwrite(ssr, sizeof(double), rows, o);
    fwrite(iterations, sizeof(int), rows, o);
    fwrite(status, sizeof(int), rows, o);
    return fclose(o) == 0 ? 0 : 2;
}
"#;

/// The harness of a map kernel: reads rows, runs every row to do, writes
/// the records (formats as in `Emulator::run_map`).
const MAP_MAIN: &str = r#"
int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* f = fopen(argv[1], "rb");
    if (!f) return 2;
    int head[3];
    osipy_read(f, head, sizeof(int), 3);
    int rows = head[0], n_fit = head[1], n_consts = head[2];
    double* c = (double*)malloc(sizeof(double) * (n_consts + 1));
    int* which = (int*)malloc(sizeof(int) * (n_fit + 1));
    double* data = (double*)malloc(sizeof(double) * ((size_t)rows * OSIPY_N + 1));
    double* out = (double*)malloc(sizeof(double) * ((size_t)rows * OSIPY_R + 1));
    osipy_read(f, c, sizeof(double), n_consts);
    osipy_read(f, which, sizeof(int), n_fit);
    osipy_read(f, data, sizeof(double), (size_t)rows * OSIPY_N);
    osipy_read(f, out, sizeof(double), (size_t)rows * OSIPY_R);
    fclose(f);
    for (int k = 0; k < n_fit; k++) {
        blockIdx.x = k;
        osipy_map(c, data, which, n_fit, out);
    }
    FILE* o = fopen(argv[2], "wb");
    if (!o) return 2;
    fwrite(out, sizeof(double), (size_t)rows * OSIPY_R, o);
    return fclose(o) == 0 ? 0 : 2;
}
"#;

/// The C++ emulation of a GPU device, taking `rows` voxels a launch.
pub(crate) struct Emulator {
    pub(crate) rows: usize,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> OsipyError {
    OsipyError::Fitting(format!("GPU emulation: {what} {}: {e}", path.display()))
}

/// Compiles `kernel`'s program for `n` samples and `entry` with its harness
/// in `dir`; returns the executable's path.
fn compile(kernel: &GpuKernel, n: usize, entry: Entry, dir: &Path) -> Result<std::path::PathBuf> {
    let src = dir.join("program.cpp");
    let exe = dir.join("program");
    let main = match entry {
        Entry::Lm { .. } => MAIN,
        Entry::Map { .. } => MAP_MAIN,
    };
    let text = format!("{}{main}", program_source(kernel, n, entry, SHIM));
    std::fs::write(&src, text).map_err(|e| io_error("writing", &src, e))?;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let output = Command::new(&cxx)
        .args(["-O2", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(|e| {
            OsipyError::Fitting(format!(
                "GPU emulation needs a C++ compiler ({cxx}, or set CXX): could not start it: {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(OsipyError::Fitting(format!(
            "the GPU program of model kernel {} did not compile with {cxx}:\n{}",
            kernel.key,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(exe)
}

fn bytes<T: Copy>(v: &[T], to_le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|x| to_le(*x)).collect()
}

/// Runs the harness `exe` on `input` (in `dir`); returns its output.
fn execute(kernel: &GpuKernel, exe: &Path, dir: &Path, input: Vec<u8>) -> Result<Vec<u8>> {
    let (inp, outp) = (dir.join("input.bin"), dir.join("output.bin"));
    std::fs::write(&inp, input).map_err(|e| io_error("writing", &inp, e))?;
    let status = Command::new(exe)
        .arg(&inp)
        .arg(&outp)
        .status()
        .map_err(|e| io_error("running", exe, e))?;
    if !status.success() {
        return Err(OsipyError::Fitting(format!(
            "GPU emulation of {} failed ({status})",
            kernel.key
        )));
    }
    std::fs::read(&outp).map_err(|e| io_error("reading", &outp, e))
}

fn check_len(kernel: &GpuKernel, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(OsipyError::Fitting(format!(
            "GPU emulation of {} wrote {got} bytes, expected {expected}",
            kernel.key
        )))
    }
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    bytes(v, |x: f64| x.to_le_bytes().to_vec())
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    bytes(v, |x: i32| x.to_le_bytes().to_vec())
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| OsipyError::Fitting(format!("GPU emulation: no temporary folder: {e}")))
}

impl Runner for Emulator {
    fn rows_per_batch(&self, _bytes_per_row: usize) -> Result<usize> {
        Ok(self.rows)
    }

    fn run(&self, kernel: &GpuKernel, batch: &Batch, out: &mut BatchOut) -> Result<()> {
        let (n, p, rows) = (batch.n, batch.p, batch.rows());
        let dir = tempdir()?;
        let exe = compile(kernel, n, Entry::Lm { p }, dir.path())?;
        let (f64s, i32s) = (f64_bytes, i32_bytes);
        let head = [
            rows as i32,
            batch.which.len() as i32,
            batch.max_iterations,
            kernel.consts.len() as i32,
        ];
        let mut input = i32s(&head);
        input.extend(f64s(&batch.settings));
        input.extend(f64s(&kernel.consts));
        input.extend(f64s(batch.lower));
        input.extend(f64s(batch.upper));
        input.extend(i32s(batch.free));
        input.extend(i32s(batch.which));
        input.extend(f64s(batch.data));
        input.extend(f64s(batch.x0));
        let raw = execute(kernel, &exe, dir.path(), input)?;
        let expected = (2 * rows * p + rows) * 8 + 2 * rows * 4;
        check_len(kernel, raw.len(), expected)?;
        let mut at = 0;
        let mut f64_into = |dst: &mut [f64]| {
            for d in dst.iter_mut() {
                *d = f64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
                at += 8;
            }
        };
        f64_into(&mut out.x[..rows * p]);
        f64_into(&mut out.cov[..rows * p]);
        f64_into(&mut out.ssr[..rows]);
        let mut at = (2 * rows * p + rows) * 8;
        for dst in [&mut out.iterations[..rows], &mut out.status[..rows]] {
            for d in dst.iter_mut() {
                *d = i32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or([0; 4]));
                at += 4;
            }
        }
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
        let dir = tempdir()?;
        let exe = compile(kernel, n, Entry::Map { record }, dir.path())?;
        let mut input = i32_bytes(&[rows as i32, which.len() as i32, kernel.consts.len() as i32]);
        input.extend(f64_bytes(&kernel.consts));
        input.extend(i32_bytes(which));
        input.extend(f64_bytes(data));
        input.extend(f64_bytes(&out[..rows * record]));
        let raw = execute(kernel, &exe, dir.path(), input)?;
        check_len(kernel, raw.len(), rows * record * 8)?;
        for (d, b) in out.iter_mut().zip(raw.chunks_exact(8)) {
            *d = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }
}

/// [`crate::fit_batch`] with the model's GPU program compiled by the system
/// C++ compiler and run on the CPU (see the module documentation): for
/// checking kernels where there is no GPU. `device` gives the host threads
/// for reading and verdicts. An error when the model has no GPU form or no
/// C++ compiler can be started.
pub fn emulated_fit_batch<D: VoxelData>(
    model: &dyn Model,
    data: D,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> Result<BatchFit> {
    super::fit_with(&Emulator { rows: 1 << 16 }, model, &data, mask, opts, device)
}
