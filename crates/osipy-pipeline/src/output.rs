//! Staged outputs: every file of a run is written into a temporary folder
//! inside the output directory and moved into place only when all are
//! complete; on any error (or drop) the temporary folder is removed.

use crate::config::Config;
use crate::RunSummary;
use ndarray::Array3;
use osipy_core::{MapSet, OsipyError, QualityCode, Result};
use osipy_io::{write_4d, write_json, write_map, write_mask, write_parameter_map, Geometry, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run's outputs being written.
pub(crate) struct Staging {
    out_dir: PathBuf,
    tmp: Option<PathBuf>,
    written: Vec<PathBuf>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl Staging {
    /// Creates `out_dir` (if needed) and a fresh temporary folder in it.
    pub(crate) fn new(out_dir: &Path) -> Result<Staging> {
        std::fs::create_dir_all(out_dir).map_err(|e| OsipyError::Io {
            path: out_dir.into(),
            message: "cannot create the output folder".into(),
            source: Some(e),
        })?;
        let tmp = out_dir.join(format!(".osipy-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| OsipyError::Io {
            path: tmp.clone(),
            message: "cannot create a temporary output folder".into(),
            source: Some(e),
        })?;
        Ok(Staging {
            out_dir: out_dir.into(),
            tmp: Some(tmp),
            written: Vec::new(),
        })
    }

    fn tmp(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.out_dir)
    }

    /// Writes parameter maps (with `_se` maps and sidecars carrying the
    /// config), `r_squared.nii.gz` and `quality_mask.nii.gz`.
    pub(crate) fn maps(&mut self, set: &MapSet, geometry: &Geometry, config: &Config) -> Result<()> {
        let config = serde_json::to_value(config).map_err(|e| OsipyError::Validation(e.to_string()))?;
        for map in &set.maps {
            let mut map = map.clone();
            map.provenance = map.provenance.with_setting("config", config.clone());
            let files = write_parameter_map(self.tmp(), &map, geometry)?;
            self.written.extend(files);
        }
        self.volume("r_squared.nii.gz", &Volume::Map(set.r_squared.clone()), geometry)?;
        let p = self.tmp().join("quality_mask.nii.gz");
        write_mask(&p, &set.quality.mapv(|q| q.code()), geometry)?;
        self.written.push(p);
        Ok(())
    }

    /// Writes one more volume (a 3D map or a 4D series).
    pub(crate) fn volume(&mut self, name: &str, volume: &Volume, geometry: &Geometry) -> Result<()> {
        let p = self.tmp().join(name);
        match volume {
            Volume::Map(v) => write_map(&p, v, geometry)?,
            Volume::Series(v, dt) => write_4d(&p, v, geometry, *dt)?,
        }
        self.written.push(p);
        Ok(())
    }

    /// Final paths of everything staged, plus `osipy_run.json`.
    pub(crate) fn final_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .written
            .iter()
            .map(|w| self.out_dir.join(w.file_name().unwrap_or_default()))
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
        for w in &self.written {
            let dest = self.out_dir.join(w.file_name().unwrap_or_default());
            std::fs::rename(w, &dest).map_err(|e| OsipyError::Io {
                path: dest.clone(),
                message: "could not move the finished output into place".into(),
                source: Some(e),
            })?;
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
