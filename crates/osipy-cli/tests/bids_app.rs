//! `osipy bids BIDS_DIR OUT_DIR participant`: each participant runs on its
//! own; a failing one is reported and makes the exit code non-zero without
//! stopping the others; `--participant-label` picks participants.

use std::path::Path;
use std::process::Command;

/// A BIDS dataset of the IVIM demo for subjects 01 and 02 (02 with two
/// sessions) and 03, whose DWI is corrupt.
fn dataset(root: &Path) {
    let m = osipy_pipeline::MODALITIES
        .iter()
        .find(|m| m.id() == "ivim")
        .unwrap();
    let case = m.demo().unwrap();
    let plain = root.with_extension("plain");
    case.write_files(
        &plain,
        &osipy_io::Geometry::from_affine([
            [-2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]),
    )
    .unwrap();
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("dataset_description.json"),
        r#"{"Name": "ivim", "BIDSVersion": "1.10.0"}"#,
    )
    .unwrap();
    for (dir, prefix) in [
        ("sub-01/dwi", "sub-01"),
        ("sub-02/ses-a/dwi", "sub-02_ses-a"),
        ("sub-02/ses-b/dwi", "sub-02_ses-b"),
        ("sub-03/dwi", "sub-03"),
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(plain.join("dwi.nii.gz"), d.join(format!("{prefix}_dwi.nii.gz"))).unwrap();
        std::fs::copy(plain.join("dwi.bval"), d.join(format!("{prefix}_dwi.bval"))).unwrap();
    }
    std::fs::write(root.join("sub-03/dwi/sub-03_dwi.nii.gz"), b"not a NIfTI").unwrap();
    std::fs::write(
        root.with_extension("toml"),
        "modality = \"ivim\"\n\n[pipeline]\nfitting_method = \"segmented\"\n",
    )
    .unwrap();
}

fn osipy(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_osipy"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn participants_run_independently_and_failures_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, out) = (tmp.path().join("raw"), tmp.path().join("derivatives"));
    dataset(&raw);
    let config = raw.with_extension("toml");
    let out_all = osipy(&[
        "bids".as_ref(),
        raw.as_os_str(),
        out.as_os_str(),
        "participant".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--no-report".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out_all.stdout);
    let stderr = String::from_utf8_lossy(&out_all.stderr);
    assert!(!out_all.status.success(), "one participant is broken: {stdout}");
    assert!(stdout.contains("3 of 4 participant runs succeeded"), "{stdout}");
    assert!(stdout.contains("sub-03") && stdout.contains("FAILED"), "{stdout}");
    assert!(
        stderr.contains("sub-03_dwi.nii.gz"),
        "the failure names the file: {stderr}"
    );
    for dir in ["sub-01/dwi", "sub-02/ses-a/dwi", "sub-02/ses-b/dwi"] {
        let prefix = dir.trim_end_matches("/dwi").replace('/', "_");
        let d = out.join(dir);
        assert!(
            d.join(format!("{prefix}_desc-D_ivim.nii.gz")).is_file(),
            "{}",
            d.display()
        );
        assert!(d.join("osipy_run.json").is_file());
    }
    assert!(!out.join("sub-03").join("dwi").exists());
    assert!(out.join("dataset_description.json").is_file() && out.join(".bidsignore").is_file());

    // One participant by label (as a scheduler's array job would): exit 0.
    let out_one = tmp.path().join("one");
    let r = osipy(&[
        "bids".as_ref(),
        raw.as_os_str(),
        out_one.as_os_str(),
        "participant".as_ref(),
        "--participant-label".as_ref(),
        "sub-01".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("1 of 1 participant runs succeeded"));
    assert!(out_one.join("sub-01/dwi/report.html").is_file());
    assert!(!out_one.join("sub-02").exists());

    // An unknown label and the group level are errors before any run.
    let r = osipy(&[
        "bids".as_ref(),
        raw.as_os_str(),
        tmp.path().join("x").as_os_str(),
        "participant".as_ref(),
        "--participant-label".as_ref(),
        "09".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && e.contains("09") && e.contains("01, 02, 03"),
        "{e}"
    );
    let r = osipy(&[
        "bids".as_ref(),
        raw.as_os_str(),
        tmp.path().join("x").as_os_str(),
        "group".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("participant"));
}
