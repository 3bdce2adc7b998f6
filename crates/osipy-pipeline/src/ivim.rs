//! The IVIM pipeline: a DWI series and its b-values to D, D*, f and S0 maps.

use crate::config::Config;
use crate::dce::{
    check_spatial, find_file as find, is_nifti, missing, read_numbers, resolve_path as resolve, RunOptions,
    RunSummary,
};
use crate::output::{quality_counts, Staging};
use ndarray::Array3;
use osipy_backend::Device;
use osipy_core::{OsipyError, ParameterMap, Provenance, QualityCode, Result, Unit};
use osipy_fitting::LmSettings;
use osipy_io::{read_3d, read_4d};
use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};
use std::path::Path;
use std::time::Instant;

/// b-values: `data.b_values`, else `data.b_values_file`, else the DWI's JSON
/// sidecar (`b_values` or `bvals` array), else a `.bval` / `bvals.txt` /
/// `bvalues.txt` file in the data folder.
fn b_values(config: &Config, dir: &Path, dwi: &Path) -> Result<(Vec<f64>, String)> {
    if let Some(b) = &config.data.b_values {
        return Ok((b.clone(), "data.b_values".into()));
    }
    let file = match resolve(dir, &config.data.b_values_file) {
        Some(f) => Some(f),
        None => {
            let name = dwi.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
            let sidecar = dwi.with_file_name(format!("{stem}.json"));
            if sidecar.is_file() {
                let text = std::fs::read_to_string(&sidecar).map_err(|e| OsipyError::Io {
                    path: sidecar.clone(),
                    message: "cannot read".into(),
                    source: Some(e),
                })?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| OsipyError::io(&sidecar, format!("not JSON: {e}")))?;
                if let Some(arr) = v
                    .get("b_values")
                    .or_else(|| v.get("bvals"))
                    .and_then(|a| a.as_array())
                {
                    let b: Option<Vec<f64>> = arr.iter().map(|x| x.as_f64()).collect();
                    let b = b.ok_or_else(|| OsipyError::io(&sidecar, "b-values must be numbers"))?;
                    return Ok((b, sidecar.display().to_string()));
                }
            }
            find(dir, "b_values_file", &|n| {
                n.ends_with(".bval") || n == "bvals.txt" || n == "bvalues.txt"
            })?
        }
    };
    let f = file.ok_or_else(|| {
        missing(
            "data.b_values",
            "IVIM fitting",
            "give data.b_values = [...], data.b_values_file (FSL .bval or one per line), or a JSON sidecar with a b_values array",
        )
    })?;
    let text = std::fs::read_to_string(&f).map_err(|e| OsipyError::Io {
        path: f.clone(),
        message: "cannot read".into(),
        source: Some(e),
    })?;
    // FSL .bval: one line of values; otherwise one value per line.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let b: Vec<f64> = if lines.len() == 1 {
        lines[0]
            .split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .map_err(|_| OsipyError::io(&f, format!("not a number: {x:?}")))
            })
            .collect::<Result<_>>()?
    } else {
        read_numbers(&f, 1)?.into_iter().map(|r| r[0]).collect()
    };
    Ok((b, f.display().to_string()))
}

/// Runs an IVIM analysis.
pub(crate) fn run_ivim(config: &Config, opts: &RunOptions) -> Result<RunSummary> {
    let p = config.ivim()?;
    let dir = &opts.data_dir;
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let dwi = match resolve(dir, &config.data.dwi) {
        Some(f) => f,
        None => find(dir, "dwi", &|n| {
            is_nifti(n) && (n.contains("dwi") || n.contains("ivim")) && !n.contains("mask")
        })?
        .ok_or_else(|| {
            missing(
                "data.dwi",
                "every IVIM run",
                &format!(
                    "no 4D NIfTI with 'dwi' or 'ivim' in its name in {}; set data.dwi",
                    dir.display()
                ),
            )
        })?,
    };
    let mask_path = match resolve(dir, &config.data.mask) {
        Some(m) => Some(m),
        None => find(dir, "mask", &|n| is_nifti(n) && n.contains("mask"))?,
    };
    tracing::info!(dwi = %dwi.display(), "reading the DWI series");
    let (data, geometry, _) = read_4d(&dwi)?;
    let [nx, ny, nz, nb] = [data.shape()[0], data.shape()[1], data.shape()[2], data.shape()[3]];
    let n_vox = nx * ny * nz;
    let (b, b_source) = b_values(config, dir, &dwi)?;
    if b.len() != nb {
        return Err(OsipyError::data(
            format!("number of b-values from {b_source}"),
            b.len().to_string(),
            format!("{nb}, the volumes of {}", dwi.display()),
        ));
    }
    let mask: Vec<bool> = match &mask_path {
        Some(m) => {
            let (mv, _) = read_3d(m)?;
            check_spatial("mask", m, mv.shape(), &[nx, ny, nz])?;
            mv.iter().map(|v| v.is_finite() && *v != 0.0).collect()
        }
        None => vec![true; n_vox],
    };
    let flat = data
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n_vox, nb))
        .map_err(|e| OsipyError::data("DWI series", e.to_string(), "a 4D array"))?;
    lap("read", &mut timings);

    let f = &p.fitting;
    let fit_opts = IvimFitOptions {
        strategy: IvimStrategy::from_name(&p.fitting_method)?,
        b_threshold: p.b_threshold,
        normalize: p.normalize_signal,
        segmented_fit_f: p.segmented_fit_f,
        bounds: f
            .bounds
            .iter()
            .map(|(k, [lo, hi])| (k.clone(), *lo, *hi))
            .collect(),
        lm: LmSettings {
            max_iterations: f.max_iterations,
            ftol: f.tolerance,
            xtol: f.tolerance,
            ..LmSettings::default()
        },
        initial_guess: f.initial_guess.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        bayes: osipy_ivim::bayes::BayesSettings {
            tune: f.bayesian.tune,
            draws: f.bayesian.draws,
            seed: f.bayesian.seed,
        },
    };
    if !fit_opts.initial_guess.is_empty() && fit_opts.strategy == IvimStrategy::Segmented {
        return Err(OsipyError::Validation(
            "pipeline.fitting.initial_guess applies to fitting_method = \"full\" or \"bayesian\" (segmented starts from the data)".into(),
        ));
    }
    let threads = opts
        .threads
        .or((config.backend.threads > 0).then_some(config.backend.threads))
        .or(osipy_backend::threads_from_env()?);
    let device = Device::cpu(threads);
    if let Some(t) = &opts.progress_total {
        t.store(n_vox, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!(strategy = %p.fitting_method, voxels = mask.iter().filter(|m| **m).count(), "fitting IVIM");
    let fit = fit_ivim(flat.view(), &b, Some(&mask), &fit_opts, &device)?;
    if let Some(done) = &opts.progress {
        done.store(n_vox, std::sync::atomic::Ordering::Relaxed);
    }
    lap("fit", &mut timings);

    let grid = |col: &dyn Fn(usize) -> f64| {
        Array3::from_shape_fn((nx, ny, nz), |(x, y, z)| col((x * ny + y) * nz + z))
    };
    let quality: Array3<QualityCode> =
        Array3::from_shape_fn((nx, ny, nz), |(x, y, z)| fit.status[(x * ny + y) * nz + z]);
    let provenance = Provenance::default()
        .with_method("model", "biexponential")
        .with_method("fitter", &p.fitting_method)
        .with_setting("b_threshold", p.b_threshold)
        .with_setting("b_values", b.clone())
        .with_setting(
            "uncertainty",
            if fit_opts.strategy == IvimStrategy::Bayesian {
                "posterior SD (values are posterior means)"
            } else {
                "standard error from the fit covariance"
            },
        );
    let mut maps = Vec::new();
    for (j, name, symbol, unit) in [
        (2, "D", "D", Unit::Mm2PerSecond),
        (3, "Dstar", "D*", Unit::Mm2PerSecond),
        (1, "f", "f", Unit::Dimensionless),
        (0, "S0", "S_0", Unit::Arbitrary),
    ] {
        maps.push(ParameterMap::new(
            name,
            symbol,
            unit,
            grid(&|v| fit.params[[v, j]]),
            quality.clone(),
            Some(grid(&|v| fit.std_errors[[v, j]])),
            provenance.clone(),
        )?);
    }
    let r2 = grid(&|v| fit.r2[v]);
    let mut stage = Staging::new(&opts.out_dir)?;
    stage.maps(&maps, &r2, &quality, &geometry, config)?;
    lap("write", &mut timings);

    let mut inputs = std::collections::BTreeMap::new();
    inputs.insert("dwi".to_string(), dwi.display().to_string());
    inputs.insert("b_values".to_string(), b_source);
    if let Some(m) = &mask_path {
        inputs.insert("mask".to_string(), m.display().to_string());
    }
    let summary = RunSummary {
        software: format!("osipy {}", env!("CARGO_PKG_VERSION")),
        inputs,
        shape: [nx, ny, nz, nb],
        timings,
        voxels_total: n_vox,
        voxels_in_mask: mask.iter().filter(|m| **m).count(),
        quality_counts: quality_counts(&quality, &mask),
        outputs: stage.final_paths(),
        config: config.clone(),
    };
    stage.commit(&summary)?;
    Ok(summary)
}
