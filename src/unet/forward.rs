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

use super::graph::Layer;
use super::layers::Sizes;
use super::memory::{MemoryPlan, OwnBuffer, PlanKind};
use super::weights::Weights;
use super::Unet;
use crate::gpu::{Gpu, GpuError, Plan};
use crate::kernels::elementwise::cast;
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

/// One planned layer: the graph's description, its dispatches, and what it
/// saved for the backward pass (GroupNorm mean/rstd, attention lse).
pub struct LayerRecord {
    pub layer: Layer,
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
        let at = Sizes::of_graph(g, batch, height, width);
        // Split-K partial sums: as large as the largest any layer needs.
        let scratch_bytes = g
            .layers
            .iter()
            .map(|l| l.kind().split_scratch_bytes(gpu, &at, kind, dt))
            .max()
            .unwrap_or(0);
        let split_scratch = if scratch_bytes > 0 {
            memory.own.push(OwnBuffer::new("split-K scratch", scratch_bytes));
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
        let plan = ForwardCtx {
            gpu,
            dt,
            weights: &unet.weights,
            acts: &acts,
            t: &t,
            dummy: &dummy,
            split_scratch: split_scratch.as_ref(),
            saved: None,
        };
        let mut freqs = Vec::new();
        let mut records = Vec::new();
        for layer in &g.layers {
            let kind = layer.kind();
            if !kind.fits(&at) {
                return Err(ForwardError::Resolution {
                    h: height,
                    w: width,
                    multiple: m,
                });
            }
            let saved = match kind.buffers(&at).saved {
                Some((label, dims)) => Some(Tensor::zeros(gpu, label, &dims)?),
                None => None,
            };
            let ctx = ForwardCtx {
                saved: saved.as_ref(),
                ..plan
            };
            let steps = kind.forward(&ctx, &at, &mut freqs)?;
            records.push(LayerRecord {
                layer: layer.clone(),
                dispatches: Plan { steps },
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

    per_layer_plans!("forward pass (after the cast of x and before the cast of the output in a half-precision plan)");

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

/// The plan accessors of a planned pass, forward or VJP, that keeps one plan
/// per layer (`records[..].dispatches`) between a half-precision plan's
/// casts (`prologue`, `epilogue`: empty, and left out, in f32).
macro_rules! per_layer_plans {
    ($pass:literal) => {
        #[doc = concat!("The per-layer plans of the ", $pass, ", in execution order.")]
        pub fn layer_plans(&self) -> impl Iterator<Item = &Plan> + '_ {
            let edge = |p: &&Plan| !p.is_empty();
            let [prologue, epilogue] = [&self.prologue, &self.epilogue].map(|p| std::iter::once(p).filter(edge));
            prologue
                .chain(self.records.iter().map(|r| &r.dispatches))
                .chain(epilogue)
        }

        /// Records them into a caller's compute pass (no submission).
        pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
            Plan::record_all(self.layer_plans(), pass);
        }

        /// Them as one [`Plan`] (to compose with other work).
        pub fn plan(&self) -> Plan {
            Plan::concat(self.layer_plans())
        }
    };
}
pub(crate) use per_layer_plans;

/// What planning one forward layer reads besides the layer itself.
pub struct ForwardCtx<'a> {
    pub(crate) gpu: &'a Gpu,
    /// Storage type of activations and weights.
    pub(crate) dt: DType,
    pub(crate) weights: &'a Weights,
    pub(crate) acts: &'a [Tensor],
    pub(crate) t: &'a Tensor,
    pub(crate) dummy: &'a wgpu::Buffer,
    pub(crate) split_scratch: Option<&'a wgpu::Buffer>,
    /// The tensor the layer's [`crate::unet::layers::Buffers::saved`] asked
    /// for, allocated for it.
    pub(crate) saved: Option<&'a Tensor>,
}
