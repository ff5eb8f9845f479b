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

use super::forward::{per_layer_plans, ForwardError, UnetForward};
use super::layers::Sizes;
use super::memory::PlanKind;
use super::weights::Weights;
use super::Unet;
use crate::gpu::{Gpu, GpuError, Plan};
use crate::kernels::elementwise::cast;
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
        let mut state = GradState {
            written: vec![false; acts.len()],
            scratch: Vec::new(),
        };
        state.written[g.output] = true;
        let dummy = gpu.storage_buffer("unet bwd unused binding", 16)?;
        let mut records = Vec::new();
        let plan = GradCtx {
            gpu,
            dt,
            weights: &unet.weights,
            acts,
            grads: &grads,
            dummy: &dummy,
            split_scratch: fwd.split_scratch.as_ref(),
            saved: None,
            residual_alias: false,
        };
        let at = Sizes::of_graph(g, fwd.batch, fwd.height, fwd.width);
        for (li, rec) in fwd.records.iter().enumerate().rev() {
            let ctx = GradCtx {
                saved: rec.saved.as_ref(),
                residual_alias: fwd.memory.residual_alias[li],
                ..plan
            };
            let steps = rec.layer.kind().backward(&ctx, &at, &mut state)?;
            records.push(BackwardRecord {
                layer: li,
                dispatches: Plan { steps },
            });
        }
        assert!(state.written[g.input], "the input receives a gradient");
        let mut scratch = state.scratch;
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

    per_layer_plans!("backward pass (last layer first; after the cast of the cotangent and before the cast of dx in a half-precision plan)");

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
pub struct GradCtx<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) dt: DType,
    pub(crate) weights: &'a Weights,
    /// The forward plan's activations.
    pub(crate) acts: &'a [Tensor],
    grads: &'a [Option<Tensor>],
    pub(crate) dummy: &'a wgpu::Buffer,
    /// The forward plan's split-K scratch.
    pub(crate) split_scratch: Option<&'a wgpu::Buffer>,
    /// What the layer's forward saved ([`crate::unet::layers::Buffers::saved`]).
    pub(crate) saved: Option<&'a Tensor>,
    /// The memory plan gave the residual of the layer's
    /// [`crate::unet::layers::Dataflow::residual_passthrough`] dy's buffer.
    pub(crate) residual_alias: bool,
}

impl GradCtx<'_> {
    /// The gradient of image activation `a`.
    pub(crate) fn grad(&self, a: usize) -> &Tensor {
        self.grads[a].as_ref().expect("image activation has a gradient")
    }
}

/// What the backward layers hand on to each other while the VJP is planned.
pub struct GradState {
    /// written[a]: a gradient has been stored into grads[a] already, so the
    /// next contribution accumulates (no clearing pass).
    written: Vec<bool>,
    /// Per-layer temporaries the dispatches bind.
    pub(crate) scratch: Vec<wgpu::Buffer>,
}

impl GradState {
    /// Whether a contribution to `a`'s gradient accumulates; later ones will.
    pub(crate) fn take(&mut self, a: usize) -> bool {
        std::mem::replace(&mut self.written[a], true)
    }
}
