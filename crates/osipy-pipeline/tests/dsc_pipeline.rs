//! The DSC pipeline from files: methods and options, outputs, bad inputs.

use ndarray::Array3;
use osipy_core::QualityCode;
use osipy_dsc::phantom::{generate, DscPhantom, DscPhantomSpec};
use osipy_io::{read_3d, write_4d, write_mask, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, RunOptions};
use std::path::{Path, PathBuf};

fn geometry() -> Geometry {
    Geometry::from_affine(osipy_core::IDENTITY_AFFINE)
}

/// Writes the phantom's series and `aif.txt` into `dir`.
fn write(dir: &Path, spec: &DscPhantomSpec) -> DscPhantom {
    let ph = generate(spec).unwrap();
    write_4d(dir.join("dsc.nii.gz"), &ph.signal, &geometry(), spec.dt).unwrap();
    let aif: String = ph
        .times
        .iter()
        .zip(&ph.aif)
        .map(|(t, a)| format!("{t} {a}\n"))
        .collect();
    std::fs::write(dir.join("aif.txt"), aif).unwrap();
    ph
}

fn run(dir: &Path, pipeline: &str, data: &str) -> Result<PathBuf, String> {
    let text = format!(
        "modality = \"dsc\"\n[pipeline]\n{pipeline}\n[data]\ndsc = \"dsc.nii.gz\"\naif_file = \"aif.txt\"\n{data}\n"
    );
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

const BASE: &str = "te = 0.03\naif_source = \"manual\"\nbaseline_frames = 9\n";

fn median_error(out: &Path, name: &str, truth: &Array3<f64>) -> f64 {
    let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
    compare(name, &est, truth, None).unwrap().median_abs_rel_error
}

#[test]
fn dsc_maps_with_model_fit_leakage_and_recirculation_options() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DscPhantomSpec {
        shape: [8, 8, 2],
        snr: Some(200.0),
        seed: 5,
        ..DscPhantomSpec::default()
    };
    let ph = write(dir.path(), &spec);

    // vascular_model: CBF, MTT, delay with standard-error maps.
    let out = run(
        dir.path(),
        &format!("{BASE}deconvolution_method = \"vascular_model\"\ntransit_shape = 3\n"),
        "",
    )
    .unwrap();
    for f in ["CBF_se", "MTT_se", "delay", "delay_se", "Tmax", "TTP", "CBV"] {
        assert!(out.join(format!("{f}.nii.gz")).is_file(), "{f}");
    }
    assert!(median_error(&out, "CBF", &ph.cbf) < 0.1);
    assert!(median_error(&out, "MTT", &ph.mtt) < 0.1);
    let (delay, _) = read_3d(out.join("delay.nii.gz")).unwrap();
    assert!(
        delay.iter().all(|d| d.abs() < 1.0),
        "delays of a zero-delay phantom"
    );
    let (r2, _) = read_3d(out.join("r_squared.nii.gz")).unwrap();
    assert!(r2.iter().all(|r| *r > 0.9));

    // osvd with leakage correction (no leakage here: K2 near 0, CBV kept)
    // and recirculation removal; reference region for rCBV / rCBF.
    let mut reference = Array3::<u8>::zeros((8, 8, 2));
    reference.slice_mut(ndarray::s![0..2, .., ..]).fill(1);
    write_mask(dir.path().join("ref.nii.gz"), &reference, &geometry()).unwrap();
    let out = run(
        dir.path(),
        &format!(
            "{BASE}apply_leakage_correction = true\nleakage_method = \"bidirectional\"\nrecirculation_removal = true\n"
        ),
        "reference_mask = \"ref.nii.gz\"",
    )
    .unwrap();
    for f in ["K2", "kep", "rCBV", "rCBF", "leakage_reference_voxels"] {
        assert!(out.join(format!("{f}.nii.gz")).is_file(), "{f}");
    }
    assert!(median_error(&out, "CBV", &ph.cbv) < 0.1);
    let (rcbv, _) = read_3d(out.join("rCBV.nii.gz")).unwrap();
    let mean_ref: f64 = rcbv.slice(ndarray::s![0..2, .., ..]).mean().unwrap();
    // Maps are stored as float32.
    assert!((mean_ref - 1.0).abs() < 1e-6, "{mean_ref}");
    let run_json = std::fs::read_to_string(out.join("CBV.json")).unwrap();
    assert!(run_json.contains("bidirectional") && run_json.contains("gamma_variate"));
}

#[test]
fn dsc_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DscPhantomSpec {
        shape: [4, 4, 1],
        ..DscPhantomSpec::default()
    };
    let ph = write(dir.path(), &spec);
    let manual = "aif_source = \"manual\"\nbaseline_frames = 9\n";
    // TE missing (no sidecar either), and TE in milliseconds.
    let e = run(dir.path(), manual, "").unwrap_err();
    assert!(e.contains("pipeline.te") && e.contains("EchoTime"), "{e}");
    let e = run(dir.path(), &format!("te = 30\n{manual}"), "").unwrap_err();
    assert!(e.contains("pipeline.te") && e.contains("milliseconds"), "{e}");
    // Too few baseline frames.
    let e = run(
        dir.path(),
        "te = 0.03\naif_source = \"manual\"\nbaseline_frames = 1\n",
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("pipeline.baseline_frames") && e.contains("between 2"),
        "{e}"
    );
    // An AIF of another length than the series.
    let aif = std::fs::read_to_string(dir.path().join("aif.txt")).unwrap();
    std::fs::write(dir.path().join("aif.txt"), "0 0\n1.5 1\n").unwrap();
    let e = run(dir.path(), BASE, "").unwrap_err();
    assert!(e.contains("aif_file") && e.contains("one per frame"), "{e}");
    std::fs::write(dir.path().join("aif.txt"), aif).unwrap();
    // A series of one frame.
    let one = ph.signal.slice(ndarray::s![.., .., .., 0..1]).to_owned();
    write_4d(dir.path().join("dsc.nii.gz"), &one, &geometry(), spec.dt).unwrap();
    let e = run(dir.path(), BASE, "").unwrap_err();
    assert!(
        e.contains("frames of the dynamic series") && e.contains("at least 3"),
        "{e}"
    );
    write_4d(dir.path().join("dsc.nii.gz"), &ph.signal, &geometry(), spec.dt).unwrap();
    // Frame times in milliseconds or minutes.
    for (scale, hint) in [(1000.0, "milliseconds"), (1.0 / 60.0, "minutes")] {
        let times: String = ph.times.iter().map(|t| format!("{}\n", t * scale)).collect();
        std::fs::write(dir.path().join("times.txt"), times).unwrap();
        let e = run(dir.path(), BASE, "time_file = \"times.txt\"").unwrap_err();
        assert!(e.contains("times.txt") && e.contains(hint), "{e}");
    }
    // A discovered times.txt (not named in [data]) does not override the
    // header's frame times: the run goes on with them.
    run(dir.path(), BASE, "").unwrap();
    std::fs::remove_file(dir.path().join("times.txt")).unwrap();
    // Unknown leakage method and an out-of-range transit shape.
    let e = run(dir.path(), &format!("{BASE}leakage_method = \"tofts\"\n"), "").unwrap_err();
    assert!(e.contains("tofts") && e.contains("bsw"), "{e}");
    let e = run(dir.path(), &format!("{BASE}transit_shape = 0\n"), "").unwrap_err();
    assert!(e.contains("pipeline.transit_shape"), "{e}");
    // A mask from another scan (its affine differs from the series').
    let mut shifted = osipy_core::IDENTITY_AFFINE;
    shifted[0][3] = 12.0;
    write_mask(
        dir.path().join("other.nii.gz"),
        &Array3::<u8>::ones((4, 4, 1)),
        &Geometry::from_affine(shifted),
    )
    .unwrap();
    let e = run(dir.path(), BASE, "mask = \"other.nii.gz\"").unwrap_err();
    assert!(
        e.contains("affine of data.mask") && e.contains("other.nii.gz") && e.contains("another scan"),
        "{e}"
    );
    // A reference mask outside the analysis mask.
    let mut mask = Array3::<u8>::ones((4, 4, 1));
    mask[[0, 0, 0]] = 0;
    write_mask(dir.path().join("mask.nii.gz"), &mask, &geometry()).unwrap();
    write_mask(
        dir.path().join("ref.nii.gz"),
        &Array3::<u8>::ones((4, 4, 1)),
        &geometry(),
    )
    .unwrap();
    let e = run(
        dir.path(),
        BASE,
        "mask = \"mask.nii.gz\"\nreference_mask = \"ref.nii.gz\"",
    )
    .unwrap_err();
    assert!(
        e.contains("data.reference_mask") && e.contains("outside data.mask"),
        "{e}"
    );
    // Zero and negative samples: those voxels go to the quality mask.
    let mut sig = ph.signal.clone();
    sig[[1, 1, 0, 20]] = 0.0;
    sig[[2, 2, 0, 30]] = -5.0;
    write_4d(dir.path().join("dsc.nii.gz"), &sig, &geometry(), spec.dt).unwrap();
    let out = run(dir.path(), BASE, "").unwrap();
    let (q, _) = read_3d(out.join("quality_mask.nii.gz")).unwrap();
    let invalid = f64::from(QualityCode::InvalidSignal.code());
    assert_eq!(q[[1, 1, 0]], invalid);
    assert_eq!(q[[2, 2, 0]], invalid);
    assert_eq!(q.iter().filter(|c| **c == invalid).count(), 2);
    let (cbf, _) = read_3d(out.join("CBF.nii.gz")).unwrap();
    // (0, 0, 0) is outside data.mask, still in place from above.
    assert!(cbf[[1, 1, 0]].is_nan() && cbf[[0, 0, 0]].is_nan() && cbf[[3, 3, 0]].is_finite());
}

/// A run in which no voxel can be fitted is an error that names the
/// reasons, and writes nothing.
#[test]
fn a_run_that_fits_nothing_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DscPhantomSpec {
        shape: [3, 3, 1],
        ..DscPhantomSpec::default()
    };
    let ph = write(dir.path(), &spec);
    let mut sig = ph.signal.clone();
    sig.slice_mut(ndarray::s![.., .., .., 30]).fill(-1.0);
    write_4d(dir.path().join("dsc.nii.gz"), &sig, &geometry(), spec.dt).unwrap();
    let e = run(dir.path(), BASE, "").unwrap_err();
    assert!(
        e.contains("no voxel of the 9 in the mask could be fitted") && e.contains("9 invalid_signal"),
        "{e}"
    );
    assert!(!dir.path().join("out").exists());
}
