//! Pharmacokinetic models with OSIPI CAPLEX names and units.
//!
//! Time is in seconds; `Ktrans` and `PS` are in 1/min, `Fp` in ml/100ml/min,
//! `ve` and `vp` are fractions. The plasma AIF `cp` is convolved exactly
//! (recursive exponential convolution, exact for a piecewise-linear AIF;
//! Flouri et al. MRM 2016): no rectangle rule.
//!
//! | model | parameters | equation |
//! |---|---|---|
//! | `tofts` | Ktrans, ve | `C = Ktrans cp * e^{-kep t}`, `kep = Ktrans/ve` (Tofts et al., JMRI 1999) |
//! | `extended_tofts` | Ktrans, ve, vp | `C = vp cp + Ktrans cp * e^{-kep t}` |
//! | `patlak` | Ktrans, vp | `C = vp cp + Ktrans int cp` (Patlak et al., JCBFM 1983) |
//! | `2cum` | Fp, PS, vp | `C = Fp [(1-E) cp * e^{-t/Tp} + E int cp]`, `E = PS/(Fp+PS)`, `Tp = vp/(Fp+PS)` (Sourbron & Buckley, NMR Biomed 2013) |
//! | `2cxm` | Fp, PS, ve, vp | bi-exponential impulse response of the two-compartment exchange model (Sourbron & Buckley 2011, 2013) |
//!
//! Initial guesses are linear least squares on integrated forms of each
//! model's differential equation (Murase, MRM 2004; Flouri et al. 2016).

use crate::lls::Normal;
use osipy_convolution::{check_grid, exp_conv, exp_conv_with_derivative};
use osipy_core::{OsipyError, Result, Unit};
use osipy_fitting::Model;

/// 1/min to 1/s.
const PER_MIN: f64 = 1.0 / 60.0;
/// ml/100ml/min to ml/ml/s.
const FLOW: f64 = 1.0 / 6000.0;

/// The fixed inputs of every PK model: frame times (s) and the plasma AIF (mM)
/// sampled at those times.
#[derive(Debug, Clone, PartialEq)]
pub struct PkInput {
    t: Vec<f64>,
    cp: Vec<f64>,
}

impl PkInput {
    /// Checks and binds times (s, strictly increasing) and plasma AIF (mM).
    pub fn new(time: &[f64], cp: &[f64]) -> Result<PkInput> {
        check_grid(time, "plasma AIF", cp)?;
        Ok(PkInput {
            t: time.to_vec(),
            cp: cp.to_vec(),
        })
    }

    /// Frame times (s).
    pub fn time(&self) -> &[f64] {
        &self.t
    }

    /// Plasma AIF (mM).
    pub fn cp(&self) -> &[f64] {
        &self.cp
    }

    /// Streams running trapezoid integrals for the linearised initial
    /// guesses: calls `f(i, cp_i, C_i, int cp, int int cp, int C, int int C)`
    /// for i >= 1 (units: mM and s).
    fn integrals(&self, c: &[f64], mut f: impl FnMut([f64; 6])) {
        let (mut icp, mut iicp, mut ic, mut iic) = (0.0, 0.0, 0.0, 0.0);
        for i in 1..self.t.len() {
            let dt = self.t[i] - self.t[i - 1];
            let (icp0, ic0) = (icp, ic);
            icp += 0.5 * dt * (self.cp[i] + self.cp[i - 1]);
            ic += 0.5 * dt * (c[i] + c[i - 1]);
            iicp += 0.5 * dt * (icp + icp0);
            iic += 0.5 * dt * (ic + ic0);
            f([self.cp[i], c[i], icp, iicp, ic, iic]);
        }
    }
}

macro_rules! model_meta {
    ($name:literal, $names:expr, $units:expr, $bounds:expr) => {
        fn name(&self) -> &str {
            $name
        }
        fn param_names(&self) -> &[&'static str] {
            &$names
        }
        fn param_units(&self) -> &[Unit] {
            &$units
        }
        fn default_bounds(&self) -> &[(f64, f64)] {
            &$bounds
        }
        fn n_samples(&self) -> usize {
            self.0.t.len()
        }
    };
}

/// Standard Tofts model.
#[derive(Debug, Clone)]
pub struct Tofts(pub PkInput);

const TOFTS_NAMES: [&str; 2] = ["Ktrans", "ve"];
const TOFTS_UNITS: [Unit; 2] = [Unit::PerMinute, Unit::Dimensionless];
const TOFTS_BOUNDS: [(f64, f64); 2] = [(0.0, 5.0), (1e-3, 1.0)];

/// Fills Tofts prediction and (Ktrans, ve) Jacobian columns; returns nothing
/// else. `dk`, `dve` are the two columns.
fn tofts_core(inp: &PkInput, ktrans: f64, ve: f64, out: &mut [f64], dk: &mut [f64], dve: &mut [f64]) {
    let k = ktrans * PER_MIN;
    let kep = k / ve;
    exp_conv_with_derivative(&inp.t, &inp.cp, kep, out, dve);
    for i in 0..out.len() {
        let (conv, dconv) = (out[i], dve[i]);
        out[i] = k * conv;
        // Through kep = K / ve: dC/dK = conv + K dconv / ve, dC/dve = -K dconv kep / ve.
        dk[i] = (conv + k * dconv / ve) * PER_MIN;
        dve[i] = -k * dconv * kep / ve;
    }
}

impl Model for Tofts {
    model_meta!("tofts", TOFTS_NAMES, TOFTS_UNITS, TOFTS_BOUNDS);
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        let k = p[0] * PER_MIN;
        exp_conv(&self.0.t, &self.0.cp, k / p[1], out);
        out.iter_mut().for_each(|o| *o *= k);
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let (dk, dve) = jac.split_at_mut(out.len());
        tofts_core(&self.0, p[0], p[1], out, dk, dve);
        true
    }
    /// `C = K int cp - kep int C` (Murase 2004).
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        let mut n = Normal::<2>::new();
        self.0
            .integrals(c, |[_, ci, icp, _, ic, _]| n.add([icp, -ic], ci));
        let (k, kep) = n.solve().map(|x| (x[0], x[1])).unwrap_or((0.0, 0.0));
        out[0] = (k / PER_MIN).max(1e-3);
        out[1] = if kep > 0.0 && k > 0.0 { k / kep } else { 0.3 };
    }
}

/// Extended Tofts model.
#[derive(Debug, Clone)]
pub struct ExtendedTofts(pub PkInput);

const ETOFTS_NAMES: [&str; 3] = ["Ktrans", "ve", "vp"];
const ETOFTS_UNITS: [Unit; 3] = [Unit::PerMinute, Unit::Dimensionless, Unit::Dimensionless];
const ETOFTS_BOUNDS: [(f64, f64); 3] = [(0.0, 5.0), (1e-3, 1.0), (0.0, 1.0)];

impl Model for ExtendedTofts {
    model_meta!("extended_tofts", ETOFTS_NAMES, ETOFTS_UNITS, ETOFTS_BOUNDS);
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        let k = p[0] * PER_MIN;
        exp_conv(&self.0.t, &self.0.cp, k / p[1], out);
        for (o, cp) in out.iter_mut().zip(&self.0.cp) {
            *o = k * *o + p[2] * cp;
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (dk, rest) = jac.split_at_mut(n);
        let (dve, dvp) = rest.split_at_mut(n);
        tofts_core(&self.0, p[0], p[1], out, dk, dve);
        for (o, cp) in out.iter_mut().zip(&self.0.cp) {
            *o += p[2] * cp;
        }
        dvp.copy_from_slice(&self.0.cp);
        true
    }
    /// `C = vp cp + (K + kep vp) int cp - kep int C`.
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        let mut n = Normal::<3>::new();
        self.0
            .integrals(c, |[cp, ci, icp, _, ic, _]| n.add([cp, icp, -ic], ci));
        match n.solve() {
            Some([vp, k1, kep]) if kep > 0.0 => {
                let k = k1 - kep * vp;
                out[0] = (k / PER_MIN).max(1e-3);
                out[1] = if k > 0.0 { k / kep } else { 0.3 };
                out[2] = vp.max(0.0);
            }
            _ => out.copy_from_slice(&[0.1, 0.3, 0.02]),
        }
    }
}

/// Patlak model.
#[derive(Debug, Clone)]
pub struct Patlak(pub PkInput);

const PATLAK_NAMES: [&str; 2] = ["Ktrans", "vp"];
const PATLAK_UNITS: [Unit; 2] = [Unit::PerMinute, Unit::Dimensionless];
const PATLAK_BOUNDS: [(f64, f64); 2] = [(0.0, 5.0), (0.0, 1.0)];

impl Model for Patlak {
    model_meta!("patlak", PATLAK_NAMES, PATLAK_UNITS, PATLAK_BOUNDS);
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        // int cp is the zero-rate exponential convolution (exact trapezoid).
        exp_conv(&self.0.t, &self.0.cp, 0.0, out);
        for (o, cp) in out.iter_mut().zip(&self.0.cp) {
            *o = p[0] * PER_MIN * *o + p[1] * cp;
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (dk, dvp) = jac.split_at_mut(n);
        exp_conv(&self.0.t, &self.0.cp, 0.0, dk);
        for i in 0..n {
            out[i] = p[0] * PER_MIN * dk[i] + p[1] * self.0.cp[i];
            dk[i] *= PER_MIN;
            dvp[i] = self.0.cp[i];
        }
        true
    }
    /// Patlak is linear: the least-squares solution is exact.
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        let mut n = Normal::<2>::new();
        self.0.integrals(c, |[cp, ci, icp, _, _, _]| n.add([icp, cp], ci));
        let [k, vp] = n.solve().unwrap_or([0.0, 0.0]);
        out[0] = k / PER_MIN;
        out[1] = vp;
    }
}

/// Two-compartment uptake model.
#[derive(Debug, Clone)]
pub struct TwoCompartmentUptake(pub PkInput);

const TCUM_NAMES: [&str; 3] = ["Fp", "PS", "vp"];
const TCUM_UNITS: [Unit; 3] = [Unit::Ml100mlMin, Unit::PerMinute, Unit::Dimensionless];
const TCUM_BOUNDS: [(f64, f64); 3] = [(1e-3, 200.0), (0.0, 5.0), (1e-4, 1.0)];

impl Model for TwoCompartmentUptake {
    model_meta!("2cum", TCUM_NAMES, TCUM_UNITS, TCUM_BOUNDS);
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        let (f, ps, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2]);
        let s = f + ps;
        exp_conv(&self.0.t, &self.0.cp, s / vp, out);
        // Running integral of cp without a buffer: trapezoid alongside.
        let mut icp = 0.0;
        for i in 0..out.len() {
            if i > 0 {
                icp += 0.5 * (self.0.t[i] - self.0.t[i - 1]) * (self.0.cp[i] + self.0.cp[i - 1]);
            }
            out[i] = f * f / s * out[i] + f * ps / s * icp;
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (f, ps, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2]);
        let s = f + ps;
        let (a, b) = (f * f / s, f * ps / s);
        let (df, rest) = jac.split_at_mut(n);
        let (dps, dvp) = rest.split_at_mut(n);
        // E in out, dE/dk in dvp (scratch until the end).
        exp_conv_with_derivative(&self.0.t, &self.0.cp, s / vp, out, dvp);
        let mut icp = 0.0;
        for i in 0..n {
            if i > 0 {
                icp += 0.5 * (self.0.t[i] - self.0.t[i - 1]) * (self.0.cp[i] + self.0.cp[i - 1]);
            }
            let (e, d) = (out[i], dvp[i]);
            out[i] = a * e + b * icp;
            // a = F^2/S, b = F P/S, k = S/vp (derivatives by hand).
            df[i] = (f * (f + 2.0 * ps) / (s * s) * e + a * d / vp + ps * ps / (s * s) * icp) * FLOW;
            dps[i] = (-(f * f) / (s * s) * e + a * d / vp + f * f / (s * s) * icp) * PER_MIN;
            dvp[i] = -a * d * s / (vp * vp);
        }
        true
    }
    /// `C = -s int C + F int ca + q int int ca`, `s = (F+P)/vp`, `q = F P / vp`.
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        let mut n = Normal::<3>::new();
        self.0
            .integrals(c, |[_, ci, icp, iicp, ic, _]| n.add([-ic, icp, iicp], ci));
        match n.solve() {
            Some([s, f, q]) if f > 0.0 && s > q / f => {
                let vp = f / (s - q / f);
                out[0] = f / FLOW;
                out[1] = (q * vp / f).max(0.0) / PER_MIN;
                out[2] = vp;
            }
            _ => out.copy_from_slice(&[20.0, 0.01, 0.05]),
        }
    }
}

/// Two-compartment exchange model.
#[derive(Debug, Clone)]
pub struct TwoCompartmentExchange(pub PkInput);

const TCXM_NAMES: [&str; 4] = ["Fp", "PS", "ve", "vp"];
const TCXM_UNITS: [Unit; 4] = [
    Unit::Ml100mlMin,
    Unit::PerMinute,
    Unit::Dimensionless,
    Unit::Dimensionless,
];
const TCXM_BOUNDS: [(f64, f64); 4] = [(1e-3, 200.0), (0.0, 5.0), (1e-4, 1.0), (1e-4, 1.0)];

impl TwoCompartmentExchange {
    /// Impulse response `A1 e^{-alpha t} + A2 e^{-beta t}` of the 2CXM, from
    /// the eigenvalues of its compartment matrix: `alpha, beta` are the roots
    /// of `x^2 - s x + p` with `s = (F+P)/vp + P/ve`, `p = F P / (vp ve)`, and
    /// `h(0) = F`, `h'(0) = -F^2/vp` fix the amplitudes.
    fn irf(p: &[f64]) -> (f64, f64, f64, f64) {
        let (f, ps, ve, vp) = (p[0] * FLOW, p[1] * PER_MIN, p[2], p[3]);
        let s = (f + ps) / vp + ps / ve;
        let q = f * ps / (vp * ve);
        let disc = (s * s - 4.0 * q).max(0.0).sqrt();
        let alpha = 0.5 * (s + disc);
        // beta = q / alpha avoids cancellation when q is small.
        let beta = if alpha > 0.0 { q / alpha } else { 0.0 };
        let a1 = if alpha > beta {
            f * (f / vp - beta) / (alpha - beta)
        } else {
            f
        };
        (a1, alpha, f - a1, beta)
    }
}

impl Model for TwoCompartmentExchange {
    model_meta!("2cxm", TCXM_NAMES, TCXM_UNITS, TCXM_BOUNDS);
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        let (a1, alpha, a2, beta) = Self::irf(p);
        // Two passes of the recursion into one buffer: C = A1 E(alpha) + A2 E(beta),
        // accumulated sample by sample with two running states.
        let (t, cp) = (&self.0.t, &self.0.cp);
        out[0] = 0.0;
        let (mut c1, mut c2) = (0.0, 0.0);
        let mut e1 = [0.0; 2];
        let mut e2 = [0.0; 2];
        for i in 0..t.len() - 1 {
            let seg_t = [t[i], t[i + 1]];
            let seg_c = [cp[i], cp[i + 1]];
            e1[0] = c1;
            e2[0] = c2;
            step(&seg_t, &seg_c, alpha, &mut e1);
            step(&seg_t, &seg_c, beta, &mut e2);
            c1 = e1[1];
            c2 = e2[1];
            out[i + 1] = a1 * c1 + a2 * c2;
        }
    }
    /// `C = -s int C - p int int C + F int ca + q int int ca` (Flouri et al. 2016).
    fn initial_guess(&self, c: &[f64], out: &mut [f64]) {
        let mut n = Normal::<4>::new();
        self.0
            .integrals(c, |[_, ci, icp, iicp, ic, iic]| n.add([-ic, -iic, icp, iicp], ci));
        let guess = n.solve().and_then(|[s, p, f, q]| {
            let vp = f * f / (s * f - q);
            let r = p * vp / f; // PS / ve
            let ps = vp * (s - r) - f;
            let ve = ps / r;
            (f > 0.0 && vp > 0.0 && ps > 0.0 && ve > 0.0).then_some([
                f / FLOW,
                ps / PER_MIN,
                ve.min(1.0),
                vp.min(1.0),
            ])
        });
        out.copy_from_slice(&guess.unwrap_or([20.0, 0.1, 0.2, 0.05]));
    }
}

/// One step of the exponential-convolution recursion over `[t0, t1]` with the
/// state in `e[0]`, result in `e[1]` (shares the kernels of `exp_conv`).
fn step(t: &[f64; 2], c: &[f64; 2], k: f64, e: &mut [f64; 2]) {
    let mut buf = [0.0; 2];
    exp_conv(t, c, k, &mut buf);
    e[1] = (-k * (t[1] - t[0])).exp() * e[0] + buf[1];
}

/// A DCE model factory as stored in the registry.
pub type DceModelFactory = fn(PkInput) -> Box<dyn Model>;

/// (name, description, factory) of every DCE model.
pub(crate) const MODELS: [(&str, &str, DceModelFactory); 5] = [
    ("tofts", "standard Tofts (Ktrans, ve)", |i| Box::new(Tofts(i))),
    ("extended_tofts", "extended Tofts (Ktrans, ve, vp)", |i| {
        Box::new(ExtendedTofts(i))
    }),
    ("patlak", "Patlak (Ktrans, vp)", |i| Box::new(Patlak(i))),
    ("2cxm", "two-compartment exchange (Fp, PS, ve, vp)", |i| {
        Box::new(TwoCompartmentExchange(i))
    }),
    ("2cum", "two-compartment uptake (Fp, PS, vp)", |i| {
        Box::new(TwoCompartmentUptake(i))
    }),
];

/// Builds the model called `name` bound to `input`; the error lists the names.
pub fn model(name: &str, input: PkInput) -> Result<Box<dyn Model>> {
    MODELS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, f)| f(input))
        .ok_or_else(|| OsipyError::UnknownName {
            kind: "DCE model".into(),
            name: name.into(),
            valid: MODELS.iter().map(|(n, _, _)| n.to_string()).collect(),
        })
}
