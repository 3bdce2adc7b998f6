//! The `osipy` binary: snapshots of its text outputs, exit codes, and an
//! end-to-end run.

use std::process::Command;

fn osipy(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_osipy"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One insta setting for every snapshot in this file.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn help_snapshot() {
    let (code, out, _) = osipy(&["--help"]);
    assert_eq!(code, 0);
    snapshot!("help", out);
}

#[test]
fn dump_defaults_dce_snapshot_and_it_validates() {
    let (code, out, _) = osipy(&["dump-defaults", "dce"]);
    assert_eq!(code, 0);
    snapshot!("dump_defaults_dce", out.clone());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, out).unwrap();
    let (code, out, err) = osipy(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid dce configuration"));
}

#[test]
fn dump_defaults_ivim_snapshot() {
    let (code, out, _) = osipy(&["dump-defaults", "ivim"]);
    assert_eq!(code, 0);
    snapshot!("dump_defaults_ivim", out);
}

#[test]
fn dump_defaults_dsc_snapshot() {
    let (code, out, _) = osipy(&["dump-defaults", "dsc"]);
    assert_eq!(code, 0);
    snapshot!("dump_defaults_dsc", out);
}

#[test]
fn dump_defaults_asl_snapshot_and_it_validates() {
    let (code, out, _) = osipy(&["dump-defaults", "asl"]);
    assert_eq!(code, 0);
    snapshot!("dump_defaults_asl", out.clone());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, out).unwrap();
    let (code, out, err) = osipy(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid asl configuration"), "{out}");
}

#[test]
fn list_snapshot() {
    let (code, out, _) = osipy(&["list"]);
    assert_eq!(code, 0);
    snapshot!("list", out);
    let (code, out, _) = osipy(&["list", "dce_models"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("dce_models:") && !out.contains("population_aifs"));
    // Closed choices are listed with their key, from the serde enums.
    let (code, out, _) = osipy(&["list", "choices"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dce: pipeline.concentration") && out.contains("spgr | linear | none"),
        "{out}"
    );
}

#[test]
fn errors_are_one_line_with_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "modality = \"dce\"\n[pipeline]\nmodle = \"tofts\"\n").unwrap();
    let (code, _, err) = osipy(&["validate", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("did you mean `pipeline.model`"),
        "{err}"
    );

    // A device as the config: refused before reading (it never ends).
    let (code, _, err) = osipy(&["validate", "/dev/zero"]);
    assert_ne!(code, 0);
    assert!(
        err.trim().lines().count() == 1 && err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );

    let (code, _, err) = osipy(&["dump-defaults", "dwi"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"dwi\"") && err.contains("dce, ivim, dsc, asl"),
        "{err}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "modality = \"dce\"\n").unwrap();
    let (code, _, err) = osipy(&[
        "run",
        good.to_str().unwrap(),
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a folder"), "{err}");
    // An empty data folder: no dynamic series to discover.
    let (code, _, err) = osipy(&["run", good.to_str().unwrap(), dir.path().to_str().unwrap(), "-q"]);
    assert_ne!(code, 0);
    assert!(err.contains("data.dynamic"), "{err}");
    let (code, _, err) = osipy(&["list", "models"]);
    assert_ne!(code, 0);
    assert!(err.contains("dce_models"), "{err}");
}

#[test]
fn demo_runs_end_to_end_and_its_config_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let (code, stdout, err) = osipy(&["demo", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("median fitted") && stdout.contains("Ktrans"),
        "{stdout}"
    );
    for f in [
        "Ktrans.nii.gz",
        "ve.nii.gz",
        "vp.nii.gz",
        "kep.nii.gz",
        "quality_mask.nii.gz",
        "r_squared.nii.gz",
        "osipy_run.json",
    ] {
        assert!(out.join("maps").join(f).exists(), "{f}");
    }
    // The printed command works as a user would type it.
    let cfg = out.join("data/osipy.toml");
    let rerun = dir.path().join("rerun");
    let (code, stdout, err) = osipy(&[
        "run",
        cfg.to_str().unwrap(),
        out.join("data").to_str().unwrap(),
        "-o",
        rerun.to_str().unwrap(),
        "--threads",
        "1",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty(), "quiet prints nothing: {stdout}");
    // Same data, 1 thread vs the demo's default: identical maps.
    let a = std::fs::read(out.join("maps/Ktrans.nii.gz")).unwrap();
    let b = std::fs::read(rerun.join("Ktrans.nii.gz")).unwrap();
    assert_eq!(a, b);
    // --device auto runs (on the CPU in a build without CUDA: the same
    // maps); --device cuda in such a build is an error naming the cause,
    // before anything is written.
    if !cfg!(feature = "cuda") {
        let run = |device: &str, to: &str| {
            osipy(&[
                "run",
                cfg.to_str().unwrap(),
                out.join("data").to_str().unwrap(),
                "-o",
                dir.path().join(to).to_str().unwrap(),
                "--device",
                device,
                "-q",
            ])
        };
        let (code, _, err) = run("auto", "auto");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(dir.path().join("auto/Ktrans.nii.gz")).unwrap(), b);
        let (code, _, err) = run("cuda", "cuda");
        assert_ne!(code, 0);
        assert!(
            err.contains("CUDA device 0 cannot be used") && err.contains("`cuda` feature"),
            "{err}"
        );
        assert!(!dir.path().join("cuda").exists(), "nothing written");
        let (code, _, err) = run("gpu", "gpu");
        assert_ne!(code, 0);
        assert!(err.contains("cuda:N"), "{err}");
    }
    // A bad OSIPY_NUM_THREADS does not block an explicit --threads, and is
    // an error naming the variable when it is what decides.
    let with_env = |extra: &[&str], out: &str| {
        let mut args = vec!["run", cfg.to_str().unwrap(), out, "-q"];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_osipy"))
            .args(&args)
            .arg("-o")
            .arg(dir.path().join(format!("env{}", extra.len())))
            .env("OSIPY_NUM_THREADS", "abc")
            .output()
            .unwrap()
    };
    let data_dir = out.join("data");
    let r = with_env(&["--threads", "1"], data_dir.to_str().unwrap());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = with_env(&[], data_dir.to_str().unwrap());
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("OSIPY_NUM_THREADS"));
    // Neither command overwrites an earlier result unless told to.
    let (code, _, err) = osipy(&["demo", "-o", out.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--overwrite") && err.contains("already holds a demo"),
        "{err}"
    );
    let (code, _, err) = osipy(&[
        "run",
        cfg.to_str().unwrap(),
        out.join("data").to_str().unwrap(),
        "-o",
        rerun.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty") && err.contains("--overwrite"), "{err}");
    assert_eq!(
        std::fs::read(rerun.join("Ktrans.nii.gz")).unwrap(),
        b,
        "left as it was"
    );
    let (code, _, err) = osipy(&["demo", "-o", out.to_str().unwrap(), "--overwrite", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.join("maps/osipy_run.json").is_file());
}

#[test]
fn version_is_printed() {
    let (code, out, _) = osipy(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("osipy {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn report_redraws_a_finished_run_and_refuses_other_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let (code, _, err) = osipy(&["demo", "ivim", "-o", root.to_str().unwrap(), "--no-report"]);
    assert_eq!(code, 0, "{err}");
    let maps = root.join("maps");
    assert!(!maps.join("report.html").exists(), "--no-report wrote a report");
    let (code, out, err) = osipy(&["report", maps.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("report.html") && out.contains("figures"), "{out}");
    let html = std::fs::read_to_string(maps.join("report.html")).unwrap();
    assert!(
        html.contains("osipy report: IVIM") && html.matches("<img ").count() >= 10,
        "page"
    );
    assert!(maps.join("figures/map_Dstar.png").is_file());

    // A folder that is no run's output, and a damaged run summary.
    let (code, _, err) = osipy(&["report", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no osipy_run.json") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    std::fs::write(maps.join("osipy_run.json"), "{ not json").unwrap();
    let (code, _, err) = osipy(&["report", maps.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("osipy_run.json") && err.contains("not valid JSON"),
        "{err}"
    );
}
