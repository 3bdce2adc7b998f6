//! Reading a classic DICOM series of 64 x 64 x 30 slices x 60 frames: 1,800
//! files, one per slice and frame (headers scanned, series assembled, pixels
//! decoded and rescaled). Issue target: under 3 s on the 2-core machine.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array4;
use osipy_io::dicom::scan;
use osipy_io::dicom::synthetic::SyntheticSeries;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = Array4::from_shape_fn((64, 64, 30, 60), |(i, j, k, t)| {
        100.0 + (i * 3 + j * 5 + k * 7) as f64 + 20.0 * (t as f64 * 0.1).sin()
    });
    let affine = [
        [-3.0, 0.0, 0.0, 96.0],
        [0.0, 3.0, 0.0, -96.0],
        [0.0, 0.0, 4.0, -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut s = SyntheticSeries::new(&data, affine);
    s.frame_times = Some((0..60).map(|t| 4.0 * t as f64).collect());
    s.write(dir.path()).expect("write");
    let mut g = c.benchmark_group("dicom_read_64x64x30x60_1800_files");
    g.sample_size(10);
    g.bench_function("scan", |b| b.iter(|| scan(dir.path(), None).expect("scan")));
    g.bench_function("scan_and_read", |b| {
        b.iter(|| scan(dir.path(), None).expect("scan").read().expect("read"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
