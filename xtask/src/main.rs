//! Project automation. `cargo xtask check-deps` enforces the crate layering
//! of ARCHITECTURE.md from `cargo metadata`.

mod bench;
mod deps;
mod dro;

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
        Some("fit-npy") => match args.get(1).map(String::as_str) {
            Some("ivim") => bench::fit_saved_ivim(&workspace_root()),
            Some("asl") => bench::fit_saved_asl(&workspace_root()),
            _ => bench::fit_saved(&workspace_root()),
        },
        Some(other) => {
            bail!("unknown task {other:?}; available: check-deps, dro-validate, bench-compare <modality>, fit-npy")
        }
        None => {
            bail!("usage: cargo xtask <task>; available: check-deps, dro-validate, bench-compare <modality>, fit-npy")
        }
    }
}
