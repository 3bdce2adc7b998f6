//! Monte Carlo simulation of diffusion under a pulsed-gradient spin-echo
//! sequence in simple substrates: free water, the inside of parallel
//! cylinders, of spheres, and between parallel planes.
//!
//! Walkers start uniformly inside the substrate and take steps of fixed
//! length sqrt(6 D dt) in uniformly random directions (the mean squared
//! displacement of free diffusion, 6 D t, is kept exactly); a step that crosses the wall is reflected
//! specularly (elastic collision, impermeable membrane). The phase of a
//! walker is phi = gamma G . (integral of x over the first pulse - integral
//! over the second), with gamma G = 2 pi q / delta along the measurement's
//! direction; the signal is the mean of cos(phi) (the sine part vanishes
//! by symmetry) with its standard error. Walkers run in fixed batches, each
//! with its own seeded stream, on the backend's threads: the result is the
//! same for any thread count. (Hall & Alexander 2009 describe the method;
//! this is an independent implementation.)

use crate::scheme::Scheme;
use osipy_backend::Device;
use osipy_core::{OsipyError, Result};
use osipy_fitting::rng::Rng;

/// Where the water diffuses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Substrate {
    /// Unrestricted.
    Free,
    /// Inside a cylinder of this radius (um) with its axis along z.
    Cylinder(f64),
    /// Inside a sphere of this radius (um).
    Sphere(f64),
    /// Between two planes this far apart (um), normal along z.
    Planes(f64),
}

/// Simulation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McSettings {
    /// Diffusivity (um^2/ms).
    pub diffusivity: f64,
    /// Number of walkers.
    pub walkers: usize,
    /// Time step (ms).
    pub dt: f64,
    /// Random seed.
    pub seed: u64,
}

/// Simulated signal per volume of the scheme, with standard errors.
#[derive(Debug, Clone, PartialEq)]
pub struct McSignal {
    /// Mean of cos(phi) per volume.
    pub signal: Vec<f64>,
    /// Standard error of each mean.
    pub std_error: Vec<f64>,
}

/// Walkers per independently seeded batch.
const BATCH: usize = 256;

impl Substrate {
    fn start(&self, rng: &mut Rng) -> [f64; 3] {
        // Rejection sampling in the bounding box.
        let r = match *self {
            Substrate::Free => return [0.0; 3],
            Substrate::Cylinder(r) | Substrate::Sphere(r) => r,
            Substrate::Planes(l) => return [0.0, 0.0, rng.uniform() * l],
        };
        loop {
            let p = [
                (2.0 * rng.uniform() - 1.0) * r,
                (2.0 * rng.uniform() - 1.0) * r,
                0.0,
            ];
            let p = if matches!(self, Substrate::Sphere(_)) {
                [p[0], p[1], (2.0 * rng.uniform() - 1.0) * r]
            } else {
                p
            };
            if p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= r * r {
                return p;
            }
        }
    }

    /// Moves `x` by `d`, reflecting off the walls.
    fn step(&self, x: &mut [f64; 3], mut d: [f64; 3]) {
        match *self {
            Substrate::Free => {
                for k in 0..3 {
                    x[k] += d[k];
                }
            }
            Substrate::Planes(l) => {
                x[0] += d[0];
                x[1] += d[1];
                let mut z = x[2] + d[2];
                // Mirror into [0, l] (several times for very long steps).
                for _ in 0..64 {
                    if z < 0.0 {
                        z = -z;
                    } else if z > l {
                        z = 2.0 * l - z;
                    } else {
                        break;
                    }
                }
                x[2] = z.clamp(0.0, l);
            }
            Substrate::Cylinder(r) | Substrate::Sphere(r) => {
                let dims = if matches!(self, Substrate::Sphere(_)) {
                    3
                } else {
                    2
                };
                if dims == 2 {
                    x[2] += d[2];
                    d[2] = 0.0;
                }
                for _ in 0..64 {
                    let end = [x[0] + d[0], x[1] + d[1], x[2] + d[2]];
                    let r2: f64 = (0..dims).map(|k| end[k] * end[k]).sum();
                    if r2 <= r * r {
                        x[..dims].copy_from_slice(&end[..dims]);
                        return;
                    }
                    // Where the segment x + t d leaves: |x + t d| = r.
                    let a: f64 = (0..dims).map(|k| d[k] * d[k]).sum();
                    let b: f64 = (0..dims).map(|k| x[k] * d[k]).sum();
                    let c: f64 = (0..dims).map(|k| x[k] * x[k]).sum::<f64>() - r * r;
                    let t = ((-b + (b * b - a * c).max(0.0).sqrt()) / a).clamp(0.0, 1.0);
                    let mut hit = [0.0; 3];
                    for k in 0..dims {
                        hit[k] = x[k] + t * d[k];
                    }
                    let norm = (0..dims).map(|k| hit[k] * hit[k]).sum::<f64>().sqrt().max(1e-300);
                    let n = [hit[0] / norm, hit[1] / norm, hit[2] / norm];
                    // The rest of the step, mirrored in the tangent plane.
                    let mut rest = [0.0; 3];
                    for k in 0..dims {
                        rest[k] = (1.0 - t) * d[k];
                    }
                    let dot: f64 = (0..dims).map(|k| rest[k] * n[k]).sum();
                    for k in 0..dims {
                        x[k] = hit[k] * (1.0 - 1e-12);
                        d[k] = rest[k] - 2.0 * dot * n[k];
                    }
                }
                // Pathological: stay on the wall.
            }
        }
    }
}

/// Simulates the signal of every volume of `scheme` (which needs delta and
/// Delta) for water in `substrate`.
pub fn simulate(substrate: Substrate, scheme: &Scheme, s: &McSettings, device: &Device) -> Result<McSignal> {
    let (delta, big) = scheme.timing("Monte Carlo simulation")?;
    if !(s.diffusivity > 0.0 && s.dt > 0.0 && s.walkers > 0) {
        return Err(OsipyError::Validation(format!(
            "Monte Carlo settings need a positive diffusivity, time step and walker count (got D = {} um^2/ms, dt = {} ms, {} walkers)",
            s.diffusivity, s.dt, s.walkers
        )));
    }
    let size = match substrate {
        Substrate::Free => 1.0,
        Substrate::Cylinder(r) | Substrate::Sphere(r) => r,
        Substrate::Planes(l) => l,
    };
    if !(size > 0.0 && size.is_finite()) {
        return Err(OsipyError::Validation(format!(
            "the substrate size must be positive, got {size} um"
        )));
    }
    let n_steps = ((big + delta) / s.dt).ceil() as usize;
    let dt = (big + delta) / n_steps as f64;
    let len = (6.0 * s.diffusivity * dt).sqrt();
    let n_batches = s.walkers.div_ceil(BATCH);
    // Per batch: sum of the phase integral's outer products is not needed;
    // each walker's integral I (3 values) is kept, and the signal formed
    // after. Records: BATCH walkers x 3.
    let mut integrals = vec![0.0; n_batches * BATCH * 3];
    osipy_fitting::map_voxels(
        device,
        &mut integrals,
        BATCH * 3,
        1,
        None,
        || (),
        |_, batch, rec| {
            let mut rng = Rng::new(s.seed.wrapping_mul(0x9E37_79B9).wrapping_add(batch as u64 + 1));
            let count = BATCH.min(s.walkers - batch * BATCH);
            for w in 0..count {
                let mut x = substrate.start(&mut rng);
                let mut integral = [0.0; 3];
                for i in 0..n_steps {
                    // Midpoint of the step's interval decides the pulse.
                    let t = (i as f64 + 0.5) * dt;
                    let sign = if t < delta {
                        1.0
                    } else if t >= big && t < big + delta {
                        -1.0
                    } else {
                        0.0
                    };
                    let z = 2.0 * rng.uniform() - 1.0;
                    let (sp, cp) = (2.0 * std::f64::consts::PI * rng.uniform()).sin_cos();
                    let rxy = len * (1.0 - z * z).max(0.0).sqrt();
                    let d = [rxy * cp, rxy * sp, len * z];
                    let before = x;
                    substrate.step(&mut x, d);
                    if sign != 0.0 {
                        for k in 0..3 {
                            integral[k] += sign * 0.5 * (before[k] + x[k]) * dt;
                        }
                    }
                }
                rec[3 * w..3 * w + 3].copy_from_slice(&integral);
            }
        },
    )?;
    let mut signal = Vec::with_capacity(scheme.len());
    let mut std_error = Vec::with_capacity(scheme.len());
    for i in 0..scheme.len() {
        let q = scheme.q(scheme.b[i], delta, big);
        let gg = 2.0 * std::f64::consts::PI * q / delta;
        let g = scheme.g[i];
        let (mut sum, mut sum2) = (0.0, 0.0);
        for w in 0..s.walkers {
            let iw = &integrals[3 * w..3 * w + 3];
            let c = (gg * (g[0] * iw[0] + g[1] * iw[1] + g[2] * iw[2])).cos();
            sum += c;
            sum2 += c * c;
        }
        let n = s.walkers as f64;
        let mean = sum / n;
        signal.push(mean);
        std_error.push(((sum2 / n - mean * mean).max(0.0) / n).sqrt());
    }
    Ok(McSignal { signal, std_error })
}
