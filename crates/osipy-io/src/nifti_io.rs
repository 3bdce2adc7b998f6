//! NIfTI-1 reading and writing.

use crate::atomic::{atomic_write, write_json};
use crate::Sample;
use ndarray::{Array3, Array4, ArrayD, Ix3, Ix4};
use nifti::writer::WriterOptions;
use nifti::{IntoNdArray, NiftiHeader, NiftiObject, ReaderOptions};
use osipy_core::{OsipyError, ParameterMap, Result};
use std::path::{Path, PathBuf};

/// Spatial reference of an image: the voxel-to-world affine and the header it
/// came from, reused when writing maps so they overlay the source exactly.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Voxel-to-world affine (mm), row-major 4x4: from the sform when its
    /// code is set, else from the qform, else the voxel sizes on a diagonal.
    pub affine: [[f64; 4]; 4],
    /// Voxel sizes (pixdim[1..4], mm).
    pub voxel_size: [f64; 3],
    header: NiftiHeader,
}

impl Geometry {
    /// A geometry from an affine alone (sform and qform both set to it; the
    /// qform is written without rotation, as the affine's scaling).
    pub fn from_affine(affine: [[f64; 4]; 4]) -> Geometry {
        let vs = |c: usize| (0..3).map(|r| affine[r][c] * affine[r][c]).sum::<f64>().sqrt();
        let voxel_size = [vs(0), vs(1), vs(2)];
        let row = |r: usize| {
            [
                affine[r][0] as f32,
                affine[r][1] as f32,
                affine[r][2] as f32,
                affine[r][3] as f32,
            ]
        };
        let header = NiftiHeader {
            pixdim: [
                1.0,
                voxel_size[0] as f32,
                voxel_size[1] as f32,
                voxel_size[2] as f32,
                1.0,
                1.0,
                1.0,
                1.0,
            ],
            xyzt_units: 2 | 8, // mm, s
            sform_code: 2,
            qform_code: 0,
            srow_x: row(0),
            srow_y: row(1),
            srow_z: row(2),
            ..NiftiHeader::default()
        };
        Geometry {
            affine,
            voxel_size,
            header,
        }
    }
}

/// A NIfTI image read into f64 with scaling applied.
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    /// Voxel values, any dimensionality (x, y, z, t...), scl_slope and
    /// scl_inter applied.
    pub data: ArrayD<f64>,
    /// Spatial reference.
    pub geometry: Geometry,
    /// Time between volumes (s) from `pixdim[4]` and the time unit in
    /// xyzt_units (ms and us are converted; an unset unit is taken as s, the
    /// NIfTI convention). `None` when pixdim[4] is not positive.
    pub time_step: Option<f64>,
}

fn affine_from_header(h: &NiftiHeader) -> [[f64; 4]; 4] {
    let pd = |i: usize| {
        let v = h.pixdim[i] as f64;
        if v > 0.0 {
            v
        } else {
            1.0
        }
    };
    if h.sform_code > 0 {
        let r = |row: [f32; 4]| [row[0] as f64, row[1] as f64, row[2] as f64, row[3] as f64];
        return [r(h.srow_x), r(h.srow_y), r(h.srow_z), [0.0, 0.0, 0.0, 1.0]];
    }
    if h.qform_code > 0 {
        // NIfTI-1 method 2: rotation from the quaternion (b, c, d), with
        // a = sqrt(1 - b^2 - c^2 - d^2), and qfac = pixdim[0] flipping z.
        let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let rot = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let s = [pd(1), pd(2), qfac * pd(3)];
        let t = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for col in 0..3 {
                m[r][col] = rot[r][col] * s[col];
            }
            m[r][3] = t[r];
        }
        m[3][3] = 1.0;
        return m;
    }
    [
        [pd(1), 0.0, 0.0, 0.0],
        [0.0, pd(2), 0.0, 0.0],
        [0.0, 0.0, pd(3), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

fn time_step(h: &NiftiHeader) -> Option<f64> {
    let v = h.pixdim[4] as f64;
    if !(v > 0.0 && v.is_finite()) {
        return None;
    }
    let scale = match h.xyzt_units & 0x38 {
        16 => 1e-3,
        24 => 1e-6,
        _ => 1.0,
    };
    Some(v * scale)
}

fn io_err(path: &Path, message: String) -> OsipyError {
    OsipyError::io(path, message)
}

/// `a` in standard (row-major) layout, so that a voxel's series is
/// contiguous. NIfTI stores x fastest (column-major); such arrays of up to
/// 4 dimensions are reordered by [`to_row_major`], others by ndarray's
/// generic copy.
pub(crate) fn into_standard_layout<T: Copy + Default, D: ndarray::Dimension>(
    a: ndarray::Array<T, D>,
) -> ndarray::Array<T, D> {
    if a.is_standard_layout() {
        return a;
    }
    let reordered = match (a.as_slice_memory_order(), a.t().is_standard_layout()) {
        (Some(src), true) => to_row_major(src, a.shape(), |v| v),
        _ => None,
    };
    match reordered.map(|v| ndarray::Array::from_shape_vec(a.raw_dim(), v)) {
        Some(Ok(b)) => b,
        _ => a.as_standard_layout().into_owned(),
    }
}

/// Column-major samples `src` of an image of `dims` (up to 4 of them) as
/// row-major f64, each converted by `f`; `None` for 5 or more dimensions or
/// a size mismatch.
///
/// ndarray's generic copy of a column-major 4D array reads one sample per
/// cache line (a whole volume apart); this walks the source in blocks of 64
/// voxels, so reads are contiguous and the rows being written stay in
/// cache (about 3x faster on a 128x128x30x60 series).
fn to_row_major<T: Copy, U: Copy + Default>(src: &[T], dims: &[usize], f: impl Fn(T) -> U) -> Option<Vec<U>> {
    if dims.is_empty() || dims.len() > 4 || dims.iter().product::<usize>() != src.len() {
        return None;
    }
    let d = |k: usize| dims.get(k).copied().unwrap_or(1);
    let (nx, ny, nz, nt) = (d(0), d(1), d(2), d(3));
    let n_vox = nx * ny * nz;
    let mut out = vec![U::default(); src.len()];
    // Column-major spatial index s = x + nx (y + ny z); row-major voxel
    // v = (x ny + y) nz + z; sample t of voxel s is at src[t n_vox + s].
    if nt == 1 {
        // One sample per voxel: tiles of 16 z, so the writes are runs of
        // z and the reads 16 streams along x (the 4D blocks below would
        // write one sample per cache line).
        const TILE: usize = 16;
        for y in 0..ny {
            for z0 in (0..nz).step_by(TILE) {
                let z1 = (z0 + TILE).min(nz);
                for x in 0..nx {
                    let row = (x * ny + y) * nz;
                    for z in z0..z1 {
                        out[row + z] = f(src[x + nx * (y + ny * z)]);
                    }
                }
            }
        }
        return Some(out);
    }
    const BLOCK: usize = 64;
    let mut rows = [0usize; BLOCK];
    for s0 in (0..n_vox).step_by(BLOCK) {
        let len = BLOCK.min(n_vox - s0);
        for (i, r) in rows.iter_mut().enumerate().take(len) {
            let s = s0 + i;
            let (x, y, z) = (s % nx, (s / nx) % ny, s / (nx * ny));
            *r = ((x * ny + y) * nz + z) * nt;
        }
        for t in 0..nt {
            let block = &src[t * n_vox + s0..t * n_vox + s0 + len];
            for (r, v) in rows.iter().zip(block) {
                out[r + t] = f(*v);
            }
        }
    }
    Some(out)
}

/// The volume's samples as row-major f64 with the header's scaling, in one
/// pass over the raw data for the common voxel types (uint8, int16,
/// uint16, float32, float64); `None` for the others. Scaling as the nifti
/// crate applies it: `v slope + inter` unless the slope is 0.
fn decode_row_major(
    volume: nifti::InMemNiftiVolume,
    slope: f32,
    inter: f32,
) -> std::result::Result<std::result::Result<ArrayD<f64>, nifti::InMemNiftiVolume>, String> {
    use nifti::NiftiVolume;
    let dims: Vec<usize> = volume.dim().iter().map(|d| *d as usize).collect();
    if dims.len() > 4 {
        return Ok(Err(volume));
    }
    let (slope, inter) = (f64::from(slope), f64::from(inter));
    let scale = move |v: f64| if slope == 0.0 { v } else { v * slope + inter };
    let err = |e: nifti::NiftiError| describe_nifti_error(e);
    let data = match volume.data_type() {
        nifti::NiftiType::Uint8 => {
            to_row_major(&volume.into_nifti_typed_data::<u8>().map_err(err)?, &dims, |v| {
                scale(f64::from(v))
            })
        }
        nifti::NiftiType::Int16 => {
            to_row_major(&volume.into_nifti_typed_data::<i16>().map_err(err)?, &dims, |v| {
                scale(f64::from(v))
            })
        }
        nifti::NiftiType::Uint16 => {
            to_row_major(&volume.into_nifti_typed_data::<u16>().map_err(err)?, &dims, |v| {
                scale(f64::from(v))
            })
        }
        nifti::NiftiType::Float32 => {
            to_row_major(&volume.into_nifti_typed_data::<f32>().map_err(err)?, &dims, |v| {
                scale(f64::from(v))
            })
        }
        nifti::NiftiType::Float64 => {
            to_row_major(&volume.into_nifti_typed_data::<f64>().map_err(err)?, &dims, scale)
        }
        _ => return Ok(Err(volume)),
    };
    let data = data.ok_or_else(|| format!("image data do not fill its dimensions {dims:?}"))?;
    ArrayD::from_shape_vec(ndarray::IxDyn(&dims), data)
        .map(Ok)
        .map_err(|e| format!("image data do not fit its dimensions {dims:?}: {e}"))
}

/// Reads a `.nii` or `.nii.gz` file of any dimensionality and stored type.
///
/// A missing, truncated or corrupt file is an error naming the file and the
/// problem; the third-party reader is also guarded against panics.
pub fn read_nifti(path: impl AsRef<Path>) -> Result<NiftiVolume> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(io_err(
            path,
            "is a folder, not a file (expected a .nii or .nii.gz NIfTI-1 image)".into(),
        ));
    }
    if path.exists() && !path.is_file() {
        return Err(io_err(
            path,
            "is not a regular file (a device, FIFO or socket; expected a .nii or .nii.gz NIfTI-1 image)"
                .into(),
        ));
    }
    if !path.is_file() {
        return Err(io_err(
            path,
            "no such file (expected a .nii or .nii.gz NIfTI-1 image)".into(),
        ));
    }
    let p = path.to_path_buf();
    let outcome = std::panic::catch_unwind(
        move || -> std::result::Result<(NiftiHeader, ArrayD<f64>), String> {
            let h = NiftiHeader::from_file(&p).map_err(describe_nifti_error)?;
            check_data_type(&h)?;
            check_data_size(&h, &p)?;
            let obj = ReaderOptions::new().read_file(&p).map_err(describe_nifti_error)?;
            let header = obj.header().clone();
            let mut volume = obj.into_volume();
            // A non-finite scl_slope means no scaling, a non-finite scl_inter
            // no offset (as nifti1_io and nibabel read them).
            let slope = if header.scl_slope.is_finite() {
                header.scl_slope
            } else {
                0.0
            };
            let inter = if header.scl_inter.is_finite() && slope != 0.0 {
                header.scl_inter
            } else {
                0.0
            };
            if slope != header.scl_slope || inter != header.scl_inter {
                let mut h = header.clone();
                (h.scl_slope, h.scl_inter) = (slope, inter);
                volume = nifti::InMemNiftiVolume::from_raw_data(&h, volume.into_raw_data())
                    .map_err(describe_nifti_error)?;
            }
            let data = match decode_row_major(volume, slope, inter)? {
                Ok(data) => data,
                Err(other) => {
                    into_standard_layout(other.into_ndarray::<f64>().map_err(describe_nifti_error)?)
                }
            };
            Ok((header, data))
        },
    );
    let (header, data) = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => return Err(io_err(path, msg)),
        Err(_) => {
            return Err(io_err(
                path,
                "the NIfTI reader failed on this file (corrupt or inconsistent header)".into(),
            ))
        }
    };
    if data.is_empty() {
        return Err(io_err(
            path,
            format!("image has no voxels (dimensions {:?})", data.shape()),
        ));
    }
    let affine = affine_from_header(&header);
    let voxel_size = [1, 2, 3].map(|i| (header.pixdim[i] as f64).abs());
    Ok(NiftiVolume {
        time_step: time_step(&header),
        data,
        geometry: Geometry {
            affine,
            voxel_size,
            header,
        },
    })
}

fn describe_nifti_error(e: nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file is truncated: it holds fewer bytes than its header's dimensions and data type require"
                .into()
        }
        nifti::NiftiError::InvalidFormat => "not a NIfTI-1 file (bad header size or magic code)".into(),
        // The reader's own text for I/O errors is Rust debug output.
        nifti::NiftiError::Io(io) => format!("cannot read NIfTI image: {io}"),
        other => format!("cannot read NIfTI image: {other}"),
    }
}

/// Scalar data types this reader takes (NIfTI-1 codes) and their bits per
/// voxel.
const SCALAR_TYPES: [(i16, i16, &str); 10] = [
    (2, 8, "uint8"),
    (256, 8, "int8"),
    (4, 16, "int16"),
    (512, 16, "uint16"),
    (8, 32, "int32"),
    (768, 32, "uint32"),
    (16, 32, "float32"),
    (1024, 64, "int64"),
    (1280, 64, "uint64"),
    (64, 64, "float64"),
];

/// A data type that is not a real scalar (RGB, complex) or a `bitpix` that
/// disagrees with the data type is an error in words, before the reader
/// sees the data (it panics on some of them).
fn check_data_type(h: &NiftiHeader) -> std::result::Result<(), String> {
    let (code, bitpix) = (h.datatype, h.bitpix);
    match SCALAR_TYPES.iter().find(|(c, _, _)| *c == code) {
        None => {
            let what = match code {
                128 | 2304 => "RGB colour",
                32 | 1792 | 2048 => "complex",
                _ => "an unknown",
            };
            Err(format!(
                "data type code {code} ({what} voxels) is not supported: give a scalar image (integer or float voxels)"
            ))
        }
        Some((_, bits, name)) if *bits != bitpix => Err(format!(
            "inconsistent header: data type {name} has {bits} bits per voxel but bitpix is {bitpix}"
        )),
        Some(_) => Ok(()),
    }
}

/// Most bytes one byte of a deflate stream can expand to (zlib's bound,
/// 1032:1): a `.nii.gz` cannot hold more data than this times its size.
const MAX_DEFLATE_RATIO: u128 = 1032;

/// The data the header declares must fit in the file (uncompressed) or in
/// what the gzip stream could hold, before anything is allocated: a header
/// with huge dimensions is an error, not an allocation of terabytes.
fn check_data_size(h: &NiftiHeader, path: &Path) -> std::result::Result<(), String> {
    let n = usize::from(h.dim[0].min(7));
    let voxels: u128 = h.dim[1..=n].iter().map(|d| u128::from(*d)).product();
    let bytes = voxels * u128::from(h.bitpix.unsigned_abs()).div_ceil(8);
    let file = std::fs::metadata(path).map(|m| u128::from(m.len())).unwrap_or(0);
    let gz = path.to_string_lossy().ends_with(".gz");
    let room = if gz {
        file.saturating_mul(MAX_DEFLATE_RATIO)
    } else {
        file.saturating_sub(u128::from(h.vox_offset.max(0.0) as u64))
    };
    if bytes > room {
        return Err(format!(
            "the header declares {:?} voxels ({bytes} bytes of data) but the file{} can hold at most {room} bytes: a damaged or truncated image",
            &h.dim[1..=n],
            if gz { " (compressed)" } else { "" }
        ));
    }
    Ok(())
}

fn describe_write_error(e: nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) => format!("cannot write NIfTI image: {io}"),
        other => format!("cannot write NIfTI image: {other}"),
    }
}

/// Reads a 3D image; a 4D image with a single volume is accepted.
pub fn read_3d(path: impl AsRef<Path>) -> Result<(Array3<f64>, Geometry)> {
    let path = path.as_ref();
    let v = read_nifti(path)?;
    let shape = v.data.shape().to_vec();
    let data = match shape.len() {
        3 => v.data,
        4 if shape[3] == 1 => v
            .data
            .into_shape_with_order(&shape[..3])
            .map_err(|e| io_err(path, e.to_string()))?,
        2 => v.data.insert_axis(ndarray::Axis(2)),
        _ => {
            return Err(io_err(
                path,
                format!("expected a 3D image (x, y, z), found dimensions {shape:?}"),
            ));
        }
    };
    let data = data
        .into_dimensionality::<Ix3>()
        .map_err(|e| io_err(path, e.to_string()))?;
    Ok((data, v.geometry))
}

/// Reads a 4D image (x, y, z, t); a 3D file is an error naming its shape.
pub fn read_4d(path: impl AsRef<Path>) -> Result<(Array4<f64>, Geometry, Option<f64>)> {
    let path = path.as_ref();
    if let Some(read) = read_4d_streamed(path) {
        return read;
    }
    let v = read_nifti(path)?;
    let shape = v.data.shape().to_vec();
    if shape.len() != 4 {
        return Err(io_err(
            path,
            format!(
                "expected a 4D image (x, y, z, volumes), found {} dimensions {shape:?}",
                shape.len()
            ),
        ));
    }
    let data = v
        .data
        .into_dimensionality::<Ix4>()
        .map_err(|e| io_err(path, e.to_string()))?;
    Ok((data, v.geometry, v.time_step))
}

/// Fewest frames [`read_4d_chunked`] decodes at a time (a cache line of f64).
const MIN_CHUNK_FRAMES: usize = 8;

/// What [`read_4d`] returns: the series (values as `T`), its geometry and
/// time step.
type Series4<T = f64> = (Array4<T>, Geometry, Option<f64>);

/// Frames decoded at a time by [`read_4d_streamed`]: about this many bytes.
const STREAM_CHUNK_BYTES: usize = 32 << 20;

/// The common case of [`read_4d`] without a second copy of the series: a
/// single-file, little-endian 4D NIfTI-1 (`.nii` or `.nii.gz`) of uint8,
/// int16, uint16, float32 or float64 is decoded a few frames at a time
/// (about [`STREAM_CHUNK_BYTES`]) straight into the voxel-major f64 array,
/// so the peak is the f64 series plus two chunks (at most half the series),
/// not the raw image and the series together. Values are those of the
/// general reader, bit for bit (scl_slope and scl_inter as there). `None` when the file is not of that
/// kind, or its header is damaged: the general reader then reads it, or says
/// what is wrong.
fn read_4d_streamed(path: &Path) -> Option<Result<Series4>> {
    read_4d_chunked(path, STREAM_CHUNK_BYTES)
}

/// [`read_4d_streamed`] with chunks of about `chunk_bytes` (at least one frame).
fn read_4d_chunked(path: &Path, chunk_bytes: usize) -> Option<Result<Series4>> {
    Some(StreamPlan::of(path)?.read(chunk_bytes))
}

/// A 4D series with its values held as float32 when that is exact, else as
/// f64 ([`read_4d_any`]).
#[derive(Debug, Clone)]
pub enum AnySeries4 {
    /// Every value is exactly a float32 (uint8, int16, uint16 or float32
    /// samples without scaling): half the memory of f64.
    F32(Series4<f32>),
    /// Any other series.
    F64(Series4<f64>),
}

/// [`read_4d`], holding the values as float32 when every value is exactly a
/// float32: a single-file NIfTI of uint8, int16, uint16 or float32 samples
/// without scaling (`scl_slope` 0 or 1 with `scl_inter` 0). Widened to f64,
/// the values equal [`read_4d`]'s bit for bit. Other files give f64.
pub fn read_4d_any(path: impl AsRef<Path>) -> Result<AnySeries4> {
    let path = path.as_ref();
    match StreamPlan::of(path) {
        Some(plan) if plan.exact_in_f32() => plan.read(STREAM_CHUNK_BYTES).map(AnySeries4::F32),
        Some(plan) => plan.read(STREAM_CHUNK_BYTES).map(AnySeries4::F64),
        None => read_4d(path).map(AnySeries4::F64),
    }
}

/// The shape (x, y, z, volumes) and geometry of a 4D NIfTI-1 file from its
/// header alone: what [`read_4d`] gives with the data. `None` for another
/// file or a header that cannot be read (reading the file says why).
pub(crate) fn read_4d_header(path: &Path) -> Option<([usize; 4], Geometry)> {
    let h = header_4d(path)?;
    let shape = [1, 2, 3, 4].map(|i| usize::from(h.dim[i]));
    let geometry = Geometry {
        affine: affine_from_header(&h),
        voxel_size: [1, 2, 3].map(|i| (h.pixdim[i] as f64).abs()),
        header: h,
    };
    Some((shape, geometry))
}

/// The header of the 4D NIfTI file `path` with no zero dimension; `None`
/// for anything else, or a header the nifti crate cannot read (guarded
/// against its panics).
fn header_4d(path: &Path) -> Option<NiftiHeader> {
    if !path.is_file() {
        return None;
    }
    let p = path.to_path_buf();
    let h = std::panic::catch_unwind(move || NiftiHeader::from_file(&p))
        .ok()?
        .ok()?;
    (h.dim[0] == 4 && !h.dim[1..5].contains(&0)).then_some(h)
}

/// A file [`read_4d_streamed`] can read: its header, checked, and how its
/// samples decode.
struct StreamPlan<'a> {
    path: &'a Path,
    h: NiftiHeader,
    bytes_per: usize,
    /// The header's scaling as the general reader applies it (slope 0: none).
    slope: f64,
    inter: f64,
}

impl<'a> StreamPlan<'a> {
    /// The plan for `path`, or `None` when the file is not of the kind the
    /// streamed reader handles, or its header is damaged.
    fn of(path: &'a Path) -> Option<StreamPlan<'a>> {
        let h = header_4d(path)?;
        let bytes_per: usize = match h.datatype {
            2 => 1,
            4 | 512 => 2,
            16 => 4,
            64 => 8,
            _ => return None,
        };
        if &h.magic != b"n+1\0"
            || h.endianness != nifti::Endianness::Little
            || !(h.vox_offset >= 348.0)
            || check_data_type(&h).is_err()
            || check_data_size(&h, path).is_err()
        {
            return None;
        }
        // Scaling as the general reader applies it.
        let slope = if h.scl_slope.is_finite() { h.scl_slope } else { 0.0 };
        let inter = if h.scl_inter.is_finite() && slope != 0.0 {
            h.scl_inter
        } else {
            0.0
        };
        Some(StreamPlan {
            path,
            bytes_per,
            slope: f64::from(slope),
            inter: f64::from(inter),
            h,
        })
    }

    /// Whether every decoded value is exactly a float32: integer samples
    /// of at most 16 bits or float32 samples, unscaled (or scaled by 1 + 0,
    /// which changes no value).
    fn exact_in_f32(&self) -> bool {
        self.bytes_per <= 4 && (self.slope == 0.0 || (self.slope == 1.0 && self.inter == 0.0))
    }

    /// Reads the series into voxel-major `T`, chunks of about `chunk_bytes`.
    fn read<T: Sample>(&self, chunk_bytes: usize) -> Result<Series4<T>> {
        use std::io::Read;
        let (h, path, bytes_per) = (&self.h, self.path, self.bytes_per);
        let (nx, ny, nz, nt) = (
            usize::from(h.dim[1]),
            usize::from(h.dim[2]),
            usize::from(h.dim[3]),
            usize::from(h.dim[4]),
        );
        let n_vox = nx * ny * nz;
        let (slope, inter) = (self.slope, self.inter);
        let scale = move |v: f64| if slope == 0.0 { v } else { v * slope + inter };
        let datatype = h.datatype;
        // Places one chunk of frames with the sample type's own decoder (one
        // loop per type, so no per-sample dispatch).
        let place_chunk = |buf: &[u8], k: usize, t0: usize, row: &[usize], out: &mut [T]| match datatype {
            2 => place(buf, k, t0, row, out, |b: [u8; 1]| {
                T::from_f64(scale(f64::from(b[0])))
            }),
            4 => place(buf, k, t0, row, out, |b: [u8; 2]| {
                T::from_f64(scale(f64::from(i16::from_le_bytes(b))))
            }),
            512 => place(buf, k, t0, row, out, |b: [u8; 2]| {
                T::from_f64(scale(f64::from(u16::from_le_bytes(b))))
            }),
            16 => place(buf, k, t0, row, out, |b: [u8; 4]| {
                T::from_f64(scale(f64::from(f32::from_le_bytes(b))))
            }),
            _ => place(buf, k, t0, row, out, |b: [u8; 8]| {
                T::from_f64(scale(f64::from_le_bytes(b)))
            }),
        };
        let read = || -> std::result::Result<Vec<T>, String> {
            let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
            let file = std::io::BufReader::with_capacity(1 << 20, file);
            let mut src: Box<dyn Read + Send> = if path.to_string_lossy().ends_with(".gz") {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let truncated = |e: std::io::Error| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "file is truncated: it holds fewer bytes than its header's dimensions and data type require"
                        .to_string()
                } else {
                    format!("cannot read NIfTI image: {e}")
                }
            };
            // Header and extensions up to the data.
            std::io::copy(&mut (&mut src).take(h.vox_offset as u64), &mut std::io::sink())
                .map_err(truncated)?;
            let frame_bytes = n_vox * bytes_per;
            // At least 8 frames (a 64-byte line of f64 per voxel), so placing a
            // chunk writes whole cache lines even when one frame is large; but
            // at most a quarter of the series, so that the two chunk buffers
            // never hold more than half the series beside it (a series of a
            // few large frames, as a DWI series of 10^7 voxels: 8 frames of
            // 12 were 480 MB beside 460), and small series come in several
            // chunks too and their inflating overlaps the placing.
            let k_max = (chunk_bytes / frame_bytes.max(1))
                .max(MIN_CHUNK_FRAMES)
                .min(nt.div_ceil(4))
                .clamp(1, nt);
            let mut out = vec![T::default(); n_vox * nt];
            // Row start of each column-major spatial index s = x + nx (y + ny z):
            // voxel v = (x ny + y) nz + z holds its nt frames from v nt.
            let row: Vec<usize> = (0..n_vox)
                .map(|s| {
                    let (x, y, z) = (s % nx, (s / nx) % ny, s / (nx * ny));
                    ((x * ny + y) * nz + z) * nt
                })
                .collect();
            // One thread inflates chunks of frames while this one places the
            // previous chunk (two buffers in turn), so decompression, which
            // cannot be split, overlaps the reordering.
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(usize, usize, Vec<u8>)>(1);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            for _ in 0..2 {
                let _ = empty_tx.send(vec![0u8; k_max * frame_bytes]);
            }
            std::thread::scope(|scope| -> std::result::Result<(), String> {
                let producer = scope.spawn(move || -> std::result::Result<(), String> {
                    let mut t0 = 0;
                    while t0 < nt {
                        let k = k_max.min(nt - t0);
                        // The consumer has stopped: nothing more to do.
                        let Ok(mut buf) = empty_rx.recv() else {
                            return Ok(());
                        };
                        src.read_exact(&mut buf[..k * frame_bytes]).map_err(truncated)?;
                        if full_tx.send((t0, k, buf)).is_err() {
                            return Ok(());
                        }
                        t0 += k;
                    }
                    Ok(())
                });
                for (t0, k, buf) in full_rx {
                    place_chunk(&buf, k, t0, &row, &mut out);
                    let _ = empty_tx.send(buf);
                }
                producer
                    .join()
                    .map_err(|_| "the NIfTI reader failed on this file".to_string())?
            })?;
            Ok(out)
        };
        let data = read().map_err(|msg| io_err(path, msg))?;
        let data = Array4::from_shape_vec((nx, ny, nz, nt), data).map_err(|e| io_err(path, e.to_string()))?;
        let affine = affine_from_header(h);
        let voxel_size = [1, 2, 3].map(|i| (h.pixdim[i] as f64).abs());
        Ok((
            data,
            Geometry {
                affine,
                voxel_size,
                header: h.clone(),
            },
            time_step(h),
        ))
    }
}

/// Places `k` frames from frame `t0` on, as stored in `buf` (each frame x
/// fastest, samples of `B` bytes), into the voxel-major `out`, where voxel
/// `s` (file order) starts at `row[s]`; `decode` converts one sample.
/// Voxel by voxel: each voxel's `k` values are written together (a cache
/// line or two of one page), read from `k` streams through the frames.
/// This was 1.4x faster than writing one frame at a time across blocks of
/// 64 voxels, whose rows lie on 64 pages.
#[inline(always)]
fn place<T, const B: usize>(
    buf: &[u8],
    k: usize,
    t0: usize,
    row: &[usize],
    out: &mut [T],
    decode: impl Fn([u8; B]) -> T,
) {
    let frame_bytes = row.len() * B;
    for (s, &r) in row.iter().enumerate() {
        for (f, o) in out[r + t0..r + t0 + k].iter_mut().enumerate() {
            let i = f * frame_bytes + s * B;
            *o = decode(buf[i..i + B].try_into().unwrap_or([0; B]));
        }
    }
}

fn output_header(geometry: &Geometry, description: &str) -> NiftiHeader {
    let mut h = geometry.header.clone();
    h.scl_slope = 1.0;
    h.scl_inter = 0.0;
    h.cal_max = 0.0;
    h.cal_min = 0.0;
    h.intent_code = 0;
    h.descrip = description.as_bytes().iter().take(79).copied().collect();
    h
}

/// Writes a 3D map as float32 `.nii.gz` with the source geometry, through a
/// temporary file renamed on completion.
pub fn write_map(path: impl AsRef<Path>, values: &Array3<f64>, geometry: &Geometry) -> Result<()> {
    let data = to_file_order(values, |v| v as f32);
    let header = output_header(geometry, "osipy parameter map");
    write_f32(path.as_ref(), &data.into_dyn(), &header)
}

/// `values` converted by `f` into an array of the same shape laid out x
/// fastest (NIfTI's file order), by a tiled transpose: the writer then
/// copies contiguous slices. Handing it the row-major array made it gather
/// each z slice across the whole array, which grew faster than the volume
/// (7 s for the IVIM maps of 10^7 voxels against 0.4 s for 10^6).
fn to_file_order<T: Copy + Default, U: Copy>(values: &Array3<U>, f: impl Fn(U) -> T) -> Array3<T> {
    use ndarray::ShapeBuilder;
    let (nx, ny, nz) = values.dim();
    let mut out = vec![T::default(); nx * ny * nz];
    match values.as_slice() {
        Some(src) => {
            // Source (x ny + y) nz + z; destination x + nx (y + ny z).
            const TILE: usize = 16;
            for y in 0..ny {
                for x0 in (0..nx).step_by(TILE) {
                    let x1 = (x0 + TILE).min(nx);
                    for z in 0..nz {
                        let d = nx * (y + ny * z);
                        for x in x0..x1 {
                            out[d + x] = f(src[(x * ny + y) * nz + z]);
                        }
                    }
                }
            }
        }
        None => {
            for ((x, y, z), v) in values.indexed_iter() {
                out[x + nx * (y + ny * z)] = f(*v);
            }
        }
    }
    // A shape of the right size never fails here.
    Array3::from_shape_vec((nx, ny, nz).f(), out).unwrap_or_else(|_| values.mapv(f))
}

/// Writes a 3D uint8 mask (e.g. quality codes) as `.nii.gz`.
pub fn write_mask(path: impl AsRef<Path>, values: &Array3<u8>, geometry: &Geometry) -> Result<()> {
    let path = path.as_ref();
    check_output_name(path)?;
    let header = output_header(geometry, "osipy mask");
    let data = to_file_order(values, |v| v).into_dyn();
    atomic_write(path, |tmp: &PathBuf| {
        WriterOptions::new(tmp)
            .reference_header(&header)
            .write_nifti(&data)
            .map_err(describe_write_error)
    })
}

/// Writes a 4D float32 series with `time_step` (s) in pixdim[4].
pub fn write_4d(
    path: impl AsRef<Path>,
    values: &Array4<f64>,
    geometry: &Geometry,
    time_step: f64,
) -> Result<()> {
    let data = values.mapv(|v| v as f32);
    write_f32(
        path.as_ref(),
        &data.into_dyn(),
        &series_header(geometry, time_step),
    )
}

/// [`write_4d`] in float64: an exact copy of `values` (twice the size), e.g.
/// of a series read from DICOM.
pub fn write_4d_f64(
    path: impl AsRef<Path>,
    values: &Array4<f64>,
    geometry: &Geometry,
    time_step: f64,
) -> Result<()> {
    let path = path.as_ref();
    check_output_name(path)?;
    let header = series_header(geometry, time_step);
    let data = values.view().into_dyn();
    atomic_write(path, |tmp: &PathBuf| {
        WriterOptions::new(tmp)
            .reference_header(&header)
            .write_nifti(&data)
            .map_err(describe_write_error)
    })
}

fn series_header(geometry: &Geometry, time_step: f64) -> NiftiHeader {
    let mut header = output_header(geometry, "osipy series");
    header.pixdim[4] = time_step as f32;
    header.xyzt_units = (header.xyzt_units & 0x07) | 8;
    header
}

fn check_output_name(path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".nii.gz") || name.ends_with(".nii") {
        Ok(())
    } else {
        Err(io_err(path, "output name must end in .nii.gz or .nii".into()))
    }
}

fn write_f32(path: &Path, data: &ndarray::ArrayD<f32>, header: &NiftiHeader) -> Result<()> {
    check_output_name(path)?;
    atomic_write(path, |tmp: &PathBuf| {
        WriterOptions::new(tmp)
            .reference_header(header)
            .write_nifti(data)
            .map_err(describe_write_error)
    })
}

/// Writes `map` into `dir` as `<name>.nii.gz` with a `<name>.json` sidecar
/// (units, provenance, quality counts), plus `<name>_se.nii.gz` when it has
/// standard errors. Returns the paths written.
pub fn write_parameter_map(
    dir: impl AsRef<Path>,
    map: &ParameterMap,
    geometry: &Geometry,
) -> Result<Vec<PathBuf>> {
    write_parameter_map_as(dir, map, geometry, ".nii.gz")
}

/// [`write_parameter_map`] with the images' extension `ext`: `.nii.gz`
/// (gzip-compressed) or `.nii` (plain, faster to write and read).
pub fn write_parameter_map_as(
    dir: impl AsRef<Path>,
    map: &ParameterMap,
    geometry: &Geometry,
    ext: &str,
) -> Result<Vec<PathBuf>> {
    write_parameter_map_with(dir, map, &map.provenance, geometry, ext)
}

/// [`write_parameter_map_as`] with `provenance` in the sidecar instead of
/// the map's own (e.g. the map's with the run's config added), without a
/// copy of the map's arrays.
pub fn write_parameter_map_with(
    dir: impl AsRef<Path>,
    map: &ParameterMap,
    provenance: &osipy_core::Provenance,
    geometry: &Geometry,
    ext: &str,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut written = Vec::new();
    let main = dir.join(format!("{}{ext}", map.name));
    write_map(&main, &map.values, geometry)?;
    written.push(main);
    if let Some(se) = &map.std_error {
        let p = dir.join(format!("{}_se{ext}", map.name));
        write_map(&p, se, geometry)?;
        written.push(p);
    }
    let counts: serde_json::Map<String, serde_json::Value> = map
        .quality_counts()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let sidecar = serde_json::json!({
        "Name": map.name,
        "Symbol": map.symbol,
        "Units": map.unit.symbol(),
        "StandardErrorFile": map.std_error.as_ref().map(|_| format!("{}_se{ext}", map.name)),
        "Provenance": provenance,
        "QualityCounts": counts,
    });
    let json = dir.join(format!("{}.json", map.name));
    write_json(&json, &sidecar)?;
    written.push(json);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    /// The tiled transpose keeps every value at its (x, y, z), in x-fastest
    /// memory, for shapes that do not fill the tiles.
    #[test]
    fn file_order_keeps_values_and_lays_x_fastest() {
        for shape in [(37usize, 5usize, 3usize), (1, 1, 1), (16, 2, 9)] {
            let a = Array3::from_shape_fn(shape, |(x, y, z)| (x * 10_000 + y * 100 + z) as f64);
            let f = to_file_order(&a, |v| v as f32);
            assert_eq!(f.dim(), a.dim());
            assert!(f.t().is_standard_layout());
            for ((x, y, z), v) in a.indexed_iter() {
                assert_eq!(f[[x, y, z]], *v as f32);
            }
            let strided = a.slice(ndarray::s![.., ..;-1, ..]);
            let g = to_file_order(&strided.to_owned(), |v| v);
            assert_eq!(g, strided);
        }
    }

    /// Any chunk size (one frame, a few, all) streams the same series as
    /// the general reader, from .nii and .nii.gz, with blocks of voxels
    /// that do not divide the grid.
    #[test]
    fn chunks_of_any_size_give_the_same_series() {
        let dir = tempfile::tempdir().unwrap();
        let data = Array4::from_shape_fn((9, 8, 3, 5), |(x, y, z, t)| {
            (x * 1000 + y * 100 + z * 10 + t) as f64 * 0.5
        });
        let geometry = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
        for name in ["s.nii", "s.nii.gz"] {
            let p = dir.path().join(name);
            write_4d(&p, &data, &geometry, 2.0).unwrap();
            let read = read_nifti(&p).unwrap();
            // The header alone gives the shape and geometry of the full read.
            let (shape, g) = read_4d_header(&p).unwrap();
            assert_eq!(shape, [9, 8, 3, 5]);
            assert_eq!(g.affine, read.geometry.affine);
            assert_eq!(g.voxel_size, read.geometry.voxel_size);
            let general = read.data.into_dimensionality::<Ix4>().unwrap();
            assert_eq!(general, data);
            let frame = 9 * 8 * 3 * 4;
            for chunk in [1, frame, 2 * frame + 7, 100 * frame] {
                let (a, _, dt) = read_4d_chunked(&p, chunk).unwrap().unwrap();
                assert_eq!(a, general, "{name}, chunk {chunk} bytes");
                assert_eq!(dt, Some(2.0));
            }
        }
    }

    /// The blocked transpose gives what ndarray's generic copy gives, for
    /// 4D and 3D column-major arrays of sizes that do not fill the blocks.
    #[test]
    fn column_major_arrays_become_standard_layout_unchanged_in_value() {
        for shape in [vec![7usize, 5, 3, 4], vec![130, 3, 2, 1], vec![9, 11, 13]] {
            let n: usize = shape.iter().product();
            let f = ArrayD::from_shape_vec(
                ndarray::IxDyn(&shape).f(),
                (0..n).map(|i| i as f64 * 0.5).collect(),
            )
            .unwrap();
            assert!(!f.is_standard_layout());
            let expected = f.as_standard_layout().into_owned();
            let got = into_standard_layout(f);
            assert!(got.is_standard_layout());
            assert_eq!(got, expected, "{shape:?}");
        }
        let c = ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), vec![1.0; 6]).unwrap();
        assert_eq!(into_standard_layout(c.clone()), c);
    }

    /// The one-pass decoder equals the nifti crate's own conversion (then
    /// reordered) for every voxel type it handles, with and without scaling.
    #[test]
    fn one_pass_decoding_matches_the_nifti_crate() {
        use nifti::{NiftiType, NiftiVolume};
        let dims = [5usize, 4, 3, 2];
        let n: usize = dims.iter().product();
        for (ty, bytes_per) in [
            (NiftiType::Uint8, 1usize),
            (NiftiType::Int16, 2),
            (NiftiType::Uint16, 2),
            (NiftiType::Float32, 4),
            (NiftiType::Float64, 8),
            (NiftiType::Int32, 4),
        ] {
            for (slope, inter) in [(0.0f32, 0.0f32), (2.5, -3.0), (1.0, 0.0)] {
                let h = NiftiHeader {
                    dim: [4, 5, 4, 3, 2, 1, 1, 1],
                    datatype: ty as i16,
                    bitpix: (8 * bytes_per) as i16,
                    scl_slope: slope,
                    scl_inter: inter,
                    ..NiftiHeader::default()
                };
                // Bytes that are valid values of every type (no NaN patterns).
                let raw: Vec<u8> = (0..n * bytes_per)
                    .map(|i| {
                        if ty == NiftiType::Float32 || ty == NiftiType::Float64 {
                            if i % bytes_per == bytes_per - 1 {
                                0x3f
                            } else {
                                (i * 7 % 200) as u8
                            }
                        } else {
                            (i * 37 % 251) as u8
                        }
                    })
                    .collect();
                let vol = nifti::InMemNiftiVolume::from_raw_data(&h, raw).unwrap();
                let expected = vol
                    .clone()
                    .into_ndarray::<f64>()
                    .unwrap()
                    .as_standard_layout()
                    .into_owned();
                let got = match decode_row_major(vol, slope, inter).unwrap() {
                    Ok(a) => a,
                    Err(v) => {
                        assert_eq!(v.data_type(), NiftiType::Int32, "{ty:?} not decoded");
                        continue;
                    }
                };
                assert!(got.is_standard_layout());
                assert_eq!(got.shape(), &dims);
                assert!(
                    got.iter()
                        .zip(expected.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty:?} slope {slope} inter {inter}"
                );
            }
        }
    }
}
