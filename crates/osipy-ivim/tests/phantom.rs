//! IVIM fits on phantoms with known truth.

use osipy_backend::Device;
use osipy_ivim::phantom::{generate, IvimPhantomSpec, Noise};
use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};

fn median_rel_err(est: impl Iterator<Item = f64>, truth: impl Iterator<Item = f64>) -> f64 {
    let mut e: Vec<f64> = est
        .zip(truth)
        .filter(|(a, _)| a.is_finite())
        .map(|(a, b)| ((a - b) / b).abs())
        .collect();
    e.sort_by(|a, b| a.total_cmp(b));
    e[e.len() / 2]
}

#[test]
fn noise_free_full_fit_is_exact_and_noisy_fits_are_close() {
    let dev = Device::Cpu { threads: 2 };
    let spec = IvimPhantomSpec {
        shape: [8, 8, 4],
        snr: None,
        ..Default::default()
    };
    let ph = generate(&spec).unwrap();
    let data = ph.voxels();
    let fit = fit_ivim(
        data.view(),
        &spec.b_values,
        None,
        &IvimFitOptions {
            strategy: IvimStrategy::Full,
            ..Default::default()
        },
        &dev,
    )
    .unwrap();
    for (j, name) in [(1, "f"), (2, "D"), (3, "Dstar")] {
        let e = median_rel_err(
            fit.params.column(j).iter().copied(),
            ph.truth(name).unwrap().iter().copied(),
        );
        assert!(e < 1e-5, "{name}: {e}");
    }
    // SNR 100, Rician: medians within a few percent (D* is the least precise).
    let spec = IvimPhantomSpec {
        shape: [8, 8, 4],
        snr: Some(100.0),
        noise: Noise::Rician,
        seed: 3,
        ..Default::default()
    };
    let ph = generate(&spec).unwrap();
    let data = ph.voxels();
    for strategy in [IvimStrategy::Segmented, IvimStrategy::Full] {
        let fit = fit_ivim(
            data.view(),
            &spec.b_values,
            None,
            &IvimFitOptions {
                strategy,
                ..Default::default()
            },
            &dev,
        )
        .unwrap();
        let ed = median_rel_err(
            fit.params.column(2).iter().copied(),
            ph.truth("D").unwrap().iter().copied(),
        );
        let ef = median_rel_err(
            fit.params.column(1).iter().copied(),
            ph.truth("f").unwrap().iter().copied(),
        );
        assert!(ed < 0.03 && ef < 0.15, "{strategy:?}: D {ed}, f {ef}");
    }
    // Reproducible.
    assert_eq!(generate(&spec).unwrap().signal, ph.signal);
}

#[test]
fn float32_series_fit_as_their_f64_widening_bit_for_bit() {
    // A run holds a float32 series as read; every strategy must fit it as
    // the same values in f64, including a non-finite and a zero voxel.
    let dev = Device::Cpu { threads: 2 };
    let spec = IvimPhantomSpec {
        shape: [6, 5, 2],
        ..Default::default()
    };
    let mut narrow = generate(&spec).unwrap().voxels().mapv(|x| x as f32);
    narrow[[3, 2]] = f32::NAN;
    narrow.row_mut(7).fill(0.0);
    let wide = narrow.mapv(f64::from);
    for strategy in [IvimStrategy::Segmented, IvimStrategy::Full] {
        let opts = IvimFitOptions {
            strategy,
            ..Default::default()
        };
        let a = fit_ivim(wide.view(), &spec.b_values, None, &opts, &dev).unwrap();
        let b = fit_ivim(narrow.view(), &spec.b_values, None, &opts, &dev).unwrap();
        let bits = |x: &ndarray::Array2<f64>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.params), bits(&b.params), "{strategy:?}");
        assert_eq!(bits(&a.std_errors), bits(&b.std_errors), "{strategy:?}");
        assert_eq!(a.status, b.status, "{strategy:?}");
        assert!(a.status.iter().filter(|q| q.is_valid()).count() > 40);
        assert!(!a.status[3].is_valid() && !a.status[7].is_valid());
    }
}
