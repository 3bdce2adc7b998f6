//! The fault matrix: `kill -9` at each stage of a real `osipy run` that
//! replaces an earlier result. The output folder must hold the earlier
//! complete result (or, after the final rename, the new one), never a mix;
//! what the killed run left beside it is cleaned by the next run.
//! The kill comes from the process itself at the named stage
//! (`OSIPY_FAULT_AT`, see `osipy-pipeline`'s `output::fault_point`).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

fn osipy(args: &[&str], fault: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osipy"));
    c.args(args).env("NO_COLOR", "1").env_remove("OSIPY_FAULT_AT");
    if let Some(stage) = fault {
        c.env("OSIPY_FAULT_AT", stage);
    }
    c.output().unwrap()
}

/// Every file of a folder (and its subfolders, as `sub/name`) with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            for (sub, bytes) in contents(&e.path()) {
                out.insert(format!("{name}/{sub}"), bytes);
            }
        } else {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Entries beside the output folder that a run leaves while it works.
fn debris(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".osipy-"))
        .collect()
}

#[test]
fn kill_9_at_every_stage_leaves_the_previous_complete_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("study");
    let r = osipy(&["demo", "ivim", "-o", root.to_str().unwrap()], None);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (data, maps) = (root.join("data"), root.join("maps"));
    let config = data.join("osipy.toml");
    let previous = contents(&maps);
    assert!(previous.contains_key("osipy_run.json") && previous.len() > 5);
    let run = |overwrite: bool, fault: Option<&str>| {
        let mut args = vec![
            "run",
            config.to_str().unwrap(),
            data.to_str().unwrap(),
            "-o",
            maps.to_str().unwrap(),
        ];
        if overwrite {
            args.push("--overwrite");
        }
        osipy(&args, fault)
    };
    for stage in ["read", "fit", "write", "report", "commit", "swap"] {
        let r = run(true, Some(stage));
        assert_eq!(r.status.signal(), Some(9), "{stage}: the run was to be killed");
        if stage == "swap" {
            // Killed between setting the previous result aside and moving
            // the new one in: the previous one waits beside the folder.
            assert!(!maps.exists(), "{stage}");
            assert!(debris(&root).iter().any(|n| n.contains("osipy-old-")), "{stage}");
        } else {
            assert_eq!(
                contents(&maps),
                previous,
                "{stage}: the earlier result is untouched"
            );
        }
        assert!(
            !debris(&root).is_empty(),
            "{stage}: the killed run's staging is beside OUT"
        );
        // The next run (here refused: the folder is not empty) cleans up
        // first and puts a set-aside result back.
        let r = run(false, None);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains("--overwrite"),
            "{stage}: {err}"
        );
        assert_eq!(
            contents(&maps),
            previous,
            "{stage}: the earlier result after cleanup"
        );
        assert!(
            debris(&root).is_empty(),
            "{stage}: debris left: {:?}",
            debris(&root)
        );
    }
    // A run that is not killed replaces the result as a whole.
    let r = run(true, None);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let now = contents(&maps);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        previous.keys().collect::<Vec<_>>()
    );
    assert_ne!(
        now["osipy_run.json"], previous["osipy_run.json"],
        "a new run summary"
    );
    assert!(debris(&root).is_empty());
}

#[test]
fn an_unwritable_output_folder_fails_before_reading_data() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    // A read-only mount binds root too (permission bits do not); else the
    // permission bits, for other users.
    let ro_mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "ro,size=64k",
            "tmpfs",
            locked.to_str().unwrap(),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    let _mounted = ro_mount.then(|| SmallDisk(locked.clone()));
    if !ro_mount {
        let mut perm = std::fs::metadata(&locked).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o500);
        std::fs::set_permissions(&locked, perm).unwrap();
    }
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        eprintln!("skipped: no read-only mount allowed and this user ignores permission bits (root)");
        return;
    }
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "modality = \"ivim\"\n[data]\nb_values = [0.0, 100.0]\n").unwrap();
    let out = locked.join("maps");
    // The data folder holds no series: reading it would fail on data.dwi.
    let data = dir.path().to_str().unwrap();
    let r = osipy(
        &["run", config.to_str().unwrap(), data, "-o", out.to_str().unwrap()],
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    // The folder is named, and the data were never reached.
    assert!(
        !r.status.success() && err.contains("locked") && !err.contains("data.dwi"),
        "{err}"
    );
    assert!(
        err.contains("Read-only file system") || err.contains("Permission denied"),
        "{err}"
    );
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_an_error_in_words_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let r = osipy(&["demo", "ivim", "-o", study.to_str().unwrap()], None);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48k", "tmpfs", mnt.to_str().unwrap()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root and mount rights)");
        return;
    }
    let _disk = SmallDisk(mnt.clone());
    let data = study.join("data");
    let out = mnt.join("maps");
    let r = osipy(
        &[
            "run",
            data.join("osipy.toml").to_str().unwrap(),
            data.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "the 48 KiB disk was to fill up");
    assert!(
        err.contains("No space left on device") && !err.contains("StorageFull") && !err.contains("Os {"),
        "{err}"
    );
    // Nothing half-written: no output folder, no staging folder.
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
