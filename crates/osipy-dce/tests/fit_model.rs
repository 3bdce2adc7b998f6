//! `fit_model` on phantoms with known truth.

use ndarray::Array3;
use osipy_backend::Device;
use osipy_core::QualityCode;
use osipy_dce::phantom::{generate, PhantomSpec};
use osipy_dce::{fit_model, DceFit, DceFitOptions, DceModelEntry};
use osipy_fitting::FitOptions;

const CPU: Device = Device::Cpu { threads: 2 };

/// Every built-in DCE model.
const MODELS: [&str; 5] = ["tofts", "extended_tofts", "patlak", "2cum", "2cxm"];

/// Fits the built-in model `name` to the whole phantom on one thread.
fn fit_phantom(
    name: &str,
    ph: &osipy_dce::phantom::DcePhantom,
    opts: &DceFitOptions,
) -> osipy_core::Result<DceFit> {
    fit_model(
        &DceModelEntry::builtin(name)?,
        ph.concentration.view(),
        &ph.aif,
        &ph.time,
        None,
        opts,
        &CPU,
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn noise_free_phantoms_are_recovered_exactly() {
    // The phantom uses the same forward model, so recovery is limited only
    // by the convergence tolerances: 1e-5 relative.
    for name in MODELS {
        let spec = PhantomSpec {
            shape: [4, 4, 2],
            ..PhantomSpec::for_model(name).unwrap()
        };
        let ph = generate(&spec).unwrap();
        let fit = fit_phantom(name, &ph, &DceFitOptions::default()).unwrap();
        for (pname, truth) in &ph.truth {
            let map = fit.map(pname).unwrap();
            for (got, want) in map.values.iter().zip(truth) {
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
                    "{name} {pname}: {got} vs {want}"
                );
            }
        }
        assert!(fit.quality.iter().all(|q| q.is_valid()), "{name}");
    }
}

#[test]
fn noisy_extended_tofts_has_small_median_error_and_derived_kep() {
    let spec = PhantomSpec {
        noise_sd: 0.01,
        seed: 7,
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec).unwrap();
    let fit = fit_phantom("extended_tofts", &ph, &DceFitOptions::default()).unwrap();
    // Median absolute relative error over the phantom, per parameter. Bounds
    // chosen well inside Python osipy's figures on its benchmark (Ktrans
    // 0.033, ve 0.022, vp 0.088) at this noise level, 80 frames.
    for (pname, bound) in [("Ktrans", 0.03), ("ve", 0.03), ("vp", 0.09)] {
        let truth = ph.truth(pname).unwrap();
        let map = fit.map(pname).unwrap();
        let mut err: Vec<f64> = map
            .values
            .iter()
            .zip(truth)
            .map(|(g, w)| ((g - w) / w).abs())
            .collect();
        let m = median(&mut err);
        assert!(m < bound, "{pname}: median relative error {m}");
    }
    let kep = fit.map("kep").unwrap();
    let (k, v) = (fit.map("Ktrans").unwrap(), fit.map("ve").unwrap());
    assert!((kep.values[[3, 5, 1]] - k.values[[3, 5, 1]] / v.values[[3, 5, 1]]).abs() < 1e-12);
    assert!(kep.std_error.is_none());
    assert!(fit.map("Ktrans").unwrap().std_error.is_some());
}

#[test]
fn mask_threshold_and_named_settings() {
    let spec = PhantomSpec {
        shape: [4, 4, 1],
        noise_sd: 0.002,
        ..PhantomSpec::extended_tofts()
    };
    let mut ph = generate(&spec).unwrap();
    // Voxel (0, 0, 0): pure noise, no enhancement -> R^2 ~ 0 -> invalid.
    for t in 0..ph.time.len() {
        ph.concentration[[0, 0, 0, t]] = 0.01 * ((t * 7919) % 13) as f64 / 13.0;
    }
    // Voxel (1, 1, 0): a NaN frame.
    ph.concentration[[1, 1, 0, 10]] = f64::NAN;
    let mut mask = Array3::from_elem((4, 4, 1), true);
    mask[[3, 3, 0]] = false;
    let opts = DceFitOptions {
        fit: FitOptions {
            r2_threshold: Some(0.7),
            ..Default::default()
        },
        bounds: vec![("vp".into(), 0.0, 0.5)],
        initial_guess: vec![("ve".into(), 0.25)],
        ..Default::default()
    };
    let fit = fit_model(
        &DceModelEntry::builtin("extended_tofts").unwrap(),
        ph.concentration.view(),
        &ph.aif,
        &ph.time,
        Some(mask.view()),
        &opts,
        &CPU,
    )
    .unwrap();
    assert_eq!(fit.quality[[0, 0, 0]], QualityCode::LowR2);
    assert_eq!(fit.quality[[1, 1, 0]], QualityCode::NonFiniteInput);
    assert_eq!(fit.quality[[3, 3, 0]], QualityCode::NotFitted);
    assert!(fit.map("Ktrans").unwrap().values[[0, 0, 0]].is_nan());
    assert!(fit.r_squared[[3, 3, 0]].is_nan());
    assert!(fit.quality[[2, 2, 0]].is_valid());

    // Bad names and shapes are whole-call errors naming the alternatives.
    let bad = DceFitOptions {
        bounds: vec![("Vp".into(), 0.0, 0.5)],
        ..Default::default()
    };
    let e = fit_phantom("extended_tofts", &ph, &bad).unwrap_err().to_string();
    assert!(e.contains("\"Vp\"") && e.contains("Ktrans, ve, vp"), "{e}");
    let e = DceModelEntry::builtin("etofts").unwrap_err().to_string();
    assert!(e.contains("extended_tofts"), "{e}");
    let e = fit_model(
        &DceModelEntry::builtin("tofts").unwrap(),
        ph.concentration.view(),
        &ph.aif,
        &ph.time[1..],
        None,
        &DceFitOptions::default(),
        &CPU,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("79") && e.contains("80"), "{e}");
    let small = Array3::from_elem((2, 2, 1), true);
    let e = fit_model(
        &DceModelEntry::builtin("tofts").unwrap(),
        ph.concentration.view(),
        &ph.aif,
        &ph.time,
        Some(small.view()),
        &DceFitOptions::default(),
        &CPU,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mask shape"), "{e}");
}

#[test]
fn delay_is_fitted_from_a_phantom() {
    // Bolus 6 s later in tissue than in the AIF given to the fit.
    // 1 s frames: the Parker first pass (sigma ~3.4 s) is well sampled, so
    // shifting the AIF samples by interpolation is accurate.
    let spec = PhantomSpec {
        shape: [2, 2, 1],
        bolus_arrival: 36.0,
        dt: 1.0,
        n_frames: 280,
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec).unwrap();
    let aif_early = osipy_aif::Aif::parker()
        .shift(30.0)
        .plasma(&ph.time, 0.42)
        .unwrap();
    let opts = DceFitOptions {
        fit_delay: true,
        ..Default::default()
    };
    let fit = fit_model(
        &DceModelEntry::builtin("extended_tofts").unwrap(),
        ph.concentration.view(),
        &aif_early,
        &ph.time,
        None,
        &opts,
        &CPU,
    )
    .unwrap();
    let delay = fit.map("delay").unwrap();
    // Linear interpolation of 1 s samples: allow 0.1 s (a tenth of a frame).
    assert!(
        delay.values.iter().all(|d| (d - 6.0).abs() < 0.1),
        "{:?}",
        delay.values
    );
}

#[test]
fn phantom_is_reproducible_and_validated() {
    let spec = PhantomSpec {
        noise_sd: 0.01,
        seed: 3,
        ..PhantomSpec::extended_tofts()
    };
    let a = generate(&spec).unwrap();
    let b = generate(&spec).unwrap();
    assert!(a
        .concentration
        .iter()
        .zip(b.concentration.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    let bad = PhantomSpec {
        levels: vec![vec![0.1]],
        ..PhantomSpec::extended_tofts()
    };
    assert!(generate(&bad).unwrap_err().to_string().contains("Ktrans"));
}

#[test]
fn phantom_signal_converts_back_to_its_concentration() {
    use osipy_dce::phantom::SignalSettings;
    use osipy_dce::{signal_to_concentration, ConcentrationMethod, SpgrParams};
    let ph = generate(&PhantomSpec {
        shape: [2, 2, 1],
        ..PhantomSpec::extended_tofts()
    })
    .unwrap();
    let acq = SignalSettings {
        t10: 1.4,
        m0: 1000.0,
        tr: 0.005,
        flip_angle: 20.0,
        relaxivity: 4.5,
    };
    let s = ph.signal(&acq, 0.0, 1);
    let n_t = ph.time.len();
    let flat = s.into_shape_with_order((4, n_t)).unwrap();
    let p = SpgrParams {
        tr: acq.tr,
        flip_angle: acq.flip_angle,
        relaxivity: acq.relaxivity,
        baseline: 0..5,
    };
    let (c, q) = signal_to_concentration(
        flat.view(),
        &[1.0 / 1.4; 4],
        &p,
        ConcentrationMethod::Spgr,
        &osipy_backend::Device::cpu(Some(2)),
    )
    .unwrap();
    assert!(q.iter().all(|q| *q == QualityCode::Converged));
    let want = ph.concentration.into_shape_with_order((4, n_t)).unwrap();
    assert!(c.iter().zip(want.iter()).all(|(a, b)| (a - b).abs() < 1e-9));
}

#[test]
fn lockstep_fits_equal_one_voxel_fits_bit_for_bit() {
    // The models with lane kernels fit four voxels per evaluation (with
    // AVX2 where the CPU has it); switching that off must not change a
    // single bit of any map, on a uniform and a non-uniform grid.
    for name in MODELS {
        let spec = PhantomSpec {
            shape: [9, 7, 3],
            snr: Some(15.0),
            ..PhantomSpec::for_model(name).unwrap()
        };
        let ph = generate(&spec).unwrap();
        let mut irregular = ph.time.clone();
        for (i, t) in irregular.iter_mut().enumerate() {
            *t += if i % 3 == 1 { 0.4 } else { 0.0 };
        }
        for time in [ph.time.clone(), irregular] {
            let fit = |lockstep: bool| {
                let opts = DceFitOptions {
                    fit: FitOptions {
                        lockstep,
                        chunk_voxels: 37,
                        ..FitOptions::default()
                    },
                    ..DceFitOptions::default()
                };
                let model = DceModelEntry::builtin(name).unwrap();
                fit_model(&model, ph.concentration.view(), &ph.aif, &time, None, &opts, &CPU).unwrap()
            };
            let (one, lock) = (fit(false), fit(true));
            assert_eq!(one.quality, lock.quality, "{name}: quality");
            assert!(one.quality.iter().any(|q| q.is_valid()), "{name}: nothing fitted");
            let bits = |a: &Array3<f64>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one.r_squared), bits(&lock.r_squared), "{name}: R^2");
            for (a, b) in one.maps.iter().zip(&lock.maps) {
                assert_eq!(bits(&a.values), bits(&b.values), "{name}: {}", a.name);
                let se = |m: &osipy_core::ParameterMap| m.std_error.as_ref().map(bits);
                assert_eq!(se(a), se(b), "{name}: {} standard error", a.name);
            }
        }
    }
}

#[test]
fn signal_converted_as_the_fit_loads_it_equals_the_converted_volume() {
    // The run's streamed path: a float32 signal series converted voxel by
    // voxel as the fit reads it (`SignalAsConcentration`), against the
    // whole volume converted first (`signal_to_concentration`) and then
    // fitted. Every map equal bit for bit; voxels that do not convert
    // (NaN frame, zero baseline, a frame beyond the SPGR range, no R10)
    // refused with the conversion's code.
    use osipy_dce::{signal_to_concentration, ConcentrationMethod, SignalAsConcentration, SpgrParams};
    let spec = PhantomSpec {
        shape: [9, 7, 3],
        snr: Some(20.0),
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec).unwrap();
    let acq = osipy_dce::phantom::SignalSettings {
        t10: 1.4,
        m0: 1000.0,
        tr: 0.005,
        flip_angle: 15.0,
        relaxivity: 4.5,
    };
    let grid = spec.shape;
    let n_vox: usize = grid.iter().product();
    let nt = ph.time.len();
    let mut signal = ph
        .signal(&acq, 0.0, 1)
        .into_shape_with_order((n_vox, nt))
        .unwrap();
    signal[[3, 20]] = f64::NAN;
    signal.row_mut(10).fill(0.0);
    signal[[17, 40]] = 1e9;
    let narrow = signal.mapv(|s| s as f32);
    let mut r10 = vec![1.0 / 1.4; n_vox];
    r10[25] = f64::NAN;
    let sp = SpgrParams {
        tr: 0.005,
        flip_angle: 15.0,
        relaxivity: 4.5,
        baseline: 0..5,
    };
    let entry = DceModelEntry::builtin("extended_tofts").unwrap();
    let opts = DceFitOptions::default();
    for device in [Device::Cpu { threads: 1 }, CPU] {
        let (conc, q) = signal_to_concentration(
            narrow.mapv(f64::from).view(),
            &r10,
            &sp,
            ConcentrationMethod::Spgr,
            &device,
        )
        .unwrap();
        let valid: Vec<bool> = q.iter().map(|q| q.is_valid()).collect();
        let whole = osipy_dce::fit_voxels(
            &entry,
            &conc.view(),
            grid,
            &ph.aif,
            &ph.time,
            Some(&valid),
            &opts,
            &device,
        )
        .unwrap();
        let source = SignalAsConcentration::new(narrow.view(), &r10, &sp, ConcentrationMethod::Spgr).unwrap();
        let streamed =
            osipy_dce::fit_voxels(&entry, &source, grid, &ph.aif, &ph.time, None, &opts, &device).unwrap();
        let bits = |a: &Array3<f64>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&whole.r_squared), bits(&streamed.r_squared));
        for (a, b) in whole.maps.iter().zip(&streamed.maps) {
            assert_eq!(bits(&a.values), bits(&b.values), "{}", a.name);
        }
        let refused = [
            (3, QualityCode::NonFiniteInput),
            (10, QualityCode::InvalidSignal),
            (17, QualityCode::InvalidSignal),
            (25, QualityCode::InvalidSignal),
        ];
        for (v, (a, b)) in whole.quality.iter().zip(&streamed.quality).enumerate() {
            match refused.iter().find(|(r, _)| *r == v) {
                Some((_, code)) => {
                    assert_eq!(*a, QualityCode::NotFitted, "voxel {v}");
                    assert_eq!(b, code, "voxel {v}");
                }
                None => assert_eq!(a, b, "voxel {v}"),
            }
        }
        assert!(streamed.quality.iter().filter(|q| q.is_valid()).count() > n_vox / 2);
    }
}

/// Whether the fitter was handed a model with lane kernels.
static SAW_LANES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn recording_fitter(
    model: &dyn osipy_fitting::Model,
    data: &dyn osipy_fitting::VoxelData,
    mask: Option<&[bool]>,
    opts: &FitOptions,
    device: &Device,
) -> osipy_core::Result<osipy_fitting::BatchFit> {
    SAW_LANES.store(model.has_lanes(), std::sync::atomic::Ordering::SeqCst);
    osipy_fitting::lm_fitter(model, data, mask, opts, device)
}

#[test]
fn the_run_hands_the_fitter_a_model_with_lanes() {
    // `fit_model` wraps the model to apply starting values by name; the
    // wrapper must keep the lane kernels, or every DCE run would silently
    // fit one voxel at a time (same maps, a third slower).
    let spec = PhantomSpec {
        shape: [3, 3, 1],
        ..PhantomSpec::extended_tofts()
    };
    let ph = generate(&spec).unwrap();
    let opts = DceFitOptions {
        fitter: (recording_fitter, "recording".into()),
        initial_guess: vec![("ve".into(), 0.2)],
        ..DceFitOptions::default()
    };
    SAW_LANES.store(false, std::sync::atomic::Ordering::SeqCst);
    fit_phantom("extended_tofts", &ph, &opts).unwrap();
    assert!(SAW_LANES.load(std::sync::atomic::Ordering::SeqCst));
}
