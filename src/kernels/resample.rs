//! `shaders/resample.wgsl`: nearest x2 upsampling, 2x2 average pooling, and
//! copies into channel slices (skip-connection concat).

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, RESAMPLE};
use crate::tensor::DType;

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
    /// Backward kernels: 1 adds into dx, 0 overwrites.
    pub accumulate: u32,
    pub _pad: [u32; 3],
}

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 256;

/// An image batch x [n, c, h, w].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn numel(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
}

/// Channels [c_off, c_off + c) of a [n, c_total, hw] tensor, against a
/// [n, c, hw] one (one half of a skip-connection concat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSlice {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub c_total: usize,
    pub c_off: usize,
}

impl ChannelSlice {
    fn check(&self) {
        assert!(self.c_off + self.c <= self.c_total, "channel slice out of range");
    }
}

impl ResampleParams {
    fn build(s: Nchw, (ho, wo): (usize, usize), (c_total, c_off): (usize, usize), accumulate: bool) -> ResampleParams {
        let u = |v: usize| v as u32;
        ResampleParams {
            n: u(s.n),
            c: u(s.c),
            h: u(s.h),
            w: u(s.w),
            ho: u(ho),
            wo: u(wo),
            c_total: u(c_total),
            c_off: u(c_off),
            accumulate: accumulate as u32,
            _pad: [0; 3],
        }
    }

    /// x [n, c, h, w] -> y [n, c, 2h, 2w]; with `accumulate`, its adjoint.
    pub fn upsample2x(s: Nchw, accumulate: bool) -> ResampleParams {
        Self::build(s, (2 * s.h, 2 * s.w), (s.c, 0), accumulate)
    }

    /// x [n, c, h, w] -> y [n, c, h/2, w/2]; with `accumulate`, its adjoint.
    pub fn avg_pool2x2(s: Nchw, accumulate: bool) -> ResampleParams {
        Self::build(s, (s.h / 2, s.w / 2), (s.c, 0), accumulate)
    }

    /// copy_channels and its adjoint slice_channels: the [n, c, hw] side is
    /// seen as h = hw, w = 1.
    pub fn channels(s: ChannelSlice, accumulate: bool) -> ResampleParams {
        let img = Nchw {
            n: s.n,
            c: s.c,
            h: s.hw,
            w: 1,
        };
        Self::build(img, (s.hw, 1), (s.c_total, s.c_off), accumulate)
    }
}

fn dispatch(
    gpu: &Gpu,
    dtype: DType,
    entry: &str,
    params: &ResampleParams,
    threads: usize,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let u = gpu.uniform(&format!("{entry} params"), params);
    Dispatch::new(
        gpu,
        &RESAMPLE.typed(dtype),
        entry,
        &[("WG", WG as f64)],
        &[&u, src, dst],
        dispatch_groups(threads, WG),
    )
}

/// x [n, c, h, w] -> y [n, c, 2h, 2w].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2x(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let s = Nchw { n, c, h, w };
    dispatch(
        gpu,
        dtype,
        "upsample_nearest2x",
        &ResampleParams::upsample2x(s, false),
        4 * s.numel(),
        x,
        y,
    )
}

/// x [n, c, h, w] -> y [n, c, h/2, w/2] (floor).
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2x2(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let s = Nchw { n, c, h, w };
    let threads = n * c * (h / 2) * (w / 2);
    dispatch(
        gpu,
        dtype,
        "avg_pool2x2",
        &ResampleParams::avg_pool2x2(s, false),
        threads,
        x,
        y,
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
    copy_into(
        gpu,
        ChannelSlice {
            n,
            c,
            hw,
            c_total,
            c_off,
        },
        x,
        y,
    )
}

/// Adjoint of [`upsample_nearest2x`]: dx [n, c, h, w] (+)= 2x2 block sums of dy [n, c, 2h, 2w].
#[allow(clippy::too_many_arguments)]
pub fn upsample_nearest2x_bwd(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    let s = Nchw { n, c, h, w };
    let params = ResampleParams::upsample2x(s, accumulate);
    dispatch(gpu, dtype, "upsample_nearest2x_bwd", &params, s.numel(), dy, dx)
}

/// Adjoint of [`avg_pool2x2`]: dx [n, c, h, w] (+)= dy [n, c, h/2, w/2] / 4 spread over each block.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2x2_bwd(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    let s = Nchw { n, c, h, w };
    let params = ResampleParams::avg_pool2x2(s, accumulate);
    dispatch(gpu, dtype, "avg_pool2x2_bwd", &params, s.numel(), dy, dx)
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
    slice_from(
        gpu,
        ChannelSlice {
            n,
            c,
            hw,
            c_total,
            c_off,
        },
        dy,
        dx,
        accumulate,
    )
}

/// [`copy_channels`] for a [`ChannelSlice`].
pub fn copy_into(gpu: &Gpu, s: ChannelSlice, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch, GpuError> {
    s.check();
    dispatch(
        gpu,
        DType::F32,
        "copy_channels",
        &ResampleParams::channels(s, false),
        s.n * s.c * s.hw,
        x,
        y,
    )
}

/// [`slice_channels`] for a [`ChannelSlice`].
pub fn slice_from(
    gpu: &Gpu,
    s: ChannelSlice,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    s.check();
    dispatch(
        gpu,
        DType::F32,
        "slice_channels",
        &ResampleParams::channels(s, accumulate),
        s.n * s.c * s.hw,
        dy,
        dx,
    )
}

/// Params of the one-dispatch concat and its adjoint: a [n, ca, hw], b [n, cb, hw].
fn concat_params(n: usize, ca: usize, cb: usize, hw: usize, accumulate: u32) -> ResampleParams {
    ResampleParams {
        accumulate,
        ..ResampleParams::channels(
            ChannelSlice {
                n,
                c: ca + cb,
                hw,
                c_total: ca + cb,
                c_off: ca,
            },
            false,
        )
    }
}

/// y [n, ca + cb, hw] = cat([a [n, ca, hw], b [n, cb, hw]], channels), one dispatch.
#[allow(clippy::too_many_arguments)]
pub fn concat_channels(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    ca: usize,
    cb: usize,
    hw: usize,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let u = gpu.uniform("concat_channels params", &concat_params(n, ca, cb, hw, 0));
    Dispatch::new(
        gpu,
        &RESAMPLE.typed(dtype),
        "concat_channels",
        &[("WG", WG as f64)],
        &[&u, a, b, y],
        dispatch_groups(n * (ca + cb) * hw, WG),
    )
}

/// Adjoint of [`concat_channels`], one dispatch: da (+)= dy[:, :ca], db (+)=
/// dy[:, ca:], each adding into its target or overwriting it as its flag says.
#[allow(clippy::too_many_arguments)]
pub fn split_channels(
    gpu: &Gpu,
    dtype: DType,
    n: usize,
    ca: usize,
    cb: usize,
    hw: usize,
    dy: &wgpu::Buffer,
    da: &wgpu::Buffer,
    db: &wgpu::Buffer,
    (acc_a, acc_b): (bool, bool),
) -> Result<Dispatch, GpuError> {
    let acc = acc_a as u32 | (acc_b as u32) << 1;
    let u = gpu.uniform("split_channels params", &concat_params(n, ca, cb, hw, acc));
    Dispatch::new(
        gpu,
        &RESAMPLE.typed(dtype),
        "split_channels",
        &[("WG", WG as f64)],
        &[&u, dy, da, db],
        dispatch_groups(n * (ca + cb) * hw, WG),
    )
}
