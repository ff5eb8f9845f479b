//! Multi-head self-attention over the pixels of an image activation.

use serde_json::json;

use super::{BenchRow, Buffers, Dataflow, Flops, Label, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::attention::{attention, attention_bwd, AttentionGrads, AttentionShape};
use crate::tensor::{DType, Tensor};
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::{ActId, QkvOrder};
use crate::unet::memory::OwnBuffer;

/// y [N, C, T] = softmax(scale_q q^T . scale_k k) v per head, from qkv [N, 3C, T].
#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: ActId,
    pub y: ActId,
    pub heads: usize,
    pub ch: usize,
    pub order: QkvOrder,
    pub scale_q: f32,
    pub scale_k: f32,
}

impl Attention {
    pub fn shape(&self, at: &Sizes) -> AttentionShape {
        let qs = at.dims(self.qkv);
        AttentionShape {
            n: at.n,
            heads: self.heads,
            ch: self.ch,
            t: qs[2] * qs[3],
            split_order: self.order == QkvOrder::Split,
            scale_q: self.scale_q,
            scale_k: self.scale_k,
        }
    }

    /// The backward pass's per-(sample, head, query) row sums D, f32.
    fn dsum_bytes(&self, at: &Sizes) -> u64 {
        let s = self.shape(at);
        (s.n * s.heads * s.t * 4) as u64
    }
}

impl LayerKind for Attention {
    fn dataflow(&self) -> Dataflow {
        Dataflow {
            output: self.y,
            inputs: vec![self.qkv],
            saved_for_backward: vec![self.qkv, self.y],
            gradient_targets: vec![self.qkv],
            residual_passthrough: None,
        }
    }

    fn fits(&self, at: &Sizes) -> bool {
        let (ys, s) = (at.dims(self.y), self.shape(at));
        [ys[1], ys[2] * ys[3]] == [s.heads * s.ch, s.t]
    }

    /// q^T k and (softmax) v: two products of t x t x heads x ch. The
    /// profile counts the backward as memory-bound.
    fn flops(&self, at: &Sizes) -> Flops {
        let t = at.dims(self.y)[2..].iter().product::<usize>() as f64;
        Flops {
            forward: 4.0 * at.n as f64 * t * t * (self.heads * self.ch) as f64,
            backward: 0.0,
        }
    }

    fn buffers(&self, at: &Sizes) -> Buffers {
        let s = self.shape(at);
        Buffers {
            saved: Some(("attention lse", vec![s.n, s.heads, s.t])),
            forward: vec![],
            backward: vec![OwnBuffer::new("attention bwd D", self.dsum_bytes(at))],
        }
    }

    trivial!(split_scratch_bytes);

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
        let lse = ctx.saved.expect("the forward plan allocates what `saved` asks for");
        let acts = ctx.acts;
        Ok(vec![attention(
            ctx.gpu,
            &self.shape(at),
            &acts[self.qkv],
            &acts[self.y],
            lse,
        )?])
    }

    fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError> {
        let lse = ctx.saved.expect("attention keeps its log-sum-exps");
        let acts = ctx.acts;
        let dsum = ctx.gpu.storage_buffer("attention bwd D", self.dsum_bytes(at))?;
        let dsum_t = Tensor::wrap(dsum.clone(), &[self.dsum_bytes(at) as usize / 4]);
        let accumulate = state.take(self.qkv);
        let ds = attention_bwd(
            ctx.gpu,
            &self.shape(at),
            &AttentionGrads {
                qkv: &acts[self.qkv],
                y: &acts[self.y],
                lse,
                dy: ctx.grad(self.y),
                dsum: &dsum_t,
                dqkv: ctx.grad(self.qkv),
                accumulate,
            },
        )?;
        state.scratch.push(dsum);
        Ok(ds.into())
    }

    fn label(&self, at: &Sizes) -> Label {
        Label {
            kind: "attention",
            text: format!("attention {}x{} at {}", self.heads, self.ch, at.hw(self.y)),
        }
    }

    fn bench_rows(&self, _: &Gpu, _: DType, at: &Sizes, fwd: &Plan, bwd: Option<&Plan>) -> Vec<BenchRow> {
        let s = self.shape(at);
        let flops = self.flops(at).forward;
        let shape = json!({"op": "attention", "n": s.n, "heads": s.heads, "ch": s.ch, "t": s.t});
        let fwd_row = BenchRow {
            flops,
            ..BenchRow::layer(
                format!("attention {}x{} at t={}", s.heads, s.ch, s.t),
                "attention",
                fwd,
                shape.clone(),
            )
        };
        let bwd_row = bwd.map(|p| BenchRow {
            flops: 2.0 * flops,
            ..BenchRow::layer(
                format!("attention_bwd {}x{} at t={}", s.heads, s.ch, s.t),
                "attention_bwd",
                p,
                shape,
            )
        });
        std::iter::once(fwd_row).chain(bwd_row).collect()
    }
}
