//! Nearest-neighbour x2 upsampling and 2x2 average pooling: the same
//! bookkeeping around a different kernel pair, so one macro implements both.

use super::{Dataflow, Label, LayerKind, Sizes};
use crate::gpu::Dispatch;
use crate::kernels::resample::{avg_pool2x2, avg_pool2x2_bwd, upsample_nearest2x, upsample_nearest2x_bwd, Nchw};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;

/// Nearest-neighbour x2.
#[derive(Debug, Clone)]
pub struct Upsample {
    pub x: ActId,
    pub y: ActId,
}

/// 2x2 average pool, stride 2.
#[derive(Debug, Clone)]
pub struct AvgPool {
    pub x: ActId,
    pub y: ActId,
}

/// x's [n, c, h, w].
fn nchw(at: &Sizes, x: ActId) -> Nchw {
    let s = at.dims(x);
    Nchw {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
    }
}

macro_rules! resample_kind {
    ($kind:ident, $name:literal, $fwd:ident, $bwd:ident) => {
        impl LayerKind for $kind {
            fn dataflow(&self) -> Dataflow {
                Dataflow {
                    output: self.y,
                    inputs: vec![self.x],
                    saved_for_backward: vec![],
                    gradient_targets: vec![self.x],
                    residual_passthrough: None,
                }
            }

            trivial!(fits, flops, buffers, split_scratch_bytes);

            fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
                let s = nchw(at, self.x);
                Ok(vec![$fwd(ctx.gpu, s, &ctx.acts[self.x], &ctx.acts[self.y])?])
            }

            fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError> {
                let acc = state.take(self.x);
                let (dy, dx) = (ctx.grad(self.y), ctx.grad(self.x));
                Ok(vec![$bwd(ctx.gpu, nchw(at, self.x), dy, dx, acc)?])
            }

            fn label(&self, at: &Sizes) -> Label {
                Label {
                    kind: "resample",
                    text: format!(concat!($name, " at {}"), at.hw(self.x)),
                }
            }

            trivial!(bench_rows);
        }
    };
}

resample_kind!(Upsample, "upsample", upsample_nearest2x, upsample_nearest2x_bwd);
resample_kind!(AvgPool, "avgpool", avg_pool2x2, avg_pool2x2_bwd);
