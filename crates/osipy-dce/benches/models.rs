//! Fit throughput of every DCE model on a seeded noisy phantom (4,096
//! voxels x 80 frames, 1 thread), in lockstep (four voxels per model
//! evaluation, where the model has a lane kernel) and one voxel at a time:
//! `cargo bench -p osipy-dce --bench models`. Compare the two rows of a
//! model within one run; the maps are the same bit for bit (tested).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use osipy_backend::Device;
use osipy_dce::phantom::{generate, PhantomSpec};
use osipy_dce::{fit_model, DceFitOptions, DceModelEntry};
use osipy_fitting::FitOptions;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let device = Device::Cpu { threads: 1 };
    let mut g = c.benchmark_group("dce_4k_voxels");
    g.sample_size(10);
    for name in ["extended_tofts", "patlak", "2cum", "2cxm"] {
        let spec = PhantomSpec {
            shape: [16, 16, 16],
            snr: Some(20.0),
            ..PhantomSpec::for_model(name).expect("a built-in model")
        };
        let ph = generate(&spec).expect("phantom");
        g.throughput(Throughput::Elements(
            ph.concentration.len() as u64 / ph.time.len() as u64,
        ));
        let entry = DceModelEntry::builtin(name).expect("model");
        for lockstep in [true, false] {
            let opts = DceFitOptions {
                fit: FitOptions {
                    lockstep,
                    ..FitOptions::default()
                },
                ..DceFitOptions::default()
            };
            let label = if lockstep {
                name.to_string()
            } else {
                format!("{name}_one_at_a_time")
            };
            g.bench_function(label, |b| {
                b.iter(|| {
                    fit_model(
                        &entry,
                        black_box(ph.concentration.view()),
                        &ph.aif,
                        &ph.time,
                        None,
                        &opts,
                        &device,
                    )
                    .expect("fit")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
