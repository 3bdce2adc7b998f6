//! Throughput of the batched LM engine on 100,000 voxels with 12 samples.
//!
//! Run with `cargo bench -p osipy-fitting --bench lm`. Criterion reports time
//! per batch; voxel fits per second = 100,000 / time. Inputs are seeded. The
//! bi-exponential is fitted in lockstep (four voxels per evaluation) and one
//! voxel at a time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array2;
use osipy_backend::Device;
use osipy_fitting::models::{BiExponential, MonoExponential};
use osipy_fitting::{fit_batch, FitOptions, Model};
use std::hint::black_box;

const N_VOXELS: usize = 100_000;

fn noisy(model: &dyn Model, truth: impl Fn(usize) -> Vec<f64>, sigma: f64) -> Array2<f64> {
    let mut rng = osipy_fitting::rng::Rng::new(0x1234_5678_9abc_def0);
    let n = model.n_samples();
    let mut data = Array2::zeros((N_VOXELS, n));
    let mut y = vec![0.0; n];
    for v in 0..N_VOXELS {
        model.predict(&truth(v), &mut y);
        for i in 0..n {
            data[[v, i]] = y[i] + sigma * rng.normal();
        }
    }
    data
}

fn bench(c: &mut Criterion) {
    let t: Vec<f64> = (0..12).map(|i| i as f64 * 0.25).collect();
    let mono = MonoExponential::new(&t);
    let bi = BiExponential::new(&t);
    // Parameters vary over voxels so the benchmark is not one curve repeated.
    let mono_data = noisy(&mono, |v| vec![100.0, 0.3 + (v % 100) as f64 * 0.01], 1.0);
    let bi_data = noisy(&bi, |v| vec![60.0, 3.0 + (v % 50) as f64 * 0.02, 40.0, 0.2], 0.2);
    let opts = FitOptions::default();
    let scalar = FitOptions {
        lockstep: false,
        ..FitOptions::default()
    };
    let mut g = c.benchmark_group("lm_100k_voxels");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N_VOXELS as u64));
    for threads in [1usize, 2] {
        let dev = Device::Cpu { threads };
        g.bench_function(format!("mono_exponential_2p_12s_{threads}threads"), |b| {
            b.iter(|| black_box(fit_batch(&mono, mono_data.view(), None, &opts, &dev).unwrap()))
        });
        g.bench_function(format!("bi_exponential_4p_12s_{threads}threads"), |b| {
            b.iter(|| black_box(fit_batch(&bi, bi_data.view(), None, &opts, &dev).unwrap()))
        });
        // The same fits one voxel at a time: the lockstep lanes' gain.
        g.bench_function(
            format!("bi_exponential_4p_12s_{threads}threads_one_at_a_time"),
            |b| b.iter(|| black_box(fit_batch(&bi, bi_data.view(), None, &scalar, &dev).unwrap())),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
