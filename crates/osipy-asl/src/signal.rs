//! MRI signal equations of the ASL phantom (the forms of ASLDRO's
//! `MriSignalFilter`, checked against its validation spreadsheet): they
//! turn magnetisation into the control, label and M0 images, with the
//! T1 saturation a short-TR M0 scan carries.

/// Gradient echo with T2 steady-state term:
/// S = sin(FA) M0 (1 - E1) / (1 - cos(FA) E1 - E2 (E1 - cos(FA))) e^(-TE/T2\*),
/// E1 = e^(-TR/T1), E2 = e^(-TR/T2). Times in s, FA in degrees.
pub fn gradient_echo(m0: f64, t1: f64, t2: f64, t2_star: f64, te: f64, tr: f64, flip_deg: f64) -> f64 {
    let (s, c) = flip_deg.to_radians().sin_cos();
    let e1 = (-tr / t1).exp();
    let e2 = (-tr / t2).exp();
    s * m0 * (1.0 - e1) / (1.0 - c * e1 - e2 * (e1 - c)) * (-te / t2_star).exp()
}

/// Spin echo: S = M0 (1 - e^(-TR/T1)) e^(-TE/T2).
pub fn spin_echo(m0: f64, t1: f64, t2: f64, te: f64, tr: f64) -> f64 {
    m0 * (1.0 - (-tr / t1).exp()) * (-te / t2).exp()
}

/// Inversion recovery with readout flip FA and inversion angle θ:
/// S = sin(FA) M0 (1 - (1 - cos θ) e^(-TI/T1) - cos θ e^(-TR/T1))
///     / (1 - cos(FA) cos θ e^(-TR/T1)) e^(-TE/T2).
pub fn inversion_recovery(
    m0: f64,
    t1: f64,
    t2: f64,
    te: f64,
    tr: f64,
    ti: f64,
    angles_deg: (f64, f64),
) -> f64 {
    let (s, c) = angles_deg.0.to_radians().sin_cos();
    let ci = angles_deg.1.to_radians().cos();
    let er = (-tr / t1).exp();
    s * m0 * (1.0 - (1.0 - ci) * (-ti / t1).exp() - ci * er) / (1.0 - c * ci * er) * (-te / t2).exp()
}
