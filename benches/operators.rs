//! Measurement operators: forward and adjoint for each operator family at
//! 256x256x3 (64x64 with TWEEDIE_BENCH_QUICK=1), batch 1 and 8, plus the SVD
//! round trip (V^T then U) where DMPS uses it. Throughput counts the bytes
//! read and written once (input + output), so it reads as effective GB/s.
//! The GPU wait is inside the timer.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tweedie::gpu::Plan;
use tweedie::operators::sr::SrFilter;
use tweedie::operators::task::{build_linear, TaskSpec};
use tweedie::{Gpu, Tensor};

fn quick() -> bool {
    std::env::var("TWEEDIE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn families() -> Vec<(&'static str, TaskSpec)> {
    let t = |name: &str| TaskSpec::new(name.parse().expect("a task name"));
    vec![
        ("denoise", t("denoise")),
        ("inpaint-random", t("inpaint-random")),
        ("deblur-gaussian", t("deblur-gaussian")),
        ("deblur-uniform", t("deblur-uniform")),
        ("deblur-motion", t("deblur-motion")),
        ("sr-bicubic", t("sr")),
        (
            "sr-block",
            TaskSpec {
                filter: Some(SrFilter::Block),
                ..t("sr")
            },
        ),
        ("colorize", t("colorize")),
    ]
}

fn time_plan(gpu: &Gpu, plan: &Plan, iters: u64) -> Duration {
    tweedie::gpu::time_plan(gpu, plan, iters).expect("GPU error while timing")
}

fn operators(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a GPU adapter");
    eprintln!("adapter: {}", gpu.describe());
    let side = if quick() { 64 } else { 256 };
    let shape = [3, side, side];
    let mut group = c.benchmark_group(format!("operators_{side}"));
    if quick() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
    }
    for (name, spec) in families() {
        let op = build_linear(&gpu, &spec, shape, 0).expect("operator");
        let [ci, hi, wi] = op.in_shape();
        let [co, ho, wo] = op.out_shape();
        for batch in [1usize, 8] {
            let x = Tensor::zeros(&gpu, "x", &[batch, ci, hi, wi]).expect("x");
            let y = Tensor::zeros(&gpu, "y", &[batch, co, ho, wo]).expect("y");
            x.write(&gpu, &vec![0.25; x.numel()]).expect("write");
            y.write(&gpu, &vec![0.25; y.numel()]).expect("write");
            let bytes = ((x.numel() + y.numel()) * 4) as u64;
            group.throughput(Throughput::Bytes(bytes));
            let mut plans = vec![
                ("forward", op.forward(&gpu, &x, &y).expect("plan")),
                ("adjoint", op.adjoint(&gpu, &y, &x).expect("plan")),
            ];
            if let Some(svd) = op.svd() {
                if matches!(name, "deblur-gaussian" | "sr-bicubic") {
                    let s = Tensor::zeros(&gpu, "s", &[batch, co, ho, wo]).expect("s");
                    let mut round = svd.vt(&gpu, &x, &s).expect("plan");
                    round.extend(svd.u(&gpu, &s, &y).expect("plan"));
                    plans.push(("svd_vt_u", round));
                }
            }
            for (mode, plan) in &plans {
                time_plan(&gpu, plan, 2); // compile pipelines, touch buffers
                group.bench_function(BenchmarkId::new(format!("{name}/{mode}"), format!("n{batch}")), |b| {
                    b.iter_custom(|iters| time_plan(&gpu, plan, iters))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, operators);
criterion_main!(benches);
