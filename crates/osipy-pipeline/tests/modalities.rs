//! Every modality of the table through the shared run machinery: its demo
//! case written as files, run by `run_analysis`, maps compared with the
//! case's truth.

use osipy_io::{read_3d, write_4d, write_mask, DemoFile, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, Progress, RunOptions, MODALITIES};

#[test]
fn every_modality_demo_runs_from_files_and_recovers_its_truth() {
    for m in MODALITIES {
        let dir = tempfile::tempdir().unwrap();
        let case = m.demo().unwrap();
        let geometry = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
        for (name, file) in &case.files {
            let p = dir.path().join(name);
            match file {
                DemoFile::Series(v, dt) => write_4d(&p, v, &geometry, *dt).unwrap(),
                DemoFile::Mask(v) => write_mask(&p, v, &geometry).unwrap(),
                DemoFile::Text(t) => std::fs::write(&p, t).unwrap(),
            }
        }
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
    }
}
