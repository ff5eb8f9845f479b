//! `shaders/attention.wgsl`: fused multi-head self-attention from a qkv tensor.

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, ATTENTION};
use crate::tensor::DType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub n: u32,
    pub heads: u32,
    pub ch: u32,
    pub t: u32,
    pub order: u32,
    pub scale_q: f32,
    pub scale_k: f32,
    pub accumulate: u32,
}

impl AttentionParams {
    /// The attention of shape `s`; `accumulate` (backward only) adds into dqkv.
    pub fn new(s: &AttentionShape, accumulate: bool) -> AttentionParams {
        AttentionParams {
            n: s.n as u32,
            heads: s.heads as u32,
            ch: s.ch as u32,
            t: s.t as u32,
            order: s.split_order as u32,
            scale_q: s.scale_q,
            scale_k: s.scale_k,
            accumulate: accumulate as u32,
        }
    }
}

/// Output channels one thread accumulates (mirrors `BLOCK`); wider heads
/// take several threads per query, each recomputing the scores.
pub const BLOCK: usize = 64;
/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 64;

/// Shape of one attention: qkv [n, 3 heads ch, t] -> y [n, heads ch, t], lse [n, heads, t].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub n: usize,
    pub heads: usize,
    pub ch: usize,
    pub t: usize,
    /// false: legacy per-head [q; k; v]; true: [q | k | v] split.
    pub split_order: bool,
    pub scale_q: f32,
    pub scale_k: f32,
}

impl AttentionShape {
    /// Threads of the forward and per-block backward kernels: one per
    /// (sample, head, channel block, token).
    pub fn threads(&self) -> usize {
        self.n * self.heads * self.ch.div_ceil(BLOCK) * self.t
    }
}

pub fn attention(
    gpu: &Gpu,
    dtype: DType,
    s: &AttentionShape,
    qkv: &wgpu::Buffer,
    y: &wgpu::Buffer,
    lse: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let params = AttentionParams::new(s, false);
    let u = gpu.uniform("attention params", &params);
    Dispatch::new(
        gpu,
        &ATTENTION.typed(dtype),
        "attention",
        &[("WG", WG as f64)],
        &[&u, qkv, y, lse],
        dispatch_groups(s.threads(), WG),
    )
}

/// The backward pass of [`attention`]: dqkv from dy, with the saved output y
/// and lse; `dsum` [n, heads, t] is scratch. Three dispatches (D, queries, keys).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    gpu: &Gpu,
    dtype: DType,
    s: &AttentionShape,
    qkv: &wgpu::Buffer,
    y: &wgpu::Buffer,
    lse: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dsum: &wgpu::Buffer,
    dqkv: &wgpu::Buffer,
    accumulate: bool,
) -> Result<[Dispatch; 3], GpuError> {
    let params = AttentionParams::new(s, accumulate);
    let u = gpu.uniform("attention bwd params", &params);
    let ov = [("WG", WG as f64)];
    let d = Dispatch::new(
        gpu,
        &ATTENTION.typed(dtype),
        "attn_bwd_d",
        &ov,
        &[&u, dy, y, dsum],
        dispatch_groups(s.n * s.heads * s.t, WG),
    )?;
    let groups = dispatch_groups(s.threads(), WG);
    let dq = Dispatch::new(
        gpu,
        &ATTENTION.typed(dtype),
        "attn_bwd_q",
        &ov,
        &[&u, qkv, lse, dy, dsum, dqkv],
        groups,
    )?;
    let dkv = Dispatch::new(
        gpu,
        &ATTENTION.typed(dtype),
        "attn_bwd_kv",
        &ov,
        &[&u, qkv, lse, dy, dsum, dqkv],
        groups,
    )?;
    Ok([d, dq, dkv])
}
