//! Synthetic IVIM datasets with known D, D*, f maps.
//!
//! D varies in blocks along x, f along y and D* along z (every combination
//! appears). Noise is Gaussian or Rician (magnitude of a complex signal with
//! Gaussian noise of the same SD in both channels; Gudbjartsson & Patz, MRM
//! 1995), with SD = S0 / SNR, seeded.

use crate::models::Biexponential;
use ndarray::{Array2, Array3, Array4};
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;
use osipy_fitting::Model;

/// Noise model of the phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// Additive Gaussian.
    Gaussian,
    /// Rician (magnitude of complex Gaussian).
    Rician,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct IvimPhantomSpec {
    /// Grid (x, y, z).
    pub shape: [usize; 3],
    /// b-values (s/mm^2), one per volume.
    pub b_values: Vec<f64>,
    /// S0 (signal units).
    pub s0: f64,
    /// Levels of D (mm^2/s), along x.
    pub d: Vec<f64>,
    /// Levels of f, along y.
    pub f: Vec<f64>,
    /// Levels of D* (mm^2/s), along z.
    pub dstar: Vec<f64>,
    /// SNR = S0 / noise SD; `None` for noise-free.
    pub snr: Option<f64>,
    /// Noise model.
    pub noise: Noise,
    /// Random seed.
    pub seed: u64,
}

impl Default for IvimPhantomSpec {
    fn default() -> Self {
        IvimPhantomSpec {
            shape: [16, 16, 4],
            b_values: vec![
                0.0, 10.0, 20.0, 40.0, 80.0, 110.0, 140.0, 200.0, 300.0, 500.0, 700.0, 1000.0,
            ],
            s0: 1000.0,
            d: vec![0.6e-3, 1.0e-3, 1.5e-3, 2.0e-3],
            f: vec![0.05, 0.1, 0.2, 0.3],
            dstar: vec![0.02, 0.05, 0.1, 0.15],
            snr: Some(50.0),
            noise: Noise::Rician,
            seed: 1,
        }
    }
}

/// A generated IVIM phantom.
#[derive(Debug, Clone)]
pub struct IvimPhantom {
    /// Signals (x, y, z, b).
    pub signal: Array4<f64>,
    /// True maps: D, f, Dstar (and S0).
    pub truth: Vec<(String, Array3<f64>)>,
}

impl IvimPhantom {
    /// The true map called `name`.
    pub fn truth(&self, name: &str) -> Option<&Array3<f64>> {
        self.truth.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// The signals as voxels (C order over x, y, z) x b-values, the layout
    /// [`crate::fit_ivim`] takes.
    pub fn voxels(&self) -> Array2<f64> {
        let s = self.signal.shape();
        let n = s[0] * s[1] * s[2];
        Array2::from_shape_fn((n, s[3]), |(v, k)| {
            let (x, y, z) = (v / (s[1] * s[2]), (v / s[2]) % s[1], v % s[2]);
            self.signal[[x, y, z, k]]
        })
    }
}

/// Generates the phantom described by `spec`.
pub fn generate(spec: &IvimPhantomSpec) -> Result<IvimPhantom> {
    if spec.shape.contains(&0) || spec.d.is_empty() || spec.f.is_empty() || spec.dstar.is_empty() {
        return Err(OsipyError::data(
            "IVIM phantom",
            format!("shape {:?} and level lists", spec.shape),
            "a non-empty grid and non-empty D, f, D* levels",
        ));
    }
    let m = Biexponential::new(&spec.b_values)?;
    let [nx, ny, nz] = spec.shape;
    let level = |l: &[f64], i: usize, n: usize| l[(i * l.len() / n).min(l.len() - 1)];
    let d = Array3::from_shape_fn((nx, ny, nz), |(x, _, _)| level(&spec.d, x, nx));
    let f = Array3::from_shape_fn((nx, ny, nz), |(_, y, _)| level(&spec.f, y, ny));
    let ds = Array3::from_shape_fn((nx, ny, nz), |(_, _, z)| level(&spec.dstar, z, nz));
    let nb = spec.b_values.len();
    let mut signal = Array4::zeros((nx, ny, nz, nb));
    let mut rng = Rng::new(spec.seed);
    let sd = spec.snr.map_or(0.0, |snr| spec.s0 / snr);
    let mut curve = vec![0.0; nb];
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                m.predict(&[spec.s0, f[[x, y, z]], d[[x, y, z]], ds[[x, y, z]]], &mut curve);
                for (k, c) in curve.iter().enumerate() {
                    signal[[x, y, z, k]] = match spec.noise {
                        Noise::Gaussian => c + sd * rng.normal(),
                        Noise::Rician => {
                            ((c + sd * rng.normal()).powi(2) + (sd * rng.normal()).powi(2)).sqrt()
                        }
                    };
                }
            }
        }
    }
    let s0 = Array3::from_elem((nx, ny, nz), spec.s0);
    Ok(IvimPhantom {
        signal,
        truth: vec![
            ("D".into(), d),
            ("f".into(), f),
            ("Dstar".into(), ds),
            ("S0".into(), s0),
        ],
    })
}
