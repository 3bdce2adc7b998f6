//! Multi-PLD quantification: the general kinetic model fitted per voxel by
//! the shared LM engine for CBF and ATT (and, optionally, the arterial
//! blood volume aBV and its arrival time aATT), started from a grid over
//! the arrival times.

use crate::kinetics::{arterial, tissue, tissue_curve, LabelingScheme, Physio, Timing};
use osipy_core::{OsipyError, Result, Unit};
use osipy_fitting::dual::Dual;
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

/// Grid points whose dot products are accumulated together.
const LANES: usize = 8;

/// `g` rounded up to a multiple of [`LANES`].
fn padded(g: usize) -> usize {
    g.div_ceil(LANES) * LANES
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
    /// Squared norms of the tissue and arterial basis curves.
    norms: [Vec<f64>; 2],
    /// 1 / squared norm of the tissue curves (0 for an all-zero curve).
    inv_norms: Vec<f64>,
    /// The tissue and arterial bases in blocks of [`LANES`] grid points,
    /// sample-major within a block, so the dot products with a voxel's
    /// data vectorise over grid points.
    basis_t: [Vec<f64>; 2],
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
            norms: [Vec::new(), Vec::new()],
            inv_norms: Vec::new(),
            basis_t: [Vec::new(), Vec::new()],
            att_grid,
        };
        for &att in &m.att_grid {
            for s in &m.samples {
                m.tissue_basis.push(tissue(scheme, GRID_CBF, att, *s, &physio));
                m.arterial_basis
                    .push(crate::kinetics::arterial(scheme, 1.0, att, *s, &physio));
            }
        }
        let n = m.samples.len();
        for (norms, basis) in m.norms.iter_mut().zip([&m.tissue_basis, &m.arterial_basis]) {
            *norms = basis.chunks(n).map(|b| b.iter().map(|x| x * x).sum()).collect();
        }
        m.inv_norms = m.norms[0]
            .iter()
            .map(|b| if *b > 0.0 { 1.0 / b } else { 0.0 })
            .collect();
        let g = m.att_grid.len();
        for (t, basis) in m.basis_t.iter_mut().zip([&m.tissue_basis, &m.arterial_basis]) {
            // Block-major: [block of LANES points][sample][lane].
            *t = (0..n * padded(g))
                .map(|k| {
                    let (block, rest) = (k / (n * LANES), k % (n * LANES));
                    let point = block * LANES + rest % LANES;
                    if point < g {
                        basis[point * n + rest / LANES]
                    } else {
                        0.0
                    }
                })
                .collect();
        }
        if arterial {
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

    /// <data, basis_k(point)> for every grid point into `acc` (padded to
    /// [`padded`]), eight grid points at a time in registers (the start
    /// search would be a third of a voxel's fit otherwise).
    fn grid_dots(&self, k: usize, data: &[f64], acc: &mut [f64]) {
        let n = self.samples.len();
        let blocks = self.basis_t[k].chunks_exact(n * LANES);
        for (block, out) in blocks.zip(acc.chunks_exact_mut(LANES)) {
            let mut sum = [0.0; LANES];
            for (d, row) in data.iter().zip(block.chunks_exact(LANES)) {
                for (s, b) in sum.iter_mut().zip(row) {
                    *s += d * b;
                }
            }
            out.copy_from_slice(&sum);
        }
    }

    fn jac<const N: usize>(&self, params: &[f64], out: &mut [f64], jac: &mut [f64]) {
        let x: [Dual<N>; N] = std::array::from_fn(|j| Dual::var(params[j], j));
        let n = self.samples.len();
        let (scheme, p) = (self.scheme, &self.physio);
        tissue_curve(scheme, x[0], x[1], &self.samples, p, |i, y| {
            out[i] = y.v;
            for j in 0..N {
                jac[j * n + i] = y.d[j];
            }
        });
        if self.arterial {
            for (i, s) in self.samples.iter().enumerate() {
                let y = arterial(scheme, x[2], x[3], *s, p);
                out[i] += y.v;
                for j in 0..N {
                    jac[j * n + i] += y.d[j];
                }
            }
        }
    }

    /// Joint start of the 4-parameter model: every (ATT, aATT <= ATT)
    /// pair of the grid with both amplitudes by non-negative least squares
    /// (2 x 2 normal equations from precomputed inner products).
    /// `scratch` holds the tissue dots of the grid (filled by the caller)
    /// and room for the arterial ones.
    fn arterial_start(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let g = self.att_grid.len();
        let (tdots, adots) = scratch.split_at_mut(padded(g));
        self.grid_dots(1, data, adots);
        let mut best = (f64::NEG_INFINITY, [out[0], out[1], 0.0, out[1]]);
        for i in 0..g {
            let (dt, tt) = (tdots[i], self.norms[0][i]);
            for j in 0..=i {
                let (da, aa) = (adots[j], self.norms[1][j]);
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
        let (scheme, p) = (self.scheme, &self.physio);
        tissue_curve(scheme, params[0], params[1], &self.samples, p, |i, y| out[i] = y);
        if self.arterial {
            for (o, s) in out.iter_mut().zip(&self.samples) {
                *o += arterial(scheme, params[2], params[3], *s, p);
            }
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
        let gp = padded(self.att_grid.len());
        if self.arterial {
            2 * gp
        } else {
            gp
        }
    }

    /// The best grid point: for each ATT of the grid (and each aATT with
    /// the arterial term) the non-negative least-squares amplitudes, CBF
    /// from the tissue one. No voxel starts at a bound of ATT unless its
    /// data put it there.
    fn initial_guess_in(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let g = self.att_grid.len();
        self.grid_dots(0, data, scratch);
        let mut best = (f64::NEG_INFINITY, 0, 0.0);
        for i in 0..g {
            // Cost reduction <d, b>^2 / <b, b> of a non-negative amplitude.
            let db = scratch[i];
            let gain = if db > 0.0 {
                db * db * self.inv_norms[i]
            } else {
                0.0
            };
            if gain > best.0 {
                best = (gain, i, db * self.inv_norms[i]);
            }
        }
        let (_, i_att, a) = best;
        out[0] = a * GRID_CBF;
        out[1] = self.att_grid[i_att];
        if self.arterial {
            self.arterial_start(data, out, scratch);
        }
    }

    fn gpu_kernel(&self) -> Option<osipy_fitting::gpu::GpuKernel> {
        let p = &self.physio;
        let mut consts = vec![
            if self.scheme.is_continuous() { 1.0 } else { 0.0 },
            p.t1_blood,
            p.t1_tissue,
            p.lambda,
            p.alpha,
        ];
        consts.extend(self.samples.iter().map(|s| s.pld));
        consts.extend(self.samples.iter().map(|s| s.tau));
        Some(osipy_fitting::gpu::GpuKernel {
            key: "asl_buxton_multi_pld",
            source: &[osipy_fitting::dual::DUAL_GPU, include_str!("multi_pld.cu")],
            consts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osipy_backend::Device;
    use osipy_fitting::{fit_batch, FitOptions};

    const P: Physio = crate::kinetics::WHITE_PAPER_3T;

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
    fn a_label_duration_per_pld_is_honoured() {
        // Long labels at short PLDs, short ones late (a time-encoded-like protocol).
        let samples: Vec<Timing> = (1..=8)
            .map(|i| Timing {
                pld: 0.3 * i as f64,
                tau: if i <= 4 { 1.8 } else { 0.6 },
            })
            .collect();
        let m = BuxtonModel::new(LabelingScheme::Pcasl, samples.clone(), P, false).unwrap();
        let truth = [55.0, 1.1];
        let mut row = vec![0.0; 8];
        m.predict(&truth, &mut row);
        for (y, s) in row.iter().zip(&samples) {
            assert_eq!(*y, tissue(LabelingScheme::Pcasl, 55.0, 1.1, *s, &P));
        }
        let data = ndarray::Array2::from_shape_vec((1, 8), row).unwrap();
        let fit = fit_batch(&m, data.view(), None, &FitOptions::default(), &Device::cpu(None)).unwrap();
        assert!((fit.params[[0, 0]] - 55.0).abs() < 1e-5 && (fit.params[[0, 1]] - 1.1).abs() < 1e-7);
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
