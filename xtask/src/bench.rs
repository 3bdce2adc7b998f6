//! `cargo xtask bench-compare dce [-- python args]`: Python osipy and this
//! project on identical data, in one run.
//!
//! 1. Sets up Python osipy 0.1.4 with `../shared/bench/osipy_py/setup.sh`.
//! 2. Runs `bench_dce.py --save-data DIR` (extra arguments such as
//!    `--shape 16,16,8` are passed through), which times Python osipy's fit.
//! 3. Loads the same arrays (`.npy`) and times `osipy_dce::fit_model` on all
//!    cores with the same model, iteration limit and tolerance.
//! 4. Writes the data as NIfTI and times the whole `osipy run` with
//!    `/usr/bin/time -v` for wall time and peak memory.
//!
//! Prints both times, the ratio and both accuracy tables; writes
//! `target/bench-compare/dce.json`.

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array3, Array4};
use ndarray_npy::read_npy;
use osipy_backend::Device;
use osipy_dce::{fit_model, DceFitOptions, DceModelEntry};
use osipy_fitting::{FitOptions, LmSettings};
use osipy_pipeline::dro::compare;
use std::path::Path;
use std::process::Command;

fn python(root: &Path) -> Result<String> {
    python_from(&root.join("../shared/bench/osipy_py/setup.sh"))
}

/// Runs a setup script that prints a Python interpreter's path on its last
/// line, and returns that path.
pub fn python_from(setup: &Path) -> Result<String> {
    let out = Command::new("bash")
        .arg(setup)
        .output()
        .with_context(|| format!("running {}", setup.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            setup.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .map(|l| l.trim().to_string())
        .with_context(|| format!("{} printed no python path", setup.display()))
}

/// Runs `cmd` (a Python benchmark), echoes its output but the
/// `SUMMARY_JSON` line, and returns that line's JSON.
pub fn run_summary(mut cmd: Command, script: &Path) -> Result<serde_json::Value> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} failed:\n{}\n{}",
            script.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for l in stdout.lines().filter(|l| !l.starts_with("SUMMARY_JSON")) {
        println!("   {l}");
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY_JSON "))
        .map(serde_json::from_str)
        .transpose()?
        .context("no SUMMARY_JSON line")
}

/// Parses a `key: value` line of `/usr/bin/time -v`.
fn time_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)
            .map(|v| v.trim_start_matches(':').trim().to_string())
    })
}

/// Runs `../shared/bench/osipy_py/<script> --save-data <dir> <extra>` with
/// Python osipy, echoes its report and returns the data folder and its
/// `SUMMARY_JSON` line.
fn run_python_bench(
    root: &Path,
    script: &str,
    modality: &str,
    extra: &[String],
) -> Result<(std::path::PathBuf, serde_json::Value)> {
    let py = python(root)?;
    let dir = root.join("target/bench-compare").join(modality);
    std::fs::create_dir_all(&dir)?;
    let script = root.join("../shared/bench/osipy_py").join(script);
    println!(
        "== Python osipy: {} {} --save-data {} {}",
        py,
        script.display(),
        dir.display(),
        extra.join(" ")
    );
    let mut cmd = Command::new(&py);
    cmd.arg(&script).arg("--save-data").arg(&dir).args(extra);
    let summary = run_summary(cmd, &script)?;
    Ok((dir, summary))
}

/// Prints (and returns) median errors of each `(name, estimate, truth)`
/// beside Python osipy's for the same name from its `SUMMARY_JSON` run.
fn accuracy_table(
    maps: &[(&str, Array3<f64>, Array3<f64>)],
    py_run: Option<&serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    println!(
        "{:<6} {:>20} {:>20} {:>16} {:>16}",
        "map", "median|rel| py", "median|rel| rust", "signed py", "signed rust"
    );
    let mut acc = serde_json::Map::new();
    for (key, est, truth) in maps {
        let s = compare(key, est, truth, None)?;
        let pa = py_run.map(|r| &r["accuracy"][*key]);
        let g = |k: &str| pa.and_then(|p| p[k].as_f64()).unwrap_or(f64::NAN);
        println!(
            "{key:<6} {:>20.4} {:>20.4} {:>+16.4} {:>+16.4}",
            g("median_abs_rel_err"),
            s.median_abs_rel_error,
            g("median_signed_rel_err"),
            s.median_signed_rel_error
        );
        acc.insert(key.to_string(), serde_json::to_value(&s)?);
    }
    Ok(acc)
}

/// The Python comparison of each modality of the table, by id.
pub type BenchFn = fn(&Path, &[String]) -> Result<()>;

/// Entries name modalities of `osipy_pipeline::MODALITIES` (tested).
pub const BENCHES: &[(&str, BenchFn)] = &[
    ("dce", dce),
    ("ivim", ivim),
    ("dsc", dsc),
    ("asl", asl),
    ("microstructure", crate::bench_ms::microstructure),
];

/// Python osipy's default fit settings: LM, 100 iterations, tolerance 1e-6.
fn python_like_options() -> Result<DceFitOptions> {
    Ok(DceFitOptions {
        fit: FitOptions {
            lm: LmSettings::from_config(100, 1e-6)?,
            ..FitOptions::default()
        },
        ..DceFitOptions::default()
    })
}

/// Runs the DCE comparison.
pub fn dce(root: &Path, extra: &[String]) -> Result<()> {
    let (choice, extra) = device_arg(extra)?;
    let (dir, summary) = run_python_bench(root, "bench_dce.py", "dce", &extra)?;
    let py_wall = summary["wall_s"].as_f64().context("wall_s")?;

    let load3 = |n: &str| -> Result<Array3<f64>> {
        read_npy(dir.join(format!("dce_exact_{n}.npy"))).with_context(|| format!("reading dce_exact_{n}.npy"))
    };
    let conc: Array4<f64> = read_npy(dir.join("dce_exact_conc.npy")).context("reading dce_exact_conc.npy")?;
    let t: Array1<f64> = read_npy(dir.join("dce_exact_t.npy"))?;
    let aif: Array1<f64> = read_npy(dir.join("dce_exact_aif.npy"))?;
    let (t, aif) = (t.to_vec(), aif.to_vec());
    let opts = python_like_options()?;
    let device = match choice {
        Some(c) => Device::select(c, osipy_backend::threads_from_env()?)?.0,
        None => Device::auto()?,
    };
    // On a GPU, the same fit on all cores of this machine too.
    let cpu_walls = match device.cuda_ordinal() {
        Some(_) => Some(time_dce_fit(&conc, &aif, &t, &opts, &device.host())?.0),
        None => None,
    };
    let (walls, fit) = time_dce_fit(&conc, &aif, &t, &opts, &device)?;
    let ours = walls[1];
    let n_vox = conc.shape()[..3].iter().product::<usize>();
    println!(
        "\n== osipy (Rust): fit_model(\"extended_tofts\") on {}, {n_vox} voxels x {} frames",
        device.describe(),
        t.len()
    );
    println!(
        "   fit wall (median of 3) {ours:.3} s {walls:.3?} ({:.0} voxels/s)",
        n_vox as f64 / ours
    );

    println!(
        "\n{:<8} {:>22} {:>22} {:>18} {:>18}",
        "param", "median|rel err| py", "median|rel err| rust", "median signed py", "median signed rust"
    );
    let mut acc = serde_json::Map::new();
    for name in ["Ktrans", "ve", "vp"] {
        let s = compare(name, &fit.map(name).context("map")?.values, &load3(name)?, None)?;
        let pa = &summary["accuracy"][name];
        println!(
            "{name:<8} {:>22.4} {:>22.4} {:>+18.4} {:>+18.4}",
            pa["median_abs_rel_err"].as_f64().unwrap_or(f64::NAN),
            s.median_abs_rel_error,
            pa["median_signed_rel_err"].as_f64().unwrap_or(f64::NAN),
            s.median_signed_rel_error
        );
        acc.insert(name.into(), serde_json::to_value(&s)?);
    }
    let invalid = fit.quality.iter().filter(|q| !q.is_valid()).count();
    println!("invalid voxels (rust): {invalid} of {n_vox}");
    println!(
        "\nspeed-up: {:.1}x (Python {py_wall:.2} s / Rust {ours:.3} s)",
        py_wall / ours
    );
    let cpu_wall = cpu_walls.as_ref().map(|w| w[1]);
    if let Some(c) = cpu_wall {
        println!(
            "GPU against this machine's CPU ({} threads): {:.1}x (CPU {c:.3} s / GPU {ours:.3} s; the GPU's first fit, with the kernel's compilation, is not the median)",
            device.threads(),
            c / ours
        );
    }

    // The whole CLI run on the same data written as NIfTI.
    let run = cli_run(root, &dir, &conc, &t, &aif)?;
    let report = serde_json::json!({
        "python": summary, "rust_fit_wall_s": ours, "rust_fit_walls": walls, "speedup": py_wall / ours,
        "rust_accuracy": acc, "rust_invalid_voxels": invalid, "device": device.describe(), "cli_run": run,
        "cpu_fit_walls": cpu_walls, "cpu_fit_wall_s": cpu_wall,
    });
    std::fs::write(
        root.join("target/bench-compare/dce.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("\nreport: target/bench-compare/dce.json");
    Ok(())
}

fn cli_run(root: &Path, dir: &Path, conc: &Array4<f64>, t: &[f64], aif: &[f64]) -> Result<serde_json::Value> {
    let data = dir.join("nifti");
    std::fs::create_dir_all(&data)?;
    let geometry = osipy_io::Geometry::from_affine(osipy_core::IDENTITY_AFFINE);
    osipy_io::write_4d(data.join("dce.nii.gz"), conc, &geometry, t[1] - t[0])?;
    std::fs::write(
        data.join("times.txt"),
        t.iter().map(|x| format!("{x}\n")).collect::<String>(),
    )?;
    std::fs::write(
        data.join("aif.csv"),
        t.iter()
            .zip(aif)
            .map(|(x, c)| format!("{x},{c}\n"))
            .collect::<String>(),
    )?;
    std::fs::write(
        data.join("osipy.toml"),
        "modality = \"dce\"\n[pipeline]\nmodel = \"extended_tofts\"\nconcentration = \"none\"\naif_source = \"manual\"\n[pipeline.fitting]\nr2_threshold = -1e9\ntolerance = 1e-6\n",
    )?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "osipy-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building the osipy CLI failed");
    }
    let bin = root.join("target/release/osipy");
    // The output of an earlier bench-compare run would make `osipy run`
    // refuse the folder.
    let _ = std::fs::remove_dir_all(data.join("out"));
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&bin)
        .args(["run", "osipy.toml", ".", "-o", "out", "-q"])
        .current_dir(&data)
        .output()
        .context("running /usr/bin/time -v osipy run")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("osipy run failed:\n{err}");
    }
    let wall = time_field(&err, "Elapsed (wall clock) time (h:mm:ss or m:ss)").unwrap_or_default();
    let rss_kb: f64 = time_field(&err, "Maximum resident set size (kbytes)")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    println!(
        "\n== osipy run on the same data as NIfTI ({}): wall {wall}, peak memory {:.0} MB",
        data.display(),
        rss_kb / 1024.0
    );
    Ok(serde_json::json!({ "wall": wall, "peak_rss_mb": rss_kb / 1024.0 }))
}

/// `--device cpu|cuda|cuda:N|auto` taken out of `extra` (the rest goes to
/// the Python script).
pub fn device_arg(extra: &[String]) -> Result<(Option<osipy_backend::DeviceChoice>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut choice = None;
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if a == "--device" {
            let v = it
                .next()
                .context("--device needs a value: cpu, cuda, cuda:N or auto")?;
            choice = Some(osipy_backend::DeviceChoice::parse(v, "--device")?);
        } else {
            rest.push(a.clone());
        }
    }
    Ok((choice, rest))
}

/// The extended Tofts fit of the saved DCE arrays on `device`, three
/// times: the wall times, sorted.
fn time_dce_fit(
    conc: &Array4<f64>,
    aif: &[f64],
    t: &[f64],
    opts: &DceFitOptions,
    device: &Device,
) -> Result<(Vec<f64>, osipy_dce::DceFit)> {
    let mut walls = Vec::new();
    let mut fit = None;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        fit = Some(fit_model(
            &DceModelEntry::builtin("extended_tofts")?,
            conc.view(),
            aif,
            t,
            None,
            opts,
            device,
        )?);
        walls.push(start.elapsed().as_secs_f64());
    }
    walls.sort_by(|a, b| a.total_cmp(b));
    Ok((walls, fit.context("no fit")?))
}

/// Fits the arrays saved by the last `bench-compare dce` three times and
/// prints the times (no Python, no CLI): a target for profilers.
pub fn fit_saved(root: &Path) -> Result<()> {
    let dir = root.join("target/bench-compare/dce");
    let conc: Array4<f64> =
        read_npy(dir.join("dce_exact_conc.npy")).context("run `cargo xtask bench-compare dce` first")?;
    let t: Array1<f64> = read_npy(dir.join("dce_exact_t.npy"))?;
    let aif: Array1<f64> = read_npy(dir.join("dce_exact_aif.npy"))?;
    let opts = python_like_options()?;
    let device = Device::auto()?;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        fit_model(
            &DceModelEntry::builtin("extended_tofts")?,
            conc.view(),
            &aif.to_vec(),
            &t.to_vec(),
            None,
            &opts,
            &device,
        )?;
        println!("fit {:.3} s", start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// `cargo xtask bench-compare ivim`: Python osipy's `fit_ivim` (segmented and
/// full) and `osipy_ivim::fit_ivim` on the same `.npy` data, one run.
pub fn ivim(root: &Path, extra: &[String]) -> Result<()> {
    use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};
    let (dir, summary) = run_python_bench(root, "bench_ivim.py", "ivim", extra)?;
    let signal: Array4<f64> = read_npy(dir.join("ivim_signal.npy")).context("reading ivim_signal.npy")?;
    let b: Array1<f64> = read_npy(dir.join("ivim_b.npy"))?;
    let load3 = |n: &str| -> Result<Array3<f64>> {
        read_npy(dir.join(format!("ivim_{n}.npy"))).with_context(|| format!("reading ivim_{n}.npy"))
    };
    let shape = [signal.shape()[0], signal.shape()[1], signal.shape()[2]];
    let n_vox = shape.iter().product::<usize>();
    let flat = signal.into_shape_with_order((n_vox, b.len()))?;
    let device = Device::auto()?;
    let mut report = serde_json::Map::new();
    for (name, strategy) in [
        ("segmented", IvimStrategy::Segmented),
        ("full", IvimStrategy::Full),
        ("bayesian", IvimStrategy::Bayesian),
    ] {
        // Python osipy's shared LM: 100 iterations, tolerance 1e-6.
        let opts = IvimFitOptions {
            strategy,
            lm: LmSettings::from_config(100, 1e-6)?,
            ..Default::default()
        };
        let mut walls = Vec::new();
        let mut fit = None;
        // The Bayesian grid takes seconds, not tenths: one run.
        let runs = if strategy == IvimStrategy::Bayesian { 1 } else { 3 };
        for _ in 0..runs {
            let start = std::time::Instant::now();
            fit = Some(fit_ivim(flat.view(), &b.to_vec(), None, &opts, &device)?);
            walls.push(start.elapsed().as_secs_f64());
        }
        walls.sort_by(|a, c| a.total_cmp(c));
        let fit = fit.context("no fit")?;
        let py_run = summary["runs"].as_array().and_then(|r| {
            r.iter().find(|r| {
                r["method"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("method={name}")))
            })
        });
        let py_wall = py_run.and_then(|r| r["wall_s"].as_f64()).unwrap_or(f64::NAN);
        let wall = walls[walls.len() / 2];
        println!("\n== [{name}] Rust fit_ivim on {}: {wall:.3} s {walls:.3?} ({:.0} voxels/s); Python {py_wall:.2} s; speed-up {:.1}x", device.describe(), n_vox as f64 / wall, py_wall / wall);
        if let Some((median, sigma)) = fit.dstar_population {
            println!("population prior of D*: log-normal, median {median:.4} mm^2/s, SD of ln D* {sigma:.3}");
        }
        let mut maps = Vec::new();
        for (col, key, file) in [(2usize, "D", "D"), (3, "D*", "Dstar"), (1, "f", "f")] {
            let est = Array3::from_shape_vec(shape, fit.params.column(col).to_vec())?;
            maps.push((key, est, load3(file)?));
        }
        let acc = accuracy_table(&maps, py_run)?;
        let invalid = fit.status.iter().filter(|q| !q.is_valid()).count();
        println!("invalid voxels (rust): {invalid} of {n_vox}");
        report.insert(name.into(), serde_json::json!({ "rust_wall_s": wall, "rust_voxels_per_s": n_vox as f64 / wall, "python_wall_s": py_wall, "speedup": py_wall / wall, "rust_accuracy": acc, "rust_invalid": invalid }));
    }
    // NUTS (the `bayesian` strategy before the grid posterior) is far
    // slower, so its throughput is measured on the first 2048 voxels
    // (Python osipy has no sampler).
    let sub = flat.slice(ndarray::s![..2048.min(n_vox), ..]).to_owned();
    let opts = IvimFitOptions {
        strategy: IvimStrategy::Bayesian,
        bayes: osipy_ivim::grid::BayesOptions {
            sampler: osipy_ivim::grid::Sampler::Nuts,
            ..Default::default()
        },
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let fit = fit_ivim(sub.view(), &b.to_vec(), None, &opts, &device)?;
    let wall = start.elapsed().as_secs_f64();
    let valid = fit.status.iter().filter(|q| q.is_valid()).count();
    println!(
        "\n== [bayesian, sampler = nuts] NUTS ({} tune + {} draws per voxel) on {}: {} voxels in {wall:.2} s = {:.0} voxels/s ({valid} valid); full volume would take ~{:.0} s",
        opts.bayes.nuts.tune,
        opts.bayes.nuts.draws,
        device.describe(),
        sub.nrows(),
        sub.nrows() as f64 / wall,
        n_vox as f64 * wall / sub.nrows() as f64
    );
    report.insert("bayesian_nuts".into(), serde_json::json!({ "voxels": sub.nrows(), "wall_s": wall, "voxels_per_s": sub.nrows() as f64 / wall, "valid": valid }));
    report.insert("python".into(), summary);
    std::fs::write(
        root.join("target/bench-compare/ivim.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("\nreport: target/bench-compare/ivim.json");
    Ok(())
}

/// Fits the arrays saved by the last `bench-compare ivim` (segmented, then
/// full) three times each: a target for profilers.
pub fn fit_saved_ivim(root: &Path) -> Result<()> {
    use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};
    let dir = root.join("target/bench-compare/ivim");
    let signal: Array4<f64> =
        read_npy(dir.join("ivim_signal.npy")).context("run `cargo xtask bench-compare ivim` first")?;
    let b: Array1<f64> = read_npy(dir.join("ivim_b.npy"))?;
    let n: usize = signal.shape()[..3].iter().product();
    let flat = signal.into_shape_with_order((n, b.len()))?;
    let device = Device::auto()?;
    let only_segmented = std::env::args().any(|a| a == "--segmented");
    let strategies: &[IvimStrategy] = if only_segmented {
        &[IvimStrategy::Segmented]
    } else {
        &[IvimStrategy::Segmented, IvimStrategy::Full]
    };
    for &strategy in strategies {
        let opts = IvimFitOptions {
            strategy,
            lm: LmSettings::from_config(100, 1e-6)?,
            ..Default::default()
        };
        for _ in 0..3 {
            let start = std::time::Instant::now();
            fit_ivim(flat.view(), &b.to_vec(), None, &opts, &device)?;
            println!("{strategy:?} {:.3} s", start.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// Runs the DSC comparison: `bench_dsc.py --methods oSVD,cSVD,sSVD` (extra
/// arguments pass through), then every registered deconvolution method of
/// `osipy-dsc` on the same arrays: deltaR2\* (10 baseline frames, TE 30 ms)
/// timed once, each method's deconvolution plus CBV timed three times
/// (median), with the script's `kH / rho = 0.73 / 1.04`.
pub fn dsc(root: &Path, extra: &[String]) -> Result<()> {
    use osipy_dsc::deconv::{DeconvInput, DeconvSettings, Deconvolution};
    use osipy_dsc::perfusion::cbv_ratio;
    use osipy_dsc::signal::signal_to_delta_r2;
    let mut args = extra.to_vec();
    if !args.iter().any(|a| a == "--methods") {
        args.extend(["--methods".to_string(), "oSVD,cSVD,sSVD".to_string()]);
    }
    let (dir, summary) = run_python_bench(root, "bench_dsc.py", "dsc", &args)?;
    let load3 = |n: &str| -> Result<Array3<f64>> {
        read_npy(dir.join(format!("dsc_{n}.npy"))).with_context(|| format!("reading dsc_{n}.npy"))
    };
    let signal: Array4<f64> = read_npy(dir.join("dsc_signal.npy")).context("reading dsc_signal.npy")?;
    let t: Array1<f64> = read_npy(dir.join("dsc_t.npy"))?;
    let aif: Array1<f64> = read_npy(dir.join("dsc_aif_dr2.npy"))?;
    let (t, aif) = (t.to_vec(), aif.to_vec());
    let shape = [signal.shape()[0], signal.shape()[1], signal.shape()[2]];
    let n_vox = shape.iter().product::<usize>();
    let flat = signal.into_shape_with_order((n_vox, t.len()))?;
    let device = Device::auto()?;
    let start = std::time::Instant::now();
    let dr2 = signal_to_delta_r2(flat.view(), None, 0.03, 10, &device)?;
    let dr2_wall = start.elapsed().as_secs_f64();
    let mask: Vec<bool> = dr2.status.iter().map(|s| s.is_none()).collect();
    let factor = 0.73 / 1.04;
    let mut reg = osipy_core::Registry::default();
    osipy_dsc::register(&mut reg)?;
    let truth = [load3("CBF")?, load3("CBV")?, load3("MTT")?];
    println!(
        "\n== Rust osipy-dsc on {}: deltaR2* {dr2_wall:.3} s; per method, deconvolution + CBV (median of 3):",
        device.describe()
    );
    let mut report = serde_json::Map::new();
    for name in reg.names::<Deconvolution>() {
        let method = reg.get::<Deconvolution>(&name)?.0;
        let input = DeconvInput {
            curves: dr2.curves.view(),
            mask: &mask,
            aif: &aif,
            times: &t,
        };
        let mut walls = Vec::new();
        let mut maps = None;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let d = method(&input, &DeconvSettings::default(), &device)?;
            let cbv: Vec<f64> = (0..n_vox)
                .map(|v| 100.0 * factor * cbv_ratio(dr2.curves.row(v).as_slice().unwrap_or(&[]), &aif, &t))
                .collect();
            walls.push(start.elapsed().as_secs_f64());
            maps = Some((d, cbv));
        }
        walls.sort_by(|a, c| a.total_cmp(c));
        let (d, cbv) = maps.context("no run")?;
        let cbf: Vec<f64> = d.flow.iter().map(|f| 6000.0 * factor * f).collect();
        let mtt: Vec<f64> = match d.extra.iter().find(|e| e.name == "MTT") {
            Some(m) => m.values.clone(),
            None => cbv.iter().zip(&cbf).map(|(v, f)| 60.0 * v / f).collect(),
        };
        let py_name = match name.as_str() {
            "osvd" => Some("oSVD"),
            "csvd" => Some("cSVD"),
            "ssvd" => Some("sSVD"),
            _ => None,
        };
        let py_run = py_name.and_then(|m| {
            summary["runs"].as_array().and_then(|r| {
                r.iter().find(|r| {
                    r["method"]
                        .as_str()
                        .is_some_and(|x| x.contains(&format!("'{m}'")))
                })
            })
        });
        let py_wall = py_run.and_then(|r| r["wall_s"].as_f64()).unwrap_or(f64::NAN);
        println!(
            "\n== [{name}] Rust {:.3} s {walls:.3?} ({:.0} voxels/s); Python {}: {py_wall:.2} s; speed-up {:.1}x",
            walls[1],
            n_vox as f64 / walls[1],
            py_name.unwrap_or("(none)"),
            py_wall / walls[1]
        );
        let mut maps = Vec::new();
        for ((key, est), tr) in [("CBF", cbf), ("CBV", cbv), ("MTT", mtt)].into_iter().zip(&truth) {
            maps.push((key, Array3::from_shape_vec(shape, est)?, tr.clone()));
        }
        let acc = accuracy_table(&maps, py_run)?;
        let invalid = d.status.iter().filter(|q| !q.is_valid()).count();
        println!("invalid voxels (rust): {invalid} of {n_vox}");
        report.insert(
            name.clone(),
            serde_json::json!({ "rust_wall_s": walls[1], "python_wall_s": py_wall, "speedup": py_wall / walls[1], "rust_accuracy": acc, "rust_invalid": invalid }),
        );
    }
    report.insert("rust_delta_r2_wall_s".into(), dr2_wall.into());
    report.insert("python".into(), summary);
    std::fs::write(
        root.join("target/bench-compare/dsc.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("\nreport: target/bench-compare/dsc.json");
    Ok(())
}

/// Runs the ASL comparison: `bench_asl.py` (pCASL, 12 PLDs, the standard
/// Buxton forward model; extra arguments pass through), then
/// `buxton_multi_pld` of `osipy-asl` on the same ΔM and M0 with the
/// script's constants and Python's LM limits (100 iterations, 1e-6),
/// three times (median), and `pcasl_single_pld` on the PLD 2.0 s volume.
pub fn asl(root: &Path, extra: &[String]) -> Result<()> {
    use osipy_asl::kinetics::LabelingScheme;
    use osipy_asl::quantify::{QuantInput, Quantification};
    use osipy_fitting::FitOptions;
    let (dir, summary) = run_python_bench(root, "bench_asl.py", "asl", extra)?;
    let AslBench {
        flat,
        plds,
        timings,
        physio,
        truth_cbf,
        truth_att,
        shape,
    } = AslBench::load(&dir)?;
    let n_vox = flat.nrows();
    let mut reg = osipy_core::Registry::default();
    osipy_asl::register(&mut reg)?;
    let device = Device::auto()?;
    let mask = vec![true; n_vox];
    let fit = FitOptions {
        lm: LmSettings::from_config(100, 1e-6)?,
        ..FitOptions::default()
    };
    let mut report = serde_json::Map::new();
    for (name, sel) in [("buxton_multi_pld", None), ("pcasl_single_pld", Some(2.0))] {
        let q = reg.get::<Quantification>(name)?;
        let (data, times) = match sel {
            None => (flat.clone(), timings.clone()),
            Some(pld) => {
                let i = plds
                    .iter()
                    .position(|p| (p - pld).abs() < 1e-9)
                    .context("no PLD 2.0 s in the bench data")?;
                (flat.slice(ndarray::s![.., i..i + 1]).to_owned(), vec![timings[i]])
            }
        };
        let input = QuantInput {
            dm_over_m0: data.view(),
            mask: &mask,
            timings: &times,
            scheme: LabelingScheme::Pcasl,
            physio,
            arterial: false,
            fit: &fit,
        };
        let mut walls = Vec::new();
        let mut out = None;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            out = Some((q.run)(&input, &device)?);
            walls.push(start.elapsed().as_secs_f64());
        }
        walls.sort_by(|a, c| a.total_cmp(c));
        let out = out.context("no run")?;
        let py_run = summary["runs"].as_array().and_then(|r| {
            r.iter().find(|r| {
                r["method"].as_str().is_some_and(|m| {
                    m.contains(if sel.is_some() {
                        "single-PLD"
                    } else {
                        "quantify_multi_pld"
                    })
                })
            })
        });
        let py_wall = py_run.and_then(|r| r["wall_s"].as_f64()).unwrap_or(f64::NAN);
        println!(
            "\n== [{name}] Rust on {}: {:.4} s {walls:.4?} ({:.0} voxels/s); Python {py_wall:.3} s; speed-up {:.1}x",
            device.describe(),
            walls[1],
            n_vox as f64 / walls[1],
            py_wall / walls[1]
        );
        let mut maps = Vec::new();
        for m in &out.maps {
            let truth = match m.name {
                "CBF" => &truth_cbf,
                "ATT" => &truth_att,
                _ => continue,
            };
            let est: Vec<f64> = m
                .values
                .iter()
                .zip(&out.status)
                .map(|(v, s)| if s.is_valid() { *v } else { f64::NAN })
                .collect();
            maps.push((m.name, Array3::from_shape_vec(shape, est)?, truth.clone()));
        }
        let acc = accuracy_table(&maps, py_run)?;
        let invalid = out.status.iter().filter(|q| !q.is_valid()).count();
        println!("invalid voxels (rust): {invalid} of {n_vox}");
        report.insert(
            name.into(),
            serde_json::json!({ "rust_wall_s": walls[1], "python_wall_s": py_wall, "speedup": py_wall / walls[1], "rust_accuracy": acc, "rust_invalid": invalid }),
        );
    }
    report.insert("python".into(), summary);
    std::fs::write(
        root.join("target/bench-compare/asl.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("\nreport: target/bench-compare/asl.json");
    Ok(())
}

/// The arrays of `bench_asl.py --save-data` as this crate fits them.
struct AslBench {
    /// ΔM / M0, voxels x PLDs.
    flat: ndarray::Array2<f64>,
    plds: Vec<f64>,
    timings: Vec<osipy_asl::kinetics::Timing>,
    physio: osipy_asl::kinetics::Physio,
    truth_cbf: Array3<f64>,
    truth_att: Array3<f64>,
    shape: [usize; 3],
}

impl AslBench {
    /// Loads the saved arrays; the script's constants: τ 1.8 s, T1b 1.65 s,
    /// T1 1.33 s, λ 0.9, α 0.85.
    fn load(dir: &Path) -> Result<AslBench> {
        use osipy_asl::kinetics::Timing;
        let load = |n: &str| -> Result<ndarray::ArrayD<f64>> {
            read_npy(dir.join(format!("asl_standard_{n}.npy")))
                .with_context(|| format!("reading asl_standard_{n}.npy"))
        };
        let dm = load("delta_m")?;
        let plds: Vec<f64> = load("plds_s")?.iter().copied().collect();
        let m0: Vec<f64> = load("m0")?.iter().copied().collect();
        let shape = [dm.shape()[0], dm.shape()[1], dm.shape()[2]];
        let n_vox = shape.iter().product::<usize>();
        let mut flat = dm
            .into_shape_with_order((n_vox, plds.len()))?
            .into_dimensionality::<ndarray::Ix2>()?;
        for (mut row, m) in flat.rows_mut().into_iter().zip(&m0) {
            row.mapv_inplace(|x| x / m);
        }
        Ok(AslBench {
            flat,
            timings: plds.iter().map(|p| Timing { pld: *p, tau: 1.8 }).collect(),
            plds,
            physio: osipy_asl::kinetics::WHITE_PAPER_3T,
            truth_cbf: load("CBF")?.into_dimensionality()?,
            truth_att: load("ATT_s")?.into_dimensionality()?,
            shape,
        })
    }
}

/// Fits the arrays saved by the last `bench-compare asl` with
/// `buxton_multi_pld` three times: a target for profilers.
pub fn fit_saved_asl(root: &Path) -> Result<()> {
    use osipy_asl::kinetics::LabelingScheme;
    use osipy_asl::quantify::{buxton_multi_pld, QuantInput};
    let b = AslBench::load(&root.join("target/bench-compare/asl"))
        .context("run `cargo xtask bench-compare asl` first")?;
    let mask = vec![true; b.flat.nrows()];
    let fit = osipy_fitting::FitOptions {
        lm: LmSettings::from_config(100, 1e-6)?,
        ..Default::default()
    };
    let input = QuantInput {
        dm_over_m0: b.flat.view(),
        mask: &mask,
        timings: &b.timings,
        scheme: LabelingScheme::Pcasl,
        physio: b.physio,
        arterial: false,
        fit: &fit,
    };
    let device = Device::auto()?;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        buxton_multi_pld(&input, &device)?;
        println!("buxton_multi_pld {:.4} s", start.elapsed().as_secs_f64());
    }
    Ok(())
}
