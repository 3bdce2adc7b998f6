//! Writes that never leave a partial file behind.

use osipy_core::{OsipyError, Result};
use std::path::{Path, PathBuf};

/// Runs `write(tmp)` on a temporary path beside `path` (same directory, so
/// the rename is atomic on one file system, same extension so writers pick the
/// right format) and renames it to `path` on success. On failure the
/// temporary file is removed and `path` is untouched.
pub fn atomic_write<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&PathBuf) -> std::result::Result<(), String>,
{
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(OsipyError::io(
            path,
            format!("output directory {} does not exist", dir.display()),
        ));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| OsipyError::io(path, "output path has no valid file name"))?;
    // Keep the full extension (.nii.gz) at the end of the temporary name.
    let tmp = dir.join(format!(".osipy-tmp-{}-{name}", std::process::id()));
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            OsipyError::Io {
                path: path.to_path_buf(),
                message: "could not move the finished file into place".into(),
                source: Some(e),
            }
        }),
        Err(msg) => {
            let _ = std::fs::remove_file(&tmp);
            Err(OsipyError::io(path, format!("could not write: {msg}")))
        }
    }
}

/// Writes pretty JSON atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| OsipyError::io(path, e.to_string()))?;
    atomic_write(path, |tmp| {
        std::fs::write(tmp, text + "\n").map_err(|e| e.to_string())
    })
}
