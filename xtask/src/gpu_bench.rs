//! `cargo xtask gpu-bench [--device D] [--out DIR] [VOXELS...]`: voxel fits
//! per second of every model with a GPU kernel, on the device and on all
//! cores of the CPU, at each voxel count (default 10^4 to 10^7), with the
//! CPU/GPU agreement of the very same fits.
//!
//! The data are noisy curves of each model around plausible parameters
//! (a block of 4096 distinct voxels, tiled). The kernel is compiled by a
//! warm-up fit first, so the times are fits alone (transfers included).
//! Writes `results.json` and `results.md` into DIR (default
//! `target/gpu-bench`). Build with `--features cuda` for a GPU:
//! `cargo run --release -p xtask --features cuda -- gpu-bench --device cuda`.

use anyhow::{Context, Result};
use ndarray::Array2;
use osipy_backend::{Device, DeviceChoice};
use osipy_fitting::gpu::fit_difference;
use osipy_fitting::rng::Rng;
use osipy_fitting::{fit_batch, FitOptions, Model, PinValue};
use std::path::{Path, PathBuf};

/// A benchmark case: the model, the start of its parameter ranges and
/// their widths, the noise, and its fit options.
struct Case {
    label: &'static str,
    model: Box<dyn Model>,
    low: Vec<f64>,
    width: Vec<f64>,
    noise: f64,
    opts: FitOptions,
}

fn cases() -> Result<Vec<Case>> {
    let t: Vec<f64> = (0..80).map(|i| i as f64 * 4.0).collect();
    let cp = osipy_aif::Aif::parker().shift(20.0).plasma(&t, 0.42)?;
    let input = osipy_dce::PkInput::new(&t, &cp)?;
    let b = [
        0.0, 0.0, 10.0, 20.0, 40.0, 80.0, 110.0, 140.0, 170.0, 200.0, 400.0, 800.0,
    ];
    let vfa = osipy_dce::VfaModel::new(&osipy_dce::VfaParams {
        tr: 0.005,
        flip_angles: vec![2.0, 5.0, 10.0, 15.0],
    })?;
    let gamma_t: &'static [f64] = Box::leak(
        (0..24)
            .map(|i| i as f64 * 1.5)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let default = FitOptions::default;
    let ivim = |name| osipy_ivim::models::model(name, &b);
    Ok(vec![
        Case {
            label: "dce tofts",
            model: osipy_dce::model("tofts", input.clone())?,
            low: vec![0.02, 0.1],
            width: vec![0.4, 0.5],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "dce extended_tofts",
            model: osipy_dce::model("extended_tofts", input.clone())?,
            low: vec![0.02, 0.1, 0.01],
            width: vec![0.4, 0.5, 0.1],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "dce 2cxm",
            model: osipy_dce::model("2cxm", input.clone())?,
            low: vec![20.0, 0.02, 0.1, 0.02],
            width: vec![60.0, 0.2, 0.5, 0.1],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "dce 2cum",
            model: osipy_dce::model("2cum", input.clone())?,
            low: vec![20.0, 0.02, 0.02],
            width: vec![60.0, 0.2, 0.1],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "dce extended_tofts + delay",
            model: osipy_dce::model_with_delay("extended_tofts", input.clone())?,
            low: vec![0.02, 0.1, 0.01, 0.0],
            width: vec![0.4, 0.5, 0.1, 6.0],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "dce patlak",
            model: osipy_dce::model("patlak", input)?,
            low: vec![0.02, 0.01],
            width: vec![0.4, 0.1],
            noise: 0.01,
            opts: default(),
        },
        Case {
            label: "t1 vfa (B1 = 1)",
            model: Box::new(vfa),
            low: vec![1000.0, 0.5, 1.0],
            width: vec![500.0, 1.5, 0.0],
            noise: 0.2,
            opts: FitOptions {
                pinned: vec![(2, PinValue::Constant(1.0))],
                ..default()
            },
        },
        Case {
            label: "ivim biexponential",
            model: ivim("biexponential")?,
            low: vec![800.0, 0.05, 0.0005, 0.01],
            width: vec![400.0, 0.25, 0.002, 0.08],
            noise: 10.0,
            opts: default(),
        },
        Case {
            label: "ivim simplified",
            model: ivim("simplified")?,
            low: vec![800.0, 0.05, 0.0005],
            width: vec![400.0, 0.25, 0.002],
            noise: 10.0,
            opts: default(),
        },
        Case {
            label: "ivim mono_exponential",
            model: ivim("mono_exponential")?,
            low: vec![800.0, 0.0005],
            width: vec![400.0, 0.002],
            noise: 10.0,
            opts: default(),
        },
        Case {
            label: "asl buxton (pcasl)",
            model: Box::new(osipy_asl::multi_pld::BuxtonModel::new(
                osipy_asl::kinetics::LabelingScheme::Pcasl,
                (1..=10)
                    .map(|i| osipy_asl::kinetics::Timing {
                        pld: 0.25 * i as f64,
                        tau: 1.8,
                    })
                    .collect(),
                osipy_asl::kinetics::WHITE_PAPER_3T,
                false,
            )?),
            low: vec![20.0, 0.3],
            width: vec![60.0, 1.7],
            noise: 2e-4,
            opts: default(),
        },
        Case {
            label: "dsc gamma_variate",
            model: Box::new(osipy_dsc::gamma::GammaVariate { times: gamma_t }),
            low: vec![5.0, 8.0, 3.0, 2.0],
            width: vec![20.0, 6.0, 3.0, 3.0],
            noise: 0.2,
            opts: default(),
        },
        Case {
            label: "dsc vascular_model",
            model: Box::new(osipy_dsc::vascular::VascularModel::new(
                &gamma_t[..]
                    .iter()
                    .chain((24..40).map(|i| i as f64 * 1.5).collect::<Vec<_>>().iter())
                    .map(|t| osipy_dsc::gamma::GammaVariate::value(&[10.0, 6.0, 4.0, 3.0], *t))
                    .collect::<Vec<_>>(),
                1.5,
                3,
            )?),
            low: vec![0.005, 2.0, 0.0],
            width: vec![0.015, 6.0, 3.0],
            noise: 0.01,
            opts: default(),
        },
    ])
}

/// `voxels` curves of the case: a block of 4096 noisy curves, tiled.
fn curves(case: &Case, voxels: usize) -> Array2<f64> {
    let n = case.model.n_samples();
    let block = 4096.min(voxels.max(1));
    let mut rng = Rng::new(1);
    let mut base = Array2::zeros((block, n));
    let mut row = vec![0.0; n];
    for v in 0..block {
        let p: Vec<f64> = case
            .low
            .iter()
            .zip(&case.width)
            .map(|(l, w)| l + w * rng.uniform())
            .collect();
        case.model.predict(&p, &mut row);
        for (o, s) in base.row_mut(v).iter_mut().zip(&row) {
            *o = s + case.noise * rng.normal();
        }
    }
    Array2::from_shape_fn((voxels, n), |(v, i)| base[[v % block, i]])
}

/// Runs the benchmark; `args`: `--device D`, `--out DIR`, voxel counts.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let (choice, rest) = crate::bench::device_arg(args)?;
    let mut out_dir = root.join("target/gpu-bench");
    let mut counts = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--out" {
            out_dir = PathBuf::from(it.next().context("--out needs a folder")?);
        } else {
            counts.push(
                a.parse::<usize>()
                    .with_context(|| format!("voxel count {a:?} is not a whole number"))?,
            );
        }
    }
    if counts.is_empty() {
        counts = vec![10_000, 100_000, 1_000_000, 10_000_000];
    }
    let (device, why) = Device::select(choice.unwrap_or(DeviceChoice::Cuda(0)), None)?;
    if let Some(why) = why {
        println!("device auto: on the CPU ({why})");
    }
    let cpu = device.host();
    println!("device {}; CPU {}", device.describe(), cpu.describe());
    std::fs::create_dir_all(&out_dir)?;
    let mut rows = Vec::new();
    let mut md = String::from(
        "| model | voxels | device s | device fits/s | CPU s | CPU fits/s | CPU/device | max rel. diff | statuses differ |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for case in cases()? {
        // Warm-up: compiles the kernel (for the first voxel count's shape).
        let warm = curves(&case, 1000);
        fit_batch(case.model.as_ref(), warm.view(), None, &case.opts, &device)?;
        for &n in &counts {
            let y = curves(&case, n);
            let time = |d: &Device| -> Result<(f64, osipy_fitting::BatchFit)> {
                let start = std::time::Instant::now();
                let f = fit_batch(case.model.as_ref(), y.view(), None, &case.opts, d)?;
                Ok((start.elapsed().as_secs_f64(), f))
            };
            let (dev_s, dev_fit) = time(&device)?;
            let (cpu_s, cpu_fit) = time(&cpu)?;
            let (diff, statuses) = fit_difference(&cpu_fit, &dev_fit);
            println!(
                "{:<24} {n:>9} voxels: device {dev_s:.4} s ({:.3e} fits/s), CPU {cpu_s:.4} s ({:.3e} fits/s), {:.1}x; max rel. diff {diff:.1e}, {statuses} statuses differ",
                case.label,
                n as f64 / dev_s,
                n as f64 / cpu_s,
                cpu_s / dev_s
            );
            md.push_str(&format!(
                "| {} | {n} | {dev_s:.4} | {:.3e} | {cpu_s:.4} | {:.3e} | {:.1} | {diff:.1e} | {statuses} |\n",
                case.label,
                n as f64 / dev_s,
                n as f64 / cpu_s,
                cpu_s / dev_s
            ));
            rows.push(serde_json::json!({
                "model": case.label, "voxels": n, "device_s": dev_s, "cpu_s": cpu_s,
                "device_fits_per_s": n as f64 / dev_s, "cpu_fits_per_s": n as f64 / cpu_s,
                "max_rel_diff": if diff.is_finite() { serde_json::json!(diff) } else { serde_json::json!("inf") },
                "status_mismatches": statuses,
            }));
        }
    }
    // DSC SVD deconvolution (not a least-squares fit): oSVD on the curves
    // of the vascular model's case, against its gamma-variate AIF.
    let t: Vec<f64> = (0..40).map(|i| i as f64 * 1.5).collect();
    let aif: Vec<f64> = t
        .iter()
        .map(|t| osipy_dsc::gamma::GammaVariate::value(&[10.0, 6.0, 4.0, 3.0], *t))
        .collect();
    let vascular = cases()?
        .into_iter()
        .find(|c| c.label == "dsc vascular_model")
        .context("the vascular model's case")?;
    let settings = osipy_dsc::deconv::DeconvSettings::default();
    for &n in &counts {
        let y = curves(&vascular, n);
        let mask = vec![true; n];
        let input = osipy_dsc::deconv::DeconvInput {
            curves: y.view(),
            mask: &mask,
            aif: &aif,
            times: &t,
        };
        let time = |d: &Device| -> Result<(f64, osipy_dsc::deconv::Deconvolved)> {
            let start = std::time::Instant::now();
            let r = osipy_dsc::deconv::osvd(&input, &settings, d)?;
            Ok((start.elapsed().as_secs_f64(), r))
        };
        time(&device)?; // compiles the kernel (first count only, then cached)
        let (dev_s, a) = time(&device)?;
        let (cpu_s, b) = time(&cpu)?;
        let statuses = a.status.iter().zip(&b.status).filter(|(x, y)| x != y).count();
        let diff = a
            .flow
            .iter()
            .zip(&b.flow)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()))
            .fold(0.0, f64::max);
        println!(
            "{:<24} {n:>9} voxels: device {dev_s:.4} s ({:.3e} voxels/s), CPU {cpu_s:.4} s ({:.3e} voxels/s), {:.1}x; max rel. diff of CBF {diff:.1e}, {statuses} statuses differ",
            "dsc osvd",
            n as f64 / dev_s,
            n as f64 / cpu_s,
            cpu_s / dev_s
        );
        md.push_str(&format!(
            "| dsc osvd | {n} | {dev_s:.4} | {:.3e} | {cpu_s:.4} | {:.3e} | {:.1} | {diff:.1e} | {statuses} |\n",
            n as f64 / dev_s,
            n as f64 / cpu_s,
            cpu_s / dev_s
        ));
        rows.push(serde_json::json!({
            "model": "dsc osvd", "voxels": n, "device_s": dev_s, "cpu_s": cpu_s,
            "device_fits_per_s": n as f64 / dev_s, "cpu_fits_per_s": n as f64 / cpu_s,
            "max_rel_diff": diff, "status_mismatches": statuses,
        }));
    }
    let report = serde_json::json!({ "device": device.describe(), "cpu": cpu.describe(), "rows": rows });
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out_dir.join("results.md"), md)?;
    println!("\nwrote {}/results.json and results.md", out_dir.display());
    Ok(())
}
