//! U-Net forward passes and the convolution kernel, throughput in FLOP/s
//! (criterion's elements/s) from explicit FLOP counts. Random weights are
//! generated in-process (`Unet::random`), so no checkpoint is needed.
//! `TWEEDIE_BENCH_QUICK=1` shrinks everything to what a software device
//! (lavapipe) runs in about a minute.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use tweedie::gpu::{Dispatch, Plan};
use tweedie::kernels::conv2d::{conv2d, Conv2dShape, ConvForward, ConvKernel, ConvResidual, ConvTiles};
use tweedie::kernels::conv_choice::{self, ConvPass};
use tweedie::tensor::DType;
use tweedie::unet::memory::PlanKind;
use tweedie::unet::{AdmConfig, Unet, UnetConfig, UnetForward, UnetVjp};
use tweedie::{Gpu, Tensor};

fn quick() -> bool {
    std::env::var_os("TWEEDIE_BENCH_QUICK").is_some()
}

/// Wall time of `iters` submissions with the GPU wait inside the timer, after
/// one warm-up run (pipelines compile lazily on some drivers).
fn time(gpu: &Gpu, run: &dyn Fn(), iters: u64) -> Duration {
    run();
    gpu.sync().expect("GPU error while timing");
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    gpu.sync().expect("GPU error while timing");
    start.elapsed()
}

/// The `adm_scale_shift` fixture's architecture (1.4 M parameters).
fn fixture_config() -> UnetConfig {
    UnetConfig::Adm(AdmConfig {
        image_size: 32,
        in_channels: 3,
        model_channels: 32,
        out_channels: 6,
        num_res_blocks: 1,
        attention_resolutions: vec![2, 4],
        channel_mult: vec![1.0, 2.0, 2.0],
        conv_resample: true,
        num_heads: 4,
        num_head_channels: 16,
        num_heads_upsample: -1,
        use_scale_shift_norm: true,
        resblock_updown: true,
        use_new_attention_order: false,
    })
}

fn bench_forward(c: &mut Criterion, gpu: &Gpu, name: &str, config: &UnetConfig, side: usize, batches: &[usize]) {
    let unet = Unet::random(gpu, config, 0).expect("random U-Net");
    let mut g = c.benchmark_group(format!("unet_forward/{name}/{side}x{side}"));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for &batch in batches {
        let fwd = UnetForward::new_kind(gpu, &unet, batch, side, side, PlanKind::ForwardVjp).expect("forward plan");
        let x: Vec<f32> = (0..fwd.input().numel())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        fwd.input().write(gpu, &x).unwrap();
        fwd.t.write(gpu, &vec![500.0; batch]).unwrap();
        let flops = unet.graph.flops(side, side) * batch as f64;
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(format!("batch{batch}"), |b| {
            b.iter_custom(|it| time(gpu, &|| fwd.submit(gpu).expect("submit"), it))
        });
        // Forward + VJP w.r.t. x (what one DPS step costs in the network): the
        // backward data pass costs about what the forward does, so 2x its FLOPs.
        let vjp = UnetVjp::new(gpu, &unet, &fwd).expect("vjp plan");
        vjp.cotangent.write(gpu, &vec![1e-3; vjp.cotangent.numel()]).unwrap();
        g.throughput(Throughput::Elements((2.0 * flops) as u64));
        g.bench_function(format!("batch{batch}+vjp"), |b| {
            b.iter_custom(|it| time(gpu, &|| vjp.submit(gpu, &fwd).expect("submit"), it))
        });
    }
    g.finish();
}

/// One 3x3 convolution with the tiles the model would pick, and with each
/// tile family (for tuning the choice on new hardware).
fn bench_conv(c: &mut Criterion, gpu: &Gpu, side: usize, cin: usize, cout: usize) {
    let s = Conv2dShape {
        n: 1,
        cin,
        h: side,
        w: side,
        cout,
        ks: 3,
        stride: 1,
        pad: [1; 4],
    };
    let x = Tensor::zeros(gpu, "x", &[1, cin, side, side]).unwrap();
    let w = Tensor::zeros(gpu, "w", &[cout * cin * 9 + cout]).unwrap();
    let y = Tensor::zeros(gpu, "y", &[1, cout, side, side]).unwrap();
    let dummy = gpu.storage_buffer("dummy", 16).unwrap();
    let chosen = conv_choice::choose(gpu, ConvPass::Forward, &s, DType::F32);
    let mut g = c.benchmark_group(format!("conv2d_3x3/{side}x{side}x{cin}->{cout}"));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(s.flops() as u64));
    let families = ConvTiles::FAMILIES
        .into_iter()
        .filter(|(_, t)| t.fits(gpu))
        .map(|(n, t)| (n, ConvKernel::simt(t)));
    let scratch = gpu
        .storage_buffer("split-K scratch", (4 * cout * side * side * 4) as u64)
        .unwrap();
    let split = ("small/split4", ConvKernel::simt(ConvTiles::SMALL).split(4));
    for (name, kernel) in std::iter::once(("chosen", chosen)).chain(families).chain([split]) {
        let op = ConvForward {
            x: &x,
            w: (&w.buffer, 0),
            b: (&w.buffer, cout * cin * 9),
            res: ConvResidual::None,
            out_scale: 1.0,
            y: &y,
            dummy: &dummy,
            scratch: Some(&scratch),
        };
        let steps: Vec<Dispatch> = conv2d(gpu, &kernel, &s, &op).unwrap();
        let plan = Plan { steps };
        g.bench_function(name, |b| {
            b.iter_custom(|it| time(gpu, &|| plan.run(gpu).expect("conv"), it))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a GPU adapter");
    if quick() {
        bench_forward(c, &gpu, "fixture", &fixture_config(), 16, &[1]);
        bench_conv(c, &gpu, 32, 32, 32);
        bench_conv(c, &gpu, 8, 64, 64);
        return;
    }
    bench_forward(c, &gpu, "fixture", &fixture_config(), 32, &[1, 4]);
    // DPS / DMPS FFHQ prior: 93.6 M parameters, ~388 GFLOP per image.
    bench_forward(c, &gpu, "dps_ffhq", &UnetConfig::dps_ffhq256(), 256, &[1, 4]);
    bench_conv(c, &gpu, 256, 128, 128);
    bench_conv(c, &gpu, 16, 512, 512);
}

criterion_group!(unet, benches);
criterion_main!(unet);
