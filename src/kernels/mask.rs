//! `shaders/mask.wgsl`: y = mask (.) x with one [H, W] mask broadcast over
//! samples and channels.

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, MASK, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MaskParams {
    pub n: u32,
    pub per: u32,
    pub _pad: [u32; 2],
}

impl MaskParams {
    /// `n` elements masked by a pattern of `per` values.
    pub fn new(n: usize, per: usize) -> MaskParams {
        MaskParams {
            n: n as u32,
            per: per as u32,
            _pad: [0; 2],
        }
    }
}

/// Plans `y = mask (.) x`; `mask` holds `per` values repeated over x.
pub fn mask_apply(gpu: &Gpu, mask: &wgpu::Buffer, per: usize, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
    let n = x.numel();
    if per == 0 || n % per != 0 || y.numel() != n {
        return Err(GpuError::Shape {
            what: "mask_apply".into(),
            expected: x.shape.clone(),
            got: y.shape.clone(),
        });
    }
    let ubuf = gpu.uniform("mask params", &MaskParams::new(n, per));
    Dispatch::new(
        gpu,
        &MASK,
        "mask_apply",
        &[],
        &[&ubuf, mask, &x.buffer, &y.buffer],
        dispatch_groups(n, WG1D),
    )
}
