//! Header parsing: one file to a [`FileHeader`] with one [`FrameInfo`] per
//! frame (classic files have one), and the vendor parsers for b-values.

use super::SeriesInfo;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use osipy_core::{OsipyError, Result};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// MR Image Storage.
pub const MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Enhanced MR Image Storage.
pub const ENHANCED_MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4.1";
/// Media Storage Directory Storage (DICOMDIR).
const DICOMDIR: &str = "1.2.840.10008.1.3.10";

/// Scanner vendor, from `Manufacturer`; it decides where b-values are read
/// when the standard `DiffusionBValue` (0018,9087) is absent:
///
/// | vendor | tag | private creator | value |
/// |---|---|---|---|
/// | Siemens | (0019,100C) | `SIEMENS MR HEADER` | b (IS) |
/// | GE | (0043,1039) | `GEMS_PARM_01` | first value, less 10^9 multiples (IS) |
/// | Philips | (2001,1003) | `Philips Imaging DD 001` | b (FL) |
///
/// A private tag is trusted only when its block's creator (e.g. (0019,0010))
/// names the vendor's dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Siemens Healthineers.
    Siemens,
    /// GE HealthCare.
    Ge,
    /// Philips.
    Philips,
    /// Any other, or none given: standard tags only.
    Other,
}

impl Vendor {
    /// The vendor a `Manufacturer` value names.
    pub fn from_manufacturer(m: &str) -> Vendor {
        let m = m.to_uppercase();
        if m.contains("SIEMENS") {
            Vendor::Siemens
        } else if m.contains("PHILIPS") {
            Vendor::Philips
        } else if m.starts_with("GE") || m.contains("GENERAL ELECTRIC") {
            Vendor::Ge
        } else {
            Vendor::Other
        }
    }

    /// The b-value of a frame: the standard tag, else the vendor's private one.
    fn b_value(self, obj: &InMemDicomObject) -> Option<f64> {
        if let Some(b) = num(obj, tags::DIFFUSION_B_VALUE) {
            return Some(b);
        }
        let private = |group: u16, elem: u16, creator: &str| {
            let block = Tag(group, 0x0010 + (elem >> 8) - 0x10);
            let c = text(obj, block)?;
            c.to_uppercase()
                .contains(&creator.to_uppercase())
                .then(|| num(obj, Tag(group, elem)))
                .flatten()
        };
        match self {
            Vendor::Siemens => private(0x0019, 0x100C, "SIEMENS MR HEADER"),
            Vendor::Ge => private(0x0043, 0x1039, "GEMS_PARM_01").map(|b| b.rem_euclid(1e9)),
            Vendor::Philips => private(0x2001, 0x1003, "Philips Imaging DD 001"),
            Vendor::Other => None,
        }
    }
}

/// What one file is.
pub enum Scanned {
    /// No DICM marker: not a DICOM Part 10 file; ignored.
    NotDicom,
    /// A DICOMDIR index.
    Dicomdir,
    /// A DICOM object that is no MR image.
    Other {
        path: PathBuf,
        class: String,
        series_uid: String,
    },
    /// An MR image file.
    Image(Box<FileHeader>),
}

/// What the series assembly needs from one image file.
#[derive(Debug, Clone)]
pub struct FileHeader {
    pub path: PathBuf,
    pub series_uid: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub vendor: Vendor,
    pub rows: usize,
    pub cols: usize,
    /// (row spacing, column spacing), mm.
    pub pixel_spacing: [f64; 2],
    pub slice_thickness: Option<f64>,
    pub frames: Vec<FrameInfo>,
    /// BIDS-named acquisition parameters.
    pub params: Map<String, Value>,
}

/// One frame's position, orientation, order keys, rescale and b-value.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    /// Frame number within the file (0 for classic files).
    pub frame: u32,
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    pub temporal_position: Option<f64>,
    /// ms.
    pub trigger_time: Option<f64>,
    /// Seconds of the day (enhanced: of the date-time's day).
    pub acquisition_time: Option<f64>,
    pub instance: Option<f64>,
    /// (slope, intercept).
    pub rescale: (f64, f64),
    pub b_value: Option<f64>,
    /// ms.
    pub echo_time: Option<f64>,
}

/// Reads the header of `path` (up to the pixel data).
pub fn scan_file(path: &Path) -> Result<Scanned> {
    if path
        .file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
    {
        return Ok(Scanned::Dicomdir);
    }
    if !has_marker(path)? {
        return Ok(Scanned::NotDicom);
    }
    guarded(path, || scan_object(path))
}

/// Runs the third-party parser on `path`'s bytes: a panic in it (malformed
/// data it did not foresee) becomes an error naming the file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(OsipyError::io(
            path,
            "not a readable DICOM file: the DICOM parser failed on its malformed data",
        ))
    })
}

fn scan_object(path: &Path) -> Result<Scanned> {
    check_lengths(path)?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| OsipyError::io(path, format!("not a readable DICOM file: {e}")))?;
    let class = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string();
    if class == DICOMDIR {
        return Ok(Scanned::Dicomdir);
    }
    let series_uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    if class != MR_IMAGE && class != ENHANCED_MR_IMAGE {
        return Ok(Scanned::Other {
            path: path.to_path_buf(),
            class: class_name(&class),
            series_uid,
        });
    }
    if series_uid.is_empty() {
        return Err(missing(path, "SeriesInstanceUID (0020,000E)"));
    }
    let rows = num(&obj, tags::ROWS).ok_or_else(|| missing(path, "Rows (0028,0010)"))? as usize;
    let cols = num(&obj, tags::COLUMNS).ok_or_else(|| missing(path, "Columns (0028,0011)"))? as usize;
    if rows == 0 || cols == 0 {
        return Err(OsipyError::data(
            format!("image size of {}", path.display()),
            format!("{rows} x {cols}"),
            "at least one row and one column",
        ));
    }
    let vendor = Vendor::from_manufacturer(&text(&obj, tags::MANUFACTURER).unwrap_or_default());
    let enhanced = class == ENHANCED_MR_IMAGE;
    let shared = enhanced
        .then(|| first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE))
        .flatten();
    // A functional-group attribute: per-frame item first, then shared,
    // then the top level (classic files).
    let group_num = |per_frame: Option<&InMemDicomObject>, seq: Tag, tag: Tag| -> Option<Vec<f64>> {
        per_frame
            .and_then(|f| first_item(f, seq))
            .and_then(|g| nums(g, tag))
            .or_else(|| shared.and_then(|s| first_item(s, seq)).and_then(|g| nums(g, tag)))
            .or_else(|| nums(&obj, tag))
    };
    let spacing = group_num(None, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2 && v.iter().all(|x| *x > 0.0 && x.is_finite()))
        .ok_or_else(|| missing(path, "PixelSpacing (0028,0030), two positive numbers"))?;
    let slice_thickness = group_num(None, tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS).map(|v| v[0]);
    let frame_info = |frame: u32, item: Option<&InMemDicomObject>| -> Result<FrameInfo> {
        let position = group_num(item, tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
            .filter(|v| v.len() == 3)
            .ok_or_else(|| missing(path, "ImagePositionPatient (0020,0032), three numbers"))?;
        let orientation = group_num(
            item,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .filter(|v| v.len() == 6)
        .ok_or_else(|| missing(path, "ImageOrientationPatient (0020,0037), six numbers"))?;
        let slope = group_num(
            item,
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            tags::RESCALE_SLOPE,
        )
        .map_or(1.0, |v| v[0]);
        let intercept = group_num(
            item,
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            tags::RESCALE_INTERCEPT,
        )
        .map_or(0.0, |v| v[0]);
        let content = item.and_then(|f| first_item(f, tags::FRAME_CONTENT_SEQUENCE));
        let (temporal_position, acquisition_time, instance) = match content {
            Some(c) => (
                num(c, tags::TEMPORAL_POSITION_INDEX),
                text(c, tags::FRAME_ACQUISITION_DATE_TIME).and_then(|s| datetime_seconds(&s)),
                Some(frame as f64),
            ),
            None if enhanced => (None, None, Some(frame as f64)),
            None => (
                num(&obj, tags::TEMPORAL_POSITION_IDENTIFIER),
                text(&obj, tags::ACQUISITION_TIME).and_then(|s| time_seconds(&s)),
                num(&obj, tags::INSTANCE_NUMBER),
            ),
        };
        let echo_time = item
            .and_then(|f| first_item(f, tags::MR_ECHO_SEQUENCE))
            .and_then(|e| num(e, tags::EFFECTIVE_ECHO_TIME))
            .or_else(|| group_num(None, tags::MR_ECHO_SEQUENCE, tags::EFFECTIVE_ECHO_TIME).map(|v| v[0]))
            .or_else(|| num(&obj, tags::ECHO_TIME));
        let b_value = item
            .and_then(|f| first_item(f, tags::MR_DIFFUSION_SEQUENCE))
            .and_then(|d| num(d, tags::DIFFUSION_B_VALUE))
            .or_else(|| vendor.b_value(&obj));
        Ok(FrameInfo {
            frame,
            position: [position[0], position[1], position[2]],
            orientation: [0, 1, 2, 3, 4, 5].map(|i| orientation[i]),
            temporal_position,
            trigger_time: num(&obj, tags::TRIGGER_TIME),
            acquisition_time,
            instance,
            rescale: (slope, intercept),
            b_value,
            echo_time,
        })
    };
    let frames = if enhanced {
        let n = num(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1.0) as usize;
        let items = obj
            .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items())
            .unwrap_or(&[]);
        if items.len() != n {
            return Err(OsipyError::data(
                format!("PerFrameFunctionalGroupsSequence of {}", path.display()),
                format!("{} items", items.len()),
                format!("one per frame (NumberOfFrames = {n})"),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, it)| frame_info(i as u32, Some(it)))
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![frame_info(0, None)?]
    };
    // Acquisition parameters, BIDS names and units (s, degrees, T).
    let timing =
        |tag: Tag| group_num(None, tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE, tag).map(|v| v[0]);
    let echo = group_num(None, tags::MR_ECHO_SEQUENCE, tags::EFFECTIVE_ECHO_TIME).map(|v| v[0]);
    let mut params = Map::new();
    let mut put = |key: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            params.insert(key.into(), json!(v));
        }
    };
    put(
        "RepetitionTime",
        timing(tags::REPETITION_TIME).map(|ms| ms / 1000.0),
    );
    put(
        "EchoTime",
        echo.or_else(|| num(&obj, tags::ECHO_TIME)).map(|ms| ms / 1000.0),
    );
    put(
        "InversionTime",
        num(&obj, tags::INVERSION_TIME).map(|ms| ms / 1000.0),
    );
    put("FlipAngle", timing(tags::FLIP_ANGLE));
    put("MagneticFieldStrength", num(&obj, tags::MAGNETIC_FIELD_STRENGTH));
    put("SliceThickness", slice_thickness);
    for (key, tag) in [
        ("Manufacturer", tags::MANUFACTURER),
        ("ManufacturersModelName", tags::MANUFACTURER_MODEL_NAME),
        ("SeriesDescription", tags::SERIES_DESCRIPTION),
        ("ProtocolName", tags::PROTOCOL_NAME),
    ] {
        if let Some(v) = text(&obj, tag).filter(|s| !s.is_empty()) {
            params.insert(key.into(), json!(v));
        }
    }
    Ok(Scanned::Image(Box::new(FileHeader {
        path: path.to_path_buf(),
        series_number: num(&obj, tags::SERIES_NUMBER).map(|n| n as i64),
        series_description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        series_uid,
        vendor,
        rows,
        cols,
        pixel_spacing: [spacing[0], spacing[1]],
        slice_thickness,
        frames,
        params,
    })))
}

/// The sidecar of a series: the first file's parameters, the series, and
/// the per-volume frame times and b-values.
pub fn sidecar(first: &FileHeader, info: &SeriesInfo, times: Option<&[f64]>, bvals: Option<&[f64]>) -> Value {
    let mut m = first.params.clone();
    if let Some(n) = info.number {
        m.insert("SeriesNumber".into(), json!(n));
    }
    m.insert("SeriesInstanceUID".into(), json!(info.uid));
    if let Some(t) = times {
        m.insert("FrameTimesStart".into(), json!(t));
    }
    if let Some(b) = bvals {
        m.insert("bvals".into(), json!(b));
    }
    Value::Object(m)
}

/// The raw (not rescaled) pixels of `frames` of `path`, `len` each.
pub fn read_frames(path: &Path, frames: &[u32], len: usize) -> Result<Vec<Vec<f64>>> {
    guarded(path, || decode_frames(path, frames, len))
}

fn decode_frames(path: &Path, frames: &[u32], len: usize) -> Result<Vec<Vec<f64>>> {
    // `check_lengths` walked the whole file, pixel data included, when the
    // series was scanned: only scanned files are read.
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| OsipyError::io(path, format!("not a readable DICOM file: {e}")))?;
    let bad = |e: &dyn std::fmt::Display| OsipyError::io(path, format!("cannot decode the pixel data: {e}"));
    let samples = num(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1.0);
    if samples != 1.0 {
        return Err(OsipyError::data(
            format!("SamplesPerPixel of {}", path.display()),
            samples.to_string(),
            "1 (a greyscale MR image; colour images are not read)",
        ));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| bad(&e))?;
    let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    frames
        .iter()
        .map(|f| {
            let v: Vec<f64> = decoded
                .to_vec_frame_with_options(*f, &opts)
                .map_err(|e| bad(&e))?;
            if v.len() != len {
                return Err(OsipyError::io(
                    path,
                    format!("frame {f} holds {} pixels, the header says {len}", v.len()),
                ));
            }
            Ok(v)
        })
        .collect()
}

fn has_marker(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).map_err(|e| OsipyError::io(path, format!("cannot open: {e}")))?;
    let mut head = [0u8; 132];
    match f.read_exact(&mut head) {
        Ok(()) => Ok(&head[128..] == b"DICM"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(OsipyError::io(path, format!("cannot read: {e}"))),
    }
}

fn missing(path: &Path, what: &str) -> OsipyError {
    OsipyError::io(path, format!("the DICOM header has no {what}"))
}

fn class_name(uid: &str) -> String {
    let name = match uid {
        u if u.starts_with("1.2.840.10008.5.1.4.1.1.7") => "Secondary Capture Image",
        u if u.starts_with("1.2.840.10008.5.1.4.1.1.88.") => "Structured Report",
        u if u.starts_with("1.2.840.10008.5.1.4.1.1.11.") => "Presentation State",
        "1.2.840.10008.5.1.4.1.1.4.2" => "MR Spectroscopy",
        "1.2.840.10008.5.1.4.1.1.66" => "Raw Data",
        "1.2.840.10008.5.1.4.1.1.2" => "CT Image",
        _ => "non-MR-image",
    };
    format!("{name} (SOP class {uid})")
}

fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(seq).ok().flatten()?.items()?.first()
}

/// A text value, trimmed.
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    Some(
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string(),
    )
}

/// All numbers of a value (DS, IS, FD, FL, US...; UN read as text or as a
/// little-endian float).
fn nums(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok().flatten()?;
    if let Ok(v) = e.to_multi_float64() {
        return (!v.is_empty()).then_some(v);
    }
    let bytes = e.to_bytes().ok()?;
    if let Ok(s) = std::str::from_utf8(&bytes) {
        let v: Option<Vec<f64>> = s
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .split('\\')
            .map(|x| x.trim().parse().ok())
            .collect();
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            return Some(v);
        }
    }
    match bytes.len() {
        4 => Some(vec![
            f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64
        ]),
        8 => Some(vec![f64::from_le_bytes(bytes[..8].try_into().ok()?)]),
        _ => None,
    }
}

fn num(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    nums(obj, tag).map(|v| v[0]).filter(|v| v.is_finite())
}

/// `HHMMSS.FFFFFF` (TM) to seconds of the day.
fn time_seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    let digits = s.split('.').next()?;
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let part = |a: usize| digits.get(a..a + 2).map_or(Some(0.0), |p| p.parse::<f64>().ok());
    let frac = s
        .find('.')
        .map_or(Some(0.0), |i| format!("0{}", &s[i..]).parse::<f64>().ok())?;
    Some(part(0)? * 3600.0 + part(2)? * 60.0 + part(4)? + frac)
}

/// `YYYYMMDDHHMMSS.FFFFFF` (DT) to seconds of its day (days beyond are
/// carried by the midnight rule of the frame times).
fn datetime_seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = s.split(['+', '-']).next()?;
    time_seconds(s.get(8..)?)
}

/// Every element length `path` declares fits in the bytes that follow it.
///
/// dicom-parser allocates an element's declared length before reading it,
/// so a damaged 1 kB file declaring a 4 GiB element would cost 4 GiB of
/// memory: this walk over the element headers (values skipped, sequences
/// and items entered, encapsulated pixel data fragments skipped) rejects
/// such a file first. It covers the uncompressed transfer syntaxes
/// (implicit and explicit VR little endian, explicit VR big endian) and the
/// encapsulated ones; deflated files are refused (not read). A structure it cannot follow is also left to the
/// parser: it only rejects lengths that cannot fit and value
/// representations the standard does not define.
fn check_lengths(path: &Path) -> Result<()> {
    use std::io::{BufReader, Seek, SeekFrom};
    const UNDEFINED: u32 = u32::MAX;
    let io = |e: std::io::Error| OsipyError::io(path, format!("cannot read: {e}"));
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut f = BufReader::new(file);
    let mut pos: u64 = 132;
    f.seek(SeekFrom::Start(pos)).map_err(io)?;
    let too_long = |tag: (u16, u16), len: u64, remaining: u64| {
        OsipyError::io(
            path,
            format!(
                "not a readable DICOM file: element ({:04X},{:04X}) declares {len} bytes but {remaining} remain (damaged or truncated)",
                tag.0, tag.1
            ),
        )
    };
    let mut buf = [0u8; 12];
    let mut transfer_syntax = String::new();
    let mut meta = true;
    let mut meta_end: Option<u64> = None;
    let mut explicit = true;
    let mut fragments = false;
    let mut big = false;
    let u16_at = |b: &[u8], big: bool| {
        if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        }
    };
    let u32_at = |b: &[u8], big: bool| {
        if big {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    };
    // Open sequences (`true`) and items (`false`), each with where it ends
    // (`None`: at its delimiter).
    let mut open: Vec<(bool, Option<u64>)> = Vec::new();
    let damaged = |what: String| OsipyError::io(path, format!("not a readable DICOM file: {what} (damaged)"));
    while pos + 8 <= size {
        while let Some((_, Some(end))) = open.last() {
            if pos < *end {
                break;
            }
            open.pop();
        }
        if f.read_exact(&mut buf[..8]).is_err() {
            return Ok(());
        }
        // The meta group ends where its group length (0002,0000) says, as
        // dicom-object reads it, else at the first element of another group.
        let meta_over = match meta_end {
            Some(end) => pos >= end,
            None => u16::from_le_bytes([buf[0], buf[1]]) != 0x0002,
        };
        if meta && meta_over {
            // End of the file meta group (always explicit VR little
            // endian): the data set's encoding.
            meta = false;
            match transfer_syntax.trim_end_matches(['\0', ' ']) {
                "1.2.840.10008.1.2" => explicit = false,
                "1.2.840.10008.1.2.2" => big = true,
                "1.2.840.10008.1.2.1.99" => {
                    return Err(OsipyError::io(
                        path,
                        "the Deflated Explicit VR transfer syntax is not read: decompress the file (e.g. with dcmconv or gdcmconv)",
                    ))
                }
                _ => {}
            }
        }
        let group = u16_at(&buf[0..2], big);
        let elem = u16_at(&buf[2..4], big);
        let (len, header, sequence) = if group == 0xFFFE {
            (u32_at(&buf[4..8], big), 8, !fragments)
        } else if explicit || meta {
            let vr = [buf[4], buf[5]];
            const VRS: [&[u8; 2]; 34] = [
                b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
                b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
                b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
            ];
            if !VRS.contains(&&vr) {
                return Err(OsipyError::io(
                    path,
                    format!(
                        "not a readable DICOM file: element ({group:04X},{elem:04X}) has no valid value representation (damaged)"
                    ),
                ));
            }
            if matches!(
                &vr,
                b"OB"
                    | b"OD"
                    | b"OF"
                    | b"OL"
                    | b"OV"
                    | b"OW"
                    | b"SQ"
                    | b"UC"
                    | b"UR"
                    | b"UT"
                    | b"UN"
                    | b"SV"
                    | b"UV"
            ) {
                if f.read_exact(&mut buf[8..12]).is_err() {
                    return Ok(());
                }
                (u32_at(&buf[8..12], big), 12, &vr == b"SQ")
            } else {
                (u16_at(&buf[6..8], big) as u32, 8, false)
            }
        } else {
            (u32_at(&buf[4..8], big), 8, false)
        };
        pos += header;
        if group == 0xFFFE && elem != 0xE000 && len != 0 {
            // Delimiters have no value (dicom-parser reads any other as an
            // element and loses its place).
            return Err(OsipyError::io(
                path,
                format!(
                    "not a readable DICOM file: delimiter (FFFE,{elem:04X}) declares {len} bytes (damaged)"
                ),
            ));
        }
        // Delimiters close what they name, items open only directly in a
        // sequence: dicom-parser reads anything else as an element with a
        // value and loses its place.
        if group == 0xFFFE && !fragments {
            match elem {
                0xE0DD if open.last() == Some(&(true, None)) => {
                    open.pop();
                }
                0xE00D if open.last() == Some(&(false, None)) => {
                    open.pop();
                }
                0xE000 if open.last().is_some_and(|(seq, _)| *seq) => {
                    open.push((false, (len != UNDEFINED).then(|| pos + len as u64)));
                }
                _ => return Err(damaged(format!("item tag (FFFE,{elem:04X}) out of place"))),
            }
        } else if group == 0xFFFE && elem == 0xE0DD {
            fragments = false;
        } else if group != 0xFFFE && open.last().is_some_and(|(seq, _)| *seq) {
            return Err(damaged(format!(
                "element ({group:04X},{elem:04X}) directly in a sequence, outside an item"
            )));
        }
        if len == UNDEFINED {
            let vr = [buf[4], buf[5]];
            if (group, elem) == (0x7FE0, 0x0010) {
                fragments = true;
            } else if group == 0xFFFE {
                // Items are entered.
            } else if sequence || !(explicit || meta) {
                // Sequences (implicit VR: any element may be one) are entered.
                open.push((true, None));
            } else if &vr == b"UN" {
                // A sequence encoded in implicit VR: not followed.
                return Ok(());
            } else {
                return Err(OsipyError::io(
                    path,
                    format!(
                        "not a readable DICOM file: element ({group:04X},{elem:04X}) of value representation {} has an undefined length (damaged)",
                        String::from_utf8_lossy(&vr)
                    ),
                ));
            }
            continue;
        }
        let len = len as u64;
        if len > size.saturating_sub(pos) {
            return Err(too_long((group, elem), len, size.saturating_sub(pos)));
        }
        // Binary values come in whole numbers (dicom-parser reads whole
        // numbers and would lose its place).
        let width = match (group != 0xFFFE && (explicit || meta)).then_some([buf[4], buf[5]]) {
            Some([b'F', b'D'] | [b'S', b'V'] | [b'U', b'V'] | [b'O', b'V'] | [b'O', b'D']) => 8,
            Some([b'F', b'L'] | [b'S', b'L'] | [b'U', b'L'] | [b'A', b'T'] | [b'O', b'F'] | [b'O', b'L']) => {
                4
            }
            Some([b'S', b'S'] | [b'U', b'S'] | [b'O', b'W']) => 2,
            _ => 1,
        };
        if len % width != 0 {
            return Err(OsipyError::io(
                path,
                format!(
                    "not a readable DICOM file: element ({group:04X},{elem:04X}) holds {len} bytes, not a whole number of {width}-byte values (damaged)"
                ),
            ));
        }
        if sequence && group != 0xFFFE {
            open.push((true, Some(pos + len)));
            continue;
        }
        if group == 0xFFFE && elem == 0xE000 && !fragments {
            // Enter items: their contents are elements.
            continue;
        }
        if meta && (group, elem) == (0x0002, 0x0000) && len == 4 {
            let mut v = [0u8; 4];
            f.read_exact(&mut v).map_err(io)?;
            pos += 4;
            meta_end = Some(pos + u32::from_le_bytes(v) as u64);
            continue;
        }
        if (group, elem) == (0x0002, 0x0010) && len <= 64 {
            let mut ts = vec![0u8; len as usize];
            f.read_exact(&mut ts).map_err(io)?;
            transfer_syntax = String::from_utf8_lossy(&ts).into_owned();
        } else {
            f.seek(SeekFrom::Current(len as i64)).map_err(io)?;
        }
        pos += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(time_seconds("101530.5"), Some(10.0 * 3600.0 + 15.0 * 60.0 + 30.5));
        assert_eq!(time_seconds("1015"), Some(10.0 * 3600.0 + 15.0 * 60.0));
        assert_eq!(time_seconds("ab"), None);
        assert_eq!(datetime_seconds("20261202101530.25"), Some(36930.25));
    }

    #[test]
    fn vendors() {
        assert_eq!(Vendor::from_manufacturer("SIEMENS"), Vendor::Siemens);
        assert_eq!(Vendor::from_manufacturer("GE MEDICAL SYSTEMS"), Vendor::Ge);
        assert_eq!(
            Vendor::from_manufacturer("Philips Medical Systems"),
            Vendor::Philips
        );
        assert_eq!(Vendor::from_manufacturer("Canon"), Vendor::Other);
    }
}
