//! One CG solve and one reverse step of each sampler on the Gaussian-mixture
//! problems (image-sized problems come with the image operators), GPU wait
//! inside the timer. `TWEEDIE_BENCH_SAMPLES` sets the batch (default 1000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tweedie::operators::dense::Dense;
use tweedie::operators::Operator;
use tweedie::samplers::cg::{self as cgopt, CgStop, CgSystem};
use tweedie::samplers::cg::{Cg, Space};
use tweedie::samplers::problem::GmmProblem;
use tweedie::samplers::{GmmPrior, Measurement, Method, MethodOptions, Sampler, SamplerOptions};
use tweedie::schedule::VarianceType;
use tweedie::{Gpu, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gmm")
        .join(name)
}

fn samples() -> usize {
    std::env::var("TWEEDIE_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a GPU adapter");
    let n = samples();
    for name in ["d8_m2", "d80_m4"] {
        let p = GmmProblem::load(fixture(&format!("{name}.safetensors"))).unwrap();
        let model = GmmPrior::new(
            &gpu,
            &p.weights,
            &p.means,
            &p.vars,
            p.d,
            &tweedie::process::Process::default(),
        )
        .unwrap();
        let op = Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap();
        let mut group = c.benchmark_group(format!("gmm/{name}/N={n}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));

        // One C-DPS-shaped solve: (c I + A^T A / S) x = b, batched.
        let d = p.d;
        let b = Tensor::from_slice(
            &gpu,
            "b",
            &[n, d],
            &(0..n * d)
                .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let x = Tensor::zeros(&gpu, "x", &[n, d]).unwrap();
        let diag = Tensor::from_slice(&gpu, "diag", &[n, d], &vec![4.0; n * d]).unwrap();
        let sys = CgSystem {
            op: &op,
            space: Space::Input,
            b: &b,
            x: &x,
            diag: &diag,
            weight: None,
            gamma: 1.0 / 0.0025,
        };
        let cg = Cg::new(&gpu, sys, CgStop { tol: 1e-5, iters: 10 }).unwrap();
        cg.plan.run(&gpu).unwrap();
        let st = cg.stats(&gpu).unwrap();
        eprintln!(
            "{name}: CG solve, {} iterations recorded, {:?} used (max over samples)",
            cg.iters,
            st.last.iter().max()
        );
        group.bench_function("cg_solve", |bch| {
            bch.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    cg.plan.run(&gpu).unwrap();
                }
                gpu.sync().unwrap();
                t.elapsed()
            })
        });

        let cg_iters = 8;
        for &method in Method::all() {
            let label = method.name();
            let opts = SamplerOptions {
                steps: 1000,
                clip: false,
                variance: VarianceType::FixedLarge,
                method: MethodOptions::default().with(cgopt::ITERS.name, cg_iters).unwrap(),
                ..Default::default()
            };
            let meas = Measurement {
                op: &op as &dyn Operator,
                y: &p.y,
                sigma_y: p.sigma_y,
            };
            let s = match Sampler::new(&gpu, method, &model, Some(meas), n, &opts) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{name}: {label} skipped: {e}");
                    continue;
                }
            };
            s.init(&gpu).unwrap();
            let mid = 500;
            group.bench_function(format!("step/{label}"), |bch| {
                bch.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        s.step(&gpu, mid).unwrap();
                    }
                    gpu.sync().unwrap();
                    t.elapsed()
                })
            });
            if let Some(cg) = s.stats(&gpu).unwrap().cg() {
                eprintln!(
                    "{name}: {label} step, CG {:.2} iterations per solve (cap {cg_iters})",
                    cg.mean_per_solve(),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
