//! Dense layers of the time embedding.

use serde_json::json;

use super::{BenchRow, Buffers, Dataflow, Flops, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::linear::{linear, LinearShape};
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::memory::PlanKind;

/// y = act_out(W act_in(x) + b), W [dout, din].
#[derive(Debug, Clone)]
pub struct Linear {
    pub x: ActId,
    pub y: ActId,
    pub w: String,
    pub b: String,
    pub din: usize,
    pub dout: usize,
    pub silu_in: bool,
    pub silu_out: bool,
}

impl LayerKind for Linear {
    fn dataflow(&self) -> Dataflow {
        Dataflow {
            output: self.y,
            inputs: vec![self.x],
            saved_for_backward: vec![],
            // Linear layers act on the time embedding only, which does not depend on x.
            gradient_targets: vec![],
            residual_passthrough: None,
        }
    }

    fn fits(&self, _: &Sizes) -> bool {
        true
    }

    fn flops(&self, at: &Sizes) -> Flops {
        Flops {
            forward: 2.0 * (self.din * self.dout * at.n) as f64,
            backward: 0.0,
        }
    }

    fn buffers(&self, _: &Sizes) -> Buffers {
        Buffers::NONE
    }

    fn split_scratch_bytes(&self, _: &Gpu, _: &Sizes, _: PlanKind, _: DType) -> u64 {
        0
    }

    fn forward(
        &self,
        ctx: &ForwardCtx,
        at: &Sizes,
        _: Option<&Tensor>,
        _: &mut Vec<wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        let s = LinearShape {
            n: at.n,
            din: self.din,
            dout: self.dout,
            silu_in: self.silu_in,
            silu_out: self.silu_out,
        };
        let (w, b) = (ctx.weights.get(&self.w), ctx.weights.get(&self.b));
        Ok(vec![linear(ctx.gpu, &s, &ctx.acts[self.x], w, b, &ctx.acts[self.y])?])
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
            kind: "linear",
            text: format!("linear {}->{}", self.din, self.dout),
        }
    }

    fn bench_rows(&self, _: &Gpu, _: DType, at: &Sizes, fwd: &Plan, _: Option<&Plan>) -> Vec<BenchRow> {
        let (n, din, dout) = (at.n, self.din, self.dout);
        let shape = json!({"op": "linear", "n": n, "din": din, "dout": dout});
        vec![BenchRow {
            flops: self.flops(at).forward,
            ..BenchRow::layer(format!("linear {din}->{dout}"), "linear", fwd, shape)
        }]
    }
}
