//! GroupNorm, with SiLU and the scale-shift of a time embedding fused in.

use serde_json::json;

use super::{BenchRow, Buffers, Dataflow, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::groupnorm::{
    group_norm_bwd_onepass, group_norm_onepass, GroupNormAffine, GroupNormGrad, GroupNormShape,
};
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::weights::Weights;

/// y = silu?( GN(x) [* (1 + scale) + shift] ), scale/shift = halves of `scale_shift` [N, 2C].
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub x: ActId,
    pub y: ActId,
    pub gamma: String,
    pub beta: String,
    pub c: usize,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
    pub scale_shift: Option<ActId>,
}

impl GroupNorm {
    pub fn shape(&self, at: &Sizes) -> GroupNormShape {
        let xs = at.dims(self.x);
        GroupNormShape {
            n: at.n,
            c: self.c,
            hw: xs[2] * xs[3],
            groups: self.groups,
            eps: self.eps,
        }
    }
}

impl GroupNorm {
    /// Its gamma, beta (one parameter group), scale-shift and SiLU.
    fn affine<'a>(&self, w: &'a Weights, acts: &'a [Tensor]) -> GroupNormAffine<'a> {
        let (weights, gamma_off) = w.get(&self.gamma);
        let (_, beta_off) = w.get(&self.beta);
        GroupNormAffine {
            weights,
            gamma_off,
            beta_off,
            scale_shift: self.scale_shift.map(|e| (&acts[e], 0)),
            silu: self.silu,
        }
    }
}

impl LayerKind for GroupNorm {
    fn dataflow(&self) -> Dataflow {
        let inputs: Vec<ActId> = std::iter::once(self.x).chain(self.scale_shift).collect();
        Dataflow {
            output: self.y,
            saved_for_backward: inputs.clone(),
            inputs,
            // The scale-shift is the time embedding, which does not depend on x.
            gradient_targets: vec![self.x],
            residual_passthrough: None,
        }
    }

    fn fits(&self, at: &Sizes) -> bool {
        let (ys, s) = (at.dims(self.y), self.shape(at));
        ys[1] * ys[2] * ys[3] == s.c * s.hw
    }

    trivial!(flops);

    fn buffers(&self, at: &Sizes) -> Buffers {
        let s = self.shape(at);
        Buffers {
            saved: Some(("groupnorm stats", vec![s.n, s.groups, 2])),
            ..Buffers::NONE
        }
    }

    trivial!(split_scratch_bytes);

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
        let stats = ctx.saved.expect("the forward plan allocates what `saved` asks for");
        let (wb2, _) = ctx.weights.get(&self.beta);
        let a = self.affine(ctx.weights, ctx.acts);
        assert!(std::ptr::eq(a.weights, wb2), "gamma and beta share a parameter group");
        let (x, y) = (&ctx.acts[self.x], &ctx.acts[self.y]);
        Ok(vec![group_norm_onepass(
            ctx.gpu,
            &self.shape(at),
            x,
            stats,
            &a,
            y,
            ctx.dummy,
        )?])
    }

    fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError> {
        let stats = ctx.saved.expect("GroupNorm keeps its statistics");
        let a = self.affine(ctx.weights, ctx.acts);
        let g = GroupNormGrad {
            dy: ctx.grad(self.y),
            dx: ctx.grad(self.x),
            accumulate: state.take(self.x),
        };
        let x = &ctx.acts[self.x];
        Ok(vec![group_norm_bwd_onepass(
            ctx.gpu,
            &self.shape(at),
            x,
            stats,
            &a,
            &g,
            ctx.dummy,
        )?])
    }

    fn label(&self, at: &Sizes) -> Label {
        Label {
            kind: "groupnorm",
            text: format!(
                "groupnorm {} at {}{}{}",
                self.c,
                at.hw(self.x),
                if self.scale_shift.is_some() {
                    " +scale-shift"
                } else {
                    ""
                },
                if self.silu { " +silu" } else { "" }
            ),
        }
    }

    fn bench_rows(&self, _: &Gpu, dt: DType, at: &Sizes, fwd: &Plan, _: Option<&Plan>) -> Vec<BenchRow> {
        let s = self.shape(at);
        let (silu, ss) = (self.silu, self.scale_shift.is_some());
        let side = (s.hw as f64).sqrt() as usize;
        let name = format!(
            "groupnorm {}/{} at {side}x{side}{}{}",
            s.c,
            s.groups,
            if ss { " ss" } else { "" },
            if silu { " silu" } else { "" }
        );
        let shape = json!({"op": "groupnorm", "n": s.n, "c": s.c, "hw": s.hw, "groups": s.groups,
            "silu": silu, "scale_shift": ss});
        vec![BenchRow {
            // One pass: x read twice for the statistics, once more for the
            // normalisation, y written.
            bytes: 4.0 * (s.n * s.c * s.hw) as f64 * dt.size_bytes() as f64,
            ..BenchRow::layer(name, "groupnorm", fwd, shape)
        }]
    }
}
