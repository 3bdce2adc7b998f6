//! DCE models against the OSIPI DCE-DSC-MRI CodeCollection reference data
//! (testdata/osipi-dce-dsc-codecollection/DCEmodels, Apache-2.0), with the
//! tolerances of its manifest: |fit - ref| <= atol + rtol |ref|.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_dce::{model, PkInput};
use osipy_fitting::{check_jacobian, fit_batch, FitOptions};
use std::path::PathBuf;

struct Case {
    label: String,
    values: std::collections::HashMap<String, f64>,
    t: Vec<f64>,
    c: Vec<f64>,
    ca: Vec<f64>,
}

fn load(file: &str, t_col: &str, c_col: &str, ca_col: &str) -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/osipi-dce-dsc-codecollection/DCEmodels")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').map(str::trim).collect();
    let series = |s: &str| {
        s.split_whitespace()
            .map(|v| v.parse::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let col = |name: &str| {
                f[header
                    .iter()
                    .position(|h| *h == name)
                    .unwrap_or_else(|| panic!("{name} in {header:?}"))]
            };
            let values = header
                .iter()
                .zip(&f)
                .filter_map(|(h, v)| v.trim().parse::<f64>().ok().map(|x| (h.to_string(), x)))
                .collect();
            Case {
                label: f[0].to_string(),
                values,
                t: series(col(t_col)),
                c: series(col(c_col)),
                ca: series(col(ca_col)),
            }
        })
        .collect()
}

/// Fits every case with `model_name` and checks each (fitted index, reference
/// column, atol, rtol). Returns the number of checks made.
fn check(cases: &[Case], model_name: &str, checks: &[(usize, &str, f64, f64)]) -> usize {
    let mut n = 0;
    let mut failures = Vec::new();
    for case in cases {
        let m = model(model_name, PkInput::new(&case.t, &case.ca).unwrap()).unwrap();
        let data = Array2::from_shape_vec((1, case.c.len()), case.c.clone()).unwrap();
        let fit = fit_batch(
            m.as_ref(),
            data.view(),
            None,
            &FitOptions::default(),
            &Device::Cpu { threads: 1 },
        )
        .unwrap();
        assert!(
            fit.status[0].is_valid(),
            "{}: status {:?}",
            case.label,
            fit.status[0]
        );
        for &(j, col, atol, rtol) in checks {
            let (got, want) = (fit.params[[0, j]], case.values[col]);
            if (got - want).abs() > atol + rtol * want.abs() {
                failures.push(format!(
                    "{} {col}: fitted {got:.5}, reference {want:.5}",
                    case.label
                ));
            }
            n += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{model_name}: {} of {n} checks outside tolerance:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

#[test]
fn tofts_qiba_dro() {
    let cases = load("dce_DRO_data_tofts.csv", "t", "C", "ca");
    assert_eq!(cases.len(), 25);
    assert_eq!(
        check(
            &cases,
            "tofts",
            &[(0, "Ktrans", 0.005, 0.1), (1, "ve", 0.05, 0.0)]
        ),
        50
    );
}

#[test]
fn extended_tofts_brain_dro() {
    let cases = load("dce_DRO_data_extended_tofts.csv", "t", "C", "ca");
    assert_eq!(cases.len(), 15);
    check(
        &cases,
        "extended_tofts",
        &[
            (0, "Ktrans", 0.005, 0.1),
            (1, "ve", 0.05, 0.0),
            (2, "vp", 0.025, 0.0),
        ],
    );
}

#[test]
fn patlak() {
    let cases = load("patlak_sd_0.02_delay_0.csv", "t", "C_t", "cp_aif");
    assert_eq!(cases.len(), 9);
    check(&cases, "patlak", &[(0, "ps", 0.005, 0.1), (1, "vp", 0.025, 0.0)]);
}

#[test]
fn two_compartment_exchange() {
    let cases = load("2cxm_sd_0.001_delay_0.csv", "t", "C_t", "cp_aif");
    assert_eq!(cases.len(), 24);
    check(
        &cases,
        "2cxm",
        &[
            (0, "fp", 5.0, 0.1),
            (1, "ps", 0.005, 0.1),
            (2, "ve", 0.05, 0.0),
            (3, "vp", 0.025, 0.0),
        ],
    );
}

#[test]
fn two_compartment_uptake() {
    let cases = load("2cum_sd_0.0025_delay_0.csv", "t", "C_t", "cp_aif");
    assert_eq!(cases.len(), 27);
    check(
        &cases,
        "2cum",
        &[(0, "fp", 5.0, 0.1), (1, "ps", 0.005, 0.1), (2, "vp", 0.025, 0.0)],
    );
}

#[test]
fn analytic_jacobians_match_finite_differences() {
    let cases = load("2cum_sd_0.0025_delay_0.csv", "t", "C_t", "cp_aif");
    let inp = PkInput::new(&cases[0].t, &cases[0].ca).unwrap();
    // Central differences are accurate to ~1e-8 relative here.
    for (name, p) in [
        ("tofts", vec![0.3, 0.25]),
        ("extended_tofts", vec![0.3, 0.25, 0.05]),
        ("patlak", vec![0.1, 0.05]),
        ("2cum", vec![30.0, 0.1, 0.05]),
    ] {
        let m = model(name, inp.clone()).unwrap();
        let err = check_jacobian(m.as_ref(), &p).unwrap();
        assert!(err < 1e-6, "{name}: {err}");
    }
    assert!(check_jacobian(model("2cxm", inp).unwrap().as_ref(), &[30.0, 0.1, 0.2, 0.05]).is_none());
}

#[test]
fn two_compartment_exchange_tends_to_uptake_for_large_ve() {
    // With ve -> infinity the exchange model loses its back-flux and becomes
    // the uptake model (Sourbron & Buckley 2013): compare forward curves.
    let cases = load("2cum_sd_0.0025_delay_0.csv", "t", "C_t", "cp_aif");
    let inp = PkInput::new(&cases[0].t, &cases[0].ca).unwrap();
    let n = inp.time().len();
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    model("2cum", inp.clone())
        .unwrap()
        .predict(&[25.0, 0.15, 0.05], &mut a);
    model("2cxm", inp)
        .unwrap()
        .predict(&[25.0, 0.15, 1e6, 0.05], &mut b);
    let peak = a.iter().cloned().fold(0.0, f64::max);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6 * peak));
    let e = model("toftz", PkInput::new(&[0.0, 1.0], &[0.0, 1.0]).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("\"toftz\"") && e.contains("extended_tofts"), "{e}");
}
