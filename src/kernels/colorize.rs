//! `shaders/colorize.wgsl`: scaled channel sum [N, C, HW] -> [N, 1, HW] and
//! its transpose (broadcast back over channels).

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, COLORIZE, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ColorizeParams {
    pub batch: u32,
    pub hw: u32,
    pub channels: u32,
    pub scale: f32,
}

/// Plans `gray = scale * sum_c color` (`transpose` false) or
/// `color_c = scale * gray` (`transpose` true).
#[allow(clippy::too_many_arguments)]
pub fn gray(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    batch: usize,
    channels: usize,
    hw: usize,
    scale: f32,
    transpose: bool,
) -> Result<Dispatch, GpuError> {
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
    let params = ColorizeParams {
        batch: batch as u32,
        hw: hw as u32,
        channels: channels as u32,
        scale,
    };
    let ubuf = gpu.uniform("colorize params", &params);
    let entry = if transpose { "gray_adj" } else { "gray_fwd" };
    Dispatch::new(
        gpu,
        &COLORIZE,
        entry,
        &[],
        &[&ubuf, &src.buffer, &dst.buffer],
        dispatch_groups(n_dst, WG1D),
    )
}
