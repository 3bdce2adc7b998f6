//! BIDS in and out: every modality's demo laid out as a BIDS dataset, run
//! with `data.format = "bids"` and `output.format = "bids"`, gives the maps
//! of the plain run under BIDS-derivative names, in a dataset the official
//! BIDS validator passes; ASL-BIDS sidecar fields reach the ASL pipeline
//! through the inheritance principle.

use osipy_io::{read_nifti, Geometry};
use osipy_pipeline::{run_analysis, Config, RunOptions, RunSummary, MODALITIES};
use std::path::Path;

const RAW_DESCRIPTION: &str = r#"{"Name": "osipy demos", "BIDSVersion": "1.10.0"}"#;

fn run(config: &str, data: &Path, out: &Path) -> osipy_core::Result<RunSummary> {
    let config = Config::from_toml(config)?;
    run_analysis(
        &config,
        &RunOptions {
            data_dir: data.into(),
            out_dir: out.into(),
            ..Default::default()
        },
    )
}

/// Adds `lines` at the top of the config's `[data]` table (and `[output]`).
fn with_data(config: &str, lines: &str, output: &str) -> String {
    let c = config.replace("[data]\n", &format!("[data]\n{lines}"));
    if c.contains("[output]\n") {
        c.replace("[output]\n", &format!("[output]\n{output}"))
    } else {
        format!("{c}\n[output]\n{output}")
    }
}

/// The maps of two runs' image files are equal, bit for bit.
fn same_images(a: &Path, b: &Path, what: &str) {
    let (x, y) = (read_nifti(a).unwrap(), read_nifti(b).unwrap());
    assert_eq!(x.geometry.affine, y.geometry.affine, "{what}");
    assert!(
        x.data
            .iter()
            .zip(y.data.iter())
            .all(|(p, q)| p == q || (p.is_nan() && q.is_nan())),
        "{what}: {} and {} differ",
        a.display(),
        b.display()
    );
}

/// Runs the BIDS validator on `root`: its errors (none expected).
fn validator_errors(root: &Path) -> Option<Vec<String>> {
    let exe = osipy_io::peers::find("bids-validator-deno", "bids-validator-deno")?;
    let out = std::process::Command::new(exe)
        .arg("--json")
        .arg(root)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validator output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let issues = report["issues"]["issues"].as_array().cloned().unwrap_or_default();
    Some(
        issues
            .iter()
            .filter(|i| i["severity"] == "error")
            .map(|i| format!("{} {}", i["code"], i["location"]))
            .collect(),
    )
}

#[test]
fn every_modality_runs_from_bids_into_a_valid_derivatives_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, derivatives) = (dir.path().join("raw"), dir.path().join("derivatives"));
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("dataset_description.json"), RAW_DESCRIPTION).unwrap();
    let geometry = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
    for m in MODALITIES {
        let (id, datatype) = (m.id(), m.bids_datatype());
        let case = m.demo().unwrap();
        // The plain run.
        let plain = dir.path().join(format!("plain_{id}"));
        let config_path = case.write_files(&plain, &geometry).unwrap();
        let flat = run(&case.config, &plain, &plain.join("out")).unwrap();
        // The same files in the BIDS tree, named by the config.
        let folder = raw.join(format!("sub-{id}")).join(datatype);
        std::fs::create_dir_all(&folder).unwrap();
        let mut config = std::fs::read_to_string(&config_path).unwrap();
        for (name, _) in &case.files {
            let bids_name = format!("sub-{id}_{name}");
            std::fs::copy(plain.join(name), folder.join(&bids_name)).unwrap();
            config = config.replace(
                &format!("\"{name}\""),
                &format!("\"sub-{id}/{datatype}/{bids_name}\""),
            );
        }
        let config = with_data(
            &config,
            &format!("format = \"bids\"\nsubject = \"{id}\"\n"),
            "format = \"bids\"\n",
        );
        let summary = run(&config, &raw, &derivatives).unwrap();
        let run_dir = derivatives.join(format!("sub-{id}")).join(datatype);
        assert_eq!(flat.quality_counts, summary.quality_counts, "{id}");
        let mut maps = 0;
        for f in flat
            .outputs
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".nii.gz"))
        {
            let stem = f
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(".nii.gz");
            let bids = osipy_io::bids::derivative_name(
                &osipy_io::bids::Participant {
                    subject: id.into(),
                    session: None,
                },
                stem,
                id,
                ".nii.gz",
            );
            let theirs = run_dir.join(&bids);
            assert!(summary.outputs.contains(&theirs), "{id}: {bids} not listed");
            same_images(f, &theirs, &format!("{id} {stem}"));
            let sidecar: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(theirs.with_file_name(bids.replace(".nii.gz", ".json"))).unwrap(),
            )
            .unwrap();
            assert!(
                sidecar["Sources"].as_array().is_some_and(|s| !s.is_empty()),
                "{id} {stem}"
            );
            assert!(
                sidecar["Description"].is_string() && sidecar.get("Units").is_some(),
                "{id} {stem}"
            );
            maps += 1;
        }
        assert!(maps > case.truth.len(), "{id}: {maps} maps");
        // Standard-error maps carry their map's unit; the quality map says
        // what its codes mean.
        let p = osipy_io::bids::Participant {
            subject: id.into(),
            session: None,
        };
        let sidecar = |map: &str| -> serde_json::Value {
            let name = osipy_io::bids::derivative_name(&p, map, id, ".json");
            serde_json::from_str(&std::fs::read_to_string(run_dir.join(name)).unwrap()).unwrap()
        };
        for (name, _, _) in &case.truth {
            let se = run_dir.join(osipy_io::bids::derivative_name(
                &p,
                &format!("{name}_se"),
                id,
                ".json",
            ));
            if se.is_file() {
                assert_eq!(
                    sidecar(&format!("{name}_se"))["Units"],
                    sidecar(name)["Units"],
                    "{id} {name}"
                );
            }
        }
        let q = sidecar("quality_mask")["Description"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(q.contains("1 converged") && q.contains("0 not_fitted"), "{q}");
        assert!(run_dir.join("osipy_run.json").is_file() && run_dir.join("report.html").is_file());
        // The report redraws from the BIDS-named folder.
        osipy_pipeline::write_report(&run_dir).unwrap();
    }
    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(derivatives.join("dataset_description.json")).unwrap())
            .unwrap();
    assert_eq!(description["DatasetType"], "derivative");
    assert_eq!(description["GeneratedBy"][0]["Name"], "osipy");
    if let Some(errors) = validator_errors(&derivatives) {
        assert!(errors.is_empty(), "BIDS validator errors: {errors:#?}");
    }
}

/// The ASL demo as BIDS raw data: files found by their BIDS names, the
/// labeling parameters and the M0 image's TR only in sidecars (dataset,
/// subject and datatype levels, deeper ones overriding); the maps equal the
/// demo's run with them in the config.
#[test]
fn asl_reads_its_parameters_from_inherited_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let m = MODALITIES.iter().find(|m| m.id() == "asl").unwrap();
    let case = m.demo().unwrap();
    let plain = dir.path().join("plain");
    case.write_files(&plain, &Geometry::from_affine(osipy_core::IDENTITY_AFFINE))
        .unwrap();
    let flat = run(&case.config, &plain, &plain.join("out")).unwrap();

    let raw = dir.path().join("raw");
    let perf = raw.join("sub-01").join("perf");
    std::fs::create_dir_all(&perf).unwrap();
    std::fs::write(raw.join("dataset_description.json"), RAW_DESCRIPTION).unwrap();
    for (from, to) in [
        ("asl.nii.gz", "sub-01_asl.nii.gz"),
        ("m0.nii.gz", "sub-01_m0scan.nii.gz"),
        ("aslcontext.tsv", "sub-01_aslcontext.tsv"),
    ] {
        std::fs::copy(plain.join(from), perf.join(to)).unwrap();
    }
    // The demo's per-volume PLDs, from its config.
    let plds: Vec<f64> = {
        let c: toml::Value = toml::from_str(&case.config).unwrap();
        c["pipeline"]["plds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_float().or(v.as_integer().map(|i| i as f64)).unwrap())
            .collect()
    };
    let dataset_level = serde_json::json!({
        "ArterialSpinLabelingType": "PCASL",
        "PostLabelingDelay": plds,
        "LabelingDuration": 1.5,
        "M0Type": "Separate",
    });
    std::fs::write(raw.join("asl.json"), dataset_level.to_string()).unwrap();
    std::fs::write(perf.join("sub-01_asl.json"), r#"{"LabelingDuration": 1.8}"#).unwrap();
    // The M0 image's TR (the demo's m0_tr) from its own sidecar.
    std::fs::write(
        raw.join("sub-01").join("sub-01_m0scan.json"),
        r#"{"RepetitionTimePreparation": 4.0}"#,
    )
    .unwrap();
    let config = "modality = \"asl\"\n\n[data]\nformat = \"bids\"\nsubject = \"01\"\n";
    let summary = run(config, &raw, &dir.path().join("out")).unwrap();
    assert_eq!(
        summary.inputs["asl"],
        perf.join("sub-01_asl.nii.gz").display().to_string()
    );
    assert_eq!(
        summary.inputs["m0"],
        perf.join("sub-01_m0scan.nii.gz").display().to_string()
    );
    for name in ["CBF", "ATT"] {
        same_images(
            &plain.join("out").join(format!("{name}.nii.gz")),
            &dir.path().join("out").join(format!("{name}.nii.gz")),
            name,
        );
    }
    assert_eq!(flat.quality_counts, summary.quality_counts);

    // Without the sidecars the labeling scheme is missing, and the error
    // says where it may come from.
    std::fs::remove_file(raw.join("asl.json")).unwrap();
    let e = run(config, &raw, &dir.path().join("out2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ArterialSpinLabelingType"), "{e}");
}

#[test]
fn bids_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(raw.join("sub-01/ses-a/perf")).unwrap();
    std::fs::create_dir_all(raw.join("sub-01/ses-b/perf")).unwrap();
    let out = dir.path().join("out");
    let cfg = |data: &str| format!("modality = \"asl\"\n\n[data]\nformat = \"bids\"\n{data}");
    // No dataset_description.json.
    let e = run(&cfg("subject = \"01\"\nsession = \"a\"\n"), &raw, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dataset_description.json"), "{e}");
    std::fs::write(raw.join("dataset_description.json"), RAW_DESCRIPTION).unwrap();
    let e = run(&cfg(""), &raw, &out).unwrap_err().to_string();
    assert!(e.contains("data.subject"), "{e}");
    let e = run(&cfg("subject = \"02\"\n"), &raw, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("02") && e.contains("01"), "{e}");
    let e = run(&cfg("subject = \"sub-01\"\n"), &raw, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without the sub-"), "{e}");
    let e = run(&cfg("subject = \"01\"\n"), &raw, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.session") && e.contains("a, b"), "{e}");
    let e = run(&cfg("subject = \"01\"\nsession = \"a\"\n"), &raw, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.asl"), "{e}");
    // BIDS output needs BIDS input.
    let e = run(
        "modality = \"asl\"\n\n[data]\nasl = \"x.nii.gz\"\n\n[output]\nformat = \"bids\"\n",
        &raw,
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a BIDS input"), "{e}");
}
