//! `cargo xtask dro-validate`: every modality against its reference objects.
//!
//! DCE: the OSIPI DCE-DSC-MRI CodeCollection model cases (testdata/, with and
//! without delay, the manifest's tolerances) and extended-Tofts phantoms
//! across noise levels. Writes `target/dro-validate/report.md` and
//! `report.json`; any failed check fails the task.

use anyhow::{Context, Result};
use ndarray::Array2;
use osipy_backend::Device;
use osipy_dce::phantom::{generate, PhantomSpec};
use osipy_dce::{fit_model, model, model_with_delay, DceFitOptions, PkInput};
use osipy_fitting::{fit_batch, FitOptions};
use osipy_pipeline::dro::{compare, read_osipi_cases, OsipiCase};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct Row {
    suite: String,
    case: String,
    parameter: String,
    n: usize,
    /// Median of the error measure (absolute for OSIPI cases, relative for phantoms).
    median_error: f64,
    /// 90th percentile of the error measure.
    p90_error: f64,
    /// Bias: mean signed error (same measure).
    bias: f64,
    /// Cases outside the tolerance.
    n_fail: usize,
    /// The tolerance applied and where it comes from.
    tolerance: String,
    pass: bool,
}

/// (parameter column in the CSV, fitted index, atol, rtol).
type Check = (&'static str, usize, f64, f64);

struct OsipiSuite {
    name: &'static str,
    file: &'static str,
    cols: (&'static str, &'static str, &'static str),
    model: &'static str,
    /// Fit a delay; `Some(n)` also shifts the tissue curve right by n samples
    /// (the upstream run-time delay variant), `Some(0)` uses the file as is.
    delay: Option<usize>,
    checks: &'static [Check],
    /// (label, parameter) pairs excused, with the reason in the report.
    exceptions: &'static [(&'static str, &'static str, &'static str)],
}

const TOFTS: &[Check] = &[("Ktrans", 0, 0.005, 0.1), ("ve", 1, 0.05, 0.0)];
const ETOFTS: &[Check] = &[
    ("Ktrans", 0, 0.005, 0.1),
    ("ve", 1, 0.05, 0.0),
    ("vp", 2, 0.025, 0.0),
];
const PATLAK: &[Check] = &[("ps", 0, 0.005, 0.1), ("vp", 1, 0.025, 0.0)];
const TCXM: &[Check] = &[
    ("fp", 0, 5.0, 0.1),
    ("ps", 1, 0.005, 0.1),
    ("ve", 2, 0.05, 0.0),
    ("vp", 3, 0.025, 0.0),
];
const TCUM: &[Check] = &[("fp", 0, 5.0, 0.1), ("ps", 1, 0.005, 0.1), ("vp", 2, 0.025, 0.0)];
const CASE8: &str = "PS at Fp = 5 ml/100ml/min is not identifiable with a free delay: the least-squares optimum of the data (reached from the true values too) is PS 0.128";

const SUITES: &[OsipiSuite] = &[
    OsipiSuite {
        name: "tofts QIBA DRO v11",
        file: "dce_DRO_data_tofts.csv",
        cols: ("t", "C", "ca"),
        model: "tofts",
        delay: None,
        checks: TOFTS,
        exceptions: &[],
    },
    OsipiSuite {
        name: "extended_tofts brain DRO",
        file: "dce_DRO_data_extended_tofts.csv",
        cols: ("t", "C", "ca"),
        model: "extended_tofts",
        delay: None,
        checks: ETOFTS,
        exceptions: &[],
    },
    OsipiSuite {
        name: "patlak",
        file: "patlak_sd_0.02_delay_0.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "patlak",
        delay: None,
        checks: PATLAK,
        exceptions: &[],
    },
    OsipiSuite {
        name: "2cxm",
        file: "2cxm_sd_0.001_delay_0.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "2cxm",
        delay: None,
        checks: TCXM,
        exceptions: &[],
    },
    OsipiSuite {
        name: "2cum",
        file: "2cum_sd_0.0025_delay_0.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "2cum",
        delay: None,
        checks: TCUM,
        exceptions: &[],
    },
    OsipiSuite {
        name: "tofts QIBA DRO v11, delay 5 s",
        file: "dce_DRO_data_tofts.csv",
        cols: ("t", "C", "ca"),
        model: "tofts",
        delay: Some(10),
        checks: TOFTS,
        exceptions: &[],
    },
    OsipiSuite {
        name: "extended_tofts brain DRO, delay 5 s",
        file: "dce_DRO_data_extended_tofts.csv",
        cols: ("t", "C", "ca"),
        model: "extended_tofts",
        delay: Some(5),
        checks: ETOFTS,
        exceptions: &[],
    },
    OsipiSuite {
        name: "patlak, delay 5 s",
        file: "patlak_sd_0.02_delay_5.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "patlak",
        delay: Some(0),
        checks: PATLAK,
        exceptions: &[],
    },
    OsipiSuite {
        name: "2cxm, delay 5 s",
        file: "2cxm_sd_0.001_delay_5.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "2cxm",
        delay: Some(0),
        checks: TCXM,
        exceptions: &[("case_8_delayed", "ps", CASE8)],
    },
    OsipiSuite {
        name: "2cum, delay 5 s",
        file: "2cum_sd_0.0025_delay_5.csv",
        cols: ("t", "C_t", "cp_aif"),
        model: "2cum",
        delay: Some(0),
        checks: TCUM,
        exceptions: &[],
    },
];

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn run_suite(root: &Path, s: &OsipiSuite, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let path = root
        .join("testdata/osipi-dce-dsc-codecollection/DCEmodels")
        .join(s.file);
    let mut cases: Vec<OsipiCase> = read_osipi_cases(&path, s.cols.0, s.cols.1, s.cols.2)?;
    if let Some(n) = s.delay {
        for c in &mut cases {
            if n > 0 {
                let len = c.c.len();
                let mut shifted = vec![0.0; n];
                shifted.extend_from_slice(&c.c[..len - n]);
                c.c = shifted;
                c.label.push_str("_delayed");
                c.values.insert("delay".into(), c.t[n]);
            } else {
                let d = c.values.get("arterial_delay").copied().unwrap_or(0.0);
                c.values.insert("delay".into(), d);
            }
        }
    }
    let mut checks: Vec<Check> = s.checks.to_vec();
    if s.delay.is_some() {
        checks.push(("delay", s.checks.len(), 1.0, 0.0));
    }
    let mut errs: Vec<Vec<f64>> = vec![Vec::new(); checks.len()];
    let mut fails = vec![0usize; checks.len()];
    for case in &cases {
        let input = PkInput::new(&case.t, &case.ca)?;
        let m = if s.delay.is_some() {
            model_with_delay(s.model, input)?
        } else {
            model(s.model, input)?
        };
        let data = Array2::from_shape_vec((1, case.c.len()), case.c.clone())?;
        let fit = fit_batch(
            m.as_ref(),
            data.view(),
            None,
            &FitOptions::default(),
            &Device::cpu(None),
        )?;
        for (k, (col, j, atol, rtol)) in checks.iter().enumerate() {
            let want = *case
                .values
                .get(*col)
                .with_context(|| format!("{}: no column {col}", s.file))?;
            let got = fit.params[[0, *j]];
            let err = got - want;
            errs[k].push(err);
            if !(err.abs() <= atol + rtol * want.abs()) {
                if let Some((_, _, why)) = s.exceptions.iter().find(|(l, p, _)| *l == case.label && p == col)
                {
                    notes.push(format!(
                        "{} / {} / {col}: fitted {got:.4}, reference {want:.4}: documented exception: {why}",
                        s.name, case.label
                    ));
                } else {
                    fails[k] += 1;
                    notes.push(format!(
                        "{} / {} / {col}: fitted {got:.4}, reference {want:.4}: FAIL",
                        s.name, case.label
                    ));
                }
            }
        }
    }
    for (k, (col, _, atol, rtol)) in checks.iter().enumerate() {
        let mut abs: Vec<f64> = errs[k].iter().map(|e| e.abs()).collect();
        let bias = errs[k].iter().sum::<f64>() / errs[k].len().max(1) as f64;
        rows.push(Row {
            suite: "osipi-dce".into(),
            case: s.name.into(),
            parameter: (*col).into(),
            n: errs[k].len(),
            median_error: percentile(&mut abs, 0.5),
            p90_error: percentile(&mut abs, 0.9),
            bias,
            n_fail: fails[k],
            tolerance: format!("OSIPI manifest: |err| <= {atol} + {rtol}|ref| per case"),
            pass: fails[k] == 0,
        });
    }
    Ok(())
}

/// Extended-Tofts phantoms: noise-free (the forward model is the fitted one,
/// so only convergence limits recovery) and at SNR 50 and 20 (noise SD = voxel
/// peak / SNR, as Python osipy's benchmark). Tolerances: noise-free, median
/// |relative error| < 1e-4; noisy, medians no worse than Python osipy 0.1.4's
/// on its SNR-20 benchmark (Ktrans 0.033, ve 0.022, vp 0.088) and |bias|
/// (median signed relative error) of vp below 2 % (the target).
fn run_phantoms(rows: &mut Vec<Row>) -> Result<()> {
    let py = [("Ktrans", 0.033), ("ve", 0.022), ("vp", 0.088)];
    for snr in [None, Some(50.0), Some(20.0)] {
        let spec = PhantomSpec {
            shape: [16, 16, 8],
            snr,
            seed: 11,
            ..PhantomSpec::extended_tofts()
        };
        let ph = generate(&spec)?;
        let fit = fit_model(
            "extended_tofts",
            ph.concentration.view(),
            &ph.aif,
            &ph.time,
            None,
            &DceFitOptions::default(),
            &Device::cpu(None),
        )?;
        let label = snr.map_or("noise-free".to_string(), |s| format!("SNR {s}"));
        for (name, py_median) in py {
            let est = &fit.map(name).context("fitted map")?.values;
            let s = compare(name, est, ph.truth(name).context("truth")?, None)?;
            let (limit, tol) = match snr {
                None => (1e-4, "median |rel err| < 1e-4 (same forward model)".to_string()),
                Some(_) => (
                    py_median,
                    format!("median |rel err| <= {py_median} (Python osipy 0.1.4, SNR 20)"),
                ),
            };
            let bias_ok = name != "vp" || snr.is_none() || s.median_signed_rel_error.abs() <= 0.02;
            let tol = if name == "vp" && snr.is_some() {
                format!("{tol}; |median signed rel err| <= 0.02")
            } else {
                tol
            };
            rows.push(Row {
                suite: "dce-phantom".into(),
                case: format!("extended_tofts {label}, {} voxels", s.n),
                parameter: name.into(),
                n: s.n,
                median_error: s.median_abs_rel_error,
                p90_error: s.p90_abs_rel_error,
                bias: s.median_signed_rel_error,
                n_fail: s.n_invalid,
                tolerance: tol,
                pass: s.median_abs_rel_error <= limit && bias_ok && s.n_invalid == 0,
            });
        }
    }
    Ok(())
}

/// IVIM phantoms (Gaussian noise, SD = S0 / SNR, as the task force
/// simulates) at SNR 10 to 200, both strategies. Spread and bias are
/// reported over all voxels; the pass criterion applies to the median
/// estimate of each phantom block (one D, f, D* combination, 32 voxels):
/// the OSIPI TF2.4 unit-test tolerance (|x - truth| <= atol + rtol |truth|:
/// f 0.2 + 0.1, D 5e-4 + 0.1, D* 0.1 + 0.1) at SNR >= 100, and the task
/// force's synthetic-test tolerance (rtol = atol = 1) below.
fn run_ivim_phantoms(rows: &mut Vec<Row>) -> Result<()> {
    use osipy_ivim::phantom::{generate, IvimPhantomSpec, Noise};
    use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};
    let tol = [
        ("f", 1usize, 0.2, 0.1),
        ("D", 2, 5e-4, 0.1),
        ("Dstar", 3, 0.1, 0.1),
    ];
    for snr in [10.0, 30.0, 50.0, 100.0, 200.0] {
        let spec = IvimPhantomSpec {
            shape: [16, 16, 8],
            snr: Some(snr),
            noise: Noise::Gaussian,
            s0: 1.0,
            seed: 7,
            ..IvimPhantomSpec::default()
        };
        let ph = generate(&spec)?;
        let data = ph.voxels();
        for strategy in [IvimStrategy::Segmented, IvimStrategy::Full] {
            let fit = fit_ivim(
                data.view(),
                &spec.b_values,
                None,
                &IvimFitOptions {
                    strategy,
                    ..Default::default()
                },
                &Device::cpu(None),
            )?;
            for (name, j, atol, rtol) in tol {
                let truth = ph.truth(name).context("truth")?;
                let est = ndarray::Array3::from_shape_vec(truth.dim(), fit.params.column(j).to_vec())?;
                let s = compare(name, &est, truth, None)?;
                // Blocks: voxels sharing (D, f, D*).
                let mut blocks: std::collections::BTreeMap<[u64; 3], (Vec<f64>, f64)> = Default::default();
                for (idx, e) in est.indexed_iter() {
                    let key = ["D", "f", "Dstar"].map(|k| ph.truth(k).map_or(0, |a| a[idx].to_bits()));
                    let entry = blocks.entry(key).or_insert((Vec::new(), truth[idx]));
                    if e.is_finite() {
                        entry.0.push(*e);
                    }
                }
                // The unit-test tolerance was set for SNR 2000; it is applied
                // at SNR >= 100. Below, the task force's own synthetic test
                // (test_ivim_synthetic) uses rtol = atol = 1.
                let (atol, rtol) = if snr < 100.0 { (1.0, 1.0) } else { (atol, rtol) };
                let n_fail = blocks
                    .values_mut()
                    .map(|(v, t)| {
                        let m = percentile(v, 0.5);
                        !((m - *t).abs() <= atol + rtol * t.abs())
                    })
                    .filter(|failed| *failed)
                    .count();
                rows.push(Row {
                    suite: "ivim-phantom".into(),
                    case: format!("{strategy:?} SNR {snr}, {} voxels ({} invalid)", s.n, s.n_invalid)
                        .to_lowercase(),
                    parameter: name.into(),
                    n: blocks.len(),
                    median_error: s.median_abs_rel_error,
                    p90_error: s.p90_abs_rel_error,
                    bias: s.median_signed_rel_error,
                    n_fail,
                    tolerance: format!(
                        "OSIPI TF2.4 {}: |block median - truth| <= {atol} + {rtol}|truth|",
                        if snr < 100.0 {
                            "test_ivim_synthetic"
                        } else {
                            "unit test"
                        }
                    ),
                    pass: n_fail == 0,
                });
            }
        }
    }
    Ok(())
}

/// Runs everything and writes the reports; returns whether all passed.
pub fn run(root: &Path) -> Result<bool> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for s in SUITES {
        run_suite(root, s, &mut rows, &mut notes).with_context(|| format!("suite {}", s.name))?;
    }
    run_phantoms(&mut rows)?;
    run_ivim_phantoms(&mut rows)?;
    let out: PathBuf = root.join("target/dro-validate");
    std::fs::create_dir_all(&out)?;
    let all_pass = rows.iter().all(|r| r.pass);
    let json = serde_json::json!({ "pass": all_pass, "rows": rows, "notes": notes });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let mut md = String::from("# DRO validation report\n\n");
    md.push_str(&format!(
        "Overall: **{}**\n\n",
        if all_pass { "PASS" } else { "FAIL" }
    ));
    md.push_str("OSIPI rows: errors are absolute, in the parameter's units. Phantom rows: errors are relative over voxels; bias is the median signed relative error. dce-phantom n_fail counts invalid voxels; ivim-phantom n counts blocks and n_fail blocks outside the tolerance.\n\n");
    md.push_str("| suite | case | parameter | n | median error | p90 error | bias | n_fail | tolerance | result |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} | {:.4} | {:+.4} | {} | {} | {} |\n",
            r.suite,
            r.case,
            r.parameter,
            r.n,
            r.median_error,
            r.p90_error,
            r.bias,
            r.n_fail,
            r.tolerance,
            if r.pass { "pass" } else { "FAIL" }
        ));
    }
    if !notes.is_empty() {
        md.push_str("\n## Cases outside tolerance\n\n");
        for n in &notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    println!("reports: {}/report.md, report.json", out.display());
    Ok(all_pass)
}
