//! Arterial input functions: population forms, measured curves, delay and
//! hematocrit conversion. Time is in seconds, concentration in mM.

use crate::special::gamma_pdf;
use osipy_core::{check_increasing, OsipyError, Result};

/// Whether a curve is whole-blood or plasma concentration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compartment {
    /// Whole-blood concentration `Cb` (mM).
    Blood,
    /// Plasma concentration `Cp = Cb / (1 - Hct)` (mM).
    Plasma,
}

/// Parker et al. (MRM 2006, 56:993) Table 1 parameters; times in minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParkerParams {
    /// Gaussian amplitudes (mM min).
    pub a: [f64; 2],
    /// Gaussian centres (min).
    pub t: [f64; 2],
    /// Gaussian widths (min).
    pub sigma: [f64; 2],
    /// Exponential amplitude (mM).
    pub alpha: f64,
    /// Exponential decay (1/min).
    pub beta: f64,
    /// Sigmoid steepness (1/min).
    pub s: f64,
    /// Sigmoid centre (min).
    pub tau: f64,
}

impl Default for ParkerParams {
    fn default() -> Self {
        ParkerParams {
            a: [0.809, 0.330],
            t: [0.17046, 0.365],
            sigma: [0.0563, 0.132],
            alpha: 1.050,
            beta: 0.1685,
            s: 38.078,
            tau: 0.483,
        }
    }
}

/// Georgiou et al. (MRM 2019, 81:1955) Table 3 parameters; times in minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeorgiouParams {
    /// Exponential amplitudes (mM).
    pub a: [f64; 3],
    /// Exponential rates (1/min).
    pub m: [f64; 3],
    /// Gamma-variate shape parameter (dimensionless).
    pub alpha: f64,
    /// Gamma-variate scale (min).
    pub beta: f64,
    /// Recirculation period (min).
    pub tau: f64,
}

impl Default for GeorgiouParams {
    fn default() -> Self {
        GeorgiouParams {
            a: [0.37, 0.33, 10.06],
            m: [0.11, 1.17, 16.02],
            alpha: 5.26,
            beta: 0.032,
            tau: 0.129,
        }
    }
}

/// Bi-exponential `C(t) = D (a1 e^{-m1 t} + a2 e^{-m2 t})`, t in minutes,
/// zero before t = 0 (the bolus is treated as instantaneous).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BiexpParams {
    /// Dose factor (mmol/kg) multiplying the amplitudes.
    pub dose: f64,
    /// Amplitudes (mM per unit dose).
    pub a: [f64; 2],
    /// Rates (1/min).
    pub m: [f64; 2],
}

/// McGrath et al. (MRM 2009, 61:1173) model B preclinical AIF; times in s:
/// linear rise to `a1 + a2` at `t0`, then `a1 e^{-k1(t-t0)} + a2 e^{-k2(t-t0)}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McGrathParams {
    /// Fast amplitude (mM).
    pub a1: f64,
    /// Fast rate (1/s).
    pub k1: f64,
    /// Slow amplitude (mM).
    pub a2: f64,
    /// Slow rate (1/s).
    pub k2: f64,
    /// Time of peak (s).
    pub t0: f64,
}

impl Default for McGrathParams {
    fn default() -> Self {
        McGrathParams {
            a1: 3.4,
            k1: 0.045,
            a2: 1.81,
            k2: 0.0015,
            t0: 7.0,
        }
    }
}

/// The functional form behind an [`Aif`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AifShape {
    /// Parker 2006 population AIF (blood).
    Parker(ParkerParams),
    /// Georgiou 2019 population AIF (blood).
    Georgiou(GeorgiouParams),
    /// Bi-exponential (Weinmann 1984 / Fritz-Hansen 1996).
    BiExponential(BiexpParams),
    /// McGrath 2009 preclinical model B.
    McGrath(McGrathParams),
    /// A measured curve, linearly interpolated; zero before its first sample,
    /// held at its last value after the last one.
    Measured {
        /// Sample times (s), strictly increasing.
        time: Vec<f64>,
        /// Concentrations (mM).
        conc: Vec<f64>,
    },
}

/// An arterial input function: a shape, the compartment it describes, and a
/// delay. Evaluate with [`Aif::at`] or [`Aif::sample`] (time in s, mM).
#[derive(Debug, Clone, PartialEq)]
pub struct Aif {
    /// Registry-style name (`parker`, `measured`, ...).
    pub name: String,
    /// Literature reference of the shape and its parameters.
    pub reference: String,
    /// The functional form.
    pub shape: AifShape,
    /// Blood or plasma.
    pub compartment: Compartment,
    /// Bolus delay (s): the curve is `C(t - delay)`.
    pub delay: f64,
}

impl Aif {
    /// Parker et al. 2006 (blood).
    pub fn parker() -> Aif {
        Aif {
            name: "parker".into(),
            reference: "Parker GJM et al. Magn Reson Med 2006;56:993-1000 (Table 1)".into(),
            shape: AifShape::Parker(ParkerParams::default()),
            compartment: Compartment::Blood,
            delay: 0.0,
        }
    }

    /// Georgiou et al. 2019 (blood).
    pub fn georgiou() -> Aif {
        Aif {
            name: "georgiou".into(),
            reference: "Georgiou L et al. Magn Reson Med 2019;81:1955-1963 (Eq. 1, Table 3)".into(),
            shape: AifShape::Georgiou(GeorgiouParams::default()),
            compartment: Compartment::Blood,
            delay: 0.0,
        }
    }

    /// Weinmann et al. 1984 as fitted by Tofts & Kermode 1991 (plasma),
    /// dose 0.1 mmol/kg.
    pub fn weinmann() -> Aif {
        Aif {
            name: "weinmann".into(),
            reference: "Weinmann HJ et al. Physiol Chem Phys Med NMR 1984;16:167; parameters from Tofts PS, Kermode AG. Magn Reson Med 1991;17:357".into(),
            shape: AifShape::BiExponential(BiexpParams { dose: 0.1, a: [3.99, 4.78], m: [0.144, 0.0111] }),
            compartment: Compartment::Plasma,
            delay: 0.0,
        }
    }

    /// Fritz-Hansen et al. 1996 (blood), bi-exponential fit to measured
    /// Gd-DTPA blood curves at 0.1 mmol/kg.
    pub fn fritz_hansen() -> Aif {
        Aif {
            name: "fritz_hansen".into(),
            reference: "Fritz-Hansen T et al. Magn Reson Med 1996;36:225-231".into(),
            shape: AifShape::BiExponential(BiexpParams {
                dose: 1.0,
                a: [2.4, 0.62],
                m: [3.0, 0.016],
            }),
            compartment: Compartment::Blood,
            delay: 0.0,
        }
    }

    /// McGrath et al. 2009 model B (preclinical, plasma).
    pub fn mcgrath() -> Aif {
        Aif {
            name: "mcgrath".into(),
            reference: "McGrath DM et al. Magn Reson Med 2009;61:1173-1184 (model B)".into(),
            shape: AifShape::McGrath(McGrathParams::default()),
            compartment: Compartment::Plasma,
            delay: 0.0,
        }
    }

    /// A measured AIF from arrays: times (s, strictly increasing, finite) and
    /// concentrations (mM, finite).
    pub fn measured(time: &[f64], conc: &[f64], compartment: Compartment) -> Result<Aif> {
        if time.len() != conc.len() || time.len() < 2 {
            return Err(OsipyError::Aif(format!(
                "measured AIF has {} time points and {} concentrations; expected two equally long arrays with at least 2 samples",
                time.len(),
                conc.len()
            )));
        }
        if let Some((i, v)) = time.iter().chain(conc).enumerate().find(|(_, v)| !v.is_finite()) {
            let what = if i < time.len() { "time" } else { "concentration" };
            return Err(OsipyError::Aif(format!(
                "measured AIF {what} value {v} at index {} is not finite; expected finite numbers",
                i % time.len()
            )));
        }
        check_increasing("measured AIF times (s)", time)?;
        Ok(Aif {
            name: "measured".into(),
            reference: "measured".into(),
            shape: AifShape::Measured {
                time: time.to_vec(),
                conc: conc.to_vec(),
            },
            compartment,
            delay: 0.0,
        })
    }

    /// The same AIF delayed by `delay_s` more seconds (negative advances it).
    pub fn shift(&self, delay_s: f64) -> Aif {
        let mut a = self.clone();
        a.delay += delay_s;
        a
    }

    /// Concentration (mM) at time `t_s` (s), in this AIF's compartment.
    pub fn at(&self, t_s: f64) -> f64 {
        let t = t_s - self.delay;
        match &self.shape {
            AifShape::Parker(p) => {
                if t < 0.0 {
                    return 0.0;
                }
                let tm = t / 60.0;
                let g = |a: f64, c: f64, s: f64| {
                    a / (s * (2.0 * std::f64::consts::PI).sqrt()) * (-(tm - c).powi(2) / (2.0 * s * s)).exp()
                };
                g(p.a[0], p.t[0], p.sigma[0])
                    + g(p.a[1], p.t[1], p.sigma[1])
                    + p.alpha * (-p.beta * tm).exp() / (1.0 + (-p.s * (tm - p.tau)).exp())
            }
            AifShape::Georgiou(p) => {
                if t < 0.0 {
                    return 0.0;
                }
                let tm = t / 60.0;
                let exps: f64 = (0..3).map(|i| p.a[i] * (-p.m[i] * tm).exp()).sum();
                // Recirculation: in [n tau, (n+1) tau) the sum runs over the
                // first n+1 passes, pass j a gamma variate of shape
                // (j+1) alpha + j + 1 and scale beta starting at j tau.
                let n = (tm / p.tau).floor() as usize;
                let gammas: f64 = (0..=n)
                    .map(|j| {
                        let shape = (j as f64 + 1.0) * p.alpha + j as f64 + 1.0;
                        gamma_pdf(tm - j as f64 * p.tau, shape, p.beta)
                    })
                    .sum();
                exps * gammas
            }
            AifShape::BiExponential(p) => {
                if t < 0.0 {
                    return 0.0;
                }
                let tm = t / 60.0;
                p.dose * (p.a[0] * (-p.m[0] * tm).exp() + p.a[1] * (-p.m[1] * tm).exp())
            }
            AifShape::McGrath(p) => {
                if t < 0.0 {
                    0.0
                } else if t <= p.t0 {
                    (p.a1 + p.a2) * t / p.t0
                } else {
                    p.a1 * (-p.k1 * (t - p.t0)).exp() + p.a2 * (-p.k2 * (t - p.t0)).exp()
                }
            }
            AifShape::Measured { time, conc } => {
                let n = time.len();
                if t < time[0] {
                    return 0.0;
                }
                if t >= time[n - 1] {
                    return conc[n - 1];
                }
                let k = time.partition_point(|x| *x <= t) - 1;
                let w = (t - time[k]) / (time[k + 1] - time[k]);
                conc[k] + w * (conc[k + 1] - conc[k])
            }
        }
    }

    /// The curve at each of `times` (s), in this AIF's compartment (mM).
    pub fn sample(&self, times: &[f64]) -> Vec<f64> {
        times.iter().map(|&t| self.at(t)).collect()
    }

    /// Plasma concentration (mM) at `times`, converting blood curves with
    /// `Cp = Cb / (1 - hct)`.
    pub fn plasma(&self, times: &[f64], hct: f64) -> Result<Vec<f64>> {
        let f = match self.compartment {
            Compartment::Plasma => 1.0,
            Compartment::Blood => 1.0 / (1.0 - check_hct(hct)?),
        };
        Ok(times.iter().map(|&t| self.at(t) * f).collect())
    }

    /// Whole-blood concentration (mM) at `times`, converting plasma curves
    /// with `Cb = Cp (1 - hct)`.
    pub fn blood(&self, times: &[f64], hct: f64) -> Result<Vec<f64>> {
        let f = match self.compartment {
            Compartment::Blood => 1.0,
            Compartment::Plasma => 1.0 - check_hct(hct)?,
        };
        Ok(times.iter().map(|&t| self.at(t) * f).collect())
    }
}

/// Checks a hematocrit value (fraction in [0, 1)).
pub fn check_hct(hct: f64) -> Result<f64> {
    if (0.0..1.0).contains(&hct) {
        Ok(hct)
    } else {
        Err(OsipyError::Aif(format!(
            "hematocrit {hct} is outside [0, 1); give a fraction such as 0.45 (not a percentage)"
        )))
    }
}

/// A population-AIF table row: (name, description, constructor).
pub(crate) type PopulationRow = (&'static str, &'static str, fn() -> Aif);

/// Population AIFs.
pub(crate) const POPULATION: [PopulationRow; 5] = [
    (
        "parker",
        "Parker et al. 2006, blood, two Gaussians + sigmoid-modulated exponential",
        Aif::parker,
    ),
    (
        "georgiou",
        "Georgiou et al. 2019, blood, tri-exponential x recirculating gamma variates",
        Aif::georgiou,
    ),
    (
        "fritz_hansen",
        "Fritz-Hansen et al. 1996, blood, bi-exponential",
        Aif::fritz_hansen,
    ),
    (
        "weinmann",
        "Weinmann et al. 1984 (Tofts-Kermode fit), plasma, bi-exponential",
        Aif::weinmann,
    ),
    (
        "mcgrath",
        "McGrath et al. 2009 model B, preclinical, plasma",
        Aif::mcgrath,
    ),
];
