//! The IVIM pipeline from files: b-value sources, outputs, bad inputs.

use ndarray::Array3;
use osipy_core::QualityCode;
use osipy_io::{read_3d, write_4d, write_mask, Geometry};
use osipy_ivim::phantom::{generate, IvimPhantomSpec};
use osipy_pipeline::{dro::compare, run_analysis, Config, RunOptions};
use std::path::Path;

fn write(dir: &Path, spec: &IvimPhantomSpec) -> osipy_ivim::phantom::IvimPhantom {
    let ph = generate(spec).unwrap();
    write_4d(
        dir.join("dwi.nii.gz"),
        &ph.signal,
        &Geometry::from_affine(osipy_core::IDENTITY_AFFINE),
        1.0,
    )
    .unwrap();
    ph
}

fn run(dir: &Path, config: &str) -> Result<std::path::PathBuf, String> {
    let cfg = Config::from_toml(config).map_err(|e| e.to_string())?;
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    run_analysis(
        &cfg,
        &RunOptions {
            data_dir: dir.into(),
            out_dir: out.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn ivim_maps_from_files_with_each_b_value_source() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IvimPhantomSpec {
        shape: [8, 8, 4],
        snr: None,
        ..Default::default()
    };
    let ph = write(dir.path(), &spec);
    let b = format!("{:?}", spec.b_values);
    // 1. b-values in the config, full fit: noise-free data recovered.
    let out = run(
        dir.path(),
        &format!("modality = \"ivim\"\n[pipeline]\nfitting_method = \"full\"\n[data]\nb_values = {b}\n"),
    )
    .unwrap();
    for f in [
        "D.nii.gz",
        "D_se.nii.gz",
        "Dstar.nii.gz",
        "f.nii.gz",
        "S0.nii.gz",
        "D.json",
        "quality_mask.nii.gz",
        "r_squared.nii.gz",
        "osipy_run.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    for name in ["D", "f", "Dstar", "S0"] {
        let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
        let s = compare(name, &est, ph.truth(name).unwrap(), None).unwrap();
        // float32 storage of signal and maps: 1e-4.
        assert!(s.p90_abs_rel_error < 1e-4, "{name}: {s:?}");
    }
    // 2. FSL .bval discovered; 3. JSON sidecar. Both give the same maps.
    std::fs::write(
        dir.path().join("dwi.bval"),
        spec.b_values
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
    .unwrap();
    let out = run(dir.path(), "modality = \"ivim\"\n").unwrap();
    let (d_bval, _) = read_3d(out.join("D.nii.gz")).unwrap();
    std::fs::remove_file(dir.path().join("dwi.bval")).unwrap();
    std::fs::write(dir.path().join("dwi.json"), format!("{{\"b_values\": {b}}}")).unwrap();
    let out = run(dir.path(), "modality = \"ivim\"\n").unwrap();
    let (d_json, _) = read_3d(out.join("D.nii.gz")).unwrap();
    assert_eq!(d_bval, d_json);
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("osipy_run.json")).unwrap()).unwrap();
    assert!(run_json["inputs"]["b_values"]
        .as_str()
        .unwrap()
        .ends_with("dwi.json"));
}

#[test]
fn ivim_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IvimPhantomSpec {
        shape: [4, 4, 1],
        ..Default::default()
    };
    write(dir.path(), &spec);
    let cfg = |b: &str| format!("modality = \"ivim\"\n[data]\nb_values = {b}\n");
    // Count not matching the volumes.
    let e = run(dir.path(), &cfg("[0, 100, 500]")).unwrap_err();
    assert!(
        e.contains("number of b-values") && e.contains("12, one per volume"),
        "{e}"
    );
    // Negative b-value.
    let e = run(
        dir.path(),
        &cfg("[0, 10, 20, 40, 80, 110, 140, 200, 300, 500, 700, -1000]"),
    )
    .unwrap_err();
    assert!(e.contains("-1000"), "{e}");
    // No b = 0.
    let e = run(
        dir.path(),
        &cfg("[5, 10, 20, 40, 80, 110, 140, 200, 300, 500, 700, 1000]"),
    )
    .unwrap_err();
    assert!(e.contains("no b = 0"), "{e}");
    // Too few b-values above the threshold for segmented.
    let e = run(
        dir.path(),
        &format!(
            "{}[pipeline]\nb_threshold = 800.0\n",
            cfg("[0, 10, 20, 40, 80, 110, 140, 200, 300, 500, 700, 1000]")
        ),
    )
    .unwrap_err();
    assert!(e.contains("b_threshold = 800") && e.contains("at least 2"), "{e}");
    // No b-values at all.
    let e = run(dir.path(), "modality = \"ivim\"\n").unwrap_err();
    assert!(e.contains("data.b_values"), "{e}");
    // All-zero voxels go to the quality mask.
    let mut sig = generate(&spec).unwrap().signal;
    for k in 0..12 {
        sig[[0, 0, 0, k]] = 0.0;
    }
    write_4d(
        dir.path().join("dwi.nii.gz"),
        &sig,
        &Geometry::from_affine(osipy_core::IDENTITY_AFFINE),
        1.0,
    )
    .unwrap();
    write_mask(
        dir.path().join("mask.nii.gz"),
        &Array3::from_elem((4, 4, 1), 1u8),
        &Geometry::from_affine(osipy_core::IDENTITY_AFFINE),
    )
    .unwrap();
    let out = run(
        dir.path(),
        &cfg("[0, 10, 20, 40, 80, 110, 140, 200, 300, 500, 700, 1000]"),
    )
    .unwrap();
    let (q, _) = read_3d(out.join("quality_mask.nii.gz")).unwrap();
    assert_eq!(q[[0, 0, 0]], QualityCode::InvalidSignal.code() as f64);
    let (d, _) = read_3d(out.join("D.nii.gz")).unwrap();
    assert!(d[[0, 0, 0]].is_nan() && d[[1, 1, 0]].is_finite());
}

#[test]
fn bayesian_grid_ivim_from_files_writes_posterior_maps_and_names_its_priors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IvimPhantomSpec {
        shape: [4, 4, 2],
        snr: Some(100.0),
        ..Default::default()
    };
    let ph = write(dir.path(), &spec);
    let b = format!("{:?}", spec.b_values);
    let config =
        format!("modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayesian\"\n[data]\nb_values = {b}\n");
    let out = run(dir.path(), &config).unwrap();
    let (d, _) = read_3d(out.join("D.nii.gz")).unwrap();
    let (sd, _) = read_3d(out.join("D_se.nii.gz")).unwrap();
    let truth = ph.truth("D").unwrap();
    for (idx, v) in d.indexed_iter() {
        // Posterior mean within 4 posterior SDs of the truth (SNR 100).
        assert!((v - truth[idx]).abs() < 4.0 * sd[idx] && sd[idx] > 0.0);
    }
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("Dstar.json")).unwrap()).unwrap();
    let prov = &sidecar["Provenance"];
    assert_eq!(prov["methods"]["sampler"], "grid", "{prov}");
    assert!(prov["settings"]["Dstar_prior"]
        .as_str()
        .unwrap()
        .contains("log-normal fitted to the volume"));
    assert_eq!(prov["settings"]["summary"], "posterior mean");
    // The credible interval maps bracket the reported values.
    for name in ["f", "D", "Dstar"] {
        let (x, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
        let (lo, _) = read_3d(out.join(format!("{name}_ci95_low.nii.gz"))).unwrap();
        let (hi, _) = read_3d(out.join(format!("{name}_ci95_high.nii.gz"))).unwrap();
        for ((x, l), h) in x.iter().zip(&lo).zip(&hi) {
            assert!(l <= x && x <= h && l < h, "{name}: {l} {x} {h}");
        }
    }
    // No sampling: the same maps again.
    let again = run(dir.path(), &config).unwrap();
    assert_eq!(
        read_3d(again.join("Dstar.nii.gz")).unwrap().0,
        read_3d(out.join("Dstar.nii.gz")).unwrap().0
    );
    // NUTS settings with the grid sampler are refused, in words.
    let wrong = format!("modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayesian\"\n[pipeline.fitting.bayesian]\ndraws = 100\n[data]\nb_values = {b}\n");
    let err = run(dir.path(), &wrong).unwrap_err();
    assert!(
        err.contains("pipeline.fitting.bayesian.draws applies to sampler = \"nuts\""),
        "{err}"
    );
    let unknown = format!("modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayesian\"\n[pipeline.fitting.bayesian]\ndstar_prior = \"flat\"\n[data]\nb_values = {b}\n");
    let err = run(dir.path(), &unknown).unwrap_err();
    assert!(err.contains("flat") && err.contains("log-uniform"), "{err}");
    // A start value means nothing to the grid: refused, not ignored.
    let start = format!("modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayesian\"\n[pipeline.fitting]\ninitial_guess = {{ Dstar = 0.02 }}\n[data]\nb_values = {b}\n");
    let err = run(dir.path(), &start).unwrap_err();
    assert!(
        err.contains("initial_guess") && err.contains("no starting point"),
        "{err}"
    );
}

#[test]
fn bayesian_nuts_ivim_from_files_writes_posterior_maps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IvimPhantomSpec {
        shape: [2, 2, 1],
        snr: Some(100.0),
        ..Default::default()
    };
    let ph = write(dir.path(), &spec);
    let b = format!("{:?}", spec.b_values);
    let config = format!(
        "modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayesian\"\n[pipeline.fitting.bayesian]\nsampler = \"nuts\"\ntune = 150\ndraws = 200\nseed = 3\n[data]\nb_values = {b}\n"
    );
    let out = run(dir.path(), &config).unwrap();
    let (d, _) = read_3d(out.join("D.nii.gz")).unwrap();
    let (sd, _) = read_3d(out.join("D_se.nii.gz")).unwrap();
    let truth = ph.truth("D").unwrap();
    for (idx, v) in d.indexed_iter() {
        // Posterior mean within 4 posterior SDs of the truth (SNR 100).
        assert!(
            (v - truth[idx]).abs() < 4.0 * sd[idx] && sd[idx] > 0.0,
            "{v} +- {} vs {}",
            sd[idx],
            truth[idx]
        );
    }
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("D.json")).unwrap()).unwrap();
    assert!(sidecar["Provenance"]["settings"]["uncertainty"]
        .as_str()
        .unwrap()
        .contains("posterior SD"));
    // Same seed, same maps.
    let again = run(dir.path(), &config).unwrap();
    assert_eq!(read_3d(again.join("D.nii.gz")).unwrap().0, d);
}

#[test]
fn iteration_settings_and_segmented_fit_f_reach_the_fitter() {
    let dir = tempfile::tempdir().unwrap();
    let spec = IvimPhantomSpec {
        shape: [8, 8, 2],
        snr: Some(50.0),
        ..Default::default()
    };
    write(dir.path(), &spec);
    let b = format!("{:?}", spec.b_values);
    let qmask = |out: &Path| read_3d(out.join("quality_mask.nii.gz")).unwrap().0;
    let count = |q: &Array3<f64>, code: QualityCode| q.iter().filter(|x| **x == code.code() as f64).count();
    let base = format!("modality = \"ivim\"\n[data]\nb_values = {b}\n");
    let out = run(dir.path(), &base).unwrap();
    let ok = qmask(&out);
    assert_eq!(count(&ok, QualityCode::MaxIterations), 0);
    let f_default = read_3d(out.join("f.nii.gz")).unwrap().0;
    // One iteration per step is too few for the segmented refinement.
    let out = run(
        dir.path(),
        &format!("modality = \"ivim\"\n[pipeline.fitting]\nmax_iterations = 1\n[data]\nb_values = {b}\n"),
    )
    .unwrap();
    assert!(
        count(&qmask(&out), QualityCode::MaxIterations) > 64,
        "max_iterations = 1 did not reach the fit"
    );
    // segmented_fit_f = false takes f from the step-1 intercept: other maps.
    let out = run(
        dir.path(),
        &format!("modality = \"ivim\"\n[pipeline]\nsegmented_fit_f = false\n[data]\nb_values = {b}\n"),
    )
    .unwrap();
    let f_classic = read_3d(out.join("f.nii.gz")).unwrap().0;
    let differ = f_default
        .iter()
        .zip(&f_classic)
        .filter(|(a, c)| (*a - *c).abs() > 1e-4)
        .count();
    assert!(
        differ > 64,
        "segmented_fit_f did not reach the fit ({differ} voxels differ)"
    );
}
