//! Sinusoidal embedding of the timesteps.

use super::{BenchRow, Buffers, Dataflow, Flops, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::timestep::{timestep_embedding, TimestepShape};
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::memory::{OwnBuffer, PlanKind};

/// t [N] -> y [N, dim]. `freqs` are computed on the host in f32 exactly as
/// upstream does.
#[derive(Debug, Clone)]
pub struct Timestep {
    pub y: ActId,
    pub dim: usize,
    pub cos_first: bool,
    pub freqs: Vec<f32>,
}

impl Timestep {
    /// The uploaded frequencies (one zero where there are none: a binding
    /// cannot be empty).
    fn freqs(&self) -> &[f32] {
        if self.freqs.is_empty() {
            &[0f32]
        } else {
            &self.freqs
        }
    }
}

impl LayerKind for Timestep {
    fn dataflow(&self) -> Dataflow {
        Dataflow {
            output: self.y,
            inputs: vec![],
            saved_for_backward: vec![],
            // The embedding depends on t only: no gradient flows through it.
            gradient_targets: vec![],
            residual_passthrough: None,
        }
    }

    fn fits(&self, _: &Sizes) -> bool {
        true
    }

    fn flops(&self, _: &Sizes) -> Flops {
        Flops::NONE
    }

    fn buffers(&self, _: &Sizes) -> Buffers {
        Buffers {
            forward: vec![OwnBuffer::new("timestep freqs", (self.freqs().len() * 4) as u64)],
            ..Buffers::NONE
        }
    }

    fn split_scratch_bytes(&self, _: &Gpu, _: &Sizes, _: PlanKind, _: DType) -> u64 {
        0
    }

    fn forward(
        &self,
        ctx: &ForwardCtx,
        at: &Sizes,
        _: Option<&Tensor>,
        keep: &mut Vec<wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        let f = self.freqs();
        let freqs = Tensor::from_slice(ctx.gpu, "timestep freqs", &[f.len()], f)?;
        let s = TimestepShape {
            n: at.n,
            dim: self.dim,
            cos_first: self.cos_first,
        };
        let d = timestep_embedding(ctx.gpu, &s, ctx.t, &freqs, &ctx.acts[self.y])?;
        keep.push(freqs.buffer);
        Ok(vec![d])
    }

    fn backward(
        &self,
        _: &GradCtx,
        _: &Sizes,
        _: Option<&Tensor>,
        _: bool,
        _: &mut GradState,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        Ok(vec![])
    }

    fn label(&self, _: &Sizes) -> Label {
        Label {
            kind: "timestep",
            text: format!("timestep embedding {}", self.dim),
        }
    }

    fn bench_rows(&self, _: &Gpu, _: DType, _: &Sizes, _: &Plan, _: Option<&Plan>) -> Vec<BenchRow> {
        vec![]
    }
}
