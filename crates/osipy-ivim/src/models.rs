//! IVIM signal models (Le Bihan et al., Radiology 1988), b in s/mm^2,
//! diffusivities in mm^2/s.
//!
//! * bi-exponential (S0, f, D, Dstar; Le Bihan et al. 1988, Eq. 4):
//!   $$S(b) = S_0 \left[(1-f)\, e^{-bD} + f\, e^{-bD^*}\right]$$
//! * simplified (S0, f, D): $S(0) = S_0$ and, perfusion fully decayed above b = 0,
//!   $$S(b) = S_0 (1-f)\, e^{-bD}$$
//! * mono-exponential (S0, ADC): $$S(b) = S_0\, e^{-b \cdot ADC}$$

use osipy_core::{OsipyError, Result, Unit};
use osipy_fitting::{Lanes, Model, ParamSpec, LANES};

const MM2: Unit = Unit::Mm2PerSecond;

/// Default bounds (OSIPI IVIM task force test bounds, S0 open).
pub const BIEXP_BOUNDS: [(f64, f64); 4] = [(0.0, f64::INFINITY), (0.0, 1.0), (0.0, 0.005), (0.005, 0.2)];

/// S0, f, D, D* with [`BIEXP_BOUNDS`].
const BIEXP: [ParamSpec; 4] = [
    ParamSpec::new("S0", "S_0", Unit::Arbitrary, BIEXP_BOUNDS[0]),
    ParamSpec::new("f", "f", Unit::Dimensionless, BIEXP_BOUNDS[1]),
    ParamSpec::new("D", "D", MM2, BIEXP_BOUNDS[2]),
    ParamSpec::new("Dstar", "D*", MM2, BIEXP_BOUNDS[3]),
];

const MONO: [ParamSpec; 2] = [
    ParamSpec::new("S0", "S_0", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("ADC", "ADC", MM2, (0.0, 0.01)),
];

/// The CUDA C of the three models (see `models.cu`).
const MODELS_GPU: &str = include_str!("models.cu");

/// A GPU kernel of one of the models in `models.cu`, on b-values `b`.
fn gpu(
    key: &'static str,
    source: &'static [&'static str],
    b: &[f64],
) -> Option<osipy_fitting::gpu::GpuKernel> {
    Some(osipy_fitting::gpu::GpuKernel {
        key,
        source,
        consts: b.to_vec(),
    })
}

fn check_b(b: &[f64]) -> Result<()> {
    if b.is_empty() {
        return Err(OsipyError::data(
            "b-values",
            "none",
            "one b-value (s/mm^2) per volume",
        ));
    }
    if let Some(x) = b.iter().find(|x| !(**x >= 0.0 && x.is_finite())) {
        return Err(OsipyError::data(
            "b-value",
            x.to_string(),
            "finite, non-negative values in s/mm^2",
        ));
    }
    Ok(())
}

/// Bi-exponential IVIM model bound to its b-values.
#[derive(Debug, Clone)]
pub struct Biexponential {
    b: Vec<f64>,
}

impl Biexponential {
    /// Binds b-values (s/mm^2).
    pub fn new(b: &[f64]) -> Result<Self> {
        check_b(b)?;
        Ok(Biexponential { b: b.to_vec() })
    }
}

impl Model for Biexponential {
    fn name(&self) -> &str {
        "biexponential"
    }
    fn params(&self) -> &[ParamSpec] {
        &BIEXP
    }
    fn n_samples(&self) -> usize {
        self.b.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, b) in out.iter_mut().zip(&self.b) {
            *o = p[0] * ((1.0 - p[1]) * (-b * p[2]).exp() + p[1] * (-b * p[3]).exp());
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (js0, rest) = jac.split_at_mut(n);
        let (jf, rest) = rest.split_at_mut(n);
        let (jd, jds) = rest.split_at_mut(n);
        for i in 0..n {
            let b = self.b[i];
            let (e1, e2) = ((-b * p[2]).exp(), (-b * p[3]).exp());
            let shape = (1.0 - p[1]) * e1 + p[1] * e2;
            out[i] = p[0] * shape;
            js0[i] = shape;
            jf[i] = p[0] * (e2 - e1);
            jd[i] = -p[0] * (1.0 - p[1]) * b * e1;
            jds[i] = -p[0] * p[1] * b * e2;
        }
        true
    }
    fn has_lanes(&self) -> bool {
        true
    }
    /// Lockstep form of `predict_with_jacobian`, lane by lane the same
    /// arithmetic.
    fn predict_with_jacobian_lanes(
        &self,
        p: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        _: &mut [Lanes],
    ) {
        let n = out.len();
        let (js0, rest) = jac.split_at_mut(n);
        let (jf, rest) = rest.split_at_mut(n);
        let (jd, jds) = rest.split_at_mut(n);
        osipy_backend::simd::wide(
            #[inline(always)]
            || {
                for i in 0..n {
                    let b = self.b[i];
                    for l in 0..LANES {
                        let (e1, e2) = ((-b * p[2][l]).exp(), (-b * p[3][l]).exp());
                        let shape = (1.0 - p[1][l]) * e1 + p[1][l] * e2;
                        out[i][l] = p[0][l] * shape;
                        js0[i][l] = shape;
                        jf[i][l] = p[0][l] * (e2 - e1);
                        jd[i][l] = -p[0][l] * (1.0 - p[1][l]) * b * e1;
                        jds[i][l] = -p[0][l] * p[1][l] * b * e2;
                    }
                }
            },
        )
    }
    /// Segmented-style start: mono-exponential on b >= 200 for D and the
    /// intercept, f from the intercept, D* = 10 D clamped.
    fn initial_guess(&self, s: &[f64], out: &mut [f64]) {
        let s0 = s
            .iter()
            .zip(&self.b)
            .filter(|(_, b)| **b == 0.0)
            .map(|(v, _)| *v)
            .next()
            .unwrap_or(s[0]);
        let (icpt, d) = log_line(&self.b, s, |b| b >= 200.0).unwrap_or((s0, 1e-3));
        let f = if s0 > 0.0 {
            (1.0 - icpt / s0).clamp(0.0, 1.0)
        } else {
            0.1
        };
        out.copy_from_slice(&[s0, f, d.clamp(0.0, 0.005), (10.0 * d).clamp(0.005, 0.2)]);
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        gpu(
            "ivim_biexponential",
            &["#define OSIPY_IVIM_BIEXPONENTIAL", MODELS_GPU],
            &self.b,
        )
    }
}

/// Weighted log-linear fit `ln S = ln A - b D` over the samples whose b passes
/// `keep` (weights S^2); returns (A, D).
pub(crate) fn log_line(b: &[f64], s: &[f64], keep: impl Fn(f64) -> bool) -> Option<(f64, f64)> {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (bi, si) in b.iter().zip(s) {
        if keep(*bi) && *si > 0.0 {
            let (x, y, w) = (*bi, si.ln(), si * si);
            sw += w;
            sx += w * x;
            sy += w * y;
            sxx += w * x * x;
            sxy += w * x * y;
        }
    }
    let det = sw * sxx - sx * sx;
    if !(det.abs() > 0.0) {
        return None;
    }
    let slope = (sw * sxy - sx * sy) / det;
    Some((((sy - slope * sx) / sw).exp(), -slope))
}

/// Simplified IVIM model (no D*).
#[derive(Debug, Clone)]
pub struct Simplified {
    b: Vec<f64>,
}

impl Simplified {
    /// Binds b-values (s/mm^2); meaningful for b = 0 and b above the threshold.
    pub fn new(b: &[f64]) -> Result<Self> {
        check_b(b)?;
        Ok(Simplified { b: b.to_vec() })
    }
}

impl Model for Simplified {
    fn name(&self) -> &str {
        "simplified"
    }
    fn params(&self) -> &[ParamSpec] {
        &BIEXP[..3]
    }
    fn n_samples(&self) -> usize {
        self.b.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, b) in out.iter_mut().zip(&self.b) {
            *o = if *b == 0.0 {
                p[0]
            } else {
                p[0] * (1.0 - p[1]) * (-b * p[2]).exp()
            };
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (js0, rest) = jac.split_at_mut(n);
        let (jf, jd) = rest.split_at_mut(n);
        for i in 0..n {
            let b = self.b[i];
            if b == 0.0 {
                (out[i], js0[i], jf[i], jd[i]) = (p[0], 1.0, 0.0, 0.0);
            } else {
                let e = (-b * p[2]).exp();
                out[i] = p[0] * (1.0 - p[1]) * e;
                js0[i] = (1.0 - p[1]) * e;
                jf[i] = -p[0] * e;
                jd[i] = -b * out[i];
            }
        }
        true
    }
    fn initial_guess(&self, s: &[f64], out: &mut [f64]) {
        let s0 = s
            .iter()
            .zip(&self.b)
            .filter(|(_, b)| **b == 0.0)
            .map(|(v, _)| *v)
            .next()
            .unwrap_or(s[0]);
        let (icpt, d) = log_line(&self.b, s, |b| b > 0.0).unwrap_or((s0, 1e-3));
        out.copy_from_slice(&[
            s0,
            if s0 > 0.0 {
                (1.0 - icpt / s0).clamp(0.0, 1.0)
            } else {
                0.1
            },
            d.clamp(0.0, 0.005),
        ]);
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        gpu(
            "ivim_simplified",
            &["#define OSIPY_IVIM_SIMPLIFIED", MODELS_GPU],
            &self.b,
        )
    }
}

/// Mono-exponential (ADC) model.
#[derive(Debug, Clone)]
pub struct MonoExponentialAdc {
    b: Vec<f64>,
}

impl MonoExponentialAdc {
    /// Binds b-values (s/mm^2).
    pub fn new(b: &[f64]) -> Result<Self> {
        check_b(b)?;
        Ok(MonoExponentialAdc { b: b.to_vec() })
    }
}

impl Model for MonoExponentialAdc {
    fn name(&self) -> &str {
        "mono_exponential"
    }
    fn params(&self) -> &[ParamSpec] {
        &MONO
    }
    fn n_samples(&self) -> usize {
        self.b.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, b) in out.iter_mut().zip(&self.b) {
            *o = p[0] * (-b * p[1]).exp();
        }
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = out.len();
        let (js0, jd) = jac.split_at_mut(n);
        for i in 0..n {
            let e = (-self.b[i] * p[1]).exp();
            out[i] = p[0] * e;
            js0[i] = e;
            jd[i] = -self.b[i] * out[i];
        }
        true
    }
    fn initial_guess(&self, s: &[f64], out: &mut [f64]) {
        let (a, d) = log_line(&self.b, s, |_| true).unwrap_or((s[0], 1e-3));
        out.copy_from_slice(&[a, d.clamp(0.0, 0.01)]);
    }
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        gpu(
            "ivim_mono_exponential",
            &["#define OSIPY_IVIM_MONO_EXPONENTIAL", MODELS_GPU],
            &self.b,
        )
    }
}

/// Builds the IVIM model called `name`; the error lists the names.
pub fn model(name: &str, b: &[f64]) -> Result<Box<dyn Model>> {
    match name {
        "biexponential" => Ok(Box::new(Biexponential::new(b)?)),
        "simplified" => Ok(Box::new(Simplified::new(b)?)),
        "mono_exponential" => Ok(Box::new(MonoExponentialAdc::new(b)?)),
        other => Err(OsipyError::UnknownName {
            kind: "IVIM model".into(),
            name: other.into(),
            valid: MODEL_NAMES.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// Names of the IVIM models.
pub const MODEL_NAMES: [&str; 3] = ["biexponential", "mono_exponential", "simplified"];
