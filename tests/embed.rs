//! The step-wise embedding API on an application's own device: a planned
//! restoration driven a few steps at a time, re-run on a new measurement
//! with no new allocation, its read-outs against CPU computations, the
//! texture kernel against its CPU rule, and the application's own error
//! handler left alone.

mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tweedie::operators::task::{build, Task, TaskSpec};
use tweedie::restore::{mean_std, Panel, Restore, State, TextureWriter, SIGNED};
use tweedie::samplers::{Method, MethodOptions, SamplerOptions, UnetScore};
use tweedie::unet::Unet;
use tweedie::{Gpu, Tensor};

fn opts(steps: usize, seed: u64) -> SamplerOptions {
    SamplerOptions {
        steps,
        seed,
        ..SamplerOptions::default()
    }
}

/// A buffer the application owns, holding `data`.
fn app_buffer(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Tensor {
    let b = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app buffer"),
        size: (data.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
    Tensor::wrap(b, shape)
}

/// The application's device with its own uncaptured-error handler counting
/// what it sees, and the engine on it.
fn app_with_handler() -> (Gpu, Arc<AtomicUsize>) {
    let (device, queue, info) = callers_device();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    device.on_uncaptured_error(Arc::new(move |_e: wgpu::Error| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    (Gpu::from_device(device, queue, Some(info)), seen)
}

#[test]
fn a_planned_restoration_steps_reruns_without_allocating_and_leaves_the_apps_handler() {
    let (gpu, seen) = app_with_handler();
    let unet = Arc::new(Unet::load(&gpu, &fixture("unet/adm_gray")).unwrap());
    let model = UnetScore::new(unet, 32, 32);
    let spec = TaskSpec {
        factor: Some(2),
        ..TaskSpec::new(Task::Sr)
    };
    let op = build(&gpu, &spec, [1, 32, 32], 0).unwrap();
    let o = opts(4, 9);
    let job = Restore::new(&model, Method::Dmps, &o).measured(op.as_ref(), 0.05);
    let k = 3;
    let mut s = job.stepwise(&gpu, 1, k).unwrap();
    assert_eq!(s.poll(&gpu).unwrap(), State::Idle);
    let e = s.step(&gpu, 1).expect_err("a step before start");
    assert!(e.to_string().contains("call start first"), "{e}");
    // A wrong measurement is refused before any work.
    let wrong = app_buffer(&gpu, &[0.0; 32 * 32], &[1, 1, 32, 32]);
    let e = s.start(&gpu, &wrong).expect_err("a 32x32 y for a 16x16 measurement");
    assert!(e.to_string().contains("expected [1, 1, 16, 16]"), "{e}");

    let m = 16 * 16;
    let ys: Vec<Vec<f32>> = (0..2)
        .map(|v| (0..m).map(|i| ((i * (7 + v) % 23) as f32 / 11.0) - 1.0).collect())
        .collect();
    let y1 = app_buffer(&gpu, &ys[0], &[1, 1, 16, 16]);
    let y2 = app_buffer(&gpu, &ys[1], &[1, 1, 16, 16]);
    let per = 32 * 32;

    // Half way: the read-outs agree with the CPU's statistics of x0.
    s.start(&gpu, &y1).unwrap();
    let p = s.step(&gpu, 2).unwrap();
    assert_eq!((p.done, p.total), (2, 4));
    assert!(matches!(s.poll(&gpu).unwrap(), State::Running(q) if q == p));
    let x0 = s.x0().read(&gpu).unwrap();
    assert_eq!(x0.len(), k * per);
    assert!(x0.iter().all(|v| (-1.0..=1.0).contains(v)), "x0 is clipped");
    let rows: Vec<Vec<f32>> = x0.chunks(per).map(|c| c.to_vec()).collect();
    let (mean, std) = mean_std(&rows);
    assert!(std.iter().any(|&v| v > 1e-3), "the samples differ half way");
    assert_close("mean half way", &s.mean().read(&gpu).unwrap(), &mean, 1e-5, 1e-4);
    assert_close("std half way", &s.std().read(&gpu).unwrap(), &std, 1e-5, 1e-4);

    // To the end, in bounded calls: the samples are those of the host path.
    while !s.step(&gpu, 1).unwrap().finished() {}
    s.wait(&gpu).unwrap();
    assert_eq!(s.poll(&gpu).unwrap(), State::Done);
    let host = |y: &[f32]| job.samples(&gpu, y, k, k, &mut |_, _| true).unwrap();
    let r1 = host(&ys[0]);
    assert_close(
        "x0 = the samples",
        &s.x0().read(&gpu).unwrap(),
        &r1.samples.concat(),
        1e-6,
        1e-5,
    );
    assert_close(
        "x_t = the samples",
        &s.x_t().read(&gpu).unwrap(),
        &r1.samples.concat(),
        1e-6,
        1e-5,
    );
    assert_close("final mean", &s.mean().read(&gpu).unwrap(), &r1.mean, 1e-5, 1e-4);
    assert_close("final std", &s.std().read(&gpu).unwrap(), &r1.std, 1e-5, 1e-4);

    // Again on a new measurement: same buffers, no bytes allocated.
    let before = gpu.allocated();
    let buffers: Vec<wgpu::Buffer> = s.buffers().into_iter().cloned().collect();
    s.start(&gpu, &y2).unwrap();
    while !s.step(&gpu, 3).unwrap().finished() {}
    s.wait(&gpu).unwrap();
    assert_eq!(gpu.allocated(), before, "a re-run allocated");
    assert!(s.buffers().into_iter().eq(buffers.iter()), "a re-run swapped buffers");
    let r2 = host(&ys[1]);
    assert_close(
        "re-run samples",
        &s.x0().read(&gpu).unwrap(),
        &r2.samples.concat(),
        1e-6,
        1e-5,
    );
    assert!(r1.samples != r2.samples, "the new measurement changed the result");

    // The application's own mistake still reaches the application's handler.
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the engine's work raised nothing");
    let _bad = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app's invalid buffer"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the application's handler fired");
    gpu.sync().unwrap();
}

/// A run that blows up is reported by the non-blocking poll, not only by `wait`.
#[test]
fn an_exploding_stepwise_run_is_reported() {
    let (gpu, _) = app_with_handler();
    let model = UnetScore::new(Arc::new(Unet::load(&gpu, &fixture("unet/adm_gray")).unwrap()), 32, 32);
    let op = build(&gpu, &TaskSpec::new(Task::Denoise), [1, 32, 32], 0).unwrap();
    let wild = SamplerOptions {
        method: MethodOptions::default().with("reddiff-lr", "10000").unwrap(),
        ..opts(3, 9)
    };
    let mut s = Restore::new(&model, Method::RedDiff, &wild)
        .measured(op.as_ref(), 0.05)
        .stepwise(&gpu, 2, 1)
        .unwrap();
    let y: Vec<f32> = (0..2 * 32 * 32).map(|i| ((i % 32) as f32 / 16.0) - 1.0).collect();
    s.start(&gpu, &app_buffer(&gpu, &y, &[2, 1, 32, 32])).unwrap();
    s.step(&gpu, 100).unwrap();
    let e = loop {
        match s.poll(&gpu) {
            Ok(State::Checking) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Ok(other) => panic!("an exploding run ended as {other:?}"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(e.contains("sampling diverged: image"), "{e}");
}

/// An RGBA8 texture the application owns.
fn app_texture(gpu: &Gpu, width: u32, height: u32, usage: wgpu::TextureUsages) -> wgpu::Texture {
    gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("app texture"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage,
        view_formats: &[],
    })
}

/// `to_texture` against its rule: (v - lo) / (hi - lo) clamped, as 8-bit
/// unorm, grey or RGB, scaled and placed; nothing outside the region written.
#[test]
fn texture_writer_matches_its_cpu_rule() {
    let gpu = gpu();
    let (tw, th) = (64u32, 24u32);
    let texture = app_texture(
        &gpu,
        tw,
        th,
        wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
    );
    let (h, w) = (4usize, 5usize);
    let grey: Vec<f32> = (0..2 * h * w).map(|i| i as f32 / 13.0 - 1.4).collect();
    let rgb: Vec<f32> = (0..3 * h * w).map(|i| (i as f32 * 0.37).sin() * 0.6).collect();
    let grey_t = Tensor::from_slice(&gpu, "grey", &[2, 1, h, w], &grey).unwrap();
    let rgb_t = Tensor::from_slice(&gpu, "rgb", &[1, 3, h, w], &rgb).unwrap();
    let panels = [
        (
            &grey_t,
            1,
            Panel {
                row: 1,
                origin: [3, 2],
                scale: 2,
                range: SIGNED,
            },
        ),
        (
            &rgb_t,
            3,
            Panel {
                row: 0,
                origin: [30, 5],
                scale: 3,
                range: [0.0, 0.5],
            },
        ),
    ];
    let writers: Vec<TextureWriter> = panels
        .iter()
        .map(|(t, _, p)| TextureWriter::new(&gpu, t, &texture, *p).unwrap())
        .collect();
    let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("texture read-back"),
        size: (tw * th * 4) as u64,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    TextureWriter::record(&writers.iter().collect::<Vec<_>>(), &mut enc);
    enc.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(tw * 4),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    gpu.submit_checked("texture test", enc).unwrap();
    let words: Vec<u32> = gpu.read(&buf, 0, (tw * th) as usize).unwrap();
    let texels: Vec<[u8; 4]> = words.iter().map(|v| v.to_le_bytes()).collect();
    let mut want = vec![[0u8; 4]; (tw * th) as usize];
    for (t, c, p) in &panels {
        let data = t.read(&gpu).unwrap();
        let s = p.scale as usize;
        for py in 0..h * s {
            for px in 0..w * s {
                let at = |ch: usize| data[((p.row * c + ch) * h + py / s) * w + px / s];
                let unit =
                    |v: f32| (((v - p.range[0]) / (p.range[1] - p.range[0])).clamp(0.0, 1.0) * 255.0).round() as u8;
                let rgb = if *c == 3 { [at(0), at(1), at(2)] } else { [at(0); 3] };
                let dst = (p.origin[1] as usize + py) * tw as usize + p.origin[0] as usize + px;
                want[dst] = [unit(rgb[0]), unit(rgb[1]), unit(rgb[2]), 255];
            }
        }
    }
    for (i, (g, w)) in texels.iter().zip(&want).enumerate() {
        let off = g
            .iter()
            .zip(w)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            off <= 1,
            "texel ({}, {}): {g:?}, expected {w:?}",
            i % tw as usize,
            i / tw as usize
        );
    }

    // Refused before any work: a texture without storage usage, a region
    // past the edge, a flat shape, an empty range.
    let sampled = app_texture(&gpu, tw, th, wgpu::TextureUsages::TEXTURE_BINDING);
    let p = panels[0].2;
    let flat = Tensor::wrap(grey_t.buffer.clone(), &[2, h * w]);
    let cases: Vec<(&str, Result<TextureWriter, _>, &str)> = vec![
        (
            "no storage usage",
            TextureWriter::new(&gpu, &grey_t, &sampled, p),
            "STORAGE_BINDING",
        ),
        (
            "past the edge",
            TextureWriter::new(&gpu, &grey_t, &texture, Panel { origin: [60, 0], ..p }),
            "does not fit",
        ),
        (
            "flat shape",
            TextureWriter::new(&gpu, &flat, &texture, p),
            "expected [N, C, H, W]",
        ),
        (
            "empty range",
            TextureWriter::new(&gpu, &grey_t, &texture, Panel { range: [1.0, 1.0], ..p }),
            "finite and increasing",
        ),
        (
            "row past N",
            TextureWriter::new(&gpu, &grey_t, &texture, Panel { row: 2, ..p }),
            "past the tensor's 2",
        ),
    ];
    for (what, r, needle) in cases {
        let e = r.err().unwrap_or_else(|| panic!("{what} accepted")).to_string();
        assert!(e.contains(needle), "{what}: {e}");
    }
}
