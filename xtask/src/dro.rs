//! `cargo xtask dro-validate`: every modality against its reference objects.
//!
//! The OSIPI DCE-DSC-MRI CodeCollection model cases (testdata/, with and
//! without delay, the manifest's tolerances), then every modality's phantom
//! checks from the modality table ([`osipy_pipeline::MODALITIES`]). Writes `target/dro-validate/report.md` and
//! `report.json`; any failed check fails the task.

use anyhow::{Context, Result};
use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::Registry;
use osipy_dce::{DceModelEntry, PkInput};
use osipy_fitting::{fit_batch, FitOptions};
use osipy_pipeline::dro::{percentile, read_osipi_cases, OsipiCase};
use std::path::{Path, PathBuf};

/// One line of the report.
pub type Row = osipy_io::DroRow;

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

fn run_suite(
    root: &Path,
    registry: &Registry,
    s: &OsipiSuite,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
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
        let entry = registry.get::<DceModelEntry>(s.model)?;
        let m = if s.delay.is_some() {
            entry.build_delayed(input)?
        } else {
            entry.build(input)
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
        abs.sort_by(|a, b| a.total_cmp(b));
        let bias = errs[k].iter().sum::<f64>() / errs[k].len().max(1) as f64;
        rows.push(Row {
            suite: "osipi-dce".into(),
            case: s.name.into(),
            parameter: (*col).into(),
            n: errs[k].len(),
            median_error: percentile(&abs, 0.5),
            p90_error: percentile(&abs, 0.9),
            bias,
            n_fail: fails[k],
            tolerance: format!("OSIPI manifest: |err| <= {atol} + {rtol}|ref| per case"),
            pass: fails[k] == 0,
        });
    }
    Ok(())
}

/// Runs everything and writes the reports; returns whether all passed.
pub fn run(root: &Path) -> Result<bool> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let registry = osipy_pipeline::builtin_registry()?;
    for s in SUITES {
        run_suite(root, &registry, s, &mut rows, &mut notes).with_context(|| format!("suite {}", s.name))?;
    }
    // Every modality's phantom checks, from the modality table.
    for m in osipy_pipeline::MODALITIES {
        rows.extend(
            m.phantom_checks(&registry)
                .with_context(|| format!("{} phantom checks", m.id()))?,
        );
    }
    // The OSIPI IVIM task force's benchmark, beside the published algorithms.
    let (tf_rows, tf_table) =
        crate::ivim_tf::rows(root, &registry).context("OSIPI IVIM task force benchmark")?;
    rows.extend(tf_rows);
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
    md.push_str(&tf_table);
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
