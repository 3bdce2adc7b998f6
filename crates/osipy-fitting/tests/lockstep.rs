//! Lockstep fitting (several voxels per model evaluation) against the
//! one-voxel engine: every output equal bit for bit, whatever the mix of
//! voxels (masked, non-finite, failing, pinned), the chunk size and the
//! thread count.

use ndarray::Array2;
use osipy_backend::Device;
use osipy_core::QualityCode;
use osipy_fitting::models::BiExponential;
use osipy_fitting::rng::Rng;
use osipy_fitting::{fit_batch, BatchFit, FitOptions, Model, ParamSpec, PinValue, VoxelData};

/// The bi-exponential with the lockstep path switched on through the
/// trait's reference lane evaluation (lane by lane), so these tests check
/// the driver, not a model's lane kernel.
struct Lockstep(BiExponential);

impl Model for Lockstep {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn params(&self) -> &[ParamSpec] {
        self.0.params()
    }
    fn n_samples(&self) -> usize {
        self.0.n_samples()
    }
    fn predict(&self, p: &[f64], out: &mut [f64]) {
        self.0.predict(p, out)
    }
    fn jacobian(&self, p: &[f64], jac: &mut [f64]) -> bool {
        self.0.jacobian(p, jac)
    }
    fn predict_with_jacobian(&self, p: &[f64], out: &mut [f64], jac: &mut [f64]) -> bool {
        self.0.predict_with_jacobian(p, out, jac)
    }
    fn initial_guess(&self, data: &[f64], out: &mut [f64]) {
        self.0.initial_guess(data, out)
    }
    fn has_lanes(&self) -> bool {
        true
    }
}

/// Noisy bi-exponential curves with varied truths, plus voxels that must
/// take every exit of the engine: non-finite data, all-zero data (a perfect
/// fit at zero cost), pure noise and huge values.
fn data(model: &dyn Model, n_vox: usize) -> Array2<f64> {
    let mut rng = Rng::new(42);
    let n = model.n_samples();
    let mut d = Array2::zeros((n_vox, n));
    let mut y = vec![0.0; n];
    for v in 0..n_vox {
        let truth = [
            50.0 + (v % 7) as f64 * 5.0,
            2.0 + (v % 5) as f64,
            30.0,
            0.1 + (v % 3) as f64 * 0.1,
        ];
        model.predict(&truth, &mut y);
        for i in 0..n {
            d[[v, i]] = match v % 23 {
                3 => f64::NAN,
                7 => 0.0,
                11 => rng.normal(),
                13 => 1e300 * (1.0 + i as f64),
                _ => y[i] + 0.5 * rng.normal(),
            };
        }
    }
    d
}

fn assert_same(a: &BatchFit, b: &BatchFit, what: &str) {
    let bits = |x: &f64| x.to_bits();
    assert!(
        a.params.iter().map(bits).eq(b.params.iter().map(bits)),
        "{what}: parameters differ"
    );
    assert!(
        a.std_errors.iter().map(bits).eq(b.std_errors.iter().map(bits)),
        "{what}: standard errors differ"
    );
    assert!(
        a.r2.iter().map(bits).eq(b.r2.iter().map(bits)),
        "{what}: R^2 differs"
    );
    assert!(
        a.rms.iter().map(bits).eq(b.rms.iter().map(bits)),
        "{what}: RMS differs"
    );
    assert_eq!(a.iterations, b.iterations, "{what}: iterations differ");
    assert_eq!(a.status, b.status, "{what}: statuses differ");
}

#[test]
fn lockstep_fits_equal_one_voxel_fits_bit_for_bit() {
    let t: Vec<f64> = (0..13).map(|i| i as f64 * 0.25).collect();
    // The driver with the reference lane evaluation, then with the
    // bi-exponential's own lane kernel.
    check_lockstep(&Lockstep(BiExponential::new(&t)));
    check_lockstep(&BiExponential::new(&t));
}

fn check_lockstep(model: &dyn Model) {
    assert!(model.has_lanes());
    let n_vox = 1001;
    let d = data(model, n_vox);
    let mask: Vec<bool> = (0..n_vox).map(|v| v % 17 != 5).collect();
    let pins = (0..n_vox)
        .map(|v| {
            if v % 29 == 1 {
                f64::NAN
            } else {
                0.1 + (v % 3) as f64 * 0.1
            }
        })
        .collect();
    let option_sets = [
        FitOptions::default(),
        FitOptions {
            chunk_voxels: 7,
            ..FitOptions::default()
        },
        FitOptions {
            lm: osipy_fitting::LmSettings {
                max_iterations: 3,
                ..Default::default()
            },
            r2_threshold: Some(0.9),
            ..FitOptions::default()
        },
        FitOptions::default()
            .pin_by_name(model, "k2", PinValue::PerVoxel(pins))
            .unwrap(),
    ];
    for (i, opts) in option_sets.into_iter().enumerate() {
        let scalar = FitOptions {
            lockstep: false,
            ..opts.clone()
        };
        let one = fit_batch(model, d.view(), Some(&mask), &scalar, &Device::Cpu { threads: 1 }).unwrap();
        // The data reach every exit: converged, failed and not fitted.
        for q in [QualityCode::NotFitted, QualityCode::NonFiniteInput] {
            assert!(
                one.status.iter().any(|s| *s == q),
                "options {i}: no {} voxel",
                q.name()
            );
        }
        assert!(
            one.status.iter().any(|s| s.is_valid()),
            "options {i}: nothing fitted"
        );
        for threads in [1, 2] {
            let lock = fit_batch(model, d.view(), Some(&mask), &opts, &Device::Cpu { threads }).unwrap();
            assert_same(&one, &lock, &format!("options {i}, {threads} threads"));
        }
    }
}

/// Rows of an array, except that every voxel `v % 9 == 4` cannot be loaded:
/// a source such as a signal-to-concentration conversion that fails there.
struct Failing<'a>(ndarray::ArrayView2<'a, f64>);

impl VoxelData for Failing<'_> {
    fn dim(&self) -> (usize, usize) {
        self.0.dim()
    }
    fn load(&self, v: usize, out: &mut [f64]) -> Result<(), QualityCode> {
        if v % 9 == 4 {
            return Err(QualityCode::InvalidSignal);
        }
        self.0.load(v, out)
    }
}

/// A voxel its source cannot load is stored as a masked voxel is (NaN
/// parameters and R^2, no iterations) with the source's quality code, on
/// both drivers; every other voxel is fitted as from the array. Float32
/// rows fit as their f64 widening does, bit for bit.
#[test]
fn voxels_a_source_cannot_load_keep_its_code() {
    let t: Vec<f64> = (0..13).map(|i| i as f64 * 0.25).collect();
    let model = BiExponential::new(&t);
    let n_vox = 301;
    let d = data(&model, n_vox);
    let mask: Vec<bool> = (0..n_vox).map(|v| v % 17 != 5).collect();
    let loadable: Vec<bool> = (0..n_vox).map(|v| mask[v] && v % 9 != 4).collect();
    for lockstep in [true, false] {
        let opts = FitOptions {
            lockstep,
            chunk_voxels: 16,
            ..FitOptions::default()
        };
        for threads in [1, 2] {
            let dev = Device::Cpu { threads };
            let mut expected = fit_batch(&model, d.view(), Some(&loadable), &opts, &dev).unwrap();
            for v in (0..n_vox).filter(|v| mask[*v] && !loadable[*v]) {
                expected.status[v] = QualityCode::InvalidSignal;
            }
            let got = fit_batch(&model, Failing(d.view()), Some(&mask), &opts, &dev).unwrap();
            assert!(got.status.iter().any(|s| *s == QualityCode::InvalidSignal));
            assert_same(
                &expected,
                &got,
                &format!("lockstep {lockstep}, {threads} threads"),
            );
        }
        let narrow = d.mapv(|x| x as f32);
        let widened = narrow.mapv(f64::from);
        let dev = Device::Cpu { threads: 2 };
        assert_same(
            &fit_batch(&model, widened.view(), Some(&mask), &opts, &dev).unwrap(),
            &fit_batch(&model, narrow.view(), Some(&mask), &opts, &dev).unwrap(),
            "float32 rows",
        );
    }
}
