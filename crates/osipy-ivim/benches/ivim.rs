//! Throughput of the IVIM strategies on a seeded phantom (16,384 voxels x
//! 12 b-values, SNR 50, Rician): `cargo bench -p osipy-ivim --bench ivim`.
//! The speed goals are ratios (segmented >= 10x, full >= 3x faster
//! than Python osipy), checked in one run by `cargo xtask bench-compare ivim`;
//! this bench tracks our own regressions, and the segmented/full ratio.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use osipy_backend::Device;
use osipy_ivim::phantom::{generate, IvimPhantomSpec};
use osipy_ivim::{fit_ivim, IvimFitOptions, IvimStrategy};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let spec = IvimPhantomSpec {
        shape: [64, 64, 4],
        ..Default::default()
    };
    let ph = generate(&spec).expect("phantom");
    let n: usize = spec.shape.iter().product();
    let data = ph.voxels();
    let device = Device::Cpu { threads: 2 };
    let mut g = c.benchmark_group("ivim_16k_voxels");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    for (name, strategy) in [
        ("segmented", IvimStrategy::Segmented),
        ("full", IvimStrategy::Full),
    ] {
        let opts = IvimFitOptions {
            strategy,
            ..Default::default()
        };
        g.bench_function(name, |bch| {
            bch.iter(|| fit_ivim(black_box(data.view()), &spec.b_values, None, &opts, &device).expect("fit"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
