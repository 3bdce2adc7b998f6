//! SPGR signal to concentration against OSIPI `SI2Conc_data.csv` (Edinburgh
//! UCON data, Apache-2.0). Tolerance from the manifest: atol 1e-5 mM +
//! rtol 1e-5 on every frame but the first; S0 = mean of frames 1..n-1.

use ndarray::Array2;
use osipy_core::QualityCode;
use osipy_dce::{signal_to_concentration, ConcentrationMethod, SpgrParams};
use std::path::{Path, PathBuf};

fn check_file(path: &Path, expect_rows: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.trim_start_matches('\u{feff}');
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut rows = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |name: &str| f[col(name)].trim().parse::<f64>().unwrap();
        let series = |name: &str| {
            f[col(name)]
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        };
        let (s, conc) = (series("s"), series("conc"));
        let p = SpgrParams {
            tr: num("TR"),
            flip_angle: num("FA"),
            relaxivity: num("r1"),
            baseline: 1..num("numbaselinepts") as usize,
        };
        let sig = Array2::from_shape_vec((1, s.len()), s).unwrap();
        let (c, q) = signal_to_concentration(
            sig.view(),
            &[1.0 / num("T1base")],
            &p,
            ConcentrationMethod::Spgr,
            &osipy_backend::Device::cpu(Some(1)),
        )
        .unwrap();
        assert_eq!(q[0], QualityCode::Converged, "{}", f[0]);
        for i in 1..conc.len() {
            let (got, want) = (c[[0, i]], conc[i]);
            assert!(
                (got - want).abs() <= 1e-5 + 1e-5 * want.abs(),
                "{} frame {i}: {got} vs {want}",
                f[0]
            );
        }
        rows += 1;
    }
    assert_eq!(rows, expect_rows);
}

#[test]
fn developer_rows_match_the_reference() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/osipi-dce-dsc-codecollection/SI_to_Conc/SI2Conc_data_vox1-2.csv");
    check_file(&p, 2);
}

/// Rows vox_3..vox_5 are held out (other r1, TR and baseline lengths); the
/// whole file is read in place from ../shared (or $OSIPY_SHARED_DIR).
#[test]
fn acceptance_all_rows_match_the_reference() {
    let base = std::env::var_os("OSIPY_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let p = base.join("reference-data/osipi-dce-dsc-codecollection/SI_to_Conc/SI2Conc_data.csv");
    assert!(
        p.exists(),
        "acceptance data {} is missing: put the shared folder beside the repository or set OSIPY_SHARED_DIR",
        p.display()
    );
    check_file(&p, 5);
}
