//! Deconvolution speed per method on a phantom of 2,048 voxels x 60 frames.

use criterion::{criterion_group, criterion_main, Criterion};
use osipy_backend::Device;
use osipy_dsc::deconv::{csvd, osvd, ssvd, tikhonov, DeconvFn, DeconvInput, DeconvSettings};
use osipy_dsc::phantom::{generate, DscPhantomSpec};
use osipy_dsc::signal::signal_to_delta_r2;

fn bench(c: &mut Criterion) {
    let spec = DscPhantomSpec {
        shape: [32, 32, 2],
        snr: Some(50.0),
        ..DscPhantomSpec::default()
    };
    let ph = generate(&spec).expect("phantom");
    let n = 32 * 32 * 2;
    let rows = ph
        .signal
        .view()
        .into_shape_with_order((n, spec.frames))
        .expect("layout");
    let device = Device::cpu(None);
    let dr2 = signal_to_delta_r2(rows, None, spec.te, 9, &device).expect("deltaR2*");
    let mask = vec![true; n];
    let input = DeconvInput {
        curves: dr2.curves.view(),
        mask: &mask,
        aif: &ph.aif,
        times: &ph.times,
    };
    let mut g = c.benchmark_group("dsc_deconvolution_2048_voxels");
    for (name, m) in [
        ("ssvd", ssvd as DeconvFn),
        ("csvd", csvd),
        ("osvd", osvd),
        ("tikhonov", tikhonov),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| m(&input, &DeconvSettings::default(), &device).expect("deconvolution"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
