//! `osipy demo`: a DCE phantom written as NIfTI, analysed by the real
//! pipeline from those files, and compared with its truth.

use anyhow::{Context, Result};
use ndarray::{Array3, Array4};
use osipy_dce::phantom::{generate, PhantomSpec, SignalSettings};
use osipy_dce::{vfa_signal, VfaParams};
use osipy_io::{read_3d, write_4d, write_mask, Geometry};
use osipy_pipeline::Config;
use std::path::Path;

const T10: f64 = 1.4;
const TR: f64 = 0.005;
const FLIP: f64 = 15.0;
const FLIP_ANGLES: [f64; 4] = [2.0, 5.0, 10.0, 15.0];
const M0: f64 = 1000.0;
/// Signal noise (a.u.): SNR 250 on the baseline signal of ~100.
const NOISE: f64 = 0.4;

fn config_text() -> String {
    format!(
        r#"# Written by `osipy demo`: the phantom's acquisition.
modality = "dce"

[pipeline]
model = "extended_tofts"
aif_source = "population"
population_aif = "parker"
aif_delay = 30.0

[pipeline.acquisition]
baseline_frames = 8
relaxivity = 4.5
tr = {TR}
flip_angle = {FLIP}
flip_angles = [2.0, 5.0, 10.0, 15.0]

[data]
dynamic = "dce.nii.gz"
vfa = "vfa.nii.gz"
mask = "mask.nii.gz"
"#
    )
}

/// Prints the command that reproduces the run, its time and quality counts,
/// and the table header.
fn print_run_header(
    config: &Path,
    data: &Path,
    maps: &Path,
    seconds: f64,
    quality: &std::collections::BTreeMap<String, usize>,
) {
    println!(
        "run:  osipy run {} {} -o {}",
        config.display(),
        data.display(),
        maps.display()
    );
    println!("      {seconds:.2} s, quality {quality:?}\n");
    println!(
        "{:<8} {:>10} {:>16} {:>14}",
        "param", "true", "median fitted", "median |err|"
    );
}

/// Prints, per distinct true value of `name`, the median fitted value read
/// back from `maps/<name>.nii.gz` and the median |relative error|.
fn table_rows(maps: &Path, name: &str, truth: &ndarray::Array3<f64>, digits: usize) -> Result<()> {
    let (est, _) = read_3d(maps.join(format!("{name}.nii.gz")))?;
    let mut levels: Vec<f64> = truth.iter().copied().collect();
    levels.sort_by(|a, b| a.total_cmp(b));
    levels.dedup();
    for level in levels {
        let mut vals: Vec<f64> = est
            .iter()
            .zip(truth.iter())
            .filter(|(e, t)| **t == level && e.is_finite())
            .map(|(e, _)| *e)
            .collect();
        vals.sort_by(|a, b| a.total_cmp(b));
        let median = vals.get(vals.len() / 2).copied().unwrap_or(f64::NAN);
        let mut errs: Vec<f64> = vals.iter().map(|v| ((v - level) / level).abs()).collect();
        errs.sort_by(|a, b| a.total_cmp(b));
        let merr = errs.get(errs.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{name:<8} {level:>10.digits$} {median:>16.digits$} {:>13.1}%",
            100.0 * merr
        );
    }
    Ok(())
}

/// Runs the demo into `out` (data in `out/data`, maps in `out/maps`).
pub fn run(out: &Path, quiet: bool) -> Result<()> {
    let data = out.join("data");
    let maps = out.join("maps");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let spec = PhantomSpec {
        shape: [16, 16, 4],
        seed: 2026,
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec)?;
    let geometry = Geometry::from_affine([
        [2.0, 0.0, 0.0, -16.0],
        [0.0, 2.0, 0.0, -16.0],
        [0.0, 0.0, 4.0, -8.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let acq = SignalSettings {
        t10: T10,
        m0: M0,
        tr: TR,
        flip_angle: FLIP,
        relaxivity: 4.5,
    };
    write_4d(
        data.join("dce.nii.gz"),
        &ph.signal(&acq, NOISE, 7),
        &geometry,
        spec.dt,
    )?;
    let [nx, ny, nz] = spec.shape;
    let v = vfa_signal(
        &VfaParams {
            tr: TR,
            flip_angles: FLIP_ANGLES.to_vec(),
        },
        M0,
        T10,
        1.0,
    )?;
    let vfa = Array4::from_shape_fn((nx, ny, nz, FLIP_ANGLES.len()), |(_, _, _, a)| v[a]);
    write_4d(data.join("vfa.nii.gz"), &vfa, &geometry, 1.0)?;
    write_mask(
        data.join("mask.nii.gz"),
        &Array3::from_elem((nx, ny, nz), 1u8),
        &geometry,
    )?;
    let config_path = data.join("osipy.toml");
    std::fs::write(&config_path, config_text())
        .with_context(|| format!("writing {}", config_path.display()))?;

    let config = Config::from_file(&config_path)?;
    let start = std::time::Instant::now();
    let summary = crate::run_with_progress(&config, &data, &maps, None, quiet)?;
    let elapsed = start.elapsed().as_secs_f64();

    println!(
        "osipy {} DCE demo: extended Tofts phantom {}x{}x{} voxels x {} frames",
        env!("CARGO_PKG_VERSION"),
        nx,
        ny,
        nz,
        spec.n_frames
    );
    println!(
        "data: {}  (signal SNR ~250, VFA T1 {T10} s, Parker AIF at 30 s)",
        data.display()
    );
    print_run_header(&config_path, &data, &maps, elapsed, &summary.quality_counts);
    for name in ["Ktrans", "ve", "vp"] {
        table_rows(&maps, name, ph.truth(name).context("phantom truth")?, 4)?;
    }
    println!(
        "\nmaps, standard errors, R^2, quality mask and osipy_run.json in {}",
        maps.display()
    );
    Ok(())
}

/// `osipy demo ivim`: an IVIM phantom (Rician noise, SNR 100) as NIfTI with
/// an FSL `.bval` file, analysed by the pipeline with the segmented fit.
pub fn run_ivim(out: &Path, quiet: bool) -> Result<()> {
    use osipy_ivim::phantom::{generate as generate_ivim, IvimPhantomSpec, Noise};
    let data = out.join("data");
    let maps = out.join("maps");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let spec = IvimPhantomSpec {
        snr: Some(100.0),
        noise: Noise::Rician,
        seed: 2026,
        ..IvimPhantomSpec::default()
    };
    let ph = generate_ivim(&spec)?;
    let geometry = Geometry::from_affine([
        [2.0, 0.0, 0.0, -16.0],
        [0.0, 2.0, 0.0, -16.0],
        [0.0, 0.0, 4.0, -8.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    write_4d(data.join("dwi.nii.gz"), &ph.signal, &geometry, 1.0)?;
    let bval: Vec<String> = spec.b_values.iter().map(|b| format!("{b}")).collect();
    std::fs::write(data.join("dwi.bval"), bval.join(" ") + "\n")?;
    let config_path = data.join("osipy.toml");
    std::fs::write(
        &config_path,
        "# Written by `osipy demo ivim`.\nmodality = \"ivim\"\n\n[pipeline]\nfitting_method = \"segmented\"\nb_threshold = 200.0\n\n[data]\ndwi = \"dwi.nii.gz\"\nb_values_file = \"dwi.bval\"\n",
    )?;
    let config = Config::from_file(&config_path)?;
    let start = std::time::Instant::now();
    let summary = crate::run_with_progress(&config, &data, &maps, None, quiet)?;
    let elapsed = start.elapsed().as_secs_f64();
    let [nx, ny, nz] = spec.shape;
    println!(
        "osipy {} IVIM demo: phantom {nx}x{ny}x{nz} voxels x {} b-values, Rician noise SNR 100",
        env!("CARGO_PKG_VERSION"),
        spec.b_values.len()
    );
    println!("data: {}  (b-values in dwi.bval)", data.display());
    print_run_header(&config_path, &data, &maps, elapsed, &summary.quality_counts);
    for name in ["D", "f", "Dstar"] {
        table_rows(&maps, name, ph.truth(name).context("phantom truth")?, 5)?;
    }
    println!(
        "\nmaps (D, Dstar, f, S0 with _se), R^2, quality mask and osipy_run.json in {}",
        maps.display()
    );
    Ok(())
}
