//! Input files by role: resolution, auto-discovery and the readers a modality
//! needs (4D series, 3D volumes, numeric tables, value lists, JSON sidecars).
//!
//! A modality declares its roles as [`InputSpec`]s; the `[data]` table of a
//! config names files (or inline values) per role, and roles it leaves unset
//! are discovered in the data folder by the role's file-name rule. Modality
//! crates read through [`Inputs`], never through `std::fs`.
//!
//! A file role may name a folder instead: it is read as a DICOM series
//! ([`crate::dicom`]), `data.series` picking the series when the folder holds
//! several. Its headers stand in for the JSON sidecar ([`Inputs::sidecar`])
//! and give the frame times ([`Series::frame_times`]).

use crate::bids::{self, Participant};
use crate::dicom::{self, DicomSeries, SeriesSelector};
use crate::{read_3d, read_4d, AnySeries4, Geometry};
use ndarray::{Array3, Array4};
use osipy_core::{OsipyError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a role holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A file (NIfTI image or text table), named by a path.
    File,
    /// Inline numbers in the config (e.g. `b_values = [0, 50, 800]`).
    Values,
    /// Which series of a DICOM folder: a number or text, or a table of them
    /// by role (`series = { asl = 5, m0 = 6 }`).
    Selector,
    /// A word (`format = "bids"`, `subject = "01"`).
    Text,
}

/// One input role of a modality.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    /// The `[data]` key, e.g. `dynamic`.
    pub role: &'static str,
    /// What the file holds, with its unit; shown in `dump-defaults`.
    pub description: &'static str,
    /// An example value for the commented template (`"dce.nii.gz"`, `[0.0, 50.0]`).
    pub example: &'static str,
    /// File or inline values.
    pub kind: InputKind,
    /// Discovery rule on the lower-cased file name; `None`: never discovered.
    pub discover: Option<fn(&str) -> bool>,
}

/// The mask role every modality shares.
pub const MASK: InputSpec = InputSpec {
    role: "mask",
    description: "analysis mask (NIfTI; non-zero = analysed)",
    example: "\"mask.nii.gz\"",
    kind: InputKind::File,
    discover: Some(|n| is_nifti(n) && n.contains("mask")),
};

/// The DICOM series choice every modality shares (see [`crate::dicom`]).
pub const SERIES: InputSpec = InputSpec {
    role: "series",
    description: "DICOM folder with several series: series number, UID or description pattern (* ?); a table by role (e.g. { asl = 5, m0 = 6 }) for several folders",
    example: "7",
    kind: InputKind::Selector,
    discover: None,
};

/// How the data folder is laid out (see [`crate::bids`]).
pub const FORMAT: InputSpec = InputSpec {
    role: "format",
    description: "\"files\" (default: files named here or discovered in DATA_PATH) or \"bids\" (DATA_PATH is a BIDS dataset; set subject)",
    example: "\"bids\"",
    kind: InputKind::Text,
    discover: None,
};

/// The BIDS subject of a run.
pub const SUBJECT: InputSpec = InputSpec {
    role: "subject",
    description: "format = \"bids\": the subject label, without sub-",
    example: "\"01\"",
    kind: InputKind::Text,
    discover: None,
};

/// The BIDS session of a run.
pub const SESSION: InputSpec = InputSpec {
    role: "session",
    description: "format = \"bids\": the session label, without ses- (when the subject has sessions)",
    example: "\"1\"",
    kind: InputKind::Text,
    discover: None,
};

/// The `[data]` keys every modality has besides its own roles.
pub const SHARED: [InputSpec; 5] = [MASK, SERIES, FORMAT, SUBJECT, SESSION];

/// The frame-times role of dynamic series (read by
/// [`crate::Dataset::frame_times`]).
pub const TIME_FILE: InputSpec = InputSpec {
    role: "time_file",
    description: "frame times (s), one per line, else from the NIfTI header; discovered: times.txt|time.txt",
    example: "\"times.txt\"",
    kind: InputKind::File,
    discover: Some(|n| matches!(n, "times.txt" | "time.txt")),
};

/// Whether a (lower-cased) file name is a NIfTI image.
pub fn is_nifti(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// A `[data]` value: a path, or inline numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataValue {
    /// A file path, relative to the data folder or absolute.
    Path(String),
    /// Inline values.
    Values(Vec<f64>),
    /// One number (`series = 7`).
    Number(f64),
    /// Values by role (`series = { asl = 5, m0 = 6 }`).
    Table(BTreeMap<String, DataValue>),
}

/// A 4D series as read: data, geometry and the time step of its header.
#[derive(Debug, Clone)]
pub struct Series<T = f64> {
    /// Values (x, y, z, volumes).
    pub data: Array4<T>,
    /// Voxel-to-world geometry.
    pub geometry: Geometry,
    /// `pixdim[4]` in seconds, when the header has one.
    pub time_step: Option<f64>,
    /// Frame start times (s) from the first, when the headers list them
    /// (DICOM acquisition times).
    pub frame_times: Option<Vec<f64>>,
    /// The file (or DICOM folder).
    pub path: PathBuf,
}

/// A series held as float32 (when exact) or f64 ([`Inputs::series_any`]).
#[derive(Debug, Clone)]
pub enum AnySeries {
    /// Every value is exactly a float32.
    F32(Series<f32>),
    /// Any other series.
    F64(Series<f64>),
}

/// The resolved inputs of one run.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    dir: PathBuf,
    files: BTreeMap<&'static str, PathBuf>,
    values: BTreeMap<&'static str, Vec<f64>>,
    discovered: std::collections::BTreeSet<&'static str>,
    dicom: BTreeMap<&'static str, Arc<DicomSeries>>,
    bids: Option<(PathBuf, Participant)>,
}

impl Inputs {
    /// Resolves `data` against `specs` (plus [`MASK`]): given paths are taken
    /// as they are (relative to `dir`), unset file roles are discovered in
    /// `dir`. A key that is no role is an error listing the roles; two
    /// candidates for one role is an error naming both.
    pub fn resolve(dir: &Path, specs: &[InputSpec], data: &BTreeMap<String, DataValue>) -> Result<Inputs> {
        Inputs::check(specs, data)?;
        let all: Vec<&InputSpec> = specs.iter().chain(SHARED.iter()).collect();
        let mut inputs = Inputs {
            dir: dir.to_path_buf(),
            ..Inputs::default()
        };
        inputs.bids = participant(data)?.map(|p| (dir.to_path_buf(), p));
        let search: Vec<PathBuf> = match &inputs.bids {
            Some((root, p)) => bids::search_dirs(root, p)?,
            None => vec![dir.to_path_buf()],
        };
        let prefix = inputs.bids.as_ref().map(|(_, p)| format!("{}_", p.prefix()));
        for spec in all {
            match (data.get(spec.role), spec.kind) {
                (_, InputKind::Selector | InputKind::Text) => {}
                (Some(DataValue::Path(p)), InputKind::File) => {
                    let path = resolve_path(dir, p);
                    if dicom::is_dicom_folder(&path) {
                        let selector = selector(data, spec.role)?;
                        let series = dicom::scan(&path, selector.as_ref()).map_err(|e| {
                            OsipyError::Validation(format!(
                                "data.{} names a folder, read as a DICOM series: {e}",
                                spec.role
                            ))
                        })?;
                        inputs.dicom.insert(spec.role, Arc::new(series));
                    }
                    inputs.files.insert(spec.role, path);
                }
                (Some(DataValue::Values(v)), InputKind::Values) => {
                    inputs.values.insert(spec.role, v.clone());
                }
                (Some(_), kind) => return Err(wrong_kind(spec.role, kind)),
                (None, _) => {
                    if let Some(rule) = spec.discover {
                        if let Some(p) = find_file(&search, prefix.as_deref(), spec.role, rule)? {
                            inputs.files.insert(spec.role, p);
                            inputs.discovered.insert(spec.role);
                        }
                    }
                }
            }
        }
        Ok(inputs)
    }

    /// Checks `data` against `specs` (plus [`MASK`]) without touching files:
    /// every key is a role and every value of the role's kind (what
    /// [`Inputs::resolve`] checks first; `osipy validate` runs it too).
    pub fn check(specs: &[InputSpec], data: &BTreeMap<String, DataValue>) -> Result<()> {
        let all: Vec<&InputSpec> = specs.iter().chain(SHARED.iter()).collect();
        for (key, value) in data {
            let Some(spec) = all.iter().find(|s| s.role == key) else {
                return Err(OsipyError::UnknownName {
                    kind: "[data] key".into(),
                    name: key.clone(),
                    valid: all.iter().map(|s| s.role.to_string()).collect(),
                });
            };
            match (value, spec.kind) {
                (DataValue::Path(_), InputKind::File) | (DataValue::Values(_), InputKind::Values) => {}
                (DataValue::Path(_) | DataValue::Number(_), InputKind::Selector) => {}
                (DataValue::Path(_), InputKind::Text) => {}
                (DataValue::Table(t), InputKind::Selector) => {
                    for (role, v) in t {
                        if !all.iter().any(|s| s.role == role && s.kind == InputKind::File) {
                            return Err(OsipyError::UnknownName {
                                kind: "data.series role".into(),
                                name: role.clone(),
                                valid: all
                                    .iter()
                                    .filter(|s| s.kind == InputKind::File)
                                    .map(|s| s.role.to_string())
                                    .collect(),
                            });
                        }
                        if !matches!(v, DataValue::Path(_) | DataValue::Number(_)) {
                            return Err(OsipyError::Validation(format!(
                                "data.series.{role} must be a series number, UID or description pattern"
                            )));
                        }
                    }
                }
                (_, kind) => return Err(wrong_kind(spec.role, kind)),
            }
        }
        Ok(())
    }

    /// The BIDS dataset root and participant, for `data.format = "bids"`.
    pub fn bids(&self) -> Option<(&Path, &Participant)> {
        self.bids.as_ref().map(|(r, p)| (r.as_path(), p))
    }

    /// The DICOM series of `role`, when its path is a folder.
    pub fn dicom(&self, role: &str) -> Option<&DicomSeries> {
        self.dicom.get(role).map(|d| d.as_ref())
    }

    /// The data folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `role`, if given or discovered.
    pub fn path(&self, role: &str) -> Option<&Path> {
        self.files.get(role).map(PathBuf::as_path)
    }

    /// Whether the file of `role` was found in the data folder rather than
    /// named in `[data]`.
    pub fn is_discovered(&self, role: &str) -> bool {
        self.discovered.contains(role)
    }

    /// The inline values of `role`, if given.
    pub fn values(&self, role: &str) -> Option<&[f64]> {
        self.values.get(role).map(Vec::as_slice)
    }

    /// The file of `role`, or a missing-parameter error saying what needs it.
    pub fn require(&self, role: &str, needed_for: &str, hint: &str) -> Result<&Path> {
        self.path(role).ok_or_else(|| OsipyError::MissingParameter {
            name: format!("data.{role}"),
            needed_for: needed_for.into(),
            hint: format!("{hint} (searched {})", self.dir.display()),
        })
    }

    /// Reads the 4D series of `role`, if there is one.
    pub fn series(&self, role: &str) -> Result<Option<Series>> {
        let Some(p) = self.path(role) else {
            return Ok(None);
        };
        if let Some(d) = self.dicom(role) {
            return Ok(Some(Series {
                data: d.read()?,
                geometry: d.geometry.clone(),
                time_step: None,
                frame_times: d.frame_times.clone(),
                path: p.to_path_buf(),
            }));
        }
        let (data, geometry, time_step) = read_4d(p)?;
        Ok(Some(Series {
            data,
            geometry,
            time_step,
            frame_times: None,
            path: p.to_path_buf(),
        }))
    }

    /// The shape (x, y, z, volumes) and geometry of the 4D series of `role`
    /// from its header alone (a NIfTI header, or the DICOM series' own), as
    /// [`Inputs::series`] would give them; `None` without such a series, or
    /// when its header cannot be read here (reading the series then says
    /// what is wrong).
    pub fn series_header(&self, role: &str) -> Option<([usize; 4], Geometry)> {
        let p = self.path(role)?;
        if let Some(d) = self.dicom(role) {
            return Some((d.shape, d.geometry.clone()));
        }
        crate::nifti_io::read_4d_header(p)
    }

    /// [`Inputs::series`], holding the values as float32 when every value
    /// is exactly a float32 (see [`crate::read_4d_any`]): half the memory,
    /// the same values once widened to f64.
    pub fn series_any(&self, role: &str) -> Result<Option<AnySeries>> {
        let Some(p) = self.path(role) else {
            return Ok(None);
        };
        if self.dicom(role).is_some() {
            return Ok(self.series(role)?.map(AnySeries::F64));
        }
        fn series<T>((data, geometry, time_step): (Array4<T>, Geometry, Option<f64>), p: &Path) -> Series<T> {
            Series {
                data,
                geometry,
                time_step,
                frame_times: None,
                path: p.to_path_buf(),
            }
        }
        Ok(Some(match crate::read_4d_any(p)? {
            AnySeries4::F32(s) => AnySeries::F32(series(s, p)),
            AnySeries4::F64(s) => AnySeries::F64(series(s, p)),
        }))
    }

    /// Reads the 3D image of `role` (a NIfTI, or a DICOM series of one
    /// volume) with its geometry.
    fn image_3d(&self, role: &str, p: &Path) -> Result<(Array3<f64>, Geometry)> {
        let Some(d) = self.dicom(role) else {
            return read_3d(p);
        };
        let [nx, ny, nz, nt] = d.shape;
        if nt != 1 {
            return Err(OsipyError::data(
                format!("data.{role} ({})", d.source()),
                format!("{nt} volumes"),
                "one volume (a 3D image)",
            ));
        }
        let v = d
            .read()?
            .into_shape_with_order((nx, ny, nz))
            .map_err(|e| OsipyError::Validation(e.to_string()))?;
        Ok((v, d.geometry.clone()))
    }

    /// Reads the 3D volume of `role`, if there is one, checking that it lies
    /// on the `grid` (x, y, z) of the primary series.
    pub fn volume(&self, role: &str, grid: [usize; 3]) -> Result<Option<Array3<f64>>> {
        let Some(p) = self.path(role) else {
            return Ok(None);
        };
        let (v, _) = self.image_3d(role, p)?;
        check_grid(role, p, v.shape(), grid)?;
        Ok(Some(v))
    }

    /// The analysis mask on `grid` (non-zero, finite = analysed); every voxel
    /// when no mask is given.
    ///
    /// The mask must lie where the series lies: its voxel-to-world affine
    /// must match `geometry`'s (to 1e-3 of each entry's size, at least
    /// 1e-3 mm), else it is from another scan or was resampled.
    pub fn mask(&self, grid: [usize; 3], geometry: &Geometry) -> Result<Array3<bool>> {
        let Some(p) = self.path(MASK.role) else {
            return Ok(Array3::from_elem(grid, true));
        };
        let (m, g) = self.image_3d(MASK.role, p)?;
        check_grid(MASK.role, p, m.shape(), grid)?;
        let differs = g
            .affine
            .iter()
            .flatten()
            .zip(geometry.affine.iter().flatten())
            .any(|(a, b)| (a - b).abs() > 1e-3 * a.abs().max(b.abs()).max(1.0));
        if differs {
            return Err(OsipyError::data(
                format!("voxel-to-world affine of data.mask {}", p.display()),
                format!("{:?}", g.affine),
                format!(
                    "the series' affine {:?} (a mask from another scan, or resampled?)",
                    geometry.affine
                ),
            ));
        }
        Ok(m.mapv(|v| v.is_finite() && v != 0.0))
    }

    /// Rows of `columns` numbers from the text file of `role`, if there is one.
    pub fn table(&self, role: &str, columns: usize) -> Result<Option<Vec<Vec<f64>>>> {
        self.path(role).map(|p| read_numbers(p, columns)).transpose()
    }

    /// A list of numbers from the text file of `role`: one line of values
    /// (FSL `.bval`) or one value per line.
    pub fn value_list(&self, role: &str) -> Result<Option<Vec<f64>>> {
        self.path(role).map(read_value_list).transpose()
    }

    /// The text of `role`'s file (e.g. a BIDS `.tsv`), if there is one.
    pub fn text(&self, role: &str) -> Result<Option<String>> {
        self.path(role).map(read_text_file).transpose()
    }

    /// The JSON sidecar of `role`'s image (`name.json` beside `name.nii[.gz]`),
    /// if there is one; for a DICOM series, its headers in BIDS names (see
    /// [`crate::dicom`]).
    pub fn sidecar(&self, role: &str) -> Result<Option<(PathBuf, serde_json::Value)>> {
        let Some(p) = self.path(role) else {
            return Ok(None);
        };
        if let Some(d) = self.dicom(role) {
            return Ok(Some((p.join("(DICOM headers)"), d.sidecar.clone())));
        }
        if let Some((root, _)) = self.bids.as_ref().filter(|(root, _)| p.starts_with(root)) {
            return bids::sidecar(root, p);
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
        let sidecar = p.with_file_name(format!("{stem}.json"));
        if !sidecar.is_file() {
            return Ok(None);
        }
        let text = read_text_file(&sidecar)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| OsipyError::io(&sidecar, format!("not valid JSON: {e}")))?;
        Ok(Some((sidecar, v)))
    }

    /// Every resolved file and inline value by role, for the run summary.
    pub fn record(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = self
            .files
            .iter()
            .map(|(k, v)| match self.dicom(k) {
                Some(d) => (k.to_string(), d.source()),
                None => (k.to_string(), v.display().to_string()),
            })
            .collect();
        for (k, v) in &self.values {
            m.insert(k.to_string(), format!("data.{k} ({} values)", v.len()));
        }
        m
    }
}

fn wrong_kind(role: &str, kind: InputKind) -> OsipyError {
    OsipyError::Validation(format!(
        "data.{role} must be {}",
        match kind {
            InputKind::File => "a file path (a string)",
            InputKind::Values => "a list of numbers",
            InputKind::Selector => "a series number, UID or description pattern, or a table of them by role",
            InputKind::Text => "a word in quotes",
        }
    ))
}

/// The DICOM series selector of `role`: `data.series.<role>`, else a plain
/// `data.series`.
fn selector(data: &BTreeMap<String, DataValue>, role: &str) -> Result<Option<SeriesSelector>> {
    let value = match data.get(SERIES.role) {
        Some(DataValue::Table(t)) => t.get(role),
        other => other,
    };
    Ok(match value {
        None => None,
        Some(DataValue::Path(s)) => Some(SeriesSelector::parse(s)),
        Some(DataValue::Number(n)) if n.fract() == 0.0 => Some(SeriesSelector::Number(*n as i64)),
        Some(other) => {
            return Err(OsipyError::data(
                "data.series",
                format!("{other:?}"),
                "a series number, UID or description pattern",
            ))
        }
    })
}

/// Errors unless `shape` is the primary series' grid.
pub fn check_grid(role: &str, path: &Path, shape: &[usize], grid: [usize; 3]) -> Result<()> {
    if shape.get(..3) != Some(&grid[..]) {
        return Err(OsipyError::data(
            format!("spatial shape of data.{role} {}", path.display()),
            format!("{:?}", &shape[..shape.len().min(3)]),
            format!("{grid:?}, the grid of the primary series"),
        ));
    }
    Ok(())
}

/// A `[data]` path as given: absolute, or relative to `dir`.
fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        dir.join(p)
    }
}

/// The one file in `dir` whose lower-cased name satisfies `rule`, if any;
/// two or more candidates are an error naming them and `data.<role>`.
/// The one file in `dirs` whose lower-cased name passes `rule` (and, for
/// BIDS, starts with the participant's `prefix`).
fn find_file(
    dirs: &[PathBuf],
    prefix: Option<&str>,
    role: &str,
    rule: fn(&str) -> bool,
) -> Result<Option<PathBuf>> {
    let mut hits: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        hits.extend(
            std::fs::read_dir(dir)
                .map_err(|e| OsipyError::Io {
                    path: dir.into(),
                    message: "cannot list the data folder".into(),
                    source: Some(e),
                })?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| prefix.is_none_or(|p| n.starts_with(p)) && rule(&n.to_lowercase()))
                .map(|n| dir.join(n)),
        );
    }
    hits.sort();
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        _ => Err(OsipyError::Validation(format!(
            "several files could be data.{role}: {}; name one explicitly as data.{role}",
            hits.iter()
                .map(|h| h.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The BIDS participant of `data` (`format = "bids"`), checked.
pub fn participant(data: &BTreeMap<String, DataValue>) -> Result<Option<Participant>> {
    let text = |key: &str| match data.get(key) {
        Some(DataValue::Path(s)) => Some(s.clone()),
        _ => None,
    };
    match text(FORMAT.role).as_deref() {
        None | Some("files") => {
            for key in [SUBJECT.role, SESSION.role] {
                if data.contains_key(key) {
                    return Err(OsipyError::Validation(format!(
                        "data.{key} applies to BIDS datasets only: set data.format = \"bids\""
                    )));
                }
            }
            Ok(None)
        }
        Some("bids") => {
            let subject = text(SUBJECT.role).ok_or_else(|| OsipyError::MissingParameter {
                name: "data.subject".into(),
                needed_for: "data.format = \"bids\"".into(),
                hint: "the subject label without sub-, e.g. subject = \"01\"".into(),
            })?;
            bids::check_label("data.subject", &subject)?;
            let session = text(SESSION.role);
            if let Some(s) = &session {
                bids::check_label("data.session", s)?;
            }
            Ok(Some(Participant { subject, session }))
        }
        Some(other) => Err(OsipyError::UnknownName {
            kind: "data.format".into(),
            name: other.into(),
            valid: vec!["files".into(), "bids".into()],
        }),
    }
}

/// Largest text input read (configs, tables, sidecars, `aslcontext.tsv`).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a text input: a regular file (not a folder, device or FIFO, which
/// could block or never end) of at most [`MAX_TEXT_BYTES`], in UTF-8.
pub fn read_text_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |message: &str, e: std::io::Error| OsipyError::Io {
        path: path.into(),
        message: message.into(),
        source: Some(e),
    };
    let meta = std::fs::metadata(path).map_err(|e| io("cannot read", e))?;
    if meta.is_dir() {
        return Err(OsipyError::io(path, "is a folder, not a text file"));
    }
    if !meta.is_file() {
        return Err(OsipyError::io(
            path,
            "is not a regular file (a device, FIFO or socket); give a text file",
        ));
    }
    let too_big = |n: u64| {
        OsipyError::io(
            path,
            format!(
                "is {n} bytes; text inputs are read up to {} MiB",
                MAX_TEXT_BYTES >> 20
            ),
        )
    };
    if meta.len() > MAX_TEXT_BYTES {
        return Err(too_big(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| io("cannot open", e))?;
    let mut text = String::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io("cannot read as UTF-8 text", e))?;
    if text.len() as u64 > MAX_TEXT_BYTES {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// Numbers in a text file (comma, semicolon, tab or whitespace separated),
/// `columns` per row; lines that do not parse (a header) are skipped only
/// before the first numeric row.
pub fn read_numbers(path: &Path, columns: usize) -> Result<Vec<Vec<f64>>> {
    parse_numbers(&read_text_file(path)?, path, columns)
}

/// [`read_numbers`] on text already read (`path` names it in errors).
pub fn parse_numbers(text: &str, path: &Path, columns: usize) -> Result<Vec<Vec<f64>>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed: std::result::Result<Vec<f64>, _> = line
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::parse::<f64>)
            .collect();
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
                    format!("line {} is not numeric: \"{line}\"", i + 1),
                ))
            }
        }
    }
    if rows.is_empty() {
        return Err(OsipyError::io(path, "no numeric rows found"));
    }
    Ok(rows)
}

/// A list of numbers: one line of values (FSL `.bval`) or one per line.
pub fn read_value_list(path: &Path) -> Result<Vec<f64>> {
    parse_value_list(&read_text_file(path)?, path)
}

/// [`read_value_list`] on text already read (`path` names it in errors).
pub fn parse_value_list(text: &str, path: &Path) -> Result<Vec<f64>> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() == 1 {
        lines[0]
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|x| {
                x.parse::<f64>()
                    .map_err(|_| OsipyError::io(path, format!("not a number: \"{x}\"")))
            })
            .collect()
    } else {
        Ok(parse_numbers(text, path, 1)?.into_iter().map(|r| r[0]).collect())
    }
}
