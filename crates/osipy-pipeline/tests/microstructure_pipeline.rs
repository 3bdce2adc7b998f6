//! The microstructure pipeline from files: outputs, timing from the sidecar,
//! and bad inputs (nothing is written when a run fails).

use osipy_io::{read_3d, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, RunOptions};
use std::path::{Path, PathBuf};

/// The demo case's files (NODDI phantom, dwi.nii.gz / .bval / .bvec) in a
/// fresh folder.
fn demo_dir() -> (tempfile::TempDir, osipy_io::DemoCase) {
    let dir = tempfile::tempdir().unwrap();
    let case = osipy_microstructure::demo_case_sized([6, 6, 2]).unwrap();
    case.write_files(dir.path(), &Geometry::from_affine(osipy_core::IDENTITY_AFFINE))
        .unwrap();
    (dir, case)
}

fn run(dir: &Path, pipeline: &str) -> Result<PathBuf, String> {
    let text = format!(
        "modality = \"microstructure\"\n[pipeline]\n{pipeline}\n[data]\ndwi = \"dwi.nii.gz\"\nbval = \"dwi.bval\"\nbvec = \"dwi.bvec\"\n"
    );
    let cfg = Config::from_toml(&text).map_err(|e| e.to_string())?;
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    run_analysis(
        &cfg,
        &RunOptions {
            data_dir: dir.into(),
            out_dir: out.clone(),
            no_report: true,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn noddi_writes_parameters_fractions_aliases_and_directions() {
    let (dir, case) = demo_dir();
    let out = run(dir.path(), "model = \"noddi_watson\"").unwrap();
    for name in [
        "S0",
        "S0_se",
        "watson_stick_odi",
        "watson_stick_odi_se",
        "watson_stick_theta",
        "watson_stick_phi",
        "ball_partial_fraction",
        "watson_stick_partial_fraction_se",
        "ball_fraction",
        "watson_stick_fraction",
        "watson_zeppelin_fraction",
        "ODI",
        "NDI",
        "FWF",
    ] {
        assert!(out.join(format!("{name}.nii.gz")).is_file(), "{name} missing");
    }
    let sidecar = std::fs::read_to_string(out.join("watson_stick_odi.json")).unwrap();
    assert!(sidecar.contains("noddi_watson"), "{sidecar}");
    for (name, truth, _) in &case.truth {
        let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
        let s = compare(name, &est, truth, None).unwrap();
        assert!(s.median_abs_rel_error < 0.25, "{name}: {s:?}");
    }
    // Fractions sum to one; NDI is the stick's share of the non-ball part.
    let f = |n: &str| read_3d(out.join(format!("{n}.nii.gz"))).unwrap().0;
    let (b, s, z, ndi) = (
        f("ball_fraction"),
        f("watson_stick_fraction"),
        f("watson_zeppelin_fraction"),
        f("NDI"),
    );
    for i in 0..b.len() {
        let (b, s, z, ndi) = (
            b.as_slice().unwrap()[i],
            s.as_slice().unwrap()[i],
            z.as_slice().unwrap()[i],
            ndi.as_slice().unwrap()[i],
        );
        assert!((b + s + z - 1.0).abs() < 1e-5, "{b} + {s} + {z}");
        assert!((s / (s + z) - ndi).abs() < 1e-4, "{s} / ({s} + {z}) vs {ndi}");
    }
    // The direction volume: unit vectors, upper hemisphere.
    let (dirs, _, _) = osipy_io::read_4d(out.join("watson_stick_direction.nii.gz")).unwrap();
    assert_eq!(dirs.shape(), &[6, 6, 2, 3]);
    for v in dirs.lanes(ndarray::Axis(3)) {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        assert!((n - 1.0).abs() < 1e-5 && v[2] >= -1e-6, "{v:?}");
    }
}

#[test]
fn restricted_models_take_their_timing_from_config_or_sidecar() {
    let (dir, _) = demo_dir();
    let custom = "model = \"custom\"\ncompartments = [\"ball\", \"cylinder_gpd\"]";
    let e = run(dir.path(), custom).unwrap_err();
    assert!(e.contains("delta") && e.contains("cylinder_gpd"), "{e}");
    assert!(!dir.path().join("out").exists(), "a failed run left output");
    run(dir.path(), &format!("{custom}\ndelta = 0.0106\nDelta = 0.0431")).unwrap();
    std::fs::write(
        dir.path().join("dwi.json"),
        r#"{"SmallDelta": 0.0106, "LargeDelta": 0.0431}"#,
    )
    .unwrap();
    let out = run(dir.path(), custom).unwrap();
    assert!(out.join("cylinder_gpd_radius.nii.gz").is_file());
    // Milliseconds are refused.
    let e = run(dir.path(), &format!("{custom}\ndelta = 10.6\nDelta = 43.1")).unwrap_err();
    assert!(e.contains("milliseconds"), "{e}");
}

#[test]
fn bad_schemes_and_models_are_named() {
    let (dir, _) = demo_dir();
    let bvec = std::fs::read_to_string(dir.path().join("dwi.bvec")).unwrap();
    let bval = std::fs::read_to_string(dir.path().join("dwi.bval")).unwrap();
    let noddi = "model = \"noddi_watson\"";
    // One direction short.
    let short: String = bvec
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string() + "\n")
        .collect();
    std::fs::write(dir.path().join("dwi.bvec"), short).unwrap();
    let e = run(dir.path(), noddi).unwrap_err();
    assert!(
        e.contains("dwi.bvec") && e.contains("3 rows of 63") && e.contains("3 rows of 64"),
        "{e}"
    );
    // A direction of length 0.5 (volume 10).
    let mut rows: Vec<Vec<f64>> = bvec
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    for r in &mut rows {
        r[10] *= 0.5;
    }
    let halved: String = rows
        .iter()
        .map(|r| r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ") + "\n")
        .collect();
    std::fs::write(dir.path().join("dwi.bvec"), halved).unwrap();
    let e = run(dir.path(), noddi).unwrap_err();
    assert!(
        e.contains("volume 10") && e.contains("length 0.5000") && e.contains("unit vector"),
        "{e}"
    );
    std::fs::write(dir.path().join("dwi.bvec"), &bvec).unwrap();
    // A b-value too many.
    std::fs::write(dir.path().join("dwi.bval"), bval.trim().to_string() + " 1000\n").unwrap();
    let e = run(dir.path(), noddi).unwrap_err();
    assert!(
        e.contains("65 values") && e.contains("one per DWI volume: 64"),
        "{e}"
    );
    std::fs::write(dir.path().join("dwi.bval"), &bval).unwrap();
    // SANDI from three shells.
    let e = run(dir.path(), "model = \"sandi\"\ndelta = 0.0106\nDelta = 0.0431").unwrap_err();
    assert!(
        e.contains("shells") && e.contains("3") && e.contains("6 free parameters"),
        "{e}"
    );
    // Config errors, found before any data is read.
    let e = run(dir.path(), "model = \"noddi\"").unwrap_err();
    assert!(e.contains("noddi_watson") && e.contains("sandi"), "{e}");
    let e = run(dir.path(), "model = \"noddi_watson\"\ncompartments = [\"ball\"]").unwrap_err();
    assert!(e.contains("custom"), "{e}");
    let e = run(
        dir.path(),
        "model = \"custom\"\ncompartments = [\"ball\", \"stick\"]\n[pipeline.links]\n\"ball.fraction\" = 1.5",
    )
    .unwrap_err();
    assert!(
        e.contains("ball.fraction") && e.contains("between 0 and 1"),
        "{e}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn dti_writes_scalar_maps_and_the_principal_direction() {
    let (dir, _) = demo_dir();
    let out = run(dir.path(), "model = \"dti\"").unwrap();
    let f = |n: &str| read_3d(out.join(format!("{n}.nii.gz"))).unwrap().0;
    let (fa, md, ad, rd) = (f("FA"), f("MD"), f("AD"), f("RD"));
    assert_eq!(fa, f("tensor_fa"));
    let (l1, l2, l3) = (f("tensor_lambda_1"), f("tensor_lambda_2"), f("tensor_lambda_3"));
    for i in 0..fa.len() {
        let at = |a: &ndarray::Array3<f64>| a.as_slice().unwrap()[i];
        assert!((0.0..=1.0).contains(&at(&fa)), "FA {}", at(&fa));
        // Sorted eigenvalues: AD is lambda_1, RD the mean of the others.
        assert!(at(&l1) >= at(&l2) && at(&l2) >= at(&l3));
        // (Maps are stored as float32: 1e-6 relative.)
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
        assert!(close(at(&ad), at(&l1)) && close(at(&rd), (at(&l2) + at(&l3)) / 2.0));
        assert!(close(at(&md), (at(&ad) + 2.0 * at(&rd)) / 3.0));
        // The phantom's tissue: MD between free water's and a tenth of it.
        assert!((0.2e-3..3.2e-3).contains(&at(&md)), "MD {}", at(&md));
    }
    assert!(out.join("tensor_direction.nii.gz").is_file());
}

#[test]
fn bayesian_fits_write_posterior_means_and_sds() {
    let dir = tempfile::tempdir().unwrap();
    let case = osipy_microstructure::demo_case_sized([3, 2, 1]).unwrap();
    case.write_files(dir.path(), &Geometry::from_affine(osipy_core::IDENTITY_AFFINE))
        .unwrap();
    let cfg = "model = \"noddi_watson\"\n[pipeline.fitting]\nmethod = \"bayesian\"\nbayesian = { tune = 60, draws = 60, seed = 3 }";
    let out = run(dir.path(), cfg).unwrap();
    let (odi, _) = read_3d(out.join("ODI.nii.gz")).unwrap();
    let (sd, _) = read_3d(out.join("watson_stick_odi_se.nii.gz")).unwrap();
    assert!(odi.iter().all(|v| (0.0..1.0).contains(v)), "{odi:?}");
    assert!(sd.iter().all(|v| *v > 0.0 && v.is_finite()), "{sd:?}");
    let sidecar = std::fs::read_to_string(out.join("ODI.json")).unwrap();
    assert!(
        sidecar.contains("posterior standard deviation") && sidecar.contains("nuts"),
        "{sidecar}"
    );
    let e = run(dir.path(), "[pipeline.fitting]\nmethod = \"mcmc\"").unwrap_err();
    assert!(
        e.contains("pipeline.fitting.method") && e.contains("\"mcmc\"") && e.contains("bayesian"),
        "{e}"
    );
}
