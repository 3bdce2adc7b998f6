//! Compartments: the signal of one tissue population, each written once,
//! generic over [`Num`] (values on `f64`, exact Jacobians on dual numbers).
//!
//! Every oriented compartment is axially symmetric about its direction n, so
//! it is one kernel K(c) of c = g.n. From that kernel follow, with no
//! per-compartment code: the signal along g, the spherical mean
//! (the integral of K over c in [0, 1]) and the Watson-dispersed signal (a
//! Legendre/spherical-harmonic convolution, [`crate::model`]).
//!
//! Signal equations (internal units um, ms; see [`crate::scheme`]):
//!
//! | name | equation | reference |
//! |---|---|---|
//! | `ball` | exp(-b D) | Behrens et al. 2003 |
//! | `stick` | exp(-b lambda_par c^2) | Behrens et al. 2003 |
//! | `zeppelin` | exp(-b (lambda_perp + (lambda_par - lambda_perp) c^2)) | Panagiotaki et al. 2012 |
//! | `tensor` | exp(-b (lambda_3 + (lambda_1 - lambda_3) c^2 + (lambda_2 - lambda_3) c_2^2)), c_2 = g.n_2 | Basser et al. 1994 |
//! | `dot` | 1 | Panagiotaki et al. 2012 |
//! | `cylinder_soderman` | exp(-b lambda_par c^2) (2 J1(x) / x)^2, x = 2 pi q R sqrt(1 - c^2) | Soderman & Jonsson 1995 |
//! | `cylinder_gpd` | exp(-b lambda_par c^2) exp(-2 (gamma G)^2 (1 - c^2) S_cyl) | van Gelderen et al. 1994 |
//! | `sphere_short_pulse` | (3 (sin x - x cos x) / x^3)^2, x = 2 pi q R | Balinov et al. 1993 |
//! | `sphere_gpd` | exp(-2 (gamma G)^2 S_sph) | Murday & Cotts 1968; SANDI (Palombo et al. 2020) |
//! | `cylinder_callaghan` | exp(-b lambda_par c^2) E_C(x, s), x = 2 pi q R sqrt(1 - c^2), s = lambda_par tau / R^2 | Callaghan 1995 |
//! | `sphere_callaghan` | E_S(x, s), x = 2 pi q R, s = D tau / R^2 | Callaghan 1995 |
//! | `plane_callaghan` | exp(-b lambda_par (1 - c^2)) E_P(x, s), x = 2 pi q L c, s = lambda_par tau / L^2 | Callaghan 1995; Tanner & Stejskal 1968 |
//! | `plane_short_pulse` | exp(-b lambda_par (1 - c^2)) (sin(x/2) / (x/2))^2, x = 2 pi q L c (n the planes' normal) | Balinov et al. 1993 |
//!
//! with gamma G = 2 pi q / delta and, for roots x_m of J1' (cylinder, k = 1)
//! or of the spherical j1' (sphere, k = 2), alpha_m = x_m / R:
//! S = sum_m [2 D alpha_m^2 delta - 2 + 2 e^(-D alpha_m^2 delta) + 2 e^(-D alpha_m^2 Delta)
//! - e^(-D alpha_m^2 (Delta - delta)) - e^(-D alpha_m^2 (Delta + delta))] / (D^2 alpha_m^6 (x_m^2 - k)).
//!
//! The Callaghan forms are short-pulse signals at a finite diffusion time
//! tau = Delta - delta/3, sums over the pore's eigenmodes (roots alpha of
//! J_n' for the cylinder, of j_n' for the sphere; the weights are in
//! [`crate::special::CallaghanTerm`]):
//! E_C = (2 J1(x) / x)^2 + sum w e^(-alpha^2 s) (x J_n'(x))^2 / (x^2 - alpha^2)^2,
//! E_S = (3 j1(x) / x)^2 + sum w e^(-alpha^2 s) (x j_n'(x))^2 / (x^2 - alpha^2)^2,
//! E_P = 2 (1 - cos x) / x^2 + sum_(m >= 1) 4 e^(-(m pi)^2 s) x^2 (1 - (-1)^m cos x) / (x^2 - (m pi)^2)^2.
//! As tau grows only the first terms stay: the short-pulse (Soderman,
//! Balinov) forms.

use crate::special::{
    bessel_j_derivative, callaghan_cylinder_terms, callaghan_sphere_terms, cylinder_roots, sphere_roots,
    spherical_bessel, spherical_derivative, CALLAGHAN_N_MAX,
};
use osipy_core::{Extension, KindInfo, Unit};
use osipy_fitting::dual::Num;

/// What a parameter is: its unit in configs and maps, and the factor from
/// that unit to the crate's internal unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Polar angle theta or azimuth phi (rad).
    Angle,
    /// A diffusivity: mm^2/s outside, um^2/ms inside (x 1000).
    Diffusivity,
    /// A radius or a distance (um, the same inside).
    Length,
    /// A dimensionless value in [0, 1] (ODI, fractions).
    Unitless,
}

impl ParamKind {
    /// The unit of configs and maps.
    pub fn unit(self) -> Unit {
        match self {
            ParamKind::Angle => Unit::Radians,
            ParamKind::Diffusivity => Unit::Mm2PerSecond,
            ParamKind::Length => Unit::Micrometres,
            ParamKind::Unitless => Unit::Dimensionless,
        }
    }

    /// Internal value per unit of [`ParamKind::unit`].
    pub fn scale(self) -> f64 {
        match self {
            ParamKind::Diffusivity => 1000.0,
            _ => 1.0,
        }
    }
}

/// One parameter of a compartment (bounds in internal units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CParam {
    /// Name, as in configs (`lambda_par`).
    pub name: &'static str,
    /// Kind (unit and scale).
    pub kind: ParamKind,
    /// Default bounds, internal units.
    pub bounds: (f64, f64),
    /// Values tried by the brute-force start, internal units.
    pub grid: &'static [f64],
}

const THETA: CParam = CParam {
    name: "theta",
    kind: ParamKind::Angle,
    // Wider than [0, pi] so the fit never stops on a bound at a pole; the
    // direction is folded back onto the upper hemisphere afterwards.
    bounds: (-std::f64::consts::PI, 2.0 * std::f64::consts::PI),
    grid: &[],
};
const PHI: CParam = CParam {
    name: "phi",
    kind: ParamKind::Angle,
    bounds: (-2.0 * std::f64::consts::PI, 2.0 * std::f64::consts::PI),
    grid: &[],
};
const fn diffusivity(name: &'static str, grid: &'static [f64]) -> CParam {
    CParam {
        name,
        kind: ParamKind::Diffusivity,
        bounds: (0.01, 4.0),
        grid,
    }
}
const D_GRID: &[f64] = &[0.3, 0.7, 1.1, 1.5, 2.0, 2.5, 3.0];
const RADIUS: CParam = CParam {
    name: "radius",
    kind: ParamKind::Length,
    bounds: (0.1, 20.0),
    grid: &[1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0],
};
/// Orientation dispersion index of a Watson distribution,
/// ODI = 2/pi arctan(1/kappa) (Zhang et al. 2012).
pub const ODI: CParam = CParam {
    name: "odi",
    kind: ParamKind::Unitless,
    bounds: (0.01, 0.99),
    grid: &[0.03, 0.08, 0.15, 0.25, 0.4, 0.6, 0.85],
};

/// Rotation psi of a tensor's second axis about its first (rad).
const PSI: CParam = CParam {
    name: "psi",
    kind: ParamKind::Angle,
    bounds: (-std::f64::consts::PI, 2.0 * std::f64::consts::PI),
    grid: &[],
};

/// The kinds of compartment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Isotropic Gaussian diffusion (G1).
    Ball,
    /// Zero-radius cylinder (C1).
    Stick,
    /// Axially symmetric tensor (G2).
    Zeppelin,
    /// Full diffusion tensor: eigenvalues lambda_1 along n = (theta, phi),
    /// lambda_2 along n_2 (n's frame turned by psi), lambda_3 along n x n_2.
    Tensor,
    /// Fully restricted, no signal decay (S1).
    Dot,
    /// Cylinder, short-pulse approximation (C2).
    CylinderSoderman,
    /// Cylinder, Gaussian phase distribution (C4).
    CylinderGpd,
    /// Sphere, short-pulse approximation (S2).
    SphereShortPulse,
    /// Sphere, Gaussian phase distribution (S4).
    SphereGpd,
    /// Diffusion between two parallel planes, short pulse (P2).
    PlaneShortPulse,
    /// Cylinder, short pulses at a finite diffusion time (C3).
    CylinderCallaghan,
    /// Sphere, short pulses at a finite diffusion time (S3).
    SphereCallaghan,
    /// Parallel planes, short pulses at a finite diffusion time (P3).
    PlaneCallaghan,
}

impl Kind {
    /// Parameters after the orientation (theta, phi come first for oriented kinds).
    pub fn shape_params(self) -> &'static [CParam] {
        const BALL: &[CParam] = &[diffusivity("D", D_GRID)];
        const PAR: &[f64] = &[0.8, 1.2, 1.6, 2.0, 2.4, 2.8];
        const STICK: &[CParam] = &[diffusivity("lambda_par", PAR)];
        const ZEPPELIN: &[CParam] = &[diffusivity("lambda_par", PAR), diffusivity("lambda_perp", PERP)];
        const PERP: &[f64] = &[0.1, 0.3, 0.5, 0.8, 1.2];
        const TENSOR: &[CParam] = &[
            PSI,
            diffusivity("lambda_1", PAR),
            diffusivity("lambda_2", PERP),
            diffusivity("lambda_3", PERP),
        ];
        const CYLINDER: &[CParam] = &[diffusivity("lambda_par", PAR), RADIUS];
        const SPHERE_SP: &[CParam] = &[RADIUS];
        const SPHERE_GPD: &[CParam] = &[RADIUS, diffusivity("D", &[1.0, 2.0, 3.0])];
        const PLANE: &[CParam] = &[
            diffusivity("lambda_par", PAR),
            CParam {
                name: "spacing",
                kind: ParamKind::Length,
                bounds: (0.1, 50.0),
                grid: &[1.0, 2.0, 4.0, 7.0, 10.0, 15.0, 20.0, 30.0],
            },
        ];
        match self {
            Kind::Ball => BALL,
            Kind::Stick => STICK,
            Kind::Zeppelin => ZEPPELIN,
            Kind::Tensor => TENSOR,
            Kind::Dot => &[],
            Kind::CylinderSoderman | Kind::CylinderGpd | Kind::CylinderCallaghan => CYLINDER,
            Kind::SphereShortPulse => SPHERE_SP,
            Kind::SphereGpd | Kind::SphereCallaghan => SPHERE_GPD,
            Kind::PlaneShortPulse | Kind::PlaneCallaghan => PLANE,
        }
    }

    /// Whether the signal depends on the direction (theta, phi).
    pub fn oriented(self) -> bool {
        matches!(
            self,
            Kind::Stick
                | Kind::Zeppelin
                | Kind::Tensor
                | Kind::CylinderSoderman
                | Kind::CylinderGpd
                | Kind::CylinderCallaghan
                | Kind::PlaneShortPulse
                | Kind::PlaneCallaghan
        )
    }

    /// Whether the signal needs the pulse timing (delta, Delta).
    pub fn needs_timing(self) -> bool {
        matches!(
            self,
            Kind::CylinderSoderman
                | Kind::CylinderGpd
                | Kind::SphereShortPulse
                | Kind::SphereGpd
                | Kind::PlaneShortPulse
                | Kind::CylinderCallaghan
                | Kind::SphereCallaghan
                | Kind::PlaneCallaghan
        )
    }

    /// The per-evaluation constant of the GPD kinds (the sum S of the module
    /// docs, ms^2 um^2) and of the Callaghan kinds (s = D tau / R^2), zero
    /// for the others. `p` are the shape parameters.
    pub fn prepare<T: Num>(self, p: &[T], timing: (f64, f64)) -> T {
        let tau = timing.1 - timing.0 / 3.0;
        match self {
            Kind::CylinderCallaghan | Kind::PlaneCallaghan => return p[0] * T::c(tau) / (p[1] * p[1]),
            Kind::SphereCallaghan => return p[1] * T::c(tau) / (p[0] * p[0]),
            _ => {}
        }
        let (roots, k, r, d) = match self {
            Kind::CylinderGpd => (cylinder_roots(), 1.0, p[1], p[0]),
            Kind::SphereGpd => (sphere_roots(), 2.0, p[0], p[1]),
            _ => return T::c(0.0),
        };
        let (delta, big) = timing;
        let mut sum = T::c(0.0);
        for &x in roots {
            let a2 = T::c(x * x) / (r * r);
            let y = d * a2;
            let num = T::c(2.0 * delta) * y - T::c(2.0)
                + T::c(2.0) * (-(y * T::c(delta))).exp()
                + T::c(2.0) * (-(y * T::c(big))).exp()
                - (-(y * T::c(big - delta))).exp()
                - (-(y * T::c(big + delta))).exp();
            sum = sum + num / (d * d * a2 * a2 * a2 * T::c(x * x - k));
        }
        sum
    }

    /// The kernel at c = g.n (oriented kinds) for one measurement with
    /// b-value `b` (ms/um^2) and wave number `q` (1/um); `p` are the shape
    /// parameters, `pre` what [`Kind::prepare`] returned, `delta` in ms.
    #[inline]
    pub fn kernel<T: Num>(self, c: T, b: f64, q: f64, delta: f64, p: &[T], pre: T) -> T {
        let two_pi = 2.0 * std::f64::consts::PI;
        match self {
            Kind::Ball => (-(T::c(b) * p[0])).exp(),
            Kind::Stick => (-(T::c(b) * p[0] * c * c)).exp(),
            Kind::Zeppelin => (-(T::c(b) * (p[1] + (p[0] - p[1]) * c * c))).exp(),
            // Not axially symmetric: the value along a g with g.n_2 = 0;
            // the model evaluates the full form ([`Kind::tensor`]).
            Kind::Tensor => Kind::tensor(c, T::c(0.0), b, p),
            Kind::Dot => T::c(1.0),
            Kind::CylinderSoderman => {
                let par = (-(T::c(b) * p[0] * c * c)).exp();
                let s2 = T::c(1.0) - c * c;
                if s2.value() <= 1e-14 || q == 0.0 {
                    return par;
                }
                let x = T::c(two_pi * q) * p[1] * s2.sqrt();
                let e = jinc(x);
                par * e * e
            }
            Kind::CylinderGpd => {
                let par = (-(T::c(b) * p[0] * c * c)).exp();
                let gg = two_pi * q / delta;
                par * (-(T::c(2.0 * gg * gg) * (T::c(1.0) - c * c) * pre)).exp()
            }
            Kind::SphereShortPulse => {
                let x = T::c(two_pi * q) * p[0];
                // Series below 0.05, where sin x - x cos x loses digits.
                let e = if x.value() < 0.05 {
                    let x2 = x * x;
                    T::c(1.0) - x2 / T::c(10.0) + x2 * x2 / T::c(280.0)
                } else {
                    T::c(3.0) * (x.sin() - x * x.cos()) / (x * x * x)
                };
                e * e
            }
            Kind::SphereGpd => {
                let gg = two_pi * q / delta;
                (-(T::c(2.0 * gg * gg) * pre)).exp()
            }
            Kind::PlaneShortPulse => {
                // Free along the planes; across them
                // 2 (1 - cos x) / x^2 = (sin(x/2) / (x/2))^2, free of cancellation.
                let along = (-(T::c(b) * p[0] * (T::c(1.0) - c * c))).exp();
                let u = T::c(std::f64::consts::PI * q) * p[1] * c;
                let s = if u.value().abs() < 1e-3 {
                    T::c(1.0) - u * u / T::c(6.0)
                } else {
                    u.sin() / u
                };
                along * s * s
            }
            Kind::CylinderCallaghan => {
                let par = (-(T::c(b) * p[0] * c * c)).exp();
                let s2 = T::c(1.0) - c * c;
                if s2.value() <= 1e-14 || q == 0.0 {
                    return par;
                }
                par * callaghan_cylinder(T::c(two_pi * q) * p[1] * s2.sqrt(), pre)
            }
            Kind::SphereCallaghan => callaghan_sphere(T::c(two_pi * q) * p[0], pre),
            Kind::PlaneCallaghan => {
                let along = (-(T::c(b) * p[0] * (T::c(1.0) - c * c))).exp();
                let x = T::c(two_pi * q) * p[1] * c;
                let x = if x.value() < 0.0 { -x } else { x };
                along * callaghan_plane(x, pre)
            }
        }
    }
}

/// Moves `x` off a removable singularity at `alpha` (both numerator and
/// denominator of a Callaghan term vanish there): to 1e-5 alpha from it,
/// keeping the derivative. The term's value changes by at most 1e-5 of itself.
#[inline]
fn off_root<T: Num>(x: T, alpha: f64) -> T {
    let gap = x.value() - alpha;
    let min = 1e-5 * alpha;
    if gap.abs() >= min {
        x
    } else if gap >= 0.0 {
        x + T::c(min - gap)
    } else {
        x - T::c(min + gap)
    }
}

/// Terms whose factor e^(-alpha^2 s) is below e^-40 are dropped.
const CALLAGHAN_CUTOFF: f64 = 40.0;

/// E_C(x, s) of the module docs: the cylinder's perpendicular signal.
pub fn callaghan_cylinder<T: Num>(x: T, s: T) -> T {
    let e = jinc(x);
    let mut sum = e * e;
    if x.value() < 1e-6 {
        return sum;
    }
    for t in callaghan_cylinder_terms() {
        let a2 = t.alpha * t.alpha;
        if a2 * s.value() > CALLAGHAN_CUTOFF {
            break;
        }
        let x = off_root(x, t.alpha);
        let v = x.value();
        let n = t.n as f64;
        let jn = puruspe::Jn(t.n, v);
        let d1 = bessel_j_derivative(t.n, v);
        // Bessel's equation: J'' = -J'/x - (1 - n^2/x^2) J.
        let d2 = -d1 / v - (1.0 - n * n / (v * v)) * jn;
        let f = x.apply(v * d1, d1 + v * d2);
        let d = x * x - T::c(a2);
        sum = sum + T::c(t.weight) * (-(s * T::c(a2))).exp() * f * f / (d * d);
    }
    sum
}

/// E_S(x, s) of the module docs: the sphere's signal.
pub fn callaghan_sphere<T: Num>(x: T, s: T) -> T {
    // (3 j1(x) / x)^2, with its series below 0.05 (cancellation).
    let e = if x.value() < 0.05 {
        let x2 = x * x;
        T::c(1.0) - x2 / T::c(10.0) + x2 * x2 / T::c(280.0)
    } else {
        T::c(3.0) * (x.sin() - x * x.cos()) / (x * x * x)
    };
    let mut sum = e * e;
    if x.value() < 1e-6 {
        return sum;
    }
    let terms = callaghan_sphere_terms();
    let used = terms
        .iter()
        .take_while(|t| t.alpha * t.alpha * s.value() <= CALLAGHAN_CUTOFF)
        .count();
    if used == 0 {
        return sum;
    }
    let mut j = [0.0; CALLAGHAN_N_MAX as usize + 2];
    let mut at = f64::NAN;
    for t in &terms[..used] {
        let a2 = t.alpha * t.alpha;
        let x = off_root(x, t.alpha);
        let v = x.value();
        if v != at {
            spherical_bessel(v, &mut j[..terms[used - 1].n_max as usize + 2]);
            at = v;
        }
        let nn = (t.n * (t.n + 1)) as f64;
        let d1 = spherical_derivative(t.n, v, &j);
        // x^2 j'' + 2 x j' + (x^2 - n (n + 1)) j = 0.
        let d2 = -2.0 * d1 / v - (1.0 - nn / (v * v)) * j[t.n as usize];
        let f = x.apply(v * d1, d1 + v * d2);
        let d = x * x - T::c(a2);
        sum = sum + T::c(t.weight) * (-(s * T::c(a2))).exp() * f * f / (d * d);
    }
    sum
}

/// E_P(x, s) of the module docs (x >= 0): the signal across the planes.
pub fn callaghan_plane<T: Num>(x: T, s: T) -> T {
    let u = x / T::c(2.0);
    let e = if u.value() < 1e-3 {
        T::c(1.0) - u * u / T::c(6.0)
    } else {
        u.sin() / u
    };
    let mut sum = e * e;
    if x.value() < 1e-6 {
        return sum;
    }
    let mut m = 1.0f64;
    loop {
        let a = m * std::f64::consts::PI;
        // The terms fall only as x^2 / (m pi)^4: 400 of them leave under 1e-6 at x = 20.
        if a * a * s.value() > CALLAGHAN_CUTOFF || m > 400.0 {
            break;
        }
        let x = off_root(x, a);
        let sign = if (m as u64) % 2 == 0 { 1.0 } else { -1.0 };
        let d = x * x - T::c(a * a);
        let num = x * x * (T::c(1.0) - T::c(sign) * x.cos());
        sum = sum + T::c(4.0) * (-(s * T::c(a * a))).exp() * num / (d * d);
        m += 1.0;
    }
    sum
}

impl Kind {
    /// The tensor's signal for c = g.n, c_2 = g.n_2 and shape parameters
    /// `p` = (psi, lambda_1, lambda_2, lambda_3): with c_3^2 = 1 - c^2 -
    /// c_2^2 for a unit g, g^T D g = lambda_3 + (lambda_1 - lambda_3) c^2 +
    /// (lambda_2 - lambda_3) c_2^2 (Basser et al. 1994).
    #[inline]
    pub fn tensor<T: Num>(c: T, c2: T, b: f64, p: &[T]) -> T {
        (-(T::c(b) * (p[3] + (p[1] - p[3]) * c * c + (p[2] - p[3]) * c2 * c2))).exp()
    }
}

/// The tensor's second axis: n's polar unit vector e_theta turned by psi
/// towards e_phi (unit and orthogonal to [`direction`]`(theta, phi)`).
pub fn second_axis<T: Num>(theta: T, phi: T, psi: T) -> [T; 3] {
    let (ct, st, cp, sp) = (theta.cos(), theta.sin(), phi.cos(), phi.sin());
    let (a, b) = (psi.cos(), psi.sin());
    [a * ct * cp - b * sp, a * ct * sp + b * cp, -(a * st)]
}

/// 2 J1(x) / x, with its derivative 2 J0(x) / x - 4 J1(x) / x^2.
fn jinc<T: Num>(x: T) -> T {
    let v = x.value();
    if v.abs() < 1e-4 {
        return T::c(1.0) - x * x / T::c(8.0);
    }
    let (j0, j1) = (puruspe::Jn(0, v), puruspe::Jn(1, v));
    x.apply(2.0 * j1 / v, 2.0 * j0 / v - 4.0 * j1 / (v * v))
}

/// Orientation dispersion of an oriented compartment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispersion {
    /// All of the compartment along one direction.
    None,
    /// Watson-distributed directions about (theta, phi) with concentration
    /// kappa, given as ODI (Zhang et al. 2012).
    Watson,
}

/// Registry entry of a compartment (registry `microstructure_compartments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compartment {
    /// The kernel.
    pub kind: Kind,
    /// Its orientation dispersion.
    pub dispersion: Dispersion,
}

impl Extension for Compartment {
    const KIND: KindInfo = KindInfo {
        id: "microstructure_compartments",
        label: "microstructure compartment",
        config_key: "microstructure: pipeline.compartments",
    };
}

impl Compartment {
    /// Every parameter in order: theta, phi (oriented), odi (Watson), then
    /// the kind's shape parameters.
    pub fn params(&self) -> Vec<CParam> {
        let mut v = Vec::new();
        if self.kind.oriented() {
            v.extend([THETA, PHI]);
        }
        if self.dispersion == Dispersion::Watson {
            v.push(ODI);
        }
        v.extend_from_slice(self.kind.shape_params());
        v
    }
}

/// The compartments this crate registers: (name, description, entry).
pub const COMPARTMENTS: &[(&str, &str, Compartment)] = &[
    (
        "ball",
        "isotropic Gaussian diffusion, D (G1; free water, CSF)",
        plain(Kind::Ball),
    ),
    (
        "stick",
        "zero-radius cylinder along (theta, phi), lambda_par (C1; axons)",
        plain(Kind::Stick),
    ),
    (
        "zeppelin",
        "axially symmetric tensor, lambda_par and lambda_perp (G2; extra-axonal space)",
        plain(Kind::Zeppelin),
    ),
    (
        "tensor",
        "full diffusion tensor: lambda_1 along (theta, phi), lambda_2 and lambda_3 across it, second axis turned by psi (DTI); not in spherical-mean models",
        plain(Kind::Tensor),
    ),
    ("dot", "fully restricted water, no decay (S1)", plain(Kind::Dot)),
    (
        "cylinder_soderman",
        "cylinder of radius R, short-pulse approximation (C2); needs delta, Delta",
        plain(Kind::CylinderSoderman),
    ),
    (
        "cylinder_gpd",
        "cylinder of radius R, Gaussian phase distribution (C4, van Gelderen); needs delta, Delta",
        plain(Kind::CylinderGpd),
    ),
    (
        "sphere_short_pulse",
        "sphere of radius R, short-pulse approximation (S2); needs delta, Delta",
        plain(Kind::SphereShortPulse),
    ),
    (
        "sphere_gpd",
        "sphere of radius R, Gaussian phase distribution (S4, Murday-Cotts, as SANDI); needs delta, Delta",
        plain(Kind::SphereGpd),
    ),
    (
        "plane_short_pulse",
        "parallel planes at spacing L with normal (theta, phi), free diffusion lambda_par along them, short pulse (P2); needs delta, Delta",
        plain(Kind::PlaneShortPulse),
    ),
    (
        "cylinder_callaghan",
        "cylinder of radius R, short pulses at a finite diffusion time (C3, Callaghan); needs delta, Delta",
        plain(Kind::CylinderCallaghan),
    ),
    (
        "sphere_callaghan",
        "sphere of radius R, short pulses at a finite diffusion time (S3, Callaghan); needs delta, Delta",
        plain(Kind::SphereCallaghan),
    ),
    (
        "plane_callaghan",
        "parallel planes at spacing L, short pulses at a finite diffusion time (P3, Callaghan); needs delta, Delta",
        plain(Kind::PlaneCallaghan),
    ),
    (
        "watson_stick",
        "sticks with Watson-dispersed directions about (theta, phi), odi (NODDI intra-neurite)",
        Compartment {
            kind: Kind::Stick,
            dispersion: Dispersion::Watson,
        },
    ),
    (
        "watson_zeppelin",
        "zeppelins with Watson-dispersed directions, odi (NODDI extra-neurite)",
        Compartment {
            kind: Kind::Zeppelin,
            dispersion: Dispersion::Watson,
        },
    ),
];

const fn plain(kind: Kind) -> Compartment {
    Compartment {
        kind,
        dispersion: Dispersion::None,
    }
}

/// n = (sin theta cos phi, sin theta sin phi, cos theta).
pub fn direction<T: Num>(theta: T, phi: T) -> [T; 3] {
    let st = theta.sin();
    [st * phi.cos(), st * phi.sin(), theta.cos()]
}
