//! Labeling schemes and the general kinetic model of the ASL difference
//! signal (Buxton et al. 1998), with the single-PLD consensus formulas
//! (Alsop et al. 2015) as its closed-form inversions.
//!
//! All signals here are normalised by the tissue M0: the model returns
//! ΔM / M0, with M0 of arterial blood M0b = M0 / λ. CBF is in ml/100g/min
//! (f = CBF / 6000 in ml/g/s), times in seconds.

use osipy_fitting::dual::Num;
use osipy_io::Choice;
use serde::{Deserialize, Serialize};

/// How the arterial blood is labelled (`pipeline.labeling_scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelingScheme {
    /// Pseudo-continuous ASL: a train of pulses over the label duration.
    Pcasl,
    /// Continuous ASL: one long flow-driven inversion.
    Casl,
    /// Pulsed ASL with a bolus cut-off (QUIPSS II or Q2TIPS at TI1).
    Pasl,
}

impl Choice for LabelingScheme {
    const ALL: &'static [Self] = &[LabelingScheme::Pcasl, LabelingScheme::Casl, LabelingScheme::Pasl];
}

impl LabelingScheme {
    /// Default labeling efficiency α: pCASL 0.85 and PASL 0.98 (Alsop et
    /// al. 2015, Table 1); CASL 0.68, the value ASLtbx uses for CASL with
    /// an amplitude-modulated control (Wang et al. 2008).
    pub fn default_efficiency(self) -> f64 {
        match self {
            LabelingScheme::Pcasl => 0.85,
            LabelingScheme::Casl => 0.68,
            LabelingScheme::Pasl => 0.98,
        }
    }

    /// Whether the bolus is created by continuous labeling (pCASL, CASL).
    pub fn is_continuous(self) -> bool {
        !matches!(self, LabelingScheme::Pasl)
    }

    /// Lower-case name, as in configs.
    pub fn name(self) -> &'static str {
        match self {
            LabelingScheme::Pcasl => "pcasl",
            LabelingScheme::Casl => "casl",
            LabelingScheme::Pasl => "pasl",
        }
    }
}

/// Inversion efficiency of one background-suppression pulse when only
/// their number is given: 0.95 (each adiabatic inversion attenuates the
/// label by a few per cent; Garcia et al. 2005 measured 0.93-0.97).
pub const DEFAULT_BS_PULSE_EFFICIENCY: f64 = 0.95;

/// Labeling efficiency after background suppression: α · e_bs^n, where n
/// is the number of suppression pulses and e_bs the efficiency of each.
/// With neither given, α itself; with only `pulse_efficiency` given, it is
/// taken as the combined factor (n = 1); with only `pulses`, each pulse
/// has [`DEFAULT_BS_PULSE_EFFICIENCY`].
pub fn effective_efficiency(alpha: f64, pulses: Option<u32>, pulse_efficiency: Option<f64>) -> f64 {
    match (pulses, pulse_efficiency) {
        (None, None) => alpha,
        (Some(n), e) => alpha * e.unwrap_or(DEFAULT_BS_PULSE_EFFICIENCY).powi(n as i32),
        (None, Some(e)) => alpha * e,
    }
}

/// Physiological and labeling constants of a quantification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Physio {
    /// T1 of arterial blood (s).
    pub t1_blood: f64,
    /// T1 of tissue (s).
    pub t1_tissue: f64,
    /// Blood-brain partition coefficient λ (ml/g).
    pub lambda: f64,
    /// Effective labeling efficiency α (after background suppression).
    pub alpha: f64,
}

/// Constants at 3 T: T1 of blood 1.65 s, λ 0.9 ml/g and the pCASL
/// efficiency 0.85 of the white paper (Alsop et al. 2015), and tissue T1
/// 1.33 s (grey matter at 3 T, as ASLDRO's ground truth has it). The
/// defaults of `[pipeline]`, the phantom and the bench.
pub const WHITE_PAPER_3T: Physio = Physio {
    t1_blood: 1.65,
    t1_tissue: 1.33,
    lambda: 0.9,
    alpha: 0.85,
};

/// The timing of one ΔM sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Post-labeling delay (s): from the end of labeling to the readout
    /// for (p)CASL; the inversion time TI (from the labeling pulse) for PASL.
    pub pld: f64,
    /// Label duration τ (s) for (p)CASL; the bolus duration TI1 for PASL.
    pub tau: f64,
}

impl Timing {
    /// Time since the start of labeling (s): τ + PLD for (p)CASL, TI for PASL.
    pub fn time(&self, scheme: LabelingScheme) -> f64 {
        if scheme.is_continuous() {
            self.tau + self.pld
        } else {
            self.pld
        }
    }
}

/// ΔM / M0 of tissue by the general kinetic model (Buxton et al. 1998,
/// MRM 40:383, eqs. 6-8 for CASL and 2-4 for PASL), with plug flow, one
/// compartment and T1' = 1 / (1/T1 + f/λ):
///
/// (p)CASL, t = τ + PLD:
/// - 0 for t < Δt;
/// - 2α f T1' e^(-Δt/T1b) (1 - e^(-(t-Δt)/T1')) / λ for Δt <= t < Δt + τ;
/// - 2α f T1' e^(-Δt/T1b) e^(-(t-τ-Δt)/T1') (1 - e^(-τ/T1')) / λ after.
///
/// PASL, t = TI, k = 1/T1b - 1/T1':
/// - 0 for t < Δt;
/// - 2α f e^(-t/T1b) (e^(k(t-Δt)) - 1) / (k λ) while the bolus arrives;
/// - 2α f e^(-t/T1b) e^(k(t-Δt)) (1 - e^(-kτ)) / (k λ) after.
///
/// These are the forms of ASLDRO's GKM filter, checked against its
/// spreadsheet in the tests.
pub fn tissue<T: Num>(scheme: LabelingScheme, cbf: T, att: T, s: Timing, p: &Physio) -> T {
    let mut y = T::c(0.0);
    tissue_curve(scheme, cbf, att, &[s], p, |_, v| y = v);
    y
}

/// [`tissue`] at every sample of `samples`, passed to `emit(index, value)`,
/// with the terms that do not depend on the sample computed once (the
/// multi-PLD fit's inner loop).
pub fn tissue_curve<T: Num>(
    scheme: LabelingScheme,
    cbf: T,
    att: T,
    samples: &[Timing],
    p: &Physio,
    mut emit: impl FnMut(usize, T),
) {
    let f = cbf / T::c(6000.0);
    let u = T::c(1.0 / p.t1_tissue) + f / T::c(p.lambda);
    let scale = T::c(2.0 * p.alpha / p.lambda) * f;
    let one = T::c(1.0);
    if scheme.is_continuous() {
        let a = scale / u * (-att / T::c(p.t1_blood)).exp();
        // 1 - e^(-τ/T1'), recomputed only when τ changes between samples.
        let mut filled: Option<(f64, T)> = None;
        for (i, s) in samples.iter().enumerate() {
            let t = s.time(scheme);
            let y = if t < att.value() {
                T::c(0.0)
            } else if t < att.value() + s.tau {
                a * (one - (-(T::c(t) - att) * u).exp())
            } else {
                let fill = match filled {
                    Some((tau, v)) if tau == s.tau => v,
                    _ => {
                        let v = one - (-(T::c(s.tau) * u)).exp();
                        filled = Some((s.tau, v));
                        v
                    }
                };
                a * (-(T::c(t - s.tau) - att) * u).exp() * fill
            };
            emit(i, y);
        }
    } else {
        let k = T::c(1.0 / p.t1_blood) - u;
        for (i, s) in samples.iter().enumerate() {
            let t = s.time(scheme);
            let y = if t < att.value() {
                T::c(0.0)
            } else {
                let pre = scale * T::c((-t / p.t1_blood).exp());
                let dt = T::c(t) - att;
                if t < att.value() + s.tau {
                    pre * expm1_over(k, dt)
                } else {
                    pre * (k * dt).exp() * expm1_over(-k, T::c(s.tau))
                }
            };
            emit(i, y);
        }
    }
}

/// (e^(k x) - 1) / k, and x (1 + k x / 2) where k x is too small to divide.
fn expm1_over<T: Num>(k: T, x: T) -> T {
    if (k.value() * x.value()).abs() < 1e-9 {
        x * (T::c(1.0) + k * x / T::c(2.0))
    } else {
        (k * x).exp_m1() / k
    }
}

/// Standard deviation (s) of the Gaussian that softens the edges of the
/// arterial bolus: it keeps the macrovascular term differentiable in its
/// arrival time (a hard box has a zero derivative almost everywhere) and
/// stands for the dispersion of the bolus in large arteries.
pub const ARTERIAL_EDGE_SD: f64 = 0.1;

/// ΔM / M0 of labelled blood still in arteries (the macrovascular
/// component of Chappell et al. 2010, MRM 63:1357, as BASIL and ASLPrep
/// model it): a bolus of arterial blood volume aBV (ml blood per ml of
/// voxel) passing between aATT and aATT + τ, no exchange:
/// 2α aBV w(t) e^(-aATT/T1b) / λ for (p)CASL and 2α aBV w(t) e^(-t/T1b) / λ
/// for PASL, with w the box [aATT, aATT + τ] smoothed by a Gaussian of SD
/// [`ARTERIAL_EDGE_SD`].
pub fn arterial<T: Num>(scheme: LabelingScheme, abv: T, aatt: T, s: Timing, p: &Physio) -> T {
    let t = s.time(scheme);
    let w = T::c(std::f64::consts::FRAC_1_SQRT_2 / ARTERIAL_EDGE_SD);
    let window = T::c(0.5) * (((T::c(t) - aatt) * w).erf() - ((T::c(t - s.tau) - aatt) * w).erf());
    let decay = if scheme.is_continuous() {
        (-aatt / T::c(p.t1_blood)).exp()
    } else {
        T::c((-t / p.t1_blood).exp())
    };
    T::c(2.0 * p.alpha / p.lambda) * abv * window * decay
}

/// CBF (ml/100g/min) from one ΔM / M0 by the consensus single-compartment
/// formulas (Alsop et al. 2015, MRM 73:102, eqs. 1 and 2):
///
/// - (p)CASL: CBF = 6000 λ (ΔM/M0) e^(PLD/T1b) / (2α T1b (1 - e^(-τ/T1b)));
/// - PASL (QUIPSS II / Q2TIPS): CBF = 6000 λ (ΔM/M0) e^(TI/T1b) / (2α TI1).
///
/// They assume the whole bolus has arrived (ATT <= PLD) and that label
/// decays with the T1 of blood.
pub fn single_pld_cbf(scheme: LabelingScheme, dm_over_m0: f64, s: Timing, p: &Physio) -> f64 {
    let decay = (s.pld / p.t1_blood).exp();
    let denom = if scheme.is_continuous() {
        2.0 * p.alpha * p.t1_blood * (-(-s.tau / p.t1_blood).exp_m1())
    } else {
        2.0 * p.alpha * s.tau
    };
    6000.0 * p.lambda * dm_over_m0 * decay / denom
}

#[cfg(test)]
mod tests {
    use super::*;
    use osipy_fitting::dual::Dual;

    const P: Physio = WHITE_PAPER_3T;

    #[test]
    fn single_pld_inverts_the_kinetic_model_when_t1_equals_t1b_and_flow_vanishes() {
        // The white-paper formulas are the GKM with T1 = T1b and f/λ -> 0.
        let p = Physio { t1_tissue: 1.65, ..P };
        for scheme in [LabelingScheme::Pcasl, LabelingScheme::Pasl] {
            let s = Timing { pld: 2.0, tau: 0.8 };
            let dm = tissue(scheme, 1e-6, 0.5, s, &p);
            let cbf = single_pld_cbf(scheme, dm, s, &p);
            assert!((cbf - 1e-6).abs() < 1e-12, "{scheme:?}: {cbf}");
        }
    }

    #[test]
    fn the_bolus_counts_from_the_start_of_labeling() {
        // pCASL: nothing before ATT, the full bolus after ATT + tau.
        let s = |pld| Timing { pld, tau: 1.8 };
        assert_eq!(tissue(LabelingScheme::Pcasl, 60.0, 2.5, s(0.5), &P), 0.0);
        assert!(tissue(LabelingScheme::Pcasl, 60.0, 2.0, s(0.5), &P) > 0.0);
        // PASL: PLD is TI.
        assert_eq!(tissue(LabelingScheme::Pasl, 60.0, 0.8, s(0.5), &P), 0.0);
    }

    #[test]
    fn expm1_over_is_smooth_across_its_guard() {
        // Both branches against the series x (1 + kx/2 + (kx)^2/6).
        let x = 0.8;
        for k in [-1e-6, -1e-9, -1e-12, 0.0, 1e-12, 1e-9, 1e-8, 1e-6] {
            let kx: f64 = k * x;
            let series = x * (1.0 + kx / 2.0 + kx * kx / 6.0);
            let v: f64 = expm1_over(k, x);
            assert!((v - series).abs() < 1e-13 * x, "k {k}: {v} vs {series}");
        }
    }

    #[test]
    fn arterial_window_tends_to_a_box() {
        let s = Timing { pld: 0.0, tau: 2.0 };
        // t = 2.0: inside [0.5, 2.5], 5 SD from the nearer edge.
        let inside = arterial(LabelingScheme::Pcasl, 0.01, 0.5, s, &P);
        let expect = 2.0 * P.alpha / P.lambda * 0.01 * (-0.5f64 / P.t1_blood).exp();
        assert!((inside - expect).abs() < 1e-5 * expect, "{inside} vs {expect}");
        let after = arterial(
            LabelingScheme::Pcasl,
            0.01,
            0.1,
            Timing { pld: 1.0, tau: 0.5 },
            &P,
        );
        assert!(after.abs() < 1e-12);
    }

    #[test]
    fn dual_derivatives_of_the_models_match_differences() {
        for scheme in [LabelingScheme::Pcasl, LabelingScheme::Pasl] {
            for pld in [0.3, 1.0, 2.5] {
                let s = Timing { pld, tau: 1.2 };
                let x = [55.0, 0.9, 0.012, 0.6];
                let f = |x: [f64; 4]| tissue(scheme, x[0], x[1], s, &P) + arterial(scheme, x[2], x[3], s, &P);
                let d: [Dual<4>; 4] = std::array::from_fn(|j| Dual::var(x[j], j));
                let g = tissue(scheme, d[0], d[1], s, &P) + arterial(scheme, d[2], d[3], s, &P);
                for j in 0..4 {
                    let h = 1e-6 * x[j].abs();
                    let (mut a, mut b) = (x, x);
                    a[j] += h;
                    b[j] -= h;
                    let num = (f(a) - f(b)) / (2.0 * h);
                    assert!(
                        (g.d[j] - num).abs() <= 1e-6 * num.abs().max(1e-6),
                        "{scheme:?} pld {pld} param {j}: {} vs {num}",
                        g.d[j]
                    );
                }
            }
        }
    }
}
