//! `shaders/groupnorm.wgsl`: GroupNorm statistics, then the normalisation
//! fused with the time-embedding scale-shift and SiLU. Two forms of each
//! direction: chunked (three dispatches; many workgroups per group, for large
//! images on large GPUs) and one-pass (one dispatch, one workgroup per group;
//! what the U-Net plans use).

use crate::gpu::{dispatch_groups, small_groups, Dispatch, Gpu, GpuError, GROUPNORM};
use crate::tensor::DType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupNormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub groups: u32,
    pub eps: f32,
    pub silu: u32,
    pub scale_shift: u32,
    pub gamma_off: u32,
    pub beta_off: u32,
    pub ss_off: u32,
    pub chunk_len: u32,
    pub chunks: u32,
    /// Backward: 1 adds into dx, 0 overwrites.
    pub accumulate: u32,
    pub _pad: [u32; 3],
}

impl GroupNormParams {
    /// The forward GroupNorm of shape `s`: gamma and beta at their element
    /// offsets, the scale-shift's offset where there is one.
    pub fn forward(s: &GroupNormShape, gamma_off: usize, beta_off: usize, ss_off: Option<usize>, silu: bool) -> Self {
        GroupNormParams {
            n: s.n as u32,
            c: s.c as u32,
            hw: s.hw as u32,
            groups: s.groups as u32,
            eps: s.eps,
            silu: silu as u32,
            scale_shift: ss_off.is_some() as u32,
            gamma_off: gamma_off as u32,
            beta_off: beta_off as u32,
            ss_off: ss_off.unwrap_or(0) as u32,
            chunk_len: CHUNK as u32,
            chunks: s.chunks() as u32,
            accumulate: 0,
            _pad: [0; 3],
        }
    }

    /// The input gradient of the same forward; `accumulate` adds into dx.
    pub fn backward(
        s: &GroupNormShape,
        gamma_off: usize,
        beta_off: usize,
        ss_off: Option<usize>,
        silu: bool,
        accumulate: bool,
    ) -> Self {
        GroupNormParams {
            accumulate: accumulate as u32,
            ..Self::forward(s, gamma_off, beta_off, ss_off, silu)
        }
    }
}

/// Elements of a group one statistics workgroup reduces: a 256 px image's
/// groups split into tens of chunks, so the reductions fill a large GPU.
pub const CHUNK: usize = 8192;

/// Threads per workgroup of both entry points (mirrors `WG`).
pub const WG: u32 = 256;

/// x [n, c, hw] -> y, with per-(n, group) [mean, rstd] left in `stats` [n * groups * 2].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNormShape {
    /// Statistics chunks per group.
    pub fn chunks(&self) -> usize {
        ((self.c / self.groups) * self.hw).div_ceil(CHUNK).max(1)
    }
}

/// The scale-shift binding (`dummy` without one) and the parameter uniform
/// of a forward GroupNorm, chunked or one-pass.
#[allow(clippy::too_many_arguments)]
fn forward_binds<'a>(
    gpu: &Gpu,
    s: &GroupNormShape,
    gamma_off: usize,
    beta_off: usize,
    scale_shift: Option<(&'a wgpu::Buffer, usize)>,
    silu: bool,
    dummy: &'a wgpu::Buffer,
) -> (&'a wgpu::Buffer, wgpu::Buffer) {
    assert!(
        s.groups > 0 && s.c % s.groups == 0,
        "GroupNorm channels must split into groups"
    );
    let params = GroupNormParams::forward(s, gamma_off, beta_off, scale_shift.map(|(_, o)| o), silu);
    (
        scale_shift.map_or(dummy, |(b, _)| b),
        gpu.uniform("groupnorm params", &params),
    )
}

/// The same for the input gradient, chunked or one-pass.
fn backward_binds<'a>(
    gpu: &Gpu,
    s: &GroupNormShape,
    (gamma_off, beta_off): (usize, usize),
    scale_shift: Option<(&'a wgpu::Buffer, usize)>,
    silu: bool,
    accumulate: bool,
    dummy: &'a wgpu::Buffer,
) -> (&'a wgpu::Buffer, wgpu::Buffer) {
    let params = GroupNormParams::backward(s, gamma_off, beta_off, scale_shift.map(|(_, o)| o), silu, accumulate);
    (
        scale_shift.map_or(dummy, |(b, _)| b),
        gpu.uniform("groupnorm bwd params", &params),
    )
}

/// The three dispatches of one GroupNorm (partial statistics, their merge, the normalisation). `weights` holds gamma at `gamma_off`
/// and beta at `beta_off`; `scale_shift` is ([N, 2C] buffer, element offset).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    gamma_off: usize,
    beta_off: usize,
    scale_shift: Option<(&wgpu::Buffer, usize)>,
    silu: bool,
    y: &wgpu::Buffer,
    dummy: &wgpu::Buffer,
) -> Result<[Dispatch; 3], GpuError> {
    let (ss_buf, u) = forward_binds(gpu, s, gamma_off, beta_off, scale_shift, silu, dummy);
    let ov = [("WG", WG as f64)];
    let groups = (s.n * s.groups) as u32;
    let partial = gpu.storage_buffer("groupnorm partial stats", (s.n * s.groups * s.chunks() * 3 * 4) as u64)?;
    let part = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_stats_partial",
        &ov,
        &[&u, x, &partial],
        [s.chunks() as u32, groups, 1],
    )?;
    let finish = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_stats_finish",
        &ov,
        &[&u, &partial, stats],
        small_groups(groups as usize),
    )?;
    let apply = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_apply",
        &ov,
        &[&u, x, stats, weights, ss_buf, y],
        dispatch_groups(s.n * s.c * s.hw, WG),
    )?;
    Ok([part, finish, apply])
}

/// [`group_norm`] in one dispatch (`gn_onepass`): one workgroup per (sample,
/// group) reduces its group and normalises it. Same arguments and results
/// (y, and `stats` for the backward pass); no partial-statistics buffer.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_onepass(
    gpu: &Gpu,
    dtype: DType,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    gamma_off: usize,
    beta_off: usize,
    scale_shift: Option<(&wgpu::Buffer, usize)>,
    silu: bool,
    y: &wgpu::Buffer,
    dummy: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ss_buf, u) = forward_binds(gpu, s, gamma_off, beta_off, scale_shift, silu, dummy);
    Dispatch::new(
        gpu,
        &GROUPNORM.typed(dtype),
        "gn_onepass",
        &[("WG", WG as f64)],
        &[&u, x, stats, weights, ss_buf, y],
        [(s.n * s.groups) as u32, 1, 1],
    )
}

/// [`group_norm_bwd`] in one dispatch (`gn_bwd_onepass`): one workgroup per
/// (sample, group) sums its group and writes its gradient.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd_onepass(
    gpu: &Gpu,
    dtype: DType,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    gamma_off: usize,
    beta_off: usize,
    scale_shift: Option<(&wgpu::Buffer, usize)>,
    silu: bool,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
    dummy: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ss_buf, u) = backward_binds(gpu, s, (gamma_off, beta_off), scale_shift, silu, accumulate, dummy);
    Dispatch::new(
        gpu,
        &GROUPNORM.typed(dtype),
        "gn_bwd_onepass",
        &[("WG", WG as f64)],
        &[&u, x, stats, weights, ss_buf, dy, dx],
        [(s.n * s.groups) as u32, 1, 1],
    )
}

/// The input gradient of [`group_norm`] (same shape, weights, scale-shift and
/// SiLU flag; `stats` as the forward left them): dx (+)= J^T dy. Three
/// dispatches (per-chunk sums, their totals, the gradient).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    gamma_off: usize,
    beta_off: usize,
    scale_shift: Option<(&wgpu::Buffer, usize)>,
    silu: bool,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
    dummy: &wgpu::Buffer,
) -> Result<[Dispatch; 3], GpuError> {
    let (ss_buf, u) = backward_binds(gpu, s, (gamma_off, beta_off), scale_shift, silu, accumulate, dummy);
    let ov = [("WG", WG as f64)];
    let groups = (s.n * s.groups) as u32;
    let partial = gpu.storage_buffer(
        "groupnorm bwd partial sums",
        (s.n * s.groups * s.chunks() * 2 * 4) as u64,
    )?;
    let gstats = gpu.storage_buffer("groupnorm bwd sums", (s.n * s.groups * 2 * 4) as u64)?;
    let st = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_bwd_stats",
        &ov,
        &[&u, x, stats, weights, ss_buf, dy, &partial],
        [s.chunks() as u32, groups, 1],
    )?;
    let finish = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_sum_finish",
        &ov,
        &[&u, &partial, &gstats],
        small_groups(groups as usize),
    )?;
    let apply = Dispatch::new(
        gpu,
        &GROUPNORM,
        "gn_bwd_apply",
        &ov,
        &[&u, x, stats, weights, ss_buf, dy, &gstats, dx],
        dispatch_groups(s.n * s.c * s.hw, WG),
    )?;
    Ok([st, finish, apply])
}
