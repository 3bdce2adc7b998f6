//! Synthetic DSC datasets with known CBF, CBV, MTT and delay.
//!
//! The arterial deltaR2\* is a gamma variate `A (t - t0)^3 e^{-(t - t0)/1.5 s}`
//! (peak `aif_peak`); tissue is `(rho / kH) (CBF / 6000) (Ca * R)(t - delay)`
//! with an exponential (`exp(-t/MTT)`), box (1 up to MTT) or gamma (shape 3,
//! mean MTT) residue, integrated by the trapezoid rule on a 0.01 s grid
//! and sampled at the frames. CBF varies along x, MTT along y, delay along
//! z, and so does the leakage rate `K2` when given. Signal is `S0 exp(-TE deltaR2*)` plus Gaussian noise of SD
//! `S0 / snr`, seeded.

use ndarray::{Array3, Array4};
use osipy_convolution::exp_conv;
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;

/// Residue shape of the phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residue {
    /// `exp(-t / MTT)`.
    Exponential,
    /// 1 for `t < MTT`, then 0.
    Box,
    /// Gamma distribution of transit times, shape 3, mean MTT.
    Gamma,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct DscPhantomSpec {
    /// Grid (x, y, z).
    pub shape: [usize; 3],
    /// Frames.
    pub frames: usize,
    /// Frame step (s).
    pub dt: f64,
    /// Echo time (s).
    pub te: f64,
    /// Bolus arrival in the AIF (s).
    pub t0: f64,
    /// Peak arterial deltaR2\* (1/s).
    pub aif_peak: f64,
    /// CBF levels (ml/100g/min), along x.
    pub cbf: Vec<f64>,
    /// MTT levels (s), along y.
    pub mtt: Vec<f64>,
    /// Tissue delays after the AIF (s), along z.
    pub delay: Vec<f64>,
    /// Leakage rate levels along z (1/s; default none): T1-dominant leakage
    /// lowers tissue deltaR2\* by `K2 int_0^t Ca(s) e^{-kep (t - s)} ds`.
    pub k2: Vec<f64>,
    /// Efflux rate of the leakage term (1/s; 0: unidirectional).
    pub kep: f64,
    /// Dispersion time constant (s; 0: none): the tissue is fed by the AIF
    /// convolved with `e^{-t/tau} / tau` (Calamante et al., MRM 2000), while
    /// `aif` stays the undispersed measurement.
    pub dispersion: f64,
    /// Residue shape (default gamma: a spread of capillary transit times,
    /// Mouridsen et al. 2006).
    pub residue: Residue,
    /// `kH / rho` of the forward model.
    pub factor: f64,
    /// Baseline signal.
    pub s0: f64,
    /// Baseline SNR (`None`: noise-free).
    pub snr: Option<f64>,
    /// Seed.
    pub seed: u64,
}

impl Default for DscPhantomSpec {
    fn default() -> Self {
        DscPhantomSpec {
            shape: [8, 8, 2],
            frames: 60,
            dt: 1.5,
            te: 0.03,
            t0: 15.0,
            aif_peak: 250.0,
            cbf: vec![20.0, 40.0, 60.0, 80.0],
            mtt: vec![3.0, 4.5, 6.0, 8.0],
            delay: vec![0.0],
            k2: vec![0.0],
            kep: 0.0,
            dispersion: 0.0,
            residue: Residue::Gamma,
            factor: 0.55 / 0.75 / 1.04,
            s0: 1000.0,
            snr: Some(100.0),
            seed: 1,
        }
    }
}

/// A generated phantom.
#[derive(Debug, Clone)]
pub struct DscPhantom {
    /// Signal (x, y, z, frames).
    pub signal: Array4<f64>,
    /// Frame times (s).
    pub times: Vec<f64>,
    /// Arterial deltaR2\* at the frames (1/s).
    pub aif: Vec<f64>,
    /// True CBF (ml/100g/min).
    pub cbf: Array3<f64>,
    /// True CBV (ml/100g).
    pub cbv: Array3<f64>,
    /// True MTT (s).
    pub mtt: Array3<f64>,
    /// True delay (s).
    pub delay: Array3<f64>,
    /// True leakage rate (1/s).
    pub k2: Array3<f64>,
}

fn aif_at(spec: &DscPhantomSpec, t: f64) -> f64 {
    let x = t - spec.t0;
    if x <= 0.0 {
        return 0.0;
    }
    let peak = (3.0f64 * 1.5).powi(3) * (-3.0f64).exp();
    spec.aif_peak * x.powi(3) * (-x / 1.5).exp() / peak
}

impl Residue {
    /// Lower-case name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Residue::Exponential => "exponential",
            Residue::Box => "box",
            Residue::Gamma => "gamma",
        }
    }
}

fn residue_at(shape: Residue, mtt: f64, t: f64) -> f64 {
    if t < 0.0 {
        return 0.0;
    }
    match shape {
        Residue::Exponential => (-t / mtt).exp(),
        Residue::Box => f64::from(u8::from(t < mtt)),
        Residue::Gamma => 1.0 - puruspe::gammp(3.0, 3.0 * t / mtt),
    }
}

/// Generates the phantom of `spec`.
pub fn generate(spec: &DscPhantomSpec) -> Result<DscPhantom> {
    let [nx, ny, nz] = spec.shape;
    if nx == 0
        || ny == 0
        || nz == 0
        || spec.frames < 10
        || spec.cbf.is_empty()
        || spec.mtt.is_empty()
        || spec.delay.is_empty()
        || spec.k2.is_empty()
        || !(spec.dispersion >= 0.0)
    {
        return Err(OsipyError::Validation(
            "a DSC phantom needs a non-empty grid, at least 10 frames, a level of CBF, MTT, delay and K2, and a dispersion >= 0"
                .into(),
        ));
    }
    let times: Vec<f64> = (0..spec.frames).map(|i| i as f64 * spec.dt).collect();
    let aif: Vec<f64> = times.iter().map(|t| aif_at(spec, *t)).collect();
    let h = 0.01;
    // Negative delays (tissue before the AIF) reach past the last frame.
    let lead = spec.delay.iter().fold(0.0f64, |a, d| a.max(-d));
    let fine: Vec<f64> = (0..=(((times[times.len() - 1] + lead) / h).round() as usize))
        .map(|j| aif_at(spec, j as f64 * h))
        .collect();
    let fine_times: Vec<f64> = (0..fine.len()).map(|j| j as f64 * h).collect();
    let fine = if spec.dispersion > 0.0 {
        let mut d = vec![0.0; fine.len()];
        exp_conv(&fine_times, &fine, 1.0 / spec.dispersion, &mut d);
        d.iter().map(|v| v / spec.dispersion).collect()
    } else {
        fine
    };
    let mut leak = vec![0.0; fine.len()];
    exp_conv(&fine_times, &fine, spec.kep, &mut leak);
    let level = |v: &[f64], i: usize, n: usize| v[i * v.len() / n];
    let mut rng = Rng::new(spec.seed);
    let mut signal = Array4::zeros((nx, ny, nz, spec.frames));
    let (mut cbf, mut cbv, mut mtt, mut delay, mut k2) = (
        Array3::zeros(spec.shape),
        Array3::zeros(spec.shape),
        Array3::zeros(spec.shape),
        Array3::zeros(spec.shape),
        Array3::zeros(spec.shape),
    );
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                let (f, m, d, kz) = (
                    level(&spec.cbf, x, nx),
                    level(&spec.mtt, y, ny),
                    level(&spec.delay, z, nz),
                    level(&spec.k2, z, nz),
                );
                let scale = f / 6000.0 / spec.factor;
                let kernel: Vec<f64> = (0..fine.len())
                    .map(|j| residue_at(spec.residue, m, j as f64 * h))
                    .collect();
                for (i, t) in times.iter().enumerate() {
                    // Tissue at t is the convolution at t - delay.
                    let tt = t - d;
                    let c = if tt <= 0.0 {
                        0.0
                    } else {
                        let k = (tt / h).round() as usize;
                        (0..=k)
                            .map(|j| {
                                let w = if j == 0 || j == k { 0.5 } else { 1.0 };
                                w * fine[j] * kernel[k - j]
                            })
                            .sum::<f64>()
                            * h
                            * scale
                    };
                    let c = c - kz * leak[((t / h).round() as usize).min(leak.len() - 1)];
                    let noise = spec.snr.map_or(0.0, |snr| rng.normal() * spec.s0 / snr);
                    signal[[x, y, z, i]] = spec.s0 * (-spec.te * c).exp() + noise;
                }
                cbf[[x, y, z]] = f;
                mtt[[x, y, z]] = m;
                cbv[[x, y, z]] = f * m / 60.0;
                delay[[x, y, z]] = d;
                k2[[x, y, z]] = kz;
            }
        }
    }
    Ok(DscPhantom {
        signal,
        times,
        aif,
        cbf,
        cbv,
        mtt,
        delay,
        k2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_is_reproducible_and_its_area_ratio_is_cbv() {
        // Dispersion moves the tissue bolus later but keeps its area.
        for dispersion in [0.0, 3.0] {
            let spec = DscPhantomSpec {
                snr: None,
                shape: [4, 4, 1],
                frames: 80,
                dispersion,
                ..Default::default()
            };
            area_ratio_is_cbv(&spec);
        }
        let late = |dispersion| {
            let p = generate(&DscPhantomSpec {
                snr: None,
                dispersion,
                ..Default::default()
            })
            .unwrap();
            let row: Vec<f64> = (0..60).map(|i| -p.signal[[0, 0, 0, i]]).collect();
            crate::perfusion::peak_index(&row).unwrap()
        };
        assert!(late(3.0) > late(0.0));
        reproducible();
    }

    fn area_ratio_is_cbv(spec: &DscPhantomSpec) {
        let p = generate(spec).unwrap();
        // Noise-free: int C / int Ca = CBV kH / rho / 100 (central volume).
        let nt = p.times.len();
        for (x, y) in [(0, 0), (3, 3)] {
            let c: Vec<f64> = (0..nt)
                .map(|i| -(p.signal[[x, y, 0, i]] / spec.s0).ln() / spec.te)
                .collect();
            let ratio = crate::perfusion::cbv_ratio(&c, &p.aif, &p.times);
            let want = p.cbv[[x, y, 0]] / 100.0 / spec.factor;
            assert!((ratio - want).abs() < 0.02 * want, "{ratio} vs {want}");
        }
    }

    fn reproducible() {
        let q = generate(&DscPhantomSpec {
            snr: Some(50.0),
            ..Default::default()
        })
        .unwrap();
        let r = generate(&DscPhantomSpec {
            snr: Some(50.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.signal, r.signal);
        assert!(generate(&DscPhantomSpec {
            frames: 3,
            ..Default::default()
        })
        .is_err());
    }
}
