//! `shaders/random.wgsl`: seeded Gaussian noise (Philox4x32-10 + Box-Muller).

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, RANDOM, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// `normal`: out = N(mean, sigma^2) draws.
    pub struct Normal for RANDOM: ["normal"] {
        p: uniform,
        out: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Normal::SIG];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NoiseParams {
    pub n: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub stream: u32,
    pub mean: f32,
    pub sigma: f32,
    pub _pad: [u32; 2],
}

impl NoiseParams {
    /// `n` draws of N(mean, sigma^2) from the Philox stream (seed, stream).
    pub fn new(n: u32, seed: u64, stream: u32, mean: f32, sigma: f32) -> NoiseParams {
        NoiseParams {
            n,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            stream,
            mean,
            sigma,
            _pad: [0; 2],
        }
    }
}

/// Fills a tensor with N(mean, std^2) noise; `set_stream` selects an
/// independent stream (e.g. the sampler step) without rebuilding.
pub struct Noise {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    base: NoiseParams,
}

impl Noise {
    pub fn new(gpu: &Gpu, out: &Tensor, seed: u64, stream: u32, mean: f32, std: f32) -> Result<Noise, GpuError> {
        let n = out.numel() as u32;
        let base = NoiseParams::new(n, seed, stream, mean, std);
        let params = gpu.uniform("noise params", &base);
        let dispatch = Dispatch::typed(
            gpu,
            "normal",
            &[],
            &Normal { p: &params, out },
            dispatch_groups((n as usize).div_ceil(4), WG1D),
        )?;
        Ok(Noise { dispatch, params, base })
    }

    pub fn set_stream(&self, gpu: &Gpu, stream: u32) {
        let p = NoiseParams { stream, ..self.base };
        gpu.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}
