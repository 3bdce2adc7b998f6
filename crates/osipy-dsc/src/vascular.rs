//! Model-based DSC deconvolution (`vascular_model`): the tissue curve is
//! fitted as `C(t) = F (Ca * R)(t - delay)` on the shared LM engine, with
//! the residue `R` of a gamma distribution of transit times (shape `a`,
//! mean MTT; Østergaard et al., MRM 1999; Mouridsen et al., NeuroImage
//! 2006): `R(x) = 1 - P(a, a x / MTT)`, `P` the regularised lower incomplete
//! gamma function. Shape 1 is the exponential residue of a well-mixed
//! compartment.
//!
//! The AIF is taken as piecewise linear between its samples, so the
//! convolution is exact for that AIF: with `G` and `G2` the first and second
//! antiderivatives of `R` (closed form for integer `a`),
//!
//! `C(t_i) = F sum_k a_k [G2(x + dt) - 2 G2(x) + G2(x - dt)] / dt`,
//! `x = t_i - t_k - delay`,
//!
//! and the Jacobian is analytic: `dC/d delay` uses the second difference of
//! `G`, and `dC/d MTT` that of `(2 G2 - x G) / MTT` (the residue is a scale
//! family in MTT). Standard errors come from the fit's covariance.

use crate::deconv::{check_input, uniform_step, DeconvInput, DeconvSettings, Deconvolved, Fitted};
use osipy_backend::Device;
use osipy_core::{OsipyError, QualityCode, Result, Unit};
use osipy_fitting::{fit_batch, FitOptions, Model, ParamSpec};

/// Parameters: flow (the residue's height, 1/s in deltaR2\* units of the
/// AIF), mean transit time, delay of the tissue after the AIF.
const PARAMS: [ParamSpec; 3] = [
    ParamSpec::new("flow", "F", Unit::PerSecond, (0.0, f64::INFINITY)),
    ParamSpec::new("MTT", "MTT", Unit::Seconds, (0.3, 40.0)),
    ParamSpec::new("delay", "delay", Unit::Seconds, (-5.0, 15.0)),
];

/// Largest shape accepted (`pipeline.transit_shape`).
pub const MAX_SHAPE: u32 = 20;

/// The vascular model of one AIF.
#[derive(Debug, Clone)]
pub struct VascularModel {
    aif: Vec<f64>,
    dt: f64,
    shape: u32,
}

impl VascularModel {
    /// The model of `aif` sampled every `dt` seconds, transit times gamma
    /// distributed with integer `shape` (1 to [`MAX_SHAPE`]).
    pub fn new(aif: &[f64], dt: f64, shape: u32) -> Result<VascularModel> {
        if !(1..=MAX_SHAPE).contains(&shape) {
            return Err(OsipyError::metadata(
                "pipeline.transit_shape",
                shape,
                format!("a whole number from 1 (exponential residue) to {MAX_SHAPE}"),
            ));
        }
        if aif.len() < 4 || aif.iter().any(|a| !a.is_finite()) || !(dt > 0.0) {
            return Err(OsipyError::data(
                "AIF of the vascular model",
                format!("{} samples, step {dt} s", aif.len()),
                "at least 4 finite samples on a positive time step",
            ));
        }
        Ok(VascularModel {
            aif: aif.to_vec(),
            dt,
            shape,
        })
    }

    /// `(G(x), G2(x))`: first and second antiderivatives of the residue
    /// (zero for `x <= 0`), from `P(a, z) = 1 - e^-z sum_{k<a} z^k / k!`:
    /// `G = x Q_a + a theta P_{a+1}`,
    /// `G2 = x^2/2 Q_a + a theta x P_{a+1} - a (a+1) theta^2 / 2 P_{a+2}`,
    /// with `theta = MTT / a` and `Q = 1 - P`.
    fn antiderivatives(&self, theta: f64, x: f64) -> (f64, f64) {
        if x <= 0.0 {
            return (0.0, 0.0);
        }
        let z = x / theta;
        let e = (-z).exp();
        let (mut term, mut sum) = (1.0, 0.0);
        for k in 0..self.shape {
            sum += term;
            term *= z / f64::from(k + 1);
        }
        let q_a = e * sum;
        let sum1 = sum + term;
        let p_a1 = 1.0 - e * sum1;
        let p_a2 = 1.0 - e * (sum1 + term * z / f64::from(self.shape + 1));
        let a = f64::from(self.shape);
        let g = x * q_a + a * theta * p_a1;
        let g2 = 0.5 * x * x * q_a + a * theta * x * p_a1 - 0.5 * a * (a + 1.0) * theta * theta * p_a2;
        (g, g2)
    }

    /// Prediction, and with `jac` the Jacobian, using `scratch`
    /// (`scratch_len` values).
    fn evaluate(&self, p: &[f64], out: &mut [f64], jac: Option<&mut [f64]>, scratch: &mut [f64]) {
        let n = self.aif.len();
        let (flow, mtt, delay) = (p[0], p[1], p[2]);
        let theta = mtt / f64::from(self.shape);
        let m = 2 * n + 1;
        let (g2, rest) = scratch.split_at_mut(m);
        let (g, rest) = rest.split_at_mut(m);
        let (h, rest) = rest.split_at_mut(m);
        let (w, rest) = rest.split_at_mut(m);
        let (wg, wh) = rest.split_at_mut(m);
        // Antiderivatives at x = j dt - delay, j = -n..=n (index j + n).
        for idx in 0..m {
            let x = (idx as f64 - n as f64) * self.dt - delay;
            let (gv, g2v) = self.antiderivatives(theta, x);
            g2[idx] = g2v;
            g[idx] = gv;
            h[idx] = (2.0 * g2v - x * gv) / mtt;
        }
        // Hat-function weights for lags j = -(n-1)..=(n-1) at index j + n.
        for idx in 1..m - 1 {
            let d2 = |v: &[f64]| (v[idx + 1] - 2.0 * v[idx] + v[idx - 1]) / self.dt;
            w[idx] = d2(g2);
            wg[idx] = d2(g);
            wh[idx] = d2(h);
        }
        let with_jac = jac.is_some();
        let mut cols = jac;
        for i in 0..n {
            let (mut c, mut cg, mut ch) = (0.0, 0.0, 0.0);
            for (k, a) in self.aif.iter().enumerate() {
                let idx = i + n - k;
                c += a * w[idx];
                if with_jac {
                    cg += a * wg[idx];
                    ch += a * wh[idx];
                }
            }
            out[i] = flow * c;
            if let Some(j) = cols.as_deref_mut() {
                j[i] = c;
                j[n + i] = flow * ch;
                j[2 * n + i] = -flow * cg;
            }
        }
    }
}

impl Model for VascularModel {
    fn name(&self) -> &str {
        "vascular_model"
    }

    fn params(&self) -> &[ParamSpec] {
        &PARAMS
    }

    fn n_samples(&self) -> usize {
        self.aif.len()
    }

    fn scratch_len(&self) -> usize {
        6 * (2 * self.aif.len() + 1)
    }

    fn predict(&self, params: &[f64], out: &mut [f64]) {
        let mut scratch = vec![0.0; self.scratch_len()];
        self.evaluate(params, out, None, &mut scratch);
    }

    fn jacobian(&self, params: &[f64], jac: &mut [f64]) -> bool {
        let mut out = vec![0.0; self.n_samples()];
        let mut scratch = vec![0.0; self.scratch_len()];
        self.evaluate(params, &mut out, Some(jac), &mut scratch);
        true
    }

    fn predict_in(&self, params: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        self.evaluate(params, out, None, scratch);
    }

    fn predict_with_jacobian_in(
        &self,
        params: &[f64],
        out: &mut [f64],
        jac: &mut [f64],
        scratch: &mut [f64],
    ) -> bool {
        self.evaluate(params, out, Some(jac), scratch);
        true
    }

    /// Moments of the curves above 10 % of their peaks: the area ratio is
    /// `F MTT`; the variance added by the residue, `theta^2 (a+1)(a+5)/12`,
    /// gives MTT (4 s when not positive); the centroid shift minus the
    /// residue's own centroid `(a+1) MTT / (2a)` gives the delay.
    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        let mut consts = vec![self.dt, f64::from(self.shape)];
        consts.extend_from_slice(&self.aif);
        Some(osipy_fitting::gpu::GpuKernel {
            key: "dsc_vascular_model",
            source: &[include_str!("vascular.cu")],
            consts,
        })
    }

    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let moments = |c: &[f64]| {
            let peak = c.iter().cloned().fold(0.0, f64::max);
            let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
            for (i, v) in c.iter().enumerate() {
                if *v > 0.1 * peak {
                    let t = i as f64 * self.dt;
                    s0 += v;
                    s1 += v * t;
                    s2 += v * t * t;
                }
            }
            let mean = s1 / s0;
            (s0, mean, s2 / s0 - mean * mean)
        };
        let (area_c, mean_c, var_c) = moments(data);
        let (area_a, mean_a, var_a) = moments(&self.aif);
        let a = f64::from(self.shape);
        let theta = (12.0 * (var_c - var_a) / ((a + 1.0) * (a + 5.0))).sqrt();
        let mtt = if theta.is_finite() && theta > 0.0 {
            (a * theta).clamp(1.0, 20.0)
        } else {
            4.0
        };
        let delay = mean_c - mean_a - (a + 1.0) * mtt / (2.0 * a);
        let flow = area_c / area_a / mtt;
        out[0] = if flow.is_finite() && flow > 0.0 {
            flow
        } else {
            0.01
        };
        out[1] = mtt;
        out[2] = if delay.is_finite() { delay } else { 0.0 };
    }
}

/// `vascular_model`: the LM fit of every masked voxel; the flow with its
/// standard error, Tmax = the fitted delay (where the residue peaks), and
/// the fitted `MTT` and `delay` maps with standard errors.
pub fn vascular_model(input: &DeconvInput<'_>, s: &DeconvSettings, device: &Device) -> Result<Deconvolved> {
    check_input(input)?;
    let model = VascularModel::new(input.aif, uniform_step(input.times)?, s.transit_shape)?;
    let opts = FitOptions {
        lm: s.lm,
        progress: s.progress.clone(),
        ..FitOptions::default()
    };
    let fit = fit_batch(&model, input.curves, Some(input.mask), &opts, device)?;
    let col = |j: usize, a: &ndarray::Array2<f64>| a.column(j).to_vec();
    let status: Vec<QualityCode> = fit.status.to_vec();
    let fitted = s.fitted_curves.then(|| {
        let mut f = ndarray::Array2::from_elem(input.curves.dim(), f64::NAN);
        for (v, mut row) in f.rows_mut().into_iter().enumerate() {
            let p = fit.params.row(v);
            if status[v].is_valid() && p.iter().all(|x| x.is_finite()) {
                if let (Some(p), Some(out)) = (p.as_slice(), row.as_slice_mut()) {
                    model.predict(p, out);
                }
            }
        }
        f
    });
    Ok(Deconvolved {
        flow: col(0, &fit.params),
        flow_se: Some(col(0, &fit.std_errors)),
        tmax: col(2, &fit.params),
        status,
        r2: Some(fit.r2.to_vec()),
        extra: vec![
            Fitted {
                name: "MTT",
                unit: Unit::Seconds,
                values: col(1, &fit.params),
                std_errors: col(1, &fit.std_errors),
            },
            Fitted {
                name: "delay",
                unit: Unit::Seconds,
                values: col(2, &fit.params),
                std_errors: col(2, &fit.std_errors),
            },
        ],
        fitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use osipy_fitting::finite_difference_jacobian;

    fn aif(n: usize, dt: f64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let x = i as f64 * dt - 10.0;
                if x > 0.0 {
                    x.powi(3) * (-x / 1.5).exp()
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The closed-form convolution equals a fine numerical convolution of
    /// the linearly interpolated AIF with `1 - P(a, a x / MTT)` (puruspe).
    #[test]
    fn closed_form_matches_numerical_convolution() {
        let (n, dt) = (40, 1.5);
        let a = aif(n, dt);
        for shape in [1u32, 3] {
            let m = VascularModel::new(&a, dt, shape).unwrap();
            let p = [0.02, 5.0, 1.3];
            let mut out = vec![0.0; n];
            m.predict(&p, &mut out);
            let h = 0.001;
            let interp = |t: f64| {
                let i = (t / dt).floor() as usize;
                if i + 1 >= n {
                    return a[n - 1];
                }
                let f = t / dt - i as f64;
                a[i] * (1.0 - f) + a[i + 1] * f
            };
            let residue = |x: f64| {
                if x < 0.0 {
                    0.0
                } else {
                    1.0 - puruspe::gammp(f64::from(shape), f64::from(shape) * x / p[1])
                }
            };
            for (i, o) in out.iter().enumerate() {
                let t = i as f64 * dt;
                let steps = (t / h).round() as usize;
                let num: f64 = (0..steps)
                    .map(|j| {
                        let s = (j as f64 + 0.5) * h;
                        interp(s) * residue(t - s - p[2])
                    })
                    .sum::<f64>()
                    * h
                    * p[0];
                assert!(
                    (o - num).abs() < 1e-4 * (1.0 + num.abs()),
                    "shape {shape} i {i}: {o} vs {num}"
                );
            }
        }
    }

    #[test]
    fn analytic_jacobian_matches_finite_differences() {
        let (n, dt) = (40, 1.0);
        let a = aif(n, dt);
        for shape in [1u32, 2, 4] {
            let m = VascularModel::new(&a, dt, shape).unwrap();
            for p in [[0.02, 4.0, 0.7], [0.01, 9.0, -1.2]] {
                let mut jac = vec![0.0; 3 * n];
                assert!(m.jacobian(&p, &mut jac));
                let fd = finite_difference_jacobian(&m, &p, 1e-6);
                let scale = fd.iter().fold(0.0f64, |s, v| s.max(v.abs()));
                for (x, y) in jac.iter().zip(&fd) {
                    assert!((x - y).abs() < 1e-5 * scale, "shape {shape}: {x} vs {y}");
                }
            }
        }
    }

    /// Noise-free curves of the model are fitted back to their parameters,
    /// and a shape out of range is an error naming the key.
    #[test]
    fn fit_recovers_flow_mtt_and_delay() {
        let (n, dt) = (60, 1.5);
        let a = aif(n, dt);
        let m = VascularModel::new(&a, dt, 3).unwrap();
        let truth = [[0.015, 3.0, 0.0], [0.008, 6.0, 2.2], [0.004, 9.0, -1.0]];
        let mut curves = ndarray::Array2::zeros((3, n));
        for (v, p) in truth.iter().enumerate() {
            let mut out = vec![0.0; n];
            m.predict(p, &mut out);
            curves.row_mut(v).assign(&ndarray::Array1::from(out));
        }
        let times: Vec<f64> = (0..n).map(|i| i as f64 * dt).collect();
        let input = DeconvInput {
            curves: curves.view(),
            mask: &[true, true, true],
            aif: &a,
            times: &times,
        };
        let s = DeconvSettings {
            transit_shape: 3,
            ..DeconvSettings::default()
        };
        let d = vascular_model(&input, &s, &Device::cpu(None)).unwrap();
        for (v, p) in truth.iter().enumerate() {
            assert!((d.flow[v] - p[0]).abs() < 1e-6 * p[0], "{v}: {:?}", d.flow);
            assert!((d.extra[0].values[v] - p[1]).abs() < 1e-4, "{v}");
            assert!((d.extra[1].values[v] - p[2]).abs() < 1e-4, "{v}");
        }
        // Fitted curves on request: the model at the fitted parameters,
        // which reproduces these noise-free curves.
        assert!(d.fitted.is_none());
        let with = DeconvSettings {
            fitted_curves: true,
            ..s
        };
        let f = vascular_model(&input, &with, &Device::cpu(None))
            .unwrap()
            .fitted
            .unwrap();
        let peak = curves.iter().cloned().fold(0.0, f64::max);
        for (x, y) in f.iter().zip(curves.iter()) {
            assert!((x - y).abs() < 1e-6 * peak, "{x} vs {y}");
        }
        let e = VascularModel::new(&a, dt, 0).unwrap_err().to_string();
        assert!(e.contains("pipeline.transit_shape"), "{e}");
    }
}
