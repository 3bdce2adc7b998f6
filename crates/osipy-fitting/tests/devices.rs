//! The shared fitting suite: the same assertions against every device this
//! build has (`built_devices`: the CPU with 1 and 2 threads; with the
//! `cuda` feature, the GPU when one answers). CPU devices agree bit for
//! bit; a GPU agrees with them to 1e-6 relative (its `exp` is not the C
//! library's), with the same statuses.

use ndarray::Array2;
use osipy_core::QualityCode;
use osipy_fitting::models::{BiExponential, MonoExponential};
use osipy_fitting::rng::Rng;
use osipy_fitting::{built_devices, fit_batch, map_voxels, FitOptions, Model};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn data(model: &dyn Model, truth: &[f64], n_vox: usize, sigma: f64) -> Array2<f64> {
    let mut rng = Rng::new(3);
    let mut y = vec![0.0; model.n_samples()];
    model.predict(truth, &mut y);
    Array2::from_shape_fn((n_vox, y.len()), |(_, i)| y[i] + sigma * rng.normal())
}

#[test]
fn every_device_recovers_known_curves_and_agrees_with_the_others() {
    let t: Vec<f64> = (0..16).map(|i| i as f64 * 0.2).collect();
    let mono = MonoExponential::new(&t);
    let bi = BiExponential::new(&t);
    let cases: [(&dyn Model, Vec<f64>); 2] = [(&mono, vec![10.0, 0.7]), (&bi, vec![6.0, 3.0, 4.0, 0.3])];
    for (model, truth) in cases {
        let clean = data(model, &truth, 600, 0.0);
        let noisy = data(model, &truth, 600, 0.01);
        let mut mask = vec![true; 600];
        mask[7] = false;
        let mut reference: Option<osipy_fitting::BatchFit> = None;
        for device in built_devices() {
            let done = Arc::new(AtomicUsize::new(0));
            let opts = FitOptions {
                progress: Some(done.clone()),
                ..FitOptions::default()
            };
            let fit = fit_batch(model, clean.view(), Some(&mask), &opts, &device).unwrap();
            // Noise-free data: the truth to 1e-6 relative (the LM tolerances are 1e-10).
            for v in (0..600).filter(|&v| mask[v]) {
                for (j, want) in truth.iter().enumerate() {
                    let got = fit.params[[v, j]];
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs(),
                        "{} on {device:?}: {got} vs {want}",
                        model.name()
                    );
                }
            }
            assert_eq!(fit.status[7], QualityCode::NotFitted);
            assert!(fit.params[[7, 0]].is_nan());
            // Progress counts every voxel once.
            assert_eq!(done.load(Ordering::Relaxed), 600);
            // Noisy data: every CPU device gives bit-identical results, a
            // GPU the same to 1e-6 with the same statuses.
            let noisy_fit = fit_batch(model, noisy.view(), None, &FitOptions::default(), &device).unwrap();
            match &reference {
                None => reference = Some(noisy_fit),
                Some(r) if device.cuda_ordinal().is_some() => {
                    let (diff, statuses) = osipy_fitting::gpu::fit_difference(r, &noisy_fit);
                    assert!(
                        diff < 1e-6 && statuses == 0,
                        "{} on {device:?}: {diff:e}, {statuses}",
                        model.name()
                    );
                }
                Some(r) => assert!(
                    r.params
                        .iter()
                        .zip(noisy_fit.params.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} on {device:?} differs from the first device",
                    model.name()
                ),
            }
        }
    }
}

#[test]
fn map_voxels_visits_every_voxel_once_on_every_device() {
    for device in built_devices() {
        let mut out = vec![0.0; 3 * 1000];
        let done = AtomicUsize::new(0);
        map_voxels(
            &device,
            &mut out,
            3,
            64,
            Some(&done),
            || 0usize,
            |calls, v, rec| {
                *calls += 1;
                rec[0] = v as f64;
                rec[1] = (v as f64).sqrt();
                rec[2] = 1.0;
            },
        )
        .unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 1000);
        for (v, rec) in out.chunks(3).enumerate() {
            assert_eq!(rec, [v as f64, (v as f64).sqrt(), 1.0]);
        }
    }
}
