//! # osipy-report
//!
//! What a person looks at after a run: PNG figures (a slice montage with a
//! colour bar per parameter map, the quality mask as a map of failure
//! reasons, histograms, the AIF and representative voxels' measured and
//! fitted curves) and `report.html`, one self-contained file with the
//! figures embedded, the run's settings, inputs, timings, voxel counts per
//! quality status and per-parameter summary statistics.
//!
//! The report knows no modality: it draws the [`MapSet`]-shaped maps and the
//! [`Plot`]s that a modality returns in its `Outputs` (see
//! `osipy_io::curves`), so a new modality gets its report by describing its
//! maps and curves. Everything it needs is also in a finished output folder
//! (`osipy_run.json` with the plots, the maps and their sidecars, the
//! quality mask), so [`ReportData::from_dir`] regenerates it (`osipy report`).
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |
//!
//! [`MapSet`]: osipy_core::MapSet

mod figure;
mod html;

pub use figure::{
    fmt_num, histogram, line_plot, map_montage, montage_slices, quality_color, quality_montage, ticks,
    viridis, Figure, Rect, NO_VALUE, OUTSIDE,
};

use ndarray::Array3;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_io::{atomic_write, read_3d, Plot};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One parameter map as the report shows it.
#[derive(Debug, Clone)]
pub struct MapImage<'a> {
    /// File and display name (`Ktrans`).
    pub name: String,
    /// Display symbol (`K^trans`).
    pub symbol: String,
    /// Unit symbol (`1/min`).
    pub unit: String,
    /// Values on the (x, y, z) grid (NaN where not valid): the run's own
    /// map, borrowed, or read from an output folder.
    pub values: Cow<'a, Array3<f64>>,
}

/// Everything a report is drawn from.
#[derive(Debug, Clone)]
pub struct ReportData<'a> {
    /// The run summary as written to `osipy_run.json` (software, inputs,
    /// shape, timings, voxel counts, the config with its `output.report_*`
    /// settings, and the `plots`).
    pub summary: serde_json::Value,
    /// The parameter maps, in output order.
    pub maps: Vec<MapImage<'a>>,
    /// Quality code per voxel (`0` = outside the mask).
    pub quality: Array3<u8>,
}

/// A rendered report: the HTML page and its figures by file name.
#[derive(Debug, Clone)]
pub struct Report {
    /// `report.html`, figures embedded.
    pub html: String,
    /// The same figures as PNG files (`figures/<name>`).
    pub figures: Vec<(String, Figure)>,
}

/// Name of the report page in an output folder.
pub const REPORT_FILE: &str = "report.html";
/// Folder of the figures' PNG files in an output folder.
pub const FIGURES_DIR: &str = "figures";

fn io_err(path: &Path, e: impl std::fmt::Display) -> OsipyError {
    OsipyError::io(path, e.to_string())
}

impl ReportData<'_> {
    /// The voxels inside the analysis mask (quality code other than
    /// `not_fitted`).
    pub fn mask(&self) -> Array3<bool> {
        self.quality.mapv(|q| q != QualityCode::NotFitted.code())
    }

    /// The plots of the summary (`plots`).
    pub fn plots(&self) -> Result<Vec<Plot>> {
        match self.summary.get("plots") {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                OsipyError::Validation(format!("osipy_run.json: `plots` is not a list of plots: {e}"))
            }),
        }
    }

    /// Display ranges set in the config (`output.report_ranges`), by map name.
    pub fn ranges(&self) -> BTreeMap<String, (f64, f64)> {
        let mut out = BTreeMap::new();
        if let Some(t) = self
            .summary
            .pointer("/config/output/report_ranges")
            .and_then(|v| v.as_object())
        {
            for (name, v) in t {
                if let Some([lo, hi]) = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>())
                    .as_deref()
                {
                    out.insert(name.clone(), (*lo, *hi));
                }
            }
        }
        out
    }

    /// Reads what a report needs from a finished output folder: its
    /// `osipy_run.json`, the maps its sidecars name, and the quality mask.
    pub fn from_dir(dir: &Path) -> Result<ReportData<'static>> {
        let run = dir.join("osipy_run.json");
        if !run.is_file() {
            return Err(OsipyError::data(
                format!("output folder {}", dir.display()),
                "no osipy_run.json in it",
                "the folder of a finished `osipy run` (it holds osipy_run.json, the maps and quality_mask.nii.gz)",
            ));
        }
        let text = osipy_io::read_text_file(&run)?;
        let summary: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| io_err(&run, format!("not valid JSON: {e}")))?;
        let outputs: Vec<String> = summary
            .get("outputs")
            .and_then(|o| o.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str())
                    .filter_map(|p| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut maps = Vec::new();
        for name in outputs
            .iter()
            .filter(|n| n.ends_with(".json") && *n != "osipy_run.json")
        {
            let path = dir.join(name);
            let sidecar: serde_json::Value = serde_json::from_str(&osipy_io::read_text_file(&path)?)
                .map_err(|e| io_err(&path, format!("not valid JSON: {e}")))?;
            let field = |k: &str| sidecar.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let Some(map_name) = field("Name") else {
                continue;
            };
            // The image beside the sidecar (`Ktrans.json`, or a BIDS name).
            let (values, _) = read_3d(image(dir, name.trim_end_matches(".json")))?;
            maps.push(MapImage {
                symbol: field("Symbol").unwrap_or_else(|| map_name.clone()),
                unit: field("Units").unwrap_or_default(),
                name: map_name,
                values: Cow::Owned(values),
            });
        }
        // `quality_mask`, or its BIDS-derivative name (`..._desc-qualityMask_<suffix>`).
        let quality = outputs
            .iter()
            .find(|n| n.contains("_desc-qualityMask_") && !n.ends_with(".json"))
            .map_or("quality_mask", |n| {
                n.trim_end_matches(".gz").trim_end_matches(".nii")
            });
        let (q, _) = read_3d(image(dir, quality))?;
        Ok(ReportData {
            summary,
            maps,
            quality: q.mapv(|c| if (0.0..=255.0).contains(&c) { c as u8 } else { 0 }),
        })
    }
}

/// The image `stem` in `dir`: `stem.nii.gz`, else `stem.nii` (a run with
/// `output.compress = false`); the first name when neither exists, so the
/// error names what is missing.
fn image(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.nii.gz"));
    let plain = dir.join(format!("{stem}.nii"));
    if !gz.exists() && plain.exists() {
        plain
    } else {
        gz
    }
}

/// Finite values of `values` inside `mask`, in no particular order.
pub fn finite_in_mask(values: &Array3<f64>, mask: &Array3<bool>) -> Vec<f64> {
    values
        .iter()
        .zip(mask.iter())
        .filter(|(x, m)| **m && x.is_finite())
        .map(|(x, _)| *x)
        .collect()
}

/// The percentiles the report shows of a map's values within the mask:
/// 2 %, 25 %, 50 %, 75 % and 98 % (nearest rank), found by selection, so
/// their cost grows linearly with the volume. NaN when there are none.
pub fn map_percentiles(values: &mut [f64]) -> [f64; 5] {
    let q = osipy_io::dro::percentiles(values, &[0.02, 0.25, 0.5, 0.75, 0.98]);
    [q[0], q[1], q[2], q[3], q[4]]
}

/// The default display range of a map from its [`map_percentiles`]: the
/// 2nd to 98th percentile within the mask (robust to a few extreme fits),
/// widened when flat.
pub fn robust_range(p: &[f64; 5]) -> (f64, f64) {
    let (lo, hi) = (p[0], p[4]);
    if lo.is_nan() || hi.is_nan() {
        return (0.0, 1.0);
    }
    if hi > lo {
        (lo, hi)
    } else {
        let pad = 0.5 * lo.abs().max(1e-12);
        (lo - pad, hi + pad)
    }
}

/// Draws every figure and the page. The maps' figures (montage, histogram
/// and statistics of each map), the quality montage and the curves are
/// drawn on up to `threads` threads; the report does not depend on the
/// count.
pub fn render(data: &ReportData<'_>, threads: usize) -> Result<Report> {
    let mask = data.mask();
    let ranges = data.ranges();
    let plots = data.plots()?;
    for m in &data.maps {
        if m.values.shape() != data.quality.shape() {
            return Err(OsipyError::data(
                format!("map {}", m.name),
                format!("grid {:?}", m.values.shape()),
                format!("the quality mask's grid {:?}", data.quality.shape()),
            ));
        }
    }
    // Where the plotted voxels are: drawn on the first map, in its colour
    // range, by that map's job (drawn after all jobs, it was a serial tail).
    let markers: Vec<([usize; 3], String)> = plots
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let label = if p.voxels.len() == 1 {
                (i + 1).to_string()
            } else {
                String::new()
            };
            p.voxels.iter().map(move |v| (*v, label.clone()))
        })
        .filter(|(v, _)| v.iter().zip(data.quality.shape()).all(|(a, n)| a < n))
        .collect();
    // One job per map, then the quality montage, then one per curve; each
    // result lands in its own slot, so the order is fixed.
    let n_maps = data.maps.len();
    let draw = |job: usize| -> Result<Drawn> {
        let Some(m) = data.maps.get(job) else {
            let figure = match job - n_maps {
                0 => ("quality.png".into(), quality_montage(&data.quality, &mask)?),
                i => (format!("curve_{i}.png"), line_plot(&plots[i - 1])?),
            };
            return Ok(Drawn {
                figures: vec![figure],
                stats: None,
                locations: None,
            });
        };
        let mut values = finite_in_mask(&m.values, &mask);
        let pct = map_percentiles(&mut values);
        let (range, configured) = match ranges.get(&m.name) {
            Some(r) => (*r, true),
            None => (robust_range(&pct), false),
        };
        let hist = histogram(&format!("{} in the mask", m.name), &m.unit, &values, range)?;
        let stats = html::MapStats::new(m, values.len(), &pct, range, configured);
        // The copy of the values is let go before the montage is drawn.
        drop(values);
        let title = format!("{} ({})", m.name, m.unit);
        let locations = if job == 0 && !markers.is_empty() {
            let title = format!("Plotted voxels on {}", m.name);
            Some(map_montage(&title, &m.unit, &m.values, &mask, range, &markers)?)
        } else {
            None
        };
        Ok(Drawn {
            locations,
            figures: vec![
                (
                    format!("map_{}.png", m.name),
                    map_montage(&title, &m.unit, &m.values, &mask, range, &[])?,
                ),
                (format!("hist_{}.png", m.name), hist),
            ],
            stats: Some(stats),
        })
    };
    let mut slots: Vec<Option<Result<Drawn>>> = (0..n_maps + 1 + plots.len()).map(|_| None).collect();
    osipy_backend::for_each_chunk(
        &osipy_backend::Device::Cpu {
            threads: threads.max(1),
        },
        &mut slots,
        1,
        1,
        || (),
        |_, job, slot| slot[0] = Some(draw(job)),
    )
    .map_err(OsipyError::from)?;
    let mut figures = Vec::new();
    let mut stats = Vec::new();
    let mut locations = None;
    for slot in slots {
        let drawn = slot.ok_or_else(|| OsipyError::Validation("a report figure was not drawn".into()))??;
        figures.extend(drawn.figures);
        stats.extend(drawn.stats);
        locations = locations.or(drawn.locations);
    }
    if let Some(locations) = locations {
        figures.push(("locations.png".into(), locations));
    }
    let html = html::page(data, &stats, &plots, &figures)?;
    Ok(Report { html, figures })
}

/// What one drawing job of [`render`] gives: its figures, and for a map its
/// statistics.
struct Drawn {
    figures: Vec<(String, Figure)>,
    stats: Option<html::MapStats>,
    /// The first map's job: the plotted voxels marked on that map.
    locations: Option<Figure>,
}

/// Renders the report of `data` into `dir`: `report.html` and
/// `figures/*.png`, each written atomically, drawn on up to `threads`
/// threads ([`render`]). Returns the paths written.
pub fn write(dir: &Path, data: &ReportData<'_>, threads: usize) -> Result<Vec<PathBuf>> {
    let report = render(data, threads)?;
    let fig_dir = dir.join(FIGURES_DIR);
    std::fs::create_dir_all(&fig_dir)
        .map_err(|e| io_err(&fig_dir, format!("cannot create the figures folder: {e}")))?;
    let mut written = Vec::new();
    for (name, f) in &report.figures {
        let p = fig_dir.join(name);
        atomic_write(&p, |tmp| std::fs::write(tmp, &f.png).map_err(|e| e.to_string()))?;
        written.push(p);
    }
    let p = dir.join(REPORT_FILE);
    atomic_write(&p, |tmp| {
        std::fs::write(tmp, &report.html).map_err(|e| e.to_string())
    })?;
    written.push(p);
    Ok(written)
}
