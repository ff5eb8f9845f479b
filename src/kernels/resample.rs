//! `shaders/resample.wgsl`: nearest x2 upsampling, 2x2 average pooling, and
//! copies into channel slices (skip-connection concat).

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, RESAMPLE};
use crate::tensor::Tensor;

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

    /// Elements of the same batch with each side scaled by `num / den` (floor).
    fn scaled(&self, num: usize, den: usize) -> usize {
        self.n * self.c * (self.h * num / den) * (self.w * num / den)
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

bindings! {
    /// The one-input kernels: `dst` from `x` (forward: x -> y; adjoint: dy
    /// in `x`, dx in `y`).
    pub struct Resample for RESAMPLE: [
        "upsample_nearest2x",
        "avg_pool2x2",
        "copy_channels",
        "upsample_nearest2x_bwd",
        "avg_pool2x2_bwd",
        "slice_channels",
    ] {
        p: uniform,
        x: read T,
        y: read_write T,
    }

    /// `concat_channels`: y3 = cat([x, x2], channels).
    pub struct ConcatChannels for RESAMPLE: ["concat_channels"] {
        p: uniform,
        x: read T,
        x2: read T,
        y3: read_write T,
    }

    /// `split_channels`: y (+)= x[:, :c_off], y3 (+)= x[:, c_off:].
    pub struct SplitChannels for RESAMPLE: ["split_channels"] {
        p: uniform,
        x: read T,
        y: read_write T,
        y3: read_write T,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Resample::SIG, ConcatChannels::SIG, SplitChannels::SIG];

/// A skip-connection concat: a [n, ca, hw] and b [n, cb, hw] side by side
/// along channels in y [n, ca + cb, hw].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    pub n: usize,
    pub ca: usize,
    pub cb: usize,
    pub hw: usize,
}

impl Concat {
    fn numel(&self) -> usize {
        self.n * (self.ca + self.cb) * self.hw
    }

    /// Params of the concat and its adjoint (`accumulate`: bit 0 for a, bit 1 for b).
    fn params(&self, accumulate: u32) -> ResampleParams {
        ResampleParams {
            accumulate,
            ..ResampleParams::channels(
                ChannelSlice {
                    n: self.n,
                    c: self.ca + self.cb,
                    hw: self.hw,
                    c_total: self.ca + self.cb,
                    c_off: self.ca,
                },
                false,
            )
        }
    }
}

/// Refuses a tensor with fewer elements than the kernel touches through it
/// (the buffer of an arena slot may be larger than the tensor; not smaller).
fn check_len(what: &str, t: &Tensor, numel: usize) -> Result<(), GpuError> {
    if t.numel() < numel {
        return Err(GpuError::Shape {
            what: what.to_string(),
            expected: vec![numel],
            got: t.shape.clone(),
        });
    }
    Ok(())
}

/// One of the one-input kernels ([`Resample`]) over `threads` threads, `x`
/// holding `nx` elements and `y` `ny`.
fn dispatch(
    gpu: &Gpu,
    entry: &str,
    params: &ResampleParams,
    threads: usize,
    (x, nx): (&Tensor, usize),
    (y, ny): (&Tensor, usize),
) -> Result<Dispatch, GpuError> {
    check_len(&format!("{entry} input"), x, nx)?;
    check_len(&format!("{entry} output"), y, ny)?;
    let u = gpu.uniform(&format!("{entry} params"), params);
    Dispatch::typed(
        gpu,
        entry,
        &[("WG", WG as f64)],
        &Resample { p: &u, x, y },
        dispatch_groups(threads, WG),
    )
}

/// x [n, c, h, w] -> y [n, c, 2h, 2w].
pub fn upsample_nearest2x(gpu: &Gpu, s: Nchw, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    let params = ResampleParams::upsample2x(s, false);
    let big = s.scaled(2, 1);
    dispatch(gpu, "upsample_nearest2x", &params, big, (x, s.numel()), (y, big))
}

/// x [n, c, h, w] -> y [n, c, h/2, w/2] (floor).
pub fn avg_pool2x2(gpu: &Gpu, s: Nchw, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    let params = ResampleParams::avg_pool2x2(s, false);
    let small = s.scaled(1, 2);
    dispatch(gpu, "avg_pool2x2", &params, small, (x, s.numel()), (y, small))
}

/// Adjoint of [`upsample_nearest2x`]: dx [n, c, h, w] (+)= 2x2 block sums of dy [n, c, 2h, 2w].
pub fn upsample_nearest2x_bwd(
    gpu: &Gpu,
    s: Nchw,
    dy: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    let params = ResampleParams::upsample2x(s, accumulate);
    let n = s.numel();
    dispatch(gpu, "upsample_nearest2x_bwd", &params, n, (dy, s.scaled(2, 1)), (dx, n))
}

/// Adjoint of [`avg_pool2x2`]: dx [n, c, h, w] (+)= dy [n, c, h/2, w/2] / 4 spread over each block.
pub fn avg_pool2x2_bwd(gpu: &Gpu, s: Nchw, dy: &Tensor, dx: &Tensor, accumulate: bool) -> Result<Dispatch, GpuError> {
    let params = ResampleParams::avg_pool2x2(s, accumulate);
    let n = s.numel();
    dispatch(gpu, "avg_pool2x2_bwd", &params, n, (dy, s.scaled(1, 2)), (dx, n))
}

/// x [n, c, hw] -> channels [c_off, c_off + c) of y [n, c_total, hw].
pub fn copy_channels(gpu: &Gpu, s: ChannelSlice, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    s.check();
    let n = s.n * s.c * s.hw;
    let total = s.n * s.c_total * s.hw;
    dispatch(
        gpu,
        "copy_channels",
        &ResampleParams::channels(s, false),
        n,
        (x, n),
        (y, total),
    )
}

/// Adjoint of [`copy_channels`]: dx [n, c, hw] (+)= channels [c_off, c_off + c) of dy [n, c_total, hw].
pub fn slice_channels(
    gpu: &Gpu,
    s: ChannelSlice,
    dy: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<Dispatch, GpuError> {
    s.check();
    let n = s.n * s.c * s.hw;
    let total = s.n * s.c_total * s.hw;
    let params = ResampleParams::channels(s, accumulate);
    dispatch(gpu, "slice_channels", &params, n, (dy, total), (dx, n))
}

/// y [n, ca + cb, hw] = cat([a [n, ca, hw], b [n, cb, hw]], channels), one dispatch.
pub fn concat_channels(gpu: &Gpu, s: Concat, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    check_len("concat_channels a", a, s.n * s.ca * s.hw)?;
    check_len("concat_channels b", b, s.n * s.cb * s.hw)?;
    check_len("concat_channels output", y, s.numel())?;
    let u = gpu.uniform("concat_channels params", &s.params(0));
    Dispatch::typed(
        gpu,
        "concat_channels",
        &[("WG", WG as f64)],
        &ConcatChannels {
            p: &u,
            x: a,
            x2: b,
            y3: y,
        },
        dispatch_groups(s.numel(), WG),
    )
}

/// Adjoint of [`concat_channels`], one dispatch: da (+)= dy[:, :ca], db (+)=
/// dy[:, ca:], each adding into its target or overwriting it as its flag says.
pub fn split_channels(
    gpu: &Gpu,
    s: Concat,
    dy: &Tensor,
    (da, db): (&Tensor, &Tensor),
    (acc_a, acc_b): (bool, bool),
) -> Result<Dispatch, GpuError> {
    check_len("split_channels input", dy, s.numel())?;
    check_len("split_channels da", da, s.n * s.ca * s.hw)?;
    check_len("split_channels db", db, s.n * s.cb * s.hw)?;
    let acc = acc_a as u32 | (acc_b as u32) << 1;
    let u = gpu.uniform("split_channels params", &s.params(acc));
    Dispatch::typed(
        gpu,
        "split_channels",
        &[("WG", WG as f64)],
        &SplitChannels {
            p: &u,
            x: dy,
            y: da,
            y3: db,
        },
        dispatch_groups(s.numel(), WG),
    )
}
