//! Every modality of the table through the shared run machinery: its demo
//! case written as files, run by `run_analysis`, maps compared with the
//! case's truth.

use osipy_io::{read_3d, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, Progress, RunOptions, MODALITIES};

/// Modality `m`'s demo case written as files into a fresh folder.
fn demo_files(m: &dyn osipy_pipeline::Modality) -> (tempfile::TempDir, osipy_io::DemoCase) {
    let dir = tempfile::tempdir().unwrap();
    let case = m.demo().unwrap();
    case.write_files(dir.path(), &Geometry::from_affine(osipy_core::IDENTITY_AFFINE))
        .unwrap();
    (dir, case)
}

#[test]
fn every_modality_demo_runs_from_files_and_recovers_its_truth() {
    for m in MODALITIES {
        let (dir, case) = demo_files(*m);
        let config = Config::from_toml(&case.config).unwrap();
        assert_eq!(config.modality, m.id());
        let progress = Progress::new();
        let out = dir.path().join("out");
        let summary = run_analysis(
            &config,
            &RunOptions {
                data_dir: dir.path().into(),
                out_dir: out.clone(),
                progress: Some(progress.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        // Progress is reported the same way by every modality: all voxels done.
        let (done, total) = progress.get();
        assert!(total > 0 && done == total, "{}: progress {done}/{total}", m.id());
        assert!(summary.timings.iter().any(|(s, _)| s == "fit"), "{}", m.id());
        assert!(out.join("osipy_run.json").is_file() && out.join("quality_mask.nii.gz").is_file());
        for (name, truth, _) in &case.truth {
            let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
            let s = compare(name, &est, truth, None).unwrap();
            // The demos are built to be recovered: median error well under 20 %
            // (D* at SNR 100 is the loosest, about 10 %).
            assert!(
                s.median_abs_rel_error < 0.2 && s.n_invalid * 10 < s.n,
                "{} {name}: {s:?}",
                m.id()
            );
        }
        check_report(m.id(), &out, &summary, &case);
    }
}

/// Relative RMS difference of `fit` from `measured`, over the measured range.
fn misfit(measured: &[f64], fit: &[f64]) -> f64 {
    let (lo, hi) = measured
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    let ss: f64 = measured.iter().zip(fit).map(|(m, f)| (m - f).powi(2)).sum();
    (ss / measured.len() as f64).sqrt() / (hi - lo)
}

/// The report of a demo run: listed and timed in the summary, a figure per
/// map, curves of representative voxels whose fit tracks the data, and the
/// same figures again when `osipy report` redraws it from the folder.
fn check_report(
    id: &str,
    out: &std::path::Path,
    summary: &osipy_pipeline::RunSummary,
    case: &osipy_io::DemoCase,
) {
    let report = out.join("report.html");
    assert!(summary.outputs.contains(&report), "{id}: report.html not listed");
    assert!(
        summary.timings.iter().any(|(s, _)| s == "report"),
        "{id}: no report timing"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    let figures = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("figures"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = figures(out);
    for (name, _, _) in &case.truth {
        assert!(
            before.iter().any(|(f, _)| *f == format!("map_{name}.png")),
            "{id}: no map of {name}"
        );
    }
    assert_eq!(
        html.matches("<img src=\"data:image/png;base64,").count(),
        before.len(),
        "{id}"
    );
    // Representative voxels: the median-R² (or median-CBF) voxel first after
    // any AIF; where a fit is drawn, it follows the data.
    let voxel_plots: Vec<_> = summary
        .plots
        .iter()
        .filter(|p| p.title.contains(" at voxel ("))
        .collect();
    assert!(voxel_plots.len() >= 2, "{id}: {} voxel curves", voxel_plots.len());
    assert!(
        voxel_plots[0].title.contains(": median "),
        "{id}: {}",
        voxel_plots[0].title
    );
    // Every demo fits a model (DSC's is vascular_model, ASL's multi-PLD),
    // so the median voxel must show its fit, and the fit must follow it.
    let [measured, fit] = voxel_plots[0].traces.as_slice() else {
        panic!(
            "{id}: the median voxel's plot has no fitted curve: {:?}",
            voxel_plots[0].title
        );
    };
    assert!(measured.points && !fit.points, "{id}");
    let e = misfit(&measured.y, &fit.y);
    assert!(
        e < 0.15,
        "{id}: the median voxel's fit misses its data by {e:.3} of its range"
    );
    // Redrawn from the folder alone: the same figures, pixel for pixel
    // where nothing was rounded on the way to float32 files.
    std::fs::remove_dir_all(out.join("figures")).unwrap();
    std::fs::remove_file(&report).unwrap();
    osipy_pipeline::write_report(out).unwrap();
    let after = figures(out);
    assert_eq!(
        before.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        after.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "{id}"
    );
    let same = before.iter().zip(&after).filter(|(a, b)| a.1 == b.1).count();
    assert!(
        same * 10 >= before.len() * 8,
        "{id}: only {same} of {} figures redrawn identically",
        before.len()
    );
    let again = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        again.matches("<img ").count(),
        html.matches("<img ").count(),
        "{id}"
    );
}

#[test]
fn the_report_can_be_skipped_and_its_settings_are_checked() {
    let m = osipy_pipeline::modality::modality("ivim").unwrap();
    let (dir, case) = demo_files(m);
    let run = |extra: &str, no_report: bool, out: &str| {
        let config = Config::from_toml(&format!("{}\n{extra}", case.config)).map_err(|e| e.to_string())?;
        run_analysis(
            &config,
            &RunOptions {
                data_dir: dir.path().into(),
                out_dir: dir.path().join(out),
                no_report,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
    };
    // --no-report, or output.report = false: no page, no figures, no timing.
    for (extra, flag, out) in [("", true, "a"), ("[output]\nreport = false\n", false, "b")] {
        let s = run(extra, flag, out).unwrap();
        let o = dir.path().join(out);
        assert!(!o.join("report.html").exists() && !o.join("figures").exists());
        assert!(!s.timings.iter().any(|(t, _)| t == "report"));
    }
    // A named voxel adds its curve; one off the grid is an error naming the key.
    let s = run("[output]\nreport_voxels = [[3, 4, 1]]\n", false, "c").unwrap();
    assert!(
        s.plots
            .iter()
            .any(|p| p.title.contains("at voxel (3, 4, 1): named")),
        "{:?}",
        s.plots.iter().map(|p| &p.title).collect::<Vec<_>>()
    );
    let e = run("[output]\nreport_voxels = [[3, 4, 99]]\n", false, "d").unwrap_err();
    assert!(
        e.contains("output.report_voxels") && e.contains("[3, 4, 99]"),
        "{e}"
    );
    assert!(!dir.path().join("d").exists(), "a failed run leaves no output");
    let e = run("[output]\nreport_ranges = { D = [0.003, 0.001] }\n", false, "e").unwrap_err();
    assert!(
        e.contains("output.report_ranges.D") && e.contains("low < high"),
        "{e}"
    );
    // A configured range is what the page says the colours span.
    run("[output]\nreport_ranges = { D = [0.0, 0.004] }\n", false, "f").unwrap();
    let html = std::fs::read_to_string(dir.path().join("f/report.html")).unwrap();
    assert!(
        html.contains("Colours span 0 to 0.004 mm^2/s (set in output.report_ranges)"),
        "range caption"
    );
}

#[test]
fn uncompressed_output_writes_plain_nifti_with_the_same_maps() {
    let m = osipy_pipeline::modality::modality("ivim").unwrap();
    let (dir, case) = demo_files(m);
    let run = |extra: &str, out: &str| {
        let config = Config::from_toml(&format!("{}\n{extra}", case.config)).unwrap();
        run_analysis(
            &config,
            &RunOptions {
                data_dir: dir.path().into(),
                out_dir: dir.path().join(out),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let gz = run("", "gz");
    let plain = run("[output]\ncompress = false\n", "plain");
    let images = |s: &osipy_pipeline::RunSummary, ext: &str| {
        s.outputs
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .filter(|n| n.ends_with(ext))
            .map(|n| n.trim_end_matches(ext).to_string())
            .collect::<Vec<_>>()
    };
    assert!(images(&plain, ".nii.gz").is_empty(), "{:?}", plain.outputs);
    let stems = images(&plain, ".nii");
    assert_eq!(stems, images(&gz, ".nii.gz"));
    assert!(stems.contains(&"quality_mask".to_string()) && stems.contains(&"D_se".to_string()));
    for stem in &stems {
        let (a, _) = read_3d(dir.path().join(format!("gz/{stem}.nii.gz"))).unwrap();
        let (b, _) = read_3d(dir.path().join(format!("plain/{stem}.nii"))).unwrap();
        assert!(
            a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{stem} differs"
        );
    }
    let sidecar = std::fs::read_to_string(dir.path().join("plain/D.json")).unwrap();
    assert!(
        sidecar.contains("\"StandardErrorFile\": \"D_se.nii\""),
        "{sidecar}"
    );
    // The report is redrawn from the plain images too.
    std::fs::remove_file(dir.path().join("plain/report.html")).unwrap();
    osipy_pipeline::write_report(&dir.path().join("plain")).unwrap();
    assert!(dir.path().join("plain/report.html").is_file());
}

/// Maps are written on several threads: the files, their bytes and their
/// order in `osipy_run.json` do not depend on the thread count.
#[test]
fn outputs_are_the_same_for_any_thread_count() {
    let m = osipy_pipeline::modality::modality("dce").unwrap();
    let (dir, case) = demo_files(m);
    let config = Config::from_toml(&case.config).unwrap();
    let run = |threads: usize| {
        let out = dir.path().join(format!("t{threads}"));
        let s = run_analysis(
            &config,
            &RunOptions {
                data_dir: dir.path().into(),
                out_dir: out.clone(),
                threads: Some(threads),
                no_report: true,
                ..Default::default()
            },
        )
        .unwrap();
        let names: Vec<String> = s
            .outputs
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
            .collect();
        (out, names)
    };
    let (one, names1) = run(1);
    let (three, names3) = run(3);
    assert_eq!(names1, names3);
    assert!(names1.len() > 8, "{names1:?}");
    for n in names1.iter().filter(|n| n.ends_with(".nii.gz")) {
        assert_eq!(
            std::fs::read(one.join(n)).unwrap(),
            std::fs::read(three.join(n)).unwrap(),
            "{n}"
        );
    }
}
