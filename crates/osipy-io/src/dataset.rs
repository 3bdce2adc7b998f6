//! The one input model: a 4D series with its geometry, dynamic axis (with
//! unit), mask and typed acquisition parameters, each value recording where it
//! came from. NIfTI inputs produce it today; DICOM and BIDS readers will
//! produce the same type.

use crate::inputs::{AnySeries, InputSpec, Inputs, Series, TIME_FILE};
use crate::Geometry;
use ndarray::{Array, Array3, Array4, ArrayView2, Dimension};
use osipy_core::{check_increasing, OsipyError, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// A value and where it came from (`data.time_file`, a sidecar path, a
/// config key, a header field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from, in words a user can find.
    pub source: String,
}

impl<T> Sourced<T> {
    /// `value` from `source`.
    pub fn new(value: T, source: impl Into<String>) -> Self {
        Sourced {
            value,
            source: source.into(),
        }
    }
}

/// Unit of the dynamic (last) axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AxisUnit {
    /// Frame times, seconds.
    Seconds,
    /// Diffusion weighting b, s/mm^2.
    SecondsPerMm2,
}

impl AxisUnit {
    /// What the values are, in words (`frame times`, `b-values`).
    pub fn quantity(&self) -> &'static str {
        match self {
            AxisUnit::Seconds => "frame times",
            AxisUnit::SecondsPerMm2 => "b-values",
        }
    }

    /// The unit as written in messages.
    pub fn symbol(&self) -> &'static str {
        match self {
            AxisUnit::Seconds => "s",
            AxisUnit::SecondsPerMm2 => "s/mm^2",
        }
    }
}

/// The values of the last axis with their unit and source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicAxis {
    /// One value per volume.
    pub values: Vec<f64>,
    /// Their unit.
    pub unit: AxisUnit,
    /// Where they came from.
    pub source: String,
}

/// Acquisition parameters shared by the modalities, in SI units (as BIDS).
/// Each is optional and records its source; a modality overlays its config
/// values (which win) and asks for what it needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Acquisition {
    /// Repetition time (s); BIDS `RepetitionTime`.
    pub repetition_time: Option<Sourced<f64>>,
    /// Echo time (s); BIDS `EchoTime`.
    pub echo_time: Option<Sourced<f64>>,
    /// Flip angle of the series (degrees); BIDS `FlipAngle`.
    pub flip_angle: Option<Sourced<f64>>,
    /// Main field (T); BIDS `MagneticFieldStrength`.
    pub field_strength: Option<Sourced<f64>>,
}

impl Acquisition {
    /// The parameters the JSON sidecar of `role` gives (BIDS names; a DICOM
    /// series' headers stand in for it), each with its source; none without
    /// a sidecar.
    pub fn from_sidecar(inputs: &Inputs, role: &str) -> Result<Acquisition> {
        let mut acquisition = Acquisition::default();
        if let Some((sidecar, json)) = inputs.sidecar(role)? {
            let src = sidecar.display().to_string();
            let get = |key: &str| {
                json.get(key)
                    .and_then(|v| v.as_f64())
                    .map(|v| Sourced::new(v, format!("{src} ({key})")))
            };
            acquisition.repetition_time = get("RepetitionTime");
            acquisition.echo_time = get("EchoTime");
            acquisition.flip_angle = get("FlipAngle");
            acquisition.field_strength = get("MagneticFieldStrength");
        }
        Ok(acquisition)
    }
}

/// The element type a series is held in: f64, or f32 when every value is
/// exactly a float32 ([`Dataset::load_any`]).
pub trait Sample: Copy + Default + Send + Sync + Into<f64> + std::fmt::Debug + 'static {
    /// `v` as `Self`: exact for the values a reader stores as `Self`.
    fn from_f64(v: f64) -> Self;
    /// The array as f64: no copy for f64.
    fn widen<D: Dimension>(a: Array<Self, D>) -> Array<f64, D>;
}

impl Sample for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn widen<D: Dimension>(a: Array<Self, D>) -> Array<f64, D> {
        a
    }
}

impl Sample for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn widen<D: Dimension>(a: Array<Self, D>) -> Array<f64, D> {
        a.mapv(f64::from)
    }
}

/// A 4D dataset: data in standard (C) layout so each voxel's series is
/// contiguous, its geometry, the dynamic axis, mask and acquisition. The
/// values are f64 ([`Dataset::load`]), or float32 when that is exact
/// ([`Dataset::load_any`]).
#[derive(Debug, Clone)]
pub struct Dataset<T = f64> {
    /// Values (x, y, z, volumes), standard layout.
    pub data: Array4<T>,
    /// Voxel-to-world geometry of the primary series (outputs use it).
    pub geometry: Geometry,
    /// Values of the last axis; `None` until known (the header's time step
    /// gives frame times in seconds when set).
    pub axis: Option<DynamicAxis>,
    /// Analysed voxels (x, y, z).
    pub mask: Array3<bool>,
    /// Acquisition parameters.
    pub acquisition: Acquisition,
    /// The files read, by role.
    pub files: BTreeMap<String, String>,
}

/// A dataset held as float32 (when exact) or f64 ([`Dataset::load_any`]).
#[derive(Debug, Clone)]
pub enum AnyDataset {
    /// Every value of the series is exactly a float32.
    F32(Dataset<f32>),
    /// Any other series.
    F64(Dataset<f64>),
}

impl Dataset {
    /// Reads the primary series of `spec` (its role) and the mask from
    /// `inputs`, with the acquisition parameters of its JSON sidecar (BIDS
    /// names) and frame times from the header's time step. A missing series
    /// is an error naming the role and what it holds.
    pub fn load(inputs: &Inputs, spec: &InputSpec) -> Result<Dataset> {
        require(inputs, spec)?;
        let Some(series) = inputs.series(spec.role)? else {
            return Err(OsipyError::Validation(format!(
                "data.{} could not be read",
                spec.role
            )));
        };
        Dataset::from_series(inputs, spec.role, series)
    }

    /// [`Dataset::load`], holding the series as float32 when every value is
    /// exactly a float32 (uint8, int16, uint16 or float32 NIfTI samples
    /// without scaling): half the memory, the same values once widened.
    pub fn load_any(inputs: &Inputs, spec: &InputSpec) -> Result<AnyDataset> {
        require(inputs, spec)?;
        match inputs.series_any(spec.role)? {
            Some(AnySeries::F32(s)) => Ok(AnyDataset::F32(Dataset::from_series(inputs, spec.role, s)?)),
            Some(AnySeries::F64(s)) => Ok(AnyDataset::F64(Dataset::from_series(inputs, spec.role, s)?)),
            None => Err(OsipyError::Validation(format!(
                "data.{} could not be read",
                spec.role
            ))),
        }
    }
}

/// A missing primary series is an error naming its role and what it holds.
fn require(inputs: &Inputs, spec: &InputSpec) -> Result<()> {
    inputs
        .require(
            spec.role,
            "every run of this modality",
            &format!("set data.{}: {}", spec.role, spec.description),
        )
        .map(|_| ())
}

impl<T: Sample> Dataset<T> {
    /// The dataset of `series`: standard layout, the mask of `inputs`, the
    /// dynamic axis and the sidecar's acquisition parameters.
    fn from_series(inputs: &Inputs, role: &str, series: Series<T>) -> Result<Dataset<T>> {
        let Series {
            data,
            geometry,
            time_step,
            frame_times,
            path,
        } = series;
        let data = crate::nifti_io::into_standard_layout(data);
        let s = data.shape();
        let grid = [s[0], s[1], s[2]];
        let n = s[3];
        let mask = inputs.mask(grid, &geometry)?;
        let listed = frame_times.map(|values| DynamicAxis {
            values,
            unit: AxisUnit::Seconds,
            source: inputs.dicom(role).map_or_else(
                || path.display().to_string(),
                |d| format!("acquisition times of {}", d.source()),
            ),
        });
        // A zero, negative or non-finite time step gives no frame times.
        let axis = listed.or_else(|| {
            time_step
                .filter(|dt| *dt > 0.0 && dt.is_finite())
                .map(|dt| DynamicAxis {
                    values: (0..n).map(|i| i as f64 * dt).collect(),
                    unit: AxisUnit::Seconds,
                    source: format!("{} (pixdim[4] = {dt} s)", path.display()),
                })
        });
        let acquisition = Acquisition::from_sidecar(inputs, role)?;
        Ok(Dataset {
            data,
            geometry,
            axis,
            mask,
            acquisition,
            files: inputs.record(),
        })
    }

    /// Spatial grid (x, y, z).
    pub fn grid(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Number of volumes (frames, b-values).
    pub fn n_volumes(&self) -> usize {
        self.data.shape()[3]
    }

    /// Number of voxels in the grid.
    pub fn n_voxels(&self) -> usize {
        self.grid().iter().product()
    }

    /// The data as `voxels x volumes` rows (a view, no copy).
    pub fn voxels(&self) -> Result<ArrayView2<'_, T>> {
        let (v, n) = (self.n_voxels(), self.n_volumes());
        self.data
            .view()
            .into_shape_with_order((v, n))
            .map_err(|e| OsipyError::data("dataset layout", e.to_string(), "a standard-layout 4D array"))
    }

    /// The mask as one flag per voxel (row-major over x, y, z).
    pub fn flat_mask(&self) -> Vec<bool> {
        self.mask.iter().copied().collect()
    }

    /// Frame times in seconds for `needed_for`: from the `data.time_file`
    /// input (one time per line) when given, else the series' own time axis;
    /// an error naming `data.time_file` when neither exists.
    /// A discovered (not named) time file never overrides a time axis the
    /// series' header gives.
    pub fn frame_times(&mut self, inputs: &Inputs, needed_for: &str) -> Result<Vec<f64>> {
        let header_has_times = matches!(&self.axis, Some(a) if a.unit == AxisUnit::Seconds);
        if header_has_times && inputs.is_discovered(TIME_FILE.role) {
            tracing::info!(
                file = %inputs.path(TIME_FILE.role).map_or(String::new(), |p| p.display().to_string()),
                "ignoring the discovered time file: the series header gives the frame times (name it as data.time_file to use it)"
            );
        } else if let Some(t) = inputs.table(TIME_FILE.role, 1)? {
            let src = format!(
                "data.time_file {}",
                inputs
                    .path("time_file")
                    .map_or(String::new(), |p| p.display().to_string())
            );
            self.set_axis(t.into_iter().map(|r| r[0]).collect(), AxisUnit::Seconds, src)?;
        }
        match &self.axis {
            Some(a) if a.unit == AxisUnit::Seconds => {
                if a.values.len() < MIN_FRAMES {
                    return Err(OsipyError::data(
                        format!("frames of the dynamic series ({})", a.source),
                        a.values.len().to_string(),
                        format!("at least {MIN_FRAMES} frames for {needed_for}"),
                    ));
                }
                check_frame_times(&a.values, &a.source)?;
                Ok(a.values.clone())
            }
            _ => Err(OsipyError::MissingParameter {
                name: "data.time_file".into(),
                needed_for: needed_for.into(),
                hint: "the dynamic series has no positive time step in pixdim[4]; give a file of frame times in seconds"
                    .into(),
            }),
        }
    }

    /// Sets the dynamic axis, checking one finite value per volume.
    pub fn set_axis(&mut self, values: Vec<f64>, unit: AxisUnit, source: impl Into<String>) -> Result<()> {
        let source = source.into();
        if values.len() != self.n_volumes() {
            return Err(OsipyError::data(
                format!("number of {} ({}) from {source}", unit.quantity(), unit.symbol()),
                values.len().to_string(),
                format!("{}, one per volume of the series", self.n_volumes()),
            ));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(OsipyError::data(
                format!("a value from {source}"),
                bad.to_string(),
                "finite numbers",
            ));
        }
        if unit == AxisUnit::Seconds {
            check_increasing(&format!("frame times (s) from {source}"), &values)?;
        }
        self.axis = Some(DynamicAxis { values, unit, source });
        Ok(())
    }
}

/// Fewest frames a dynamic series may have.
pub const MIN_FRAMES: usize = 3;

/// Longest plausible series (s): three hours. Longer ones are frame times
/// in milliseconds.
pub const MAX_SERIES_SECONDS: f64 = 3.0 * 3600.0;

/// Shortest plausible mean frame spacing (s): no perfusion series images a
/// volume in under 50 ms; smaller spacings are frame times in minutes.
pub const MIN_FRAME_SPACING: f64 = 0.05;

/// Frame times (s) from `source` that look like milliseconds or minutes are
/// an error that says so.
pub fn check_frame_times(times: &[f64], source: &str) -> Result<()> {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return Ok(());
    };
    let span = last - first;
    let spacing = span / (times.len().max(2) - 1) as f64;
    let hint = if span > MAX_SERIES_SECONDS {
        "they look like milliseconds: give seconds"
    } else if times.len() > 1 && spacing < MIN_FRAME_SPACING {
        "they look like minutes: give seconds"
    } else {
        return Ok(());
    };
    Err(OsipyError::data(
        format!("frame times from {source}"),
        format!("{} frames from {first} to {last} (mean spacing {spacing})", times.len()),
        format!(
            "seconds, spacing at least {MIN_FRAME_SPACING} s and a series under {MAX_SERIES_SECONDS} s; {hint}"
        ),
    ))
}
