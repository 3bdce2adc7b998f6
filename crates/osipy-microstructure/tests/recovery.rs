//! Parameter recovery: phantoms with known truth, fitted by grid start + LM.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::{QualityCode, Registry};
use osipy_fitting::{FitOptions, Model};
use osipy_microstructure::phantom::{simulate_signals, Noise};
use osipy_microstructure::scheme::Sources;
use osipy_microstructure::{fit_microstructure, presets, ModelSpec, MultiCompartment, Scheme};
use std::collections::BTreeMap;
use std::f64::consts::PI;

fn registry() -> Registry {
    let mut reg = Registry::new();
    osipy_microstructure::register(&mut reg).unwrap();
    reg
}

/// b = 0 x 3, then `n` directions on each of the shells (s/mm^2).
fn scheme(shells: &[f64], n: usize, timing: Option<(f64, f64)>) -> Scheme {
    let mut b = vec![0.0; 3];
    let mut g = vec![[0.0; 3]; 3];
    for (k, &bv) in shells.iter().enumerate() {
        for i in 0..n {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let p = i as f64 * PI * (3.0 - 5f64.sqrt()) + k as f64;
            b.push(bv);
            g.push([r * p.cos(), r * p.sin(), z]);
        }
    }
    let src = Sources {
        bval: "test.bval",
        bvec: "test.bvec",
    };
    Scheme::new(&b, &g, timing.map(|t| t.0), timing.map(|t| t.1), None, src).unwrap()
}

/// Median of |estimate - truth| over voxels for column `j`.
fn median_abs_err(est: &Array2<f64>, truth: &Array2<f64>, j: usize) -> f64 {
    let mut e: Vec<f64> = (0..est.nrows())
        .map(|v| (est[[v, j]] - truth[[v, j]]).abs())
        .collect();
    e.sort_by(f64::total_cmp);
    e[e.len() / 2]
}

/// Angle (degrees) between fitted and true directions, folded (n = -n).
fn angle_deg(a: (f64, f64), b: (f64, f64)) -> f64 {
    let n = |t: f64, p: f64| [t.sin() * p.cos(), t.sin() * p.sin(), t.cos()];
    let (u, v) = (n(a.0, a.1), n(b.0, b.1));
    let c: f64 = (0..3).map(|k| u[k] * v[k]).sum();
    c.abs().min(1.0).acos().to_degrees()
}

fn noddi_truth(m: &MultiCompartment, n: usize) -> Array2<f64> {
    // Voxels spread over direction, ODI, v_iso and v_ic (NODDI's ranges in
    // white and grey matter).
    let mut t = Array2::zeros((n, m.n_params()));
    for v in 0..n {
        let f = v as f64 / n as f64;
        t[[v, 0]] = 100.0;
        t[[v, 1]] = (0.15 + 0.7 * ((v * 7) % n) as f64 / n as f64) * PI / 2.0;
        t[[v, 2]] = -PI + 2.0 * PI * ((v * 13) % n) as f64 / n as f64;
        t[[v, 3]] = 0.05 + 0.5 * f;
        t[[v, 4]] = 0.05 + 0.25 * ((v * 3) % n) as f64 / n as f64;
        t[[v, 5]] = 0.3 + 0.5 * ((v * 11) % n) as f64 / n as f64;
    }
    t
}

#[test]
fn noddi_recovers_its_parameters() {
    let s = scheme(&[1000.0, 2000.0, 3000.0], 30, None);
    let m = MultiCompartment::new(&presets::noddi_watson(), &s, &registry(), &BTreeMap::new()).unwrap();
    assert_eq!(
        m.param_names(),
        [
            "S0",
            "watson_stick_theta",
            "watson_stick_phi",
            "watson_stick_odi",
            "ball_partial_fraction",
            "watson_stick_partial_fraction"
        ]
    );
    let truth = noddi_truth(&m, 200);
    let dev = Device::cpu(None);
    // Noise-free: the truth itself.
    let data = simulate_signals(&m, truth.view(), None, Noise::Rician, 1).unwrap();
    let fit = fit_microstructure(&m, &s, data.view(), None, &FitOptions::default(), 1, &dev).unwrap();
    assert!(
        fit.status.iter().all(|q| *q == QualityCode::Converged),
        "{:?}",
        fit.status
    );
    for j in [3, 4, 5] {
        let e = median_abs_err(&fit.params, &truth, j);
        assert!(e < 1e-4, "noise-free {}: median |error| {e}", m.param_names()[j]);
    }
    // SNR 50, Rician: NODDI's usual accuracy.
    let data = simulate_signals(&m, truth.view(), Some(50.0), Noise::Rician, 2).unwrap();
    let fit = fit_microstructure(&m, &s, data.view(), None, &FitOptions::default(), 1, &dev).unwrap();
    let odi = median_abs_err(&fit.params, &truth, 3);
    let fiso = median_abs_err(&fit.params, &truth, 4);
    let ndi = median_abs_err(&fit.params, &truth, 5);
    let mut ang: Vec<f64> = (0..truth.nrows())
        .map(|v| {
            angle_deg(
                (fit.params[[v, 1]], fit.params[[v, 2]]),
                (truth[[v, 1]], truth[[v, 2]]),
            )
        })
        .collect();
    ang.sort_by(f64::total_cmp);
    eprintln!(
        "SNR 50: ODI {odi:.4}, FWF {fiso:.4}, NDI {ndi:.4}, direction {:.2} deg",
        ang[ang.len() / 2]
    );
    assert!(
        odi < 0.03 && fiso < 0.03 && ndi < 0.05,
        "ODI {odi}, FWF {fiso}, NDI {ndi}"
    );
    assert!(
        ang[ang.len() / 2] < 5.0,
        "median direction error {} deg",
        ang[ang.len() / 2]
    );
}

#[test]
fn fits_are_identical_for_any_thread_count() {
    let s = scheme(&[1000.0, 2000.0], 20, None);
    let m = MultiCompartment::new(&presets::noddi_watson(), &s, &registry(), &BTreeMap::new()).unwrap();
    let truth = noddi_truth(&m, 64);
    let data = simulate_signals(&m, truth.view(), Some(30.0), Noise::Rician, 3).unwrap();
    let opts = FitOptions {
        chunk_voxels: 8,
        ..FitOptions::default()
    };
    let a = fit_microstructure(&m, &s, data.view(), None, &opts, 3, &Device::cpu(Some(1))).unwrap();
    let b = fit_microstructure(&m, &s, data.view(), None, &opts, 3, &Device::cpu(Some(2))).unwrap();
    assert!(a
        .params
        .iter()
        .zip(b.params.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn ball_stick_finds_the_fibre_direction() {
    let s = scheme(&[1000.0, 2000.0], 32, None);
    let spec = ModelSpec {
        compartments: vec!["ball".into(), "stick".into()],
        ..ModelSpec::default()
    };
    let m = MultiCompartment::new(&spec, &s, &registry(), &BTreeMap::new()).unwrap();
    assert_eq!(
        m.param_names(),
        [
            "S0",
            "ball_D",
            "stick_theta",
            "stick_phi",
            "stick_lambda_par",
            "ball_partial_fraction"
        ]
    );
    let n = 100;
    let mut truth = Array2::zeros((n, 6));
    for v in 0..n {
        truth[[v, 0]] = 1.0;
        truth[[v, 1]] = 3.0;
        truth[[v, 2]] = PI * (v as f64 + 0.5) / n as f64;
        truth[[v, 3]] = 2.0 * PI * ((v * 37) % n) as f64 / n as f64 - PI;
        truth[[v, 4]] = 1.7;
        truth[[v, 5]] = 0.3;
    }
    let data = simulate_signals(&m, truth.view(), Some(30.0), Noise::Rician, 4).unwrap();
    let fit = fit_microstructure(
        &m,
        &s,
        data.view(),
        None,
        &FitOptions::default(),
        1,
        &Device::cpu(None),
    )
    .unwrap();
    let mut ang: Vec<f64> = (0..n)
        .map(|v| {
            angle_deg(
                (fit.params[[v, 2]], fit.params[[v, 3]]),
                (truth[[v, 2]], truth[[v, 3]]),
            )
        })
        .collect();
    ang.sort_by(f64::total_cmp);
    eprintln!(
        "ball-stick SNR 30: median direction error {:.2} deg, p90 {:.2}",
        ang[n / 2],
        ang[9 * n / 10]
    );
    assert!(
        ang[n / 2] < 4.0 && ang[9 * n / 10] < 8.0,
        "{} / {}",
        ang[n / 2],
        ang[9 * n / 10]
    );
    // Folded onto the upper hemisphere.
    assert!(fit
        .params
        .column(2)
        .iter()
        .all(|t| (0.0..=PI / 2.0 + 1e-12).contains(t)));
}

#[test]
fn sandi_recovers_soma_radius_and_fractions() {
    let timing = Some((0.0106, 0.0431));
    // Eight shells besides b = 0: the spherical mean gives one number per
    // shell, and with fewer than the six parameters the fit is not unique.
    let s = scheme(
        &[500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 10000.0],
        120,
        timing,
    );
    let reg = registry();
    let m = MultiCompartment::new(&presets::sandi(), &s, &reg, &BTreeMap::new()).unwrap();
    assert_eq!(
        m.param_names(),
        [
            "S0",
            "stick_lambda_par",
            "sphere_gpd_radius",
            "ball_D",
            "stick_partial_fraction",
            "sphere_gpd_partial_fraction"
        ]
    );
    let n = 60;
    let truth = Array2::from_shape_fn((n, 6), |(v, j)| {
        let f = ((v * [1, 7, 11, 13, 17, 19][j]) % n) as f64 / n as f64;
        [
            1.0,
            1.6 + 0.8 * f,
            6.0 + 6.0 * f,
            0.8 + 0.8 * f,
            0.3 + 0.3 * f,
            0.3 + 0.3 * f,
        ][j]
    });
    // The full model's signal (sticks along a direction), averaged over
    // each shell's 120 directions, is the spherical-mean model's signal, to
    // within the direction set's quadrature error (about 1e-3 at b lambda =
    // 24 for a stick).
    let full = ModelSpec {
        compartments: vec!["stick".into(), "sphere_gpd".into(), "ball".into()],
        links: [(
            "sphere_gpd.D".to_string(),
            osipy_microstructure::LinkValue::Number(3e-3),
        )]
        .into(),
        ..ModelSpec::default()
    };
    let gen = MultiCompartment::new(&full, &s, &reg, &BTreeMap::new()).unwrap();
    let oriented = Array2::from_shape_fn((n, 8), |(v, j)| match j {
        0 => truth[[v, 0]],
        1 => 0.3 + 2.5 * v as f64 / n as f64,
        2 => 1.0 - 3.0 * v as f64 / n as f64,
        _ => truth[[v, j - 2]],
    });
    let data = simulate_signals(&gen, oriented.view(), None, Noise::Rician, 5).unwrap();
    let averaged = osipy_microstructure::model_data(&m, &s, data.view()).unwrap();
    let sm = simulate_signals(&m, truth.view(), None, Noise::Rician, 5).unwrap();
    let worst = averaged
        .iter()
        .zip(sm.iter())
        .fold(0.0f64, |w, (a, b)| w.max((a - b).abs()));
    assert!(
        worst < 2.5e-3,
        "shell means differ from the spherical-mean model by {worst}"
    );
    // Noise-free recovery from the spherical-mean signal: several starts
    // find the global minimum where one start can stop in another.
    let dev = Device::cpu(None);
    let rel = |fit: &osipy_fitting::BatchFit, j: usize| {
        let mut e: Vec<f64> = (0..n)
            .map(|v| (fit.params[[v, j]] / truth[[v, j]] - 1.0).abs())
            .collect();
        e.sort_by(f64::total_cmp);
        (e[n / 2], e[9 * n / 10])
    };
    // Every volume carries its shell's spherical mean.
    let sm_volumes = Array2::from_shape_fn((n, s.len()), |(v, i)| sm[[v, s.shell_of[i]]]);
    let one = fit_microstructure(&m, &s, sm_volumes.view(), None, &FitOptions::default(), 1, &dev).unwrap();
    let five = fit_microstructure(&m, &s, sm_volumes.view(), None, &FitOptions::default(), 5, &dev).unwrap();
    for j in 1..6 {
        let (a, b) = (rel(&one, j), rel(&five, j));
        eprintln!(
            "{}: 1 start {:.2e} {:.2e}, 5 starts {:.2e} {:.2e}",
            m.param_names()[j],
            a.0,
            a.1,
            b.0,
            b.1
        );
        assert!(
            b.0 < 1e-6 && b.1 < 1e-6,
            "{}: median / p90 relative error {b:?}",
            m.param_names()[j]
        );
    }
}

/// DTI by non-linear least squares on random tensors (FA 0.1-0.85, MD
/// 0.6-1.0e-3 mm^2/s), 3 b = 0 and 32 directions at b = 1000 s/mm^2.
/// Noise-free, FA, MD and the principal direction come back exactly (to
/// 1e-6); at SNR 50 (Rician) the errors stay within the spread such an
/// acquisition allows (the project's own tolerances: median |FA error|
/// 0.03, median relative MD error 3 %, median direction error 5 degrees
/// where FA >= 0.4; Jones 2004 reports FA SDs of 0.02-0.04 for 30
/// directions at SNR 20-40 per b = 0 image).
#[test]
fn dti_recovers_fa_md_and_direction() {
    use osipy_microstructure::fractional_anisotropy;
    let s = scheme(&[1000.0], 32, None);
    let m = MultiCompartment::new(&presets::dti(), &s, &registry(), &BTreeMap::new()).unwrap();
    let n = 120;
    let mut truth = Array2::zeros((n, 7));
    let mut rng = osipy_fitting::rng::Rng::new(11);
    for v in 0..n {
        let md = 0.6 + 0.4 * rng.uniform();
        let fa_shape = 0.1 + 0.9 * rng.uniform();
        // Eigenvalues around md: l1 up, l2, l3 down, unequal.
        let l1 = md * (1.0 + 1.4 * fa_shape);
        let l2 = md * (1.0 - 0.45 * fa_shape);
        let l3 = 3.0 * md - l1 - l2;
        let z = 2.0 * rng.uniform() - 1.0;
        truth.row_mut(v).assign(&ndarray::arr1(&[
            100.0,
            z.acos(),
            PI * (2.0 * rng.uniform() - 1.0),
            PI * rng.uniform(),
            l1,
            l2,
            l3,
        ]));
    }
    let fa = |r: ndarray::ArrayView1<f64>| fractional_anisotropy(&[r[4], r[5], r[6]]);
    let md = |r: ndarray::ArrayView1<f64>| (r[4] + r[5] + r[6]) / 3.0;
    for (snr, exact) in [(None, true), (Some(50.0), false)] {
        let data = simulate_signals(&m, truth.view(), snr, Noise::Rician, 5).unwrap();
        let fit = fit_microstructure(
            &m,
            &s,
            data.view(),
            None,
            &FitOptions::default(),
            3,
            &Device::cpu(None),
        )
        .unwrap();
        let (mut efa, mut emd, mut eang) = (Vec::new(), Vec::new(), Vec::new());
        for v in 0..n {
            let (e, t) = (fit.params.row(v), truth.row(v));
            assert_eq!(fit.status[v], QualityCode::Converged, "voxel {v}");
            assert!(
                e[4] >= e[5] && e[5] >= e[6],
                "voxel {v}: eigenvalues not sorted: {e}"
            );
            assert!(
                (0.0..=PI / 2.0 + 1e-12).contains(&e[1]) && (0.0..PI).contains(&e[3]),
                "{e}"
            );
            efa.push((fa(e) - fa(t)).abs());
            emd.push((md(e) / md(t) - 1.0).abs());
            if fa(t) >= 0.4 {
                eang.push(angle_deg((e[1], e[2]), (t[1], t[2])));
            }
        }
        for e in [&mut efa, &mut emd, &mut eang] {
            e.sort_by(f64::total_cmp);
        }
        let med = |e: &Vec<f64>| e[e.len() / 2];
        eprintln!(
            "DTI SNR {snr:?}: median |FA err| {:.4}, MD rel {:.4}, angle {:.3} deg (max {:.3}; {} voxels FA >= 0.4)",
            med(&efa),
            med(&emd),
            med(&eang),
            eang[eang.len() - 1],
            eang.len()
        );
        if exact {
            assert!(
                efa[n - 1] < 1e-6 && emd[n - 1] < 1e-6 && eang[eang.len() - 1] < 1e-3,
                "noise-free DTI not exact"
            );
        } else {
            assert!(med(&efa) < 0.03 && med(&emd) < 0.03 && med(&eang) < 5.0);
        }
    }
}
