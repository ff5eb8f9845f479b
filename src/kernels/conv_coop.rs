//! `shaders/conv2d_coop.wgsl`: the convolution GEMMs on tensor cores through
//! wgpu's experimental cooperative matrices (f16 operands, f32 sums,
//! 16x16x16 fragments). The parameters, bindings and split-K fix-up are the
//! SIMT kernel's ([`crate::kernels::conv2d`]); only the GEMM dispatch
//! differs. Chosen by [`crate::kernels::conv_choice`] only where the adapter
//! reports the configuration ([`supported`]).

use crate::gpu::{Dispatch, Gpu, GpuError, CONV2D_COOP};
use crate::kernels::conv2d::{splitk_fixup, Conv2dShape};
use crate::tensor::DType;

/// Output tile and K step of a workgroup (mirror `TM`, `TN`, `TK`).
pub const TM: u32 = 64;
pub const TN: u32 = 64;
pub const TK: u32 = 16;
/// Invocations per workgroup, and the subgroup size the quadrant layout
/// assumes (four subgroups of 32).
pub const WG: u32 = 128;
pub const SUBGROUP: u32 = 32;
/// Workgroup memory the kernel declares: W and gather slices in f16, the
/// f32 output tile.
pub const WORKGROUP_BYTES: u32 = (1536 + 1152) * 2 + 4096 * 4;

/// Why the cooperative path cannot run on this adapter, or `None` when it can:
/// the feature, a 16x16x16 f16 x f16 -> f32 configuration, shader-f16,
/// subgroups of exactly 32 and the workgroup memory.
pub fn unsupported(gpu: &Gpu) -> Option<String> {
    if let Some(why) = gpu.f16_cooperative_matrix_missing() {
        return Some(why);
    }
    let (lo, hi) = (gpu.info.subgroup_min_size, gpu.info.subgroup_max_size);
    if (lo, hi) != (SUBGROUP, SUBGROUP) {
        return Some(format!("subgroups of {lo}..{hi} invocations, not exactly {SUBGROUP}"));
    }
    if gpu.limits.max_compute_workgroup_storage_size < WORKGROUP_BYTES {
        return Some(format!(
            "{} bytes of workgroup memory, the kernel needs {WORKGROUP_BYTES}",
            gpu.limits.max_compute_workgroup_storage_size
        ));
    }
    None
}

pub fn supported(gpu: &Gpu) -> bool {
    unsupported(gpu).is_none()
}

fn check(gpu: &Gpu) -> Result<(), GpuError> {
    match unsupported(gpu) {
        None => Ok(()),
        Some(why) => Err(GpuError::Other(format!("cooperative-matrix convolution: {why}"))),
    }
}

/// The forward GEMM (and the SIMT kernel's fix-up when split); `u` holds
/// [`crate::kernels::conv2d::Conv2dParams`] with the split already set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    gpu: &Gpu,
    dtype: DType,
    s: &Conv2dShape,
    u: &wgpu::Buffer,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    b: &wgpu::Buffer,
    res: &wgpu::Buffer,
    y: &wgpu::Buffer,
    part: Option<&wgpu::Buffer>,
    splits: u32,
    pixels: usize,
) -> Result<Vec<Dispatch>, GpuError> {
    check(gpu)?;
    let groups = [(pixels as u32).div_ceil(TN), (s.cout as u32).div_ceil(TM), splits];
    let gemm = Dispatch::new(
        gpu,
        &CONV2D_COOP.typed(dtype),
        "conv2d_coop",
        &[],
        &[u, x, w, b, res, y, part.unwrap_or(y)],
        groups,
    )?;
    let mut out = vec![gemm];
    if let Some(part) = part {
        out.push(splitk_fixup(
            gpu,
            dtype,
            "conv2d_splitk",
            &[u, part, b, res, y],
            s.cout * pixels,
        )?);
    }
    Ok(out)
}

/// The backward-data GEMM (and the fix-up when split).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_data(
    gpu: &Gpu,
    dtype: DType,
    s: &Conv2dShape,
    u: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    part: Option<&wgpu::Buffer>,
    splits: u32,
    pixels: usize,
) -> Result<Vec<Dispatch>, GpuError> {
    check(gpu)?;
    let groups = [(pixels as u32).div_ceil(TN), (s.cin as u32).div_ceil(TM), splits];
    let gemm = Dispatch::new(
        gpu,
        &CONV2D_COOP.typed(dtype),
        "conv2d_coop_bwd_data",
        &[],
        &[u, dy, w, dx, part.unwrap_or(dx)],
        groups,
    )?;
    let mut out = vec![gemm];
    if let Some(part) = part {
        out.push(splitk_fixup(
            gpu,
            dtype,
            "conv2d_bwd_splitk",
            &[u, part, dx],
            s.cin * pixels,
        )?);
    }
    Ok(out)
}
