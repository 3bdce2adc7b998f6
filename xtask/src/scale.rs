//! `cargo xtask bench-scale [VOXELS...]`: the whole `osipy run` at growing
//! sizes, so that growth with size is visible.
//!
//! For DCE (extended Tofts, VFA T1, SPGR signal: the DCE demo's
//! acquisition) and IVIM (segmented; the IVIM demo's b-values) at 10^4,
//! 10^5 and 10^6 voxels by default (any sizes as arguments: 10^7 works, but
//! generating its phantom in memory takes about 16 GB), the demo case is
//! generated on a near-cubic grid (seeded), written as NIfTI, and run by the
//! release CLI under `/usr/bin/time -v`. Printed per run: the stage times
//! from `osipy_run.json`, wall time, time per voxel, fit throughput and peak
//! RSS; the table also goes to `target/bench-scale/results.md`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// A grid of about `n` voxels: x = y, z about half of x.
fn grid(n: usize) -> [usize; 3] {
    let x = ((2 * n) as f64).cbrt().round().max(1.0) as usize;
    let z = n.div_ceil(x * x).max(1);
    [x, x, z]
}

/// Stages reported as columns, in order (others are summed into `other`).
const STAGES: [&str; 6] = ["read", "t1", "concentration", "fit", "write", "report"];

pub fn bench_scale(root: &Path, args: &[String]) -> Result<()> {
    // `--keep` leaves each case's data in place (for profiling runs on it);
    // `--modality dce|ivim` runs one modality only.
    let keep = args.iter().any(|a| a == "--keep");
    let mut modalities = vec!["dce", "ivim"];
    let mut rest = Vec::new();
    let mut it = args.iter().filter(|a| *a != "--keep");
    while let Some(a) = it.next() {
        if a == "--modality" {
            let m = it.next().map(String::as_str).unwrap_or("");
            if !["dce", "ivim"].contains(&m) {
                bail!("--modality {m:?}: bench-scale runs \"dce\" or \"ivim\"");
            }
            modalities = vec![if m == "dce" { "dce" } else { "ivim" }];
        } else {
            rest.push(a.clone());
        }
    }
    let sizes: Vec<usize> = if rest.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        rest.iter()
            .map(|a| {
                a.replace('_', "")
                    .parse::<usize>()
                    .with_context(|| format!("voxel count {a:?} is not a whole number"))
            })
            .collect::<Result<_>>()?
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "osipy-cli"])
        .current_dir(root)
        .status()?
        .success()
    {
        bail!("building the osipy CLI failed");
    }
    let bin = root.join("target/release/osipy");
    let base = root.join("target/bench-scale");
    let mut table = format!(
        "| modality | voxels | grid | {} | other (s) | wall (s) | µs/voxel | fit voxels/s | peak RSS (MiB) |\n|---|---|---|{}---|---|---|---|---|\n",
        STAGES.map(|s| format!("{s} (s)")).join(" | "),
        "---|".repeat(STAGES.len())
    );
    println!("{}", table.trim_end());
    for modality in modalities {
        for &n in &sizes {
            let g = grid(n);
            let case = match modality {
                "dce" => osipy_dce::demo_case_sized(g)?,
                _ => osipy_ivim::demo_case_sized(g)?,
            };
            let dir = base.join(format!("{modality}-{n}"));
            let _ = std::fs::remove_dir_all(&dir);
            let data = dir.join("data");
            let geometry = osipy_io::Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
            let config = case.write_files(&data, &geometry)?;
            drop(case);
            let out = Command::new("/usr/bin/time")
                .arg("-v")
                .arg(&bin)
                .arg("run")
                .arg(&config)
                .arg(&data)
                .args(["-o"])
                .arg(dir.join("out"))
                .arg("-q")
                .output()
                .context("running /usr/bin/time -v osipy run")?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                bail!("osipy run failed on {}:\n{err}", data.display());
            }
            let field = |key: &str| {
                err.lines()
                    .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            let rss_mb = field("Maximum resident set size (kbytes):")
                .parse::<f64>()
                .unwrap_or(f64::NAN)
                / 1024.0;
            let wall = parse_wall(&field("Elapsed (wall clock) time (h:mm:ss or m:ss):"));
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("out/osipy_run.json"))?)?;
            let timings: Vec<(String, f64)> = serde_json::from_value(summary["timings"].clone())?;
            // `0.0 +`: an empty f64 sum is -0.0, printed "-0.00".
            let stage = |s: &str| {
                0.0 + timings
                    .iter()
                    .filter(|(n, _)| n == s)
                    .map(|(_, t)| t)
                    .sum::<f64>()
            };
            let other: f64 = 0.0
                + timings
                    .iter()
                    .filter(|(n, _)| !STAGES.contains(&n.as_str()))
                    .map(|(_, t)| t)
                    .sum::<f64>();
            let voxels = g.iter().product::<usize>();
            let row = format!(
                "| {modality} | {voxels} | {}x{}x{} | {} | {other:.2} | {wall:.2} | {:.2} | {:.0} | {rss_mb:.0} |",
                g[0],
                g[1],
                g[2],
                STAGES.map(|s| format!("{:.2}", stage(s))).join(" | "),
                1e6 * wall / voxels as f64,
                voxels as f64 / stage("fit"),
            );
            println!("{row}");
            table.push_str(&row);
            table.push('\n');
            if !keep {
                let _ = std::fs::remove_dir_all(&data);
            }
        }
    }
    std::fs::create_dir_all(&base)?;
    std::fs::write(base.join("results.md"), &table)?;
    println!("\n(table also in {})", base.join("results.md").display());
    Ok(())
}

/// `m:ss.ss` or `h:mm:ss` as seconds.
fn parse_wall(s: &str) -> f64 {
    s.split(':')
        .map(|p| p.parse::<f64>().unwrap_or(f64::NAN))
        .fold(0.0, |acc, x| acc * 60.0 + x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_hold_about_the_asked_voxels_and_wall_times_parse() {
        for n in [10_000usize, 100_000, 1_000_000, 10_000_000] {
            let g = grid(n);
            let v = g.iter().product::<usize>();
            assert!(v >= n && (v as f64) < 1.1 * n as f64, "{n}: {g:?} = {v}");
        }
        assert_eq!(parse_wall("0:03.12"), 3.12);
        assert_eq!(parse_wall("1:02:03"), 3723.0);
    }
}
