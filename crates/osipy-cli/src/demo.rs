//! `osipy demo [MODALITY]`: the modality's demo case (a phantom with known
//! truth) written as files, analysed by the real pipeline from those files,
//! and compared with its truth. One code path for every modality.

use anyhow::{Context, Result};
use osipy_io::{read_3d, Geometry};
use osipy_pipeline::{Config, Modality};
use std::path::Path;

/// The demo geometry: 2 x 2 x 4 mm voxels, centred near the origin.
const AFFINE: [[f64; 4]; 4] = [
    [2.0, 0.0, 0.0, -16.0],
    [0.0, 2.0, 0.0, -16.0],
    [0.0, 0.0, 4.0, -8.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// The demo geometry of `--dicom`: the same grid stored as dcm2niix lays out
/// an axial scan (x from right to left: LAS), which DICOM can hold.
const AFFINE_LAS: [[f64; 4]; 4] = [
    [-2.0, 0.0, 0.0, 16.0],
    [0.0, 2.0, 0.0, -16.0],
    [0.0, 0.0, 4.0, -8.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Prints, per distinct true value of `name`, the median fitted value read
/// back from `maps/<name>.nii.gz` and the median |relative error|.
fn table_rows(maps: &Path, name: &str, truth: &ndarray::Array3<f64>, digits: usize) -> Result<()> {
    let (est, _) = read_3d(maps.join(format!("{name}.nii.gz")))?;
    let mut levels: Vec<f64> = truth.iter().copied().collect();
    levels.sort_by(|a, b| a.total_cmp(b));
    levels.dedup();
    for level in levels {
        let mut vals: Vec<f64> = est
            .iter()
            .zip(truth.iter())
            .filter(|(e, t)| **t == level && e.is_finite())
            .map(|(e, _)| *e)
            .collect();
        vals.sort_by(|a, b| a.total_cmp(b));
        let median = vals.get(vals.len() / 2).copied().unwrap_or(f64::NAN);
        let mut errs: Vec<f64> = vals.iter().map(|v| ((v - level) / level).abs()).collect();
        errs.sort_by(|a, b| a.total_cmp(b));
        let merr = errs.get(errs.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{name:<8} {level:>10.digits$} {median:>16.digits$} {:>13.1}%",
            100.0 * merr
        );
    }
    Ok(())
}

/// Runs the demo of `m` into `out` (data in `out/data`, maps in `out/maps`).
/// An earlier demo's data or maps there are replaced only with `overwrite`;
/// `dicom` writes the series as DICOM folders.
pub fn run(
    m: &dyn Modality,
    out: &Path,
    overwrite: bool,
    no_report: bool,
    dicom: bool,
    quiet: bool,
) -> Result<()> {
    let data = out.join("data");
    let maps = out.join("maps");
    let occupied = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    if !overwrite && (occupied(&data) || occupied(&maps)) {
        anyhow::bail!(
            "{} already holds a demo (data/ or maps/ not empty); use --overwrite to replace it, or another -o folder",
            out.display()
        );
    }
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing the earlier {}", data.display()))?;
    }
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let case = m.demo()?;
    let config_path = if dicom {
        case.write_dicom_files(&data, &Geometry::from_affine(AFFINE_LAS))?
    } else {
        case.write_files(&data, &Geometry::from_affine(AFFINE))?
    };

    let config = Config::from_file(&config_path)?;
    let start = std::time::Instant::now();
    let summary = crate::run_with_progress(&config, &data, &maps, None, overwrite, no_report, quiet)?;
    let seconds = start.elapsed().as_secs_f64();

    println!("osipy {} {}", env!("CARGO_PKG_VERSION"), case.title);
    println!("data: {}  ({})", data.display(), case.about);
    println!(
        "run:  osipy run {} {} -o {}",
        config_path.display(),
        data.display(),
        maps.display()
    );
    println!("      {seconds:.2} s, quality {:?}\n", summary.quality_counts);
    println!(
        "{:<8} {:>10} {:>16} {:>14}",
        "param", "true", "median fitted", "median |err|"
    );
    for (name, truth, digits) in &case.truth {
        table_rows(&maps, name, truth, *digits)?;
    }
    let names: Vec<&str> = summary
        .outputs
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .filter(|n| n.ends_with(".json") && *n != "osipy_run.json")
        .map(|n| n.trim_end_matches(".json"))
        .collect();
    println!(
        "\nmaps ({}, each with a .json sidecar and _se.nii.gz where the method gives errors), r_squared, quality_mask and osipy_run.json in {}",
        names.join(", "),
        maps.display()
    );
    let report = maps.join("report.html");
    if report.is_file() {
        let secs = summary
            .timings
            .iter()
            .find(|(stage, _)| stage == "report")
            .map_or(0.0, |(_, s)| *s);
        println!("report: {} (figures drawn in {secs:.2} s)", report.display());
    }
    Ok(())
}
