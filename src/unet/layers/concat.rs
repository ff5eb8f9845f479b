//! Channel concatenation of a skip connection with the decoder's tensor.

use super::{Dataflow, Label, LayerKind, Sizes};
use crate::gpu::Dispatch;
use crate::kernels::resample::{concat_channels, split_channels, Concat as ConcatShape};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;

/// y = cat([a, b], channels).
#[derive(Debug, Clone)]
pub struct Concat {
    pub a: ActId,
    pub b: ActId,
    pub y: ActId,
}

impl Concat {
    /// a [n, ca, hw] and b [n, cb, hw] -> y [n, ca + cb, hw].
    fn shape(&self, at: &Sizes) -> ConcatShape {
        let (sa, sb) = (at.dims(self.a), at.dims(self.b));
        ConcatShape {
            n: at.n,
            ca: sa[1],
            cb: sb[1],
            hw: sa[2] * sa[3],
        }
    }
}

impl LayerKind for Concat {
    fn dataflow(&self) -> Dataflow {
        Dataflow {
            output: self.y,
            inputs: vec![self.a, self.b],
            saved_for_backward: vec![],
            gradient_targets: vec![self.a, self.b],
            residual_passthrough: None,
        }
    }

    fn fits(&self, at: &Sizes) -> bool {
        let (ys, s) = (at.dims(self.y), self.shape(at));
        [ys[1], ys[2] * ys[3]] == [s.ca + s.cb, s.hw]
    }

    trivial!(flops, buffers, split_scratch_bytes);

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
        let acts = ctx.acts;
        let s = self.shape(at);
        Ok(vec![concat_channels(
            ctx.gpu,
            s,
            &acts[self.a],
            &acts[self.b],
            &acts[self.y],
        )?])
    }

    fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError> {
        let acc = (state.take(self.a), state.take(self.b));
        let (da, db) = (ctx.grad(self.a), ctx.grad(self.b));
        Ok(vec![split_channels(
            ctx.gpu,
            self.shape(at),
            ctx.grad(self.y),
            (da, db),
            acc,
        )?])
    }

    fn label(&self, at: &Sizes) -> Label {
        Label {
            kind: "concat",
            text: format!("concat at {}", at.hw(self.y)),
        }
    }

    trivial!(bench_rows);
}
