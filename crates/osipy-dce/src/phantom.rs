//! Synthetic DCE datasets with known parameter maps, for tests, the demo and
//! DRO validation.
//!
//! Each model parameter varies in blocks along one axis (parameter 0 along x,
//! 1 along y, 2 along z; a fourth parameter takes its first level), so every
//! combination of levels appears in a block of voxels. Concentration comes
//! from the model itself with a Parker population AIF (plasma); signal, when
//! asked for, from the SPGR equation. Noise is Gaussian and seeded, so a
//! phantom is reproducible bit for bit.

use crate::concentration::spgr_signal;
use crate::models::{model, PkInput};
use ndarray::{Array3, Array4};
use osipy_aif::Aif;
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSpec {
    /// DCE model name (`tofts`, `extended_tofts`, ...).
    pub model: String,
    /// Grid (x, y, z).
    pub shape: [usize; 3],
    /// Number of frames.
    pub n_frames: usize,
    /// Frame interval (s).
    pub dt: f64,
    /// Bolus arrival of the Parker AIF (s).
    pub bolus_arrival: f64,
    /// Hematocrit for the blood-to-plasma conversion.
    pub hematocrit: f64,
    /// Levels of each parameter (model order, CAPLEX units).
    pub levels: Vec<Vec<f64>>,
    /// Standard deviation of Gaussian noise on concentration (mM).
    pub noise_sd: f64,
    /// When set, noise SD per voxel is the voxel's peak concentration / snr
    /// (as in the Python osipy benchmark); overrides `noise_sd`.
    pub snr: Option<f64>,
    /// Random seed.
    pub seed: u64,
}

impl PhantomSpec {
    /// A default extended-Tofts phantom: 16 x 16 x 4, 80 frames of 3.5 s.
    pub fn extended_tofts() -> PhantomSpec {
        PhantomSpec {
            model: "extended_tofts".into(),
            shape: [16, 16, 4],
            n_frames: 80,
            dt: 3.5,
            bolus_arrival: 30.0,
            hematocrit: 0.42,
            levels: vec![
                vec![0.05, 0.1, 0.2, 0.4],
                vec![0.1, 0.2, 0.3, 0.5],
                vec![0.01, 0.02, 0.05, 0.1],
            ],
            noise_sd: 0.0,
            snr: None,
            seed: 1,
        }
    }

    /// [`PhantomSpec::extended_tofts`] for the built-in model `model`, with
    /// parameter levels in that model's physiological range (its own units,
    /// parameter order as the model's); `None` for any other name.
    pub fn for_model(model: &str) -> Option<PhantomSpec> {
        let levels = match model {
            "extended_tofts" => return Some(PhantomSpec::extended_tofts()),
            "tofts" => vec![vec![0.05, 0.2, 0.5], vec![0.1, 0.3, 0.5]],
            "patlak" => vec![vec![0.02, 0.1], vec![0.02, 0.08]],
            "2cum" => vec![vec![10.0, 40.0], vec![0.05, 0.15], vec![0.03, 0.08]],
            "2cxm" => vec![vec![15.0, 40.0], vec![0.1, 0.2], vec![0.1, 0.3], vec![0.05]],
            _ => return None,
        };
        Some(PhantomSpec {
            model: model.into(),
            levels,
            ..PhantomSpec::extended_tofts()
        })
    }
}

/// Acquisition settings for [`DcePhantom::signal`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalSettings {
    /// Pre-contrast T1 (s).
    pub t10: f64,
    /// Equilibrium magnetisation (signal units).
    pub m0: f64,
    /// Repetition time (s).
    pub tr: f64,
    /// Flip angle (degrees).
    pub flip_angle: f64,
    /// Relaxivity (1/s/mM).
    pub relaxivity: f64,
}

/// A generated phantom.
#[derive(Debug, Clone)]
pub struct DcePhantom {
    /// Frame times (s).
    pub time: Vec<f64>,
    /// Plasma AIF at the frame times (mM).
    pub aif: Vec<f64>,
    /// Tissue concentration (x, y, z, t; mM), with noise.
    pub concentration: Array4<f64>,
    /// True parameter maps (name, values).
    pub truth: Vec<(String, Array3<f64>)>,
}

/// Generates the phantom described by `spec`.
pub fn generate(spec: &PhantomSpec) -> Result<DcePhantom> {
    if spec.n_frames < 2 || !(spec.dt > 0.0) || spec.shape.contains(&0) {
        return Err(OsipyError::data(
            "phantom grid",
            format!(
                "shape {:?}, {} frames of {} s",
                spec.shape, spec.n_frames, spec.dt
            ),
            "non-empty shape, at least 2 frames and a positive interval",
        ));
    }
    let time: Vec<f64> = (0..spec.n_frames).map(|i| i as f64 * spec.dt).collect();
    let aif = Aif::parker()
        .shift(spec.bolus_arrival)
        .plasma(&time, spec.hematocrit)?;
    let m = model(&spec.model, PkInput::new(&time, &aif)?)?;
    let np = m.n_params();
    if spec.levels.len() != np || spec.levels.iter().any(|l| l.is_empty()) {
        return Err(OsipyError::data(
            format!("phantom levels for {}", spec.model),
            format!("{} lists", spec.levels.len()),
            format!("{np} non-empty lists, one per parameter {:?}", m.param_names()),
        ));
    }
    let [nx, ny, nz] = spec.shape;
    let level = |j: usize, idx: [usize; 3]| {
        let l = &spec.levels[j];
        let (i, n) = match j {
            0 => (idx[0], nx),
            1 => (idx[1], ny),
            2 => (idx[2], nz),
            _ => (0, 1),
        };
        l[(i * l.len() / n).min(l.len() - 1)]
    };
    let truth: Vec<(String, Array3<f64>)> = m
        .param_names()
        .iter()
        .enumerate()
        .map(|(j, name)| {
            (
                name.to_string(),
                Array3::from_shape_fn((nx, ny, nz), |(x, y, z)| level(j, [x, y, z])),
            )
        })
        .collect();
    let mut rng = Rng::new(spec.seed);
    let mut conc = Array4::zeros((nx, ny, nz, spec.n_frames));
    let mut curve = vec![0.0; spec.n_frames];
    let mut p = vec![0.0; np];
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                for (j, pj) in p.iter_mut().enumerate() {
                    *pj = truth[j].1[[x, y, z]];
                }
                m.predict(&p, &mut curve);
                let sd = match spec.snr {
                    Some(snr) => curve.iter().cloned().fold(0.0, f64::max) / snr,
                    None => spec.noise_sd,
                };
                for (t, c) in curve.iter().enumerate() {
                    conc[[x, y, z, t]] = c + sd * rng.normal();
                }
            }
        }
    }
    Ok(DcePhantom {
        time,
        aif,
        concentration: conc,
        truth,
    })
}

impl DcePhantom {
    /// SPGR signal for this phantom's (noise-added) concentration, with
    /// seeded Gaussian noise of `noise_sd` signal units.
    pub fn signal(&self, acq: &SignalSettings, noise_sd: f64, seed: u64) -> Array4<f64> {
        let mut rng = Rng::new(seed);
        self.concentration.mapv(|c| {
            spgr_signal(acq.m0, 1.0 / acq.t10 + acq.relaxivity * c, acq.tr, acq.flip_angle)
                + noise_sd * rng.normal()
        })
    }

    /// The true map called `name`.
    pub fn truth(&self, name: &str) -> Option<&Array3<f64>> {
        self.truth.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}
