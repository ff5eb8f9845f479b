//! Sinusoidal embedding of the timesteps.

use super::{Buffers, Dataflow, Label, LayerKind, Sizes};
use crate::gpu::Dispatch;
use crate::kernels::timestep::{timestep_embedding, TimestepShape};
use crate::tensor::Tensor;
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::memory::OwnBuffer;

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

    trivial!(fits, flops);

    fn buffers(&self, _: &Sizes) -> Buffers {
        Buffers {
            forward: vec![OwnBuffer::new("timestep freqs", (self.freqs().len() * 4) as u64)],
            ..Buffers::NONE
        }
    }

    trivial!(split_scratch_bytes);

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, keep: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
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

    trivial!(backward);

    fn label(&self, _: &Sizes) -> Label {
        Label {
            kind: "timestep",
            text: format!("timestep embedding {}", self.dim),
        }
    }

    trivial!(bench_rows);
}
