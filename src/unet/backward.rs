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
use crate::kernels::conv2d::{conv2d_bwd_data, ConvTiles};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::groupnorm::group_norm_bwd_onepass;
use crate::kernels::resample::{avg_pool2x2_bwd, split_channels, upsample_nearest2x_bwd};
use crate::tensor::Tensor;

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
    input: usize,
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
        let mut grads: Vec<Option<Tensor>> = Vec::with_capacity(acts.len());
        for (i, act) in acts.iter().enumerate() {
            grads.push(if i == g.output {
                Some(cotangent.clone())
            } else if i == g.input {
                Some(Tensor::zeros(gpu, "unet input gradient", &act.shape)?)
            } else {
                fwd.memory.grad_slot[i].map(|s| Tensor::wrap(fwd.slots[s].clone(), &act.shape))
            });
        }
        // written[a]: a gradient has been stored into grads[a] already (accumulate from then on).
        let mut written = vec![false; acts.len()];
        written[g.output] = true;
        let dummy = gpu.storage_buffer("unet bwd unused binding", 16)?;
        let mut scratch = Vec::new();
        let mut records = Vec::new();
        let ctx = GradCtx {
            gpu,
            weights: &unet.weights,
            acts,
            grads: &grads,
            dummy: &dummy,
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
            input: g.input,
            _scratch: scratch,
        })
    }

    /// The VJP, (d out / d x)^T cotangent, shaped like x.
    pub fn dx(&self) -> &Tensor {
        self.grads[self.input].as_ref().expect("x is an image activation")
    }

    /// The per-layer backward plans, in execution order (last layer first).
    pub fn layer_plans(&self) -> impl Iterator<Item = &Plan> + '_ {
        self.records.iter().map(|r| &r.dispatches)
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
    weights: &'a Weights,
    /// The forward plan's activations.
    acts: &'a [Tensor],
    grads: &'a [Option<Tensor>],
    dummy: &'a wgpu::Buffer,
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
        let (gpu, w, acts, dummy) = (self.gpu, self.weights, self.acts, self.dummy);
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
                let tiles = ConvTiles::for_gemm(gpu, s.cin, s.n * s.h * s.w);
                ds.push(conv2d_bwd_data(
                    gpu,
                    &tiles,
                    &s,
                    gb(*y),
                    w.get(wn),
                    *out_scale,
                    acc,
                    gb(*x),
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
                ds.push(upsample_nearest2x_bwd(gpu, n, c, h, w, gb(*y), gb(*x), acc)?);
            }
            (Layer::AvgPool { x, y }, LayerShape::Resample { n, c, h, w }) => {
                let acc = take(*x);
                ds.push(avg_pool2x2_bwd(gpu, n, c, h, w, gb(*y), gb(*x), acc)?);
            }
            (Layer::Concat { a, b, y }, LayerShape::Concat { n, ca, cb, hw }) => {
                let acc = (take(*a), take(*b));
                ds.push(split_channels(gpu, n, ca, cb, hw, gb(*y), gb(*a), gb(*b), acc)?);
            }
            _ => unreachable!("Graph::layer_shape keeps the layer's kind"),
        }
        Ok(ds)
    }
}
