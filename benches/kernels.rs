//! Elementwise, reduction and RNG kernels: GB/s from an explicit byte count.
//! `TWEEDIE_BENCH_QUICK=1` shrinks the sizes for a software device.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tweedie::gpu::{time_plan, Plan};
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::kernels::random::Noise;
use tweedie::kernels::reduce::BatchedDot;
use tweedie::{Gpu, Tensor};

fn quick() -> bool {
    std::env::var_os("TWEEDIE_BENCH_QUICK").is_some()
}

fn time(gpu: &Gpu, plan: &Plan, iters: u64) -> Duration {
    time_plan(gpu, plan, iters).expect("GPU error while timing")
}

fn benches(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a GPU adapter");
    // 256x256x3 images, batch 1 and 8.
    let side = if quick() { 64 } else { 256 };
    for batch in [1usize, 8] {
        let n = batch * 3 * side * side;
        let x = Tensor::zeros(&gpu, "x", &[n]).unwrap();
        let y = Tensor::zeros(&gpu, "y", &[n]).unwrap();
        let mut g = c.benchmark_group(format!("kernels/{side}x{side}x3/batch{batch}"));
        g.sample_size(10);

        let axpby = Elementwise::new(&gpu, Op::Axpby, &x, &y, 0.5, 0.5).unwrap();
        let plan = Plan {
            steps: vec![axpby.dispatch.clone()],
        };
        g.throughput(Throughput::Bytes(3 * 4 * n as u64));
        g.bench_function("axpby", |b| b.iter_custom(|it| time(&gpu, &plan, it)));

        let dot = BatchedDot::new(&gpu, &x, &y, batch, false).unwrap();
        g.throughput(Throughput::Bytes(2 * 4 * n as u64));
        g.bench_function("dot", |b| b.iter_custom(|it| time(&gpu, &dot.plan, it)));

        let noise = Noise::new(&gpu, &y, 1, 0, 0.0, 1.0).unwrap();
        let plan = Plan {
            steps: vec![noise.dispatch.clone()],
        };
        g.throughput(Throughput::Bytes(4 * n as u64));
        g.bench_function("normal", |b| b.iter_custom(|it| time(&gpu, &plan, it)));
        g.finish();
    }
}

criterion_group!(kernels, benches);
criterion_main!(kernels);
