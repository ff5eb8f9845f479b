//! `shaders/conv_reflect.wgsl`: depthwise 2-D correlation with a reflect
//! boundary (torch `ReflectionPad2d` + `conv2d`) and its exact adjoint.

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, CONV_REFLECT, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub planes: u32,
    pub h: u32,
    pub w: u32,
    pub kh: u32,
    pub kw: u32,
    pub rh: u32,
    pub rw: u32,
    pub _pad: u32,
}

/// Taps on the GPU: `kh x kw` values, tap (`rh`, `rw`) sits on the output pixel.
pub struct ConvTaps {
    pub buffer: wgpu::Buffer,
    pub kh: usize,
    pub kw: usize,
    pub rh: usize,
    pub rw: usize,
}

impl ConvTaps {
    pub fn new(gpu: &Gpu, label: &str, taps: &[f32], kh: usize, kw: usize, rh: usize, rw: usize) -> Result<ConvTaps, GpuError> {
        assert!(taps.len() == kh * kw && rh < kh && rw < kw, "conv taps layout");
        Ok(ConvTaps { buffer: gpu.upload(label, taps)?, kh, kw, rh, rw })
    }

    /// The farthest a tap reaches from the output pixel along h and w.
    pub fn reach(&self) -> (usize, usize) {
        (self.rh.max(self.kh - 1 - self.rh), self.rw.max(self.kw - 1 - self.rw))
    }
}

/// Plans `dst = conv(src)` (`adjoint` false) or its adjoint, over
/// [planes, h, w] tensors of the same shape.
pub fn conv_reflect(
    gpu: &Gpu,
    taps: &ConvTaps,
    src: &Tensor,
    dst: &Tensor,
    planes: usize,
    h: usize,
    w: usize,
    adjoint: bool,
) -> Result<Dispatch, GpuError> {
    let n = planes * h * w;
    if src.numel() != n || dst.numel() != n {
        return Err(GpuError::Shape { what: "conv_reflect".into(), expected: vec![planes, h, w], got: src.shape.clone() });
    }
    let (ah, aw) = taps.reach();
    // One reflection must suffice (the operator refuses such sizes first).
    assert!(ah < h && aw < w, "conv_reflect reach ({ah}, {aw}) must be below the image side ({h}, {w})");
    let params = ConvParams {
        planes: planes as u32,
        h: h as u32,
        w: w as u32,
        kh: taps.kh as u32,
        kw: taps.kw as u32,
        rh: taps.rh as u32,
        rw: taps.rw as u32,
        _pad: 0,
    };
    let ubuf = gpu.uniform("conv_reflect params", &params);
    let entry = if adjoint { "conv_adj" } else { "conv_fwd" };
    Dispatch::new(gpu, &CONV_REFLECT, entry, &[], &[&ubuf, &taps.buffer, &src.buffer, &dst.buffer], dispatch_groups(n, WG1D))
}
