//! Multi-PLD quantification: the general kinetic model fitted per voxel by
//! the shared LM engine for CBF and ATT (and, optionally, the arterial
//! blood volume aBV and its arrival time aATT), started from a grid over
//! the arrival times.

use crate::dual::{Dual, Num};
use crate::kinetics::{arterial, tissue, LabelingScheme, Physio, Timing};
use osipy_core::{OsipyError, Result, Unit};
use osipy_fitting::{Model, ParamSpec};

const TISSUE_PARAMS: [ParamSpec; 2] = [
    ParamSpec::new("CBF", "CBF", Unit::Ml100gMin, (0.0, 300.0)),
    ParamSpec::new("ATT", "ATT", Unit::Seconds, (0.0, 4.0)),
];

const ARTERIAL_PARAMS: [ParamSpec; 4] = [
    TISSUE_PARAMS[0],
    TISSUE_PARAMS[1],
    ParamSpec::new("aBV", "aBV", Unit::Dimensionless, (0.0, 0.1)),
    ParamSpec::new("aATT", "aATT", Unit::Seconds, (0.0, 4.0)),
];

/// The parameters of the model: CBF and ATT, plus aBV and aATT with the
/// arterial component.
pub fn param_specs(arterial: bool) -> &'static [ParamSpec] {
    if arterial {
        &ARTERIAL_PARAMS
    } else {
        &TISSUE_PARAMS
    }
}

/// Step (s) of the arrival-time start grid.
const GRID_STEP: f64 = 0.05;

/// Arrival times of the start grid: every [`GRID_STEP`] from 0 to the
/// upper ATT bound.
fn grid(upper: f64) -> Vec<f64> {
    let n = (upper / GRID_STEP).floor() as usize;
    (0..=n).map(|i| i as f64 * GRID_STEP).collect()
}

/// CBF at which the start grid's basis curves are computed (the model is
/// linear in CBF but for the small f/λ term of T1').
const GRID_CBF: f64 = 60.0;

/// The Buxton model bound to its PLDs and constants: ΔM / M0 per sample.
#[derive(Debug, Clone)]
pub struct BuxtonModel {
    scheme: LabelingScheme,
    samples: Vec<Timing>,
    physio: Physio,
    arterial: bool,
    /// Tissue curves at [`GRID_CBF`] for each ATT of `att_grid` (row-major).
    tissue_basis: Vec<f64>,
    att_grid: Vec<f64>,
    /// Arterial curves at aBV = 1 for each aATT of `att_grid`.
    arterial_basis: Vec<f64>,
    /// Inner products <tissue_i, arterial_j> (row-major, i over ATT).
    cross: Vec<f64>,
}

impl BuxtonModel {
    /// The model for `samples` (one per ΔM value) of `scheme`; with
    /// `arterial`, the macrovascular term is added (4 parameters).
    pub fn new(scheme: LabelingScheme, samples: Vec<Timing>, physio: Physio, arterial: bool) -> Result<Self> {
        let p = if arterial { 4 } else { 2 };
        let mut distinct: Vec<f64> = samples.iter().map(|s| s.time(scheme)).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() <= p {
            return Err(OsipyError::data(
                "post-labeling delays of buxton_multi_pld",
                format!("{} distinct time(s)", distinct.len()),
                format!(
                    "at least {} distinct PLDs to fit {} parameters{}",
                    p + 1,
                    p,
                    if arterial {
                        " (the arterial component adds aBV and aATT)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let att_grid = grid(TISSUE_PARAMS[1].bounds.1);
        let mut m = BuxtonModel {
            scheme,
            samples,
            physio,
            arterial,
            tissue_basis: Vec::new(),
            arterial_basis: Vec::new(),
            cross: Vec::new(),
            att_grid,
        };
        for &att in &m.att_grid {
            for s in &m.samples {
                m.tissue_basis.push(tissue(scheme, GRID_CBF, att, *s, &physio));
                m.arterial_basis
                    .push(crate::kinetics::arterial(scheme, 1.0, att, *s, &physio));
            }
        }
        if arterial {
            let n = m.samples.len();
            let g = m.att_grid.len();
            for i in 0..g {
                for j in 0..g {
                    let t = &m.tissue_basis[i * n..(i + 1) * n];
                    let a = &m.arterial_basis[j * n..(j + 1) * n];
                    m.cross.push(t.iter().zip(a).map(|(x, y)| x * y).sum());
                }
            }
        }
        Ok(m)
    }

    fn eval<T: Num>(&self, p: &[T], s: Timing) -> T {
        let t = tissue(self.scheme, p[0], p[1], s, &self.physio);
        if self.arterial {
            t + arterial(self.scheme, p[2], p[3], s, &self.physio)
        } else {
            t
        }
    }

    fn jac<const N: usize>(&self, params: &[f64], out: &mut [f64], jac: &mut [f64]) {
        let x: [Dual<N>; N] = std::array::from_fn(|j| Dual::var(params[j], j));
        let n = self.samples.len();
        for (i, s) in self.samples.iter().enumerate() {
            let y = self.eval(&x, *s);
            out[i] = y.v;
            for j in 0..N {
                jac[j * n + i] = y.d[j];
            }
        }
    }
}

impl BuxtonModel {
    /// Joint start of the 4-parameter model: every (ATT, aATT <= ATT)
    /// pair of the grid with both amplitudes by non-negative least squares
    /// (2 x 2 normal equations from precomputed inner products).
    fn arterial_start(&self, data: &[f64], out: &mut [f64], adots: &mut [f64]) {
        let n = self.samples.len();
        let g = self.att_grid.len();
        let dot = |b: &[f64], i: usize| -> (f64, f64) {
            let v = &b[i * n..(i + 1) * n];
            let (mut db, mut bb) = (0.0, 0.0);
            for (d, x) in data.iter().zip(v) {
                db += d * x;
                bb += x * x;
            }
            (db, bb)
        };
        for j in 0..g {
            let (da, aa) = dot(&self.arterial_basis, j);
            adots[2 * j] = da;
            adots[2 * j + 1] = aa;
        }
        let mut best = (f64::NEG_INFINITY, [out[0], out[1], 0.0, out[1]]);
        for i in 0..g {
            let (dt, tt) = dot(&self.tissue_basis, i);
            for j in 0..=i {
                let (da, aa) = (adots[2 * j], adots[2 * j + 1]);
                let ta = self.cross[i * g + j];
                let det = tt * aa - ta * ta;
                let (x, y) = if det > 1e-12 * tt * aa {
                    ((dt * aa - da * ta) / det, (da * tt - dt * ta) / det)
                } else {
                    (-1.0, -1.0)
                };
                let (x, y, gain) = if x >= 0.0 && y >= 0.0 {
                    (x, y, x * dt + y * da)
                } else {
                    let (x, gx) = amplitude_from(dt, tt);
                    let (y, gy) = amplitude_from(da, aa);
                    if gx >= gy {
                        (x, 0.0, gx)
                    } else {
                        (0.0, y, gy)
                    }
                };
                if gain > best.0 {
                    best = (gain, [x * GRID_CBF, self.att_grid[i], y, self.att_grid[j]]);
                }
            }
        }
        out[..4].copy_from_slice(&best.1);
        out[2] = out[2].max(1e-4);
    }
}

/// Non-negative amplitude and cost reduction from <d, b> and <b, b>.
fn amplitude_from(db: f64, bb: f64) -> (f64, f64) {
    if db <= 0.0 || bb <= 0.0 {
        (0.0, 0.0)
    } else {
        (db / bb, db * db / bb)
    }
}

/// Best non-negative amplitude of `basis` for `data`: (amplitude, cost
/// reduction <d, b>^2 / <b, b>).
fn amplitude(data: &[f64], basis: &[f64]) -> (f64, f64) {
    let (mut db, mut bb) = (0.0, 0.0);
    for (d, b) in data.iter().zip(basis) {
        db += d * b;
        bb += b * b;
    }
    amplitude_from(db, bb)
}

impl Model for BuxtonModel {
    fn name(&self) -> &str {
        "buxton_multi_pld"
    }

    fn params(&self) -> &[ParamSpec] {
        param_specs(self.arterial)
    }

    fn n_samples(&self) -> usize {
        self.samples.len()
    }

    fn predict(&self, params: &[f64], out: &mut [f64]) {
        for (o, s) in out.iter_mut().zip(&self.samples) {
            *o = self.eval(params, *s);
        }
    }

    fn jacobian(&self, params: &[f64], jac: &mut [f64]) -> bool {
        let mut out = vec![0.0; self.samples.len()];
        self.predict_with_jacobian(params, &mut out, jac)
    }

    fn predict_with_jacobian(&self, params: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        if self.arterial {
            self.jac::<4>(params, out, jac);
        } else {
            self.jac::<2>(params, out, jac);
        }
        true
    }

    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let mut scratch = vec![0.0; self.scratch_len()];
        self.initial_guess_in(data, out, &mut scratch);
    }

    fn scratch_len(&self) -> usize {
        if self.arterial {
            2 * self.att_grid.len()
        } else {
            0
        }
    }

    /// The best grid point: for each ATT of the grid (and each aATT with
    /// the arterial term) the non-negative least-squares amplitudes, CBF
    /// from the tissue one. No voxel starts at a bound of ATT unless its
    /// data put it there.
    fn initial_guess_in(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let n = self.samples.len();
        let mut best = (f64::NEG_INFINITY, 0, 0.0);
        for i in 0..self.att_grid.len() {
            let (a, gain) = amplitude(data, &self.tissue_basis[i * n..(i + 1) * n]);
            if gain > best.0 {
                best = (gain, i, a);
            }
        }
        let (_, i_att, a) = best;
        out[0] = a * GRID_CBF;
        out[1] = self.att_grid[i_att];
        if self.arterial {
            self.arterial_start(data, out, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osipy_backend::Device;
    use osipy_fitting::{fit_batch, FitOptions};

    const P: Physio = Physio {
        t1_blood: 1.65,
        t1_tissue: 1.33,
        lambda: 0.9,
        alpha: 0.85,
    };

    fn plds() -> Vec<Timing> {
        (1..=12)
            .map(|i| Timing {
                pld: 0.25 * i as f64,
                tau: 1.8,
            })
            .collect()
    }

    #[test]
    fn noise_free_curves_are_recovered_from_the_grid_start() {
        for scheme in [LabelingScheme::Pcasl, LabelingScheme::Pasl] {
            let samples = if scheme == LabelingScheme::Pasl {
                (1..=12)
                    .map(|i| Timing {
                        pld: 0.3 * i as f64,
                        tau: 0.8,
                    })
                    .collect()
            } else {
                plds()
            };
            let m = BuxtonModel::new(scheme, samples, P, false).unwrap();
            let truth = [(20.0, 0.5), (60.0, 1.234), (80.0, 2.0), (45.0, 0.05)];
            let mut data = ndarray::Array2::zeros((truth.len(), 12));
            for (v, (cbf, att)) in truth.iter().enumerate() {
                let mut row = vec![0.0; 12];
                m.predict(&[*cbf, *att], &mut row);
                data.row_mut(v).assign(&ndarray::Array1::from(row));
            }
            let fit = fit_batch(&m, data.view(), None, &FitOptions::default(), &Device::cpu(None)).unwrap();
            for (v, (cbf, att)) in truth.iter().enumerate() {
                assert!(
                    (fit.params[[v, 0]] - cbf).abs() < 1e-6 * cbf,
                    "{scheme:?} CBF {} vs {cbf}",
                    fit.params[[v, 0]]
                );
                assert!((fit.params[[v, 1]] - att).abs() < 1e-6, "{scheme:?} ATT");
            }
        }
    }

    #[test]
    fn the_arterial_component_is_separated() {
        let m = BuxtonModel::new(LabelingScheme::Pcasl, plds(), P, true).unwrap();
        let truth = [50.0, 1.4, 0.01, 0.7];
        let mut row = vec![0.0; 12];
        m.predict(&truth, &mut row);
        let data = ndarray::Array2::from_shape_vec((1, 12), row).unwrap();
        let fit = fit_batch(&m, data.view(), None, &FitOptions::default(), &Device::cpu(None)).unwrap();
        for j in 0..4 {
            assert!(
                (fit.params[[0, j]] - truth[j]).abs() < 1e-4 * truth[j],
                "param {j}: {} vs {}",
                fit.params[[0, j]],
                truth[j]
            );
        }
    }

    #[test]
    fn too_few_plds_is_an_error_in_words() {
        let two = vec![Timing { pld: 1.0, tau: 1.8 }, Timing { pld: 2.0, tau: 1.8 }];
        let e = BuxtonModel::new(LabelingScheme::Pcasl, two, P, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 distinct") && e.contains("at least 3"), "{e}");
    }
}
