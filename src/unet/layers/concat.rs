//! Channel concatenation of a skip connection with the decoder's tensor.

use super::{BenchRow, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::resample::{concat_channels, split_channels};
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::ActId;
use crate::unet::memory::{OwnBuffer, PlanKind};

/// y = cat([a, b], channels).
#[derive(Debug, Clone)]
pub struct Concat {
    pub a: ActId,
    pub b: ActId,
    pub y: ActId,
}

impl Concat {
    /// (n, ca, cb, hw): a [n, ca, hw] and b [n, cb, hw] -> y [n, ca + cb, hw].
    fn sizes(&self, at: &Sizes) -> (usize, usize, usize, usize) {
        let (sa, sb) = (at.dims(self.a), at.dims(self.b));
        (at.n, sa[1], sb[1], sa[2] * sa[3])
    }
}

impl LayerKind for Concat {
    fn output(&self) -> ActId {
        self.y
    }

    fn inputs(&self) -> Vec<ActId> {
        vec![self.a, self.b]
    }

    fn saved_for_backward(&self) -> Vec<ActId> {
        vec![]
    }

    fn gradient_targets(&self) -> Vec<ActId> {
        vec![self.a, self.b]
    }

    fn residual_passthrough(&self) -> Option<ActId> {
        None
    }

    fn fits(&self, at: &Sizes) -> bool {
        let (ys, (_, ca, cb, hw)) = (at.dims(self.y), self.sizes(at));
        [ys[1], ys[2] * ys[3]] == [ca + cb, hw]
    }

    fn flops(&self, _: &Sizes) -> f64 {
        0.0
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
        let (n, ca, cb, hw) = self.sizes(at);
        let buf = |a: ActId| &ctx.acts[a].buffer;
        Ok(vec![concat_channels(
            ctx.gpu,
            ctx.dt,
            n,
            ca,
            cb,
            hw,
            buf(self.a),
            buf(self.b),
            buf(self.y),
        )?])
    }

    fn backward(
        &self,
        ctx: &GradCtx,
        at: &Sizes,
        _: Option<&Tensor>,
        _: bool,
        state: &mut GradState,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        let (n, ca, cb, hw) = self.sizes(at);
        let acc = (state.take(self.a), state.take(self.b));
        let gb = |a: ActId| &ctx.grad(a).buffer;
        Ok(vec![split_channels(
            ctx.gpu,
            ctx.dt,
            n,
            ca,
            cb,
            hw,
            gb(self.y),
            gb(self.a),
            gb(self.b),
            acc,
        )?])
    }

    fn label(&self, at: &Sizes) -> Label {
        Label {
            kind: "concat",
            text: format!("concat at {}", at.hw(self.y)),
        }
    }

    fn bench_rows(&self, _: &Gpu, _: DType, _: &Sizes, _: &Plan, _: Option<&Plan>) -> Vec<BenchRow> {
        vec![]
    }
}
