use osipy_backend::Device;
use osipy_ivim::grid::{GridPosterior, GridSettings, RatePrior};
use osipy_ivim::phantom::{generate, IvimPhantomSpec, Noise};
use osipy_ivim::{fit_ivim, prepare, IvimFitOptions, IvimStrategy, BIEXP_BOUNDS};

fn stats(est: &[f64], truth: &[f64]) -> (f64, f64) {
    let mut rel: Vec<f64> = est
        .iter()
        .zip(truth)
        .filter(|(e, _)| e.is_finite())
        .map(|(e, t)| ((e - t) / t).abs())
        .collect();
    let mut sg: Vec<f64> = est
        .iter()
        .zip(truth)
        .filter(|(e, _)| e.is_finite())
        .map(|(e, t)| (e - t) / t)
        .collect();
    rel.sort_by(f64::total_cmp);
    sg.sort_by(f64::total_cmp);
    (rel[rel.len() / 2], sg[sg.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pts: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(16);
    for snr in [20.0, 50.0] {
        let spec = IvimPhantomSpec {
            shape: [16, 16, 8],
            snr: Some(snr),
            noise: Noise::Gaussian,
            s0: 1.0,
            seed: 7,
            ..Default::default()
        };
        let ph = generate(&spec).unwrap();
        let data = ph.voxels();
        let truth: Vec<Vec<f64>> = ["f", "D", "Dstar"]
            .iter()
            .map(|n| ph.truth(n).unwrap().iter().copied().collect())
            .collect();
        let full = fit_ivim(
            data.view(),
            &spec.b_values,
            None,
            &IvimFitOptions {
                strategy: IvimStrategy::Full,
                ..Default::default()
            },
            &Device::cpu(Some(1)),
        )
        .unwrap();
        print!("SNR {snr} full   ");
        for (q, j) in [1usize, 2, 3].iter().enumerate() {
            let e: Vec<f64> = full.params.column(*j).to_vec();
            let (m, b) = stats(&e, &truth[q]);
            print!(" {:>6}: {m:.3} ({b:+.3})", ["f", "D", "D*"][q]);
        }
        println!();
        let prep = prepare(data.view(), &spec.b_values, true).unwrap();
        let mut eb: Option<RatePrior> = None;
        for variant in 0..4 {
            let dp = RatePrior::Uniform;
            let sp = match variant {
                0 => RatePrior::LogUniform,
                1 => RatePrior::Uniform,
                2 => eb.unwrap(),
                _ => RatePrior::LogNormal {
                    median: 0.062,
                    sigma: 0.78,
                },
            };
            let gs = GridSettings {
                points: pts,
                d_prior: dp,
                dstar_prior: sp,
                ..Default::default()
            };
            let g =
                GridPosterior::new(&prep.b, [BIEXP_BOUNDS[1], (1e-5, 0.005), BIEXP_BOUNDS[3]], gs).unwrap();
            let mut s = g.scratch();
            let t0 = std::time::Instant::now();
            let res: Vec<_> = (0..data.nrows())
                .map(|v| g.voxel(prep.data.row(v).as_slice().unwrap(), &mut s))
                .collect();
            let dt = t0.elapsed().as_secs_f64();
            let mut cover = [0usize; 3];
            for (name, pick) in [("median", 0), ("mean", 1)] {
                print!("SNR {snr} {} {name:>6}", sp.name());
                for q in 0..3 {
                    let e: Vec<f64> = res
                        .iter()
                        .map(|r| {
                            r.map_or(
                                f64::NAN,
                                |r| if pick == 0 { r.median[q + 1] } else { r.mean[q + 1] },
                            )
                        })
                        .collect();
                    let (m, b) = stats(&e, &truth[q]);
                    print!(" {:>6}: {m:.3} ({b:+.3})", ["f", "D", "D*"][q]);
                    if pick == 0 {
                        cover[q] = res
                            .iter()
                            .zip(&truth[q])
                            .filter(|(r, t)| {
                                r.is_some_and(|r| r.interval[q].0 <= **t && **t <= r.interval[q].1)
                            })
                            .count();
                    }
                }
                println!();
            }
            if variant < 2 {
                for fl in [0.05, 0.1, 0.2, 0.3] {
                    print!("   f={fl}:");
                    for dl in [0.02, 0.05, 0.1, 0.15] {
                        let mut e: Vec<f64> = (0..res.len())
                            .filter(|&v| truth[0][v] == fl && truth[2][v] == dl)
                            .filter_map(|v| res[v].map(|r| r.median[3] / dl - 1.0))
                            .collect();
                        e.sort_by(f64::total_cmp);
                        let mut ef: Vec<f64> = (0..res.len())
                            .filter(|&v| truth[0][v] == fl && truth[2][v] == dl)
                            .filter_map(|v| res[v].map(|r| r.median[1] / fl - 1.0))
                            .collect();
                        ef.sort_by(f64::total_cmp);
                        print!(" D*={dl}: {:+.2} (f {:+.2})", e[e.len() / 2], ef[ef.len() / 2]);
                    }
                    println!();
                }
            }
            if variant == 0 {
                let k = 64;
                let mut lik = vec![0.0; data.nrows() * k];
                let t1 = std::time::Instant::now();
                for v in 0..data.nrows() {
                    g.dstar_marginal(
                        prep.data.row(v).as_slice().unwrap(),
                        &mut s,
                        &mut lik[v * k..(v + 1) * k],
                    );
                }
                let pp = osipy_ivim::grid::population_prior(&lik, k, BIEXP_BOUNDS[3]).unwrap();
                println!(
                    "   EM prior: median {:.4} sigma {:.3} in {:.3} s",
                    pp.0,
                    pp.1,
                    t1.elapsed().as_secs_f64()
                );
                let mut l: Vec<f64> = res.iter().filter_map(|r| r.map(|r| r.median[3].ln())).collect();
                l.sort_by(f64::total_cmp);
                let med = l[l.len() / 2];
                let mean = l.iter().sum::<f64>() / l.len() as f64;
                let sd = (l.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / l.len() as f64).sqrt();
                println!(
                    "   EB prior: median {:.4} mean {:.4} sd {sd:.3}",
                    med.exp(),
                    mean.exp()
                );
                eb = Some(RatePrior::LogNormal {
                    median: pp.0,
                    sigma: pp.1,
                });
                let _ = (mean, sd);
            }
            println!(
                "   {:.0} vox/s (1 thread), coverage {:?} of {}",
                data.nrows() as f64 / dt,
                cover,
                data.nrows()
            );
        }
    }
}
