//! `shaders/timestep.wgsl`: sinusoidal timestep embedding.

use crate::bindings;
use crate::gpu::{Bindings, Dispatch, Gpu, GpuError, KernelSig, TIMESTEP};
use crate::tensor::Tensor;

bindings! {
    /// y [n, dim] from t [n] and freqs [dim / 2].
    pub struct TimestepEmbedding for TIMESTEP: ["timestep_embedding"] {
        p: uniform,
        t: read f32,
        freqs: read f32,
        y: read_write T,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[TimestepEmbedding::SIG];

/// `n` embeddings of width `dim`, sin half first or cos half first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestepShape {
    pub n: usize,
    pub dim: usize,
    pub cos_first: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TimestepParams {
    pub n: u32,
    pub dim: u32,
    pub half: u32,
    pub cos_first: u32,
}

impl TimestepParams {
    pub fn new(s: &TimestepShape) -> TimestepParams {
        TimestepParams {
            n: s.n as u32,
            dim: s.dim as u32,
            half: (s.dim / 2) as u32,
            cos_first: s.cos_first as u32,
        }
    }
}

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 64;

/// y [n, dim] from t [n] and freqs [dim / 2] (y's dtype picks the instance).
pub fn timestep_embedding(
    gpu: &Gpu,
    s: &TimestepShape,
    t: &Tensor,
    freqs: &Tensor,
    y: &Tensor,
) -> Result<Dispatch, GpuError> {
    let p = &gpu.uniform("timestep params", &TimestepParams::new(s));
    let groups = ((s.n * s.dim) as u32).div_ceil(WG);
    Dispatch::typed(
        gpu,
        "timestep_embedding",
        &[("WG", WG as f64)],
        &TimestepEmbedding { p, t, freqs, y },
        [groups, 1, 1],
    )
}
