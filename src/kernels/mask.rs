//! `shaders/mask.wgsl`: y = mask (.) x with one [H, W] mask broadcast over
//! samples and channels.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, MASK, WG1D};
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

bindings! {
    /// `mask_apply`: y = mask (.) x.
    pub struct MaskApply for MASK: ["mask_apply"] {
        p: uniform,
        mask: read f32,
        x: read f32,
        y: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[MaskApply::SIG];

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
    Dispatch::typed(
        gpu,
        "mask_apply",
        &[],
        &MaskApply { p: &ubuf, mask, x, y },
        dispatch_groups(n, WG1D),
    )
}
