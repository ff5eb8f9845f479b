//! `shaders/resample.wgsl`: nearest x2 upsampling, 2x2 average pooling, and
//! copies into channel slices (skip-connection concat).

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, RESAMPLE};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ResampleParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub ho: u32,
    pub wo: u32,
    pub c_total: u32,
    pub c_off: u32,
}

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 256;

#[allow(clippy::too_many_arguments)]
fn params(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    c_total: usize,
    c_off: usize,
) -> ResampleParams {
    let u = |v: usize| v as u32;
    ResampleParams {
        n: u(n),
        c: u(c),
        h: u(h),
        w: u(w),
        ho: u(ho),
        wo: u(wo),
        c_total: u(c_total),
        c_off: u(c_off),
    }
}

/// x [n, c, h, w] -> y [n, c, 2h, 2w].
pub fn upsample_nearest2x(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let u = gpu.uniform("upsample params", &params(n, c, h, w, 2 * h, 2 * w, c, 0));
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "upsample_nearest2x",
        &[("WG", WG as f64)],
        &[&u, x, y],
        dispatch_groups(n * c * 4 * h * w, WG),
    )
}

/// x [n, c, h, w] -> y [n, c, h/2, w/2] (floor).
pub fn avg_pool2x2(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ho, wo) = (h / 2, w / 2);
    let u = gpu.uniform("avgpool params", &params(n, c, h, w, ho, wo, c, 0));
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "avg_pool2x2",
        &[("WG", WG as f64)],
        &[&u, x, y],
        dispatch_groups(n * c * ho * wo, WG),
    )
}

/// x [n, c, hw] -> channels [c_off, c_off + c) of y [n, c_total, hw].
#[allow(clippy::too_many_arguments)]
pub fn copy_channels(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    c_total: usize,
    c_off: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    assert!(c_off + c <= c_total, "channel slice out of range");
    let u = gpu.uniform("copy_channels params", &params(n, c, hw, 1, hw, 1, c_total, c_off));
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "copy_channels",
        &[("WG", WG as f64)],
        &[&u, x, y],
        dispatch_groups(n * c * hw, WG),
    )
}

/// Adjoint of [`upsample_nearest2x`]: dx [n, c, h, w] (+)= 2x2 block sums of dy [n, c, 2h, 2w].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2x_bwd(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    let u = gpu.uniform(
        "upsample bwd params",
        &params(n, c, h, w, 2 * h, 2 * w, c, accumulate as usize),
    );
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "upsample_nearest2x_bwd",
        &[("WG", WG as f64)],
        &[&u, dy, dx],
        dispatch_groups(n * c * h * w, WG),
    )
}

/// Adjoint of [`avg_pool2x2`]: dx [n, c, h, w] (+)= dy [n, c, h/2, w/2] / 4 spread over each block.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2x2_bwd(
    gpu: &Gpu,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    let u = gpu.uniform(
        "avgpool bwd params",
        &params(n, c, h, w, h / 2, w / 2, c, accumulate as usize),
    );
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "avg_pool2x2_bwd",
        &[("WG", WG as f64)],
        &[&u, dy, dx],
        dispatch_groups(n * c * h * w, WG),
    )
}

/// Adjoint of [`copy_channels`]: dx [n, c, hw] (+)= channels [c_off, c_off + c) of dy [n, c_total, hw].
#[allow(clippy::too_many_arguments)]
pub fn slice_channels(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    c_total: usize,
    c_off: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    assert!(c_off + c <= c_total, "channel slice out of range");
    let u = gpu.uniform(
        "slice_channels params",
        &params(n, c, hw, 1, accumulate as usize, 1, c_total, c_off),
    );
    Dispatch::new(
        gpu,
        &RESAMPLE,
        "slice_channels",
        &[("WG", WG as f64)],
        &[&u, dy, dx],
        dispatch_groups(n * c * hw, WG),
    )
}
