//! `shaders/timestep.wgsl`: sinusoidal timestep embedding.

use crate::gpu::{Dispatch, Gpu, GpuError, TIMESTEP};
use crate::tensor::DType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TimestepParams {
    pub n: u32,
    pub dim: u32,
    pub half: u32,
    pub cos_first: u32,
}

impl TimestepParams {
    /// `n` embeddings of width `dim` (sin and cos halves, cos first or not).
    pub fn new(n: usize, dim: usize, cos_first: bool) -> TimestepParams {
        TimestepParams {
            n: n as u32,
            dim: dim as u32,
            half: (dim / 2) as u32,
            cos_first: cos_first as u32,
        }
    }
}

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 64;

/// y [n, dim] from t [n] and freqs [dim / 2].
#[allow(clippy::too_many_arguments)]
pub fn timestep_embedding(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    dim: usize,
    cos_first: bool,
    t: &wgpu::Buffer,
    freqs: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let params = TimestepParams::new(n, dim, cos_first);
    let u = gpu.uniform("timestep params", &params);
    let groups = ((n * dim) as u32).div_ceil(WG);
    Dispatch::new(
        gpu,
        &TIMESTEP.typed(dtype),
        "timestep_embedding",
        &[("WG", WG as f64)],
        &[&u, t, freqs, y],
        [groups, 1, 1],
    )
}
