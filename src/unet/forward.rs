//! The forward plan: every buffer allocated once per (model, batch,
//! resolution, plan kind) as the [`MemoryPlan`] lays them out, every bind group
//! built once, the whole network recorded as one list of dispatches and
//! replayed into one encoder with one submission.
//!
//! Activations share pooled buffers once they are dead. A plan of kind
//! [`PlanKind::ForwardVjp`] keeps what the VJP reads (GroupNorm inputs and
//! statistics, attention inputs, outputs and log-sum-exps) and holds the
//! VJP's gradient buffers too, so the backward pass can walk `records` in
//! reverse over the saved values.

use thiserror::Error;

use super::graph::{Layer, Residual};
use super::memory::{buffer_bytes, MemoryPlan, OwnBuffer, PlanKind};
use super::shapes::LayerShape;
use super::weights::Weights;
use super::Unet;
use crate::gpu::{Dispatch, Gpu, GpuError, Plan};
use crate::kernels::attention::attention;
use crate::kernels::conv2d::{conv2d, ConvResidual};
use crate::kernels::conv_choice::{self, ConvPass};
use crate::kernels::elementwise::cast;
use crate::kernels::groupnorm::group_norm_onepass;
use crate::kernels::linear::linear;
use crate::kernels::resample::{avg_pool2x2, concat_channels, upsample_nearest2x, Concat, Nchw};
use crate::kernels::timestep::timestep_embedding;
use crate::tensor::{DType, Tensor};

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("input of {h}x{w} pixels: this U-Net needs height and width that are positive multiples of {multiple}")]
    Resolution { h: usize, w: usize, multiple: usize },
    #[error("the U-Net's VJP needs a forward plan made for it (PlanKind::ForwardVjp); this one is forward-only")]
    NotPlannedForVjp,
    #[error("{what}: expected {expected:?}, got {got:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

/// One planned layer: the graph's description, its sizes at this plan's
/// batch and resolution, its dispatches, and what it saved for the backward
/// pass (GroupNorm mean/rstd, attention lse).
pub struct LayerRecord {
    pub layer: Layer,
    pub shape: LayerShape,
    pub dispatches: Plan,
    pub saved: Option<Tensor>,
}

/// A U-Net forward pass planned for one batch size and resolution.
pub struct UnetForward {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// One tensor per graph activation, in the model's storage type;
    /// `acts[graph.input]` is x. Pooled activations share buffers: only x and
    /// the output keep their values after the pass.
    pub acts: Vec<Tensor>,
    /// Storage type of the activations (the weights').
    pub dtype: DType,
    /// x and the output as the caller sees them, in f32 (the activations
    /// themselves for an f32 model; cast at the edges otherwise).
    input_f32: Tensor,
    output_f32: Tensor,
    /// The casts into and out of a half-precision plan (empty in f32).
    prologue: Plan,
    epilogue: Plan,
    /// Where every tensor of the plan lives.
    pub memory: MemoryPlan,
    /// The pooled buffers (`memory.slots`).
    pub(crate) slots: Vec<wgpu::Buffer>,
    /// Timesteps [N] (float, in the model's original 0..T-1 scale).
    pub t: Tensor,
    pub records: Vec<LayerRecord>,
    _freqs: Vec<wgpu::Buffer>,
    _dummy: wgpu::Buffer,
    /// Split-K partial sums, shared by every split convolution of this pass
    /// and of the VJP that follows it (`None` when no layer splits).
    pub(crate) split_scratch: Option<wgpu::Buffer>,
}

impl UnetForward {
    /// Plans a forward pass for `batch` images of `height` x `width`; x and t
    /// live in buffers of the plan ([`UnetForward::input`], [`UnetForward::t`]).
    /// The plan is forward-only ([`UnetForward::new_kind`] for one a VJP can follow).
    pub fn new(gpu: &Gpu, unet: &Unet, batch: usize, height: usize, width: usize) -> Result<UnetForward, ForwardError> {
        Self::plan_with(gpu, unet, batch, height, width, None, PlanKind::Forward)
    }

    /// As [`UnetForward::new`], of plan kind `kind`.
    pub fn new_kind(
        gpu: &Gpu,
        unet: &Unet,
        batch: usize,
        height: usize,
        width: usize,
        kind: PlanKind,
    ) -> Result<UnetForward, ForwardError> {
        Self::plan_with(gpu, unet, batch, height, width, None, kind)
    }

    /// Plans a forward-only pass that reads x [N, C, H, W] straight from the
    /// caller's tensor (a sampler's x_t), so no copy precedes each call.
    pub fn with_input(gpu: &Gpu, unet: &Unet, x: &Tensor) -> Result<UnetForward, ForwardError> {
        Self::with_input_kind(gpu, unet, x, PlanKind::Forward)
    }

    /// As [`UnetForward::with_input`], of plan kind `kind`.
    pub fn with_input_kind(gpu: &Gpu, unet: &Unet, x: &Tensor, kind: PlanKind) -> Result<UnetForward, ForwardError> {
        let c = unet.config.in_channels();
        match x.shape[..] {
            [n, xc, h, w] if xc == c => Self::plan_with(gpu, unet, n, h, w, Some(x.clone()), kind),
            _ => Err(ForwardError::Shape {
                what: "U-Net input x".into(),
                expected: vec![0, c, 0, 0],
                got: x.shape.clone(),
            }),
        }
    }

    fn plan_with(
        gpu: &Gpu,
        unet: &Unet,
        batch: usize,
        height: usize,
        width: usize,
        input: Option<Tensor>,
        kind: PlanKind,
    ) -> Result<UnetForward, ForwardError> {
        let g = &unet.graph;
        let m = g.max_ds;
        if batch == 0 || height == 0 || width == 0 || height % m != 0 || width % m != 0 {
            return Err(ForwardError::Resolution {
                h: height,
                w: width,
                multiple: m,
            });
        }
        let dims = |a: usize| g.act_shape(a, batch, height, width);
        let dt = unet.dtype();
        let mut memory = MemoryPlan::new(g, batch, height, width, kind, input.is_none(), dt);
        let scratch_bytes = split_scratch_bytes(gpu, g, batch, height, width, kind, dt);
        let split_scratch = if scratch_bytes > 0 {
            memory.own.push(OwnBuffer {
                label: "split-K scratch".into(),
                bytes: buffer_bytes(scratch_bytes),
            });
            Some(gpu.storage_buffer("unet split-K scratch", scratch_bytes)?)
        } else {
            None
        };
        let slots = memory
            .slots
            .iter()
            .enumerate()
            .map(|(i, &bytes)| gpu.storage_buffer(&format!("unet pool buffer {i}"), bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let acts = (0..g.acts.len())
            .map(|i| match (&input, memory.act_slot[i]) {
                (Some(x), _) if i == g.input && dt == DType::F32 => Ok(x.clone()),
                (_, Some(s)) => Ok(Tensor::wrap_typed(slots[s].clone(), &dims(i), dt)),
                _ => Tensor::zeros_typed(gpu, &format!("unet activation {i} {:?}", dims(i)), &dims(i), dt),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (mut prologue, mut epilogue) = (Plan::new(), Plan::new());
        let (input_f32, output_f32) = if dt == DType::F32 {
            (acts[g.input].clone(), acts[g.output].clone())
        } else {
            let x = match &input {
                Some(x) => x.clone(),
                None => Tensor::zeros(gpu, "unet input (f32)", &dims(g.input))?,
            };
            let out = Tensor::zeros(gpu, "unet output (f32)", &dims(g.output))?;
            prologue.push(cast(gpu, &x, &acts[g.input])?);
            epilogue.push(cast(gpu, &acts[g.output], &out)?);
            (x, out)
        };
        let t = Tensor::zeros(gpu, "unet timesteps", &[batch])?;
        let dummy = gpu.storage_buffer("unet unused binding", 16)?;
        let ctx = LayerCtx {
            gpu,
            dt,
            weights: &unet.weights,
            acts: &acts,
            t: &t,
            dummy: &dummy,
            split_scratch: split_scratch.as_ref(),
        };
        let mut freqs = Vec::new();
        let mut records = Vec::new();
        for layer in &g.layers {
            let shape = g.layer_shape(layer, batch, height, width);
            if let LayerShape::Conv { shape: s, out } = shape {
                if s.out_hw() != out {
                    return Err(ForwardError::Resolution {
                        h: height,
                        w: width,
                        multiple: m,
                    });
                }
            }
            let saved = match shape.saved() {
                Some((label, dims)) => Some(Tensor::zeros(gpu, label, &dims)?),
                None => None,
            };
            let dispatches = ctx.layer(layer, &shape, saved.as_ref(), &mut freqs)?;
            records.push(LayerRecord {
                layer: layer.clone(),
                shape,
                dispatches: Plan { steps: dispatches },
                saved,
            });
        }
        Ok(UnetForward {
            batch,
            height,
            width,
            acts,
            dtype: dt,
            input_f32,
            output_f32,
            prologue,
            epilogue,
            memory,
            slots,
            t,
            records,
            _freqs: freqs,
            _dummy: dummy,
            split_scratch,
        })
    }

    /// x [N, C, H, W], f32.
    pub fn input(&self) -> &Tensor {
        &self.input_f32
    }

    /// The model output [N, out_channels, H, W] (eps, or [eps, v] with learned sigma).
    pub fn output(&self) -> &Tensor {
        &self.output_f32
    }

    /// The per-layer plans, in execution order (after the cast of x and
    /// before the cast of the output in a half-precision plan).
    pub fn layer_plans(&self) -> impl Iterator<Item = &Plan> + '_ {
        let edge = |p: &Plan| !p.is_empty();
        std::iter::once(&self.prologue)
            .filter(move |p| edge(p))
            .chain(self.records.iter().map(|r| &r.dispatches))
            .chain(std::iter::once(&self.epilogue).filter(move |p| edge(p)))
    }

    /// Records the whole forward pass into a compute pass (no submission).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for p in self.layer_plans() {
            p.record(pass);
        }
    }

    /// The forward pass as a [`Plan`] (for composing with other work).
    pub fn plan(&self) -> Plan {
        Plan::concat(self.layer_plans())
    }

    /// Submits the forward pass once (inputs already in `input()` and `t`).
    pub fn submit(&self, gpu: &Gpu) -> Result<(), GpuError> {
        Plan::submit(gpu, "unet forward", self.layer_plans())
    }

    /// Writes x and t (checked against the planned shapes).
    pub fn write_inputs(&self, gpu: &Gpu, x: &[f32], t: &[f32]) -> Result<(), ForwardError> {
        if x.len() != self.input().numel() {
            return Err(ForwardError::Shape {
                what: "U-Net input x".into(),
                expected: self.input().shape.clone(),
                got: vec![x.len()],
            });
        }
        if t.len() != self.batch {
            return Err(ForwardError::Shape {
                what: "U-Net timesteps t".into(),
                expected: vec![self.batch],
                got: vec![t.len()],
            });
        }
        self.input().write(gpu, x)?;
        self.t.write(gpu, t)?;
        Ok(())
    }

    /// Writes x and t, runs, reads the output back (a sync point).
    pub fn run(&self, gpu: &Gpu, x: &[f32], t: &[f32]) -> Result<Vec<f32>, ForwardError> {
        self.write_inputs(gpu, x, t)?;
        self.submit(gpu)?;
        Ok(self.output().read(gpu)?)
    }
}

/// What planning one forward layer reads besides the layer itself.
struct LayerCtx<'a> {
    gpu: &'a Gpu,
    /// Storage type of activations and weights.
    dt: DType,
    weights: &'a Weights,
    acts: &'a [Tensor],
    t: &'a Tensor,
    dummy: &'a wgpu::Buffer,
    split_scratch: Option<&'a wgpu::Buffer>,
}

/// Bytes of split-K scratch the plan's convolutions need at most: their
/// forward kernels, and their backward-data kernels in a VJP plan.
pub(crate) fn split_scratch_bytes(
    gpu: &Gpu,
    g: &crate::unet::Graph,
    batch: usize,
    height: usize,
    width: usize,
    kind: PlanKind,
    dt: DType,
) -> u64 {
    let passes: &[ConvPass] = match kind {
        PlanKind::Forward => &[ConvPass::Forward],
        PlanKind::ForwardVjp => &[ConvPass::Forward, ConvPass::BwdData],
    };
    g.layers
        .iter()
        .filter_map(|l| match g.layer_shape(l, batch, height, width) {
            LayerShape::Conv { shape, .. } => Some(shape),
            _ => None,
        })
        .flat_map(|s| {
            passes.iter().map(move |&pass| {
                let (m, p, k) = pass.gemm(&s);
                conv_choice::choose(gpu, pass, &s, dt).scratch_bytes(m, p, k)
            })
        })
        .max()
        .unwrap_or(0)
}

impl LayerCtx<'_> {
    /// The dispatches of one layer at `shape` (from [`crate::unet::Graph::layer_shape`]);
    /// `saved` is the buffer [`LayerShape::saved`] asked for, `freqs` keeps
    /// uploaded timestep frequencies alive.
    fn layer(
        &self,
        layer: &Layer,
        shape: &LayerShape,
        saved: Option<&Tensor>,
        freqs: &mut Vec<wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        let (gpu, dt, w, acts, dummy) = (self.gpu, self.dt, self.weights, self.acts, self.dummy);
        let buf = move |a: usize| &acts[a].buffer;
        let saved = move || &saved.expect("LayerShape::saved allocated it").buffer;
        Ok(match (layer, *shape) {
            (
                Layer::Timestep {
                    y, cos_first, freqs: f, ..
                },
                LayerShape::Timestep { n, dim },
            ) => {
                let fb = gpu.upload("timestep freqs", if f.is_empty() { &[0f32][..] } else { f })?;
                let d = timestep_embedding(gpu, dt, n, dim, *cos_first, &self.t.buffer, &fb, buf(*y))?;
                freqs.push(fb);
                vec![d]
            }
            (
                Layer::Linear {
                    x,
                    y,
                    w: wn,
                    b: bn,
                    silu_in,
                    silu_out,
                    ..
                },
                LayerShape::Linear { n, din, dout },
            ) => vec![linear(
                gpu,
                dt,
                n,
                din,
                dout,
                buf(*x),
                w.get(wn),
                w.get(bn),
                *silu_in,
                *silu_out,
                buf(*y),
            )?],
            (
                Layer::Conv {
                    x,
                    y,
                    w: wn,
                    b: bn,
                    res,
                    out_scale,
                    ..
                },
                LayerShape::Conv { shape: s, .. },
            ) => {
                let kernel = conv_choice::choose(gpu, ConvPass::Forward, &s, dt);
                let r = match res {
                    Residual::None => ConvResidual::None,
                    Residual::Full(a) => ConvResidual::Full(buf(*a), 0),
                    Residual::Channel(a) => ConvResidual::Channel(buf(*a), 0, acts[*a].shape[1]),
                };
                conv2d(
                    gpu,
                    dt,
                    &kernel,
                    &s,
                    buf(*x),
                    w.get(wn),
                    w.get(bn),
                    r,
                    *out_scale,
                    buf(*y),
                    dummy,
                    self.split_scratch,
                )?
            }
            (
                Layer::GroupNorm {
                    x,
                    y,
                    gamma,
                    beta,
                    silu,
                    scale_shift,
                    ..
                },
                LayerShape::GroupNorm(s),
            ) => {
                let (wb, goff) = w.get(gamma);
                let (wb2, boff) = w.get(beta);
                assert!(std::ptr::eq(wb, wb2), "gamma and beta share a parameter group");
                let ss = scale_shift.map(|e| (buf(e), 0));
                vec![group_norm_onepass(
                    gpu,
                    dt,
                    &s,
                    buf(*x),
                    saved(),
                    wb,
                    goff,
                    boff,
                    ss,
                    *silu,
                    buf(*y),
                    dummy,
                )?]
            }
            (Layer::Attention { qkv, y, .. }, LayerShape::Attention(s)) => {
                vec![attention(gpu, dt, &s, buf(*qkv), buf(*y), saved())?]
            }
            (Layer::Upsample { x, y }, LayerShape::Resample { n, c, h, w }) => {
                vec![upsample_nearest2x(gpu, Nchw { n, c, h, w }, &acts[*x], &acts[*y])?]
            }
            (Layer::AvgPool { x, y }, LayerShape::Resample { n, c, h, w }) => {
                vec![avg_pool2x2(gpu, Nchw { n, c, h, w }, &acts[*x], &acts[*y])?]
            }
            (Layer::Concat { a, b, y }, LayerShape::Concat { n, ca, cb, hw }) => {
                vec![concat_channels(
                    gpu,
                    Concat { n, ca, cb, hw },
                    &acts[*a],
                    &acts[*b],
                    &acts[*y],
                )?]
            }
            _ => unreachable!("Graph::layer_shape keeps the layer's kind"),
        })
    }
}
