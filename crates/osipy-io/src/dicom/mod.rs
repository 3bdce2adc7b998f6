//! DICOM series in: a folder scanned recursively, files grouped by series, one
//! series picked and assembled into a 4D volume with its geometry, frame
//! times, b-values and acquisition parameters.
//!
//! * **Files.** Every regular file under the folder is tried; files without
//!   the DICOM Part 10 marker (`DICM` at byte 128) are ignored, as are
//!   `DICOMDIR` index files. A file with the marker that does not parse is an
//!   error naming it. Classic MR Image Storage (one slice per file) and
//!   Enhanced MR Image Storage (multi-frame, per-frame functional groups) are
//!   read; any other object (structured reports, presentation states,
//!   secondary captures) in the chosen series is an error naming its file.
//! * **Series.** Files are grouped by `SeriesInstanceUID`. A folder with
//!   several series needs `data.series`: a series number, a UID, or a
//!   description pattern (case-insensitive, `*` and `?` wildcards); otherwise
//!   the error lists them.
//! * **Slices** are ordered by the projection of `ImagePositionPatient` on the
//!   slice normal (row cosine x column cosine of `ImageOrientationPatient`);
//!   every slice position must hold the same number of frames, spaced evenly.
//! * **Frames** at one position are ordered by the first of
//!   `TemporalPositionIdentifier` (enhanced: `TemporalPositionIndex`),
//!   `TriggerTime`, `AcquisitionTime` (enhanced: `FrameAcquisitionDateTime`)
//!   and `InstanceNumber` (enhanced: the frame number) that every frame has
//!   and that differs between the frames of a slice.
//! * **Values**: `RescaleSlope` / `RescaleIntercept` applied (enhanced: per
//!   frame, from the Pixel Value Transformation Sequence), as dcm2niix does.
//! * **Geometry**: DICOM's patient coordinates are LPS, NIfTI's RAS: the
//!   affine's first two rows are negated. The array is stored with the rows
//!   flipped (NIfTI's y axis runs from the last row up), the layout dcm2niix
//!   writes, so masks drawn on a dcm2niix conversion line up.
//! * **Frame times** (s) are the earliest acquisition time of each volume
//!   over its slices, relative to the first volume (`TriggerTime` when no
//!   acquisition time varies).
//! * **Metadata** becomes a BIDS-style sidecar ([`DicomSeries::sidecar`]), the
//!   one the modalities already read beside a NIfTI: `RepetitionTime`,
//!   `EchoTime`, `InversionTime` (s), `FlipAngle` (degrees),
//!   `MagneticFieldStrength` (T), `Manufacturer`, series number and
//!   description, and `bvals` when the frames carry b-values (see
//!   [`Vendor`] for where each vendor stores them).

mod header;
pub mod synthetic;

use crate::Geometry;
pub use header::Vendor;
use header::{FileHeader, FrameInfo, Scanned};
use ndarray::Array4;
use osipy_core::{OsipyError, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Which series of a folder to read (`data.series`).
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesSelector {
    /// `SeriesNumber`.
    Number(i64),
    /// A `SeriesInstanceUID`, or a `SeriesDescription` pattern
    /// (case-insensitive; `*` any run of characters, `?` one character).
    Text(String),
}

impl SeriesSelector {
    /// A selector from config text: digits are a series number.
    pub fn parse(text: &str) -> SeriesSelector {
        match text.trim().parse::<i64>() {
            Ok(n) => SeriesSelector::Number(n),
            Err(_) => SeriesSelector::Text(text.trim().to_string()),
        }
    }

    fn matches(&self, s: &SeriesInfo) -> bool {
        match self {
            SeriesSelector::Number(n) => s.number == Some(*n),
            SeriesSelector::Text(t) => {
                s.uid == *t || glob_match(&t.to_lowercase(), &s.description.to_lowercase())
            }
        }
    }
}

impl std::fmt::Display for SeriesSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesSelector::Number(n) => write!(f, "series number {n}"),
            SeriesSelector::Text(t) => write!(f, "\"{t}\" (a UID or a description pattern)"),
        }
    }
}

/// One series of a folder, as listed in errors.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    /// `SeriesInstanceUID`.
    pub uid: String,
    /// `SeriesNumber`.
    pub number: Option<i64>,
    /// `SeriesDescription` (empty when absent).
    pub description: String,
    /// Files in the series.
    pub files: usize,
}

impl std::fmt::Display for SeriesInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.number.map_or("-".to_string(), |n| n.to_string());
        write!(
            f,
            "number {n}, \"{}\", {} files, UID {}",
            self.description, self.files, self.uid
        )
    }
}

/// A scanned and assembled series: where each frame's pixels are, and what
/// the headers say. [`DicomSeries::read`] reads the pixels.
#[derive(Debug, Clone)]
pub struct DicomSeries {
    /// The folder scanned.
    pub dir: PathBuf,
    /// The series.
    pub info: SeriesInfo,
    /// Scanner vendor.
    pub vendor: Vendor,
    /// Grid (x = columns, y = rows, z = slices) and number of volumes.
    pub shape: [usize; 4],
    /// Voxel-to-world geometry (RAS, mm).
    pub geometry: Geometry,
    /// Frame times (s) from the first volume, when the headers give them.
    pub frame_times: Option<Vec<f64>>,
    /// b-values (s/mm^2), one per volume, when the headers give them.
    pub b_values: Option<Vec<f64>>,
    /// The acquisition parameters as a BIDS-style JSON sidecar.
    pub sidecar: serde_json::Value,
    files: Vec<PathBuf>,
    /// For each (z, t), row-major: the file index and frame number within it,
    /// and the rescale (slope, intercept).
    slots: Vec<Slot>,
}

/// A frame's time-order key.
type OrderKey = fn(&FrameInfo) -> Option<f64>;

#[derive(Debug, Clone, Copy)]
struct Slot {
    file: usize,
    frame: u32,
    rescale: (f64, f64),
}

/// Whether `path` is a folder (read as DICOM) rather than a file.
pub fn is_dicom_folder(path: &Path) -> bool {
    path.is_dir()
}

/// Scans `dir` for DICOM files and assembles the series `selector` names (or
/// the only one).
pub fn scan(dir: &Path, selector: Option<&SeriesSelector>) -> Result<DicomSeries> {
    let mut paths = Vec::new();
    walk(dir, &mut paths)?;
    paths.sort();
    let scanned: Vec<Scanned> = paths
        .par_iter()
        .map(|p| header::scan_file(p))
        .collect::<Result<Vec<_>>>()?;
    let mut images: Vec<FileHeader> = Vec::new();
    let mut others: Vec<(PathBuf, String, String)> = Vec::new();
    let mut dicomdirs = 0usize;
    for s in scanned {
        match s {
            Scanned::NotDicom => {}
            Scanned::Dicomdir => dicomdirs += 1,
            Scanned::Other {
                path,
                class,
                series_uid,
            } => others.push((path, class, series_uid)),
            Scanned::Image(h) => images.push(*h),
        }
    }
    if images.is_empty() {
        let found = if dicomdirs > 0 && others.is_empty() {
            "only a DICOMDIR index: the image files it lists are not in the folder (copy the whole export)"
                .to_string()
        } else if !others.is_empty() {
            format!(
                "{} DICOM objects, none an MR image (e.g. {} is {})",
                others.len(),
                others[0].0.display(),
                others[0].1
            )
        } else {
            "no DICOM files (none with the DICM marker at byte 128)".to_string()
        };
        return Err(OsipyError::data(
            format!("DICOM folder {}", dir.display()),
            found,
            "MR Image or Enhanced MR Image Storage files",
        ));
    }
    // Group by series, in order of series number then UID.
    let mut series: Vec<SeriesInfo> = Vec::new();
    for h in &images {
        match series.iter_mut().find(|s| s.uid == h.series_uid) {
            Some(s) => s.files += 1,
            None => series.push(SeriesInfo {
                uid: h.series_uid.clone(),
                number: h.series_number,
                description: h.series_description.clone(),
                files: 1,
            }),
        }
    }
    series.sort_by(|a, b| a.number.cmp(&b.number).then_with(|| a.uid.cmp(&b.uid)));
    let list = |v: &[SeriesInfo]| v.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n");
    let chosen = match selector {
        None if series.len() == 1 => series[0].clone(),
        None => {
            return Err(OsipyError::Validation(format!(
                "DICOM folder {} holds {} series; pick one with data.series (a number, a UID or a description pattern):\n{}",
                dir.display(),
                series.len(),
                list(&series)
            )))
        }
        Some(sel) => {
            let hits: Vec<&SeriesInfo> = series.iter().filter(|s| sel.matches(s)).collect();
            match hits.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(OsipyError::Validation(format!(
                        "data.series = {sel} matches no series in DICOM folder {}; it holds:\n{}",
                        dir.display(),
                        list(&series)
                    )))
                }
                many => {
                    return Err(OsipyError::Validation(format!(
                        "data.series = {sel} matches {} series in DICOM folder {}; give a number or UID:\n{}",
                        many.len(),
                        dir.display(),
                        list(&many.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
                    )))
                }
            }
        }
    };
    if let Some((path, class, _)) = others.iter().find(|o| o.2 == chosen.uid) {
        return Err(OsipyError::data(
            format!("file {} in DICOM series {}", path.display(), chosen),
            format!("a {class} object"),
            "MR Image or Enhanced MR Image Storage files only; move it out of the folder",
        ));
    }
    let files: Vec<FileHeader> = images
        .into_iter()
        .filter(|h| h.series_uid == chosen.uid)
        .collect();
    assemble(dir, chosen, files)
}

/// Orders the frames of one series into (z, t) and derives the geometry.
fn assemble(dir: &Path, info: SeriesInfo, files: Vec<FileHeader>) -> Result<DicomSeries> {
    let first = &files[0];
    let (rows, cols) = (first.rows, first.cols);
    if let Some(h) = files.iter().find(|h| (h.rows, h.cols) != (rows, cols)) {
        return Err(OsipyError::data(
            format!("image size of {}", h.path.display()),
            format!("{} rows x {} columns", h.rows, h.cols),
            format!(
                "{rows} x {cols}, as {} (one series, one size)",
                first.path.display()
            ),
        ));
    }
    // Every frame with its file index.
    let frames: Vec<(usize, &FrameInfo)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.frames.iter().map(move |f| (i, f)))
        .collect();
    let o = frames[0].1.orientation;
    for (i, f) in &frames {
        if f.orientation
            .iter()
            .zip(o.iter())
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(OsipyError::data(
                format!("ImageOrientationPatient of {}", files[*i].path.display()),
                fmt_vec(&f.orientation),
                format!(
                    "{} as in {} (mixed orientations in one series)",
                    fmt_vec(&o),
                    first.path.display()
                ),
            ));
        }
    }
    // One echo per series: echoes are not frames in time.
    if let Some((i, f)) = frames.iter().find(|(_, f)| f.echo_time != frames[0].1.echo_time) {
        return Err(OsipyError::data(
            format!("echo time of {}", files[*i].path.display()),
            format!("{} ms", f.echo_time.unwrap_or(f64::NAN)),
            format!(
                "{} ms as in {} (a multi-echo series: export or select one echo per series)",
                frames[0].1.echo_time.unwrap_or(f64::NAN),
                first.path.display()
            ),
        ));
    }
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    let n = cross(r, c);
    // Slice positions along the normal, clustered at 1 um.
    let mut positions: Vec<f64> = frames.iter().map(|(_, f)| dot(f.position, n)).collect();
    positions.sort_by(f64::total_cmp);
    positions.dedup_by(|a, b| (*a - *b).abs() < 1e-3);
    let nz = positions.len();
    let slice_of = |f: &FrameInfo| {
        let d = dot(f.position, n);
        positions.iter().position(|p| (p - d).abs() < 1e-3).unwrap_or(0)
    };
    let mut by_slice: Vec<Vec<(usize, &FrameInfo)>> = vec![Vec::new(); nz];
    for (i, f) in &frames {
        by_slice[slice_of(f)].push((*i, f));
    }
    let nt = by_slice[0].len();
    if let Some((k, s)) = by_slice.iter().enumerate().find(|(_, s)| s.len() != nt) {
        return Err(OsipyError::data(
            format!(
                "frames at slice {} of {nz} (position {:.3} mm, e.g. {})",
                k + 1,
                positions[k],
                files[s[0].0].path.display()
            ),
            s.len().to_string(),
            format!(
                "{nt}, as at slice 1 ({}): every slice needs every frame",
                files[by_slice[0][0].0].path.display()
            ),
        ));
    }
    if nz > 2 {
        let step = (positions[nz - 1] - positions[0]) / (nz - 1) as f64;
        for k in 1..nz {
            let gap = positions[k] - positions[k - 1];
            if (gap - step).abs() > 0.01 * step.abs().max(1e-3) {
                return Err(OsipyError::data(
                    format!(
                        "slice spacing between {} and {}",
                        files[by_slice[k - 1][0].0].path.display(),
                        files[by_slice[k][0].0].path.display()
                    ),
                    format!("{gap:.3} mm"),
                    format!("{step:.3} mm, the mean spacing (a slice is missing, or slices of two stacks are mixed)"),
                ));
            }
        }
    }
    // Time order: the first key every frame has and that tells the frames
    // of every slice apart.
    let keys: [(&str, OrderKey); 4] = [
        ("TemporalPositionIdentifier", |f| f.temporal_position),
        ("TriggerTime", |f| f.trigger_time),
        ("AcquisitionTime", |f| f.acquisition_time),
        ("InstanceNumber", |f| f.instance),
    ];
    let distinct = |key: OrderKey| {
        by_slice.iter().all(|s| {
            let mut v: Vec<f64> = match s.iter().map(|(_, f)| key(f)).collect::<Option<Vec<f64>>>() {
                Some(v) => v,
                None => return false,
            };
            v.sort_by(f64::total_cmp);
            v.windows(2).all(|w| w[1] > w[0])
        })
    };
    let order_key = if nt == 1 {
        Some(keys[0].1)
    } else {
        keys.iter().find(|(_, k)| distinct(*k)).map(|(_, k)| *k)
    };
    let Some(order_key) = order_key else {
        return Err(OsipyError::data(
            format!("frame order of DICOM series {info} in {}", dir.display()),
            format!("{nt} frames per slice that no header tells apart"),
            format!(
                "distinct values of one of {} per slice",
                keys.map(|k| k.0).join(", ")
            ),
        ));
    };
    for s in &mut by_slice {
        s.sort_by(|a, b| {
            order_key(a.1)
                .unwrap_or(0.0)
                .total_cmp(&order_key(b.1).unwrap_or(0.0))
        });
    }
    // Geometry: column i along the row cosine, row j along the column
    // cosine; rows stored flipped (y = rows - 1 - j).
    let [dr, dc] = first.pixel_spacing;
    let p0 = by_slice[0][0].1.position;
    let slice_vec = if nz > 1 {
        let pl = by_slice[nz - 1][0].1.position;
        [0, 1, 2].map(|a| (pl[a] - p0[a]) / (nz - 1) as f64)
    } else {
        n.map(|v| v * first.slice_thickness.unwrap_or(1.0))
    };
    let ny = rows as f64;
    let mut affine = [[0.0; 4]; 4];
    for a in 0..3 {
        affine[a][0] = r[a] * dc;
        affine[a][1] = -c[a] * dr;
        affine[a][2] = slice_vec[a];
        affine[a][3] = p0[a] + c[a] * dr * (ny - 1.0);
    }
    for row in affine.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    affine[3][3] = 1.0;
    let slots: Vec<Slot> = by_slice
        .iter()
        .flat_map(|s| {
            s.iter().map(|(i, f)| Slot {
                file: *i,
                frame: f.frame,
                rescale: f.rescale,
            })
        })
        .collect();
    // Per-volume values from the first slice.
    let frame_times = frame_times(&by_slice, nt);
    let b_values: Option<Vec<f64>> = by_slice[0].iter().map(|(_, f)| f.b_value).collect();
    let sidecar = header::sidecar(first, &info, frame_times.as_deref(), b_values.as_deref());
    Ok(DicomSeries {
        dir: dir.to_path_buf(),
        info,
        vendor: first.vendor,
        shape: [cols, rows, nz, nt],
        geometry: Geometry::from_affine(affine),
        frame_times,
        b_values,
        sidecar,
        files: files.into_iter().map(|h| h.path).collect(),
        slots,
    })
}

/// Frame times (s): the earliest acquisition time of each volume over its
/// slices, from the first volume; trigger times when acquisition times do
/// not vary. `None` when neither varies.
fn frame_times(by_slice: &[Vec<(usize, &FrameInfo)>], nt: usize) -> Option<Vec<f64>> {
    let per_volume = |key: OrderKey| -> Option<Vec<f64>> {
        (0..nt)
            .map(|t| {
                by_slice
                    .iter()
                    .map(|s| key(s[t].1))
                    .try_fold(f64::INFINITY, |m, v| v.map(|v| m.min(v)))
            })
            .collect()
    };
    let relative = |v: Vec<f64>| -> Option<Vec<f64>> {
        let t0 = v[0];
        // Across midnight: times of day restart at 0.
        let out: Vec<f64> = v
            .iter()
            .map(|t| if *t < t0 { t + 86400.0 - t0 } else { t - t0 })
            .collect();
        (nt > 1 && out.windows(2).all(|w| w[1] > w[0])).then_some(out)
    };
    per_volume(|f| f.acquisition_time)
        .and_then(relative)
        .or_else(|| per_volume(|f| f.trigger_time.map(|t| t / 1000.0)).and_then(relative))
}

impl DicomSeries {
    /// Reads the pixels (files in parallel), rescaled, as (x, y, z, t) in
    /// standard layout.
    pub fn read(&self) -> Result<Array4<f64>> {
        let [nx, ny, nz, nt] = self.shape;
        // Which slots each file fills.
        let mut by_file: Vec<Vec<usize>> = vec![Vec::new(); self.files.len()];
        for (s, slot) in self.slots.iter().enumerate() {
            by_file[slot.file].push(s);
        }
        let frames: Vec<Vec<(usize, Vec<f64>)>> = by_file
            .par_iter()
            .enumerate()
            .filter(|(_, slots)| !slots.is_empty())
            .map(|(f, slots)| {
                let path = &self.files[f];
                let frames: Vec<u32> = slots.iter().map(|s| self.slots[*s].frame).collect();
                let pixels = header::read_frames(path, &frames, nx * ny)?;
                Ok(slots.iter().copied().zip(pixels).collect())
            })
            .collect::<Result<_>>()?;
        let mut data = Array4::<f64>::zeros((nx, ny, nz, nt));
        let out = data
            .as_slice_mut()
            .ok_or_else(|| OsipyError::Validation("a new array is in standard layout".into()))?;
        for (s, pixels) in frames.into_iter().flatten() {
            let (z, t) = (s / nt, s % nt);
            let (m, b) = self.slots[s].rescale;
            for j in 0..ny {
                let y = ny - 1 - j;
                for i in 0..nx {
                    out[((i * ny + y) * nz + z) * nt + t] = pixels[j * nx + i] * m + b;
                }
            }
        }
        Ok(data)
    }

    /// Where the frame times came from, in words.
    pub fn source(&self) -> String {
        format!("DICOM series {} in {}", self.info, self.dir.display())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| OsipyError::io(dir, format!("cannot list the folder: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| OsipyError::io(dir, format!("cannot list the folder: {e}")))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| OsipyError::io(&path, format!("cannot stat: {e}")))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn fmt_vec(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", s.join(", "))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_patterns() {
        assert!(glob_match("*dce*", "ax dce 3d"));
        assert!(glob_match("t1_?", "t1_a"));
        assert!(!glob_match("t1_?", "t1_ab"));
        assert!(glob_match("perf*", "perfusion"));
        assert!(!glob_match("perf", "perfusion"));
    }
}
