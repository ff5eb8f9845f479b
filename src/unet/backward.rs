//! The vector-Jacobian product with respect to the input x, through the same
//! planned graph: the forward plan's layer records walked in reverse, each
//! layer's input gradient computed from the activations and statistics the
//! forward pass kept. Gradient buffers are the forward plan's (pooled with its
//! activations, [`crate::unet::memory`]); the first contribution to a gradient
//! overwrites it and later ones accumulate (an activation feeding several
//! layers: ResBlock input to its norm and its skip, skip tensors to the next
//! block and to the concat), so no clearing pass is needed and forward +
//! backward replay in one compute pass. A residual's gradient that is dy itself
//! shares dy's buffer and costs no dispatch.
//!
//! The time embedding depends on t only, so no gradient flows into it.

use super::forward::{ForwardError, LayerRecord, UnetForward};
use super::graph::{Layer, Residual};
use super::memory::PlanKind;
use super::shapes::LayerShape;
use super::weights::Weights;
use super::Unet;
use crate::gpu::{Dispatch, Gpu, GpuError, Plan};
use crate::kernels::attention::attention_bwd;
use crate::kernels::conv2d::conv2d_bwd_data;
use crate::kernels::conv_choice::{self, ConvPass};
use crate::kernels::elementwise::cast;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::groupnorm::group_norm_bwd_onepass;
use crate::kernels::resample::{avg_pool2x2_bwd, split_channels, upsample_nearest2x_bwd, Concat, Nchw};
use crate::tensor::{DType, Tensor};

/// The backward dispatches of one forward layer.
pub struct BackwardRecord {
    /// Index into the forward plan's `records`.
    pub layer: usize,
    pub dispatches: Plan,
}

/// d out / d x transposed, applied to a cotangent, planned for one forward plan.
pub struct UnetVjp {
    /// The cotangent (shape of the output); also the gradient of the output activation.
    pub cotangent: Tensor,
    /// Gradient per activation (image activations only).
    pub grads: Vec<Option<Tensor>>,
    pub records: Vec<BackwardRecord>,
    /// dx as the caller sees it, f32 (the input's gradient itself in an f32 plan).
    dx_f32: Tensor,
    /// The casts into and out of a half-precision plan (empty in f32).
    prologue: Plan,
    epilogue: Plan,
    _scratch: Vec<wgpu::Buffer>,
}

impl UnetVjp {
    /// Plans the VJP of a planned forward pass; the cotangent lives in
    /// [`UnetVjp::cotangent`].
    pub fn new(gpu: &Gpu, unet: &Unet, fwd: &UnetForward) -> Result<UnetVjp, ForwardError> {
        let cotangent = Tensor::zeros(gpu, "unet cotangent", &fwd.output().shape)?;
        Self::with_cotangent(gpu, unet, fwd, &cotangent)
    }

    /// Plans the VJP reading the cotangent straight from the caller's tensor
    /// (shaped like the output), e.g. a sampler's d loss / d eps.
    pub fn with_cotangent(
        gpu: &Gpu,
        unet: &Unet,
        fwd: &UnetForward,
        cotangent: &Tensor,
    ) -> Result<UnetVjp, ForwardError> {
        if cotangent.shape != fwd.output().shape {
            return Err(ForwardError::Shape {
                what: "U-Net cotangent".into(),
                expected: fwd.output().shape.clone(),
                got: cotangent.shape.clone(),
            });
        }
        if fwd.memory.kind != PlanKind::ForwardVjp {
            return Err(ForwardError::NotPlannedForVjp);
        }
        let cotangent = cotangent.clone();
        let g = &unet.graph;
        let acts = &fwd.acts;
        let dt = fwd.dtype;
        let (mut prologue, mut epilogue) = (Plan::new(), Plan::new());
        let mut grads: Vec<Option<Tensor>> = Vec::with_capacity(acts.len());
        for (i, act) in acts.iter().enumerate() {
            grads.push(if i == g.output && dt == DType::F32 {
                Some(cotangent.clone())
            } else if i == g.input || i == g.output {
                let label = if i == g.input {
                    "unet input gradient"
                } else {
                    "unet cotangent copy"
                };
                Some(Tensor::zeros_typed(gpu, label, &act.shape, dt)?)
            } else {
                fwd.memory.grad_slot[i].map(|s| Tensor::wrap_typed(fwd.slots[s].clone(), &act.shape, dt))
            });
        }
        let dx = grads[g.input].clone().expect("x is an image activation");
        let dx_f32 = if dt == DType::F32 {
            dx
        } else {
            let dx_f32 = Tensor::zeros(gpu, "unet input gradient (f32)", &dx.shape)?;
            let out_grad = grads[g.output].as_ref().expect("the output has a gradient");
            prologue.push(cast(gpu, &cotangent, out_grad)?);
            epilogue.push(cast(gpu, &dx, &dx_f32)?);
            dx_f32
        };
        // written[a]: a gradient has been stored into grads[a] already (accumulate from then on).
        let mut written = vec![false; acts.len()];
        written[g.output] = true;
        let dummy = gpu.storage_buffer("unet bwd unused binding", 16)?;
        let mut scratch = Vec::new();
        let mut records = Vec::new();
        let ctx = GradCtx {
            gpu,
            dt,
            weights: &unet.weights,
            acts,
            grads: &grads,
            dummy: &dummy,
            split_scratch: fwd.split_scratch.as_ref(),
        };
        for (li, rec) in fwd.records.iter().enumerate().rev() {
            let steps = ctx.layer(rec, fwd.memory.residual_alias[li], &mut written, &mut scratch)?;
            records.push(BackwardRecord {
                layer: li,
                dispatches: Plan { steps },
            });
        }
        assert!(written[g.input], "the input receives a gradient");
        scratch.push(dummy);
        Ok(UnetVjp {
            cotangent,
            grads,
            records,
            dx_f32,
            prologue,
            epilogue,
            _scratch: scratch,
        })
    }

    /// The VJP, (d out / d x)^T cotangent, shaped like x, f32.
    pub fn dx(&self) -> &Tensor {
        &self.dx_f32
    }

    /// The per-layer backward plans, in execution order (last layer first;
    /// after the cast of the cotangent and before the cast of dx in a
    /// half-precision plan).
    pub fn layer_plans(&self) -> impl Iterator<Item = &Plan> + '_ {
        let edge = |p: &Plan| !p.is_empty();
        std::iter::once(&self.prologue)
            .filter(move |p| edge(p))
            .chain(self.records.iter().map(|r| &r.dispatches))
            .chain(std::iter::once(&self.epilogue).filter(move |p| edge(p)))
    }

    /// Records the backward dispatches (after the forward ones) into a pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for p in self.layer_plans() {
            p.record(pass);
        }
    }

    /// The backward pass as a [`Plan`] (to follow the forward plan in a larger one).
    pub fn plan(&self) -> Plan {
        Plan::concat(self.layer_plans())
    }

    /// Forward then backward in one compute pass, one submission.
    pub fn submit(&self, gpu: &Gpu, fwd: &UnetForward) -> Result<(), GpuError> {
        Plan::submit(gpu, "unet vjp", fwd.layer_plans().chain(self.layer_plans()))
    }

    /// Writes x, t and the cotangent; returns (out, vjp).
    pub fn run(
        &self,
        gpu: &Gpu,
        fwd: &UnetForward,
        x: &[f32],
        t: &[f32],
        cotangent: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), ForwardError> {
        if cotangent.len() != self.cotangent.numel() {
            return Err(ForwardError::Shape {
                what: "U-Net cotangent".into(),
                expected: self.cotangent.shape.clone(),
                got: vec![cotangent.len()],
            });
        }
        fwd.write_inputs(gpu, x, t)?;
        self.cotangent.write(gpu, cotangent)?;
        self.submit(gpu, fwd)?;
        Ok((fwd.output().read(gpu)?, self.dx().read(gpu)?))
    }
}

/// What planning one layer's input gradient reads besides its forward record.
struct GradCtx<'a> {
    gpu: &'a Gpu,
    dt: DType,
    weights: &'a Weights,
    /// The forward plan's activations.
    acts: &'a [Tensor],
    grads: &'a [Option<Tensor>],
    dummy: &'a wgpu::Buffer,
    /// The forward plan's split-K scratch.
    split_scratch: Option<&'a wgpu::Buffer>,
}

impl GradCtx<'_> {
    /// The backward dispatches of one forward layer, at the sizes the forward
    /// plan recorded. `residual_alias`: the residual's gradient is dy's buffer
    /// already. `written[a]`: a gradient has been stored into `grads[a]`
    /// already (the next contribution accumulates); `scratch` keeps per-layer
    /// temporaries alive.
    fn layer(
        &self,
        rec: &LayerRecord,
        residual_alias: bool,
        written: &mut [bool],
        scratch: &mut Vec<wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, ForwardError> {
        let (gpu, dt, w, acts, dummy) = (self.gpu, self.dt, self.weights, self.acts, self.dummy);
        let grads = self.grads;
        let grad = move |a: usize| grads[a].as_ref().expect("image activation has a gradient");
        let gb = move |a: usize| &grad(a).buffer;
        let mut take = |a: usize| {
            let acc = written[a];
            written[a] = true;
            acc
        };
        let mut ds: Vec<Dispatch> = Vec::new();
        match (&rec.layer, rec.shape) {
            (Layer::Timestep { .. }, _) | (Layer::Linear { .. }, _) => {}
            (
                Layer::Conv {
                    x,
                    y,
                    w: wn,
                    res,
                    out_scale,
                    ..
                },
                LayerShape::Conv { shape: s, .. },
            ) => {
                let acc = take(*x);
                let kernel = conv_choice::choose(gpu, ConvPass::BwdData, &s, dt);
                ds.extend(conv2d_bwd_data(
                    gpu,
                    dt,
                    &kernel,
                    &s,
                    gb(*y),
                    w.get(wn),
                    *out_scale,
                    acc,
                    gb(*x),
                    self.split_scratch,
                )?);
                if let (Residual::Full(r), true) = (res, residual_alias) {
                    // d r = dy, in dy's own buffer (the memory plan shares it).
                    assert!(!take(*r), "an aliased residual gradient is its first contribution");
                } else if let Residual::Full(r) = res {
                    let (dy, dr) = (grad(*y), grad(*r));
                    let e = if take(*r) {
                        Elementwise::new(gpu, Op::Axpby, dy, dr, *out_scale, 1.0)?
                    } else {
                        Elementwise::new(gpu, Op::Affine, dy, dr, *out_scale, 0.0)?
                    };
                    ds.push(e.dispatch);
                }
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
                let stats = rec.saved.as_ref().expect("GroupNorm keeps its statistics");
                let (wb, goff) = w.get(gamma);
                let (_, boff) = w.get(beta);
                let ss = scale_shift.map(|e| (&acts[e].buffer, 0));
                let acc = take(*x);
                ds.push(group_norm_bwd_onepass(
                    gpu,
                    dt,
                    &s,
                    &acts[*x].buffer,
                    &stats.buffer,
                    wb,
                    goff,
                    boff,
                    ss,
                    *silu,
                    gb(*y),
                    gb(*x),
                    acc,
                    dummy,
                )?);
            }
            (Layer::Attention { qkv, y, .. }, LayerShape::Attention(s)) => {
                let lse = rec.saved.as_ref().expect("attention keeps its log-sum-exps");
                let dsum = gpu.storage_buffer("attention bwd D", (s.n * s.heads * s.t * 4) as u64)?;
                let acc = take(*qkv);
                ds.extend(attention_bwd(
                    gpu,
                    dt,
                    &s,
                    &acts[*qkv].buffer,
                    &acts[*y].buffer,
                    &lse.buffer,
                    gb(*y),
                    &dsum,
                    gb(*qkv),
                    acc,
                )?);
                scratch.push(dsum);
            }
            (Layer::Upsample { x, y }, LayerShape::Resample { n, c, h, w }) => {
                let acc = take(*x);
                ds.push(upsample_nearest2x_bwd(
                    gpu,
                    Nchw { n, c, h, w },
                    grad(*y),
                    grad(*x),
                    acc,
                )?);
            }
            (Layer::AvgPool { x, y }, LayerShape::Resample { n, c, h, w }) => {
                let acc = take(*x);
                ds.push(avg_pool2x2_bwd(gpu, Nchw { n, c, h, w }, grad(*y), grad(*x), acc)?);
            }
            (Layer::Concat { a, b, y }, LayerShape::Concat { n, ca, cb, hw }) => {
                let acc = (take(*a), take(*b));
                ds.push(split_channels(
                    gpu,
                    Concat { n, ca, cb, hw },
                    grad(*y),
                    (grad(*a), grad(*b)),
                    acc,
                )?);
            }
            _ => unreachable!("Graph::layer_shape keeps the layer's kind"),
        }
        Ok(ds)
    }
}
