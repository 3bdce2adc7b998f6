//! Forward models against closed forms, limits and brute-force integration,
//! and the composition's errors.

use osipy_core::Registry;
use osipy_fitting::{check_jacobian, Model};
use osipy_microstructure::scheme::Sources;
use osipy_microstructure::{LinkValue, ModelSpec, MultiCompartment, Scheme};
use std::collections::BTreeMap;
use std::f64::consts::PI;

const SRC: Sources<'static> = Sources {
    bval: "test.bval",
    bvec: "test.bvec",
};

fn registry() -> Registry {
    let mut reg = Registry::new();
    osipy_microstructure::register(&mut reg).unwrap();
    reg
}

/// Directions spread over the sphere (Fibonacci), `n` per b-value.
fn scheme(bvals: &[f64], n: usize, timing: Option<(f64, f64)>) -> Scheme {
    let mut b = Vec::new();
    let mut g = Vec::new();
    for &bv in bvals {
        for i in 0..n {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let p = i as f64 * PI * (3.0 - 5f64.sqrt());
            b.push(bv);
            g.push([r * p.cos(), r * p.sin(), z]);
        }
    }
    Scheme::new(&b, &g, timing.map(|t| t.0), timing.map(|t| t.1), None, SRC).unwrap()
}

fn model(comps: &[&str], links: &[(&str, LinkValue)], sm: bool, s: &Scheme) -> MultiCompartment {
    let spec = ModelSpec {
        compartments: comps.iter().map(|c| c.to_string()).collect(),
        links: links.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        spherical_mean: sm,
        aliases: Vec::new(),
        bounds: Vec::new(),
        starts: 0,
    };
    MultiCompartment::new(&spec, s, &registry(), &BTreeMap::new()).unwrap()
}

fn try_model(comps: &[&str], links: &[(&str, LinkValue)], sm: bool, s: &Scheme) -> String {
    let spec = ModelSpec {
        compartments: comps.iter().map(|c| c.to_string()).collect(),
        links: links.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        spherical_mean: sm,
        aliases: Vec::new(),
        bounds: Vec::new(),
        starts: 0,
    };
    MultiCompartment::new(&spec, s, &registry(), &BTreeMap::new())
        .unwrap_err()
        .to_string()
}

/// The fit vector from (name, value) pairs in internal units; every free
/// parameter must be named.
fn x(m: &MultiCompartment, v: &[(&str, f64)]) -> Vec<f64> {
    m.param_names()
        .iter()
        .map(|n| {
            v.iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("no value for {n}"))
                .1
        })
        .collect()
}

fn predict(m: &MultiCompartment, v: &[(&str, f64)]) -> Vec<f64> {
    let mut out = vec![0.0; m.n_samples()];
    m.predict(&x(m, v), &mut out);
    out
}

fn num(v: f64) -> LinkValue {
    LinkValue::Number(v)
}

fn text(v: &str) -> LinkValue {
    LinkValue::Text(v.into())
}

#[test]
fn stick_is_a_zeppelin_with_no_perpendicular_diffusion() {
    let s = scheme(&[0.0, 1000.0, 2000.0, 3000.0], 30, None);
    let stick = predict(
        &model(&["stick"], &[], false, &s),
        &[
            ("S0", 1.0),
            ("stick_theta", 0.7),
            ("stick_phi", -1.1),
            ("stick_lambda_par", 1.7),
        ],
    );
    let zep = predict(
        &model(&["zeppelin"], &[("zeppelin.lambda_perp", num(0.0))], false, &s),
        &[
            ("S0", 1.0),
            ("zeppelin_theta", 0.7),
            ("zeppelin_phi", -1.1),
            ("zeppelin_lambda_par", 1.7),
        ],
    );
    for (a, b) in stick.iter().zip(&zep) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
    // And the stick's signal is exp(-b lambda (g.n)^2) along its own axis.
    let n = [
        0.7f64.sin() * (-1.1f64).cos(),
        0.7f64.sin() * (-1.1f64).sin(),
        0.7f64.cos(),
    ];
    for (i, v) in stick.iter().enumerate() {
        let c: f64 = (0..3).map(|k| s.g[i][k] * n[k]).sum();
        assert!((v - (-s.b[i] * 1.7 * c * c).exp()).abs() < 1e-14);
    }
}

#[test]
fn restricted_signals_tend_to_one_as_the_radius_shrinks() {
    let s = scheme(&[0.0, 3000.0, 10000.0], 20, Some((0.0106, 0.0431)));
    for (comp, extra) in [
        ("sphere_gpd", vec![("sphere_gpd_D", 2.0)]),
        ("sphere_short_pulse", vec![]),
        ("cylinder_soderman", vec![("cylinder_soderman_lambda_par", 0.0)]),
        ("cylinder_gpd", vec![("cylinder_gpd_lambda_par", 1e-9)]),
    ] {
        let m = model(&[comp], &[], false, &s);
        let mut v: Vec<(String, f64)> = vec![("S0".into(), 1.0), (format!("{comp}_radius"), 0.05)];
        v.extend(extra.iter().map(|(k, x)| (k.to_string(), *x)));
        v.extend([(format!("{comp}_theta"), 0.3), (format!("{comp}_phi"), 0.2)]);
        let names: Vec<(&str, f64)> = v.iter().map(|(k, x)| (k.as_str(), *x)).collect();
        let vals: Vec<(&str, f64)> = names
            .iter()
            .copied()
            .filter(|(k, _)| m.param_names().contains(k))
            .collect();
        let e = predict(&m, &vals);
        let worst = e.iter().fold(0.0f64, |w, v| w.max((1.0 - v).abs()));
        assert!(worst < 1e-3, "{comp}: 1 - E up to {worst} at R = 0.05 um");
        // A larger radius attenuates measurably, so the test can fail.
        let big: Vec<(&str, f64)> = vals
            .iter()
            .map(|(k, x)| (*k, if k.ends_with("radius") { 5.0 } else { *x }))
            .collect();
        let e5 = predict(&m, &big);
        assert!(e5.iter().any(|v| *v < 0.9), "{comp}: no attenuation at R = 5 um");
    }
}

#[test]
fn gpd_cylinder_tends_to_free_diffusion_for_large_radii() {
    // Perpendicular to the axis of a wide cylinder, water diffuses almost
    // freely: ln E -> -b D, with a deficit that shrinks as 1/R (the
    // surface-to-volume effect, Mitra et al. 1992).
    let s = scheme(&[1000.0, 3000.0], 60, Some((0.0106, 0.0431)));
    let m = model(&["cylinder_gpd"], &[], false, &s);
    let deficit = |r: f64| {
        let e = predict(
            &m,
            &[
                ("S0", 1.0),
                ("cylinder_gpd_theta", 0.0),
                ("cylinder_gpd_phi", 0.0),
                ("cylinder_gpd_lambda_par", 2.0),
                ("cylinder_gpd_radius", r),
            ],
        );
        let mut worst = 0.0f64;
        for (i, v) in e.iter().enumerate() {
            if s.g[i][2].abs() < 0.05 {
                let c2 = s.g[i][2] * s.g[i][2];
                let perp = v.ln() + s.b[i] * 2.0 * c2; // ln E_perp
                worst = worst.max(1.0 - perp / (-s.b[i] * 2.0 * (1.0 - c2)));
            }
        }
        worst
    };
    let (d200, d1000) = (deficit(200.0), deficit(1000.0));
    assert!(
        d1000 > 0.0 && d1000 < 0.012,
        "R = 1000 um: ln E is {d1000} below free diffusion"
    );
    assert!(
        d1000 < d200 / 3.0,
        "deficit {d200} at 200 um, {d1000} at 1000 um: not falling as 1/R"
    );
}

#[test]
fn gpd_and_short_pulse_agree_in_their_common_limit() {
    // Narrow pulses (D alpha^2 delta << 1) and a long separation: both give 1 - E = (2 pi q R)^2 / 5
    // (sphere) and / 4 (cylinder, perpendicular) at low q.
    let s = scheme(&[20.0, 40.0], 10, Some((0.00005, 0.2)));
    let sph = |c: &str, extra: &[(&str, f64)]| {
        let m = model(&[c], &[], false, &s);
        let mut v = vec![
            ("S0", 1.0),
            ("sphere_gpd_D", 2.0),
            ("cylinder_gpd_lambda_par", 2.0),
        ];
        v.extend_from_slice(extra);
        let vals: Vec<(&str, f64)> = v
            .into_iter()
            .filter(|(k, _)| m.param_names().contains(k))
            .collect();
        predict(&m, &vals)
    };
    let a = sph("sphere_gpd", &[("sphere_gpd_radius", 5.0)]);
    let b = sph("sphere_short_pulse", &[("sphere_short_pulse_radius", 5.0)]);
    for (x, y) in a.iter().zip(&b) {
        assert!(((1.0 - x) / (1.0 - y) - 1.0).abs() < 0.02, "sphere: {x} vs {y}");
    }
    let c = sph(
        "cylinder_gpd",
        &[
            ("cylinder_gpd_radius", 5.0),
            ("cylinder_gpd_theta", 0.0),
            ("cylinder_gpd_phi", 0.0),
        ],
    );
    let d = model(&["cylinder_soderman"], &[], false, &s);
    let d = predict(
        &d,
        &[
            ("S0", 1.0),
            ("cylinder_soderman_radius", 5.0),
            ("cylinder_soderman_theta", 0.0),
            ("cylinder_soderman_phi", 0.0),
            ("cylinder_soderman_lambda_par", 2.0),
        ],
    );
    // Compare the perpendicular parts only: divide out exp(-b lambda c^2).
    for (i, (x, y)) in c.iter().zip(&d).enumerate() {
        if s.g[i][2].abs() > 0.5 {
            continue;
        }
        assert!(
            ((1.0 - x) / (1.0 - y) - 1.0).abs() < 0.03,
            "cylinder, volume {i}: {x} vs {y}"
        );
    }
}

#[test]
fn spherical_mean_of_stick_and_zeppelin_match_closed_forms() {
    let s = scheme(&[0.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0], 6, None);
    let m = model(&["stick"], &[], true, &s);
    let e = predict(&m, &[("S0", 1.0), ("stick_lambda_par", 1.7)]);
    for (k, sh) in s.shells.iter().enumerate() {
        let x = (sh.b * 1.7f64).sqrt();
        let want = if x == 0.0 {
            1.0
        } else {
            PI.sqrt() * puruspe::erf(x) / (2.0 * x)
        };
        assert!((e[k] - want).abs() < 1e-12, "b = {}: {} vs {want}", sh.b, e[k]);
    }
    let m = model(&["zeppelin"], &[], true, &s);
    let e = predict(
        &m,
        &[
            ("S0", 1.0),
            ("zeppelin_lambda_par", 2.0),
            ("zeppelin_lambda_perp", 0.6),
        ],
    );
    for (k, sh) in s.shells.iter().enumerate() {
        let x = (sh.b * 1.4f64).sqrt();
        let want = (-sh.b * 0.6).exp()
            * if x == 0.0 {
                1.0
            } else {
                PI.sqrt() * puruspe::erf(x) / (2.0 * x)
            };
        assert!((e[k] - want).abs() < 1e-12, "b = {}: {} vs {want}", sh.b, e[k]);
    }
}

/// The Watson-dispersed stick by brute-force integration over the sphere:
/// the integral of W(n) exp(-b lambda (g.n)^2) dn with W normalised numerically.
fn watson_brute(g: [f64; 3], mu: [f64; 3], kappa: f64, b: f64, lambda: f64) -> f64 {
    let (nt, np) = (800, 800);
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..nt {
        let t = PI * (i as f64 + 0.5) / nt as f64;
        for j in 0..np {
            let p = 2.0 * PI * (j as f64 + 0.5) / np as f64;
            let n = [t.sin() * p.cos(), t.sin() * p.sin(), t.cos()];
            let dm: f64 = (0..3).map(|k| n[k] * mu[k]).sum();
            let dg: f64 = (0..3).map(|k| n[k] * g[k]).sum();
            let w = (kappa * (dm * dm - 1.0)).exp() * t.sin();
            num += w * (-b * lambda * dg * dg).exp();
            den += w;
        }
    }
    num / den
}

#[test]
fn watson_dispersion_matches_integration_over_the_sphere() {
    let s = scheme(&[0.0, 1000.0, 3000.0], 12, None);
    let m = model(&["watson_stick"], &[], false, &s);
    let (theta, phi): (f64, f64) = (0.9, 0.4);
    let mu = [theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()];
    for odi in [0.03, 0.1, 0.3, 0.7] {
        let kappa = 1.0 / (PI / 2.0 * odi).tan();
        let e = predict(
            &m,
            &[
                ("S0", 1.0),
                ("watson_stick_theta", theta),
                ("watson_stick_phi", phi),
                ("watson_stick_odi", odi),
                ("watson_stick_lambda_par", 1.7),
            ],
        );
        for i in (0..s.len()).step_by(5) {
            let want = watson_brute(s.g[i], mu, kappa, s.b[i], 1.7);
            assert!(
                (e[i] - want).abs() < 2e-5,
                "odi {odi}, volume {i}: {} vs {want}",
                e[i]
            );
        }
    }
}

#[test]
fn watson_tends_to_the_undispersed_kernel() {
    let s = scheme(&[1000.0, 3000.0], 30, None);
    let w = model(&["watson_stick"], &[], false, &s);
    let st = model(&["stick"], &[], false, &s);
    let stick = predict(
        &st,
        &[
            ("S0", 1.0),
            ("stick_theta", 0.5),
            ("stick_phi", 2.0),
            ("stick_lambda_par", 1.7),
        ],
    );
    let mut last = f64::INFINITY;
    for odi in [0.3, 0.1, 0.03, 0.01] {
        let e = predict(
            &w,
            &[
                ("S0", 1.0),
                ("watson_stick_theta", 0.5),
                ("watson_stick_phi", 2.0),
                ("watson_stick_odi", odi),
                ("watson_stick_lambda_par", 1.7),
            ],
        );
        let diff = e
            .iter()
            .zip(&stick)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < last, "odi {odi}: {diff} not below {last}");
        last = diff;
    }
    // At kappa = 64, the mean squared sine of the deviation is 1/kappa, so
    // the difference is at most b lambda / kappa.
    assert!(last < 3.0 * 1.7 / 63.0, "{last}");
}

#[test]
fn fractions_mix_the_compartment_signals_linearly() {
    let s = scheme(&[0.0, 1000.0, 2000.0], 15, None);
    let both = model(&["ball", "stick"], &[], false, &s);
    let e = predict(
        &both,
        &[
            ("S0", 2.0),
            ("ball_D", 3.0),
            ("stick_theta", 1.0),
            ("stick_phi", 0.5),
            ("stick_lambda_par", 1.7),
            ("ball_partial_fraction", 0.3),
        ],
    );
    let ball = predict(&model(&["ball"], &[], false, &s), &[("S0", 1.0), ("ball_D", 3.0)]);
    let stick = predict(
        &model(&["stick"], &[], false, &s),
        &[
            ("S0", 1.0),
            ("stick_theta", 1.0),
            ("stick_phi", 0.5),
            ("stick_lambda_par", 1.7),
        ],
    );
    for i in 0..s.len() {
        assert!((e[i] - 2.0 * (0.3 * ball[i] + 0.7 * stick[i])).abs() < 1e-14);
    }
    // Three compartments, one fraction fixed: the rest share 1 - 0.2.
    let three = model(
        &["ball", "stick", "dot"],
        &[("dot.fraction", num(0.2))],
        false,
        &s,
    );
    let f = three.fractions(&x(
        &three,
        &[
            ("S0", 1.0),
            ("ball_D", 3.0),
            ("stick_theta", 1.0),
            ("stick_phi", 0.5),
            ("stick_lambda_par", 1.7),
            ("ball_partial_fraction", 0.25),
        ],
    ));
    assert_eq!(f, vec![0.2, 0.6000000000000001, 0.2]);
}

#[test]
fn tortuosity_and_equality_links_hold() {
    let s = scheme(&[0.0, 1000.0, 2000.0], 15, None);
    let noddi = model(
        &["ball", "watson_stick", "watson_zeppelin"],
        &[
            ("ball.D", num(3.0e-3)),
            ("watson_stick.lambda_par", num(1.7e-3)),
            ("watson_zeppelin.lambda_par", text("watson_stick.lambda_par")),
            ("watson_zeppelin.theta", text("watson_stick.theta")),
            ("watson_zeppelin.phi", text("watson_stick.phi")),
            ("watson_zeppelin.odi", text("watson_stick.odi")),
            ("watson_zeppelin.lambda_perp", text("tortuous(watson_stick)")),
        ],
        false,
        &s,
    );
    assert_eq!(
        noddi.param_names(),
        vec![
            "S0",
            "watson_stick_theta",
            "watson_stick_phi",
            "watson_stick_odi",
            "ball_partial_fraction",
            "watson_stick_partial_fraction"
        ]
    );
    // The same signal from the zeppelin alone with lambda_perp set by hand:
    // v_ic = 0.6 gives lambda_perp = 0.4 * 1.7.
    let v = [
        ("S0", 1.0),
        ("watson_stick_theta", 0.4),
        ("watson_stick_phi", 0.1),
        ("watson_stick_odi", 0.2),
    ];
    let mut all = v.to_vec();
    all.extend([
        ("ball_partial_fraction", 0.0),
        ("watson_stick_partial_fraction", 0.0),
    ]);
    let e = predict(&noddi, &all);
    let zep = model(&["watson_zeppelin"], &[], false, &s);
    let e2 = predict(
        &zep,
        &[
            ("S0", 1.0),
            ("watson_zeppelin_theta", 0.4),
            ("watson_zeppelin_phi", 0.1),
            ("watson_zeppelin_odi", 0.2),
            ("watson_zeppelin_lambda_par", 1.7),
            ("watson_zeppelin_lambda_perp", 1.7),
        ],
    );
    // v_ic = 0: lambda_perp = lambda_par, all signal in the zeppelin.
    for (a, b) in e.iter().zip(&e2) {
        assert!((a - b).abs() < 1e-14, "{a} vs {b}");
    }
}

#[test]
fn jacobians_are_exact() {
    let s = scheme(&[0.0, 1000.0, 2000.0, 3000.0], 12, Some((0.0106, 0.0431)));
    let many_shells = scheme(
        &[0.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 8000.0],
        3,
        Some((0.0106, 0.0431)),
    );
    let cases: Vec<(MultiCompartment, Vec<f64>)> = vec![
        (
            model(
                &["ball", "watson_stick", "watson_zeppelin"],
                &[
                    ("watson_zeppelin.lambda_par", text("watson_stick.lambda_par")),
                    ("watson_zeppelin.theta", text("watson_stick.theta")),
                    ("watson_zeppelin.phi", text("watson_stick.phi")),
                    ("watson_zeppelin.odi", text("watson_stick.odi")),
                    ("watson_zeppelin.lambda_perp", text("tortuous(watson_stick)")),
                ],
                false,
                &s,
            ),
            vec![1.3, 2.9, 0.6, 0.4, 0.25, 1.6, 0.2, 0.55],
        ),
        (
            model(
                &["stick", "sphere_gpd", "ball"],
                &[("sphere_gpd.D", num(3e-3))],
                true,
                &many_shells,
            ),
            vec![1.1, 2.1, 7.0, 1.0, 0.5, 0.4],
        ),
        (
            model(&["cylinder_soderman"], &[], false, &s),
            vec![1.0, 0.7, 2.2, 1.6, 4.0],
        ),
        (
            model(&["cylinder_gpd"], &[], false, &s),
            vec![1.0, 0.7, 2.2, 1.6, 4.0],
        ),
        (
            model(&["plane_short_pulse", "zeppelin"], &[], false, &s),
            vec![1.0, 0.7, 2.2, 1.5, 6.0, 1.2, -0.3, 2.0, 0.5, 0.4],
        ),
        (
            model(&["cylinder_callaghan"], &[], false, &s),
            vec![1.0, 0.7, 2.2, 1.6, 6.0],
        ),
        (
            model(&["sphere_callaghan", "plane_callaghan"], &[], false, &s),
            vec![1.0, 7.0, 2.0, 0.4, 1.1, 1.2, 9.0, 0.6],
        ),
        (
            model(&["tensor", "ball"], &[], false, &s),
            vec![1.0, 0.7, 2.2, 0.4, 1.8, 0.6, 0.3, 3.0, 0.7],
        ),
    ];
    for (m, x) in cases {
        assert_eq!(m.n_params(), x.len(), "{:?}", m.param_names());
        let worst = check_jacobian(&m, &x).unwrap();
        assert!(worst < 1e-6, "{:?}: {worst}", m.param_names());
    }
}

#[test]
fn bad_models_are_refused_with_what_is_valid() {
    let s = scheme(&[0.0, 1000.0], 10, None);
    let e = try_model(&["ball", "stik"], &[], false, &s);
    assert!(
        e.contains("stik") && e.contains("stick") && e.contains("zeppelin"),
        "{e}"
    );
    let e = try_model(&["ball", "stick"], &[("stick.lambda", num(1.0))], false, &s);
    assert!(
        e.contains("stick.lambda") && e.contains("stick.lambda_par"),
        "{e}"
    );
    let e = try_model(
        &["ball", "stick"],
        &[("ball.fraction", num(0.7)), ("stick.fraction", num(0.5))],
        false,
        &s,
    );
    assert!(e.contains("1.2") && e.contains("sum to one"), "{e}");
    let e = try_model(
        &["ball", "stick", "dot"],
        &[("ball.fraction", num(1.0))],
        false,
        &s,
    );
    assert!(e.contains("below 1"), "{e}");
    let e = try_model(&["sphere_gpd", "ball"], &[], false, &s);
    assert!(e.contains("delta") && e.contains("sphere_gpd"), "{e}");
    let e = try_model(
        &["stick", "zeppelin"],
        &[("stick.lambda_par", text("tortuous(zeppelin)"))],
        false,
        &s,
    );
    assert!(e.contains("lambda_perp"), "{e}");
    let e = try_model(
        &["stick", "zeppelin"],
        &[
            ("stick.lambda_par", text("zeppelin.lambda_par")),
            ("zeppelin.lambda_par", text("stick.lambda_par")),
        ],
        false,
        &s,
    );
    assert!(e.contains("cycle"), "{e}");
    let e = try_model(
        &["stick", "zeppelin"],
        &[("stick.lambda_par", text("zeppelin.theta"))],
        false,
        &s,
    );
    assert!(e.contains("same kind"), "{e}");
    let e = try_model(&["watson_stick", "ball"], &[], true, &s);
    assert!(e.contains("spherical-mean"), "{e}");
    // Seven parameters from two shells.
    let t = scheme(&[0.0, 1000.0], 10, Some((0.0106, 0.0431)));
    let e = try_model(&["stick", "sphere_gpd", "ball"], &[], true, &t);
    assert!(
        e.contains("shells") && e.contains("2") && e.contains("7 free parameters"),
        "{e}"
    );
}

/// The tensor against exp(-b g^T D g) with D = R diag(lambda) R^T built
/// explicitly from its three axes (Basser et al. 1994), and against the
/// zeppelin when lambda_2 = lambda_3.
#[test]
fn tensor_is_exp_of_minus_b_g_d_g() {
    let s = scheme(&[0.0, 1000.0, 2500.0], 24, None);
    let m = model(&["tensor"], &[], false, &s);
    assert_eq!(
        m.param_names(),
        [
            "S0",
            "tensor_theta",
            "tensor_phi",
            "tensor_psi",
            "tensor_lambda_1",
            "tensor_lambda_2",
            "tensor_lambda_3"
        ]
    );
    let (t, p, psi, l) = (0.9, -2.1, 0.6, [1.9, 0.7, 0.25]);
    let got = predict(
        &m,
        &[
            ("S0", 1.0),
            ("tensor_theta", t),
            ("tensor_phi", p),
            ("tensor_psi", psi),
            ("tensor_lambda_1", l[0]),
            ("tensor_lambda_2", l[1]),
            ("tensor_lambda_3", l[2]),
        ],
    );
    // Axes: n, then n's polar unit vector turned by psi, then their cross product.
    let n1 = [t.sin() * p.cos(), t.sin() * p.sin(), t.cos()];
    let et = [t.cos() * p.cos(), t.cos() * p.sin(), -t.sin()];
    let ep = [-p.sin(), p.cos(), 0.0];
    let n2: Vec<f64> = (0..3).map(|k| psi.cos() * et[k] + psi.sin() * ep[k]).collect();
    let n3 = [
        n1[1] * n2[2] - n1[2] * n2[1],
        n1[2] * n2[0] - n1[0] * n2[2],
        n1[0] * n2[1] - n1[1] * n2[0],
    ];
    let mut d = [[0.0; 3]; 3];
    for (lam, ax) in l.iter().zip([n1.to_vec(), n2.clone(), n3.to_vec()]) {
        for i in 0..3 {
            for j in 0..3 {
                d[i][j] += lam * ax[i] * ax[j];
            }
        }
    }
    for k in 0..s.len() {
        let g = s.g[k];
        let gdg: f64 = (0..3)
            .map(|i| (0..3).map(|j| g[i] * d[i][j] * g[j]).sum::<f64>())
            .sum();
        let want = (-s.b[k] * gdg).exp(); // b in ms/um^2 inside
        assert!((got[k] - want).abs() < 1e-12, "volume {k}: {} vs {want}", got[k]);
    }
    // Axially symmetric tensor = zeppelin, whatever psi.
    let z = model(&["zeppelin"], &[], false, &s);
    let zep = predict(
        &z,
        &[
            ("S0", 1.0),
            ("zeppelin_theta", t),
            ("zeppelin_phi", p),
            ("zeppelin_lambda_par", 1.9),
            ("zeppelin_lambda_perp", 0.4),
        ],
    );
    let ten = predict(
        &m,
        &[
            ("S0", 1.0),
            ("tensor_theta", t),
            ("tensor_phi", p),
            ("tensor_psi", 2.4),
            ("tensor_lambda_1", 1.9),
            ("tensor_lambda_2", 0.4),
            ("tensor_lambda_3", 0.4),
        ],
    );
    for (a, b) in zep.iter().zip(&ten) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // No spherical mean for a full tensor.
    let e = try_model(&["tensor", "ball"], &[], true, &s);
    assert!(
        e.contains("tensor") && e.contains("spherical mean") && e.contains("zeppelin"),
        "{e}"
    );
}

/// Callaghan's series (Callaghan 1995) against what it must contain: its
/// long-diffusion-time limit is the short-pulse signal (Soderman, Balinov;
/// every mode but the uniform one has decayed), and at zero diffusion time
/// no spin has moved, so E = 1 for any q (Parseval: the modes' weights sum
/// to one, which checks every weight and the truncation).
#[test]
fn callaghan_tends_to_short_pulse_forms_and_is_complete() {
    use osipy_microstructure::compartment::{callaghan_cylinder, callaghan_plane, callaghan_sphere};
    let s = scheme(&[0.0, 1000.0, 3000.0, 8000.0], 24, Some((0.002, 0.06)));
    // R = 1 um, D = 2 um^2/ms, tau ~ 60 ms: s = D tau / R^2 ~ 120.
    for (callaghan, short, shape) in [
        (
            "cylinder_callaghan",
            "cylinder_soderman",
            vec![("lambda_par", 2.0), ("radius", 1.5)],
        ),
        (
            "sphere_callaghan",
            "sphere_short_pulse",
            vec![("radius", 1.5), ("D", 2.0)],
        ),
        (
            "plane_callaghan",
            "plane_short_pulse",
            vec![("lambda_par", 2.0), ("spacing", 2.0)],
        ),
    ] {
        let values = |comp: &str, m: &MultiCompartment| -> Vec<f64> {
            let mut v: Vec<(String, f64)> = vec![
                ("S0".into(), 1.0),
                (format!("{comp}_theta"), 0.4),
                (format!("{comp}_phi"), 1.0),
            ];
            v.extend(shape.iter().map(|(k, x)| (format!("{comp}_{k}"), *x)));
            let vals: Vec<(&str, f64)> = v
                .iter()
                .map(|(k, x)| (k.as_str(), *x))
                .filter(|(k, _)| m.param_names().contains(k))
                .collect();
            predict(m, &vals)
        };
        let (mc, ms) = (
            model(&[callaghan], &[], false, &s),
            model(&[short], &[], false, &s),
        );
        let (a, b) = (values(callaghan, &mc), values(short, &ms));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-10, "{callaghan} {x} vs {short} {y}");
        }
        assert!(
            a.iter().any(|v| *v < 0.95),
            "{callaghan}: no attenuation to compare"
        );
    }
    for x in [0.3, 2.0, 3.8317, 7.0, 12.0, 20.0] {
        for (name, e) in [
            ("cylinder", callaghan_cylinder(x, 1e-12)),
            ("sphere", callaghan_sphere(x, 1e-12)),
            ("plane", callaghan_plane(x, 1e-12)),
        ] {
            assert!((e - 1.0).abs() < 1e-4, "{name}: E(x = {x}, tau = 0) = {e}");
        }
        // Something in between decays: the test above can fail.
        assert!(callaghan_cylinder(x, 0.05) < 1.0 - 1e-4 || x < 1.0);
    }
}
