//! Multi-compartment models: compartments composed with volume fractions and
//! parameter links, as one [`osipy_fitting::Model`] for the shared LM engine.
//!
//! * **Fractions.** Compartments may have a fixed fraction (`"ball.fraction"
//!   = 0.1`); the others share what is left through nested (stick-breaking)
//!   partial fractions p_k in [0, 1]: f_1 = p_1 r, f_2 = (1 - p_1) p_2 r, ...,
//!   the last takes the rest, with r = 1 - (sum of fixed fractions). Fractions
//!   therefore always sum to one and the bounds are a box, which the bounded
//!   LM handles exactly. For NODDI's order (ball, stick, zeppelin) p_ball is
//!   the free-water fraction and p_stick the neurite density v_ic (Zhang et
//!   al. 2012).
//! * **Links** (`"zeppelin.lambda_par" = ...`): a number fixes a parameter (in
//!   its config unit), `"other.param"` makes it equal to another compartment's,
//!   `"tortuous(stick)"` on a `lambda_perp` sets lambda_perp = (1 - f_i /
//!   (f_i + f_e)) lambda_par with f_i the named compartment's fraction and
//!   f_e this one's (Szafer et al. 1995).
//! * **Spherical mean** models (SMT, SANDI) fit the direction-averaged signal
//!   of each shell; orientations drop out, and each oriented kernel becomes
//!   its integral over c = g.n in [0, 1].
//! * **Watson dispersion**: with Legendre moments k_l of the kernel and
//!   f_l of the Watson density (both by Gauss-Legendre quadrature on [0, 1]),
//!   E(g) = sum over even l of (2l + 1) f_l k_l P_l(g.mu), the
//!   spherical-harmonic convolution of dmipy (Fick et al. 2019), exact to the
//!   truncation order [`L_MAX`] and on each shell's mean b-value.

use crate::compartment::{direction, second_axis, CParam, Compartment, Dispersion, Kind, ParamKind, ODI};
use crate::scheme::Scheme;
use crate::special::{even_legendre, even_legendre_with_derivative, gauss_legendre_01};
use osipy_core::{OsipyError, Registry, Result, Unit};
use osipy_fitting::dual::{Dual, Num};
use osipy_fitting::{Model, ParamSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest Legendre order of the dispersion convolution. The stick kernel's
/// coefficients fall as (b lambda)^(l/2) / Gamma(l + 3/2): at b lambda = 17
/// (b = 10,000 s/mm^2) the first omitted term is below 1e-6.
pub const L_MAX: usize = 20;
const NL: usize = L_MAX / 2 + 1;
/// Quadrature nodes on c in [0, 1] for kernel moments, spherical means and
/// the Watson density (ODI >= 0.01, kappa <= 64: error below 1e-9).
const NQ: usize = 64;
/// Most shells a dispersed model handles (coefficients live on the stack).
pub const MAX_SHELLS: usize = 32;
/// Most free parameters, S0 included (the widest dual number).
pub const MAX_FREE: usize = 16;
/// Most starting points per voxel ([`MultiCompartment::grid_starts`]).
pub const MAX_STARTS: usize = 8;
/// Directions of the brute-force orientation search (upper hemisphere).
const N_DIRECTIONS: usize = 120;
/// Budget of the brute-force grid over the other parameters, in predicted
/// samples per voxel: the grid has at most this / samples points (and
/// between [`MIN_GRID`] and [`MAX_GRID`]).
const GRID_BUDGET: usize = 200_000;
const MIN_GRID: usize = 100;
const MAX_GRID: usize = 20_000;
/// Values of a partial fraction on the grid.
const FRACTION_GRID: &[f64] = &[0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95];

/// A link value in the config: a number, or a text (`"stick.lambda_par"`,
/// `"tortuous(stick)"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LinkValue {
    /// Fixed at this value (config units: mm^2/s, um, rad, fraction).
    Number(f64),
    /// Equal to another parameter, or tortuous.
    Text(String),
}

/// A model before binding to a scheme: compartment names, links, mode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    /// Registered compartment names, in fraction order.
    pub compartments: Vec<String>,
    /// `"instance.param"` (or `"instance.fraction"`) to its link.
    pub links: BTreeMap<String, LinkValue>,
    /// Fit the direction-averaged signal of each shell.
    pub spherical_mean: bool,
    /// Extra map names: (alias, source map), e.g. ("NDI", ...).
    pub aliases: Vec<(&'static str, String)>,
    /// Default bounds by free-parameter name, config units (a preset's;
    /// `pipeline.fitting.bounds` overrides them).
    pub bounds: Vec<(&'static str, [f64; 2])>,
    /// LM starts per voxel when the config sets none (0: [`DEFAULT_STARTS`]).
    pub starts: usize,
}

/// LM starts per voxel of a model that names none.
pub const DEFAULT_STARTS: usize = 3;

impl ModelSpec {
    /// The LM starts per voxel: `configured`, else the spec's own, else
    /// [`DEFAULT_STARTS`].
    pub fn starts(&self, configured: Option<usize>) -> usize {
        configured.unwrap_or(if self.starts == 0 {
            DEFAULT_STARTS
        } else {
            self.starts
        })
    }
}

/// Where a compartment parameter's value comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Src {
    /// Free parameter `i` of the fit vector.
    Free(usize),
    /// Fixed (internal units).
    Fixed(f64),
    /// (1 - f_intra / (f_intra + f_self)) x parameter `par` of this compartment.
    Tortuous { intra: usize, par: usize },
}

#[derive(Debug, Clone)]
struct Instance {
    name: String,
    comp: Compartment,
    params: Vec<CParam>,
    src: Vec<Src>,
}

/// What each free parameter is, for maps.
#[derive(Debug, Clone, PartialEq)]
pub enum FreeParam {
    /// The unattenuated signal.
    S0,
    /// Parameter `param` of compartment `instance`.
    Param {
        /// Compartment instance.
        instance: usize,
        /// Parameter of that compartment.
        param: usize,
    },
    /// Nested partial fraction of compartment `instance`.
    Partial {
        /// Compartment instance.
        instance: usize,
    },
}

/// One fitted sample's acquisition: b (ms/um^2), q (1/um), direction, shell.
#[derive(Debug, Clone, Copy)]
struct Sample {
    b: f64,
    q: f64,
    g: [f64; 3],
    shell: usize,
}

/// A composed model bound to its acquisition scheme.
#[derive(Debug, Clone)]
pub struct MultiCompartment {
    instances: Vec<Instance>,
    fixed_fractions: Vec<Option<f64>>,
    /// Instances sharing the free fraction, in order, with their partial
    /// fraction's free index (none for the last).
    shared: Vec<(usize, Option<usize>)>,
    free: Vec<FreeParam>,
    specs: Vec<ParamSpec>,
    spherical_mean: bool,
    samples: Vec<Sample>,
    /// (b, q) of each shell.
    shells: Vec<(f64, f64)>,
    delta: f64,
    timing: (f64, f64),
    nodes: Vec<f64>,
    weights: Vec<f64>,
    /// P_l(node) for even l: `legendre[n][l/2]`.
    legendre: Vec<[f64; NL]>,
    grid: Grid,
    aliases: Vec<(&'static str, String)>,
    /// Watson-dispersed instances sharing one orientation (see `eval`).
    watson_groups: Vec<Vec<usize>>,
    /// Whether each instance is in a Watson group.
    in_group: Vec<bool>,
    /// Whether every sample of each shell has the shell's b and q (then
    /// isotropic compartments are evaluated once per shell).
    shells_exact: bool,
}

/// The brute-force start: directions, then a grid over the other free parameters.
#[derive(Debug, Clone, Default)]
struct Grid {
    /// (theta, phi) of each candidate direction.
    directions: Vec<(f64, f64)>,
    /// Predictions (S0 = 1) along each direction, other parameters at their
    /// middle grid values, with their squared norms.
    direction_signals: Vec<Vec<f64>>,
    /// Free parameter indices of each free orientation: (theta, phi).
    orientations: Vec<(usize, usize)>,
    /// The other free parameters' starting points: the middle value, and the
    /// combinations tried.
    middle: Vec<f64>,
    points: Vec<Vec<f64>>,
    /// How a voxel's grid is scored (precomputed where the voxel does not
    /// change it).
    table: GridTable,
}

/// Precomputed grid predictions.
#[derive(Debug, Clone, Default)]
enum GridTable {
    /// No orientation: every point's prediction (points x samples).
    Signals(Vec<f64>),
    /// One free orientation shared by every oriented compartment: each
    /// point's Legendre coefficients per shell (points x shells x NL), so a
    /// voxel's grid at its direction mu costs one P_l(g.mu) table.
    Legendre(Vec<[f64; NL]>),
    /// Anything else: predicted per voxel.
    #[default]
    PerVoxel,
}

fn intern(s: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut set = match set.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(v) = set.get(s.as_str()) {
        return v;
    }
    let v: &'static str = Box::leak(s.into_boxed_str());
    set.insert(v);
    v
}

impl MultiCompartment {
    /// Binds `spec` to `scheme`, resolving names through `reg`. `bounds`
    /// overrides default bounds by map name (`stick_lambda_par`), in config
    /// units.
    pub fn new(
        spec: &ModelSpec,
        scheme: &Scheme,
        reg: &Registry,
        bounds: &BTreeMap<String, [f64; 2]>,
    ) -> Result<MultiCompartment> {
        if spec.compartments.is_empty() {
            return Err(OsipyError::MissingParameter {
                name: "pipeline.compartments".into(),
                needed_for: "a custom microstructure model".into(),
                hint: "list registered compartments, e.g. compartments = [\"ball\", \"stick\"], or pick a preset model".into(),
            });
        }
        // Instances, named after their compartment (with _2, _3 for repeats).
        let mut instances: Vec<Instance> = Vec::new();
        for name in &spec.compartments {
            let comp = *reg.get::<Compartment>(name)?;
            let seen = instances
                .iter()
                .filter(|i| i.comp == comp && i.name.starts_with(name.as_str()))
                .count();
            let inst_name = if seen > 0 {
                format!("{name}_{}", seen + 1)
            } else {
                name.clone()
            };
            let mut params = comp.params();
            if spec.spherical_mean {
                if comp.dispersion != Dispersion::None {
                    return Err(OsipyError::Validation(format!(
                        "compartment {name} is orientation-dispersed, which has no effect on a spherical-mean signal; use the undispersed {}",
                        name.trim_start_matches("watson_")
                    )));
                }
                if comp.kind == Kind::Tensor {
                    return Err(OsipyError::Validation(format!(
                        "compartment {name} (a full tensor) has no spherical mean in this crate; use zeppelin, whose spherical mean is exact"
                    )));
                }
                params.retain(|p| p.kind != ParamKind::Angle);
            }
            if comp.kind.needs_timing() {
                scheme.timing(&format!("the {name} compartment"))?;
            }
            instances.push(Instance {
                name: inst_name,
                comp,
                src: vec![Src::Fixed(0.0); params.len()],
                params,
            });
        }
        // Fixed fractions.
        let mut fixed_fractions = vec![None; instances.len()];
        let mut links: Vec<(usize, usize, &LinkValue, &str)> = Vec::new();
        for (key, value) in &spec.links {
            let (i, j) = find(&instances, key).ok_or_else(|| OsipyError::UnknownName {
                kind: "parameter in pipeline.links".into(),
                name: key.to_string(),
                valid: valid_keys(&instances),
            })?;
            match (j, value) {
                (None, LinkValue::Number(f)) if (0.0..=1.0).contains(f) => fixed_fractions[i] = Some(*f),
                (None, v) => {
                    return Err(OsipyError::metadata(
                        format!("pipeline.links.\"{key}\""),
                        format!("{v:?}")
                            .replace("Number(", "")
                            .replace("Text(", "")
                            .trim_end_matches(')')
                            .to_string(),
                        "a fixed fraction between 0 and 1",
                    ))
                }
                (Some(j), v) => links.push((i, j, v, key)),
            }
        }
        let n_inst = instances.len();
        let fixed_sum: f64 = fixed_fractions.iter().flatten().sum();
        let n_shared = fixed_fractions.iter().filter(|f| f.is_none()).count();
        if n_inst > 1
            && ((n_shared == 0 && (fixed_sum - 1.0).abs() > 1e-9) || (n_shared > 0 && fixed_sum >= 1.0))
        {
            return Err(OsipyError::metadata(
                "the fixed fractions in pipeline.links",
                format!("a sum of {fixed_sum}"),
                if n_shared == 0 {
                    "fractions that sum to one when every compartment's fraction is fixed".to_string()
                } else {
                    format!("a sum below 1, leaving a share for the {n_shared} compartment(s) without a fixed fraction")
                },
            ));
        }
        if n_inst == 1 && fixed_fractions[0].is_some_and(|f| (f - 1.0).abs() > 1e-9) {
            return Err(OsipyError::metadata(
                format!("pipeline.links.\"{}.fraction\"", instances[0].name),
                fixed_fractions[0].unwrap_or(1.0),
                "1 (a one-compartment model holds all the signal)",
            ));
        }
        // Free parameters: S0, then each compartment's unlinked parameters.
        let mut free = vec![FreeParam::S0];
        let linked: Vec<(usize, usize)> = links.iter().map(|(i, j, _, _)| (*i, *j)).collect();
        for (i, x) in instances.iter_mut().enumerate() {
            for j in 0..x.params.len() {
                if !linked.contains(&(i, j)) {
                    x.src[j] = Src::Free(free.len());
                    free.push(FreeParam::Param {
                        instance: i,
                        param: j,
                    });
                }
            }
        }
        // Links: numbers and tortuosity first, then equalities (which may
        // point at any resolved parameter).
        let mut pending: Vec<(usize, usize, String, &str)> = Vec::new();
        for (i, j, v, key) in links {
            let p = instances[i].params[j];
            match v {
                LinkValue::Number(x) => {
                    let internal = x * p.kind.scale();
                    if !internal.is_finite() {
                        return Err(OsipyError::metadata(
                            format!("pipeline.links.\"{key}\""),
                            x,
                            "a finite value",
                        ));
                    }
                    instances[i].src[j] = Src::Fixed(internal);
                }
                LinkValue::Text(t) => {
                    if let Some(target) = t.strip_prefix("tortuous(").and_then(|r| r.strip_suffix(')')) {
                        let intra = instances.iter().position(|x| x.name == target.trim());
                        let par = instances[i].params.iter().position(|q| q.name == "lambda_par");
                        match (p.name, intra, par) {
                            ("lambda_perp", Some(intra), Some(par)) if intra != i => {
                                instances[i].src[j] = Src::Tortuous { intra, par };
                            }
                            _ => {
                                return Err(OsipyError::metadata(
                                    format!("pipeline.links.\"{key}\""),
                                    format!("\"{t}\""),
                                    format!(
                                        "tortuous(<another compartment>) on a lambda_perp; compartments: {}",
                                        instances
                                            .iter()
                                            .map(|x| x.name.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                ))
                            }
                        }
                    } else {
                        pending.push((i, j, t.clone(), key));
                    }
                }
            }
        }
        for _ in 0..=pending.len() {
            let waiting: Vec<Option<(usize, Option<usize>)>> =
                pending.iter().map(|(i, j, _, _)| Some((*i, Some(*j)))).collect();
            let mut left = Vec::new();
            let mut progressed = false;
            for (i, j, t, key) in pending {
                let (ti, tj) = match find(&instances, &t) {
                    Some((ti, Some(tj))) if (ti, tj) != (i, j) => (ti, tj),
                    _ => {
                        return Err(OsipyError::UnknownName {
                            kind: format!("link target of pipeline.links.\"{key}\" (another parameter, or tortuous(<compartment>))"),
                            name: t,
                            valid: valid_keys(&instances),
                        })
                    }
                };
                if instances[ti].params[tj].kind != instances[i].params[j].kind {
                    return Err(OsipyError::metadata(
                        format!("pipeline.links.\"{key}\""),
                        format!("\"{t}\""),
                        format!("a parameter of the same kind ({:?})", instances[i].params[j].kind)
                            .to_lowercase(),
                    ));
                }
                if waiting.contains(&Some((ti, Some(tj)))) {
                    left.push((i, j, t, key));
                    continue;
                }
                instances[i].src[j] = match instances[ti].src[tj] {
                    Src::Tortuous { .. } => {
                        return Err(OsipyError::metadata(
                            format!("pipeline.links.\"{key}\""),
                            format!("\"{t}\""),
                            "a free or fixed parameter (the target is itself tortuous; link to the same tortuous(...) instead)",
                        ))
                    }
                    src => src,
                };
                progressed = true;
            }
            pending = left;
            if pending.is_empty() {
                break;
            }
            if !progressed {
                return Err(OsipyError::Validation(format!(
                    "pipeline.links form a cycle: {}",
                    pending
                        .iter()
                        .map(|(_, _, t, k)| format!("\"{k}\" = \"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        // Fractions.
        let mut shared = Vec::new();
        if n_inst > 1 {
            let idx: Vec<usize> = (0..n_inst).filter(|&i| fixed_fractions[i].is_none()).collect();
            for (k, &i) in idx.iter().enumerate() {
                if k + 1 < idx.len() {
                    shared.push((i, Some(free.len())));
                    free.push(FreeParam::Partial { instance: i });
                } else {
                    shared.push((i, None));
                }
            }
        } else {
            shared.push((0, None));
        }
        if free.len() > MAX_FREE {
            return Err(OsipyError::Validation(format!(
                "the model has {} free parameters; at most {MAX_FREE} are supported (fix or link some in pipeline.links)",
                free.len()
            )));
        }
        // Names, bounds.
        let mut specs = Vec::new();
        for f in &free {
            let (name, unit, b) = match f {
                FreeParam::S0 => ("S0".to_string(), Unit::Arbitrary, (0.0, f64::INFINITY)),
                FreeParam::Param { instance, param } => {
                    let p = instances[*instance].params[*param];
                    (
                        format!("{}_{}", instances[*instance].name, p.name),
                        p.kind.unit(),
                        p.bounds,
                    )
                }
                FreeParam::Partial { instance } => (
                    format!("{}_partial_fraction", instances[*instance].name),
                    Unit::Dimensionless,
                    (0.0, 1.0),
                ),
            };
            let scale = match f {
                FreeParam::Param { instance, param } => instances[*instance].params[*param].kind.scale(),
                _ => 1.0,
            };
            let preset = spec.bounds.iter().find(|(n, _)| *n == name).map(|(_, b)| b);
            let b = match bounds.get(&name).or(preset) {
                Some([lo, hi]) => (lo * scale, hi * scale),
                None => b,
            };
            specs.push(ParamSpec::new(intern(name.clone()), intern(name), unit, b));
        }
        for key in bounds.keys() {
            if !specs.iter().any(|s| s.name == key) {
                return Err(OsipyError::UnknownName {
                    kind: "free parameter in pipeline.fitting.bounds".into(),
                    name: key.clone(),
                    valid: specs.iter().map(|s| s.name.to_string()).collect(),
                });
            }
        }
        // Samples.
        let timing = scheme.timing("").unwrap_or((0.0, 0.0));
        let q_of = |b: f64| {
            if timing.1 > 0.0 {
                scheme.q(b, timing.0, timing.1)
            } else {
                0.0
            }
        };
        let shells: Vec<(f64, f64)> = scheme.shells.iter().map(|s| (s.b, q_of(s.b))).collect();
        let samples: Vec<Sample> = if spec.spherical_mean {
            shells
                .iter()
                .enumerate()
                .map(|(k, &(b, q))| Sample {
                    b,
                    q,
                    g: [0.0; 3],
                    shell: k,
                })
                .collect()
        } else {
            (0..scheme.len())
                .map(|i| Sample {
                    b: scheme.b[i],
                    q: q_of(scheme.b[i]),
                    g: scheme.g[i],
                    shell: scheme.shell_of[i],
                })
                .collect()
        };
        if shells.len() > MAX_SHELLS && instances.iter().any(|x| x.comp.dispersion != Dispersion::None) {
            return Err(OsipyError::metadata(
                "shells in the b-values",
                shells.len(),
                format!(
                    "at most {MAX_SHELLS} for a dispersed model (b-values within {} s/mm^2 form one shell)",
                    crate::scheme::SHELL_GAP
                ),
            ));
        }
        if samples.len() <= free.len() {
            return Err(OsipyError::metadata(
                if spec.spherical_mean { "shells in the b-values (b = 0 included)" } else { "DWI volumes" },
                samples.len(),
                format!(
                    "more than the model's {} free parameters ({}); a spherical-mean model needs one shell per parameter and more",
                    free.len(),
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let (nodes, weights) = gauss_legendre_01(NQ);
        let legendre = nodes
            .iter()
            .map(|&c| {
                let mut p = [0.0; NL];
                even_legendre(c, &mut p);
                p
            })
            .collect();
        let mut m = MultiCompartment {
            instances,
            fixed_fractions,
            shared,
            free,
            specs,
            spherical_mean: spec.spherical_mean,
            samples,
            shells,
            delta: timing.0,
            timing,
            nodes,
            weights,
            legendre,
            grid: Grid::default(),
            aliases: spec.aliases.clone(),
            watson_groups: Vec::new(),
            in_group: Vec::new(),
            shells_exact: false,
        };
        if !m.spherical_mean {
            for (ci, inst) in m.instances.iter().enumerate() {
                if inst.comp.dispersion != Dispersion::Watson {
                    continue;
                }
                let key = (inst.src[0], inst.src[1]);
                match m
                    .watson_groups
                    .iter_mut()
                    .find(|g| (m.instances[g[0]].src[0], m.instances[g[0]].src[1]) == key)
                {
                    Some(g) => g.push(ci),
                    None => m.watson_groups.push(vec![ci]),
                }
            }
        }
        m.in_group = (0..m.instances.len())
            .map(|ci| m.watson_groups.iter().any(|g| g.contains(&ci)))
            .collect();
        m.shells_exact = m.shells.len() <= MAX_SHELLS
            && m.samples.iter().all(|s| {
                let (b, q) = m.shells[s.shell];
                (s.b - b).abs() <= 1e-12 * b && (s.q - q).abs() <= 1e-12 * q
            });
        m.grid = m.build_grid();
        Ok(m)
    }

    /// What each free parameter is.
    pub fn free_params(&self) -> &[FreeParam] {
        &self.free
    }

    /// Compartment instance names, in order.
    pub fn instance_names(&self) -> Vec<&str> {
        self.instances.iter().map(|x| x.name.as_str()).collect()
    }

    /// The kind of parameter `param` of `instance`.
    pub fn param_kind(&self, instance: usize, param: usize) -> ParamKind {
        self.instances[instance].params[param].kind
    }

    /// Whether the model fits direction-averaged shells.
    pub fn spherical_mean(&self) -> bool {
        self.spherical_mean
    }

    /// Alias maps: (alias, source map name).
    pub fn aliases(&self) -> &[(&'static str, String)] {
        &self.aliases
    }

    /// Volume fractions of every compartment for fit vector `x`.
    pub fn fractions(&self, x: &[f64]) -> Vec<f64> {
        let mut f = vec![0.0; self.instances.len()];
        self.fill_fractions(x, &mut f);
        f
    }

    fn fill_fractions<T: Num>(&self, x: &[T], f: &mut [T]) {
        let fixed: f64 = self.fixed_fractions.iter().flatten().sum();
        for (i, v) in self.fixed_fractions.iter().enumerate() {
            if let Some(v) = v {
                f[i] = T::c(*v);
            }
        }
        let mut left = T::c(1.0 - fixed);
        for &(i, p) in &self.shared {
            match p {
                Some(k) => {
                    f[i] = left * x[k];
                    left = left * (T::c(1.0) - x[k]);
                }
                None => f[i] = left,
            }
        }
    }

    /// The model signal for fit vector `x`, each sample's value passed to
    /// `emit(sample, value)` once per compartment or group (the caller sums).
    ///
    /// Watson-dispersed compartments sharing one orientation are one group:
    /// their Legendre series add up per shell before each sample's
    /// P_l(g.mu) is evaluated, once, in f64 with its derivative (the
    /// orientation's part of the Jacobian follows from dP_l/dc, exactly).
    /// Isotropic compartments are evaluated once per shell where every
    /// sample of a shell has the same b and q.
    fn eval<T: Num>(&self, x: &[T], mut emit: impl FnMut(usize, T)) {
        let mut f = [T::c(0.0); 16];
        self.fill_fractions(x, &mut f[..self.instances.len().min(16)]);
        let s0 = x[0];
        let c0 = T::c(0.0);
        for group in &self.watson_groups {
            let mut acc = [[c0; NL]; MAX_SHELLS];
            let mut mu = [c0, c0, T::c(1.0)];
            // The Watson moments of each distinct ODI (NODDI: one).
            let mut moments: [(Src, [T; NL]); 4] = [(Src::Fixed(f64::NAN), [c0; NL]); 4];
            let mut n_moments = 0;
            for (k, &ci) in group.iter().enumerate() {
                let inst = &self.instances[ci];
                let v = self.resolve(ci, x, &f);
                if k == 0 {
                    mu = direction(v[0], v[1]);
                }
                let kind = inst.comp.kind;
                let shape = &v[3..inst.params.len()];
                let pre = kind.prepare(shape, self.timing);
                let odi_src = inst.src[2];
                let fl = match moments[..n_moments].iter().find(|(s, _)| *s == odi_src) {
                    Some((_, fl)) => *fl,
                    None => {
                        let fl = self.watson_moments(v[2]);
                        if n_moments < moments.len() {
                            moments[n_moments] = (odi_src, fl);
                            n_moments += 1;
                        }
                        fl
                    }
                };
                let coef = self.legendre_coefficients(kind, Some(&fl), shape, pre);
                let w = s0 * f[ci];
                for (a, c) in acc.iter_mut().zip(&coef).take(self.shells.len()) {
                    for l in 0..NL {
                        a[l] = a[l] + w * c[l];
                    }
                }
            }
            let (mut p, mut dp) = ([0.0; NL], [0.0; NL]);
            for (i, s) in self.samples.iter().enumerate() {
                let c = mu[0] * T::c(s.g[0]) + mu[1] * T::c(s.g[1]) + mu[2] * T::c(s.g[2]);
                let cv = c.value();
                even_legendre_with_derivative(cv, &mut p, &mut dp);
                let a = &acc[s.shell];
                let (mut e, mut slope) = (c0, 0.0);
                for l in 0..NL {
                    e = e + a[l] * T::c(p[l]);
                    slope += a[l].value() * dp[l];
                }
                // First order in c - c.value() is exact for the Jacobian.
                emit(i, e + (c - T::c(cv)) * T::c(slope));
            }
        }
        for (ci, inst) in self.instances.iter().enumerate() {
            if self.in_group[ci] {
                continue;
            }
            let w = s0 * f[ci];
            let v = self.resolve(ci, x, &f);
            let n = inst.params.len();
            let (orient, shape) = if inst.comp.kind.oriented() && !self.spherical_mean {
                let skip = if inst.comp.dispersion == Dispersion::Watson {
                    3
                } else {
                    2
                };
                (Some(direction(v[0], v[1])), &v[skip..n])
            } else {
                (None, &v[..n])
            };
            let kind = inst.comp.kind;
            let pre = kind.prepare(shape, self.timing);
            if kind == Kind::Tensor {
                let n = orient.unwrap_or([c0, c0, T::c(1.0)]);
                let n2 = second_axis(v[0], v[1], v[2]);
                for (i, s) in self.samples.iter().enumerate() {
                    let g = [T::c(s.g[0]), T::c(s.g[1]), T::c(s.g[2])];
                    let c = n[0] * g[0] + n[1] * g[1] + n[2] * g[2];
                    let c2 = n2[0] * g[0] + n2[1] * g[1] + n2[2] * g[2];
                    emit(i, w * Kind::tensor(c, c2, s.b, shape));
                }
            } else if kind.oriented() && self.spherical_mean {
                for (i, s) in self.samples.iter().enumerate() {
                    let mut e = c0;
                    for (c, wq) in self.nodes.iter().zip(&self.weights) {
                        e = e + T::c(*wq) * kind.kernel(T::c(*c), s.b, s.q, self.delta, shape, pre);
                    }
                    emit(i, w * e);
                }
            } else if orient.is_none() && self.shells_exact {
                let mut per_shell = [c0; MAX_SHELLS];
                for (e, &(b, q)) in per_shell.iter_mut().zip(&self.shells) {
                    *e = w * kind.kernel(c0, b, q, self.delta, shape, pre);
                }
                for (i, s) in self.samples.iter().enumerate() {
                    emit(i, per_shell[s.shell]);
                }
            } else {
                for (i, s) in self.samples.iter().enumerate() {
                    let c = match orient {
                        Some(n) => n[0] * T::c(s.g[0]) + n[1] * T::c(s.g[1]) + n[2] * T::c(s.g[2]),
                        None => c0,
                    };
                    emit(i, w * kind.kernel(c, s.b, s.q, self.delta, shape, pre));
                }
            }
        }
    }

    /// Parameter values of compartment `ci` for fit vector `x` and
    /// fractions `f` (links and tortuosity resolved).
    fn resolve<T: Num>(&self, ci: usize, x: &[T], f: &[T]) -> [T; 8] {
        let inst = &self.instances[ci];
        let mut v = [T::c(0.0); 8];
        for (j, src) in inst.src.iter().enumerate() {
            v[j] = match *src {
                Src::Free(k) => x[k],
                Src::Fixed(c) => T::c(c),
                Src::Tortuous { .. } => T::c(0.0),
            };
        }
        for (j, src) in inst.src.iter().enumerate() {
            if let Src::Tortuous { intra, par } = *src {
                let fi = f[intra];
                v[j] = (T::c(1.0) - fi / (fi + f[ci])) * v[par];
            }
        }
        v
    }

    /// The Watson density's normalised Legendre moments f_l / f_0 for
    /// `odi`: kappa = 1 / tan(pi/2 ODI) (Zhang et al. 2012, eq. 3).
    fn watson_moments<T: Num>(&self, odi: T) -> [T; NL] {
        let c0 = T::c(0.0);
        let a = odi * T::c(std::f64::consts::FRAC_PI_2);
        let kappa = a.cos() / a.sin();
        let mut fl = [c0; NL];
        let mut norm = c0;
        for (n, (&c, &wq)) in self.nodes.iter().zip(&self.weights).enumerate() {
            let d = T::c(wq) * (kappa * T::c(c * c - 1.0)).exp();
            norm = norm + d;
            for l in 0..NL {
                fl[l] = fl[l] + d * T::c(self.legendre[n][l]);
            }
        }
        for v in &mut fl {
            *v = *v / norm;
        }
        fl
    }

    /// (2l + 1) f_l k_l(shell) for each shell and even l: the Legendre
    /// series in c = g.mu of the kernel (f_l = 1, `fl` None) or of its
    /// Watson-dispersed version (`fl` from [`Self::watson_moments`]).
    fn legendre_coefficients<T: Num>(
        &self,
        kind: Kind,
        fl: Option<&[T; NL]>,
        shape: &[T],
        pre: T,
    ) -> [[T; NL]; MAX_SHELLS] {
        let c0 = T::c(0.0);
        let mut out = [[c0; NL]; MAX_SHELLS];
        let one = [T::c(1.0); NL];
        let fl = fl.unwrap_or(&one);
        for (k, &(b, q)) in self.shells.iter().enumerate().take(MAX_SHELLS) {
            let mut kl = [c0; NL];
            for (n, (&c, &wq)) in self.nodes.iter().zip(&self.weights).enumerate() {
                let kv = T::c(wq) * kind.kernel(T::c(c), b, q, self.delta, shape, pre);
                for l in 0..NL {
                    kl[l] = kl[l] + kv * T::c(self.legendre[n][l]);
                }
            }
            for l in 0..NL {
                out[k][l] = T::c((4 * l + 1) as f64) * fl[l] * kl[l];
            }
        }
        out
    }

    fn jacobian_n<const N: usize>(&self, x: &[f64], out: &mut [f64], jac: &mut [f64]) {
        let ns = self.samples.len();
        let np = x.len();
        out.iter_mut().for_each(|v| *v = 0.0);
        jac.iter_mut().for_each(|v| *v = 0.0);
        let mut xd = [Dual::<N>::c(0.0); MAX_FREE];
        for (j, v) in x.iter().enumerate() {
            xd[j] = Dual::var(*v, j);
        }
        self.eval(&xd[..np], |i, v: Dual<N>| {
            out[i] += v.v;
            for j in 0..np {
                jac[j * ns + i] += v.d[j];
            }
        });
    }

    fn build_grid(&self) -> Grid {
        let mut g = Grid::default();
        let mut middle = vec![1.0; self.free.len()];
        let mut axes: Vec<(usize, Vec<f64>)> = Vec::new();
        let mut thetas = Vec::new();
        for (k, f) in self.free.iter().enumerate() {
            let spec = self.specs[k];
            let clamp = |v: f64| v.clamp(spec.bounds.0, spec.bounds.1);
            match f {
                FreeParam::S0 => {}
                FreeParam::Param { instance, param } => {
                    let p = self.instances[*instance].params[*param];
                    if p.kind == ParamKind::Angle {
                        if p.name == "theta" {
                            thetas.push(k);
                        }
                        continue;
                    }
                    let mut vals: Vec<f64> = p.grid.iter().map(|v| clamp(*v)).collect();
                    vals.dedup();
                    middle[k] = vals[vals.len() / 2];
                    axes.push((k, vals));
                }
                FreeParam::Partial { .. } => {
                    middle[k] = 0.5;
                    axes.push((k, FRACTION_GRID.to_vec()));
                }
            }
        }
        g.orientations = thetas.iter().map(|&t| (t, t + 1)).collect();
        // Thin the axes until the grid fits.
        loop {
            let size: usize = axes.iter().map(|(_, v)| v.len()).product();
            let most = (GRID_BUDGET / self.samples.len().max(1)).clamp(MIN_GRID, MAX_GRID);
            if size <= most {
                break;
            }
            let Some(longest) = axes
                .iter_mut()
                .filter(|(_, v)| v.len() > 2)
                .max_by_key(|(_, v)| v.len())
            else {
                break;
            };
            let v = &mut longest.1;
            // Drop the value next to the middle, keeping the ends.
            v.remove(v.len() / 2);
        }
        let mut points = vec![middle.clone()];
        for (k, vals) in &axes {
            points = points
                .iter()
                .flat_map(|p| {
                    vals.iter().map(move |v| {
                        let mut q = p.clone();
                        q[*k] = *v;
                        q
                    })
                })
                .collect();
        }
        g.middle = middle.clone();
        g.points = points;
        g.table = self.grid_table(&g);
        if !g.orientations.is_empty() {
            // Fibonacci points on the upper hemisphere.
            let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
            for i in 0..N_DIRECTIONS {
                let z = 1.0 - (i as f64 + 0.5) / N_DIRECTIONS as f64;
                let phi = (golden * i as f64).rem_euclid(2.0 * std::f64::consts::PI) - std::f64::consts::PI;
                g.directions.push((z.acos(), phi));
            }
            let mut buf = vec![0.0; self.samples.len()];
            for &(t, p) in &g.directions {
                let mut x = middle.clone();
                for &(kt, kp) in &g.orientations {
                    x[kt] = t;
                    x[kp] = p;
                }
                self.predict(&x, &mut buf);
                g.direction_signals.push(buf.clone());
            }
        }
        g
    }

    /// The brute-force starts for `data`: the best direction on the sphere
    /// grid (for every free orientation, further ones at least 45 degrees
    /// from those chosen), then the `out.len() / n_params` best points of
    /// the grid over the other parameters, best first (at most
    /// [`MAX_STARTS`]); S0 by least squares at each candidate. `scratch`
    /// holds [`Model::scratch_len`] values (no allocation per voxel).
    /// `n_samples` values.
    pub fn grid_starts(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        let (ns, np) = (self.samples.len(), self.free.len());
        let (buf, rest_scratch) = scratch.split_at_mut(ns);
        let (ptable, rest_scratch) =
            rest_scratch.split_at_mut((ns * NL).max(self.shells.len() * NL * (NL + 1)));
        let (xs, base) = rest_scratch.split_at_mut(np);
        let base = &mut base[..np];
        let n_starts = (out.len() / np).clamp(1, MAX_STARTS);
        let (first, rest) = out.split_at_mut(np);
        let score = |m: &[f64]| -> (f64, f64) {
            let (mut dm, mut mm, mut dd) = (0.0, 0.0, 0.0);
            for (d, m) in data.iter().zip(m) {
                dm += d * m;
                mm += m * m;
                dd += d * d;
            }
            if !(mm > 0.0) || !(dm > 0.0) {
                return (f64::INFINITY, 1.0);
            }
            (dd - dm * dm / mm, dm / mm)
        };
        let out = first;
        out.copy_from_slice(&self.grid.middle);
        if !self.grid.orientations.is_empty() {
            let mut chosen: Vec<[f64; 3]> = Vec::new();
            for &(kt, kp) in &self.grid.orientations {
                let mut best = (f64::INFINITY, 0usize);
                for (k, sig) in self.grid.direction_signals.iter().enumerate() {
                    let (t, p) = self.grid.directions[k];
                    let n = direction(t, p);
                    if chosen
                        .iter()
                        .any(|c| (c[0] * n[0] + c[1] * n[1] + c[2] * n[2]).abs() > 0.707)
                    {
                        continue;
                    }
                    let (r, _) = score(sig);
                    if r < best.0 {
                        best = (r, k);
                    }
                }
                let (t, p) = self.grid.directions[best.1];
                chosen.push(direction(t, p));
                out[kt] = t;
                out[kp] = p;
            }
        }
        // The best n_starts (score, point, S0), best first.
        let mut best = [(f64::INFINITY, 0usize, 1.0); MAX_STARTS];
        let dd: f64 = data.iter().map(|d| d * d).sum();
        let mut consider_parts = |k: usize, dm: f64, mm: f64| {
            let (r, s) = if mm > 0.0 && dm > 0.0 {
                (dd - dm * dm / mm, dm / mm)
            } else {
                (f64::INFINITY, 1.0)
            };
            if r < best[n_starts - 1].0 {
                let mut at = n_starts - 1;
                while at > 0 && r < best[at - 1].0 {
                    best[at] = best[at - 1];
                    at -= 1;
                }
                best[at] = (r, k, s);
            }
        };
        let mut consider = |k: usize, m: &[f64]| {
            let (mut dm, mut mm) = (0.0, 0.0);
            for (d, m) in data.iter().zip(m) {
                dm += d * m;
                mm += m * m;
            }
            consider_parts(k, dm, mm)
        };
        let ns = self.samples.len();
        match &self.grid.table {
            GridTable::Signals(sig) => {
                for k in 0..self.grid.points.len() {
                    consider(k, &sig[k * ns..(k + 1) * ns]);
                }
            }
            GridTable::Legendre(coef) => {
                let (kt, kp) = self.grid.orientations[0];
                let mu = direction(out[kt], out[kp]);
                let nsh = self.shells.len();
                // Per shell, the data's projections D_l = sum d_i P_l(g_i.mu)
                // and the Gram matrix G_ll' = sum P_l P_l': then a grid
                // point with coefficients C costs sum C.D and sum C^T G C
                // per shell instead of a pass over every sample.
                let (proj, gram) = ptable.split_at_mut(nsh * NL);
                let gram = &mut gram[..nsh * NL * NL];
                proj.iter_mut().for_each(|v| *v = 0.0);
                gram.iter_mut().for_each(|v| *v = 0.0);
                let mut p = [0.0; NL];
                for (s, d) in self.samples.iter().zip(data) {
                    even_legendre(mu[0] * s.g[0] + mu[1] * s.g[1] + mu[2] * s.g[2], &mut p);
                    let dsh = &mut proj[s.shell * NL..(s.shell + 1) * NL];
                    let gsh = &mut gram[s.shell * NL * NL..(s.shell + 1) * NL * NL];
                    for l in 0..NL {
                        dsh[l] += d * p[l];
                        for m in l..NL {
                            gsh[l * NL + m] += p[l] * p[m];
                        }
                    }
                }
                for k in 0..self.grid.points.len() {
                    let c = &coef[k * nsh..(k + 1) * nsh];
                    let (mut dm, mut mm) = (0.0, 0.0);
                    for (sh, cs) in c.iter().enumerate() {
                        let dsh = &proj[sh * NL..(sh + 1) * NL];
                        let gsh = &gram[sh * NL * NL..(sh + 1) * NL * NL];
                        for l in 0..NL {
                            dm += cs[l] * dsh[l];
                            let mut row = 0.5 * gsh[l * NL + l] * cs[l];
                            for m in l + 1..NL {
                                row += gsh[l * NL + m] * cs[m];
                            }
                            mm += 2.0 * cs[l] * row;
                        }
                    }
                    consider_parts(k, dm, mm);
                }
            }
            GridTable::PerVoxel => {
                let x = &mut xs[..];
                x.copy_from_slice(out);
                for (k, pt) in self.grid.points.iter().enumerate() {
                    for (j, v) in pt.iter().enumerate() {
                        if !self.grid.orientations.iter().any(|&(a, b)| a == j || b == j) {
                            x[j] = *v;
                        }
                    }
                    x[0] = 1.0;
                    self.predict(x, buf);
                    consider(k, buf);
                }
            }
        }
        base.copy_from_slice(out);
        let fallback = data.iter().copied().fold(0.0, f64::max).max(1e-12);
        for (i, x) in std::iter::once(out)
            .chain(rest.chunks_exact_mut(np))
            .enumerate()
            .take(n_starts)
        {
            // Fewer finite candidates than starts: repeat the best.
            let b = if best[i].0.is_finite() { best[i] } else { best[0] };
            x.copy_from_slice(base);
            for (j, v) in self.grid.points[b.1].iter().enumerate() {
                if !self.grid.orientations.iter().any(|&(a, c)| a == j || c == j) {
                    x[j] = *v;
                }
            }
            x[0] = if b.2.is_finite() && b.2 > 0.0 {
                b.2
            } else {
                fallback
            };
        }
    }

    /// The precomputed form of the grid (see [`GridTable`]).
    fn grid_table(&self, g: &Grid) -> GridTable {
        let ns = self.samples.len();
        if g.orientations.is_empty() {
            let mut sig = vec![0.0; g.points.len() * ns];
            for (k, pt) in g.points.iter().enumerate() {
                let mut x = pt.clone();
                x[0] = 1.0;
                self.predict(&x, &mut sig[k * ns..(k + 1) * ns]);
            }
            return GridTable::Signals(sig);
        }
        let (kt, kp) = g.orientations[0];
        // (A tensor is not axially symmetric: no Legendre series in g.n.)
        let shared = g.orientations.len() == 1
            && self.shells.len() <= MAX_SHELLS
            && self.instances.iter().all(|x| {
                x.comp.kind != Kind::Tensor
                    && (!x.comp.kind.oriented() || (x.src[0] == Src::Free(kt) && x.src[1] == Src::Free(kp)))
            });
        if !shared {
            return GridTable::PerVoxel;
        }
        let nsh = self.shells.len();
        let mut coef = vec![[0.0; NL]; g.points.len() * nsh];
        let mut f = [0.0; 16];
        for (k, pt) in g.points.iter().enumerate() {
            let mut x = pt.clone();
            x[0] = 1.0;
            self.fill_fractions(&x, &mut f[..self.instances.len().min(16)]);
            let c = &mut coef[k * nsh..(k + 1) * nsh];
            for (ci, inst) in self.instances.iter().enumerate() {
                let v = self.resolve(ci, &x, &f);
                let n = inst.params.len();
                let kind = inst.comp.kind;
                if kind.oriented() {
                    let watson = inst.comp.dispersion == Dispersion::Watson;
                    let shape = &v[if watson { 3 } else { 2 }..n];
                    let pre = kind.prepare(shape, self.timing);
                    let fl = watson.then(|| self.watson_moments(v[2]));
                    let a = self.legendre_coefficients(kind, fl.as_ref(), shape, pre);
                    for (s, cs) in c.iter_mut().enumerate() {
                        for l in 0..NL {
                            cs[l] += f[ci] * a[s][l];
                        }
                    }
                } else {
                    let shape = &v[..n];
                    let pre = kind.prepare(shape, self.timing);
                    for (s, cs) in c.iter_mut().enumerate() {
                        let (b, q) = self.shells[s];
                        cs[0] += f[ci] * kind.kernel(0.0, b, q, self.delta, shape, pre);
                    }
                }
            }
        }
        GridTable::Legendre(coef)
    }

    /// Folds every free orientation of fit vector `x` onto the upper
    /// hemisphere (n and -n are the same direction): theta in [0, pi/2],
    /// phi in (-pi, pi]. A tensor whose axes and eigenvalues are all free
    /// is first turned so that lambda_1 >= lambda_2 >= lambda_3 (the same
    /// tensor; `se`, the standard errors, follow its eigenvalues), with
    /// psi in [0, pi).
    pub fn canonical_orientation(&self, x: &mut [f64], mut se: Option<&mut [f64]>) {
        for inst in &self.instances {
            if inst.comp.kind != Kind::Tensor || self.spherical_mean {
                continue;
            }
            let mut k = [0usize; 6];
            for (j, src) in inst.src.iter().enumerate().take(6) {
                match src {
                    Src::Free(i) => k[j] = *i,
                    _ => k[j] = usize::MAX,
                }
            }
            if k.contains(&usize::MAX) {
                continue;
            }
            let n1 = direction(x[k[0]], x[k[1]]);
            let n2 = second_axis(x[k[0]], x[k[1]], x[k[2]]);
            let n3 = [
                n1[1] * n2[2] - n1[2] * n2[1],
                n1[2] * n2[0] - n1[0] * n2[2],
                n1[0] * n2[1] - n1[1] * n2[0],
            ];
            let mut axes = [(x[k[3]], n1, 0usize), (x[k[4]], n2, 1), (x[k[5]], n3, 2)];
            axes.sort_by(|a, b| b.0.total_cmp(&a.0));
            let (a, b) = (axes[0].1, axes[1].1);
            let a = if a[2] < 0.0 { [-a[0], -a[1], -a[2]] } else { a };
            let theta = a[2].clamp(-1.0, 1.0).acos();
            let phi = a[1].atan2(a[0]);
            let (ct, st, cp, sp) = (theta.cos(), theta.sin(), phi.cos(), phi.sin());
            let e_theta = [ct * cp, ct * sp, -st];
            let e_phi = [-sp, cp, 0.0];
            let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
            let psi = dot(b, e_phi)
                .atan2(dot(b, e_theta))
                .rem_euclid(std::f64::consts::PI);
            let old: Vec<f64> = k[3..6].iter().map(|&i| x[i]).collect();
            x[k[0]] = theta;
            x[k[1]] = phi;
            x[k[2]] = psi;
            for (j, ax) in axes.iter().enumerate() {
                x[k[3 + j]] = old[ax.2];
            }
            if let Some(se) = se.as_deref_mut() {
                let old: Vec<f64> = k[3..6].iter().map(|&i| se[i]).collect();
                for (j, ax) in axes.iter().enumerate() {
                    se[k[3 + j]] = old[ax.2];
                }
            }
        }
        for &(kt, kp) in &self.grid.orientations {
            let n = direction(x[kt], x[kp]);
            let n = if n[2] < 0.0 { [-n[0], -n[1], -n[2]] } else { n };
            x[kt] = n[2].clamp(-1.0, 1.0).acos();
            x[kp] = n[1].atan2(n[0]);
        }
    }

    /// Eigenvalues (lambda_1, lambda_2, lambda_3, internal units) of each
    /// tensor compartment for fit vector `x`, with the instance's name.
    pub fn tensor_eigenvalues(&self, x: &[f64]) -> Vec<(&str, [f64; 3])> {
        let mut f = [0.0; 16];
        self.fill_fractions(x, &mut f[..self.instances.len().min(16)]);
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, inst)| inst.comp.kind == Kind::Tensor)
            .map(|(ci, inst)| {
                let v = self.resolve(ci, x, &f);
                (inst.name.as_str(), [v[3], v[4], v[5]])
            })
            .collect()
    }

    /// Free orientations as (theta index, phi index) in the fit vector.
    pub fn orientations(&self) -> &[(usize, usize)] {
        &self.grid.orientations
    }
}

/// Checks `spec` (compartment names, links, fractions, bounds) without data:
/// binds it to a synthetic scheme with pulse timing and more shells than
/// any model has parameters, so only the spec's own errors remain.
pub fn check_spec(spec: &ModelSpec, reg: &Registry, bounds: &BTreeMap<String, [f64; 2]>) -> Result<()> {
    let mut b = vec![0.0];
    let mut g = vec![[0.0; 3]];
    for k in 1..=20 {
        for d in crate::scheme::fibonacci_directions(6, k as f64) {
            b.push(500.0 * k as f64);
            g.push(d);
        }
    }
    let src = crate::scheme::Sources {
        bval: "(check)",
        bvec: "(check)",
    };
    let scheme = Scheme::new(&b, &g, Some(0.01), Some(0.04), None, src)?;
    MultiCompartment::new(spec, &scheme, reg, bounds).map(|_| ())
}

/// Instance and parameter of `"instance.param"`; `None` as the parameter
/// for `"instance.fraction"`.
fn find(instances: &[Instance], key: &str) -> Option<(usize, Option<usize>)> {
    let (inst, param) = key.split_once('.')?;
    let i = instances.iter().position(|x| x.name == inst)?;
    if param == "fraction" {
        return Some((i, None));
    }
    let j = instances[i].params.iter().position(|p| p.name == param)?;
    Some((i, Some(j)))
}

/// Every key a link may name.
fn valid_keys(instances: &[Instance]) -> Vec<String> {
    let mut v = Vec::new();
    for x in instances {
        for p in &x.params {
            v.push(format!("{}.{}", x.name, p.name));
        }
        v.push(format!("{}.fraction", x.name));
    }
    v
}

impl Model for MultiCompartment {
    fn name(&self) -> &str {
        "multi_compartment"
    }

    fn params(&self) -> &[ParamSpec] {
        &self.specs
    }

    fn n_samples(&self) -> usize {
        self.samples.len()
    }

    fn scratch_len(&self) -> usize {
        // Prediction, P_l table (or per-shell projections and Gram
        // matrices), trial point, base start.
        let table = (self.samples.len() * NL).max(self.shells.len() * NL * (NL + 1));
        self.samples.len() + table + 2 * self.free.len()
    }

    fn predict(&self, params: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        self.eval(params, |i, v: f64| out[i] += v);
    }

    fn jacobian(&self, params: &[f64], jac: &mut [f64]) -> bool {
        let mut out = vec![0.0; self.samples.len()];
        self.predict_with_jacobian(params, &mut out, jac)
    }

    fn predict_with_jacobian(&self, params: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        match params.len() {
            0..=4 => self.jacobian_n::<4>(params, out, jac),
            5..=8 => self.jacobian_n::<8>(params, out, jac),
            9..=12 => self.jacobian_n::<12>(params, out, jac),
            _ => self.jacobian_n::<MAX_FREE>(params, out, jac),
        }
        true
    }

    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        let mut scratch = vec![0.0; self.scratch_len()];
        self.grid_starts(data, out, &mut scratch);
    }

    fn initial_guess_in(&self, data: &[f64], out: &mut [f64], scratch: &mut [f64]) {
        self.grid_starts(data, out, scratch);
    }
}

/// The ODI parameter spec (for docs and checks).
pub const WATSON_ODI: CParam = ODI;
