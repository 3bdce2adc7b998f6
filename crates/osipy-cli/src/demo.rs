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

/// How the demo's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// NIfTI files in one folder.
    Nifti,
    /// Series as DICOM folders.
    Dicom,
    /// A BIDS dataset (subject 01), maps as a BIDS-derivatives dataset.
    Bids,
}

/// Prints, per distinct true value of `name`, the median fitted value read
/// back from its map `file` and the median |relative error|.
fn table_rows(file: &Path, name: &str, truth: &ndarray::Array3<f64>, digits: usize) -> Result<()> {
    let (est, _) = read_3d(file)?;
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
/// `layout` says how the data are written.
pub fn run(
    m: &dyn Modality,
    out: &Path,
    overwrite: bool,
    no_report: bool,
    layout: Layout,
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
    let config_path = match layout {
        Layout::Dicom => case.write_dicom_files(&data, &Geometry::from_affine(AFFINE_LAS))?,
        Layout::Bids => {
            case.write_bids_files(&data, &Geometry::from_affine(AFFINE), m.bids_datatype(), "01")?
        }
        Layout::Nifti => case.write_files(&data, &Geometry::from_affine(AFFINE))?,
    };

    let config = Config::from_file(&config_path)?;
    let start = std::time::Instant::now();
    let flags = crate::RunFlags {
        threads: None,
        device: None,
        overwrite,
        no_report,
    };
    let summary = crate::run_with_progress(&config, &data, &maps, &flags, quiet)?;
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
    // Where the maps are: the output folder, or the participant's folder of
    // the derivatives dataset.
    let participant = osipy_io::bids::Participant {
        subject: "01".into(),
        session: None,
    };
    let run_dir = match layout {
        Layout::Bids => maps.join(participant.dir()).join(m.bids_datatype()),
        Layout::Nifti | Layout::Dicom => maps.clone(),
    };
    let file_of = |name: &str| match layout {
        Layout::Bids => run_dir.join(osipy_io::bids::derivative_name(
            &participant,
            name,
            m.id(),
            ".nii.gz",
        )),
        Layout::Nifti | Layout::Dicom => run_dir.join(format!("{name}.nii.gz")),
    };
    for (name, truth, digits) in &case.truth {
        table_rows(&file_of(name), name, truth, *digits)?;
    }
    let names: Vec<String> = case
        .truth
        .iter()
        .map(|(n, _, _)| {
            file_of(n)
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned())
        })
        .collect();
    println!(
        "\nmaps ({}, each with a .json sidecar and a standard-error map where the method gives errors), R^2, the quality mask and osipy_run.json in {}",
        names.join(", "),
        run_dir.display()
    );
    let report = run_dir.join("report.html");
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
