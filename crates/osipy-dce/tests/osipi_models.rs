//! DCE models against the OSIPI DCE-DSC-MRI CodeCollection reference data
//! (testdata/osipi-dce-dsc-codecollection/DCEmodels, Apache-2.0), with the
//! tolerances of its manifest: |fit - ref| <= atol + rtol |ref|.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_dce::{model, model_with_delay, PkInput};
use osipy_fitting::{check_jacobian, check_lanes, fit_batch, FitOptions};
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
    check_with(cases, model_name, false, checks)
}

/// As [`check`], with the arterial delay fitted as the last parameter when
/// `delayed` (reference column name `delay` is then looked up in `values`).
fn check_with(cases: &[Case], model_name: &str, delayed: bool, checks: &[(usize, &str, f64, f64)]) -> usize {
    check_except(cases, model_name, delayed, checks, &[])
}

/// As [`check_with`], skipping the (label, parameter) pairs in `exceptions`,
/// each of which must exist and is justified where it is listed.
fn check_except(
    cases: &[Case],
    model_name: &str,
    delayed: bool,
    checks: &[(usize, &str, f64, f64)],
    exceptions: &[(&str, &str)],
) -> usize {
    for (label, _) in exceptions {
        assert!(
            cases.iter().any(|c| c.label == *label),
            "exception {label} names no case"
        );
    }
    let mut n = 0;
    let mut failures = Vec::new();
    for case in cases {
        let input = PkInput::new(&case.t, &case.ca).unwrap();
        let m = if delayed {
            model_with_delay(model_name, input).unwrap()
        } else {
            model(model_name, input).unwrap()
        };
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
            if exceptions.contains(&(case.label.as_str(), col)) {
                continue;
            }
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
fn lane_kernels_equal_the_one_voxel_kernels_bit_for_bit() {
    // The OSIPI case's real AIF and grid; rates spanning the convolution's
    // series switch and bounds, five vectors so a group is incomplete.
    let cases = load("2cum_sd_0.0025_delay_0.csv", "t", "C_t", "cp_aif");
    let inp = PkInput::new(&cases[0].t, &cases[0].ca).unwrap();
    for name in ["tofts", "extended_tofts", "patlak"] {
        let m = model(name, inp.clone()).unwrap();
        assert!(m.has_lanes(), "{name} has a lane kernel");
        let p = m.n_params();
        let sets: Vec<Vec<f64>> = [
            [0.3, 0.25, 0.05],
            [1e-3, 1e-3, 0.0],
            [5.0, 1.0, 1.0],
            [0.01, 0.9, 0.3],
            [2.0, 0.02, 0.1],
        ]
        .iter()
        .map(|v| v[..p].to_vec())
        .collect();
        assert_eq!(check_lanes(m.as_ref(), &sets), 0, "{name}");
    }
    // 2CUM (Fp ml/100ml/min, PS 1/min, vp): flows and volumes across their
    // bounds, so the rate s / vp spans the convolution's series switch.
    let m = model("2cum", inp.clone()).unwrap();
    assert!(m.has_lanes(), "2cum has a lane kernel");
    let sets = vec![
        vec![30.0, 0.1, 0.05],
        vec![1e-3, 0.0, 1e-4],
        vec![200.0, 5.0, 1.0],
        vec![5.0, 0.02, 0.3],
        vec![60.0, 1.0, 1e-3],
    ];
    assert_eq!(check_lanes(m.as_ref(), &sets), 0, "2cum");
    // 2CXM (Fp, PS, ve, vp): distinct and nearly equal eigenvalues, no
    // exchange, fast exchange.
    let m = model("2cxm", inp.clone()).unwrap();
    assert!(m.has_lanes(), "2cxm has a lane kernel");
    let sets = vec![
        vec![30.0, 0.1, 0.2, 0.05],
        vec![5.0, 0.15, 0.1, 0.02],
        vec![200.0, 5.0, 1.0, 1.0],
        vec![1e-3, 0.0, 1e-4, 1e-4],
        vec![60.0, 1.0, 0.5, 1e-3],
    ];
    assert_eq!(check_lanes(m.as_ref(), &sets), 0, "2cxm");
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
    for p in [
        [30.0, 0.1, 0.2, 0.05],
        [5.0, 0.15, 0.1, 0.02],
        [40.0, 0.01, 0.3, 0.1],
    ] {
        let err = check_jacobian(model("2cxm", inp.clone()).unwrap().as_ref(), &p).unwrap();
        assert!(err < 1e-6, "2cxm at {p:?}: {err}");
    }
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

/// OSIPI delay variants: Patlak, 2CXM and 2CUM files generated with a 5 s
/// arterial delay; Tofts and extended Tofts built at run time as upstream
/// does (tissue curve shifted right by 10 / 5 samples = 5 s, zero-padded).
/// Manifest tolerance on the delay: atol 1 s.
fn shifted(mut cases: Vec<Case>, samples: usize) -> Vec<Case> {
    for c in &mut cases {
        let n = c.c.len();
        let mut s = vec![0.0; samples];
        s.extend_from_slice(&c.c[..n - samples]);
        c.c = s;
        c.values.insert("delay".into(), c.t[samples]);
    }
    cases
}

fn with_delay_column(mut cases: Vec<Case>) -> Vec<Case> {
    for c in &mut cases {
        let d = c.values["arterial_delay"];
        c.values.insert("delay".into(), d);
    }
    cases
}

#[test]
fn delay_variants() {
    let tofts = shifted(load("dce_DRO_data_tofts.csv", "t", "C", "ca"), 10);
    check_with(
        &tofts,
        "tofts",
        true,
        &[
            (0, "Ktrans", 0.005, 0.1),
            (1, "ve", 0.05, 0.0),
            (2, "delay", 1.0, 0.0),
        ],
    );
    let etofts = shifted(load("dce_DRO_data_extended_tofts.csv", "t", "C", "ca"), 5);
    check_with(
        &etofts,
        "extended_tofts",
        true,
        &[
            (0, "Ktrans", 0.005, 0.1),
            (1, "ve", 0.05, 0.0),
            (2, "vp", 0.025, 0.0),
            (3, "delay", 1.0, 0.0),
        ],
    );
    let patlak = with_delay_column(load("patlak_sd_0.02_delay_5.csv", "t", "C_t", "cp_aif"));
    check_with(
        &patlak,
        "patlak",
        true,
        &[
            (0, "ps", 0.005, 0.1),
            (1, "vp", 0.025, 0.0),
            (2, "delay", 1.0, 0.0),
        ],
    );
    // Documented exception: case_8_delayed (Fp 5, PS 0.15, ve 0.2, vp 0.02)
    // fits PS = 0.128 (tolerance 0.15 +- 0.02). At this low flow PS is barely
    // identifiable once the delay is free; the least-squares optimum of the
    // data is there (see `case_8_delayed_is_the_least_squares_optimum`).
    let tcxm = with_delay_column(load("2cxm_sd_0.001_delay_5.csv", "t", "C_t", "cp_aif"));
    check_except(
        &tcxm,
        "2cxm",
        true,
        &[
            (0, "fp", 5.0, 0.1),
            (1, "ps", 0.005, 0.1),
            (2, "ve", 0.05, 0.0),
            (3, "vp", 0.025, 0.0),
            (4, "delay", 1.0, 0.0),
        ],
        &[("case_8_delayed", "ps")],
    );
    let tcum = with_delay_column(load("2cum_sd_0.0025_delay_5.csv", "t", "C_t", "cp_aif"));
    check_with(
        &tcum,
        "2cum",
        true,
        &[
            (0, "fp", 5.0, 0.1),
            (1, "ps", 0.005, 0.1),
            (2, "vp", 0.025, 0.0),
            (3, "delay", 1.0, 0.0),
        ],
    );
}

#[test]
fn delayed_jacobian_matches_finite_differences() {
    let cases = load("2cum_sd_0.0025_delay_0.csv", "t", "C_t", "cp_aif");
    let inp = PkInput::new(&cases[0].t, &cases[0].ca).unwrap();
    // The delay column is a forward difference of a piecewise-linear shift:
    // accurate to ~h/dt between kinks (h = 1e-3 s, dt = 0.5 s).
    let m = model_with_delay("extended_tofts", inp).unwrap();
    assert_eq!(m.param_names(), ["Ktrans", "ve", "vp", "delay"]);
    let err = check_jacobian(m.as_ref(), &[0.3, 0.25, 0.05, 2.3]).unwrap();
    assert!(err < 1e-2, "{err}");
}

#[test]
fn case_8_delayed_is_the_least_squares_optimum() {
    // Started from the true parameters, LM reaches the same point as from the
    // data-driven start, with a residual at the noise level (0.001 mM): the
    // PS miss is the data's optimum, not an optimiser failure.
    let cases = with_delay_column(load("2cxm_sd_0.001_delay_5.csv", "t", "C_t", "cp_aif"));
    let c = cases.iter().find(|c| c.label == "case_8_delayed").unwrap();
    let m = model_with_delay("2cxm", PkInput::new(&c.t, &c.ca).unwrap()).unwrap();
    let data = Array2::from_shape_vec((1, c.c.len()), c.c.clone()).unwrap();
    let truth = vec![
        c.values["fp"],
        c.values["ps"],
        c.values["ve"],
        c.values["vp"],
        c.values["delay"],
    ];
    let from_truth = FitOptions {
        initial: osipy_fitting::InitialGuess::Constant(truth),
        ..Default::default()
    };
    let dev = Device::Cpu { threads: 1 };
    let a = fit_batch(m.as_ref(), data.view(), None, &FitOptions::default(), &dev).unwrap();
    let b = fit_batch(m.as_ref(), data.view(), None, &from_truth, &dev).unwrap();
    assert!(a.status[0].is_valid() && b.status[0].is_valid());
    for j in 0..5 {
        let (x, y) = (a.params[[0, j]], b.params[[0, j]]);
        assert!((x - y).abs() < 1e-3 * y.abs().max(1e-2), "param {j}: {x} vs {y}");
    }
    assert!(a.rms[0] < 0.0011, "rms {}", a.rms[0]);
    assert!(
        (a.params[[0, 1]] - 0.15).abs() > 0.02,
        "if PS is now within tolerance, remove the exception"
    );
}
