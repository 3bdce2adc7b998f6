//! Forward-mode dual numbers: a signal model is written once, generic over
//! [`Num`], and evaluated on `f64` for predictions and on [`Dual`] for exact
//! Jacobians (no finite differences, no hand-derived derivative code to drift
//! from the model). Used by the ASL kinetic models and the microstructure
//! compartments.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// The arithmetic the kinetic models use.
pub trait Num:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self>
{
    /// A constant.
    fn c(v: f64) -> Self;
    /// The value (without derivatives).
    fn value(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// e^x - 1, accurate near 0.
    fn exp_m1(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Sine.
    fn sin(self) -> Self;
    /// Cosine.
    fn cos(self) -> Self;
    /// `g(self)` for any scalar function `g`, given its value `g` and
    /// derivative `dg` at `self.value()` (special functions: Bessel...).
    fn apply(self, g: f64, dg: f64) -> Self;
}

impl Num for f64 {
    fn c(v: f64) -> Self {
        v
    }
    fn value(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn exp_m1(self) -> Self {
        f64::exp_m1(self)
    }
    fn erf(self) -> Self {
        puruspe::erf(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn sin(self) -> Self {
        f64::sin(self)
    }
    fn cos(self) -> Self {
        f64::cos(self)
    }
    fn apply(self, g: f64, _dg: f64) -> Self {
        g
    }
}

/// [`Dual`] in CUDA C++ (`OsipyDual<N>`, `osipy_dual_c`, `osipy_dual_var`,
/// `osipy_dual_exp`, `osipy_dual_expm1`, `osipy_dual_erf` and the four
/// operators), with the same operations in the same order, for the GPU
/// kernels of models whose Jacobian comes from it.
pub const DUAL_GPU: &str = include_str!("dual.cuh");

/// A value with its gradient with respect to `N` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dual<const N: usize> {
    /// The value.
    pub v: f64,
    /// d value / d parameter j.
    pub d: [f64; N],
}

impl<const N: usize> Dual<N> {
    /// Parameter `j` with value `v` (unit derivative in slot `j`).
    pub fn var(v: f64, j: usize) -> Self {
        let mut d = [0.0; N];
        d[j] = 1.0;
        Dual { v, d }
    }

    /// A function of this value with derivative `dv` (chain rule).
    fn chain(self, v: f64, dv: f64) -> Self {
        let mut d = self.d;
        for x in &mut d {
            *x *= dv;
        }
        Dual { v, d }
    }
}

impl<const N: usize> Add for Dual<N> {
    type Output = Self;
    fn add(mut self, o: Self) -> Self {
        self.v += o.v;
        for (a, b) in self.d.iter_mut().zip(o.d) {
            *a += b;
        }
        self
    }
}

impl<const N: usize> Sub for Dual<N> {
    type Output = Self;
    fn sub(mut self, o: Self) -> Self {
        self.v -= o.v;
        for (a, b) in self.d.iter_mut().zip(o.d) {
            *a -= b;
        }
        self
    }
}

impl<const N: usize> Mul for Dual<N> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        let mut d = [0.0; N];
        for j in 0..N {
            d[j] = self.d[j] * o.v + self.v * o.d[j];
        }
        Dual { v: self.v * o.v, d }
    }
}

impl<const N: usize> Div for Dual<N> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        let q = self.v / o.v;
        let mut d = [0.0; N];
        for j in 0..N {
            d[j] = (self.d[j] - q * o.d[j]) / o.v;
        }
        Dual { v: q, d }
    }
}

impl<const N: usize> Neg for Dual<N> {
    type Output = Self;
    fn neg(self) -> Self {
        self.chain(-self.v, -1.0)
    }
}

impl<const N: usize> Num for Dual<N> {
    fn c(v: f64) -> Self {
        Dual { v, d: [0.0; N] }
    }
    fn value(self) -> f64 {
        self.v
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e)
    }
    fn exp_m1(self) -> Self {
        self.chain(self.v.exp_m1(), self.v.exp())
    }
    fn erf(self) -> Self {
        let dv = std::f64::consts::FRAC_2_SQRT_PI * (-self.v * self.v).exp();
        self.chain(puruspe::erf(self.v), dv)
    }
    fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        self.chain(r, 0.5 / r)
    }
    fn sin(self) -> Self {
        self.chain(self.v.sin(), self.v.cos())
    }
    fn cos(self) -> Self {
        self.chain(self.v.cos(), -self.v.sin())
    }
    fn apply(self, g: f64, dg: f64) -> Self {
        self.chain(g, dg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f<T: Num>(x: T, y: T) -> T {
        (x * y).exp_m1() / (x + T::c(2.0)) - (-y).exp() * x.erf() + (x * x + y * y).sqrt() * y.sin() - x.cos()
            + y.apply(y.value().tanh(), 1.0 / y.value().cosh().powi(2))
    }

    #[test]
    fn derivatives_match_central_differences() {
        let (x, y) = (0.7, -0.3);
        let d = f(Dual::<2>::var(x, 0), Dual::<2>::var(y, 1));
        assert!((d.v - f(x, y)).abs() < 1e-15);
        let h = 1e-6;
        let dx = (f(x + h, y) - f(x - h, y)) / (2.0 * h);
        let dy = (f(x, y + h) - f(x, y - h)) / (2.0 * h);
        assert!((d.d[0] - dx).abs() < 1e-8, "{} vs {dx}", d.d[0]);
        assert!((d.d[1] - dy).abs() < 1e-8, "{} vs {dy}", d.d[1]);
    }
}
