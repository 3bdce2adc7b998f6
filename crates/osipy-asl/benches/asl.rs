//! Multi-PLD fit speed on a phantom of 4,096 voxels x 12 PLDs (pCASL, the
//! bench's noise), with and without the arterial component.

use criterion::{criterion_group, criterion_main, Criterion};
use osipy_asl::kinetics::Timing;
use osipy_asl::multi_pld::BuxtonModel;
use osipy_asl::phantom::{generate, AslPhantomSpec};
use osipy_asl::validation::BENCH_SNR;
use osipy_backend::Device;
use osipy_fitting::{fit_batch, FitOptions};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("asl_multi_pld_4096_voxels");
    for arterial in [false, true] {
        let spec = AslPhantomSpec {
            shape: [64, 32, 2],
            plds: (1..=12).map(|i| 0.25 * i as f64).collect(),
            arterial: arterial.then_some((0.01, 0.4)),
            snr: Some(BENCH_SNR),
            ..AslPhantomSpec::default()
        };
        let ph = generate(&spec).expect("phantom");
        let n = 64 * 32 * 2;
        let rows = ph.series.view().into_shape_with_order((n, 24)).expect("layout");
        // Control minus label of each pair, over M0.
        let dm = ndarray::Array2::from_shape_fn((n, 12), |(v, k)| {
            (rows[[v, 2 * k]] - rows[[v, 2 * k + 1]]) / spec.m0
        });
        let timings: Vec<Timing> = spec
            .plds
            .iter()
            .map(|p| Timing {
                pld: *p,
                tau: spec.tau,
            })
            .collect();
        let model = BuxtonModel::new(spec.scheme, timings, spec.physio, arterial).expect("model");
        let device = Device::cpu(None);
        let name = if arterial { "cbf_att_abv_aatt" } else { "cbf_att" };
        g.bench_function(name, |b| {
            b.iter(|| fit_batch(&model, dm.view(), None, &FitOptions::default(), &device).expect("fit"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
