//! The layering check behind `cargo xtask check-deps`.
//!
//! ```text
//! backend -> core -> fitting -> { aif, convolution } -> io -> { dce, dsc, asl, ivim } -> pipeline -> cli
//!                                                                                      \-> osipy (umbrella)
//! ```
//! A crate may depend only on crates of a strictly lower layer, so siblings
//! (aif/convolution, the modality crates) never depend on each other, and no
//! library crate may use `anyhow` (only `osipy-cli` and `xtask`).

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// Layer of each workspace crate; a crate may depend on lower layers only.
pub const LAYERS: &[(&str, u32)] = &[
    ("osipy-backend", 0),
    ("osipy-core", 1),
    ("osipy-fitting", 2),
    ("osipy-aif", 3),
    ("osipy-convolution", 3),
    ("osipy-io", 4),
    ("osipy-dce", 5),
    ("osipy-dsc", 5),
    ("osipy-asl", 5),
    ("osipy-ivim", 5),
    ("osipy-microstructure", 5),
    // Beside the modalities: figures and the HTML report (no modality code).
    ("osipy-report", 5),
    ("osipy-pipeline", 6),
    ("osipy-cli", 7),
    ("osipy", 7),
];

/// Crates allowed to depend on `anyhow`.
const ANYHOW_ALLOWED: &[&str] = &["osipy-cli", "xtask"];

/// Runs `cargo metadata --no-deps` for this workspace.
pub fn cargo_metadata() -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        return Err(anyhow!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

/// A workspace package: its name and its (dependency, kind) edges.
pub type Package = (String, Vec<(String, String)>);

/// Every workspace package in `meta`.
pub fn workspace_crates(meta: &Value) -> Result<Vec<Package>> {
    let pkgs = meta["packages"]
        .as_array()
        .ok_or_else(|| anyhow!("metadata has no packages"))?;
    Ok(pkgs
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let deps = p["dependencies"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .map(|d| {
                            (
                                d["name"].as_str().unwrap_or_default().to_string(),
                                d["kind"].as_str().unwrap_or("normal").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name, deps)
        })
        .collect())
}

fn layer(name: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// All layering violations in `meta` (empty when the layering holds).
/// Dev-dependencies are checked too: a test must not reach up the layers.
pub fn check(meta: &Value) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, deps) in workspace_crates(meta)? {
        if name == "xtask" {
            continue;
        }
        let Some(my_layer) = layer(&name) else {
            out.push(format!(
                "{name} is not in the layer table of xtask/src/deps.rs; add it there and to ARCHITECTURE.md"
            ));
            continue;
        };
        for (dep, kind) in deps {
            if dep == "anyhow" && !ANYHOW_ALLOWED.contains(&name.as_str()) {
                out.push(format!("{name} depends on anyhow; library crates return typed errors (only osipy-cli and xtask may use anyhow)"));
            }
            if let Some(dep_layer) = layer(&dep) {
                if dep_layer >= my_layer {
                    let what = if dep_layer == my_layer {
                        "a crate of its own layer"
                    } else {
                        "a crate to its right"
                    };
                    out.push(format!(
                        "{name} (layer {my_layer}) depends on {dep} (layer {dep_layer}), {what} [{kind}]"
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(pkgs: &[(&str, &[&str])]) -> Value {
        json!({ "packages": pkgs.iter().map(|(n, ds)| json!({
            "name": n,
            "dependencies": ds.iter().map(|d| json!({"name": d, "kind": null})).collect::<Vec<_>>()
        })).collect::<Vec<_>>() })
    }

    #[test]
    fn real_workspace_layering_holds() {
        let m = cargo_metadata().unwrap();
        let v = check(&m).unwrap();
        assert!(v.is_empty(), "{v:#?}");
        // The check saw the real crates.
        let names: Vec<String> = workspace_crates(&m)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&"osipy-fitting".to_string()) && names.contains(&"osipy-io".to_string()));
    }

    #[test]
    fn deliberately_wrong_edges_are_caught() {
        // core reaching up to fitting.
        let v = check(&meta(&[
            ("osipy-core", &["osipy-fitting"]),
            ("osipy-fitting", &["osipy-core"]),
        ]))
        .unwrap();
        assert_eq!(v.len(), 1);
        assert!(
            v[0].contains("osipy-core (layer 1) depends on osipy-fitting (layer 2), a crate to its right"),
            "{v:?}"
        );
        // Two modality crates depending on each other.
        let v = check(&meta(&[("osipy-dce", &["osipy-ivim"])])).unwrap();
        assert!(v[0].contains("a crate of its own layer"), "{v:?}");
        // anyhow in a library crate, allowed in the CLI.
        let v = check(&meta(&[
            ("osipy-io", &["anyhow"]),
            ("osipy-cli", &["anyhow", "osipy-pipeline"]),
        ]))
        .unwrap();
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("osipy-io depends on anyhow"), "{v:?}");
        // Unknown crates must be placed in the table.
        let v = check(&meta(&[("osipy-pet", &[])])).unwrap();
        assert!(v[0].contains("not in the layer table"), "{v:?}");
        // A correct chain passes.
        assert!(check(&meta(&[
            ("osipy-io", &["osipy-core", "osipy-aif"]),
            ("osipy", &["osipy-io"])
        ]))
        .unwrap()
        .is_empty());
    }
}

#[cfg(test)]
mod tidy {
    //! Tidy checks that run with `cargo test`, so drift is caught early.
    use std::path::PathBuf;

    fn crate_dirs() -> Vec<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    }

    #[test]
    fn every_crate_has_crate_docs_and_a_feature_table() {
        for dir in crate_dirs() {
            let root = if dir.join("src/lib.rs").exists() {
                dir.join("src/lib.rs")
            } else {
                dir.join("src/main.rs")
            };
            let lib = std::fs::read_to_string(root).unwrap();
            assert!(
                lib.starts_with("//! # "),
                "{} lacks a crate doc title",
                dir.display()
            );
            assert!(
                lib.contains("## Cargo features"),
                "{} lacks a cargo feature table",
                dir.display()
            );
        }
    }

    #[test]
    fn every_manifest_uses_workspace_dependencies_and_settings() {
        for dir in crate_dirs() {
            let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(toml.contains("version.workspace = true"), "{}", dir.display());
            assert!(
                toml.contains("[lints]\nworkspace = true"),
                "{} must inherit workspace lints",
                dir.display()
            );
            for line in toml
                .lines()
                .filter(|l| l.starts_with("osipy") || l.starts_with("ndarray") || l.starts_with("serde"))
            {
                assert!(
                    line.contains("workspace = true"),
                    "{}: {line:?} should use {{ workspace = true }}",
                    dir.display()
                );
            }
        }
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// `(file, line)` of every line in `crate_name`'s `src/` containing one
    /// of `needles` (comments included: a doc that shows the forbidden call
    /// would teach it).
    fn offending(crate_name: &str, needles: &[&str]) -> Vec<String> {
        let mut files = Vec::new();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../crates")
            .join(crate_name)
            .join("src");
        rust_files(&dir, &mut files);
        files.sort();
        let mut hits = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            hits.extend(
                find(&text, needles)
                    .into_iter()
                    .map(|l| format!("{}: {l}", f.display())),
            );
        }
        hits
    }

    fn find(text: &str, needles: &[&str]) -> Vec<String> {
        text.lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Crates in the modality layer of `LAYERS`.
    fn modality_crates() -> Vec<&'static str> {
        let modality_layer = super::layer("osipy-dce").unwrap();
        super::LAYERS
            .iter()
            .filter(|(n, l)| *l == modality_layer && *n != "osipy-report")
            .map(|(n, _)| *n)
            .filter(|n| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../crates")
                    .join(n)
                    .exists()
            })
            .collect()
    }

    /// Reading files, the chunk scheduler and thread-locals, as they would be written.
    const MODALITY_FORBIDDEN: &[&str] = &[
        "std::fs",
        "File::open",
        "for_each_chunk",
        "thread_local!",
        "nifti::",
    ];
    /// Numerics and file access, as they would be written in osipy-core.
    const CORE_FORBIDDEN: &[&str] = &[
        ".exp(", ".ln(", ".sqrt(", ".powi(", ".powf(", ".sin(", ".cos(", "faer", "rustfft", "std::fs",
        "File::",
    ];

    #[test]
    fn the_source_checks_catch_what_they_look_for() {
        let bad = "let t = std::fs::read_to_string(p)?;\nlet e = x.exp();\nthread_local! { }";
        assert_eq!(find(bad, MODALITY_FORBIDDEN).len(), 2);
        assert_eq!(find(bad, CORE_FORBIDDEN).len(), 2);
        assert!(find("let y = a * b;", CORE_FORBIDDEN).is_empty());
        assert!(modality_crates().contains(&"osipy-dce") && modality_crates().contains(&"osipy-ivim"));
    }

    /// Invariant: modality crates read files only through osipy-io, run
    /// per-voxel work only through osipy-fitting's device dispatch, and keep
    /// no thread-local state.
    #[test]
    fn modality_crates_neither_read_files_nor_schedule_chunks() {
        for c in modality_crates() {
            let hits = offending(c, MODALITY_FORBIDDEN);
            assert!(hits.is_empty(), "{c}:\n{}", hits.join("\n"));
        }
    }

    /// Invariant: osipy-core does no numerics and reads no files.
    #[test]
    fn core_does_no_numerics_and_reads_no_files() {
        let hits = offending("osipy-core", CORE_FORBIDDEN);
        assert!(hits.is_empty(), "{}", hits.join("\n"));
    }

    /// Invariant: every modality of the table reaches every consumer that is
    /// not driven by the table itself: its crate in the layering, its cargo
    /// feature in the umbrella crate, its tutorial page and its template.
    /// (A Python comparison in `bench::BENCHES` is optional: `bench-compare`
    /// says so for a modality without one; every entry there must name a
    /// modality of the table.)
    #[test]
    fn every_modality_reaches_every_consumer() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let umbrella = std::fs::read_to_string(root.join("crates/osipy/Cargo.toml")).unwrap();
        let registry = osipy_pipeline::builtin_registry().unwrap();
        for m in osipy_pipeline::MODALITIES {
            let id = m.id();
            let krate = format!("osipy-{id}");
            assert!(
                modality_crates().contains(&krate.as_str()),
                "{krate} is not in the modality layer"
            );
            assert!(
                umbrella.contains(&format!("\n{id} = [\"dep:{krate}\"]")),
                "the umbrella crate has no feature {id}"
            );
            assert!(
                root.join(format!("docs/{id}.md")).is_file(),
                "docs/{id}.md is missing"
            );
            osipy_pipeline::config::template(*m, &registry).unwrap();
        }
        for (id, _) in crate::bench::BENCHES {
            assert!(
                osipy_pipeline::modality::modality(id).is_ok(),
                "bench entry {id} is no modality"
            );
        }
    }
}
