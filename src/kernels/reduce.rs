//! `shaders/reduce.wgsl`: batched dot products and norms, two-level reduction,
//! result kept on the GPU.

use crate::bindings;
use crate::gpu::{Bindings, Dispatch, Gpu, GpuError, KernelSig, Plan, REDUCE};
use crate::tensor::Tensor;

bindings! {
    /// Per-workgroup partial dot products of x and y.
    pub struct DotPartial for REDUCE: ["dot_partial"] {
        p: uniform,
        x: read f32,
        y: read f32,
        partial: read_write f32,
    }
    /// The partials summed per sample (square-rooted for norms).
    pub struct DotFinish for REDUCE: ["dot_finish"] {
        q: uniform,
        parts: read f32,
        out: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[DotPartial::SIG, DotFinish::SIG];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReduceParams {
    pub per: u32,
    pub chunks: u32,
    pub take_sqrt: u32,
    pub _pad: u32,
}

impl ReduceParams {
    /// Dot products over samples of `per` elements, `CHUNK` per workgroup.
    pub fn new(per: usize, take_sqrt: bool) -> ReduceParams {
        ReduceParams {
            per: per as u32,
            chunks: per.div_ceil(CHUNK).max(1) as u32,
            take_sqrt: take_sqrt as u32,
            _pad: 0,
        }
    }
}

/// Elements one `dot_partial` workgroup reduces (mirrors `CHUNK` in the WGSL).
pub const CHUNK: usize = 1024;

/// out[n] = <x[n], y[n]> (or sqrt of it, for norms) for x, y viewed as [N, per].
pub struct BatchedDot {
    pub out: Tensor,
    pub plan: Plan,
    _partial: wgpu::Buffer,
}

impl BatchedDot {
    pub fn new(gpu: &Gpu, x: &Tensor, y: &Tensor, batch: usize, take_sqrt: bool) -> Result<BatchedDot, GpuError> {
        if x.numel() != y.numel() || batch == 0 || x.numel() % batch != 0 {
            return Err(GpuError::Shape {
                what: "batched dot".into(),
                expected: x.shape.clone(),
                got: y.shape.clone(),
            });
        }
        let per = x.numel() / batch;
        let chunks = per.div_ceil(CHUNK).max(1);
        let partial = gpu.storage_buffer("dot partials", (batch * chunks * 4) as u64)?;
        let out = Tensor::zeros(gpu, "dot out", &[batch])?;
        let params = gpu.uniform("reduce params", &ReduceParams::new(per, take_sqrt));
        let mut plan = Plan::new();
        plan.push(Dispatch::typed(
            gpu,
            "dot_partial",
            &[],
            &DotPartial {
                p: &params,
                x,
                y,
                partial: &partial,
            },
            [chunks as u32, batch as u32, 1],
        )?);
        plan.push(Dispatch::typed(
            gpu,
            "dot_finish",
            &[],
            &DotFinish {
                q: &params,
                parts: &partial,
                out: &out,
            },
            [batch as u32, 1, 1],
        )?);
        Ok(BatchedDot {
            out,
            plan,
            _partial: partial,
        })
    }
}
