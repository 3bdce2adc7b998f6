//! Staged outputs: every file of a run is written into a temporary folder
//! beside the output folder (same parent, so the same file system) and the
//! finished folder is moved into place with one rename, so the output folder
//! holds one run's complete result or nothing new, never a mix. An existing,
//! non-empty output folder is replaced only with `overwrite`, and then as a
//! whole. On any error (or drop) the temporary folder is removed; temporary
//! folders of runs that died are removed (or, for a result set aside just
//! before a replacement, put back) by the next run into the same folder.

use crate::config::Config;
use crate::RunSummary;
use ndarray::Array3;
use osipy_core::{MapSet, OsipyError, QualityCode, Result};
use osipy_io::{write_4d, write_json, write_map, write_mask, write_parameter_map_with, Geometry, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run's outputs being written.
pub(crate) struct Staging {
    out_dir: PathBuf,
    parent: PathBuf,
    name: String,
    tmp: Option<PathBuf>,
    written: Vec<PathBuf>,
    /// Image extension: `.nii.gz`, or `.nii` with `output.compress = false`.
    ext: &'static str,
}

/// Prefixes of the folders a run keeps beside `OUT` (`.OUT.osipy-tmp-PID`:
/// being written; `.OUT.osipy-old-PID`: the previous result, set aside for
/// the moment of the replacement).
const TMP: &str = "osipy-tmp-";
const OLD: &str = "osipy-old-";

/// Fault injection for the crash tests (`crates/osipy-cli/tests/faults.rs`):
/// with `OSIPY_FAULT_AT=<stage>` the process kills itself with SIGKILL at
/// that stage, as `kill -9` would (no destructor, no cleanup runs).
/// Stages: `read`, `fit`, `write`, `report` (figures and page written),
/// `commit` (run summary written, nothing
/// moved), `swap` (previous result set aside, new one not yet in place).
pub(crate) fn fault_point(stage: &str) {
    if std::env::var("OSIPY_FAULT_AT").is_ok_and(|s| s == stage) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // `kill` missing or refused: die as abruptly anyway.
        std::process::abort();
    }
}

fn io_error(path: &Path, message: &str, e: std::io::Error) -> OsipyError {
    OsipyError::Io {
        path: path.into(),
        message: message.into(),
        source: Some(e),
    }
}

/// Whether process `pid` is alive (Linux `/proc`); `None` where unknown.
fn alive(pid: u32) -> Option<bool> {
    Path::new("/proc/self")
        .exists()
        .then(|| Path::new("/proc").join(pid.to_string()).exists())
}

/// Removes what dead runs left beside `out_dir`; a result set aside by a
/// run that died mid-replacement is put back when `out_dir` is missing.
fn clean_stale(parent: &Path, name: &str, out_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else {
            continue;
        };
        let (kind, pid) = match (rest.strip_prefix(TMP), rest.strip_prefix(OLD)) {
            (Some(p), _) => (TMP, p),
            (_, Some(p)) => (OLD, p),
            _ => continue,
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || alive(pid) != Some(false) {
            continue;
        }
        if kind == OLD && !out_dir.exists() {
            let _ = std::fs::rename(entry.path(), out_dir);
        } else {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl Staging {
    /// Checks that `out_dir` can take this run's result (absent, empty, or
    /// `overwrite`), cleans what dead runs left beside it, and creates this
    /// run's temporary folder beside it: so an unwritable or occupied output
    /// folder is an error before any data are read.
    pub(crate) fn new(out_dir: &Path, overwrite: bool) -> Result<Staging> {
        let name = out_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                OsipyError::data(
                    "output folder",
                    out_dir.display().to_string(),
                    "a folder path that ends in a name",
                )
            })?;
        let parent = match out_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| {
            io_error(
                &parent,
                "cannot create the folder that is to hold the output folder",
                e,
            )
        })?;
        clean_stale(&parent, &name, out_dir);
        if out_dir.exists() {
            if !out_dir.is_dir() {
                return Err(OsipyError::data(
                    format!("output folder {}", out_dir.display()),
                    "an existing file",
                    "a folder path (absent, empty, or replaced with --overwrite)",
                ));
            }
            let occupied = std::fs::read_dir(out_dir)
                .map_err(|e| io_error(out_dir, "cannot read the output folder", e))?
                .next()
                .is_some();
            if occupied && !overwrite {
                return Err(OsipyError::data(
                    format!("output folder {}", out_dir.display()),
                    "not empty (the result of an earlier run?)",
                    "an absent or empty folder; or --overwrite to replace it as a whole",
                ));
            }
        }
        let tmp = parent.join(format!(".{name}.{TMP}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| {
            io_error(
                &tmp,
                "cannot write beside the output folder (is its parent writable?)",
                e,
            )
        })?;
        Ok(Staging {
            out_dir: out_dir.into(),
            parent,
            name,
            tmp: Some(tmp),
            written: Vec::new(),
            ext: ".nii.gz",
        })
    }

    /// Writes plain `.nii` images instead of `.nii.gz` (`output.compress = false`).
    pub(crate) fn uncompressed(&mut self) {
        self.ext = ".nii";
    }

    /// `name` (`T1.nii.gz`) with this run's image extension.
    fn image_name(&self, name: &str) -> String {
        match name.strip_suffix(".nii.gz") {
            Some(stem) => format!("{stem}{}", self.ext),
            None => name.to_string(),
        }
    }

    fn tmp(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.out_dir)
    }

    /// Writes parameter maps (with `_se` maps and sidecars carrying the
    /// config), `r_squared.nii.gz` and `quality_mask.nii.gz`.
    ///
    /// The maps are compressed and written on up to `threads` threads, each
    /// taking a fixed run of consecutive maps; the files are listed in map
    /// order whatever the thread count.
    pub(crate) fn maps(
        &mut self,
        set: &MapSet,
        geometry: &Geometry,
        config: &Config,
        threads: usize,
    ) -> Result<()> {
        let config = serde_json::to_value(config).map_err(|e| OsipyError::Validation(e.to_string()))?;
        let (tmp, ext) = (self.tmp().to_path_buf(), self.ext);
        // The sidecar's provenance gains the config; the arrays are written
        // as they are (no copy of the map).
        let write = |map: &osipy_core::ParameterMap| {
            let provenance = map.provenance.clone().with_setting("config", config.clone());
            write_parameter_map_with(&tmp, map, &provenance, geometry, ext)
        };
        let per_thread = set.maps.len().div_ceil(threads.max(1)).max(1);
        let written: Vec<Result<Vec<PathBuf>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = set
                .maps
                .chunks(per_thread)
                .map(|run| scope.spawn(|| run.iter().map(write).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(OsipyError::Validation("a map writer thread failed".into()))]
                    })
                })
                .collect()
        });
        for files in written {
            self.written.extend(files?);
        }
        let p = self.tmp().join(self.image_name("r_squared.nii.gz"));
        write_map(&p, &set.r_squared, geometry)?;
        self.written.push(p);
        let p = self.tmp().join(self.image_name("quality_mask.nii.gz"));
        write_mask(&p, &set.quality.mapv(|q| q.code()), geometry)?;
        self.written.push(p);
        Ok(())
    }

    /// Writes one more volume (a 3D map or a 4D series).
    pub(crate) fn volume(&mut self, name: &str, volume: &Volume, geometry: &Geometry) -> Result<()> {
        let p = self.tmp().join(self.image_name(name));
        match volume {
            Volume::Map(v) => write_map(&p, v, geometry)?,
            Volume::Series(v, dt) => write_4d(&p, v, geometry, *dt)?,
        }
        self.written.push(p);
        Ok(())
    }

    /// Renames the staged images and sidecars to BIDS-derivative names of
    /// participant `p` with suffix `suffix` (see [`osipy_io::bids::rename_run`]).
    pub(crate) fn bids_names(
        &mut self,
        p: &osipy_io::bids::Participant,
        suffix: &str,
        sources: &[String],
    ) -> Result<()> {
        let tmp = self.tmp().to_path_buf();
        let renamed = osipy_io::bids::rename_run(&tmp, p, suffix, sources)?;
        let mut written = Vec::new();
        for w in std::mem::take(&mut self.written) {
            let name = w
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match renamed.get(&name) {
                Some(new) => written.push(w.with_file_name(new)),
                None => written.push(w),
            }
        }
        // Sidecars made for images that had none.
        for new in renamed.values() {
            let path = tmp.join(new);
            if !written.contains(&path) {
                written.push(path);
            }
        }
        self.written = written;
        Ok(())
    }

    /// Draws the report (`report.html`, `figures/`) of `summary` and `maps`.
    pub(crate) fn report(&mut self, summary: &RunSummary, maps: &MapSet, threads: usize) -> Result<()> {
        let data = osipy_report::ReportData {
            summary: serde_json::to_value(summary).map_err(|e| OsipyError::Validation(e.to_string()))?,
            maps: maps
                .maps
                .iter()
                .map(|m| osipy_report::MapImage {
                    name: m.name.clone(),
                    symbol: m.symbol.clone(),
                    unit: m.unit.symbol().to_string(),
                    values: std::borrow::Cow::Borrowed(&m.values),
                })
                .collect(),
            quality: maps.quality.mapv(|q| q.code()),
        };
        let files = osipy_report::write(self.tmp(), &data, threads)?;
        self.written.extend(files);
        Ok(())
    }

    /// Final paths of everything staged, plus `osipy_run.json`.
    pub(crate) fn final_paths(&self) -> Vec<PathBuf> {
        let tmp = self.tmp();
        let mut v: Vec<PathBuf> = self
            .written
            .iter()
            .map(|w| self.out_dir.join(w.strip_prefix(tmp).unwrap_or(w)))
            .collect();
        v.push(self.out_dir.join("osipy_run.json"));
        v
    }

    /// Writes `osipy_run.json`, then moves every file into place.
    pub(crate) fn commit(mut self, summary: &RunSummary) -> Result<()> {
        let run = self.tmp().join("osipy_run.json");
        write_json(
            &run,
            &serde_json::to_value(summary).map_err(|e| OsipyError::Validation(e.to_string()))?,
        )?;
        self.written.push(run);
        let Some(tmp) = self.tmp.clone() else {
            return Ok(());
        };
        // Set the previous result aside, move the new one in, then drop the
        // previous one; if the move fails, put the previous one back.
        let old = self
            .parent
            .join(format!(".{}.{OLD}{}", self.name, std::process::id()));
        let had_old = self.out_dir.exists();
        fault_point("commit");
        if had_old {
            std::fs::rename(&self.out_dir, &old)
                .map_err(|e| io_error(&self.out_dir, "could not set the previous output aside", e))?;
        }
        fault_point("swap");
        if let Err(e) = std::fs::rename(&tmp, &self.out_dir) {
            if had_old {
                let _ = std::fs::rename(&old, &self.out_dir);
            }
            return Err(io_error(
                &self.out_dir,
                "could not move the finished output into place",
                e,
            ));
        }
        self.tmp = None;
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }
}

/// Voxels per quality status inside the mask.
pub(crate) fn quality_counts(quality: &Array3<QualityCode>, mask: &[bool]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (q, m) in quality.iter().zip(mask) {
        if *m {
            *counts.entry(q.name().to_string()).or_insert(0) += 1;
        }
    }
    counts
}
