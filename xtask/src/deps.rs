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
}
