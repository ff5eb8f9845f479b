//! Dense layers of the time embedding.

use serde_json::json;

use super::{BenchRow, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::linear::linear;
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::memory::{OwnBuffer, PlanKind};

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
    fn output(&self) -> ActId {
        self.y
    }

    fn inputs(&self) -> Vec<ActId> {
        vec![self.x]
    }

    fn saved_for_backward(&self) -> Vec<ActId> {
        vec![]
    }

    /// Linear layers act on the time embedding only, which does not depend on x.
    fn gradient_targets(&self) -> Vec<ActId> {
        vec![]
    }

    fn residual_passthrough(&self) -> Option<ActId> {
        None
    }

    fn fits(&self, _: &Sizes) -> bool {
        true
    }

    fn flops(&self, at: &Sizes) -> f64 {
        2.0 * (self.din * self.dout * at.n) as f64
    }

    fn backward_flops(&self, _: &Sizes) -> f64 {
        0.0
    }

    fn saved(&self, _: &Sizes) -> Option<(&'static str, Vec<usize>)> {
        None
    }

    fn forward_buffers(&self, _: &Sizes) -> Vec<OwnBuffer> {
        vec![]
    }

    fn backward_buffers(&self, _: &Sizes) -> Vec<OwnBuffer> {
        vec![]
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
        Ok(vec![linear(
            ctx.gpu,
            ctx.dt,
            at.n,
            self.din,
            self.dout,
            &ctx.acts[self.x].buffer,
            ctx.weights.get(&self.w),
            ctx.weights.get(&self.b),
            self.silu_in,
            self.silu_out,
            &ctx.acts[self.y].buffer,
        )?])
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
            flops: self.flops(at),
            ..BenchRow::layer(format!("linear {din}->{dout}"), "linear", fwd, shape)
        }]
    }
}
