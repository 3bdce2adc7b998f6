//! `osipy simulate`: the microstructure crate's Monte Carlo simulator on an
//! acquisition scheme read from `.bval` / `.bvec` files, as a table.

use osipy_backend::Device;
use osipy_core::{OsipyError, Result};
use osipy_microstructure::scheme::Sources;
use osipy_microstructure::simulate::{simulate, McSettings, Substrate};
use osipy_microstructure::{parse_bvecs, Scheme};
use std::path::Path;

/// What to simulate, in the units of configs (s, mm^2/s, um).
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// `free`, `cylinder` (axis along z), `sphere` or `planes` (normal along z).
    pub substrate: String,
    /// Radius (cylinder, sphere) or spacing (planes), um.
    pub size: Option<f64>,
    /// Gradient pulse duration, s.
    pub delta: f64,
    /// Gradient pulse separation, s.
    pub big_delta: f64,
    /// Free diffusivity, mm^2/s.
    pub diffusivity: f64,
    /// Number of walkers.
    pub walkers: usize,
    /// Time step, s.
    pub dt: f64,
    /// Random seed.
    pub seed: u64,
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
}

/// The substrate names `osipy simulate` accepts.
pub const SUBSTRATES: &[&str] = &["free", "cylinder", "sphere", "planes"];

/// Simulates every volume of the scheme in `bval` / `bvec` and returns a
/// tab-separated table: volume, b (s/mm^2), gx, gy, gz, signal, std_error.
pub fn simulate_table(bval: &Path, bvec: &Path, o: &SimulateOptions) -> Result<String> {
    let size = |what: &str| -> Result<f64> {
        o.size.ok_or_else(|| OsipyError::MissingParameter {
            name: "--size".into(),
            needed_for: format!("the {} substrate", o.substrate),
            hint: format!("give the {what} in um, e.g. --size 5"),
        })
    };
    let substrate = match o.substrate.as_str() {
        "free" => Substrate::Free,
        "cylinder" => Substrate::Cylinder(size("radius")?),
        "sphere" => Substrate::Sphere(size("radius")?),
        "planes" => Substrate::Planes(size("spacing")?),
        other => {
            return Err(OsipyError::UnknownName {
                kind: "substrate".into(),
                name: other.into(),
                valid: SUBSTRATES.iter().map(|s| s.to_string()).collect(),
            })
        }
    };
    let b = osipy_io::read_value_list(bval)?;
    let g = parse_bvecs(
        &osipy_io::read_text_file(bvec)?,
        &bvec.display().to_string(),
        b.len(),
    )?;
    let (bs, gs) = (bval.display().to_string(), bvec.display().to_string());
    let scheme = Scheme::new(
        &b,
        &g,
        Some(o.delta),
        Some(o.big_delta),
        None,
        Sources { bval: &bs, bvec: &gs },
    )?;
    if !(o.dt > 0.0 && o.dt < 0.01) {
        return Err(OsipyError::metadata(
            "--dt (s)",
            o.dt,
            "a positive time step below 0.01 s, e.g. 0.00002 (20 us)",
        ));
    }
    let settings = McSettings {
        diffusivity: o.diffusivity * 1000.0,
        walkers: o.walkers,
        dt: o.dt * 1000.0,
        seed: o.seed,
    };
    let mc = simulate(substrate, &scheme, &settings, &Device::cpu(o.threads))?;
    let mut out = String::from("volume\tb\tgx\tgy\tgz\tsignal\tstd_error\n");
    for i in 0..scheme.len() {
        let g = scheme.g[i];
        out.push_str(&format!(
            "{i}\t{}\t{:.6}\t{:.6}\t{:.6}\t{:.6}\t{:.6}\n",
            b[i], g[0], g[1], g[2], mc.signal[i], mc.std_error[i]
        ));
    }
    Ok(out)
}
