//! DICOM input: synthetic series per vendor convention read back, checked
//! against the array and affine they were written from and against dcm2niix.

use ndarray::Array4;
use osipy_io::dicom::synthetic::{Layout, SyntheticSeries};
use osipy_io::dicom::{scan, SeriesSelector, Vendor};

/// An LAS affine (dcm2niix's layout of an axial scan) with an offset.
const AFFINE: [[f64; 4]; 4] = [
    [-1.5, 0.0, 0.0, 40.0],
    [0.0, 1.25, 0.0, -30.0],
    [0.0, 0.0, 3.0, 12.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn volume(shape: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_fn(shape, |(i, j, k, t)| {
        100.0 + 7.0 * i as f64 + 3.0 * j as f64 * (1.0 + 0.1 * t as f64) + 11.0 * k as f64 + (t * t) as f64
    })
}

fn max_abs_diff(a: &Array4<f64>, b: &Array4<f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn classic_and_enhanced_round_trip_for_every_vendor() {
    let data = volume((6, 5, 4, 3));
    for layout in [Layout::Classic, Layout::Enhanced] {
        for vendor in [Vendor::Siemens, Vendor::Ge, Vendor::Philips, Vendor::Other] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = SyntheticSeries::new(&data, AFFINE);
            s.vendor = vendor;
            s.layout = layout;
            s.b_values = Some(vec![0.0, 400.0, 800.0]);
            s.tr = Some(0.005);
            s.te = Some(0.0021);
            s.flip_angle = Some(25.0);
            s.field_strength = Some(3.0);
            s.write(dir.path()).unwrap();
            let series = scan(dir.path(), None).unwrap();
            assert_eq!(series.shape, [6, 5, 4, 3], "{vendor:?} {layout:?}");
            assert_eq!(series.vendor, vendor);
            let back = series.read().unwrap();
            // 16-bit quantisation of each frame's range.
            assert!(
                max_abs_diff(&back, &data) < 1e-2,
                "{vendor:?} {layout:?}: {}",
                max_abs_diff(&back, &data)
            );
            for (r, row) in series.geometry.affine.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    assert!(
                        (v - AFFINE[r][c]).abs() < 1e-6,
                        "{vendor:?} {layout:?} affine[{r}][{c}] = {v}"
                    );
                }
            }
            assert_eq!(
                series.b_values.as_deref(),
                Some(&[0.0, 400.0, 800.0][..]),
                "{vendor:?} {layout:?}"
            );
            let j = &series.sidecar;
            assert_eq!(j["RepetitionTime"].as_f64(), Some(0.005));
            assert!((j["EchoTime"].as_f64().unwrap() - 0.0021).abs() < 1e-12);
            assert_eq!(j["FlipAngle"].as_f64(), Some(25.0));
            if layout == Layout::Classic {
                assert_eq!(j["MagneticFieldStrength"].as_f64(), Some(3.0));
            }
        }
    }
}

#[test]
fn frame_times_come_from_acquisition_times() {
    let data = volume((4, 4, 3, 5));
    let times = vec![0.0, 3.5, 7.0, 10.5, 14.0];
    for layout in [Layout::Classic, Layout::Enhanced] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SyntheticSeries::new(&data, AFFINE);
        s.layout = layout;
        s.frame_times = Some(times.clone());
        s.write(dir.path()).unwrap();
        let series = scan(dir.path(), None).unwrap();
        let ft = series.frame_times.clone().unwrap();
        for (a, b) in ft.iter().zip(&times) {
            assert!((a - b).abs() < 1e-6, "{layout:?}: {ft:?}");
        }
        assert!(max_abs_diff(&series.read().unwrap(), &data) < 1e-2);
    }
}

#[test]
fn several_series_need_a_selector() {
    let dir = tempfile::tempdir().unwrap();
    let a = volume((4, 4, 2, 2));
    let b = a.mapv(|v| 2.0 * v);
    let mut s = SyntheticSeries::new(&a, AFFINE);
    s.series_number = 3;
    s.description = "ep2d_perf".into();
    s.write(&dir.path().join("s3")).unwrap();
    let mut s = SyntheticSeries::new(&b, AFFINE);
    s.series_number = 7;
    s.description = "t1_vfa_fa15".into();
    s.write(&dir.path().join("s7")).unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("holds 2 series") && e.contains("ep2d_perf") && e.contains("t1_vfa_fa15"),
        "{e}"
    );
    let by_number = scan(dir.path(), Some(&SeriesSelector::Number(7))).unwrap();
    assert!(max_abs_diff(&by_number.read().unwrap(), &b) < 1e-2);
    let by_pattern = scan(dir.path(), Some(&SeriesSelector::parse("EP2D*"))).unwrap();
    assert_eq!(by_pattern.info.number, Some(3));
    let e = scan(dir.path(), Some(&SeriesSelector::parse("*")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches 2 series"), "{e}");
    let e = scan(dir.path(), Some(&SeriesSelector::Number(9)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("matches no series") && e.contains("t1_vfa_fa15"),
        "{e}"
    );
}

/// The 4D array, affine and frame spacing osipy reads from a series equal
/// dcm2niix's conversion of the same files (dcm2niix writes float32 when
/// the rescale varies between frames: tolerance 1e-3 on values of 100-300;
/// affine to 1e-4 mm; its TR estimate from the acquisition times is the
/// frame spacing, except for GE (it keeps the TR) and enhanced files (none)).
#[test]
fn matches_dcm2niix() {
    let Some(dcm2niix) = osipy_io::peers::find("dcm2niix", "dcm2niix") else {
        return;
    };
    let data = volume((7, 5, 4, 6));
    let times: Vec<f64> = (0..6).map(|t| 2.5 * t as f64).collect();
    let tilted = {
        // 20 degrees about x: oblique slices.
        let (s, c) = (20f64.to_radians().sin(), 20f64.to_radians().cos());
        [
            [-1.5, 0.0, 0.0, 40.0],
            [0.0, 1.25 * c, -3.0 * s, -30.0],
            [0.0, 1.25 * s, 3.0 * c, 12.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    };
    for affine in [AFFINE, tilted] {
        for layout in [Layout::Classic, Layout::Enhanced] {
            // dcm2niix reads enhanced files of Siemens (XA) and GE by their
            // own private conventions, which synthetic files do not follow:
            // enhanced files are compared as Philips and vendor-neutral ones.
            let vendors: &[Vendor] = match layout {
                Layout::Classic => &[Vendor::Siemens, Vendor::Ge, Vendor::Philips, Vendor::Other],
                Layout::Enhanced => &[Vendor::Philips, Vendor::Other],
            };
            for &vendor in vendors {
                let dir = tempfile::tempdir().unwrap();
                let dicom = dir.path().join("dicom");
                let mut s = SyntheticSeries::new(&data, affine);
                s.layout = layout;
                s.vendor = vendor;
                s.frame_times = Some(times.clone());
                s.tr = Some(0.004);
                s.write(&dicom).unwrap();
                let out = dir.path().join("nii");
                std::fs::create_dir(&out).unwrap();
                let run = std::process::Command::new(&dcm2niix)
                    .args(["-z", "n", "-f", "converted", "-o"])
                    .arg(&out)
                    .arg(&dicom)
                    .output()
                    .unwrap();
                assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
                let (theirs, geom, dt) = osipy_io::read_4d(out.join("converted.nii")).unwrap();
                let series = scan(&dicom, None).unwrap();
                let ours = series.read().unwrap();
                let ctx = format!("{vendor:?} {layout:?} {affine:?}");
                assert_eq!(ours.shape(), theirs.shape(), "{ctx}");
                assert!(
                    max_abs_diff(&ours, &theirs) < 1e-3,
                    "{ctx}: {}",
                    max_abs_diff(&ours, &theirs)
                );
                for r in 0..4 {
                    for c in 0..4 {
                        let (a, b) = (series.geometry.affine[r][c], geom.affine[r][c]);
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{ctx}: affine[{r}][{c}] ours {a}, dcm2niix {b}"
                        );
                    }
                }
                let ft = series.frame_times.unwrap();
                let spacing = (ft[5] - ft[0]) / 5.0;
                if vendor == Vendor::Ge || layout == Layout::Enhanced {
                    // dcm2niix keeps GE's TR as the time step, and sets none
                    // for enhanced files.
                    continue;
                }
                assert!(
                    (dt.unwrap() - spacing).abs() < 1e-4,
                    "{ctx}: dcm2niix dt {dt:?}, ours {ft:?}"
                );
            }
        }
    }
}

fn write_classic(dir: &std::path::Path, data: &Array4<f64>) -> Vec<std::path::PathBuf> {
    let mut s = SyntheticSeries::new(data, AFFINE);
    s.frame_times = Some((0..data.dim().3).map(|t| 2.0 * t as f64).collect());
    s.write(dir).unwrap()
}

#[test]
fn broken_folders_are_clear_errors() {
    let data = volume((4, 4, 3, 2));
    // A corrupt file: the marker, then garbage.
    let dir = tempfile::tempdir().unwrap();
    let files = write_classic(dir.path(), &data);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes.truncate(200);
    std::fs::write(&files[0], &bytes).unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains(&files[0].display().to_string()) && e.contains("not a readable DICOM file"),
        "{e}"
    );

    // No DICOM at all; a DICOMDIR alone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("no DICOM files"), "{e}");
    std::fs::write(dir.path().join("DICOMDIR"), [0u8; 300]).unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("only a DICOMDIR"), "{e}");

    // A missing slice: one position's files removed.
    let dir = tempfile::tempdir().unwrap();
    let files = write_classic(dir.path(), &volume((4, 4, 4, 2)));
    // Files are IM<t*nz+k+1>: slice 2 (k = 1) of both frames.
    std::fs::remove_file(&files[1]).unwrap();
    std::fs::remove_file(&files[5]).unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("slice spacing") && e.contains("a slice is missing"),
        "{e}"
    );

    // Unequal frames per slice: one frame of one slice removed.
    let dir = tempfile::tempdir().unwrap();
    let files = write_classic(dir.path(), &data);
    std::fs::remove_file(&files[4]).unwrap();
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("every slice needs every frame"), "{e}");
}

/// Rewrites one attribute of a file (through dicom-object).
fn patch(path: &std::path::Path, f: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(path).unwrap();
    f(&mut obj);
    obj.write_to_file(path).unwrap();
}

/// Makes a file claim SOP class `class` (header and file meta).
fn set_class(path: &std::path::Path, class: &str) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    patch(path, |o| {
        o.put(DataElement::new(
            dicom_dictionary_std::tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(class),
        ));
        o.update_meta(|m| m.media_storage_sop_class_uid = class.into());
    });
}

#[test]
fn mixed_series_are_clear_errors() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let data = volume((4, 4, 3, 2));
    // Mixed orientations.
    let dir = tempfile::tempdir().unwrap();
    let files = write_classic(dir.path(), &data);
    patch(&files[2], |o| {
        o.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            PrimitiveValue::from("1\\0\\0\\0\\0\\-1"),
        ));
    });
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("mixed orientations") && e.contains(&files[2].display().to_string()),
        "{e}"
    );

    // A secondary capture in the series.
    let dir = tempfile::tempdir().unwrap();
    let files = write_classic(dir.path(), &data);
    let sc = dir.path().join("screenshot.dcm");
    std::fs::copy(&files[0], &sc).unwrap();
    set_class(&sc, "1.2.840.10008.5.1.4.1.1.7");
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("Secondary Capture") && e.contains("screenshot.dcm"),
        "{e}"
    );

    // Non-image objects only.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir(dir.path()).unwrap();
    let files = write_classic(dir.path(), &data);
    for f in &files {
        set_class(f, "1.2.840.10008.5.1.4.1.1.88.22");
    }
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("none an MR image") && e.contains("Structured Report"),
        "{e}"
    );
}

#[test]
fn a_multi_echo_series_is_an_error() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let data = volume((4, 4, 2, 2));
    let mut s = SyntheticSeries::new(&data, AFFINE);
    s.te = Some(0.01);
    let files = s.write(dir.path()).unwrap();
    // The second frame of every slice as a second echo.
    for f in &files[2..] {
        patch(f, |o| {
            o.put(DataElement::new(
                tags::ECHO_TIME,
                VR::DS,
                PrimitiveValue::from("30"),
            ));
        });
    }
    let e = scan(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("multi-echo") && e.contains("30 ms") && e.contains("10 ms"),
        "{e}"
    );
}
