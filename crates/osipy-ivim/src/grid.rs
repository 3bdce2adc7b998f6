//! Bayesian IVIM on an exact, adaptive grid posterior.
//!
//! **Model.** `y_i = S0 [(1-f) e^{-b_i D} + f e^{-b_i D*}] + e_i`, `e_i ~
//! Normal(0, sigma^2)` independent. For fixed `theta = (f, D, D*)` the model
//! is linear in S0: with `g_i(theta)` the bracket, a flat prior on S0 and the
//! Jeffreys prior `p(sigma) ∝ 1/sigma`, both integrate out in closed form
//! (Bretthorst, *Bayesian Spectrum Analysis and Parameter Estimation*, 1988,
//! ch. 2; Gelman et al., *Bayesian Data Analysis*, 3rd ed., sec. 14.2 for the
//! linear-regression marginal):
//!
//! `p(theta | y) ∝ p(theta) (g.g)^{-1/2} RSS(theta)^{-(n-1)/2}`,
//! `RSS = y.y - (g.y)^2 / g.g`,
//!
//! with `n` the number of (averaged) b-values. What is left is a
//! three-dimensional density, evaluated exactly on a grid: no sampling, no
//! seed, no convergence to check, and the same numbers on any thread count.
//!
//! **Priors.** f uniform on its bounds (Beta(1, 1)); D uniform on its bounds
//! (it is well determined by the high b-values, so its prior hardly matters);
//! D* **log-uniform** on its bounds (`p(D*) ∝ 1/D*`, the scale-invariant
//! prior of a rate known only to within an order of magnitude; Jeffreys,
//! *Theory of Probability*, 1961, sec. 3.1). A uniform prior on D* puts half
//! its mass above the middle of [0.005, 0.2] mm^2/s, far above physiological
//! values (Le Bihan, Radiology 1988; 0.01-0.1 mm^2/s), and drags poorly
//! determined D* upward (issue 15 measured +52 % bias). The prior of each rate
//! can be switched (`d_prior`, `dstar_prior`).
//!
//! **Grid.** Each axis is cut into `points` equal cells in the prior's own
//! coordinate (f and a uniform rate linearly, a log-uniform rate in ln), so
//! every cell carries equal prior mass and the posterior mass of a cell is
//! its density at the centre (midpoint rule). The first level spans the
//! bounds; each further level spans, per axis, the cells whose log density
//! is within `threshold` of the maximum, plus two cells either side. Levels
//! stop when no axis narrows to less than 3/4 of its width (the mass is then
//! spread over most cells of every axis) or after `max_levels`. The
//! defaults (20 cells, 8 nats, 8 levels) were chosen against a dense fixed
//! grid of 160 x 400 x 160 cells: posterior means agree within 0.02
//! posterior SD at SNR 20 to 200 (`tests/grid.rs`); 16 cells with one cell
//! of padding and a 1/2 stopping rule missed by up to 1.5 SD where f, D and
//! D* are strongly correlated.
//!
//! **Summaries.** Per parameter from its marginal on the last level: the
//! posterior median (quantiles interpolated inside a cell, density constant
//! across it), the 2.5 % / 97.5 % quantiles (95 % equal-tailed credible
//! interval), mean and SD. S0: the posterior mean of its conditional mean
//! `g.y / g.g`, and SD from the conditional Student-t variance
//! `RSS / ((n-3) g.g)` plus the spread of the conditional means.
//!
//! **Approximations.** S0 > 0 is imposed by giving no mass to `theta` with
//! `g.y <= 0` (instead of the Student-t tail the truncation would leave);
//! noise is taken as Gaussian with one SD across b-values (averaged repeats
//! are not down-weighted), as in the least-squares fits.

/// Prior of a rate parameter (D or D*) on its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatePrior {
    /// Flat on the bounds.
    Uniform,
    /// Flat in the logarithm (`p ∝ 1/x`); needs a positive lower bound.
    LogUniform,
    /// Log-normal with this median and SD of the logarithm, truncated to
    /// the bounds; needs a positive lower bound.
    LogNormal {
        /// Median (the exponential of the log mean).
        median: f64,
        /// SD of the logarithm.
        sigma: f64,
    },
    /// Normal with this mean and SD, truncated to the bounds.
    Normal {
        /// Mean.
        mean: f64,
        /// SD.
        sd: f64,
    },
}

impl RatePrior {
    /// The prior's name in configs and provenance.
    pub fn name(self) -> &'static str {
        match self {
            RatePrior::Uniform => "uniform",
            RatePrior::LogUniform => "log-uniform",
            RatePrior::LogNormal { .. } => "log-normal",
            RatePrior::Normal { .. } => "normal",
        }
    }

    /// Whether the grid runs in the logarithm.
    fn log(self) -> bool {
        matches!(self, RatePrior::LogUniform | RatePrior::LogNormal { .. })
    }

    /// Log prior density (up to a constant) at grid coordinate `t`.
    fn log_density(self, t: f64) -> f64 {
        match self {
            RatePrior::LogNormal { median, sigma } => -0.5 * ((t - median.ln()) / sigma).powi(2),
            RatePrior::Normal { mean, sd } => -0.5 * ((t - mean) / sd).powi(2),
            _ => 0.0,
        }
    }
}

/// Which posterior the `bayesian` strategy computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// The exact grid posterior of this module (default).
    Grid,
    /// NUTS sampling with uniform priors on the bounds ([`crate::bayes`]).
    Nuts,
}

/// The D* prior of the grid posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstarPrior {
    /// Log-normal, fitted to the volume by [`population_prior`] (default).
    Population,
    /// Log-uniform on the bounds.
    LogUniform,
    /// Uniform on the bounds.
    Uniform,
}

/// The D prior of the grid posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DPrior {
    /// Normal (truncated to the bounds), fitted to the volume by
    /// [`population_prior`].
    Population,
    /// Uniform on the bounds (default).
    Uniform,
}

/// The value a map reports from each voxel's posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Posterior mean (default).
    Mean,
    /// Posterior median.
    Median,
}

/// Options of the `bayesian` strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesOptions {
    /// Grid posterior or NUTS.
    pub sampler: Sampler,
    /// Grid: cells per axis and level.
    pub grid_points: usize,
    /// Grid: prior of D.
    pub d_prior: DPrior,
    /// Grid: prior of D*.
    pub dstar_prior: DstarPrior,
    /// Grid: the value reported.
    pub summary: Summary,
    /// NUTS settings.
    pub nuts: crate::bayes::BayesSettings,
}

impl Default for BayesOptions {
    fn default() -> Self {
        BayesOptions {
            sampler: Sampler::Grid,
            grid_points: GridSettings::default().points,
            d_prior: DPrior::Uniform,
            dstar_prior: DstarPrior::Population,
            summary: Summary::Mean,
            nuts: crate::bayes::BayesSettings::default(),
        }
    }
}

/// Settings of the grid posterior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridSettings {
    /// Cells per axis and level.
    pub points: usize,
    /// Log-density drop (nats) below the maximum that a level's box keeps.
    pub threshold: f64,
    /// Most refinement levels (the first spans the bounds).
    pub max_levels: usize,
    /// Prior of D.
    pub d_prior: RatePrior,
    /// Prior of D*.
    pub dstar_prior: RatePrior,
}

impl Default for GridSettings {
    fn default() -> Self {
        GridSettings {
            points: 20,
            threshold: 8.0,
            max_levels: 8,
            d_prior: RatePrior::Uniform,
            dstar_prior: RatePrior::LogUniform,
        }
    }
}

/// Posterior summary of one voxel: per parameter (S0, f, D, D*) the median,
/// mean and SD, and 95 % credible intervals of f, D, D*.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridSummary {
    /// Posterior medians (S0: posterior mean).
    pub median: [f64; 4],
    /// Posterior means.
    pub mean: [f64; 4],
    /// Posterior SDs.
    pub sd: [f64; 4],
    /// 2.5 % and 97.5 % quantiles of f, D, D*.
    pub interval: [(f64, f64); 3],
}

/// Natural logarithm of a positive, finite, normal `x`, written without
/// branches or integer-to-float conversions so that loops over it vectorise:
/// `x = 2^e m` with `m` in [sqrt(1/2), sqrt(2)), then `ln m = 2 atanh(s)`,
/// `s = (m - 1)/(m + 1)`, by its series to `s^17` (|s| < 0.172, so the
/// first term left out is below 1e-15 relative). Within 4e-16 of `f64::ln`,
/// relative to max(|ln x|, 1), on [1e-300, 1e300] (tested).
#[inline(always)]
fn ln(x: f64) -> f64 {
    const MANTISSA: u64 = 0x000f_ffff_ffff_ffff;
    const ONE: u64 = 0x3ff0_0000_0000_0000;
    // 2^52 + k as a float, for the biased exponent k (< 2048).
    const MAGIC: u64 = 0x4330_0000_0000_0000;
    let bits = x.to_bits();
    let m = f64::from_bits((bits & MANTISSA) | ONE);
    let e = f64::from_bits(MAGIC | (bits >> 52)) - (4_503_599_627_370_496.0 + 1023.0);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { 0.5 * m } else { m };
    let e = if big { e + 1.0 } else { e };
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let p = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0
                    + z * (1.0 / 9.0
                        + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0 + z * (1.0 / 17.0))))))));
    2.0 * s * p + e * std::f64::consts::LN_2
}

/// Cells kept either side of a level's box: a coarse level samples a narrow
/// ridge only at cell centres, so the box is widened beyond the cells that
/// pass the threshold.
const PAD: f64 = 2.0;
/// A level is refined again while some axis's box shrinks below this
/// fraction of its width.
const SHRINK: f64 = 0.75;

/// One axis of a level: `points` cells over `[lo, hi]` in its coordinate.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    prior: RatePrior,
}

impl Axis {
    fn step(&self, n: usize) -> f64 {
        (self.hi - self.lo) / n as f64
    }
    /// Coordinate of cell `k`'s centre.
    fn centre(&self, k: usize, n: usize) -> f64 {
        self.lo + (k as f64 + 0.5) * self.step(n)
    }
    fn value(&self, t: f64) -> f64 {
        if self.log {
            t.exp()
        } else {
            t
        }
    }
}

/// The grid posterior for one set of b-values and bounds; per-voxel work in
/// [`GridPosterior::voxel`] with a reusable [`GridScratch`].
#[derive(Debug, Clone)]
pub struct GridPosterior {
    b: Vec<f64>,
    axes: [Axis; 3],
    settings: GridSettings,
}

/// Per-thread buffers of [`GridPosterior::voxel`].
#[derive(Debug, Clone)]
pub struct GridScratch {
    ed: Vec<f64>,
    es: Vec<f64>,
    pd: Vec<f64>,
    ps: Vec<f64>,
    gdd: Vec<f64>,
    gss: Vec<f64>,
    lpd: Vec<f64>,
    lps: Vec<f64>,
    gds: Vec<f64>,
    logp: Vec<f64>,
    marg: Vec<f64>,
}

impl GridPosterior {
    /// `b`: distinct b-values (s/mm^2); `bounds`: those of f, D, D*.
    /// Returns `None` when a bound is not finite or not increasing, a log
    /// prior (log-uniform, log-normal) meets a non-positive lower bound, a
    /// prior's own parameters are not positive and finite, or the settings
    /// are out of range; [`crate::fit_ivim`] turns that into an error that
    /// names the bounds and the setting.
    pub fn new(b: &[f64], bounds: [(f64, f64); 3], settings: GridSettings) -> Option<Self> {
        let axis = |(lo, hi): (f64, f64), prior: Option<RatePrior>| {
            let prior = prior.unwrap_or(RatePrior::Uniform);
            let log = prior.log();
            let ok = lo.is_finite() && hi.is_finite() && lo < hi && (!log || lo > 0.0);
            let ok = ok
                && match prior {
                    RatePrior::LogNormal { median, sigma } => {
                        median > 0.0 && sigma > 0.0 && sigma.is_finite()
                    }
                    RatePrior::Normal { mean, sd } => mean.is_finite() && sd > 0.0 && sd.is_finite(),
                    _ => true,
                };
            ok.then(|| {
                if log {
                    Axis {
                        lo: lo.ln(),
                        hi: hi.ln(),
                        log,
                        prior,
                    }
                } else {
                    Axis { lo, hi, log, prior }
                }
            })
        };
        if settings.points < 2 || settings.max_levels == 0 || !(settings.threshold > 0.0) {
            return None;
        }
        Some(GridPosterior {
            b: b.to_vec(),
            axes: [
                axis(bounds[0], None)?,
                axis(bounds[1], Some(settings.d_prior))?,
                axis(bounds[2], Some(settings.dstar_prior))?,
            ],
            settings,
        })
    }

    /// Fresh buffers for [`Self::voxel`].
    pub fn scratch(&self) -> GridScratch {
        let (n, nb) = (self.settings.points, self.b.len());
        GridScratch {
            ed: vec![0.0; n * nb],
            es: vec![0.0; n * nb],
            pd: vec![0.0; n],
            ps: vec![0.0; n],
            gdd: vec![0.0; n],
            gss: vec![0.0; n],
            lpd: vec![0.0; n],
            lps: vec![0.0; n],
            gds: vec![0.0; n * n],
            logp: vec![0.0; n * n * n],
            marg: vec![0.0; 3 * n],
        }
    }

    /// Exponentials, projections and Gram terms of one rate axis.
    fn rate_axis(&self, axis: &Axis, y: &[f64], e: &mut [f64], p: &mut [f64], g: &mut [f64], lp: &mut [f64]) {
        let (n, nb) = (self.settings.points, self.b.len());
        for k in 0..n {
            let x = axis.value(axis.centre(k, n));
            let row = &mut e[k * nb..(k + 1) * nb];
            let (mut py, mut gg) = (0.0, 0.0);
            for ((r, b), yi) in row.iter_mut().zip(&self.b).zip(y) {
                *r = (-b * x).exp();
                py += *r * yi;
                gg += *r * *r;
            }
            p[k] = py;
            g[k] = gg;
            lp[k] = axis.prior.log_density(axis.centre(k, n));
        }
    }

    /// Log posterior (up to a constant) on the level spanned by `axes`,
    /// into `s.logp` (index `(k f, i D, j D*)` = `(k n + i) n + j`).
    /// Returns the maximum.
    fn level(&self, axes: &[Axis; 3], y: &[f64], yy: f64, s: &mut GridScratch) -> f64 {
        let (n, nb) = (self.settings.points, self.b.len());
        self.rate_axis(&axes[1], y, &mut s.ed, &mut s.pd, &mut s.gdd, &mut s.lpd);
        self.rate_axis(&axes[2], y, &mut s.es, &mut s.ps, &mut s.gss, &mut s.lps);
        for i in 0..n {
            let ei = &s.ed[i * nb..(i + 1) * nb];
            for j in 0..n {
                let ej = &s.es[j * nb..(j + 1) * nb];
                s.gds[i * n + j] = ei.iter().zip(ej).map(|(a, c)| a * c).sum();
            }
        }
        let m = 0.5 * (nb as f64 - 1.0);
        let mut max = f64::NEG_INFINITY;
        for k in 0..n {
            let f = axes[0].centre(k, n);
            let (a, c) = (1.0 - f, f);
            for i in 0..n {
                let (apd, aagdd, acgd) = (a * s.pd[i], a * a * s.gdd[i], 2.0 * a * c);
                let lpd = s.lpd[i];
                let row = &mut s.logp[(k * n + i) * n..(k * n + i + 1) * n];
                let gds = &s.gds[i * n..(i + 1) * n];
                // Branch-free, so the compiler vectorises it.
                for (j, out) in row.iter_mut().enumerate() {
                    let gy = apd + c * s.ps[j];
                    let gg = aagdd + acgd * gds[j] + c * c * s.gss[j];
                    // yy gg - gy^2 >= 0 by Cauchy-Schwarz; floored against
                    // rounding when the curve fits exactly.
                    let r = (yy * gg - gy * gy).max(1e-14 * yy * gg);
                    let lp = (m - 0.5) * ln(gg) - m * ln(r) + lpd + s.lps[j];
                    *out = if gy > 0.0 { lp } else { f64::NEG_INFINITY };
                }
                for x in row.iter() {
                    max = max.max(*x);
                }
            }
        }
        max
    }

    /// The posterior of one voxel's (normalised) signal `y`, one value per
    /// distinct b-value. `None` when no grid cell has a finite density
    /// (e.g. a signal that is zero or negative everywhere).
    pub fn voxel(&self, y: &[f64], s: &mut GridScratch) -> Option<GridSummary> {
        let (axes, yy, max) = self.explore(y, s)?;
        self.summarise(&axes, yy, max, s)
    }

    /// The marginal posteriors of D and D* on equal cells spanning each
    /// rate's axis (its bounds, in the prior's coordinate), each normalised
    /// to sum to 1, into `d` and `dstar` (any numbers of cells). Under a
    /// uniform D and a log-uniform D* prior these are the voxel's marginal
    /// likelihoods per cell of D and of ln D*, which [`population_prior`]
    /// takes. Returns false where [`Self::voxel`] would return `None`.
    pub fn rate_marginals(&self, y: &[f64], s: &mut GridScratch, d: &mut [f64], dstar: &mut [f64]) -> bool {
        let n = self.settings.points;
        let Some((axes, _, max)) = self.explore(y, s) else {
            return false;
        };
        // Per-cell weights of the last level into s.marg: D then D*.
        s.marg.fill(0.0);
        for ki in 0..n * n {
            let i = ki % n;
            for j in 0..n {
                let lp = s.logp[ki * n + j];
                if lp > f64::NEG_INFINITY {
                    let w = (lp - max).exp();
                    s.marg[n + i] += w;
                    s.marg[2 * n + j] += w;
                }
            }
        }
        for (a, out) in [(1usize, d), (2, dstar)] {
            if out.is_empty() {
                continue;
            }
            out.fill(0.0);
            let (full, fine) = (self.axes[a], axes[a]);
            let width = (full.hi - full.lo) / out.len() as f64;
            let w = &s.marg[a * n..(a + 1) * n];
            let total: f64 = w.iter().sum();
            if !(total > 0.0) {
                return false;
            }
            for (k, wk) in w.iter().enumerate() {
                let bin = ((fine.centre(k, n) - full.lo) / width).floor();
                out[(bin.max(0.0) as usize).min(out.len() - 1)] += wk / total;
            }
        }
        true
    }

    /// Runs the levels; the last one's log density is left in `s.logp`.
    /// Returns that level's axes, `y.y` and the maximum log density.
    fn explore(&self, y: &[f64], s: &mut GridScratch) -> Option<([Axis; 3], f64, f64)> {
        let (n, nb) = (self.settings.points, self.b.len());
        if y.len() != nb || nb < 3 {
            return None;
        }
        let yy: f64 = y.iter().map(|v| v * v).sum();
        if !(yy > 0.0 && yy.is_finite()) {
            return None;
        }
        let mut axes = self.axes;
        let mut max = f64::NEG_INFINITY;
        for level in 0..self.settings.max_levels {
            max = self.level(&axes, y, yy, s);
            if !max.is_finite() {
                return None;
            }
            if level + 1 == self.settings.max_levels {
                break;
            }
            // Per axis, the cells within `threshold` of the maximum.
            let cut = max - self.settings.threshold;
            let mut lo = [n; 3];
            let mut hi = [0usize; 3];
            for (idx, lp) in s.logp.iter().enumerate() {
                if *lp >= cut {
                    let ijk = [idx / (n * n), (idx / n) % n, idx % n];
                    for a in 0..3 {
                        lo[a] = lo[a].min(ijk[a]);
                        hi[a] = hi[a].max(ijk[a]);
                    }
                }
            }
            let mut next = axes;
            let mut narrowed = false;
            for a in 0..3 {
                let h = axes[a].step(n);
                let new_lo = (axes[a].lo + (lo[a] as f64 - PAD) * h).max(axes[a].lo);
                let new_hi = (axes[a].lo + (hi[a] as f64 + 1.0 + PAD) * h).min(axes[a].hi);
                next[a].lo = new_lo;
                next[a].hi = new_hi;
                narrowed |= new_hi - new_lo < SHRINK * (axes[a].hi - axes[a].lo);
            }
            if !narrowed {
                break;
            }
            axes = next;
        }
        Some((axes, yy, max))
    }

    fn summarise(&self, axes: &[Axis; 3], yy: f64, max: f64, s: &mut GridScratch) -> Option<GridSummary> {
        let (n, nb) = (self.settings.points, self.b.len());
        // Weights, S0 moments and the three marginals.
        let mut total = 0.0;
        let (mut s0, mut s0sq) = (0.0, 0.0);
        s.marg.fill(0.0);
        let dof = nb as f64 - 3.0;
        for k in 0..n {
            let f = axes[0].centre(k, n);
            let (a, c) = (1.0 - f, f);
            for i in 0..n {
                for j in 0..n {
                    let lp = s.logp[(k * n + i) * n + j];
                    if lp == f64::NEG_INFINITY {
                        continue;
                    }
                    let w = (lp - max).exp();
                    let gy = a * s.pd[i] + c * s.ps[j];
                    let gg = a * a * s.gdd[i] + 2.0 * a * c * s.gds[i * n + j] + c * c * s.gss[j];
                    let mean = gy / gg;
                    let var = if dof > 0.0 {
                        (yy - gy * mean).max(0.0) / (dof * gg)
                    } else {
                        0.0
                    };
                    total += w;
                    s0 += w * mean;
                    s0sq += w * (mean * mean + var);
                    s.marg[k] += w;
                    s.marg[n + i] += w;
                    s.marg[2 * n + j] += w;
                }
            }
        }
        if !(total > 0.0) {
            return None;
        }
        let s0_mean = s0 / total;
        let s0_sd = (s0sq / total - s0_mean * s0_mean).max(0.0).sqrt();
        let mut out = GridSummary {
            median: [s0_mean, 0.0, 0.0, 0.0],
            mean: [s0_mean, 0.0, 0.0, 0.0],
            sd: [s0_sd, 0.0, 0.0, 0.0],
            interval: [(0.0, 0.0); 3],
        };
        for (a, axis) in axes.iter().enumerate() {
            let w = &s.marg[a * n..(a + 1) * n];
            let h = axis.step(n);
            let quantile = |q: f64| {
                let target = q * total;
                let mut acc = 0.0;
                for (k, wk) in w.iter().enumerate() {
                    if acc + wk >= target && *wk > 0.0 {
                        let t = axis.lo + h * (k as f64 + (target - acc) / wk);
                        return axis.value(t);
                    }
                    acc += wk;
                }
                axis.value(axis.hi)
            };
            let (mut m1, mut m2) = (0.0, 0.0);
            for (k, wk) in w.iter().enumerate() {
                let x = axis.value(axis.centre(k, n));
                m1 += wk * x;
                m2 += wk * x * x;
            }
            let mean = m1 / total;
            out.median[a + 1] = quantile(0.5);
            out.mean[a + 1] = mean;
            out.sd[a + 1] = (m2 / total - mean * mean).max(0.0).sqrt();
            out.interval[a] = (quantile(0.025), quantile(0.975));
        }
        Some(out)
    }
}

/// Fits a population prior, a normal in the axis coordinate (ln D* when
/// `log`, so D* is log-normal; D itself otherwise), to many voxels'
/// marginals from [`GridPosterior::rate_marginals`] under a flat prior in
/// that coordinate (`likelihoods`: voxels x `bins`, each row the marginal
/// likelihood per cell of `[lo, hi]`, or of `[ln lo, ln hi]`).
///
/// Empirical Bayes: the mean and SD of the normal maximise the marginal
/// likelihood of all voxels together, found by EM (Dempster, Laird & Rubin,
/// JRSS B 1977): each voxel's posterior moments under the current prior,
/// then the prior's mean and variance from their averages. This is the
/// hierarchical (shrinkage) prior of Orton et al. (MRM 2014), applied per
/// rate. The truncation to the bounds is left out of the M-step (the fitted
/// normal is the one whose truncation the voxels see). The SD is kept at
/// least one cell wide. Returns `(median, sigma of ln)` when `log`, `(mean,
/// SD)` otherwise; `None` without any voxel. Deterministic: sums run in
/// voxel order.
pub fn population_prior(
    likelihoods: &[f64],
    bins: usize,
    (lo, hi): (f64, f64),
    log: bool,
) -> Option<(f64, f64)> {
    if bins == 0 || likelihoods.is_empty() || !(hi > lo && (!log || lo > 0.0)) {
        return None;
    }
    let (a, b) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
    let h = (b - a) / bins as f64;
    let t: Vec<f64> = (0..bins).map(|k| a + (k as f64 + 0.5) * h).collect();
    let rows: Vec<&[f64]> = likelihoods
        .chunks_exact(bins)
        .filter(|r| r.iter().sum::<f64>() > 0.0)
        .collect();
    if rows.is_empty() {
        return None;
    }
    // Start: the spread of the voxels' own means under the flat prior.
    let moments = |prior: &[f64], r: &[f64]| {
        let (mut w, mut m1, mut m2) = (0.0, 0.0, 0.0);
        for ((p, l), x) in prior.iter().zip(r).zip(&t) {
            let q = p * l;
            w += q;
            m1 += q * x;
            m2 += q * x * x;
        }
        if w > 0.0 {
            let m = m1 / w;
            Some((m, (m2 / w - m * m).max(0.0)))
        } else {
            None
        }
    };
    let mut prior = vec![1.0; bins];
    let (mut mu, mut var) = (0.5 * (a + b), (b - a).powi(2) / 12.0);
    let floor = h * h;
    let flat = vec![1.0; bins];
    for _ in 0..300 {
        let (mut s1, mut s2, mut count) = (0.0, 0.0, 0.0);
        for r in &rows {
            // A voxel with no overlap with the current prior keeps the flat
            // prior's moments (it still counts).
            let (m, v) = moments(&prior, r).or_else(|| moments(&flat, r))?;
            s1 += m;
            s2 += v + m * m;
            count += 1.0;
        }
        let new_mu = s1 / count;
        let new_var = (s2 / count - new_mu * new_mu).max(floor);
        let done = (new_mu - mu).abs() < 1e-5 && (new_var.sqrt() - var.sqrt()).abs() < 1e-5;
        mu = new_mu;
        var = new_var;
        for (p, x) in prior.iter_mut().zip(&t) {
            *p = (-0.5 * (x - mu).powi(2) / var).exp();
        }
        if done {
            break;
        }
    }
    Some((if log { mu.exp() } else { mu }, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::ln;

    #[test]
    fn fast_ln_matches_the_standard_logarithm() {
        let mut worst: f64 = 0.0;
        let mut x = 1e-300f64;
        while x < 1e300 {
            for k in 0..7 {
                let v = x * (1.0 + 0.37 * k as f64);
                worst = worst.max((ln(v) - v.ln()).abs() / v.ln().abs().max(1.0));
            }
            x *= 1.7;
        }
        for v in [
            1.0,
            std::f64::consts::SQRT_2,
            0.5,
            2.0,
            f64::MIN_POSITIVE,
            f64::MAX,
        ] {
            worst = worst.max((ln(v) - v.ln()).abs() / v.ln().abs().max(1.0));
        }
        assert!(worst < 4e-16, "worst relative error {worst:e}");
    }
}
