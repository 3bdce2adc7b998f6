//! The DCE pipeline from files: a phantom written as NIfTI, run, compared
//! with its truth; and the bad inputs a user can hand it.

use ndarray::{Array3, Array4};
use osipy_core::QualityCode;
use osipy_dce::phantom::{generate, PhantomSpec, SignalSettings};
use osipy_dce::{vfa_signal, VfaParams};
use osipy_io::{read_3d, write_4d, write_mask, Geometry};
use osipy_pipeline::{dro::compare, run_analysis, Config, RunOptions};
use std::path::Path;

const FLIP_ANGLES: [f64; 4] = [2.0, 5.0, 10.0, 15.0];
const T10: f64 = 1.4;
const TR: f64 = 0.005;

fn config_text(extra: &str) -> String {
    format!(
        "modality = \"dce\"\n[pipeline]\nmodel = \"extended_tofts\"\naif_delay = 30.0\n{extra}\n[pipeline.acquisition]\nbaseline_frames = 5\nrelaxivity = 4.5\ntr = {TR}\nflip_angle = 15.0\nflip_angles = [2.0, 5.0, 10.0, 15.0]\n"
    )
}

/// The phantom's SPGR acquisition.
fn acquisition() -> SignalSettings {
    SignalSettings {
        t10: T10,
        m0: 1000.0,
        tr: TR,
        flip_angle: 15.0,
        relaxivity: 4.5,
    }
}

/// Runs `config` on the files in `dir`, writing into `dir/out`.
fn run_in(dir: &Path, config: &Config, out: &str) -> Result<osipy_pipeline::RunSummary, String> {
    let opts = RunOptions {
        data_dir: dir.into(),
        out_dir: dir.join(out),
        ..Default::default()
    };
    run_analysis(config, &opts).map_err(|e| e.to_string())
}

/// Writes dce.nii.gz (signal), vfa.nii.gz and mask.nii.gz; returns the phantom.
/// The phantom's voxel-to-world affine (2 x 2 x 3 mm voxels).
const AFFINE: [[f64; 4]; 4] = [
    [2.0, 0.0, 0.0, 0.0],
    [0.0, 2.0, 0.0, 0.0],
    [0.0, 0.0, 3.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn write_dataset(dir: &Path, spec: &PhantomSpec) -> osipy_dce::phantom::DcePhantom {
    let ph = generate(spec).unwrap();
    let geom = Geometry::from_affine(AFFINE);
    let acq = acquisition();
    write_4d(dir.join("dce.nii.gz"), &ph.signal(&acq, 0.0, 1), &geom, spec.dt).unwrap();
    let [nx, ny, nz] = spec.shape;
    let v = vfa_signal(
        &VfaParams {
            tr: TR,
            flip_angles: FLIP_ANGLES.to_vec(),
        },
        1000.0,
        T10,
        1.0,
    )
    .unwrap();
    let vfa = Array4::from_shape_fn((nx, ny, nz, 4), |(_, _, _, a)| v[a]);
    write_4d(dir.join("vfa.nii.gz"), &vfa, &geom, 1.0).unwrap();
    write_mask(
        dir.join("mask.nii.gz"),
        &Array3::from_elem((nx, ny, nz), 1u8),
        &geom,
    )
    .unwrap();
    ph
}

fn small_spec() -> PhantomSpec {
    PhantomSpec {
        shape: [8, 8, 2],
        ..PhantomSpec::extended_tofts()
    }
}

#[test]
fn phantom_from_files_is_recovered_with_all_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let ph = write_dataset(dir.path(), &small_spec());
    let out = dir.path().join("out");
    let config = Config::from_toml(&config_text("save_intermediate = true")).unwrap();
    let summary = run_analysis(
        &config,
        &RunOptions {
            data_dir: dir.path().into(),
            out_dir: out.clone(),
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    for f in [
        "Ktrans.nii.gz",
        "Ktrans_se.nii.gz",
        "Ktrans.json",
        "ve.nii.gz",
        "vp.nii.gz",
        "kep.nii.gz",
        "r_squared.nii.gz",
        "quality_mask.nii.gz",
        "osipy_run.json",
        "T1.nii.gz",
        "concentration.nii.gz",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".osipy-tmp")));
    // Noise-free data through SPGR, float32 files and the VFA T1 fit:
    // recovery within 1 % (float32 signal storage limits it).
    for name in ["Ktrans", "ve", "vp"] {
        let (est, _) = read_3d(out.join(format!("{name}.nii.gz"))).unwrap();
        let s = compare(name, &est, ph.truth(name).unwrap(), None).unwrap();
        assert_eq!(s.n_invalid, 0, "{name}");
        assert!(s.p90_abs_rel_error < 0.01, "{name}: {s:?}");
    }
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("osipy_run.json")).unwrap()).unwrap();
    assert_eq!(run["voxels_in_mask"], 128);
    assert_eq!(
        run["quality_counts"]["converged"].as_u64().unwrap()
            + run["quality_counts"]
                .get("at_bound")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        128
    );
    assert!(run["timings"].as_array().unwrap().iter().any(|t| t[0] == "fit"));
    assert_eq!(summary.shape, [8, 8, 2, 80]);
    let (t1, _) = read_3d(out.join("T1.nii.gz")).unwrap();
    assert!((t1[[3, 3, 1]] - T10).abs() < 1e-3);
}

#[test]
fn nan_voxels_and_zero_baselines_go_to_the_quality_mask() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PhantomSpec {
        shape: [4, 4, 1],
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec).unwrap();
    let geom = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
    let acq = acquisition();
    let mut s = ph.signal(&acq, 0.0, 1);
    s[[0, 0, 0, 20]] = f64::NAN;
    for t in 0..80 {
        s[[1, 0, 0, t]] = 0.0;
    }
    write_4d(dir.path().join("dce.nii.gz"), &s, &geom, spec.dt).unwrap();
    let config = Config::from_toml(
        &config_text("").replace("flip_angles = [2.0, 5.0, 10.0, 15.0]", "t1_assumed = 1.4"),
    )
    .unwrap();
    let out = dir.path().join("out");
    run_in(dir.path(), &config, "out").unwrap();
    let (q, _) = read_3d(out.join("quality_mask.nii.gz")).unwrap();
    assert_eq!(q[[0, 0, 0]], QualityCode::NonFiniteInput.code() as f64);
    assert_eq!(q[[1, 0, 0]], QualityCode::InvalidSignal.code() as f64);
    assert!(QualityCode::from_code(q[[2, 2, 0]] as u8).unwrap().is_valid());
    let (k, _) = read_3d(out.join("Ktrans.nii.gz")).unwrap();
    assert!(k[[0, 0, 0]].is_nan() && k[[1, 0, 0]].is_nan() && k[[2, 2, 0]].is_finite());
}

fn run_err(dir: &Path, config: &str) -> String {
    let config = match Config::from_toml(config) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let out = dir.join("out_err");
    let e = run_analysis(
        &config,
        &RunOptions {
            data_dir: dir.into(),
            out_dir: out.clone(),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    // Nothing partial is left behind.
    if out.exists() {
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    e
}

#[test]
fn bad_inputs_give_clear_errors_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    let geom = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
    // Shape mismatch between the series and a T1 map.
    write_mask(
        dir.path().join("t1_wrong_grid.nii.gz"),
        &Array3::from_elem((4, 4, 2), 1u8),
        &geom,
    )
    .unwrap();
    let e = run_err(
        dir.path(),
        &config_text("").replace(
            "modality = \"dce\"\n",
            "modality = \"dce\"\n[data]\nt1_map = \"t1_wrong_grid.nii.gz\"\n",
        ),
    );
    assert!(
        e.contains("data.t1_map") && e.contains("[4, 4, 2]") && e.contains("[8, 8, 2]"),
        "{e}"
    );
    // Wrong number of flip angles.
    let e = run_err(
        dir.path(),
        &config_text("").replace("[2.0, 5.0, 10.0, 15.0]", "[2.0, 5.0, 10.0]"),
    );
    assert!(
        e.contains("data.vfa") && e.contains("4") && e.contains("[2.0, 5.0, 10.0]"),
        "{e}"
    );
    // Missing TR.
    let e = run_err(dir.path(), &config_text("").replace("tr = 0.005\n", ""));
    assert!(e.contains("pipeline.acquisition.tr"), "{e}");
    // A negative AIF arrival time (the message says it must be positive).
    let e = run_err(
        dir.path(),
        &config_text("").replace("aif_delay = 30.0", "aif_delay = -30.0"),
    );
    assert!(e.contains("pipeline.aif_delay") && e.contains("-30"), "{e}");
    // TR in milliseconds.
    let e = run_err(dir.path(), &config_text("").replace("tr = 0.005", "tr = 5.0"));
    assert!(e.contains("milliseconds"), "{e}");
    // Unknown model name.
    let e = run_err(
        dir.path(),
        &config_text("").replace("extended_tofts", "extended_toft"),
    );
    assert!(e.contains("\"extended_toft\"") && e.contains("2cxm"), "{e}");
    // An occupied output folder is refused before anything is computed,
    // and left as it was.
    let out = dir.path().join("blocked");
    std::fs::create_dir_all(out.join("Ktrans.nii.gz")).unwrap();
    let config = Config::from_toml(&config_text("")).unwrap();
    let e = run_in(dir.path(), &config, "blocked").unwrap_err();
    assert!(
        e.contains("blocked") && e.contains("not empty") && e.contains("--overwrite"),
        "{e}"
    );
    let left = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(left(&out), ["Ktrans.nii.gz"], "the folder is untouched");
    // An output path that is a file.
    std::fs::write(dir.path().join("a_file"), "x").unwrap();
    let e = run_in(dir.path(), &config, "a_file").unwrap_err();
    assert!(e.contains("a_file") && e.contains("an existing file"), "{e}");
}

/// With `overwrite` the earlier result is replaced as a whole (no stale
/// maps of another model), and what dead runs left beside the output
/// folder is cleaned: a half-written staging folder removed, a result set
/// aside just before a replacement put back.
#[test]
fn output_folder_is_replaced_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    let out = dir.path().join("out");
    let run = |text: &str, overwrite: bool| {
        run_analysis(
            &Config::from_toml(text).unwrap(),
            &RunOptions {
                data_dir: dir.path().into(),
                out_dir: out.clone(),
                overwrite,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
    };
    run(&config_text(""), false).unwrap();
    assert!(out.join("vp.nii.gz").is_file());
    // Tofts into the same folder: refused, then replaced as a whole.
    let tofts = config_text("").replace("extended_tofts", "tofts");
    assert!(run(&tofts, false).unwrap_err().contains("--overwrite"));
    run(&tofts, true).unwrap();
    assert!(out.join("Ktrans.nii.gz").is_file() && !out.join("vp.nii.gz").exists());
    let json = std::fs::read_to_string(out.join("Ktrans.json")).unwrap();
    assert!(
        json.contains("\"tofts\"") && !json.contains("extended_tofts"),
        "{json}"
    );
    // Debris of a dead run (pid 4194304 is above Linux's pid_max): a
    // staging folder is removed; a result set aside while OUT is missing
    // is put back.
    if std::path::Path::new("/proc/self").exists() {
        let tmp = dir.path().join(".out.osipy-tmp-4194304");
        std::fs::create_dir_all(&tmp).unwrap();
        let aside = dir.path().join(".out.osipy-old-4194304");
        std::fs::rename(&out, &aside).unwrap();
        let e = run(&tofts, false);
        assert!(e.unwrap_err().contains("--overwrite"), "the result was put back");
        assert!(!tmp.exists() && !aside.exists() && out.join("Ktrans.nii.gz").is_file());
    }
}

#[test]
fn ambiguous_discovery_names_the_candidates() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    std::fs::copy(dir.path().join("dce.nii.gz"), dir.path().join("dce_run2.nii.gz")).unwrap();
    let e = run_err(dir.path(), &config_text(""));
    assert!(
        e.contains("dce.nii.gz") && e.contains("dce_run2.nii.gz") && e.contains("data.dynamic"),
        "{e}"
    );
}

#[test]
fn manual_aif_needs_a_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    let e = run_err(dir.path(), &config_text("aif_source = \"manual\""));
    assert!(e.contains("data.aif_file") && e.contains("time (s)"), "{e}");
}

#[test]
fn manual_aif_tables_must_cover_the_series_in_seconds_and_mm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = small_spec();
    let ph = write_dataset(dir.path(), &spec);
    let write = |t_scale: f64, c_scale: f64, frames: usize| {
        let text: String = ph
            .time
            .iter()
            .zip(&ph.aif)
            .take(frames)
            .map(|(t, c)| format!("{} {}\n", t * t_scale, c * c_scale))
            .collect();
        std::fs::write(dir.path().join("aif.csv"), text).unwrap();
    };
    let nt = ph.time.len();
    let cfg = config_text("aif_source = \"manual\"");
    // The whole table in seconds and mM runs.
    write(1.0, 1.0, nt);
    assert!(run_in(dir.path(), &Config::from_toml(&cfg).unwrap(), "ok").is_ok());
    // Only the first quarter of the frames: not held at its last value.
    write(1.0, 1.0, nt / 4);
    let e = run_err(dir.path(), &cfg);
    assert!(e.contains("aif.csv") && e.contains("covering the series"), "{e}");
    // Milliseconds, minutes, µM.
    write(1000.0, 1.0, nt);
    assert!(run_err(dir.path(), &cfg).contains("milliseconds"));
    write(1.0 / 60.0, 1.0, nt);
    assert!(run_err(dir.path(), &cfg).contains("minutes"));
    write(1.0, 1000.0, nt);
    let e = run_err(dir.path(), &cfg);
    assert!(e.contains("peak plasma concentration") && e.contains("µM"), "{e}");
}

#[test]
fn look_locker_t1_from_files() {
    use osipy_dce::LookLockerModel;
    use osipy_fitting::Model;
    let dir = tempfile::tempdir().unwrap();
    let spec = small_spec();
    let ph = write_dataset(dir.path(), &spec);
    std::fs::remove_file(dir.path().join("vfa.nii.gz")).unwrap();
    // T1 = T1* (B/A - 1) = 0.8 (2.75 - 1) = 1.4 s, the phantom's T10.
    let ti: Vec<f64> = (0..12).map(|i| 0.05 + i as f64 * 0.3).collect();
    let mut s = vec![0.0; ti.len()];
    LookLockerModel::new(&ti)
        .unwrap()
        .predict(&[400.0, 1100.0, 0.8], &mut s);
    let [nx, ny, nz] = spec.shape;
    let ll = Array4::from_shape_fn((nx, ny, nz, ti.len()), |(_, _, _, i)| s[i]);
    write_4d(
        dir.path().join("look_locker.nii.gz"),
        &ll,
        &Geometry::from_affine(osipy_core::IDENTITY_AFFINE),
        1.0,
    )
    .unwrap();
    let tis = format!("{ti:?}");
    let text = config_text("t1_mapping_method = \"look_locker\"\nsave_intermediate = true").replace(
        "flip_angles = [2.0, 5.0, 10.0, 15.0]",
        &format!("inversion_times = {tis}"),
    );
    let out = dir.path().join("out");
    run_in(dir.path(), &Config::from_toml(&text).unwrap(), "out").unwrap();
    let (t1, _) = read_3d(out.join("T1.nii.gz")).unwrap();
    assert!(t1.iter().all(|v| (v - T10).abs() < 1e-3), "{}", t1[[0, 0, 0]]);
    let (k, _) = read_3d(out.join("Ktrans.nii.gz")).unwrap();
    assert!(
        compare("Ktrans", &k, ph.truth("Ktrans").unwrap(), None)
            .unwrap()
            .p90_abs_rel_error
            < 0.01
    );
    // One inversion time too many.
    let bad = text.replace(&tis, &format!("{:?}", [ti.clone(), vec![4.0]].concat()));
    let e = run_err(dir.path(), &bad);
    assert!(e.contains("data.look_locker") && e.contains("13"), "{e}");
}

/// A model registered from outside the crates runs through the whole
/// pipeline by its config name: the registry entry is what runs.
#[test]
fn a_model_registered_by_the_user_runs_from_files() {
    fn build(input: osipy_dce::PkInput) -> Box<dyn osipy_fitting::Model> {
        osipy_dce::DceModelEntry::builtin("patlak")
            .expect("patlak is built in")
            .build(input)
    }
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    let mut registry = osipy_pipeline::builtin_registry().unwrap();
    registry
        .register(
            "my_patlak",
            "Patlak under another name",
            osipy_dce::DceModelEntry::new(build),
        )
        .unwrap();
    let text = config_text("").replace("extended_tofts", "my_patlak");
    // The built-in registry does not know the name; the user's does.
    let e = Config::from_toml(&text).unwrap_err().to_string();
    assert!(e.contains("\"my_patlak\""), "{e}");
    let config = Config::parse(&text, &registry).unwrap();
    let run = |config: &Config, out: &str| {
        let opts = RunOptions {
            data_dir: dir.path().into(),
            out_dir: dir.path().join(out),
            ..Default::default()
        };
        osipy_pipeline::run_analysis_with(config, &opts, &registry).unwrap();
        read_3d(dir.path().join(out).join("Ktrans.nii.gz")).unwrap().0
    };
    let mine = run(&config, "mine");
    assert!(!dir.path().join("mine/ve.nii.gz").exists(), "Patlak has no ve");
    let builtin = run(
        &Config::from_toml(&config_text("").replace("extended_tofts", "patlak")).unwrap(),
        "builtin",
    );
    // Same maps, NaN where the fit failed included.
    assert_eq!(mine.mapv(f64::to_bits), builtin.mapv(f64::to_bits));
    assert!(mine.iter().any(|v| v.is_finite()));
}

/// TR and flip angle from the dynamic series' BIDS sidecar when the config
/// leaves them out: same maps; implausible sidecar values are errors.
#[test]
fn acquisition_from_the_json_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &small_spec());
    let run = |text: &str, out: &str| {
        run_in(dir.path(), &Config::from_toml(text).unwrap(), out)
            .map(|_| read_3d(dir.path().join(out).join("Ktrans.nii.gz")).unwrap().0)
    };
    let full = run(&config_text(""), "full").unwrap();
    let bare = config_text("")
        .replace(&format!("tr = {TR}\n"), "")
        .replace("flip_angle = 15.0\n", "");
    let e = run(&bare, "none").unwrap_err();
    assert!(
        e.contains("pipeline.acquisition.tr") && e.contains("RepetitionTime"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("dce.json"),
        format!("{{\"RepetitionTime\": {TR}, \"FlipAngle\": 15.0}}"),
    )
    .unwrap();
    let from_sidecar = run(&bare, "sidecar").unwrap();
    assert_eq!(full.mapv(f64::to_bits), from_sidecar.mapv(f64::to_bits));
    // Milliseconds in the sidecar are caught like in the config.
    std::fs::write(
        dir.path().join("dce.json"),
        "{\"RepetitionTime\": 5.0, \"FlipAngle\": 15.0}",
    )
    .unwrap();
    let e = run(&bare, "ms").unwrap_err();
    assert!(e.contains("dce.json") && e.contains("milliseconds"), "{e}");
    std::fs::write(
        dir.path().join("dce.json"),
        format!("{{\"RepetitionTime\": {TR}, \"FlipAngle\": 200.0}}"),
    )
    .unwrap();
    let e = run(&bare, "flip").unwrap_err();
    assert!(
        e.contains("dce.json (FlipAngle)") && e.contains("(0, 180)"),
        "{e}"
    );
}

/// A series whose header has no usable time step needs frame times from a file.
#[test]
fn zero_time_step_asks_for_a_time_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = small_spec();
    let ph = write_dataset(dir.path(), &spec);
    let acq = acquisition();
    let geom = Geometry::from_affine(AFFINE);
    write_4d(
        dir.path().join("dce.nii.gz"),
        &ph.signal(&acq, 0.0, 1),
        &geom,
        0.0,
    )
    .unwrap();
    let e = run_err(dir.path(), &config_text(""));
    assert!(e.contains("data.time_file") && e.contains("pixdim[4]"), "{e}");
    // With the frame times in a file it runs.
    let times: Vec<String> = (0..spec.n_frames)
        .map(|i| format!("{}", i as f64 * spec.dt))
        .collect();
    std::fs::write(dir.path().join("times.txt"), times.join("\n")).unwrap();
    let summary = run_in(dir.path(), &Config::from_toml(&config_text("")).unwrap(), "out").unwrap();
    assert!(summary.inputs["time_file"].ends_with("times.txt"));
}

/// The run holds a float32 series as read and converts each voxel as the
/// fit loads it; with `save_intermediate` (or AIF detection) it converts the
/// whole volume first. Both give the same maps and quality codes, including
/// voxels that fail T1 mapping or conversion.
#[test]
fn streamed_and_whole_volume_conversion_give_the_same_maps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PhantomSpec {
        shape: [6, 5, 2],
        snr: Some(20.0),
        ..PhantomSpec::extended_tofts()
    };
    write_dataset(dir.path(), &spec);
    // Break voxels: a NaN frame, a zero baseline, a VFA series without T1.
    let geom = Geometry::from_affine(AFFINE);
    let (mut s, _, dt) = osipy_io::read_4d(dir.path().join("dce.nii.gz")).unwrap();
    s[[0, 0, 0, 20]] = f64::NAN;
    s.slice_mut(ndarray::s![1, 0, 0, ..]).fill(0.0);
    write_4d(dir.path().join("dce.nii.gz"), &s, &geom, dt.unwrap()).unwrap();
    let (mut vfa, _, _) = osipy_io::read_4d(dir.path().join("vfa.nii.gz")).unwrap();
    vfa.slice_mut(ndarray::s![2, 0, 0, ..]).fill(f64::NAN);
    write_4d(dir.path().join("vfa.nii.gz"), &vfa, &geom, 1.0).unwrap();
    assert!(matches!(
        osipy_io::read_4d_any(dir.path().join("dce.nii.gz")).unwrap(),
        osipy_io::AnySeries4::F32(_)
    ));
    let streamed = Config::from_toml(&config_text("")).unwrap();
    let whole = Config::from_toml(&config_text("save_intermediate = true")).unwrap();
    run_in(dir.path(), &streamed, "streamed").unwrap();
    run_in(dir.path(), &whole, "whole").unwrap();
    let (q, _) = read_3d(dir.path().join("streamed/quality_mask.nii.gz")).unwrap();
    assert_eq!(q[[0, 0, 0]], QualityCode::NonFiniteInput.code() as f64);
    assert_eq!(q[[1, 0, 0]], QualityCode::InvalidSignal.code() as f64);
    assert!(!QualityCode::from_code(q[[2, 0, 0]] as u8).unwrap().is_valid());
    assert!(
        q.iter()
            .filter(|c| QualityCode::from_code(**c as u8).unwrap().is_valid())
            .count()
            > 40
    );
    for name in [
        "Ktrans",
        "Ktrans_se",
        "ve",
        "vp",
        "kep",
        "r_squared",
        "quality_mask",
    ] {
        let file = format!("{name}.nii.gz");
        let (a, _) = read_3d(dir.path().join("streamed").join(&file)).unwrap();
        let (b, _) = read_3d(dir.path().join("whole").join(&file)).unwrap();
        let bits = |m: &Array3<f64>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{name}");
    }
}

/// T1 is mapped beside the read of the series: on one thread when the
/// series is gzip-compressed, on the run's threads otherwise. The maps do
/// not depend on it: a compressed and a plain copy of the same data give
/// the same files.
#[test]
fn t1_mapped_beside_the_read_gives_the_same_maps_for_any_series_file() {
    let spec = PhantomSpec {
        shape: [6, 5, 2],
        snr: Some(20.0),
        ..PhantomSpec::extended_tofts()
    };
    let gz = tempfile::tempdir().unwrap();
    write_dataset(gz.path(), &spec);
    let plain = tempfile::tempdir().unwrap();
    for f in ["vfa.nii.gz", "mask.nii.gz"] {
        std::fs::copy(gz.path().join(f), plain.path().join(f)).unwrap();
    }
    let (s, g, dt) = osipy_io::read_4d(gz.path().join("dce.nii.gz")).unwrap();
    write_4d(plain.path().join("dce.nii"), &s, &g, dt.unwrap()).unwrap();
    let config = Config::from_toml(&config_text("")).unwrap();
    for dir in [gz.path(), plain.path()] {
        let opts = RunOptions {
            data_dir: dir.into(),
            out_dir: dir.join("out"),
            threads: Some(2),
            ..Default::default()
        };
        run_analysis(&config, &opts).unwrap();
    }
    for name in ["Ktrans", "ve", "vp", "r_squared", "quality_mask"] {
        let file = format!("{name}.nii.gz");
        let (a, _) = read_3d(gz.path().join("out").join(&file)).unwrap();
        let (b, _) = read_3d(plain.path().join("out").join(&file)).unwrap();
        let bits = |m: &Array3<f64>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{name}");
    }
}
