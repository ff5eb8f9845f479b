//! 2-D convolutions (and the 1x1 projections of attention blocks), with the
//! bias, a residual and an output scale fused into the epilogue.

use serde_json::json;

use super::{BenchRow, Dataflow, Flops, Label, Layer, LayerKind, Sizes};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::kernels::conv2d::{conv2d, conv2d_bwd_data, Conv2dShape, ConvBackward, ConvForward, ConvResidual};
use crate::kernels::conv_choice::{self, ConvPass};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::tensor::DType;
use crate::unet::backward::{GradCtx, GradState};
use crate::unet::forward::{ForwardCtx, ForwardError};
use crate::unet::graph::{ActId, Graph, Residual};
use crate::unet::memory::PlanKind;

/// y = (conv(x, W) + b + residual) * out_scale; padding [top, left, bottom, right].
#[derive(Debug, Clone)]
pub struct Conv {
    pub x: ActId,
    pub y: ActId,
    pub w: String,
    pub b: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: [usize; 4],
    pub res: Residual,
    pub out_scale: f32,
}

impl Conv {
    /// The kernel's shape at `at`.
    pub fn shape(&self, at: &Sizes) -> Conv2dShape {
        let xs = at.dims(self.x);
        Conv2dShape {
            n: at.n,
            cin: self.cin,
            h: xs[2],
            w: xs[3],
            cout: self.cout,
            ks: self.k,
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// y's planned (h, w), which the kernel's `out_hw()` must match.
    fn planned_out(&self, at: &Sizes) -> (usize, usize) {
        let ys = at.dims(self.y);
        (ys[2], ys[3])
    }

    fn passes(kind: PlanKind) -> &'static [ConvPass] {
        match kind {
            PlanKind::Forward => &[ConvPass::Forward],
            PlanKind::ForwardVjp => &[ConvPass::Forward, ConvPass::BwdData],
        }
    }
}

impl Graph {
    /// Every convolution's shape for `n` images of `h` x `w`, in layer order
    /// (what kernel choice and tuning run).
    pub fn conv_shapes(&self, n: usize, h: usize, w: usize) -> Vec<Conv2dShape> {
        let at = Sizes::of_graph(self, n, h, w);
        let conv = |l: &Layer| {
            if let Layer::Conv(c) = l {
                Some(c.shape(&at))
            } else {
                None
            }
        };
        self.layers.iter().filter_map(conv).collect()
    }
}

impl LayerKind for Conv {
    fn dataflow(&self) -> Dataflow {
        let (x, out_scale) = (self.x, self.out_scale);
        let (inputs, gradient_targets, residual_passthrough) = match self.res {
            Residual::None => (vec![x], vec![x], None),
            // A channel residual is the time embedding, which does not depend on x.
            Residual::Channel(r) => (vec![x, r], vec![x], None),
            Residual::Full(r) => (vec![x, r], vec![x, r], (out_scale == 1.0 && r != x).then_some(r)),
        };
        Dataflow {
            output: self.y,
            inputs,
            // The input gradient needs only the weights and dy.
            saved_for_backward: vec![],
            gradient_targets,
            residual_passthrough,
        }
    }

    fn fits(&self, at: &Sizes) -> bool {
        self.shape(at).out_hw() == self.planned_out(at)
    }

    /// The input gradient is a transposed convolution of the same size.
    fn flops(&self, at: &Sizes) -> Flops {
        let f = 2.0 * (self.cin * self.cout * self.k * self.k) as f64 * at.pixels(self.y);
        Flops {
            forward: f,
            backward: f,
        }
    }

    trivial!(buffers);

    fn split_scratch_bytes(&self, gpu: &Gpu, at: &Sizes, kind: PlanKind, dt: DType) -> u64 {
        let s = self.shape(at);
        Self::passes(kind)
            .iter()
            .map(|&pass| {
                let (m, p, k) = pass.gemm(&s);
                conv_choice::choose(gpu, pass, &s, dt).scratch_bytes(m, p, k)
            })
            .max()
            .unwrap_or(0)
    }

    fn forward(&self, ctx: &ForwardCtx, at: &Sizes, _: &mut Vec<wgpu::Buffer>) -> Result<Vec<Dispatch>, ForwardError> {
        let (gpu, dt, acts) = (ctx.gpu, ctx.dt, ctx.acts);
        let s = self.shape(at);
        let kernel = conv_choice::choose(gpu, ConvPass::Forward, &s, dt);
        let r = match self.res {
            Residual::None => ConvResidual::None,
            Residual::Full(a) => ConvResidual::Full(&acts[a].buffer, 0),
            Residual::Channel(a) => ConvResidual::Channel(&acts[a].buffer, 0, acts[a].shape[1]),
        };
        let op = ConvForward {
            x: &acts[self.x],
            w: ctx.weights.get(&self.w),
            b: ctx.weights.get(&self.b),
            res: r,
            out_scale: self.out_scale,
            y: &acts[self.y],
            dummy: ctx.dummy,
            scratch: ctx.split_scratch,
        };
        Ok(conv2d(gpu, &kernel, &s, &op)?)
    }

    fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError> {
        let (gpu, dt) = (ctx.gpu, ctx.dt);
        let s = self.shape(at);
        let acc = state.take(self.x);
        let kernel = conv_choice::choose(gpu, ConvPass::BwdData, &s, dt);
        let op = ConvBackward {
            dy: ctx.grad(self.y),
            w: ctx.weights.get(&self.w),
            scale: self.out_scale,
            accumulate: acc,
            dx: ctx.grad(self.x),
            scratch: ctx.split_scratch,
        };
        let mut ds = conv2d_bwd_data(gpu, &kernel, &s, &op)?;
        if let (Residual::Full(r), true) = (self.res, ctx.residual_alias) {
            // d r = dy, in dy's own buffer (the memory plan shares it).
            assert!(!state.take(r), "an aliased residual gradient is its first contribution");
        } else if let Residual::Full(r) = self.res {
            let (dy, dr) = (ctx.grad(self.y), ctx.grad(r));
            let e = if state.take(r) {
                Elementwise::new(gpu, Op::Axpby, dy, dr, self.out_scale, 1.0)?
            } else {
                Elementwise::new(gpu, Op::Affine, dy, dr, self.out_scale, 0.0)?
            };
            ds.push(e.dispatch);
        }
        Ok(ds)
    }

    fn label(&self, at: &Sizes) -> Label {
        let (k, stride, cin, cout) = (self.k, self.stride, self.cin, self.cout);
        Label {
            kind: "conv",
            text: format!("conv {k}x{k}/{stride} {cin}->{cout} at {} ({})", at.hw(self.x), self.w),
        }
    }

    fn bench_rows(&self, gpu: &Gpu, dt: DType, at: &Sizes, fwd: &Plan, bwd: Option<&Plan>) -> Vec<BenchRow> {
        let s = self.shape(at);
        let shape = json!({"op": "conv", "n": s.n, "cin": s.cin, "h": s.h, "w": s.w,
            "cout": s.cout, "k": s.ks, "stride": s.stride, "pad": s.pad});
        let row = |pass: ConvPass, plan: &Plan| {
            let kind = if pass == ConvPass::Forward { "conv" } else { "conv_bwd" };
            BenchRow {
                flops: self.flops(at).forward,
                kernel: Some(conv_choice::choose(gpu, pass, &s, dt).describe()),
                ..BenchRow::layer(conv_name(kind, &s), kind, plan, shape.clone())
            }
        };
        std::iter::once(row(ConvPass::Forward, fwd))
            .chain(bwd.map(|p| row(ConvPass::BwdData, p)))
            .collect()
    }
}

/// A convolution's row name in `tweedie bench` (layer rows and tuning records).
pub fn conv_name(prefix: &str, s: &Conv2dShape) -> String {
    format!(
        "{prefix} {k}x{k}/{st} {cin}->{cout} at {h}x{w}",
        k = s.ks,
        st = s.stride,
        cin = s.cin,
        cout = s.cout,
        h = s.h,
        w = s.w
    )
}
