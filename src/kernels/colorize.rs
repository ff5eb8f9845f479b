//! `shaders/colorize.wgsl`: scaled channel sum [N, C, HW] -> [N, 1, HW] and
//! its transpose (broadcast back over channels).

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, COLORIZE, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ColorizeParams {
    pub batch: u32,
    pub hw: u32,
    pub channels: u32,
    pub scale: f32,
}

bindings! {
    /// `gray_fwd` (channel sum) and `gray_adj` (broadcast back).
    pub struct Gray for COLORIZE: ["gray_fwd", "gray_adj"] {
        p: uniform,
        src: read f32,
        dst: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Gray::SIG];

/// `batch` images of `channels` colour planes of `hw` pixels each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColorShape {
    pub batch: usize,
    pub channels: usize,
    pub hw: usize,
}

impl ColorizeParams {
    pub fn new(s: ColorShape, scale: f32) -> ColorizeParams {
        ColorizeParams {
            batch: s.batch as u32,
            hw: s.hw as u32,
            channels: s.channels as u32,
            scale,
        }
    }
}

/// Plans `gray = scale * sum_c color` (`transpose` false) or
/// `color_c = scale * gray` (`transpose` true).
pub fn gray(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    shape: ColorShape,
    scale: f32,
    transpose: bool,
) -> Result<Dispatch, GpuError> {
    let ColorShape { batch, channels, hw } = shape;
    let (n_src, n_dst) = if transpose {
        (batch * hw, batch * channels * hw)
    } else {
        (batch * channels * hw, batch * hw)
    };
    if src.numel() != n_src || dst.numel() != n_dst {
        return Err(GpuError::Shape {
            what: "colorize gray".into(),
            expected: vec![n_src, n_dst],
            got: vec![src.numel(), dst.numel()],
        });
    }
    let params = ColorizeParams::new(shape, scale);
    let ubuf = gpu.uniform("colorize params", &params);
    let entry = if transpose { "gray_adj" } else { "gray_fwd" };
    Dispatch::typed(
        gpu,
        entry,
        &[],
        &Gray { p: &ubuf, src, dst },
        dispatch_groups(n_dst, WG1D),
    )
}
