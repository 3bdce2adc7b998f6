//! Generic exponential-decay models, used for tests, benchmarks and as the
//! simplest examples of the [`Model`] trait. Modality crates bring their own.

use crate::model::{Lanes, Model, ParamSpec, LANES};
use osipy_core::Unit;

/// Mono-exponential decay `S(t) = S0 * exp(-k t)`.
///
/// Parameters: `S0` (signal units), `k` (1/time unit of the sample points).
#[derive(Debug, Clone)]
pub struct MonoExponential {
    t: Vec<f64>,
}

impl MonoExponential {
    /// Binds the model to its sample points.
    pub fn new(t: &[f64]) -> Self {
        MonoExponential { t: t.to_vec() }
    }
}

const MONO: [ParamSpec; 2] = [
    ParamSpec::new("S0", "S_0", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("k", "k", Unit::PerSecond, (0.0, f64::INFINITY)),
];

/// Least-squares line through (x_i, y_i) weighted by w_i; returns (slope, intercept).
fn weighted_line(x: impl Iterator<Item = (f64, f64, f64)>) -> Option<(f64, f64)> {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (xi, yi, wi) in x {
        sw += wi;
        sx += wi * xi;
        sy += wi * yi;
        sxx += wi * xi * xi;
        sxy += wi * xi * yi;
    }
    let det = sw * sxx - sx * sx;
    if !(det.abs() > 0.0) || sw <= 0.0 {
        return None;
    }
    let slope = (sw * sxy - sx * sy) / det;
    Some((slope, (sy - slope * sx) / sw))
}

/// [`MonoExponential::predict_with_jacobian`] in CUDA C (`c`: the times).
const MONO_GPU: &str = r#"
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double e = exp(-x[1] * c[i]);
        pred[i] = x[0] * e;
        jac[i] = e;
        jac[OSIPY_N + i] = -c[i] * pred[i];
    }
}
"#;

/// [`BiExponential`]'s prediction and Jacobian in CUDA C (`c`: the times).
const BI_GPU: &str = r#"
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double t = c[i];
        double e1 = exp(-x[1] * t);
        double e2 = exp(-x[3] * t);
        pred[i] = x[0] * e1 + x[2] * e2;
        jac[i] = e1;
        jac[OSIPY_N + i] = -x[0] * t * e1;
        jac[2 * OSIPY_N + i] = e2;
        jac[3 * OSIPY_N + i] = -x[2] * t * e2;
    }
}
"#;

impl Model for MonoExponential {
    fn name(&self) -> &str {
        "mono_exponential"
    }
    fn params(&self) -> &[ParamSpec] {
        &MONO
    }
    fn n_samples(&self) -> usize {
        self.t.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, t) in out.iter_mut().zip(&self.t) {
            *o = p[0] * (-p[1] * t).exp();
        }
    }
    fn jacobian(&self, p: &[f64], jac: &mut [f64]) -> bool {
        let n = self.t.len();
        let (d0, d1) = jac.split_at_mut(n);
        for i in 0..n {
            let e = (-p[1] * self.t[i]).exp();
            d0[i] = e;
            d1[i] = -p[0] * self.t[i] * e;
        }
        true
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        let n = self.t.len();
        let (d0, d1) = jac.split_at_mut(n);
        for i in 0..n {
            let e = (-p[1] * self.t[i]).exp();
            out[i] = p[0] * e;
            d0[i] = e;
            d1[i] = -self.t[i] * out[i];
        }
        true
    }
    /// Log-linear least squares on the positive samples, weighted by y^2 so
    /// that noisy low samples count less (the variance of log y is ~ 1/y^2).
    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let fit = weighted_line(
            self.t
                .iter()
                .zip(data)
                .filter(|(_, y)| **y > 0.0)
                .map(|(t, y)| (*t, y.ln(), y * y)),
        );
        match fit {
            Some((slope, icpt)) => {
                out[0] = icpt.exp();
                out[1] = -slope;
            }
            None => {
                out[0] = data.iter().cloned().fold(0.0, f64::max);
                out[1] = 0.0;
            }
        }
    }
    fn gpu_kernel(&self) -> Option<crate::gpu::GpuKernel> {
        Some(crate::gpu::GpuKernel {
            key: "mono_exponential",
            source: &[MONO_GPU],
            consts: self.t.clone(),
        })
    }
}

/// Bi-exponential decay `S(t) = A1 exp(-k1 t) + A2 exp(-k2 t)` with
/// `k1 >= 0`, `k2 >= 0`. Which component is fast is decided by the initial
/// guess (component 1 starts as the fast one).
#[derive(Debug, Clone)]
pub struct BiExponential {
    t: Vec<f64>,
}

impl BiExponential {
    /// Binds the model to its sample points.
    pub fn new(t: &[f64]) -> Self {
        BiExponential { t: t.to_vec() }
    }
}

const BI: [ParamSpec; 4] = [
    ParamSpec::new("A1", "A_1", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("k1", "k_1", Unit::PerSecond, (0.0, f64::INFINITY)),
    ParamSpec::new("A2", "A_2", Unit::Arbitrary, (0.0, f64::INFINITY)),
    ParamSpec::new("k2", "k_2", Unit::PerSecond, (0.0, f64::INFINITY)),
];

impl Model for BiExponential {
    fn name(&self) -> &str {
        "bi_exponential"
    }
    fn params(&self) -> &[ParamSpec] {
        &BI
    }
    fn n_samples(&self) -> usize {
        self.t.len()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        for (o, t) in out.iter_mut().zip(&self.t) {
            *o = p[0] * (-p[1] * t).exp() + p[2] * (-p[3] * t).exp();
        }
    }
    fn jacobian(&self, p: &[f64], jac: &mut [f64]) -> bool {
        self.fill(p, &mut [], jac, false);
        true
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        self.fill(p, out, jac, true);
        true
    }
    /// Curve peeling: a log-linear fit of the later half gives the slow
    /// component, a log-linear fit of what remains early gives the fast one.
    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let n = self.t.len();
        let half = n / 2;
        let slow = weighted_line(
            (half..n)
                .filter(|&i| data[i] > 0.0)
                .map(|i| (self.t[i], data[i].ln(), data[i] * data[i])),
        );
        let (k2, a2) = match slow {
            Some((s, c)) if -s >= 0.0 => (-s, c.exp()),
            _ => (0.0, data[n - 1].max(0.0)),
        };
        let fast = weighted_line((0..half).filter_map(|i| {
            let r = data[i] - a2 * (-k2 * self.t[i]).exp();
            (r > 0.0).then(|| (self.t[i], r.ln(), r * r))
        }));
        let (k1, a1) = match fast {
            Some((s, c)) if -s > k2 => (-s, c.exp()),
            _ => (4.0 * k2.max(1e-3), (data[0] - a2).abs()),
        };
        out.copy_from_slice(&[a1, k1, a2, k2]);
    }
    fn gpu_kernel(&self) -> Option<crate::gpu::GpuKernel> {
        Some(crate::gpu::GpuKernel {
            key: "bi_exponential",
            source: &[BI_GPU],
            consts: self.t.clone(),
        })
    }
    fn has_lanes(&self) -> bool {
        true
    }
    /// Lockstep form of `fill`, lane by lane the same arithmetic.
    fn predict_with_jacobian_lanes(
        &self,
        p: &[Lanes],
        out: &mut [Lanes],
        jac: &mut [Lanes],
        _: &mut [Lanes],
    ) {
        let n = self.t.len();
        let (c0, rest) = jac.split_at_mut(n);
        let (c1, rest) = rest.split_at_mut(n);
        let (c2, c3) = rest.split_at_mut(n);
        osipy_backend::simd::wide(
            #[inline(always)]
            || {
                for i in 0..n {
                    let t = self.t[i];
                    for l in 0..LANES {
                        let e1 = (-p[1][l] * t).exp();
                        let e2 = (-p[3][l] * t).exp();
                        out[i][l] = p[0][l] * e1 + p[2][l] * e2;
                        c0[i][l] = e1;
                        c1[i][l] = -p[0][l] * t * e1;
                        c2[i][l] = e2;
                        c3[i][l] = -p[2][l] * t * e2;
                    }
                }
            },
        )
    }
}

impl BiExponential {
    fn fill(&self, p: &[f64], out: &mut [f64], jac: &mut [f64], with_out: bool) {
        let n = self.t.len();
        let (c0, rest) = jac.split_at_mut(n);
        let (c1, rest) = rest.split_at_mut(n);
        let (c2, c3) = rest.split_at_mut(n);
        for i in 0..n {
            let t = self.t[i];
            let e1 = (-p[1] * t).exp();
            let e2 = (-p[3] * t).exp();
            if with_out {
                out[i] = p[0] * e1 + p[2] * e2;
            }
            c0[i] = e1;
            c1[i] = -p[0] * t * e1;
            c2[i] = e2;
            c3[i] = -p[2] * t * e2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check_jacobian;

    #[test]
    fn analytic_jacobians_match_finite_differences() {
        let t: Vec<f64> = (0..12).map(|i| i as f64 * 0.3).collect();
        // Central differences with h = 1e-6 relative are accurate to ~1e-9.
        assert!(check_jacobian(&MonoExponential::new(&t), &[100.0, 0.7]).unwrap() < 1e-7);
        assert!(check_jacobian(&BiExponential::new(&t), &[60.0, 3.0, 40.0, 0.2]).unwrap() < 1e-7);
        let mut out = vec![0.0; 12];
        let mut jac = vec![0.0; 48];
        let bi = BiExponential::new(&t);
        assert!(bi.predict_with_jacobian(&[60.0, 3.0, 40.0, 0.2], &mut out, &mut jac));
        // S(0) = A1 + A2.
        assert!((out[0] - 100.0).abs() < 1e-12);
    }

    #[test]
    fn log_linear_guess_is_exact_on_noise_free_data() {
        let t: Vec<f64> = (0..12).map(|i| i as f64 * 0.3).collect();
        let m = MonoExponential::new(&t);
        let mut y = vec![0.0; 12];
        m.predict(&[250.0, 0.45], &mut y);
        let mut g = [0.0; 2];
        m.initial_guess(&y, &mut g);
        assert!((g[0] - 250.0).abs() < 1e-9 && (g[1] - 0.45).abs() < 1e-12);
    }
}
