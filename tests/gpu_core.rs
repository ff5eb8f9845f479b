//! The GPU core: external devices, error scopes, limits, the pipeline cache.

mod common;
use common::*;

use tweedie::gpu::{Dispatch, Plan, Shader, ELEMENTWISE};
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::{Gpu, GpuError, Tensor};

/// 2 x + 1 through one planned dispatch, read back.
fn affine(gpu: &Gpu, x: &Tensor) -> Vec<f32> {
    let y = Tensor::zeros(gpu, "y", &x.shape).unwrap();
    let k = Elementwise::new(gpu, Op::Affine, x, &y, 2.0, 1.0).unwrap();
    Plan {
        steps: vec![k.dispatch.clone()],
    }
    .run(gpu)
    .unwrap();
    y.read(gpu).unwrap()
}

/// A graphics application's own device: the engine runs on it unchanged.
#[test]
fn runs_on_a_caller_created_device() {
    let (device, queue, info) = callers_device();
    let gpu = Gpu::from_device(device.clone(), queue, Some(info));
    // The caller's buffer, bound directly: no CPU round trip.
    let x = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller x"),
        size: 12,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue
        .write_buffer(&x, 0, bytemuck::cast_slice(&[1.0f32, -2.0, 3.0]));
    let x = Tensor::wrap(x, &[3]);
    assert_close(
        "affine on caller device",
        &affine(&gpu, &x),
        &[3.0, -3.0, 7.0],
        0.0,
        0.0,
    );
    // Default limits (what the caller asked for) are what we read back.
    assert_eq!(
        gpu.limits.max_storage_buffer_binding_size,
        device.limits().max_storage_buffer_binding_size
    );
}

/// The application's own uncaptured-error handler keeps firing after the
/// engine is built on its device and has run on it, and an error in the
/// engine's work still comes back as a `Result`.
#[test]
fn the_callers_error_handler_stays_the_callers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (device, queue, info) = callers_device();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    device.on_uncaptured_error(Arc::new(move |_e: wgpu::Error| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let gpu = Gpu::from_device(device.clone(), queue, Some(info));
    let x = Tensor::from_slice(&gpu, "x", &[3], &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(affine(&gpu, &x), [3.0, 5.0, 7.0]);
    // The application's mistake, outside any scope: MAP_READ with STORAGE is invalid.
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app's invalid buffer"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the application's handler saw its own error"
    );
    // ... and the engine neither swallowed it nor reports it as its own.
    gpu.sync().unwrap();
    // The engine's own error is still a Result on the caller's device.
    static BAD: Shader = Shader::new(
        "bad_on_callers_device",
        "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
    );
    assert!(gpu.pipeline(&BAD, "main", &[]).is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the engine's error went to its scope");
}

#[test]
fn shader_errors_are_results_not_aborts() {
    let gpu = gpu();
    static BAD: Shader = Shader::new(
        "bad_for_test",
        "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
    );
    match gpu.pipeline(&BAD, "main", &[]) {
        Err(GpuError::Validation { context, .. }) => assert!(context.contains("bad_for_test"), "{context}"),
        Err(e) => panic!("expected a validation error, got {e}"),
        Ok(_) => panic!("a malformed shader compiled"),
    }
    // A missing entry point too.
    assert!(gpu.pipeline(&ELEMENTWISE, "no_such_entry", &[]).is_err());
    // The device is still usable afterwards.
    let t = Tensor::from_slice(&gpu, "t", &[2], &[1.0, 2.0]).unwrap();
    assert_eq!(t.read(&gpu).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn wrong_bindings_are_results() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, "x", &[4]).unwrap();
    // axpby needs three bindings; two is a validation error, caught.
    let err = Dispatch::new(&gpu, &ELEMENTWISE, "axpby", &[], &[&x.buffer, &x.buffer], [1, 1, 1]);
    assert!(
        matches!(err, Err(GpuError::Validation { .. })),
        "expected a validation error"
    );
}

#[test]
fn oversized_tensors_are_refused_up_front() {
    let gpu = gpu();
    let limit = gpu.limits.max_storage_buffer_binding_size as usize;
    let n = limit / 4 + 1;
    match Tensor::zeros(&gpu, "huge", &[n]) {
        Err(GpuError::TooLarge { what, bytes, .. }) => {
            assert_eq!(what, "huge");
            assert!(bytes > limit as u64);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a tensor over the binding limit was created"),
    }
    // Too many workgroups in one dimension.
    let x = Tensor::zeros(&gpu, "x", &[4]).unwrap();
    let p = gpu.uniform("p", &[0u32; 4]);
    let e = Dispatch::new(
        &gpu,
        &ELEMENTWISE,
        "axpby",
        &[],
        &[&p, &x.buffer, &x.buffer],
        [70_000, 1, 1],
    );
    assert!(matches!(e, Err(GpuError::TooManyGroups { .. })));
}

#[test]
fn pipelines_are_cached() {
    let gpu = gpu();
    let a = gpu.pipeline(&ELEMENTWISE, "axpby", &[]).unwrap();
    let b = gpu.pipeline(&ELEMENTWISE, "axpby", &[]).unwrap();
    assert_eq!(a, b, "the same (shader, entry, overrides) must give the same pipeline");
    let c = gpu.pipeline(&ELEMENTWISE, "affine", &[]).unwrap();
    assert_ne!(a, c);
}

/// Timestamp timing: one median per plan, each a real duration, and the
/// plans' work done (every replay ran them). On an adapter without timestamp
/// queries the call says so with `None`.
#[test]
fn gpu_times_times_each_plan() {
    let gpu = gpu();
    let n = 1 << 16;
    let x = Tensor::from_slice(&gpu, "x", &[n], &vec![1.0; n]).unwrap();
    let y = Tensor::zeros(&gpu, "y", &[n]).unwrap();
    let one = Elementwise::new(&gpu, Op::Axpby, &x, &y, 1.0, 1.0).unwrap();
    let a = Plan {
        steps: vec![one.dispatch.clone()],
    };
    let b = Plan {
        steps: vec![one.dispatch.clone(); 3],
    };
    let iters = 5;
    match tweedie::gpu::gpu_times(&gpu, &[&a, &b, &Plan::new()], iters).unwrap() {
        Some(t) => {
            assert_eq!(t.len(), 3);
            assert!(t[0].as_nanos() > 0 && t[1].as_nanos() > 0, "{t:?}");
            // Warm-up + iters replays of 1 + 3 axpbys of y += x.
            let got = y.read(&gpu).unwrap();
            assert_eq!(got[n - 1], 4.0 * (iters + 1) as f32);
        }
        None => eprintln!("{} has no timestamp queries", gpu.describe()),
    }
}
