//! The DCE pipeline: files in, validated maps out.
//!
//! Stages: read the dynamic series (and mask) -> pre-contrast T1 (T1 map, VFA
//! fit or assumed value) -> signal to concentration -> AIF (population,
//! detected or from a file) -> model fit -> outputs. Outputs are written into
//! a temporary folder inside the output directory and moved into place only
//! when every file is complete; on any error the temporary folder is removed,
//! so nothing partial is left behind.

use crate::config::Config;
use crate::output::{quality_counts, Staging};
use ndarray::{Array2, Array3, Array4};
use osipy_aif::{detect_aif, Aif, Compartment, DetectOptions};
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_dce::{
    fit_model, look_locker_t1, signal_to_concentration, vfa_t1, ConcentrationMethod, DceFitOptions,
    SpgrParams, VfaMethod, VfaParams,
};
use osipy_fitting::{FitOptions, LmSettings};
use osipy_io::{read_3d, read_4d, write_4d};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// Where to read, where to write, and how to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Folder the `[data]` paths are relative to (and auto-discovery searches).
    pub data_dir: PathBuf,
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// Worker threads (overrides `backend.threads`).
    pub threads: Option<usize>,
    /// Voxels fitted so far, for a progress bar.
    pub progress: Option<Arc<AtomicUsize>>,
    /// Total voxels to fit, set by the pipeline before fitting starts.
    pub progress_total: Option<Arc<AtomicUsize>>,
}

/// What a run did, also written as `osipy_run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Software name and version.
    pub software: String,
    /// Resolved input files.
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Grid (x, y, z) and number of frames.
    pub shape: [usize; 4],
    /// Seconds spent per stage, in order.
    pub timings: Vec<(String, f64)>,
    /// Voxels in the grid and in the mask.
    pub voxels_total: usize,
    /// Voxels analysed (in the mask).
    pub voxels_in_mask: usize,
    /// Voxels per quality status (in the mask).
    pub quality_counts: std::collections::BTreeMap<String, usize>,
    /// Files written (final paths).
    pub outputs: Vec<PathBuf>,
    /// The configuration that ran.
    pub config: Config,
}

/// The resolved input files.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// 4D dynamic series.
    pub dynamic: PathBuf,
    /// VFA series.
    pub vfa: Option<PathBuf>,
    /// Look-Locker series.
    pub look_locker: Option<PathBuf>,
    /// T1 map (s).
    pub t1_map: Option<PathBuf>,
    /// Mask.
    pub mask: Option<PathBuf>,
    /// AIF text file.
    pub aif_file: Option<PathBuf>,
    /// Frame times text file.
    pub time_file: Option<PathBuf>,
}

pub(crate) fn is_nifti(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// The one file in `dir` whose lower-cased name satisfies `pred`, if any;
/// two or more candidates are an error naming them and `data.<role>`.
pub(crate) fn find_file(dir: &Path, role: &str, pred: &dyn Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let mut hits: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| OsipyError::Io {
            path: dir.into(),
            message: "cannot list the data folder".into(),
            source: Some(e),
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| pred(&n.to_lowercase()))
        .collect();
    hits.sort();
    match hits.len() {
        0 => Ok(None),
        1 => Ok(Some(dir.join(&hits[0]))),
        _ => Err(OsipyError::Validation(format!(
            "several files in {} could be the {role}: {}; name it explicitly as data.{role}",
            dir.display(),
            hits.join(", ")
        ))),
    }
}

/// A `[data]` path as given: absolute, or relative to `dir`.
pub(crate) fn resolve_path(dir: &Path, p: &Option<String>) -> Option<PathBuf> {
    p.as_ref().map(|p| {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            dir.join(p)
        }
    })
}

/// Resolves `[data]` paths; unset ones are discovered in `dir`:
/// * `dynamic`: a NIfTI whose name contains `dce` or `dynamic` (and not `vfa`,
///   `mask` or `t1`),
/// * `vfa`: a NIfTI whose name contains `vfa`,
/// * `t1_map`: a NIfTI whose name contains `t1map` or `t1_map`,
/// * `mask`: a NIfTI whose name contains `mask`,
/// * `aif_file`: `aif.csv`, `aif.tsv` or `aif.txt`,
/// * `time_file`: `times.txt` or `time.txt`.
///
/// Two candidates for one role is an error listing both.
pub fn resolve_inputs(config: &Config, dir: &Path) -> Result<Inputs> {
    let d = &config.data;
    let pick =
        |explicit: &Option<String>, role: &str, pred: &dyn Fn(&str) -> bool| -> Result<Option<PathBuf>> {
            match resolve_path(dir, explicit) {
                Some(p) => Ok(Some(p)),
                None => find_file(dir, role, pred),
            }
        };
    let dynamic = pick(&d.dynamic, "dynamic", &|n| {
        is_nifti(n)
            && (n.contains("dce") || n.contains("dynamic"))
            && !n.contains("vfa")
            && !n.contains("mask")
            && !n.contains("t1")
    })?
    .ok_or_else(|| OsipyError::MissingParameter {
        name: "data.dynamic".into(),
        needed_for: "every DCE run".into(),
        hint: format!(
            "no 4D NIfTI with 'dce' or 'dynamic' in its name found in {}; set data.dynamic",
            dir.display()
        ),
    })?;
    Ok(Inputs {
        dynamic,
        vfa: pick(&d.vfa, "vfa", &|n| is_nifti(n) && n.contains("vfa"))?,
        look_locker: pick(&d.look_locker, "look_locker", &|n| {
            is_nifti(n) && (n.contains("look_locker") || n.contains("lookl"))
        })?,
        t1_map: pick(&d.t1_map, "t1_map", &|n| {
            is_nifti(n) && (n.contains("t1map") || n.contains("t1_map"))
        })?,
        mask: pick(&d.mask, "mask", &|n| is_nifti(n) && n.contains("mask"))?,
        aif_file: pick(&d.aif_file, "aif_file", &|n| {
            matches!(n, "aif.csv" | "aif.tsv" | "aif.txt")
        })?,
        time_file: pick(&d.time_file, "time_file", &|n| {
            matches!(n, "times.txt" | "time.txt")
        })?,
    })
}

/// Numbers in a text file (comma, tab or whitespace separated; lines that do
/// not parse, such as a header, are skipped only before the first number).
pub(crate) fn read_numbers(path: &Path, columns: usize) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| OsipyError::Io {
        path: path.into(),
        message: "cannot read".into(),
        source: Some(e),
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        let parsed: std::result::Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        match parsed {
            Ok(v) if v.len() == columns => rows.push(v),
            Ok(v) => {
                return Err(OsipyError::io(
                    path,
                    format!("line {} has {} values; expected {columns}", i + 1, v.len()),
                ));
            }
            Err(_) if rows.is_empty() => continue,
            Err(_) => {
                return Err(OsipyError::io(
                    path,
                    format!("line {} is not numeric: {line:?}", i + 1),
                ))
            }
        }
    }
    if rows.is_empty() {
        return Err(OsipyError::io(path, "no numeric rows found"));
    }
    Ok(rows)
}

pub(crate) fn check_spatial(what: &str, path: &Path, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(OsipyError::data(
            format!("spatial shape of the {what} {}", path.display()),
            format!("{got:?}"),
            format!("{want:?}, the dynamic series' grid"),
        ));
    }
    Ok(())
}

/// Runs a DCE analysis described by `config` on the files in `opts.data_dir`.
pub(crate) fn run_dce(config: &Config, opts: &RunOptions) -> Result<RunSummary> {
    let p = config.dce()?;
    let acq = &p.acquisition;
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    // Inputs.
    let inputs = resolve_inputs(config, &opts.data_dir)?;
    tracing::info!(dynamic = %inputs.dynamic.display(), "reading the dynamic series");
    let (dynamic, geometry, dt) = read_4d(&inputs.dynamic)?;
    let [nx, ny, nz, nt] = [
        dynamic.shape()[0],
        dynamic.shape()[1],
        dynamic.shape()[2],
        dynamic.shape()[3],
    ];
    let spatial = [nx, ny, nz];
    let n_vox = nx * ny * nz;
    let times: Vec<f64> = match &inputs.time_file {
        Some(f) => {
            let t: Vec<f64> = read_numbers(f, 1)?.into_iter().map(|r| r[0]).collect();
            if t.len() != nt {
                return Err(OsipyError::data(
                    format!("frame times in {}", f.display()),
                    t.len().to_string(),
                    format!("{nt}, the volumes of the dynamic series"),
                ));
            }
            t
        }
        None => {
            let dt = dt.ok_or_else(|| OsipyError::MissingParameter {
                name: "data.time_file".into(),
                needed_for: "frame times".into(),
                hint: format!(
                    "{} has no time step in pixdim[4]; give a file of frame times in seconds",
                    inputs.dynamic.display()
                ),
            })?;
            (0..nt).map(|i| i as f64 * dt).collect()
        }
    };
    osipy_core::check_increasing("frame times (s)", &times)?;
    let mask: Array3<bool> = match &inputs.mask {
        Some(m) => {
            let (mv, _) = read_3d(m)?;
            check_spatial("mask", m, mv.shape(), &spatial)?;
            mv.mapv(|v| v.is_finite() && v != 0.0)
        }
        None => Array3::from_elem((nx, ny, nz), true),
    };
    let flat_mask: Vec<bool> = mask.iter().copied().collect();
    let n_mask = flat_mask.iter().filter(|m| **m).count();
    lap("read", &mut timings);

    let signal = dynamic
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n_vox, nt))
        .map_err(|e| OsipyError::data("dynamic series", e.to_string(), "a 4D array"))?;
    let device = Device::cpu(
        opts.threads
            .or((config.backend.threads > 0).then_some(config.backend.threads))
            .or(osipy_backend::threads_from_env()?),
    );

    // Per-voxel reasons found before fitting (T1, conversion).
    let mut pre: Vec<Option<QualityCode>> = vec![None; n_vox];
    let mut t1_flat: Option<Vec<f64>> = None;
    let conc: Array2<f64> = if p.concentration == "none" {
        signal
    } else {
        let tr = acq.tr.ok_or_else(|| {
            missing(
                "pipeline.acquisition.tr",
                "signal-to-concentration",
                "repetition time in seconds, e.g. 0.005",
            )
        })?;
        let flip = acq.flip_angle.ok_or_else(|| {
            missing(
                "pipeline.acquisition.flip_angle",
                "signal-to-concentration",
                "flip angle of the dynamic series in degrees",
            )
        })?;
        // Pre-contrast T1 (s) per voxel.
        let t1: Vec<f64> = if let Some(f) = &inputs.t1_map {
            let (t1, _) = read_3d(f)?;
            check_spatial("T1 map", f, t1.shape(), &spatial)?;
            let mut pos: Vec<f64> = t1.iter().copied().filter(|v| *v > 0.0 && v.is_finite()).collect();
            pos.sort_by(|a, b| a.total_cmp(b));
            if let Some(m) = pos.get(pos.len() / 2) {
                if *m > 20.0 {
                    return Err(OsipyError::Metadata {
                        field: format!("T1 map {}", f.display()),
                        found: format!("median {m}"),
                        expected: "T1 in seconds (values above 20 look like milliseconds: divide by 1000)"
                            .into(),
                    });
                }
            }
            t1.iter().copied().collect()
        } else if p.t1_mapping_method == "look_locker" {
            let f = inputs.look_locker.as_ref().ok_or_else(|| {
                missing(
                    "data.look_locker",
                    "t1_mapping_method = \"look_locker\"",
                    "a 4D series with one volume per inversion time",
                )
            })?;
            let ti = acq.inversion_times.clone().ok_or_else(|| {
                missing(
                    "pipeline.acquisition.inversion_times",
                    "Look-Locker T1 mapping",
                    "one inversion time in seconds per volume",
                )
            })?;
            let (ll, _, _) = read_4d(f)?;
            check_spatial("Look-Locker series", f, &ll.shape()[..3], &spatial)?;
            if ll.shape()[3] != ti.len() {
                return Err(OsipyError::data(
                    format!("number of volumes in the Look-Locker series {}", f.display()),
                    ll.shape()[3].to_string(),
                    format!(
                        "{} (one per inversion time in pipeline.acquisition.inversion_times)",
                        ti.len()
                    ),
                ));
            }
            let flat = ll
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((n_vox, ti.len()))
                .map_err(|e| OsipyError::data("Look-Locker series", e.to_string(), "a 4D array"))?;
            let fit = look_locker_t1(flat.view(), &ti, Some(&flat_mask), &device)?;
            for v in 0..n_vox {
                if flat_mask[v] && !fit.quality[v].is_valid() {
                    pre[v] = Some(fit.quality[v]);
                }
            }
            fit.t1
        } else if let Some(f) = &inputs.vfa {
            let angles = acq.flip_angles.clone().ok_or_else(|| {
                missing(
                    "pipeline.acquisition.flip_angles",
                    "VFA T1 mapping",
                    "one flip angle in degrees per VFA volume",
                )
            })?;
            let (vfa, _, _) = read_4d(f)?;
            check_spatial("VFA series", f, &vfa.shape()[..3], &spatial)?;
            if vfa.shape()[3] != angles.len() {
                return Err(OsipyError::data(
                    format!("number of volumes in the VFA series {}", f.display()),
                    vfa.shape()[3].to_string(),
                    format!(
                        "{} (one per flip angle in pipeline.acquisition.flip_angles {:?})",
                        angles.len(),
                        angles
                    ),
                ));
            }
            let flat = vfa
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((n_vox, angles.len()))
                .map_err(|e| OsipyError::data("VFA series", e.to_string(), "a 4D array"))?;
            let fit = vfa_t1(
                flat.view(),
                &VfaParams {
                    tr,
                    flip_angles: angles,
                },
                None,
                VfaMethod::NonLinear,
                Some(&flat_mask),
                &device,
            )?;
            for v in 0..n_vox {
                if flat_mask[v] && !fit.quality[v].is_valid() {
                    pre[v] = Some(fit.quality[v]);
                }
            }
            fit.t1
        } else if let Some(t1) = acq.t1_assumed {
            vec![t1; n_vox]
        } else {
            return Err(OsipyError::MissingParameter {
                name: "pre-contrast T1".into(),
                needed_for: "signal-to-concentration".into(),
                hint: "give data.t1_map (s), data.vfa with pipeline.acquisition.flip_angles, or pipeline.acquisition.t1_assumed (s)".into(),
            });
        };
        lap("t1", &mut timings);
        if acq.baseline_frames == 0 || acq.baseline_frames >= nt {
            return Err(OsipyError::Metadata {
                field: "pipeline.acquisition.baseline_frames".into(),
                found: acq.baseline_frames.to_string(),
                expected: format!("between 1 and {} (the series has {nt} frames)", nt - 1),
            });
        }
        let r10: Vec<f64> = t1
            .iter()
            .map(|t| if *t > 0.0 { 1.0 / t } else { f64::NAN })
            .collect();
        let sp = SpgrParams {
            tr,
            flip_angle: flip,
            relaxivity: acq.relaxivity,
            baseline: 0..acq.baseline_frames,
        };
        let method = ConcentrationMethod::from_name(&p.concentration)?;
        let (c, q) = signal_to_concentration(signal.view(), &r10, &sp, method)?;
        for v in 0..n_vox {
            if flat_mask[v] && pre[v].is_none() && !q[v].is_valid() {
                pre[v] = Some(if t1[v].is_nan() || t1[v] <= 0.0 {
                    QualityCode::InvalidSignal
                } else {
                    q[v]
                });
            }
        }
        t1_flat = Some(t1);
        c
    };
    let conc4: Array4<f64> = conc
        .clone()
        .into_shape_with_order((nx, ny, nz, nt))
        .map_err(|e| OsipyError::data("concentration", e.to_string(), "a 4D array"))?;
    lap("concentration", &mut timings);

    // AIF (plasma, mM, at the frame times).
    let aif: Vec<f64> = match p.aif_source.as_str() {
        "population" => {
            let delay = p
                .aif_delay
                .unwrap_or_else(|| times[acq.baseline_frames.min(nt - 1)] - times[0]);
            Aif::population(&p.population_aif)?
                .shift(times[0] + delay)
                .plasma(&times, p.hematocrit)?
        }
        "detect" => {
            let d = detect_aif(conc4.view(), &times, Some(mask.view()), &DetectOptions::default())?;
            tracing::info!(voxels = ?d.voxels.iter().map(|v| v.index).collect::<Vec<_>>(), "AIF detected");
            Aif::measured(&times, &d.curve, Compartment::Blood)?.plasma(&times, p.hematocrit)?
        }
        _ => {
            let f = inputs.aif_file.as_ref().ok_or_else(|| {
                missing(
                    "data.aif_file",
                    "aif_source = \"manual\"",
                    "columns time (s) and plasma concentration (mM)",
                )
            })?;
            let rows = read_numbers(f, 2)?;
            let (t, c): (Vec<f64>, Vec<f64>) = rows.into_iter().map(|r| (r[0], r[1])).unzip();
            Aif::measured(&t, &c, Compartment::Plasma)?.sample(&times)
        }
    };
    lap("aif", &mut timings);

    // Fit.
    let fit_mask: Vec<bool> = (0..n_vox).map(|v| flat_mask[v] && pre[v].is_none()).collect();
    let fit_mask3 = Array3::from_shape_vec((nx, ny, nz), fit_mask.clone())
        .map_err(|e| OsipyError::data("mask", e.to_string(), "the grid"))?;
    let f = &p.fitting;
    let fit_opts = DceFitOptions {
        fit: FitOptions {
            lm: LmSettings {
                max_iterations: f.max_iterations,
                ftol: f.tolerance,
                xtol: f.tolerance,
                ..LmSettings::default()
            },
            r2_threshold: Some(f.r2_threshold),
            progress: opts.progress.clone(),
            ..FitOptions::default()
        },
        fit_delay: f.fit_delay,
        bounds: f
            .bounds
            .iter()
            .map(|(k, [lo, hi])| (k.clone(), *lo, *hi))
            .collect(),
        initial_guess: f.initial_guess.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    };
    if let Some(total) = &opts.progress_total {
        total.store(n_vox, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!(model = %p.model, voxels = fit_mask.iter().filter(|m| **m).count(), device = %device.describe(), "fitting");
    let mut fit = fit_model(
        &p.model,
        conc4.view(),
        &aif,
        &times,
        Some(fit_mask3.view()),
        &fit_opts,
        &device,
    )?;
    // Voxels excluded before fitting carry their own reason.
    let reason = |v: usize| pre[v];
    let grid_index = |v: usize| (v / (ny * nz), (v / nz) % ny, v % nz);
    for v in (0..n_vox).filter(|&v| reason(v).is_some()) {
        let (x, y, z) = grid_index(v);
        let q = reason(v).unwrap_or(QualityCode::NotFitted);
        fit.quality[[x, y, z]] = q;
        for m in &mut fit.maps {
            m.quality[[x, y, z]] = q;
        }
    }
    lap("fit", &mut timings);

    // Outputs: staged, moved into place when complete.
    let mut stage = Staging::new(&opts.out_dir)?;
    stage.maps(&fit.maps, &fit.r_squared, &fit.quality, &geometry, config)?;
    if p.save_intermediate {
        if let Some(t1) = &t1_flat {
            let t1 = Array3::from_shape_vec((nx, ny, nz), t1.clone())
                .map_err(|e| OsipyError::data("T1", e.to_string(), "the grid"))?;
            stage.map("T1.nii.gz", &t1, &geometry)?;
            stage.map("R1.nii.gz", &t1.mapv(|t| 1.0 / t), &geometry)?;
        }
        let dt = times.get(1).map_or(1.0, |t1| t1 - times[0]);
        write_4d(stage.dir().join("concentration.nii.gz"), &conc4, &geometry, dt)?;
        stage.add("concentration.nii.gz");
    }
    lap("write", &mut timings);

    let mut inputs_map = std::collections::BTreeMap::new();
    inputs_map.insert("dynamic".to_string(), inputs.dynamic.display().to_string());
    for (k, v) in [
        ("vfa", &inputs.vfa),
        ("look_locker", &inputs.look_locker),
        ("t1_map", &inputs.t1_map),
        ("mask", &inputs.mask),
        ("aif_file", &inputs.aif_file),
        ("time_file", &inputs.time_file),
    ] {
        if let Some(v) = v {
            inputs_map.insert(k.to_string(), v.display().to_string());
        }
    }
    let summary = RunSummary {
        software: format!("osipy {}", env!("CARGO_PKG_VERSION")),
        inputs: inputs_map,
        shape: [nx, ny, nz, nt],
        timings,
        voxels_total: n_vox,
        voxels_in_mask: n_mask,
        quality_counts: quality_counts(&fit.quality, &flat_mask),
        outputs: stage.final_paths(),
        config: config.clone(),
    };
    stage.commit(&summary)?;
    Ok(summary)
}

pub(crate) fn missing(name: &str, needed_for: &str, hint: &str) -> OsipyError {
    OsipyError::MissingParameter {
        name: name.into(),
        needed_for: needed_for.into(),
        hint: hint.into(),
    }
}
