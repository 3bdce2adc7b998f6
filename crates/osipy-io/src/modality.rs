//! The modality seam: everything one modality owns, behind one trait.
//!
//! A modality crate implements [`ModalityDef`] once: its `[pipeline]` config
//! section (a serde struct with defaults, an example with every optional key
//! set, and one comment per key, from which `dump-defaults` generates the
//! commented template), validation against the registry, its input roles, the
//! analysis itself (reading through [`Inputs`], returning [`Outputs`]), its
//! demo case and its phantom checks for `xtask dro-validate`. `osipy-pipeline`
//! lists the modalities in one table and drives config parsing, runs,
//! `dump-defaults`, `validate`, `list`, `demo` and xtask from it.
//!
//! The shared run machinery a modality gets is the [`RunContext`]: the
//! device, a progress counter, and timed stages.

use crate::curves::Plot;
use crate::dro::DroRow;
use crate::inputs::{InputSpec, Inputs};
use crate::Geometry;
use ndarray::{Array3, Array4};
use osipy_backend::Device;
use osipy_core::{MapSet, OsipyError, Registry, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Voxels done / voxels to do, polled by a progress bar on another thread.
/// Every modality reports through it the same way: set the total, then hand
/// [`Progress::counter`] to the fitting engine, which adds finished voxels.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Progress {
    /// A fresh counter pair.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Starts a stage of `total` voxels (resets the done count).
    pub fn start(&self, total: usize) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// The counter the fitting engine adds finished voxels to.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.done.clone()
    }

    /// (done, total) now.
    pub fn get(&self) -> (usize, usize) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// The shared machinery of one run: device, progress and timed stages.
#[derive(Debug)]
pub struct RunContext {
    /// Where the numerics run.
    pub device: Device,
    /// Fit progress.
    pub progress: Progress,
    /// Voxels (x, y, z) the user wants curves of in the report
    /// (`output.report_voxels`), for [`crate::curves::voxel_curves`].
    pub report_voxels: Vec<[usize; 3]>,
    stages: Vec<(String, f64)>,
    clock: Instant,
}

impl RunContext {
    /// A context on `device` reporting to `progress`.
    pub fn new(device: Device, progress: Progress) -> RunContext {
        RunContext {
            device,
            progress,
            report_voxels: Vec::new(),
            stages: Vec::new(),
            clock: Instant::now(),
        }
    }

    /// Ends the current stage, recording its wall time under `name`.
    pub fn lap(&mut self, name: &str) {
        self.stages
            .push((name.to_string(), self.clock.elapsed().as_secs_f64()));
        self.clock = Instant::now();
    }

    /// Stage times (s), in order.
    pub fn stages(&self) -> &[(String, f64)] {
        &self.stages
    }
}

/// An extra output besides the parameter maps.
#[derive(Debug, Clone)]
pub enum Volume {
    /// A 3D map (written as float32).
    Map(Array3<f64>),
    /// A 4D series with its time step (s).
    Series(Array4<f64>, f64),
}

/// What an analysis produced, for the pipeline to write.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Parameter maps, R^2 and quality.
    pub maps: MapSet,
    /// Extra volumes by file name (e.g. `T1.nii.gz`).
    pub volumes: Vec<(String, Volume)>,
    /// Geometry of the primary series.
    pub geometry: Geometry,
    /// Grid and number of volumes of the primary series.
    pub shape: [usize; 4],
    /// The analysis mask, one flag per voxel.
    pub mask: Vec<bool>,
    /// Files read and inline values, by role.
    pub inputs: BTreeMap<String, String>,
    /// Curves for the run report (the AIF, representative voxels' measured
    /// and fitted curves; see [`crate::curves`]).
    pub plots: Vec<Plot>,
}

/// A file of a demo case.
#[derive(Debug, Clone)]
pub enum DemoFile {
    /// A 4D series with its time step (s).
    Series(Array4<f64>, f64),
    /// A u8 mask.
    Mask(Array3<u8>),
    /// A text file.
    Text(String),
}

impl DemoCase {
    /// Writes the case's files and its config (`osipy.toml`) into `dir`
    /// (created if missing), images on `geometry`; returns the config's path.
    pub fn write_files(&self, dir: &std::path::Path, geometry: &Geometry) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OsipyError::io(dir, format!("cannot create the folder: {e}")))?;
        let text = |path: &std::path::Path, t: &str| {
            crate::atomic_write(path, |tmp| std::fs::write(tmp, t).map_err(|e| e.to_string()))
        };
        for (name, file) in &self.files {
            let path = dir.join(name);
            match file {
                DemoFile::Series(v, dt) => crate::write_4d(&path, v, geometry, *dt)?,
                DemoFile::Mask(v) => crate::write_mask(&path, v, geometry)?,
                DemoFile::Text(t) => text(&path, t)?,
            }
        }
        let config = dir.join("osipy.toml");
        text(&config, &self.config)?;
        Ok(config)
    }

    /// [`DemoCase::write_files`] with each series written as a DICOM folder
    /// (classic MR files, named by the NIfTI's stem: `dce.nii.gz` becomes
    /// `dce/`) and the config naming the folders. `geometry` must be one a
    /// DICOM series can hold as osipy reads it (see
    /// [`crate::dicom::synthetic::SyntheticSeries::affine`]).
    pub fn write_dicom_files(
        &self,
        dir: &std::path::Path,
        geometry: &Geometry,
    ) -> Result<std::path::PathBuf> {
        let mut case = self.clone();
        let mut number = 0;
        case.files
            .retain(|(_, file)| !matches!(file, DemoFile::Series(..)));
        for (name, file) in &self.files {
            let DemoFile::Series(v, dt) = file else { continue };
            let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
            number += 1;
            let mut s = crate::dicom::synthetic::SyntheticSeries::new(v, geometry.affine);
            s.series_number = number;
            s.description = stem.to_string();
            s.frame_times = Some((0..v.dim().3).map(|t| t as f64 * dt).collect());
            s.write(&dir.join(stem))?;
            case.config = case
                .config
                .replace(&format!("\"{name}\""), &format!("\"{stem}\""));
        }
        case.write_files(dir, geometry)
    }

    /// [`DemoCase::write_files`] as a BIDS dataset at `root`: subject
    /// `subject`'s files in `sub-<subject>/<datatype>/` named
    /// `sub-<subject>_<name>`, a `dataset_description.json`, and the config
    /// (`osipy.toml` at the root) reading them with `data.format = "bids"`
    /// and writing a BIDS-derivatives dataset.
    pub fn write_bids_files(
        &self,
        root: &std::path::Path,
        geometry: &Geometry,
        datatype: &str,
        subject: &str,
    ) -> Result<std::path::PathBuf> {
        let rel = format!("sub-{subject}/{datatype}");
        let mut case = self.clone();
        case.files = Vec::new();
        for (name, file) in &self.files {
            let bids_name = format!("sub-{subject}_{name}");
            case.config = case
                .config
                .replace(&format!("\"{name}\""), &format!("\"{rel}/{bids_name}\""));
            case.files.push((format!("{rel}/{bids_name}"), file.clone()));
        }
        case.config = case.config.replace(
            "[data]\n",
            &format!("[data]\nformat = \"bids\"\nsubject = \"{subject}\"\n"),
        );
        case.config.push_str("\n[output]\nformat = \"bids\"\n");
        std::fs::create_dir_all(root.join(&rel))
            .map_err(|e| OsipyError::io(root, format!("cannot create the folder: {e}")))?;
        crate::atomic_write(&root.join("dataset_description.json"), |tmp| {
            std::fs::write(tmp, "{\"Name\": \"osipy demo\", \"BIDSVersion\": \"1.10.0\"}\n")
                .map_err(|e| e.to_string())
        })?;
        case.write_files(root, geometry)
    }
}

/// A synthetic case with known truth: files, a config, and the true maps.
#[derive(Debug, Clone)]
pub struct DemoCase {
    /// First line of the demo's report.
    pub title: String,
    /// What the data are (noise, AIF...), one line.
    pub about: String,
    /// Files to write into the data folder, by name.
    pub files: Vec<(String, DemoFile)>,
    /// The config (TOML text) written as `osipy.toml`.
    pub config: String,
    /// (map name, true values, decimals to print) per reported parameter.
    pub truth: Vec<(String, Array3<f64>, usize)>,
}

/// The static description of a modality: its id, name, units, input roles
/// and config comments.
#[derive(Debug, Clone, Copy)]
pub struct ModalityInfo {
    /// Config and command-line id (`dce`).
    pub id: &'static str,
    /// Human name (`DCE-MRI`).
    pub name: &'static str,
    /// The units of the section, in words, for the template's first line.
    pub units: &'static str,
    /// Input roles (`[data]` keys) besides the shared `mask`; the first is
    /// the primary series.
    pub inputs: &'static [InputSpec],
    /// Comment per key of the section, by dotted path below `[pipeline]`
    /// (`model`, `fitting.max_iterations`); one for every key (tested).
    /// `{table_id}` expands to the names registered in that table.
    pub config_docs: &'static [(&'static str, &'static str)],
    /// BIDS datatype folder of the inputs and maps (`perf`, `dwi`).
    pub bids_datatype: &'static str,
}

impl ModalityInfo {
    /// The description of modality `id` (`name`, section `units` in words,
    /// `inputs`, `config_docs`).
    pub const fn new(
        id: &'static str,
        name: &'static str,
        units: &'static str,
        inputs: &'static [InputSpec],
        config_docs: &'static [(&'static str, &'static str)],
    ) -> Self {
        ModalityInfo {
            id,
            name,
            units,
            inputs,
            config_docs,
            bids_datatype: "perf",
        }
    }

    /// The description with BIDS datatype `datatype` (default `perf`).
    pub const fn with_bids_datatype(mut self, datatype: &'static str) -> Self {
        self.bids_datatype = datatype;
        self
    }
}

/// Everything one modality owns. See the module doc.
pub trait ModalityDef: 'static {
    /// The `[pipeline]` section, `#[serde(deny_unknown_fields, default)]`.
    type Config: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + PartialEq;

    /// Id, name, units, inputs and config comments.
    const INFO: ModalityInfo;

    /// The section with every optional key set to an example value, shown
    /// commented out in the template.
    fn config_example() -> Self::Config;

    /// Checks names against the registry and values against their units.
    fn validate(config: &Self::Config, registry: &Registry) -> Result<()>;

    /// One phrase naming the main choice, for `osipy validate` (`model tofts`).
    fn describe(config: &Self::Config) -> String;

    /// Runs the analysis on `inputs`.
    fn run(
        config: &Self::Config,
        inputs: &Inputs,
        ctx: &mut RunContext,
        registry: &Registry,
    ) -> Result<Outputs>;

    /// The demo case of `osipy demo <ID>`.
    fn demo() -> Result<DemoCase>;

    /// Phantom checks for `xtask dro-validate` (in-memory, known truth).
    fn phantom_checks(registry: &Registry) -> Result<Vec<DroRow>>;

    /// The closed choices of the section (serde enums that are not extension
    /// points), by dotted key: `osipy list` shows them, and `{choices}` in a
    /// key's comment expands to them.
    fn choices() -> Vec<(&'static str, Vec<String>)> {
        Vec::new()
    }
}

/// A closed set of config values: a serde enum that is not an extension
/// point (`t1_mapping_method`, `logging.level`).
pub trait Choice: Serialize + Sized + 'static {
    /// Every value, in listing order.
    const ALL: &'static [Self];
}

/// The config names of `T`'s values, as serde writes them.
pub fn choice_names<T: Choice>() -> Vec<String> {
    T::ALL
        .iter()
        .filter_map(|v| serde_json::to_value(v).ok()?.as_str().map(str::to_string))
        .collect()
}

/// Checks a config value that must be positive and finite; `field` names
/// the key (with its unit), `example` a typical value.
pub fn check_positive(field: &str, value: f64, example: &str) -> Result<()> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(OsipyError::metadata(
            field,
            value,
            format!("a positive value, e.g. {example}"),
        ))
    }
}

/// Checks a flip angle in degrees: inside (0, 180).
pub fn check_flip_angle(field: &str, degrees: f64) -> Result<()> {
    if degrees > 0.0 && degrees < 180.0 {
        Ok(())
    } else {
        Err(OsipyError::metadata(
            format!("{field} (degrees)"),
            degrees,
            "a value in (0, 180) degrees",
        ))
    }
}

/// Checks an optional time in seconds: positive and below `max`; a larger
/// value gets the hint that it looks like milliseconds.
pub fn check_seconds(field: &str, value: Option<f64>, max: f64, example: &str) -> Result<()> {
    match value {
        Some(v) if !(v > 0.0 && v < max) => {
            let hint = if v >= max {
                " (it looks like milliseconds: give seconds)"
            } else {
                ""
            };
            Err(OsipyError::metadata(
                format!("{field} (s)"),
                v,
                format!("a positive value in seconds below {max}, e.g. {example}{hint}"),
            ))
        }
        _ => Ok(()),
    }
}
