//! Every sampler end to end with a U-Net (the fixture models) on 32x32
//! problems: the same code path as with the Gaussian-mixture prior after eps.
//! Each test runs with f32 models (`f32::`) and with f16 ones (`f16::`, where
//! the adapter has shader-f16).

mod common;
use common::*;

use std::path::PathBuf;
use std::sync::Arc;

use tweedie::operators::task::{build, Task, TaskSpec};
use tweedie::operators::Operator;
use tweedie::samplers::{Measurement, Method, MethodOptions, Sampler, SamplerOptions, UnetScore};
use tweedie::tensor::DType;
use tweedie::unet::Unet;
use tweedie::Tensor;

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("unet/{name}"))
}

fn opts(steps: usize, seed: u64) -> SamplerOptions {
    SamplerOptions {
        steps,
        seed,
        method: MethodOptions::default().with("zeta", 0.5).unwrap(),
        ..SamplerOptions::default()
    }
}

/// A measurement of a smooth test image through `op`.
fn measure(op: &dyn Operator, c: usize) -> Vec<f32> {
    let gpu = gpu();
    let [_, h, w] = op.in_shape();
    let x: Vec<f32> = (0..c * h * w)
        .map(|i| ((i % w) as f32 / w as f32 - 0.5) * 1.2)
        .collect();
    let tx = Tensor::from_slice(&gpu, "x", &[1, c, h, w], &x).unwrap();
    let [oc, oh, ow] = op.out_shape();
    let ty = Tensor::zeros(&gpu, "y", &[1, oc, oh, ow]).unwrap();
    op.forward(&gpu, &tx, &ty).unwrap().run(&gpu).unwrap();
    ty.read(&gpu).unwrap()
}

fn sample(
    model: &UnetScore,
    method: Method,
    op: &dyn Operator,
    y: &[f32],
    batch: usize,
    o: &SamplerOptions,
) -> Vec<f32> {
    let gpu = gpu();
    let meas = (method != Method::Ddpm).then_some(Measurement { op, y, sigma_y: 0.05 });
    let s = Sampler::new(&gpu, method, model, meas, batch, o).unwrap();
    s.run(&gpu).unwrap();
    s.x().read(&gpu).unwrap()
}

fn every_sampler_runs_with_a_unet_and_uses_the_measurement(dtype: DType) {
    let gpu = gpu();
    let unet = Arc::new(Unet::load_as(&gpu, &fixture("adm_scale_shift"), dtype).unwrap());
    let model = UnetScore::new(unet, 32, 32);
    let spec = TaskSpec {
        box_side: Some(12),
        ..TaskSpec::new(Task::InpaintBox)
    };
    let op = build(&gpu, &spec, [3, 32, 32], 3).unwrap();
    let y = measure(op.as_ref(), 3);
    let o = opts(4, 11);
    let ddpm = sample(&model, Method::Ddpm, op.as_ref(), &y, 2, &o);
    assert!(ddpm.iter().all(|v| v.is_finite()), "ddpm produced non-finite values");
    for method in [Method::Dps, Method::Dmps, Method::Cdps] {
        let x = sample(&model, method, op.as_ref(), &y, 2, &o);
        assert!(x.iter().all(|v| v.is_finite()), "{method:?} produced non-finite values");
        // Same seed, same noise: any difference is the measurement's doing.
        let diff = x.iter().zip(&ddpm).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff > 1e-3, "{method:?} ignored the measurement (max diff {diff})");
    }
}

fn samplers_run_with_fixed_variance_and_diffusers_models(dtype: DType) {
    let gpu = gpu();
    for name in ["adm_plain", "ddpm_small"] {
        let unet = Arc::new(Unet::load_as(&gpu, &fixture(name), dtype).unwrap());
        let model = UnetScore::new(unet, 32, 32);
        let spec = TaskSpec {
            factor: Some(2),
            ..TaskSpec::new(Task::Sr)
        };
        let op = build(&gpu, &spec, [3, 32, 32], 0).unwrap();
        let y = measure(op.as_ref(), 3);
        for method in [Method::Ddpm, Method::Dmps] {
            let x = sample(&model, method, op.as_ref(), &y, 1, &opts(3, 5));
            assert!(x.iter().all(|v| v.is_finite()), "{name} {method:?}");
        }
    }
}

/// The official DPS code takes one norm over the whole batch; ours is per
/// image, so a sample does not depend on what else is in the batch.
fn dps_first_image_does_not_depend_on_batch_size(dtype: DType) {
    let gpu = gpu();
    let unet = Arc::new(Unet::load_as(&gpu, &fixture("adm_gray"), dtype).unwrap());
    let model = UnetScore::new(unet, 32, 32);
    let spec = TaskSpec {
        factor: Some(2),
        filter: None,
        ..TaskSpec::new(Task::Sr)
    };
    let op = build(&gpu, &spec, [1, 32, 32], 0).unwrap();
    let y = measure(op.as_ref(), 1);
    let o = opts(3, 21);
    let one = sample(&model, Method::Dps, op.as_ref(), &y, 1, &o);
    let four = sample(&model, Method::Dps, op.as_ref(), &y, 4, &o);
    assert_close("first image, batch 1 vs 4", &four[..one.len()], &one, 1e-5, 1e-4);
    // And the other images are different draws.
    let d = four[one.len()..2 * one.len()]
        .iter()
        .zip(&one)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d > 1e-3, "second image equals the first");
}

/// N images at once: one measurement per sample gives, for each sample, what
/// restoring that image alone gives (eval batches images this way).
fn per_sample_measurements_match_single_image_runs(dtype: DType) {
    let gpu = gpu();
    let unet = Arc::new(Unet::load_as(&gpu, &fixture("adm_gray"), dtype).unwrap());
    let model = UnetScore::new(unet, 32, 32);
    let spec = TaskSpec {
        box_side: Some(10),
        ..TaskSpec::new(Task::InpaintBox)
    };
    let op = build(&gpu, &spec, [1, 32, 32], 2).unwrap();
    let y0 = measure(op.as_ref(), 1);
    let y1: Vec<f32> = y0.iter().map(|v| -v).collect();
    let both: Vec<f32> = y0.iter().chain(&y1).copied().collect();
    let o = opts(3, 8);
    for method in [Method::Dps, Method::Dmps, Method::Cdps] {
        let pair = sample(&model, method, op.as_ref(), &both, 2, &o);
        let alone = sample(&model, method, op.as_ref(), &y0, 1, &o);
        assert_close(
            &format!("{method:?} sample 0"),
            &pair[..alone.len()],
            &alone,
            1e-5,
            1e-4,
        );
        let shared = sample(&model, method, op.as_ref(), &y0, 2, &o);
        let d = pair[alone.len()..]
            .iter()
            .zip(&shared[alone.len()..])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d > 1e-3, "{method:?}: sample 1 ignored its own measurement");
    }
}

/// One DDPM step through the U-Net score model equals the step computed on
/// the CPU from a separate forward pass on the same x_t (eps, learned v, the
/// respaced schedule), with the step's own noise read back.
fn unet_ddpm_step_matches_cpu_formula(dtype: DType) {
    use tweedie::unet::UnetForward;
    let gpu = gpu();
    let unet = Arc::new(Unet::load_as(&gpu, &fixture("adm_gray"), dtype).unwrap());
    let model = UnetScore::new(unet.clone(), 32, 32);
    let o = SamplerOptions {
        steps: 5,
        seed: 3,
        ..SamplerOptions::default()
    };
    let s = Sampler::new(&gpu, Method::Ddpm, &model, None, 2, &o).unwrap();
    s.init(&gpu).unwrap();
    let i = 3; // an inner step: noise is added
    let x_t = s.x().read(&gpu).unwrap();
    s.step(&gpu, i).unwrap();
    let got = s.x().read(&gpu).unwrap();
    let z = s.core.z.read(&gpu).unwrap();
    let sch = s.core.schedule();
    let ts = sch.timestep_map[i] as f32;
    let fwd = UnetForward::new(&gpu, &unet, 2, 32, 32).unwrap();
    let out = fwd.run(&gpu, &x_t, &[ts, ts]).unwrap();
    let per = 32 * 32;
    let (ab, abp, b) = (
        sch.alphas_cumprod[i],
        if i > 0 { sch.alphas_cumprod[i - 1] } else { 1.0 },
        sch.betas[i],
    );
    let post_var = |k: usize| {
        let bk = sch.betas[k];
        let (a, ap) = (
            sch.alphas_cumprod[k],
            if k > 0 { sch.alphas_cumprod[k - 1] } else { 1.0 },
        );
        bk * (1.0 - ap) / (1.0 - a)
    };
    let log_min = if i == 0 { post_var(1).ln() } else { post_var(i).ln() };
    let mut want = vec![0f32; got.len()];
    for n in 0..2 {
        for p in 0..per {
            let eps = out[n * 2 * per + p] as f64;
            let v = out[n * 2 * per + per + p] as f64;
            let x = x_t[n * per + p] as f64;
            let x0 = (x / ab.sqrt() - (1.0 / ab - 1.0).sqrt() * eps).clamp(-1.0, 1.0);
            let mean = b * abp.sqrt() / (1.0 - ab) * x0 + (1.0 - abp) * (1.0 - b).sqrt() / (1.0 - ab) * x;
            let f = (v + 1.0) / 2.0;
            let lv = f * b.ln() + (1.0 - f) * log_min;
            want[n * per + p] = (mean + (0.5 * lv).exp() * z[n * per + p] as f64) as f32;
        }
    }
    assert_close("ddpm step with the U-Net", &got, &want, 1e-4, 1e-3);
}

/// A graphics application's own device and buffers: the engine restores from
/// the caller's y buffer into the caller's output buffer, stepping through a
/// callback that can cancel, and agrees with the host-side path.
fn embedding_restores_between_caller_owned_buffers(dtype: DType) {
    use tweedie::restore::Restore;
    use tweedie::samplers::SamplerError;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    if dtype == DType::F16 {
        // A device made without shader-f16 refuses an f16 model in one line.
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
        let plain = tweedie::Gpu::from_device(device, queue, Some(adapter.get_info()));
        let err = Unet::load_as(&plain, &fixture("adm_gray"), dtype)
            .err()
            .expect("f16 refused");
        assert!(err.to_string().contains("shader-f16"), "{err}");
    }
    // The application asks for what the precision needs.
    let features = match dtype {
        DType::F16 => wgpu::Features::SHADER_F16,
        DType::F32 => wgpu::Features::empty(),
    };
    let desc = wgpu::DeviceDescriptor {
        required_features: features,
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let gpu = tweedie::Gpu::from_device(device.clone(), queue, Some(adapter.get_info()));
    let unet = Arc::new(Unet::load_as(&gpu, &fixture("adm_gray"), dtype).unwrap());
    let model = UnetScore::new(unet, 32, 32);
    let spec = TaskSpec {
        factor: Some(2),
        ..TaskSpec::new(Task::Sr)
    };
    let op = build(&gpu, &spec, [1, 32, 32], 0).unwrap();
    let m = 16 * 16;
    let y: Vec<f32> = (0..2 * m).map(|i| ((i * 7 % 23) as f32 / 11.0) - 1.0).collect();
    let caller_buffer = |size: usize| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("caller"),
            size: (size * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let y_buf = caller_buffer(2 * m);
    gpu.queue.write_buffer(&y_buf, 0, bytemuck::cast_slice(&y));
    let out_buf = caller_buffer(2 * 32 * 32);
    let y_t = Tensor::wrap(y_buf, &[2, 1, 16, 16]);
    let out_t = Tensor::wrap(out_buf, &[2, 1, 32, 32]);
    let o = opts(3, 9);
    let mut seen = Vec::new();
    let job = Restore::new(&model, Method::Dmps, &o).measured(op.as_ref(), 0.05);
    job.on_gpu(&gpu, &y_t, &out_t, &mut |d, t| {
        seen.push((d, t));
        true
    })
    .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)]);
    let host = job.images(&gpu, &y, &mut |_, _| true).unwrap();
    assert_close(
        "GPU-buffer path vs host path",
        &out_t.read(&gpu).unwrap(),
        &host,
        1e-6,
        1e-5,
    );
    // Cancellation from the callback.
    let r = job.on_gpu(&gpu, &y_t, &out_t, &mut |d, _| d < 2);
    assert!(matches!(r, Err(SamplerError::Cancelled)), "{r:?}");
    // Bad caller tensors are refused before the first step.
    let plain = |size: usize, usage: wgpu::BufferUsages| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("caller"),
            size: (size * 4) as u64,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let all = storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let bad: Vec<(&str, Tensor, Tensor, &str)> = vec![
        (
            "image-shaped out as [64, 32]",
            Tensor::wrap(plain(2 * m, all), &[2, 1, 16, 16]),
            Tensor::wrap(plain(2 * 32 * 32, all), &[64, 32]),
            "out has shape [64, 32], expected [N, 1, 32, 32]",
        ),
        (
            "y for another batch",
            Tensor::wrap(plain(3 * m, all), &[3, 1, 16, 16]),
            Tensor::wrap(plain(2 * 32 * 32, all), &[2, 1, 32, 32]),
            "y has shape [3, 1, 16, 16], expected [2, 1, 16, 16]",
        ),
        (
            "y without COPY_SRC",
            Tensor::wrap(plain(2 * m, storage | wgpu::BufferUsages::COPY_DST), &[2, 1, 16, 16]),
            Tensor::wrap(plain(2 * 32 * 32, all), &[2, 1, 32, 32]),
            "y's buffer needs usage",
        ),
        (
            "out without COPY_DST",
            Tensor::wrap(plain(2 * m, all), &[2, 1, 16, 16]),
            Tensor::wrap(
                plain(2 * 32 * 32, storage | wgpu::BufferUsages::COPY_SRC),
                &[2, 1, 32, 32],
            ),
            "out's buffer needs usage",
        ),
        (
            "out too small",
            Tensor::wrap(plain(2 * m, all), &[2, 1, 16, 16]),
            Tensor::wrap(plain(32 * 32, all), &[2, 1, 32, 32]),
            "out's buffer holds 4096 bytes",
        ),
    ];
    for (what, y_bad, out_bad, needle) in bad {
        let mut steps = 0;
        let e = job
            .on_gpu(&gpu, &y_bad, &out_bad, &mut |_, _| {
                steps += 1;
                true
            })
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"))
            .to_string();
        assert!(e.contains(needle), "{what}: {e}");
        assert_eq!(steps, 0, "{what}: refused only after {steps} steps");
    }
    // A run that blows up is an error, not numbers in the caller's buffer:
    // RED-diff with a learning rate of 1e4 on three steps (its Adam step moves
    // x by about lr a step).
    let wild = SamplerOptions {
        method: MethodOptions::default().with("reddiff-lr", "10000").unwrap(),
        ..opts(3, 9)
    };
    let e = Restore::new(&model, Method::RedDiff, &wild)
        .measured(op.as_ref(), 0.05)
        .on_gpu(&gpu, &y_t, &out_t, &mut |_, _| true)
        .expect_err("an exploding run refused")
        .to_string();
    assert!(e.contains("sampling diverged"), "{e}");
}

/// One `#[test]` per precision for each test above.
macro_rules! in_each_precision {
    ($($name:ident),* $(,)?) => {
        mod f32 {
            $(#[test]
            fn $name() {
                super::$name(super::DType::F32)
            })*
        }
        mod f16 {
            $(#[test]
            fn $name() {
                let gpu = super::gpu();
                if !gpu.features.contains(wgpu::Features::SHADER_F16) {
                    eprintln!("skipping: {} has no shader-f16", gpu.describe());
                    return;
                }
                super::$name(super::DType::F16)
            })*
        }
    };
}

in_each_precision!(
    every_sampler_runs_with_a_unet_and_uses_the_measurement,
    samplers_run_with_fixed_variance_and_diffusers_models,
    dps_first_image_does_not_depend_on_batch_size,
    per_sample_measurements_match_single_image_runs,
    unet_ddpm_step_matches_cpu_formula,
    embedding_restores_between_caller_owned_buffers
);
