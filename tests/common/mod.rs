//! Shared test helpers: the one GPU, comparisons, random data.
#![allow(dead_code)]

pub mod attention;
pub mod conv;
pub mod fft;
pub mod gmm;
pub mod groupnorm;
pub mod unet_io;

use std::sync::{Arc, OnceLock};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tweedie::Gpu;

/// The test GPU (lavapipe in CI). Without an adapter a GPU test fails loudly.
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))))
        .clone()
}

/// A device made the way an application makes its own: default features
/// and limits, no handler of the engine's.
pub fn callers_device() -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("an adapter for the test");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    (device, queue, adapter.get_info())
}

/// Asserts |a - b| <= atol + rtol |b| elementwise, reporting the worst error
/// and the first bad index with both values (llm.c's validate_result).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = 0f32;
    let mut first_bad = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        worst = worst.max(err);
        // NaN fails too: the comparison is false.
        let within = err <= atol + rtol * w.abs();
        if !within && first_bad.is_none() {
            first_bad = Some((i, g, w));
        }
    }
    if let Some((i, g, w)) = first_bad {
        panic!("{what}: mismatch at {i}: got {g}, want {w} (max abs err {worst}, atol {atol}, rtol {rtol})");
    }
}

/// max |a - b| / max(1, max |b|): the U-Net parity measure.
pub fn rel_max_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

pub fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(1e-7);
            let u2: f32 = rng.random::<f32>();
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// f32 values widened to f64 (the references' precision).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// f64 values rounded to f32.
pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The f64 inner product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// x sigmoid(x), the activation GroupNorm and the linear layers fuse.
pub fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub fn norm64(a: &[f32]) -> f64 {
    dot64(a, a).sqrt()
}

/// A file or directory under `tests/fixtures/` (the reference data in the
/// repository; see its README for provenance): `fixture("unet/adm_gray")`,
/// `fixture("gmm/d8_m2.safetensors")`.
pub fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
