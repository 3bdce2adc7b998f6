//! # osipy-pipeline
//!
//! From files to maps for every modality: the table of modalities
//! ([`MODALITIES`], the one place that lists them), the run [`config`]
//! (TOML, `[pipeline]` typed by the modality), [`run_analysis`] (the shared
//! run machinery: device, progress, timed stages, staged outputs, summary),
//! the built-in registry assembled from every crate's `register`
//! ([`builtin_registry`]) and DRO comparison statistics ([`dro`]).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod bids_app;
pub mod config;
pub mod modality;
mod output;
pub mod simulate;

pub use config::{Config, OutputFormat};
pub use modality::{Modality, MODALITIES};
pub use osipy_io::dro;
pub use osipy_io::Progress;

use osipy_backend::Device;
use osipy_core::{OsipyError, Registry, Result};
use osipy_io::{Inputs, RunContext};
use output::{quality_counts, Staging};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every method built into this version, from each crate's `register`.
pub fn builtin_registry() -> Result<Registry> {
    let mut reg = Registry::new();
    osipy_fitting::register(&mut reg)?;
    osipy_aif::register(&mut reg)?;
    osipy_dce::register(&mut reg)?;
    osipy_ivim::register(&mut reg)?;
    osipy_dsc::register(&mut reg)?;
    osipy_asl::register(&mut reg)?;
    osipy_microstructure::register(&mut reg)?;
    Ok(reg)
}

/// Redraws `report.html` and `figures/` of the finished output folder
/// `out_dir` from what it holds (`osipy report`), on `OSIPY_NUM_THREADS`
/// threads or all cores; returns the files written.
pub fn write_report(out_dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let threads = osipy_backend::threads_from_env()?.unwrap_or_else(osipy_backend::available_cores);
    osipy_report::write(out_dir, &osipy_report::ReportData::from_dir(out_dir)?, threads)
}

/// Where to read, where to write, and how to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Folder the `[data]` paths are relative to (and auto-discovery searches).
    pub data_dir: PathBuf,
    /// Output folder (created if missing; an existing non-empty one is an
    /// error unless `overwrite`).
    pub out_dir: PathBuf,
    /// Replace an existing output folder, as a whole.
    pub overwrite: bool,
    /// Worker threads (overrides `backend.threads`).
    pub threads: Option<usize>,
    /// Compute device (overrides `backend.device`).
    pub device: Option<osipy_backend::DeviceChoice>,
    /// Fit progress, for a progress bar polled from another thread.
    pub progress: Option<Progress>,
    /// Skip `report.html` and `figures/` whatever `output.report` says.
    pub no_report: bool,
}

/// What a run did, also written as `osipy_run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Software name and version.
    pub software: String,
    /// Resolved input files (and inline values) by role.
    pub inputs: BTreeMap<String, String>,
    /// Grid (x, y, z) and number of volumes.
    pub shape: [usize; 4],
    /// Seconds spent per stage, in order.
    pub timings: Vec<(String, f64)>,
    /// Voxels in the grid.
    pub voxels_total: usize,
    /// Voxels analysed (in the mask).
    pub voxels_in_mask: usize,
    /// Voxels per quality status (in the mask).
    pub quality_counts: BTreeMap<String, usize>,
    /// Files written (final paths).
    pub outputs: Vec<PathBuf>,
    /// The curves of the report (AIF, representative voxels), kept so that
    /// `osipy report` can redraw them.
    pub plots: Vec<osipy_io::Plot>,
    /// The configuration that ran.
    pub config: Config,
}

/// Runs the analysis `config` describes on the files in `opts.data_dir`,
/// writing into `opts.out_dir`: resolve inputs, run the modality, stage the
/// outputs and move them into place when all are complete.
pub fn run_analysis(config: &Config, opts: &RunOptions) -> Result<RunSummary> {
    run_analysis_with(config, opts, &builtin_registry()?)
}

/// A run that fitted no voxel of the mask is an error naming the reasons;
/// one with more than `warn_fraction` of its voxels invalid returns the
/// warning to log (`logging.warn_invalid_fraction`).
fn check_fitted(
    counts: &std::collections::BTreeMap<String, usize>,
    warn_fraction: f64,
) -> Result<Option<String>> {
    let is_valid = |name: &str| {
        osipy_core::QualityCode::ALL
            .iter()
            .any(|q| q.name() == name && q.is_valid())
    };
    let total: usize = counts.values().sum();
    let valid: usize = counts
        .iter()
        .filter(|(name, _)| is_valid(name))
        .map(|(_, n)| n)
        .sum();
    let reasons = || {
        counts
            .iter()
            .filter(|(name, _)| !is_valid(name))
            .map(|(name, n)| format!("{n} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if total == 0 {
        return Err(OsipyError::data(
            "analysis mask",
            "no voxel set",
            "a mask with at least one voxel inside the series",
        ));
    }
    if valid == 0 {
        return Err(OsipyError::Fitting(format!(
            "no voxel of the {total} in the mask could be fitted ({}); nothing was written",
            reasons()
        )));
    }
    Ok(((total - valid) as f64 > warn_fraction * total as f64).then(|| {
        format!(
            "{} of {total} voxels in the mask are invalid ({})",
            total - valid,
            reasons()
        )
    }))
}

/// The device in words, with the GPU's name when it is one.
fn describe_device(device: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Some(ordinal) = device.cuda_ordinal() {
        if let Ok(gpu) = osipy_backend::cuda::describe(ordinal) {
            return format!("{}: {gpu}", device.describe());
        }
    }
    device.describe()
}

/// [`run_analysis`] with the methods of `registry` (the built-in ones plus
/// entries of your own, e.g. a DCE model registered from outside osipy).
pub fn run_analysis_with(config: &Config, opts: &RunOptions, registry: &Registry) -> Result<RunSummary> {
    config.validate_with(registry)?;
    let m = config.modality_def()?;
    // The environment is read only when neither the caller nor the config
    // sets the thread count (a bad OSIPY_NUM_THREADS must not block --threads).
    let threads = match opts
        .threads
        .or((config.backend.threads > 0).then_some(config.backend.threads))
    {
        Some(t) => Some(t),
        None => osipy_backend::threads_from_env()?,
    };
    let choice = opts.device.unwrap_or(config.backend.device.into());
    let (device, fallback) = Device::select(choice, threads)?;
    if let Some(why) = fallback {
        tracing::info!("device auto: running on the CPU, as no GPU can be used: {why}");
    }
    tracing::info!("device: {}", describe_device(&device));
    let mut ctx = RunContext::new(device, opts.progress.clone().unwrap_or_default());
    ctx.report_voxels = config.output.report_voxels.clone();
    // BIDS derivatives: the output folder is the dataset root, this run's
    // folder the participant's datatype folder in it.
    let bids_out = match config.output.format {
        OutputFormat::Nifti => None,
        OutputFormat::Bids => Some(osipy_io::participant(&config.data)?.ok_or_else(|| {
            OsipyError::MissingParameter {
                name: "data.format = \"bids\"".into(),
                needed_for: "output.format = \"bids\"".into(),
                hint: "a BIDS-derivatives output needs a BIDS input: set data.format = \"bids\" and data.subject".into(),
            }
        })?),
    };
    let run_dir = match &bids_out {
        Some(p) => opts.out_dir.join(p.dir()).join(m.bids_datatype()),
        None => opts.out_dir.clone(),
    };
    // The output folder is checked (and its staging folder made) first.
    let mut stage = Staging::new(&run_dir, opts.overwrite)?;
    if !config.output.compress {
        stage.uncompressed();
    }
    let inputs = Inputs::resolve(&opts.data_dir, m.inputs(), &config.data)?;
    output::fault_point("read");
    let mut out = m.run(&config.pipeline, &inputs, &mut ctx, registry)?;
    output::fault_point("fit");
    let quality_counts = quality_counts(&out.maps.quality, &out.mask);
    if let Some(w) = check_fitted(&quality_counts, config.logging.warn_invalid_fraction)? {
        tracing::warn!("{w}");
    }

    stage.maps(&out.maps, &out.geometry, config, ctx.device.threads())?;
    output::fault_point("write");
    for (name, volume) in &out.volumes {
        stage.volume(name, volume, &out.geometry)?;
    }
    if let Some(p) = &bids_out {
        let sources: Vec<String> = m
            .inputs()
            .iter()
            .chain(std::iter::once(&osipy_io::MASK))
            .filter_map(|s| inputs.path(s.role))
            .map(|f| osipy_io::bids::uri(&opts.data_dir, f))
            .collect();
        stage.bids_names(p, m.id(), &sources)?;
    }
    ctx.lap("write");
    // The report draws the maps alone: their standard errors and the extra
    // volumes are let go once written (a large run's memory otherwise peaks
    // while the report is drawn).
    for map in &mut out.maps.maps {
        map.std_error = None;
    }
    out.volumes = Vec::new();
    let mut summary = RunSummary {
        software: format!("osipy {}", env!("CARGO_PKG_VERSION")),
        inputs: out.inputs,
        shape: out.shape,
        timings: ctx.stages().to_vec(),
        voxels_total: out.mask.len(),
        voxels_in_mask: out.mask.iter().filter(|m| **m).count(),
        quality_counts,
        outputs: Vec::new(),
        plots: out.plots,
        config: config.clone(),
    };
    if config.output.report && !opts.no_report {
        for name in config.output.report_ranges.keys() {
            if out.maps.map(name).is_none() {
                tracing::warn!(
                    "output.report_ranges names {name}, which this run has no map of (maps: {})",
                    out.maps
                        .maps
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        stage.report(&summary, &out.maps, ctx.device.threads())?;
        output::fault_point("report");
        ctx.lap("report");
        summary.timings = ctx.stages().to_vec();
    }
    summary.outputs = stage.final_paths();
    stage.commit(&summary)?;
    if bids_out.is_some() {
        let nonstandard: Vec<&str> = MODALITIES
            .iter()
            .map(|m| m.id())
            .filter(|id| !osipy_io::bids::RAW_SUFFIXES.contains(id))
            .collect();
        osipy_io::bids::write_dataset_files(&opts.out_dir, Some(&opts.data_dir), &nonstandard)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_voxels_warn_above_the_configured_fraction_and_none_fitted_is_an_error() {
        let counts = |pairs: &[(&str, usize)]| -> std::collections::BTreeMap<String, usize> {
            pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let some = counts(&[("converged", 70), ("max_iterations", 20), ("invalid_signal", 10)]);
        // 30 % invalid: silent at 0.5, a warning with the counts at 0.2.
        assert_eq!(check_fitted(&some, 0.5).unwrap(), None);
        let w = check_fitted(&some, 0.2).unwrap().unwrap();
        assert!(
            w.contains("30 of 100") && w.contains("20 max_iterations") && w.contains("10 invalid_signal"),
            "{w}"
        );
        let none = counts(&[("model_failure", 4)]);
        let e = check_fitted(&none, 0.5).unwrap_err().to_string();
        assert!(
            e.contains("no voxel of the 4") && e.contains("4 model_failure"),
            "{e}"
        );
    }
}
