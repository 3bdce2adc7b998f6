//! Project automation. `cargo xtask check-deps` enforces the crate layering
//! of ARCHITECTURE.md from `cargo metadata`.

mod bench;
mod bench_ms;
mod deps;
mod dro;
mod gpu_bench;
mod ivim_tf;
mod scale;

use anyhow::{bail, Context, Result};

/// The workspace root (xtask's parent folder).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check-deps") => {
            let meta = deps::cargo_metadata().context("running cargo metadata")?;
            let violations = deps::check(&meta)?;
            if violations.is_empty() {
                println!(
                    "check-deps: layering holds for {} workspace crates",
                    deps::workspace_crates(&meta)?.len()
                );
                Ok(())
            } else {
                for v in &violations {
                    eprintln!("check-deps: {v}");
                }
                bail!("{} layering violation(s)", violations.len())
            }
        }
        Some("dro-validate") => {
            if dro::run(&workspace_root())? {
                Ok(())
            } else {
                bail!("dro-validate: some checks failed (see target/dro-validate/report.md)")
            }
        }
        Some("bench-compare") => {
            let id = args.get(1).map(String::as_str).unwrap_or_default();
            // The modality table says which modalities exist; each has its
            // Python comparison here (`bench::BENCHES`, one per modality, tested).
            let m = osipy_pipeline::modality::modality(id)
                .with_context(|| "usage: cargo xtask bench-compare <modality>")?;
            match bench::BENCHES.iter().find(|(b, _)| *b == m.id()) {
                Some((_, run)) => run(&workspace_root(), &args[2..]),
                None => bail!("no Python comparison for modality {} yet", m.id()),
            }
        }
        // Fits the arrays a previous bench-compare saved, without Python: for profiling.
        Some("gpu-bench") => gpu_bench::run(&workspace_root(), &args[1..]),
        Some("bench-scale") => scale::bench_scale(&workspace_root(), &args[1..]),
        Some("fit-npy") => match args.get(1).map(String::as_str) {
            Some("ivim") => bench::fit_saved_ivim(&workspace_root()),
            Some("asl") => bench::fit_saved_asl(&workspace_root()),
            _ => bench::fit_saved(&workspace_root()),
        },
        // Runs every fuzz target for SECONDS (default 60) each.
        Some("fuzz") => {
            let seconds: u64 = match args.get(1) {
                Some(s) => s
                    .parse()
                    .with_context(|| format!("seconds per target: {s:?} is not a whole number"))?,
                None => 60,
            };
            fuzz(&workspace_root(), seconds)
        }
        Some(other) => {
            bail!("unknown task {other:?}; available: check-deps, dro-validate, bench-compare <modality> [--device D], gpu-bench [--device D] [--out DIR] [VOXELS...], bench-scale [--modality dce|ivim] [--keep] [VOXELS...], fit-npy, fuzz [SECONDS]")
        }
        None => {
            bail!("usage: cargo xtask <task>; available: check-deps, dro-validate, bench-compare <modality> [--device D], gpu-bench [--device D] [--out DIR] [VOXELS...], bench-scale [--modality dce|ivim] [--keep] [VOXELS...], fit-npy, fuzz [SECONDS]")
        }
    }
}

/// The cargo-fuzz targets of `fuzz/` (libFuzzer; needs the nightly
/// toolchain and `cargo install cargo-fuzz`).
const FUZZ_TARGETS: [&str; 4] = ["config", "tables", "nifti", "dicom"];

/// Runs each fuzz target for `seconds` from its committed seed corpus
/// (new inputs go to `target/fuzz-corpus/<target>`), with a 2 GiB memory
/// and 10 s per-input limit; fails on the first crash, leak, timeout or
/// out-of-memory, which libFuzzer saves under `fuzz/artifacts/`.
fn fuzz(root: &std::path::Path, seconds: u64) -> Result<()> {
    let has_fuzz = std::process::Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        bail!("cargo fuzz is missing: `rustup toolchain install nightly` and `cargo install cargo-fuzz`");
    }
    for target in FUZZ_TARGETS {
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        println!("== fuzz {target} for {seconds} s");
        let status = std::process::Command::new("cargo")
            .current_dir(root.join("fuzz"))
            .args(["+nightly", "fuzz", "run", "-O", target])
            .arg(&corpus)
            .arg(format!("corpus/{target}"))
            .args([
                "--".to_string(),
                format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048".into(),
                "-timeout=10".into(),
                "-print_final_stats=1".into(),
            ])
            .status()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        if !status.success() {
            bail!("fuzz target {target} failed: see fuzz/artifacts/{target}/");
        }
    }
    Ok(())
}
