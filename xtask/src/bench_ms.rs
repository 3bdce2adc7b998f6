//! `cargo xtask bench-compare microstructure [--voxels N] [--rust-only]
//! [--no-amico]`: NODDI-Watson on an HCP-like scheme (18 b = 0, 90
//! directions at each of b = 1000, 2000, 3000 s/mm^2; delta 10.6 ms, Delta
//! 43.1 ms), 10,000 voxels by default with known truth (random direction,
//! ODI 0.05-0.6, NDI 0.3-0.8, FWF 0-0.3, Rician noise at SNR 30), fitted by
//! dmipy 1.0.5's `brute2fine` (all cores), AMICO's NODDI if it installs, and
//! this project's `noddi_watson` (all cores) on the same arrays.
//!
//! 1. Writes the scheme and signals as `.npy` under
//!    `target/bench-compare/microstructure/`.
//! 2. Sets up Python with `xtask/python/setup_dmipy.sh` and runs
//!    `xtask/python/bench_microstructure.py` (times dmipy and AMICO, saves
//!    their maps).
//! 3. Times `fit_microstructure` with the preset's default starts (1) and 3.
//!
//! Prints voxels/s, the speed-ups and each method's median errors (ODI,
//! NDI, FWF, direction in degrees); writes `microstructure.json` there.

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use osipy_backend::Device;
use osipy_core::Registry;
use osipy_fitting::rng::Rng;
use osipy_fitting::{FitOptions, Model};
use osipy_microstructure::phantom::{simulate_signals, Noise};
use osipy_microstructure::scheme::{fibonacci_directions, Sources};
use osipy_microstructure::{fit_microstructure, presets, MultiCompartment, Scheme};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const DELTA: f64 = 0.0106;
const BIG_DELTA: f64 = 0.0431;

/// The HCP-like scheme: b (s/mm^2) and unit directions.
fn hcp_scheme() -> (Vec<f64>, Vec<[f64; 3]>) {
    let mut b = vec![0.0; 18];
    let mut g = vec![[0.0, 0.0, 1.0]; 18];
    for (k, shell) in [1000.0, 2000.0, 3000.0].into_iter().enumerate() {
        for d in fibonacci_directions(90, k as f64) {
            b.push(shell);
            g.push(d);
        }
    }
    (b, g)
}

/// Median of `v` (NaN-free values; NaN counts as worst).
fn median(mut v: Vec<f64>) -> f64 {
    v.iter_mut().for_each(|x| {
        if !x.is_finite() {
            *x = f64::INFINITY
        }
    });
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median |error| of ODI, NDI, FWF and the direction (degrees).
fn errors(odi: &[f64], ndi: &[f64], fwf: &[f64], dir: &Array2<f64>, truth: &Array2<f64>) -> [f64; 4] {
    let n = truth.nrows();
    let col = |est: &[f64], j: usize| median((0..n).map(|v| (est[v] - truth[[v, j]]).abs()).collect());
    let ang = median(
        (0..n)
            .map(|v| {
                let c: f64 = (0..3).map(|k| dir[[v, k]] * truth[[v, 3 + k]]).sum();
                c.abs().min(1.0).acos().to_degrees()
            })
            .collect(),
    );
    [col(odi, 0), col(ndi, 1), col(fwf, 2), ang]
}

/// Runs the comparison.
pub fn microstructure(root: &Path, extra: &[String]) -> Result<()> {
    let mut voxels = 10_000usize;
    let (mut rust_only, mut amico) = (false, true);
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--voxels" => {
                voxels = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .context("--voxels takes a positive number")?
            }
            "--rust-only" => rust_only = true,
            "--no-amico" => amico = false,
            other => bail!("unknown option {other:?}; valid: --voxels N, --rust-only, --no-amico"),
        }
    }
    let dir = root.join("target/bench-compare/microstructure");
    std::fs::create_dir_all(&dir)?;
    let (b, g) = hcp_scheme();
    let src = Sources {
        bval: "bench",
        bvec: "bench",
    };
    let scheme = Scheme::new(&b, &g, Some(DELTA), Some(BIG_DELTA), None, src)?;
    let mut reg = Registry::new();
    osipy_microstructure::register(&mut reg)?;
    let model = MultiCompartment::new(&presets::noddi_watson(), &scheme, &reg, &BTreeMap::new())?;
    let names = model.param_names();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .with_context(|| format!("no parameter {n}"))
    };
    let (i_s0, i_t, i_p, i_odi, i_fwf, i_ndi) = (
        at("S0")?,
        at("watson_stick_theta")?,
        at("watson_stick_phi")?,
        at("watson_stick_odi")?,
        at("ball_partial_fraction")?,
        at("watson_stick_partial_fraction")?,
    );
    // Truth: the model's parameters, and (ODI, NDI, FWF, direction) for scoring.
    let mut rng = Rng::new(2024);
    let mut params = Array2::zeros((voxels, model.n_params()));
    let mut truth = Array2::zeros((voxels, 6));
    for v in 0..voxels {
        let z: f64 = 2.0 * rng.uniform() - 1.0;
        let phi = std::f64::consts::PI * (2.0 * rng.uniform() - 1.0);
        let (odi, ndi, fwf) = (
            0.05 + 0.55 * rng.uniform(),
            0.3 + 0.5 * rng.uniform(),
            0.3 * rng.uniform(),
        );
        params[[v, i_s0]] = 1.0;
        params[[v, i_t]] = z.acos();
        params[[v, i_p]] = phi;
        params[[v, i_odi]] = odi;
        params[[v, i_fwf]] = fwf;
        params[[v, i_ndi]] = ndi;
        let n = osipy_microstructure::compartment::direction(z.acos(), phi);
        truth
            .row_mut(v)
            .assign(&ndarray::arr1(&[odi, ndi, fwf, n[0], n[1], n[2]]));
    }
    let signal = simulate_signals(&model, params.view(), Some(30.0), Noise::Rician, 7)?;
    write_npy(dir.join("bvals.npy"), &Array1::from(b.clone()))?;
    let gv = Array2::from_shape_fn((g.len(), 3), |(i, k)| g[i][k]);
    write_npy(dir.join("bvecs.npy"), &gv)?;
    write_npy(dir.join("signal.npy"), &signal)?;
    std::fs::write(
        dir.join("timing.json"),
        serde_json::json!({"delta": DELTA, "Delta": BIG_DELTA}).to_string(),
    )?;
    println!(
        "== NODDI-Watson, {voxels} voxels x {} volumes (18 b = 0, 3 x 90 directions), SNR 30 Rician",
        b.len()
    );
    let mut report = serde_json::Map::new();
    let mut rows: Vec<(String, f64, [f64; 4])> = Vec::new();
    // Python peers.
    let mut summary = serde_json::Value::Null;
    if !rust_only {
        let py = crate::bench::python_from(&root.join("xtask/python/setup_dmipy.sh"))?;
        let script = root.join("xtask/python/bench_microstructure.py");
        println!("== {py} {} {}", script.display(), dir.display());
        let mut cmd = Command::new(&py);
        cmd.arg(&script).arg(&dir);
        if !amico {
            cmd.arg("--no-amico");
        }
        summary = crate::bench::run_summary(cmd, &script)?;
        for peer in ["dmipy", "amico"] {
            let Some(vps) = summary[peer]["voxels_per_s"].as_f64() else {
                continue;
            };
            let load1 = |k: &str| -> Result<Vec<f64>> {
                let a: Array1<f64> = read_npy(dir.join(format!("{peer}_{k}.npy")))?;
                Ok(a.to_vec())
            };
            let d: Array2<f64> = read_npy(dir.join(format!("{peer}_dir.npy")))?;
            let e = errors(&load1("odi")?, &load1("ndi")?, &load1("fwf")?, &d, &truth);
            rows.push((peer.to_string(), vps, e));
        }
    }
    // This project.
    let device = Device::auto()?;
    let default_starts = presets::noddi_watson().starts(None);
    for starts in [default_starts, 3] {
        let t = std::time::Instant::now();
        let fit = fit_microstructure(
            &model,
            &scheme,
            signal.view(),
            None,
            &FitOptions::default(),
            starts,
            &device,
        )?;
        let wall = t.elapsed().as_secs_f64();
        let col = |j: usize| fit.params.column(j).to_vec();
        let d = Array2::from_shape_fn((voxels, 3), |(v, k)| {
            osipy_microstructure::compartment::direction(fit.params[[v, i_t]], fit.params[[v, i_p]])[k]
        });
        // FWF is the ball's partial fraction; NDI the stick's.
        let e = errors(&col(i_odi), &col(i_ndi), &col(i_fwf), &d, &truth);
        rows.push((
            format!(
                "osipy ({starts} start{}{})",
                if starts > 1 { "s" } else { "" },
                if starts == default_starts { ", default" } else { "" }
            ),
            voxels as f64 / wall,
            e,
        ));
    }
    let base = rows.iter().find(|r| r.0 == "dmipy").map(|r| r.1);
    println!(
        "\n{:<26} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "method", "voxels/s", "vs dmipy", "|ODI err|", "|NDI err|", "|FWF err|", "dir (deg)"
    );
    for (name, vps, e) in &rows {
        let ratio = base.map_or(f64::NAN, |b| vps / b);
        println!(
            "{name:<26} {vps:>12.1} {ratio:>9.1}x {:>10.4} {:>10.4} {:>10.4} {:>10.2}",
            e[0], e[1], e[2], e[3]
        );
        report.insert(
            name.clone(),
            serde_json::json!({"voxels_per_s": vps, "speedup_vs_dmipy": ratio, "median_abs_err": {"odi": e[0], "ndi": e[1], "fwf": e[2], "direction_deg": e[3]}}),
        );
    }
    println!(
        "(medians over {voxels} voxels; osipy on all cores of {})",
        device.describe()
    );
    report.insert("python".into(), summary);
    std::fs::write(
        dir.join("../microstructure.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("report: target/bench-compare/microstructure.json");
    Ok(())
}
