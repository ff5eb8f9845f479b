//! Dense layers of the time embedding.

use serde_json::json;

use super::{BenchRow, Dataflow, Flops, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::linear::{linear, LinearShape};
use crate::tensor::DType;
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;

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

    trivial!(fits);

    fn flops(&self, at: &Sizes) -> Flops {
        Flops {
            forward: 2.0 * (self.din * self.dout * at.n) as f64,
            backward: 0.0,
        }
    }

    trivial!(buffers, split_scratch_bytes);

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
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

    trivial!(backward);

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
