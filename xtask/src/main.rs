//! Project automation. `cargo xtask check-deps` enforces the crate layering
//! of ARCHITECTURE.md from `cargo metadata`.

mod deps;

use anyhow::{bail, Context, Result};

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
        Some(other) => bail!("unknown task {other:?}; available: check-deps"),
        None => bail!("usage: cargo xtask <task>; available: check-deps"),
    }
}
