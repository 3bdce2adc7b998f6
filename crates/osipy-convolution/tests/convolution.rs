//! Convolution routines against closed forms on uniform and non-uniform grids.

use ndarray::Array1;
use osipy_convolution::*;

/// A deterministic non-uniform grid on [0, 60] s with steps between 0.2 and 1.8 s.
fn nonuniform_grid() -> Vec<f64> {
    nonuniform_grid_scaled(1.0)
}

/// As [`nonuniform_grid`] with every step multiplied by `scale`.
fn nonuniform_grid_scaled(scale: f64) -> Vec<f64> {
    let mut t = vec![0.0];
    let mut i = 0u32;
    while *t.last().unwrap() < 60.0 {
        i += 1;
        let step = scale * (1.0 + 0.8 * ((i as f64) * 1.7).sin());
        t.push(t.last().unwrap() + step);
    }
    t
}

fn uniform_grid(dt: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 * dt).collect()
}

/// Gamma pdf with integer shape `k` and scale `theta`.
fn gamma_pdf(t: f64, k: u32, theta: f64) -> f64 {
    let fact: f64 = (1..k).map(|i| i as f64).product();
    t.powi(k as i32 - 1) * (-t / theta).exp() / (fact * theta.powi(k as i32))
}

#[test]
fn exp_conv_is_exact_for_a_piecewise_linear_input() {
    // a(t) = t is piecewise linear on any grid, and
    // int_0^t s e^{-k(t-s)} ds = t/k - (1 - e^{-kt})/k^2 (by parts).
    for t in [nonuniform_grid(), uniform_grid(2.5, 30)] {
        for k in [0.003, 0.05, 0.4, 3.0] {
            let c = exponential(&t, &t, k).unwrap();
            for (ti, ci) in t.iter().zip(&c) {
                let exact = ti / k - (1.0 - (-k * ti).exp()) / (k * k);
                // Round-off only: 1e-10 relative to the curve's scale.
                assert!(
                    (ci - exact).abs() <= 1e-10 * exact.abs().max(1.0),
                    "k={k} t={ti}: {ci} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn exp_conv_derivative_matches_the_closed_form() {
    // d/dk [t/k - (1-e^{-kt})/k^2] = -t/k^2 - t e^{-kt}/k^2 + 2(1-e^{-kt})/k^3.
    // Non-uniform grids take the per-step path; uniform ones the paired
    // recurrence, which advances two samples a step (odd and even lengths
    // cover its tail).
    let grids = [nonuniform_grid(), uniform_grid(0.5, 40), uniform_grid(0.5, 41)];
    for (t, k) in grids.iter().flat_map(|t| [0.01, 0.2, 2.0].map(|k| (t, k))) {
        let mut c = vec![0.0; t.len()];
        let mut d = vec![0.0; t.len()];
        exp_conv_with_derivative(t, t, k, &mut c, &mut d);
        let mut direct = vec![0.0; t.len()];
        exp_conv(t, t, k, &mut direct);
        for (ci, di) in c.iter().zip(&direct) {
            assert!(
                (ci - di).abs() <= 1e-12 * di.abs().max(1e-12),
                "k={k}: {ci} vs {di}"
            );
        }
        for (ti, di) in t.iter().zip(&d) {
            let e = (-k * ti).exp();
            let exact = -ti / (k * k) - ti * e / (k * k) + 2.0 * (1.0 - e) / (k * k * k);
            assert!(
                (di - exact).abs() <= 1e-8 * exact.abs().max(1.0),
                "k={k} t={ti}: {di} vs {exact}"
            );
        }
    }
}

#[test]
fn exp_conv_converges_to_the_analytic_exponential_case() {
    // a(t) = e^{-alpha t}: (a * e^{-kt})(t) = (e^{-alpha t} - e^{-kt}) / (k - alpha).
    // Linear interpolation of a has error <= alpha^2 dt^2 / 8 * max|a| = 3e-6
    // for alpha = 0.5, dt = 0.01; the convolution integral (length <= 1/k)
    // keeps the error below that bound times ~1/k.
    let (alpha, k) = (0.5, 0.2);
    let t = uniform_grid(0.01, 2001);
    let a: Vec<f64> = t.iter().map(|t| (-alpha * t).exp()).collect();
    let c = exponential(&t, &a, k).unwrap();
    let worst = t
        .iter()
        .zip(&c)
        .map(|(ti, ci)| (ci - ((-alpha * ti).exp() - (-k * ti).exp()) / (k - alpha)).abs())
        .fold(0.0, f64::max);
    assert!(worst < 3e-6 / k, "max error {worst}");
}

#[test]
fn exp_conv_is_continuous_at_zero_rate() {
    // k -> 0 gives the running trapezoid integral of a.
    let t = nonuniform_grid();
    let a: Vec<f64> = t.iter().map(|x| (x * 0.3).sin() + 1.0).collect();
    let c0 = exponential(&t, &a, 0.0).unwrap();
    let c_small = exponential(&t, &a, 1e-9).unwrap();
    let mut trap = 0.0;
    for i in 1..t.len() {
        trap += 0.5 * (a[i] + a[i - 1]) * (t[i] - t[i - 1]);
        assert!((c0[i] - trap).abs() < 1e-12 * trap.max(1.0));
        assert!((c_small[i] - trap).abs() < 1e-6 * trap.max(1.0));
    }
}

#[test]
fn biexp_conv_is_the_weighted_sum() {
    let t = nonuniform_grid();
    let mut out = vec![0.0; t.len()];
    let mut scratch = vec![0.0; t.len()];
    biexp_conv(&t, &t, [(0.1, 2.0), (1.0, 0.5)], &mut out, &mut scratch);
    for (ti, o) in t.iter().zip(&out) {
        let f = |k: f64| ti / k - (1.0 - (-k * ti).exp()) / (k * k);
        let exact = 2.0 * f(0.1) + 0.5 * f(1.0);
        assert!((o - exact).abs() < 1e-9 * exact.max(1.0));
    }
}

#[test]
fn piecewise_linear_is_exact_for_linear_functions_on_nonuniform_grids() {
    // int_0^t s ds = t^2/2 and int_0^t s (t - s) ds = t^3/6: both integrands
    // are products of linear functions, integrated exactly.
    let t = nonuniform_grid();
    let ones = vec![1.0; t.len()];
    let c1 = piecewise_linear(&t, &t, &ones).unwrap();
    let c2 = piecewise_linear(&t, &t, &t).unwrap();
    for i in 0..t.len() {
        let ti = t[i];
        assert!((c1[i] - ti * ti / 2.0).abs() < 1e-9 * (ti * ti).max(1.0));
        assert!((c2[i] - ti.powi(3) / 6.0).abs() < 1e-9 * ti.powi(3).max(1.0));
    }
}

#[test]
fn gamma_variates_convolve_to_a_gamma_variate() {
    // Gamma(2, theta) * Gamma(3, theta) = Gamma(5, theta) (sum of independent
    // gamma variables with a common scale). With steps <= 0.09 s and
    // theta = 2 s the interpolation error, about dt^2/8 |f''|, stays below
    // 3e-4 of the peak (1e-4 on the 0.05 s uniform grid).
    let theta = 2.0;
    for (t, rel_tol) in [
        (uniform_grid(0.05, 1201), 1e-4),
        (nonuniform_grid_scaled(0.05), 3e-4),
    ] {
        let a: Vec<f64> = t.iter().map(|&x| gamma_pdf(x, 2, theta)).collect();
        let b: Vec<f64> = t.iter().map(|&x| gamma_pdf(x, 3, theta)).collect();
        let c = piecewise_linear(&t, &a, &b).unwrap();
        let peak = t.iter().map(|&x| gamma_pdf(x, 5, theta)).fold(0.0, f64::max);
        let tol = rel_tol * peak;
        for (ti, ci) in t.iter().zip(&c) {
            let exact = gamma_pdf(*ti, 5, theta);
            assert!((ci - exact).abs() < tol, "t={ti}: {ci} vs {exact}");
        }
    }
}

#[test]
fn fft_matches_the_direct_sum_and_the_rectangle_rule_limit() {
    let dt = 0.5;
    let t = uniform_grid(dt, 300);
    let a: Vec<f64> = t.iter().map(|&x| gamma_pdf(x, 3, 4.0)).collect();
    let b: Vec<f64> = t.iter().map(|&x| (-x / 20.0).exp()).collect();
    let c = fft_convolve(&a, &b, dt).unwrap();
    for i in 0..t.len() {
        let direct: f64 = (0..=i).map(|j| a[j] * b[i - j]).sum::<f64>() * dt;
        assert!((c[i] - direct).abs() < 1e-12, "i={i}");
    }
    // Against the continuous convolution (computed exactly for the PL
    // interpolants): the rectangle rule is O(dt) off.
    let exact = piecewise_linear(&t, &a, &b).unwrap();
    let worst = c
        .iter()
        .zip(&exact)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < dt * 0.1, "worst {worst}");
    assert!(fft_convolve(&a, &b[1..], dt).is_err());
}

#[test]
fn toeplitz_matrix_reproduces_the_discrete_convolution() {
    let dt = 1.0;
    let t = uniform_grid(dt, 40);
    let a: Vec<f64> = t.iter().map(|&x| gamma_pdf(x, 3, 2.0)).collect();
    let x: Vec<f64> = t.iter().map(|&x| (-x / 5.0).exp()).collect();
    let m = convolution_matrix(&a, dt, MatrixKind::Toeplitz).unwrap();
    let mx = m.dot(&Array1::from(x.clone()));
    let c = fft_convolve(&a, &x, dt).unwrap();
    for i in 0..40 {
        assert!((mx[i] - c[i]).abs() < 1e-12);
    }
}

#[test]
fn deconvolution_recovers_a_known_residue_function() {
    // Tissue = A (F R) with R(t) = exp(-t / MTT). A noise-free tissue curve
    // deconvolved with a near-zero threshold returns F R up to round-off
    // amplified by cond(A) (~1e5 here, so ~1e-10 relative: tolerance 1e-6);
    // Tikhonov with a tiny lambda (1e-8 of s_max) damps only components the
    // solution does not have, so it recovers F R to 1e-4.
    let dt = 1.0;
    let n = 60;
    let t = uniform_grid(dt, n);
    let aif: Vec<f64> = t
        .iter()
        .map(|&x| gamma_pdf((x - 2.0).max(0.0), 3, 2.0) * 20.0 + 0.05)
        .collect();
    let flow = 0.01;
    let res: Vec<f64> = t.iter().map(|&x| flow * (-x / 4.0).exp()).collect();
    let a = convolution_matrix(&aif, dt, MatrixKind::Toeplitz).unwrap();
    let tissue = a.dot(&Array1::from(res.clone()));
    let inv = tsvd_inverse(&a, 1e-12).unwrap();
    let rec = inv.dot(&tissue);
    for i in 0..n {
        assert!(
            (rec[i] - res[i]).abs() < 1e-6 * flow,
            "i={i}: {} vs {}",
            rec[i],
            res[i]
        );
    }
    let tik = tikhonov_inverse(&a, 1e-8).unwrap().dot(&tissue);
    assert!((0..n).all(|i| (tik[i] - res[i]).abs() < 1e-4 * flow));
    // A strong lambda shrinks the estimate.
    let tik = tikhonov_inverse(&a, 0.3).unwrap().dot(&tissue);
    assert!(tik.iter().cloned().fold(f64::MIN, f64::max) < flow);
    assert!(tikhonov_inverse(&a, -1.0).is_err());
    // Heavier truncation damps the estimate: the peak (= flow) is underestimated.
    let rough = tsvd_inverse(&a, 0.2).unwrap().dot(&tissue);
    let peak = rough.iter().cloned().fold(f64::MIN, f64::max);
    assert!(peak < flow && peak > 0.3 * flow, "peak {peak}");
    assert!(tsvd_inverse(&a, 1.5).is_err());

    // Block-circulant: on the first n rows it is the Toeplitz matrix (the
    // padding only adds wrap-around terms for t >= n).
    let bc = convolution_matrix(&aif, dt, MatrixKind::BlockCirculant).unwrap();
    let mut res_pad = res.clone();
    res_pad.resize(2 * n, 0.0);
    let bc_tissue = bc.dot(&Array1::from(res_pad));
    assert!((0..n).all(|i| (bc_tissue[i] - tissue[i]).abs() < 1e-15));
    // A residue delayed by 3 samples is recovered shifted by 3, with the
    // same peak (the circulant inverse is insensitive to the delay).
    let d = 3;
    let delayed: Vec<f64> = (0..2 * n)
        .map(|i| if i >= d && i - d < n { res[i - d] } else { 0.0 })
        .collect();
    let delayed_tissue = bc.dot(&Array1::from(delayed.clone()));
    let rec = tsvd_inverse(&bc, 1e-12).unwrap().dot(&delayed_tissue);
    let (imax, vmax) = rec
        .iter()
        .enumerate()
        .fold((0, f64::MIN), |m, (i, v)| if *v > m.1 { (i, *v) } else { m });
    assert_eq!(imax, d);
    assert!((vmax - flow).abs() < 1e-6 * flow, "peak {vmax} vs {flow}");
    assert!(rec.iter().zip(&delayed).all(|(r, x)| (r - x).abs() < 1e-6 * flow));
}

#[test]
fn grid_errors() {
    let t = nonuniform_grid();
    let e = fft_on_grid(&t, &t, &t).unwrap_err().to_string();
    assert!(
        e.contains("uniform grid") && e.contains("piecewise_linear"),
        "{e}"
    );
    let e = piecewise_linear(&[0.0, 2.0, 1.0], &[1.0; 3], &[1.0; 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("strictly increasing"), "{e}");
    let e = exponential(&[0.0, 1.0], &[1.0], 0.1).unwrap_err().to_string();
    assert!(
        e.contains("1") && e.contains("2, the number of time points"),
        "{e}"
    );
}

#[test]
fn lockstep_lanes_equal_the_one_rate_convolution_bit_for_bit() {
    // Rates on both sides of the series switch (k dt = 0.5), zero and large.
    let rates = [[0.0, 0.01, 0.2, 2.0], [0.999, 1.0, 1.001, 37.0]];
    for t in [nonuniform_grid(), uniform_grid(0.5, 40), uniform_grid(0.5, 41)] {
        let a: Vec<f64> = t.iter().map(|x| gamma_pdf(*x, 3, 1.5)).collect();
        for k in rates {
            let mut out = vec![[0.0; 4]; t.len()];
            let mut dout = vec![[0.0; 4]; t.len()];
            exp_conv_with_derivative_lanes(&t, &a, &k, &mut out, &mut dout);
            for (l, kl) in k.iter().enumerate() {
                let mut c = vec![0.0; t.len()];
                let mut d = vec![0.0; t.len()];
                exp_conv_with_derivative(&t, &a, *kl, &mut c, &mut d);
                for i in 0..t.len() {
                    assert_eq!(out[i][l].to_bits(), c[i].to_bits(), "k={kl}, sample {i}");
                    assert_eq!(dout[i][l].to_bits(), d[i].to_bits(), "k={kl}, sample {i}");
                }
            }
        }
    }
}
