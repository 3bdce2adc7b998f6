//! NIfTI reading and writing, checked against files built byte by byte from
//! the NIfTI-1 specification (independent of the reader under test).

use ndarray::{Array3, Array4};
use osipy_core::{ParameterMap, Provenance, QualityCode, Unit};
use osipy_io::*;
use std::io::Write;
use std::path::Path;

/// Header fields a test sets; the rest are zero.
struct Hdr {
    dim: Vec<u16>,
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    scl_slope: f32,
    scl_inter: f32,
    xyzt_units: u8,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
}

impl Default for Hdr {
    fn default() -> Self {
        Hdr {
            dim: vec![],
            datatype: 4,
            bitpix: 16,
            pixdim: [1.0, 2.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0],
            scl_slope: 1.0,
            scl_inter: 0.0,
            xyzt_units: 2,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 6],
            srow: [[0.0; 4]; 3],
        }
    }
}

/// A single-file NIfTI-1 image (little endian), offsets from nifti1.h.
fn nifti_bytes(h: &Hdr, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
    put(&mut b, 0, &348i32.to_le_bytes());
    let mut dim = [0i16; 8];
    dim[0] = h.dim.len() as i16;
    for (i, d) in h.dim.iter().enumerate() {
        dim[i + 1] = *d as i16;
    }
    for (i, d) in dim.iter().enumerate() {
        put(&mut b, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut b, 70, &h.datatype.to_le_bytes());
    put(&mut b, 72, &h.bitpix.to_le_bytes());
    for (i, p) in h.pixdim.iter().enumerate() {
        put(&mut b, 76 + 4 * i, &p.to_le_bytes());
    }
    put(&mut b, 108, &352f32.to_le_bytes());
    put(&mut b, 112, &h.scl_slope.to_le_bytes());
    put(&mut b, 116, &h.scl_inter.to_le_bytes());
    b[123] = h.xyzt_units;
    put(&mut b, 252, &h.qform_code.to_le_bytes());
    put(&mut b, 254, &h.sform_code.to_le_bytes());
    for (i, q) in h.quatern.iter().enumerate() {
        put(&mut b, 256 + 4 * i, &q.to_le_bytes());
    }
    for (r, row) in h.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut b, 280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    put(&mut b, 344, b"n+1\0");
    b.extend_from_slice(data);
    b
}

fn i16_data(n: usize) -> Vec<u8> {
    (0..n as i16).flat_map(|v| v.to_le_bytes()).collect()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn reads_any_type_with_scaling_sform_and_time_step() {
    let dir = tempfile::tempdir().unwrap();
    // 2x3x2x4 int16 series, values 0..48 in file (Fortran) order, scaled
    // v' = 2 v - 5, sform affine, time step 1500 ms.
    let h = Hdr {
        dim: vec![2, 3, 2, 4],
        scl_slope: 2.0,
        scl_inter: -5.0,
        pixdim: [1.0, 2.0, 2.0, 3.0, 1500.0, 0.0, 0.0, 0.0],
        xyzt_units: 2 | 16,
        sform_code: 1,
        qform_code: 1,
        srow: [
            [-2.0, 0.0, 0.0, 90.0],
            [0.0, 2.0, 0.0, -126.0],
            [0.0, 0.0, 3.0, -72.0],
        ],
        ..Hdr::default()
    };
    let bytes = nifti_bytes(&h, &i16_data(48));
    for (name, content) in [("s.nii", bytes.clone()), ("s.nii.gz", gz(&bytes))] {
        let p = write(dir.path(), name, &content);
        let (data, geom, dt) = read_4d(&p).unwrap();
        assert_eq!(data.shape(), [2, 3, 2, 4]);
        // File order is x fastest: index (x, y, z, t) holds x + 2y + 6z + 12t.
        for ((x, y, z, t), v) in data.indexed_iter() {
            let raw = (x + 2 * y + 6 * z + 12 * t) as f64;
            assert_eq!(*v, 2.0 * raw - 5.0);
        }
        assert_eq!(geom.affine[0], [-2.0, 0.0, 0.0, 90.0]);
        assert_eq!(geom.affine[2], [0.0, 0.0, 3.0, -72.0]);
        assert_eq!(dt, Some(1.5), "1500 ms is 1.5 s");
    }
    // A non-finite scl_slope means no scaling; a non-finite scl_inter no
    // offset (nifti1_io, nibabel), not NaN voxels.
    for (slope, inter, want) in [
        (f32::NAN, 3.0, (1.0, 0.0)),
        (f32::INFINITY, 0.0, (1.0, 0.0)),
        (2.0, f32::NAN, (2.0, 0.0)),
    ] {
        let h = Hdr {
            dim: vec![2, 3, 2, 4],
            scl_slope: slope,
            scl_inter: inter,
            ..Hdr::default()
        };
        let p = write(dir.path(), "nan_slope.nii", &nifti_bytes(&h, &i16_data(48)));
        let (data, _, _) = read_4d(&p).unwrap();
        for ((x, y, z, t), v) in data.indexed_iter() {
            let raw = (x + 2 * y + 6 * z + 12 * t) as f64;
            assert_eq!(*v, want.0 * raw + want.1, "slope {slope}, inter {inter}");
        }
    }
    // float64 data type too.
    let h = Hdr {
        dim: vec![2, 1, 1],
        datatype: 64,
        bitpix: 64,
        ..Hdr::default()
    };
    let data: Vec<u8> = [0.25f64, -1e10].iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = write(dir.path(), "f.nii", &nifti_bytes(&h, &data));
    let (v, geom) = read_3d(&p).unwrap();
    assert_eq!(v.as_slice_memory_order().map(|s| s.len()), Some(2));
    assert_eq!((v[[0, 0, 0]], v[[1, 0, 0]]), (0.25, -1e10));
    // No sform/qform: voxel sizes on the diagonal.
    assert_eq!(geom.affine[0][0], 2.0);
    assert_eq!(geom.affine[2][2], 3.0);
}

#[test]
fn affine_from_qform_quaternion() {
    // 90 degrees about z: quaternion (a, b, c, d) = (cos 45, 0, 0, sin 45), so
    // R = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]; with voxel sizes (2, 2, 3) and
    // qfac = -1 the z column flips.
    let dir = tempfile::tempdir().unwrap();
    let s = std::f32::consts::FRAC_1_SQRT_2;
    let h = Hdr {
        dim: vec![2, 2, 2],
        qform_code: 1,
        pixdim: [-1.0, 2.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0],
        quatern: [0.0, 0.0, s, 10.0, 20.0, 30.0],
        ..Hdr::default()
    };
    let p = write(dir.path(), "q.nii", &nifti_bytes(&h, &i16_data(8)));
    let (_, geom) = read_3d(&p).unwrap();
    let expected = [
        [0.0, -2.0, 0.0, 10.0],
        [2.0, 0.0, 0.0, 20.0],
        [0.0, 0.0, -3.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (geom.affine[r][c] - expected[r][c]).abs() < 1e-6,
                "{:?}",
                geom.affine
            );
        }
    }
}

#[test]
fn malformed_files_give_errors_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hdr {
        dim: vec![4, 4, 4, 3],
        ..Hdr::default()
    };
    let full = nifti_bytes(&h, &i16_data(192));
    let cases = [
        ("truncated.nii", full[..full.len() - 100].to_vec(), "truncated"),
        ("truncated.nii.gz", gz(&full[..full.len() - 100]), "truncated"),
        ("header_only.nii", full[..200].to_vec(), "truncated"),
        ("garbage.nii", vec![7u8; 400], "not a NIfTI-1 file"),
        ("garbage.nii.gz", b"this is not gzip".to_vec(), "cannot read"),
    ];
    // A gzip stream whose deflate data are corrupt: an I/O error, told in
    // words (the reader's own text is Rust debug output).
    let mut corrupt = gz(&full);
    for b in corrupt.iter_mut().skip(12).take(40) {
        *b = 0xff;
    }
    // RGB voxels, and a bitpix that disagrees with the data type: errors
    // in words, not the reader's panic.
    let rgb = nifti_bytes(
        &Hdr {
            dim: vec![4, 4, 4, 3],
            datatype: 128,
            bitpix: 24,
            ..Hdr::default()
        },
        &vec![0u8; 4 * 4 * 4 * 3 * 3],
    );
    let bad_bitpix = nifti_bytes(
        &Hdr {
            dim: vec![4, 4, 4, 3],
            bitpix: 32,
            ..Hdr::default()
        },
        &i16_data(192),
    );
    let cases = cases.into_iter().chain([
        ("corrupt.nii.gz", corrupt, "cannot read NIfTI image"),
        ("rgb.nii", rgb, "RGB colour voxels) is not supported"),
        (
            "bitpix.nii",
            bad_bitpix,
            "int16 has 16 bits per voxel but bitpix is 32",
        ),
    ]);
    for (name, bytes, needle) in cases {
        let p = write(dir.path(), name, &bytes);
        let e = read_4d(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
        assert!(!e.contains("kind:") && !e.contains("Custom {"), "{name}: {e}");
    }
    let e = read_4d(dir.path()).unwrap_err().to_string();
    assert!(e.contains("is a folder, not a file"), "{e}");
    let e = read_4d(dir.path().join("missing.nii.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.nii.gz") && e.contains("no such file"), "{e}");
    // Wrong dimensionality.
    let p = write(
        dir.path(),
        "vol3d.nii",
        &nifti_bytes(
            &Hdr {
                dim: vec![2, 2, 2],
                ..Hdr::default()
            },
            &i16_data(8),
        ),
    );
    let e = read_4d(&p).unwrap_err().to_string();
    assert!(
        e.contains("vol3d.nii") && e.contains("expected a 4D image") && e.contains("[2, 2, 2]"),
        "{e}"
    );
    let p = write(dir.path(), "series.nii", &full);
    let e = read_3d(&p).unwrap_err().to_string();
    assert!(
        e.contains("expected a 3D image") && e.contains("[4, 4, 4, 3]"),
        "{e}"
    );
}

#[test]
fn maps_round_trip_with_geometry_and_sidecar_and_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let geom = Geometry::from_affine([
        [-2.0, 0.0, 0.0, 90.0],
        [0.0, 2.0, 0.0, -126.0],
        [0.0, 0.0, 3.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let values = Array3::from_shape_fn((3, 2, 2), |(x, y, z)| 0.1 * x as f64 + 0.01 * y as f64 + z as f64);
    let mut quality = Array3::from_elem((3, 2, 2), QualityCode::Converged);
    quality[[1, 1, 1]] = QualityCode::Singular;
    let se = Array3::from_elem((3, 2, 2), 0.005);
    let prov = Provenance::default().with_method("model", "test");
    let map = ParameterMap::new(
        "Ktrans",
        "K^trans",
        Unit::PerMinute,
        values.clone(),
        quality,
        Some(se),
        prov,
    )
    .unwrap();
    let written = write_parameter_map(dir.path(), &map, &geom).unwrap();
    assert_eq!(written.len(), 3);

    let (back, g2) = read_3d(dir.path().join("Ktrans.nii.gz")).unwrap();
    for ((idx, v), orig) in back.indexed_iter().zip(values.iter()) {
        if idx == (1, 1, 1) {
            assert!(v.is_nan(), "invalid voxel is NaN on disk");
        } else {
            // float32 storage: 1e-7 relative.
            assert!((v - orig).abs() <= 1e-6 * orig.abs().max(1.0));
        }
    }
    assert_eq!(g2.affine, geom.affine);
    let (se_back, _) = read_3d(dir.path().join("Ktrans_se.nii.gz")).unwrap();
    assert!((se_back[[0, 0, 0]] - 0.005).abs() < 1e-9);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("Ktrans.json")).unwrap()).unwrap();
    assert_eq!(sidecar["Units"], "1/min");
    assert_eq!(sidecar["Provenance"]["methods"]["model"], "test");
    assert_eq!(sidecar["QualityCounts"]["singular"], 1);
    // Masks and 4D series.
    let mask = Array3::from_shape_fn((3, 2, 2), |(x, _, _)| x as u8);
    write_mask(dir.path().join("quality_mask.nii.gz"), &mask, &geom).unwrap();
    let (m, _) = read_3d(dir.path().join("quality_mask.nii.gz")).unwrap();
    assert_eq!(m[[2, 0, 0]], 2.0);
    let series = Array4::from_shape_fn((2, 2, 1, 5), |(x, _, _, t)| (x * 10 + t) as f64);
    write_4d(dir.path().join("dyn.nii.gz"), &series, &geom, 3.5).unwrap();
    let (s, _, dt) = read_4d(dir.path().join("dyn.nii.gz")).unwrap();
    assert_eq!(s, series);
    assert_eq!(dt, Some(3.5));
    // Nothing temporary is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("osipy-tmp")), "{names:?}");
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let geom = Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
    let v = Array3::zeros((2, 2, 2));
    let e = write_map(dir.path().join("no_such_dir/x.nii.gz"), &v, &geom)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = write_map(dir.path().join("x.img"), &v, &geom)
        .unwrap_err()
        .to_string();
    assert!(e.contains(".nii.gz or .nii"), "{e}");
    // A writer that fails midway: the target keeps its old content.
    let target = dir.path().join("keep.json");
    std::fs::write(&target, "old").unwrap();
    let r = atomic_write(&target, |tmp| {
        std::fs::write(tmp, "partial").unwrap();
        Err("simulated failure".into())
    });
    assert!(r.unwrap_err().to_string().contains("simulated failure"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// `read_4d` decodes common single-file series a few frames at a time
/// straight into the voxel-major array; its values, geometry and time step
/// equal the general reader's (`read_nifti`) for every such type, scaled
/// or not, plain or compressed (several chunks: the unit test
/// `chunks_of_any_size_give_the_same_series` in `nifti_io`).
#[test]
fn streamed_series_equal_the_general_reader() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [5usize, 4, 3, 7];
    let n: usize = dims.iter().product();
    let cases: [(i16, i16, Vec<u8>); 5] = [
        (2, 8, (0..n).map(|i| (i * 7 % 251) as u8).collect()),
        (
            4,
            16,
            (0..n)
                .flat_map(|i| ((i as i16) * 37 - 900).to_le_bytes())
                .collect(),
        ),
        (
            512,
            16,
            (0..n)
                .flat_map(|i| ((i * 613 % 65521) as u16).to_le_bytes())
                .collect(),
        ),
        (
            16,
            32,
            (0..n)
                .flat_map(|i| (i as f32 * 0.37 - 11.0).to_le_bytes())
                .collect(),
        ),
        (
            64,
            64,
            (0..n)
                .flat_map(|i| (i as f64 / 3.0 - 7.5).to_le_bytes())
                .collect(),
        ),
    ];
    for (datatype, bitpix, data) in cases {
        for (slope, inter) in [(1.0f32, 0.0f32), (0.5, -3.0), (0.0, 4.0)] {
            let h = Hdr {
                dim: dims.iter().map(|d| *d as u16).collect(),
                datatype,
                bitpix,
                scl_slope: slope,
                scl_inter: inter,
                pixdim: [1.0, 2.0, 2.0, 3.0, 2.5, 0.0, 0.0, 0.0],
                xyzt_units: 2 | 8,
                ..Hdr::default()
            };
            let bytes = nifti_bytes(&h, &data);
            for (name, content) in [("s.nii", bytes.clone()), ("s.nii.gz", gz(&bytes))] {
                let p = write(dir.path(), name, &content);
                let (a, ga, ta) = read_4d(&p).unwrap();
                let general = read_nifti(&p).unwrap();
                let b = general.data.into_dimensionality::<ndarray::Ix4>().unwrap();
                assert_eq!(a, b, "type {datatype}, slope {slope}, {name}");
                assert!(a.is_standard_layout());
                assert_eq!(ga.affine, general.geometry.affine);
                assert_eq!(ta, general.time_step);
                assert_eq!(ta, Some(2.5));
                // Held as float32 exactly when every value is a float32:
                // types of at most 32 bits (not float64), unscaled; widened,
                // the same values bit for bit.
                let narrow = datatype != 64 && (slope == 0.0 || (slope == 1.0 && inter == 0.0));
                let (wide, g32) = match read_4d_any(&p).unwrap() {
                    AnySeries4::F32((s, g, _)) => (s.mapv(f64::from), g),
                    AnySeries4::F64((s, g, _)) => (s, g),
                };
                assert_eq!(
                    matches!(read_4d_any(&p).unwrap(), AnySeries4::F32(_)),
                    narrow,
                    "type {datatype}, slope {slope}, inter {inter}"
                );
                assert!(wide.iter().zip(&a).all(|(x, y)| x.to_bits() == y.to_bits()));
                assert_eq!(g32.affine, ga.affine);
            }
        }
    }
}
