//! The ASL pipeline from files: multi- and single-PLD, BIDS sidecars,
//! M0 sources, outputs, and bad inputs as errors in words.

use ndarray::{Array3, Array4, Axis};
use osipy_asl::kinetics::{LabelingScheme, Physio};
use osipy_asl::phantom::{generate, AslPhantom, AslPhantomSpec};
use osipy_io::{read_3d, write_4d, write_map, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, RunOptions};
use std::path::{Path, PathBuf};

fn geometry() -> Geometry {
    Geometry::from_affine(osipy_core::IDENTITY_AFFINE)
}

fn spec() -> AslPhantomSpec {
    AslPhantomSpec {
        shape: [8, 8, 2],
        snr: Some(20000.0),
        m0_tr: Some(3.0),
        seed: 11,
        ..AslPhantomSpec::default()
    }
}

/// Writes `asl.nii.gz` (the phantom's series) and `m0.nii.gz`.
fn write(dir: &Path, spec: &AslPhantomSpec) -> AslPhantom {
    let ph = generate(spec).unwrap();
    write_4d(dir.join("asl.nii.gz"), &ph.series, &geometry(), 1.0).unwrap();
    write_map(dir.join("m0.nii.gz"), &ph.m0, &geometry()).unwrap();
    ph
}

fn run(dir: &Path, pipeline: &str, data: &str) -> Result<PathBuf, String> {
    let text = format!("modality = \"asl\"\n[pipeline]\n{pipeline}\n[data]\nasl = \"asl.nii.gz\"\n{data}\n");
    let cfg = Config::from_toml(&text).map_err(|e| e.to_string())?;
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

fn median_error(out: &Path, name: &str, truth: &Array3<f64>) -> f64 {
    let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
    compare(name, &est, truth, None).unwrap().median_abs_rel_error
}

fn plds(spec: &AslPhantomSpec) -> String {
    let p: Vec<String> = spec.plds.iter().map(|p| p.to_string()).collect();
    format!("plds = [{}]", p.join(", "))
}

const PCASL: &str = "labeling_scheme = \"pcasl\"\nlabel_duration = 1.8\nm0_tr = 3.0\n";

#[test]
fn multi_pld_from_files_recovers_cbf_and_att_with_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let ph = write(dir.path(), &spec);
    let out = run(
        dir.path(),
        &format!("{PCASL}{}", plds(&spec)),
        "m0 = \"m0.nii.gz\"",
    )
    .unwrap();
    for f in [
        "CBF",
        "CBF_se",
        "ATT",
        "ATT_se",
        "deltaM",
        "M0",
        "r_squared",
        "quality_mask",
    ] {
        assert!(out.join(format!("{f}.nii.gz")).is_file(), "{f}");
    }
    assert!(out.join("CBF.json").is_file() && out.join("osipy_run.json").is_file());
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.02);
    assert!(median_error(&out, "ATT", &ph.att) < 0.02);
    // The M0 saturation at TR 3 s is corrected: M0 = 1000.
    let (m0, _) = read_3d(out.join("M0.nii.gz")).unwrap();
    let mid = {
        let mut v: Vec<f64> = m0.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    assert!((mid - 1000.0).abs() < 2.0, "{mid}");

    // The same data with the PLDs per volume, `surround` and `mean` agree
    // closely with `pairwise` (no drift in the phantom).
    let per_volume: Vec<String> = ph.volume_plds.iter().map(|p| p.to_string()).collect();
    for method in ["surround", "mean"] {
        let out = run(
            dir.path(),
            &format!(
                "{PCASL}plds = [{}]\ndifference_method = \"{method}\"",
                per_volume.join(", ")
            ),
            "m0 = \"m0.nii.gz\"",
        )
        .unwrap();
        assert!(median_error(&out, "CBF", &ph.cbf) < 0.02, "{method}");
    }
}

#[test]
fn aslcontext_m0scan_volumes_dummies_and_the_arterial_component() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AslPhantomSpec {
        plds: (1..=12).map(|i| 0.25 * i as f64).collect(),
        arterial: Some((0.01, 0.4)),
        ..spec()
    };
    let ph = generate(&spec).unwrap();
    // dummy, m0scan, then the pairs.
    let n = ph.volume_plds.len();
    let mut series = Array4::zeros((8, 8, 2, n + 2));
    series.index_axis_mut(Axis(3), 0).fill(5000.0);
    series.index_axis_mut(Axis(3), 1).assign(&ph.m0);
    series.slice_mut(ndarray::s![.., .., .., 2..]).assign(&ph.series);
    write_4d(dir.path().join("asl.nii.gz"), &series, &geometry(), 1.0).unwrap();
    let context: String = ["volume_type", "control", "m0scan"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..n).map(|i| if i % 2 == 0 { "control" } else { "label" }.to_string()))
        .map(|l| l + "\n")
        .collect();
    std::fs::write(dir.path().join("aslcontext.tsv"), context).unwrap();
    let out = run(
        dir.path(),
        &format!(
            "{PCASL}{}\ndummy_volumes = 1\narterial_component = true",
            plds(&spec)
        ),
        "",
    )
    .unwrap();
    assert!(out.join("aBV.nii.gz").is_file() && out.join("aATT.nii.gz").is_file());
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.05);
    assert!(median_error(&out, "aBV", &ph.abv) < 0.1);
    // aBV bounds without the arterial component are refused.
    let e = run(
        dir.path(),
        &format!(
            "{PCASL}{}\ndummy_volumes = 1\n[pipeline.fitting]\nbounds = {{ aBV = [0, 0.05] }}",
            plds(&spec)
        ),
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("bounds.aBV") && e.contains("arterial_component"),
        "{e}"
    );
}

#[test]
fn single_pld_from_bids_sidecars_applies_background_suppression() {
    let dir = tempfile::tempdir().unwrap();
    // The formula's assumptions (T1 = T1b) and alpha = 0.85 x 0.95^2.
    let spec = AslPhantomSpec {
        plds: vec![2.0],
        repeats: 4,
        physio: Physio {
            t1_tissue: 1.65,
            alpha: 0.85 * 0.95 * 0.95,
            ..spec().physio
        },
        ..spec()
    };
    let ph = write(dir.path(), &spec);
    std::fs::write(
        dir.path().join("asl.json"),
        r#"{"ArterialSpinLabelingType": "PCASL", "PostLabelingDelay": 2.0, "LabelingDuration": 1.8,
            "BackgroundSuppression": true, "BackgroundSuppressionNumberPulses": 2}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m0.json"),
        r#"{"RepetitionTimePreparation": 3.0}"#,
    )
    .unwrap();
    let out = run(dir.path(), "t1_tissue = 1.65", "m0 = \"m0.nii.gz\"").unwrap();
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.03);
    assert!(!out.join("ATT.nii.gz").exists());
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("CBF.json")).unwrap()).unwrap();
    let prov = &sidecar["Provenance"];
    assert_eq!(prov["methods"]["quantification"], "pcasl_single_pld");
    let alpha = prov["settings"]["labeling_efficiency_effective"]
        .as_f64()
        .unwrap();
    assert!((alpha - 0.85 * 0.95 * 0.95).abs() < 1e-12, "{alpha}");
    // Without the suppression in the sidecar, alpha is 0.85 and CBF ~10 % low.
    std::fs::write(
        dir.path().join("asl.json"),
        r#"{"ArterialSpinLabelingType": "PCASL", "PostLabelingDelay": 2.0, "LabelingDuration": 1.8}"#,
    )
    .unwrap();
    let out = run(dir.path(), "t1_tissue = 1.65", "m0 = \"m0.nii.gz\"").unwrap();
    assert!(median_error(&out, "CBF", &ph.cbf) > 0.07);
}

#[test]
fn pasl_with_ti1_and_single_m0_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AslPhantomSpec {
        scheme: LabelingScheme::Pasl,
        plds: (1..=10).map(|i| 0.3 * i as f64).collect(),
        tau: 0.8,
        att: vec![0.4, 0.6, 0.8, 1.0],
        m0_tr: None,
        ..spec()
    };
    let ph = write(dir.path(), &spec);
    let out = run(
        dir.path(),
        &format!(
            "labeling_scheme = \"pasl\"\nti1 = 0.8\nm0_method = \"single\"\nm0_value = 1000.0\nlabeling_efficiency = 0.85\n{}",
            plds(&spec)
        ),
        "",
    )
    .unwrap();
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.02);
    assert!(median_error(&out, "ATT", &ph.att) < 0.02);
}

#[test]
fn deltam_series_cbf_volumes_kept_out_and_reference_region_m0() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AslPhantomSpec {
        m0_tr: None,
        ..spec()
    };
    let ph = generate(&spec).unwrap();
    // The scanner's ΔM (control - label) per PLD, then one CBF volume.
    let n_pld = spec.plds.len();
    let mut series = Array4::zeros((8, 8, 2, n_pld + 1));
    for k in 0..n_pld {
        let dm = &ph.series.index_axis(Axis(3), 2 * k) - &ph.series.index_axis(Axis(3), 2 * k + 1);
        series.index_axis_mut(Axis(3), k).assign(&dm);
    }
    series.index_axis_mut(Axis(3), n_pld).fill(55.0);
    write_4d(dir.path().join("asl.nii.gz"), &series, &geometry(), 1.0).unwrap();
    let context = "volume_type\n".to_string() + &"deltam\n".repeat(n_pld) + "cbf\n";
    std::fs::write(dir.path().join("aslcontext.tsv"), context).unwrap();
    // An M0 image whose "CSF" (the first x slab) gives, through
    // reference_region, a tissue M0 of 1000: lambda S e^(TE/T2*) / pc = 1000.
    let (te, t2s, pc) = (0.01f64, 0.4f64, 1.15f64);
    let s_csf = 1000.0 * pc / (0.9 * (te / t2s).exp());
    write_map(
        dir.path().join("m0.nii.gz"),
        &Array3::from_elem((8, 8, 2), s_csf),
        &geometry(),
    )
    .unwrap();
    let csf = Array3::from_shape_fn((8, 8, 2), |(x, _, _)| if x == 0 { 1.0 } else { 0.0 });
    write_map(dir.path().join("csf.nii.gz"), &csf, &geometry()).unwrap();
    let out = run(
        dir.path(),
        &format!(
            "labeling_scheme = \"pcasl\"\nlabel_duration = 1.8\n{}\nm0_method = \"reference_region\"\nm0_te = {te}",
            plds(&spec)
        ),
        "m0 = \"m0.nii.gz\"\nm0_reference_mask = \"csf.nii.gz\"",
    )
    .unwrap();
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.02);
    assert!(median_error(&out, "ATT", &ph.att) < 0.02);
    // label_control_order = "deltam" without aslcontext reads the same ΔM
    // (the CBF volume then counts as a ΔM: drop it first).
    std::fs::remove_file(dir.path().join("aslcontext.tsv")).unwrap();
    let only_dm = series.slice(ndarray::s![.., .., .., ..n_pld]).to_owned();
    write_4d(dir.path().join("asl.nii.gz"), &only_dm, &geometry(), 1.0).unwrap();
    let out = run(
        dir.path(),
        &format!(
            "labeling_scheme = \"pcasl\"\nlabel_duration = 1.8\n{}\nlabel_control_order = \"deltam\"\nm0_method = \"single\"\nm0_value = 1000.0",
            plds(&spec)
        ),
        "",
    )
    .unwrap();
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.02);
}

#[test]
fn bad_inputs_are_errors_that_say_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    write(dir.path(), &spec);
    let m0 = "m0 = \"m0.nii.gz\"";
    let ok = format!("{PCASL}{}", plds(&spec));
    assert!(run(dir.path(), &ok, m0).is_ok());
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        // PLD in milliseconds.
        (
            format!("{PCASL}pld = 1800.0"),
            m0,
            vec!["pipeline.pld", "milliseconds"],
        ),
        // A PLD list that fits neither the volumes nor the pairs.
        (
            format!("{PCASL}plds = [1.0, 2.0, 3.0, 4.0, 5.0]"),
            m0,
            vec!["pipeline.plds", "5", "per volume (12)", "per difference (6)"],
        ),
        // No label duration for pCASL.
        (
            format!("labeling_scheme = \"pcasl\"\n{}", plds(&spec)),
            m0,
            vec!["pipeline.label_duration"],
        ),
        // PASL without TI1.
        (
            format!("labeling_scheme = \"pasl\"\n{}", plds(&spec)),
            m0,
            vec!["pipeline.ti1"],
        ),
        // A single-PLD formula for multi-PLD data, and another scheme's.
        (
            format!("{ok}\nquantification_model = \"pcasl_single_pld\""),
            m0,
            vec!["one PLD", "buxton_multi_pld"],
        ),
        (
            format!("{PCASL}pld = 2.0\nquantification_model = \"pasl_single_pld\""),
            m0,
            vec!["pasl_single_pld", "pcasl series"],
        ),
        // reference_region without its mask.
        (
            format!("{ok}\nm0_method = \"reference_region\"\nm0_te = 0.01"),
            m0,
            vec!["data.m0_reference_mask"],
        ),
    ];
    for (pipeline, data, words) in cases {
        let e = run(dir.path(), &pipeline, data)
            .err()
            .unwrap_or_else(|| panic!("no error for: {} / {data}", pipeline.replace('\n', "; ")));
        for w in words {
            assert!(e.contains(w), "{pipeline}: `{w}` not in: {e}");
        }
    }

    // Background suppression and no M0 image: the controls cannot serve.
    std::fs::remove_file(dir.path().join("m0.nii.gz")).unwrap();
    let e = run(
        dir.path(),
        &format!("{ok}\nbackground_suppression_pulses = 2"),
        "",
    )
    .unwrap_err();
    for w in ["data.m0", "background suppression", "m0_value"] {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
    // Without suppression the mean control image is M0 (with a warning).
    assert!(run(dir.path(), &ok, "").is_ok());

    // Odd label/control count, an aslcontext of the wrong length, an M0
    // on another grid.
    let ph = generate(&spec).unwrap();
    let odd = ph.series.slice(ndarray::s![.., .., .., ..11]).to_owned();
    write_4d(dir.path().join("asl.nii.gz"), &odd, &geometry(), 1.0).unwrap();
    let e = run(dir.path(), &format!("{PCASL}pld = 2.0"), m0).unwrap_err();
    assert!(e.contains("11 volumes") && e.contains("even"), "{e}");
    std::fs::write(dir.path().join("ctx.tsv"), "volume_type\ncontrol\nlabel\n").unwrap();
    let e = run(
        dir.path(),
        &format!("{PCASL}pld = 2.0"),
        &format!("{m0}\naslcontext = \"ctx.tsv\""),
    )
    .unwrap_err();
    assert!(
        e.contains("data.aslcontext") && e.contains("2") && e.contains("11"),
        "{e}"
    );
    write(dir.path(), &spec);
    let small = Array3::from_elem((4, 4, 2), 1000.0);
    write_map(dir.path().join("m0_small.nii.gz"), &small, &geometry()).unwrap();
    let e = run(dir.path(), &ok, "m0 = \"m0_small.nii.gz\"").unwrap_err();
    assert!(
        e.contains("data.m0") && e.contains("[4, 4, 2]") && e.contains("[8, 8, 2]"),
        "{e}"
    );
    // Unequal counts at a PLD under `pairwise`: an error naming the PLD;
    // `mean` accepts them.
    std::fs::write(
        dir.path().join("ctx.tsv"),
        "volume_type\n".to_string() + &"control\nlabel\n".repeat(5) + "label\nlabel\n",
    )
    .unwrap();
    let e = run(
        dir.path(),
        &format!("{PCASL}pld = 2.0"),
        &format!("{m0}\naslcontext = \"ctx.tsv\""),
    )
    .unwrap_err();
    assert!(
        e.contains("PLD 2 s") && e.contains("5 control and 7 label"),
        "{e}"
    );
    assert!(run(
        dir.path(),
        &format!("{PCASL}pld = 2.0\ndifference_method = \"mean\""),
        &format!("{m0}\naslcontext = \"ctx.tsv\"")
    )
    .is_ok());
}
