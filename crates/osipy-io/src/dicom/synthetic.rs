//! Synthetic DICOM series from a 4D array: the fixtures of the DICOM tests,
//! benchmarks and tutorials, written as each vendor writes its headers.
//! Reading what [`SyntheticSeries::write`] wrote with [`super::scan`] gives
//! back the array (to the 16-bit quantisation of each frame: values are
//! stored as unsigned 16-bit integers with a per-frame rescale slope and
//! intercept) and the affine.

use super::header::{ENHANCED_MR_IMAGE, MR_IMAGE};
use super::Vendor;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ndarray::Array4;
use osipy_core::{OsipyError, Result};
use std::path::{Path, PathBuf};

/// How the frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One file per slice and frame (MR Image Storage).
    Classic,
    /// One multi-frame file (Enhanced MR Image Storage).
    Enhanced,
}

/// A series to write.
#[derive(Debug, Clone)]
pub struct SyntheticSeries<'a> {
    /// Values (x, y, z, t).
    pub data: &'a Array4<f64>,
    /// Voxel-to-world affine (RAS, mm), as osipy reads it back: column 1 is
    /// the flipped row direction, so the slice direction must be the row x
    /// column cosine's (a right-handed DICOM frame), e.g. diag(-dx, dy, dz).
    pub affine: [[f64; 4]; 4],
    /// Whose private tags carry the b-values.
    pub vendor: Vendor,
    /// File layout.
    pub layout: Layout,
    /// Frame start times (s), one per volume: acquisition times from 10:00:00
    /// (slice k of a volume 10 ms after slice k - 1) and temporal positions.
    pub frame_times: Option<Vec<f64>>,
    /// b-values (s/mm^2), one per volume.
    pub b_values: Option<Vec<f64>>,
    /// TR (s), TE (s), flip angle (degrees), field (T).
    pub tr: Option<f64>,
    /// Echo time (s).
    pub te: Option<f64>,
    /// Flip angle (degrees).
    pub flip_angle: Option<f64>,
    /// Field strength (T).
    pub field_strength: Option<f64>,
    /// `SeriesNumber`.
    pub series_number: i64,
    /// `SeriesDescription`.
    pub description: String,
}

impl<'a> SyntheticSeries<'a> {
    /// A classic, vendor-neutral series of `data` on `affine` with no
    /// acquisition parameters.
    pub fn new(data: &'a Array4<f64>, affine: [[f64; 4]; 4]) -> Self {
        SyntheticSeries {
            data,
            affine,
            vendor: Vendor::Other,
            layout: Layout::Classic,
            frame_times: None,
            b_values: None,
            tr: None,
            te: None,
            flip_angle: None,
            field_strength: None,
            series_number: 1,
            description: "osipy synthetic".into(),
        }
    }

    /// Writes the series into `dir` (created), returning the files.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let (nx, ny, nz, nt) = self.data.dim();
        std::fs::create_dir_all(dir).map_err(|e| OsipyError::io(dir, format!("cannot create: {e}")))?;
        // LPS frame from the RAS affine (see the reader's geometry).
        let mut l = self.affine;
        for row in l.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
        let col = |c: usize| [l[0][c], l[1][c], l[2][c]];
        let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let (c0, c1, c2) = (col(0), col(1), col(2));
        let (dc, dr) = (norm(c0), norm(c1));
        let r = c0.map(|v| v / dc);
        let c = c1.map(|v| -v / dr);
        let n = [
            r[1] * c[2] - r[2] * c[1],
            r[2] * c[0] - r[0] * c[2],
            r[0] * c[1] - r[1] * c[0],
        ];
        if nz > 1 && n[0] * c2[0] + n[1] * c2[1] + n[2] * c2[2] <= 0.0 {
            return Err(OsipyError::Validation(
                "synthetic DICOM: the affine's slice axis must follow the row x column cosine (e.g. diag(-dx, dy, dz))"
                    .into(),
            ));
        }
        let p0 = [0, 1, 2].map(|a| l[a][3] - c[a] * dr * (ny as f64 - 1.0));
        let position = |k: usize| [0, 1, 2].map(|a| p0[a] + k as f64 * c2[a]);
        let orientation = [r[0], r[1], r[2], c[0], c[1], c[2]];
        let uid_root = format!("2.25.{}", 1000 + self.series_number);
        let series_uid = format!("{uid_root}.1");
        let study_uid = "2.25.999.1".to_string();
        // One frame's pixels (rows top to bottom) and its rescale.
        let frame = |k: usize, t: usize| -> (Vec<u8>, f64, f64) {
            let mut v = Vec::with_capacity(nx * ny);
            for j in 0..ny {
                for i in 0..nx {
                    v.push(self.data[[i, ny - 1 - j, k, t]]);
                }
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let slope = if hi > lo { (hi - lo) / 65535.0 } else { 1.0 };
            let bytes = v
                .iter()
                .flat_map(|x| (((x - lo) / slope).round().clamp(0.0, 65535.0) as u16).to_le_bytes())
                .collect();
            (bytes, slope, lo)
        };
        let acq_time = |k: usize, t: usize| {
            let s = 36000.0 + self.frame_times.as_ref().map_or(t as f64 * 2.0, |ft| ft[t]) + k as f64 * 0.01;
            let h = (s / 3600.0).floor();
            let m = ((s - h * 3600.0) / 60.0).floor();
            format!("{:02}{:02}{:09.6}", h as u32, m as u32, s - h * 3600.0 - m * 60.0)
        };
        let mut files = Vec::new();
        match self.layout {
            Layout::Classic => {
                for t in 0..nt {
                    for k in 0..nz {
                        let instance = t * nz + k + 1;
                        let sop = format!("{uid_root}.2.{instance}");
                        let mut obj = self.common(MR_IMAGE, &sop, &series_uid, &study_uid, ny, nx, dr, dc);
                        let (px, slope, intercept) = frame(k, t);
                        put_ds(&mut obj, tags::IMAGE_POSITION_PATIENT, &position(k));
                        put_ds(&mut obj, tags::IMAGE_ORIENTATION_PATIENT, &orientation);
                        put_ds(&mut obj, tags::SLICE_THICKNESS, &[norm(c2)]);
                        put_ds(&mut obj, tags::RESCALE_SLOPE, &[slope]);
                        put_ds(&mut obj, tags::RESCALE_INTERCEPT, &[intercept]);
                        put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &instance.to_string());
                        put_str(&mut obj, tags::ACQUISITION_TIME, VR::TM, &acq_time(k, t));
                        put_str(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, &(t + 1).to_string());
                        if self.frame_times.is_some() {
                            put_str(
                                &mut obj,
                                tags::TEMPORAL_POSITION_IDENTIFIER,
                                VR::IS,
                                &(t + 1).to_string(),
                            );
                            put_str(
                                &mut obj,
                                tags::NUMBER_OF_TEMPORAL_POSITIONS,
                                VR::IS,
                                &nt.to_string(),
                            );
                        }
                        if let Some(b) = &self.b_values {
                            self.put_b_value(&mut obj, b[t]);
                        }
                        for (tag, v, ms) in [
                            (tags::REPETITION_TIME, self.tr, true),
                            (tags::ECHO_TIME, self.te, true),
                            (tags::FLIP_ANGLE, self.flip_angle, false),
                        ] {
                            if let Some(v) = v {
                                put_ds(&mut obj, tag, &[if ms { v * 1000.0 } else { v }]);
                            }
                        }
                        obj.put(DataElement::new(
                            tags::PIXEL_DATA,
                            VR::OW,
                            PrimitiveValue::from(px),
                        ));
                        let path = dir.join(format!("IM{instance:05}.dcm"));
                        write_file(obj, &path)?;
                        files.push(path);
                    }
                }
            }
            Layout::Enhanced => {
                let sop = format!("{uid_root}.2.1");
                let mut obj = self.common(ENHANCED_MR_IMAGE, &sop, &series_uid, &study_uid, ny, nx, dr, dc);
                put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &(nz * nt).to_string());
                put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
                let mut shared = InMemDicomObject::new_empty();
                let mut measures = InMemDicomObject::new_empty();
                put_ds(&mut measures, tags::PIXEL_SPACING, &[dr, dc]);
                put_ds(&mut measures, tags::SLICE_THICKNESS, &[norm(c2)]);
                put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, measures);
                let mut plane = InMemDicomObject::new_empty();
                put_ds(&mut plane, tags::IMAGE_ORIENTATION_PATIENT, &orientation);
                put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, plane);
                let mut timing = InMemDicomObject::new_empty();
                if let Some(tr) = self.tr {
                    timing.put(DataElement::new(
                        tags::REPETITION_TIME,
                        VR::FD,
                        PrimitiveValue::from(tr * 1000.0),
                    ));
                }
                if let Some(fa) = self.flip_angle {
                    timing.put(DataElement::new(
                        tags::FLIP_ANGLE,
                        VR::FD,
                        PrimitiveValue::from(fa),
                    ));
                }
                put_seq(
                    &mut shared,
                    tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE,
                    timing,
                );
                if let Some(te) = self.te {
                    let mut echo = InMemDicomObject::new_empty();
                    echo.put(DataElement::new(
                        tags::EFFECTIVE_ECHO_TIME,
                        VR::FD,
                        PrimitiveValue::from(te * 1000.0),
                    ));
                    put_seq(&mut shared, tags::MR_ECHO_SEQUENCE, echo);
                }
                // Dimensions: stack, time, position in the stack.
                let dimensions: Vec<InMemDicomObject> = [
                    tags::STACK_ID,
                    tags::TEMPORAL_POSITION_INDEX,
                    tags::IN_STACK_POSITION_NUMBER,
                ]
                .into_iter()
                .map(|pointer| {
                    let mut d = InMemDicomObject::new_empty();
                    d.put(DataElement::new(
                        tags::DIMENSION_INDEX_POINTER,
                        VR::AT,
                        PrimitiveValue::from(pointer),
                    ));
                    d.put(DataElement::new(
                        tags::FUNCTIONAL_GROUP_POINTER,
                        VR::AT,
                        PrimitiveValue::from(tags::FRAME_CONTENT_SEQUENCE),
                    ));
                    d
                })
                .collect();
                obj.put(DataElement::new(
                    tags::DIMENSION_INDEX_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(dimensions),
                ));
                let mut per_frame = Vec::new();
                let mut pixels = Vec::new();
                for t in 0..nt {
                    for k in 0..nz {
                        let (px, slope, intercept) = frame(k, t);
                        pixels.extend(px);
                        let mut item = InMemDicomObject::new_empty();
                        let mut content = InMemDicomObject::new_empty();
                        content.put(DataElement::new(
                            tags::TEMPORAL_POSITION_INDEX,
                            VR::UL,
                            PrimitiveValue::from((t + 1) as u32),
                        ));
                        put_str(
                            &mut content,
                            tags::FRAME_ACQUISITION_DATE_TIME,
                            VR::DT,
                            &format!("20261202{}", acq_time(k, t)),
                        );
                        put_str(&mut content, tags::STACK_ID, VR::SH, "1");
                        content.put(DataElement::new(
                            tags::IN_STACK_POSITION_NUMBER,
                            VR::UL,
                            PrimitiveValue::from((k + 1) as u32),
                        ));
                        content.put(DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32([1, (t + 1) as u32, (k + 1) as u32].into_iter().collect()),
                        ));
                        put_seq(&mut item, tags::FRAME_CONTENT_SEQUENCE, content);
                        let mut pos = InMemDicomObject::new_empty();
                        put_ds(&mut pos, tags::IMAGE_POSITION_PATIENT, &position(k));
                        put_seq(&mut item, tags::PLANE_POSITION_SEQUENCE, pos);
                        let mut pvt = InMemDicomObject::new_empty();
                        put_ds(&mut pvt, tags::RESCALE_SLOPE, &[slope]);
                        put_ds(&mut pvt, tags::RESCALE_INTERCEPT, &[intercept]);
                        put_str(&mut pvt, tags::RESCALE_TYPE, VR::LO, "US");
                        put_seq(&mut item, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, pvt);
                        if let Some(b) = &self.b_values {
                            let mut d = InMemDicomObject::new_empty();
                            d.put(DataElement::new(
                                tags::DIFFUSION_B_VALUE,
                                VR::FD,
                                PrimitiveValue::from(b[t]),
                            ));
                            put_str(
                                &mut d,
                                tags::DIFFUSION_DIRECTIONALITY,
                                VR::CS,
                                if b[t] == 0.0 { "NONE" } else { "ISOTROPIC" },
                            );
                            put_seq(&mut item, tags::MR_DIFFUSION_SEQUENCE, d);
                        }
                        per_frame.push(item);
                    }
                }
                obj.put(DataElement::new(
                    tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(vec![shared]),
                ));
                obj.put(DataElement::new(
                    tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(per_frame),
                ));
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::from(pixels),
                ));
                let path = dir.join("enhanced.dcm");
                write_file(obj, &path)?;
                files.push(path);
            }
        }
        Ok(files)
    }

    /// The attributes every file of the series carries.
    #[allow(clippy::too_many_arguments)]
    fn common(
        &self,
        class: &str,
        sop: &str,
        series_uid: &str,
        study_uid: &str,
        rows: usize,
        cols: usize,
        dr: f64,
        dc: f64,
    ) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let manufacturer = match self.vendor {
            Vendor::Siemens => "SIEMENS",
            Vendor::Ge => "GE MEDICAL SYSTEMS",
            Vendor::Philips => "Philips Medical Systems",
            Vendor::Other => "osipy",
        };
        put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, class);
        put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop);
        put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
        put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
        put_str(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, "2.25.999.2");
        put_str(&mut obj, tags::MODALITY, VR::CS, "MR");
        put_str(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
        put_str(&mut obj, tags::MANUFACTURER, VR::LO, manufacturer);
        put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "Synthetic^Phantom");
        put_str(&mut obj, tags::PATIENT_ID, VR::LO, "PHANTOM");
        put_str(&mut obj, tags::STUDY_DATE, VR::DA, "20261202");
        put_str(&mut obj, tags::SERIES_DATE, VR::DA, "20261202");
        put_str(&mut obj, tags::ACQUISITION_DATE, VR::DA, "20261202");
        put_str(&mut obj, tags::STUDY_TIME, VR::TM, "100000");
        put_str(&mut obj, tags::SERIES_TIME, VR::TM, "100000");
        put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &self.description);
        put_str(&mut obj, tags::PROTOCOL_NAME, VR::LO, &self.description);
        put_str(
            &mut obj,
            tags::SERIES_NUMBER,
            VR::IS,
            &self.series_number.to_string(),
        );
        put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M\\NONE");
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        obj.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(rows as u16),
        ));
        obj.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(cols as u16),
        ));
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        obj.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        obj.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(15u16),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        if self.layout == Layout::Classic {
            put_ds(&mut obj, tags::PIXEL_SPACING, &[dr, dc]);
        }
        if let Some(b0) = self.field_strength {
            put_ds(&mut obj, tags::MAGNETIC_FIELD_STRENGTH, &[b0]);
        }
        obj
    }

    /// The b-value where this vendor writes it (see [`Vendor`]).
    fn put_b_value(&self, obj: &mut InMemDicomObject, b: f64) {
        match self.vendor {
            Vendor::Siemens => {
                put_str(obj, Tag(0x0019, 0x0010), VR::LO, "SIEMENS MR HEADER");
                put_str(obj, Tag(0x0019, 0x100C), VR::IS, &format!("{}", b.round() as i64));
            }
            Vendor::Ge => {
                put_str(obj, Tag(0x0043, 0x0010), VR::LO, "GEMS_PARM_01");
                let v = 1_000_000_000 + b.round() as i64;
                put_str(obj, Tag(0x0043, 0x1039), VR::IS, &format!("{v}\\8\\0\\0"));
            }
            Vendor::Philips => {
                put_str(obj, Tag(0x2001, 0x0010), VR::LO, "Philips Imaging DD 001");
                obj.put(DataElement::new(
                    Tag(0x2001, 0x1003),
                    VR::FL,
                    PrimitiveValue::from(b as f32),
                ));
            }
            Vendor::Other => {
                obj.put(DataElement::new(
                    tags::DIFFUSION_B_VALUE,
                    VR::FD,
                    PrimitiveValue::from(b),
                ));
            }
        }
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Decimal strings, at most 16 characters each.
fn put_ds(obj: &mut InMemDicomObject, tag: Tag, v: &[f64]) {
    let s: Vec<String> = v.iter().map(|x| ds(*x)).collect();
    put_str(obj, tag, VR::DS, &s.join("\\"));
}

fn ds(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    for p in (0..=10).rev() {
        let s = format!("{x:.p$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.6e}")
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, item: InMemDicomObject) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(vec![item])));
}

fn write_file(obj: InMemDicomObject, path: &Path) -> Result<()> {
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| OsipyError::io(path, format!("cannot build the DICOM meta header: {e}")))?;
    file.write_to_file(path)
        .map_err(|e| OsipyError::io(path, format!("cannot write: {e}")))
}
