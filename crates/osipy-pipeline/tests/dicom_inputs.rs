//! Every modality reads a DICOM folder wherever it reads a NIfTI series, and
//! gets the same maps: each demo's series are written as DICOM (as a scanner
//! would: 16-bit values with a rescale per frame, acquisition times), read
//! back once to make the NIfTI copy (float64) hold the same values, and both
//! runs' maps and quality counts compared.

use osipy_io::dicom::synthetic::SyntheticSeries;
use osipy_io::dicom::{scan, Vendor};
use osipy_io::{read_nifti, write_4d_f64, DemoFile, Geometry};
use osipy_pipeline::{run_analysis, Config, RunOptions, MODALITIES};

/// dcm2niix's layout of an axial scan (LAS), 2 x 2 x 3 mm.
const LAS: [[f64; 4]; 4] = [
    [-2.0, 0.0, 0.0, 30.0],
    [0.0, 2.0, 0.0, -20.0],
    [0.0, 0.0, 3.0, 5.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn run(config: &str, data: &std::path::Path, out: &std::path::Path) -> osipy_pipeline::RunSummary {
    let config = Config::from_toml(config).unwrap();
    run_analysis(
        &config,
        &RunOptions {
            data_dir: data.into(),
            out_dir: out.into(),
            no_report: true,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn every_modality_gets_the_same_maps_from_dicom_as_from_nifti() {
    let vendors = [Vendor::Siemens, Vendor::Ge, Vendor::Philips, Vendor::Other];
    for (i, m) in MODALITIES.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut case = m.demo().unwrap();
        let mut config = case.config.clone();
        let mut exact = Vec::new();
        for (n, (name, file)) in case.files.iter_mut().enumerate() {
            let DemoFile::Series(v, dt) = file else { continue };
            let folder = dir.path().join(format!("dicom_{n}"));
            let mut s = SyntheticSeries::new(v, LAS);
            s.vendor = vendors[i % vendors.len()];
            s.series_number = n as i64 + 1;
            s.frame_times = Some((0..v.dim().3).map(|t| t as f64 * *dt).collect());
            s.write(&folder).unwrap();
            *v = scan(&folder, None).unwrap().read().unwrap();
            exact.push((name.clone(), v.clone(), *dt));
            let quoted = format!("\"{name}\"");
            assert!(config.contains(&quoted), "{}: {name} not in the config", m.id());
            config = config.replace(&quoted, &format!("\"{}\"", folder.display()));
        }
        assert_ne!(config, case.config, "{}: no series to convert", m.id());
        let geometry = Geometry::from_affine(LAS);
        case.write_files(dir.path(), &geometry).unwrap();
        // The NIfTI copies in float64: the values the DICOM run reads.
        for (name, v, dt) in &exact {
            write_4d_f64(dir.path().join(name), v, &geometry, *dt).unwrap();
        }
        let from_nifti = run(&case.config, dir.path(), &dir.path().join("out_nifti"));
        let from_dicom = run(&config, dir.path(), &dir.path().join("out_dicom"));
        assert!(
            from_dicom.inputs.values().any(|v| v.starts_with("DICOM series")),
            "{}: {:?}",
            m.id(),
            from_dicom.inputs
        );
        assert_eq!(from_nifti.quality_counts, from_dicom.quality_counts, "{}", m.id());
        let mut compared = 0;
        for f in &from_nifti.outputs {
            let name = f.file_name().unwrap().to_str().unwrap();
            if !name.ends_with(".nii.gz") {
                continue;
            }
            let a = read_nifti(f).unwrap();
            let b = read_nifti(dir.path().join("out_dicom").join(name)).unwrap();
            assert_eq!(a.geometry.affine, b.geometry.affine, "{} {name}", m.id());
            assert_eq!(a.data.shape(), b.data.shape(), "{} {name}", m.id());
            let (a, b) = (a.data, b.data);
            // Same values in, same maps out; frame times may differ in the
            // last bits (acquisition times are written to the microsecond).
            for (x, y) in a.iter().zip(b.iter()) {
                let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(1.0);
                assert!(same, "{} {name}: {x} from NIfTI, {y} from DICOM", m.id());
            }
            compared += 1;
        }
        assert!(
            compared >= case.truth.len(),
            "{}: {compared} maps compared",
            m.id()
        );
    }
}

/// DCE takes TR and flip angle from the DICOM headers when the config does
/// not give them, with the same maps as when it does.
#[test]
fn dce_reads_tr_and_flip_angle_from_the_dicom_headers() {
    let dir = tempfile::tempdir().unwrap();
    let m = MODALITIES.iter().find(|m| m.id() == "dce").unwrap();
    let case = m.demo().unwrap();
    let geometry = Geometry::from_affine(LAS);
    let config_path = case.write_dicom_files(dir.path(), &geometry).unwrap();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let with = run(&config, dir.path(), &dir.path().join("with"));
    // Rewrite the dynamic series with TR and flip angle in its headers.
    let Some((_, DemoFile::Series(v, dt))) = case.files.iter().find(|(n, _)| n.starts_with("dce")) else {
        panic!("no dce series in the demo")
    };
    std::fs::remove_dir_all(dir.path().join("dce")).unwrap();
    let mut s = SyntheticSeries::new(v, LAS);
    s.description = "dce".into();
    s.frame_times = Some((0..v.dim().3).map(|t| t as f64 * dt).collect());
    s.tr = Some(0.005);
    s.flip_angle = Some(15.0);
    s.write(&dir.path().join("dce")).unwrap();
    let stripped: String = config
        .lines()
        .filter(|l| !l.starts_with("tr =") && !l.starts_with("flip_angle ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !stripped.contains("tr =") && !stripped.contains("flip_angle ="),
        "{stripped}"
    );
    let without = run(&stripped, dir.path(), &dir.path().join("without"));
    assert_eq!(with.quality_counts, without.quality_counts);
    for name in ["Ktrans", "ve", "vp"] {
        let a = read_nifti(dir.path().join("with").join(format!("{name}.nii.gz"))).unwrap();
        let b = read_nifti(dir.path().join("without").join(format!("{name}.nii.gz"))).unwrap();
        assert_eq!(a.data, b.data, "{name}");
    }
    // Without them in either place, the error names both sources.
    std::fs::remove_dir_all(dir.path().join("dce")).unwrap();
    case.write_dicom_files(dir.path(), &geometry).unwrap();
    let e = Config::from_toml(&stripped)
        .and_then(|c| {
            run_analysis(
                &c,
                &RunOptions {
                    data_dir: dir.path().into(),
                    out_dir: dir.path().join("none"),
                    no_report: true,
                    ..Default::default()
                },
            )
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pipeline.acquisition.tr") && e.contains("RepetitionTime"),
        "{e}"
    );
}
