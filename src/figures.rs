//! What a model's plans cost: GPU bytes beyond the weights and compute
//! dispatches per execution, for the U-Net forward, forward + VJP, and one
//! reverse step of each sampler (`tweedie info MODEL`).
//!
//! Bytes are measured with [`Gpu::allocated`] around making each plan: x and
//! the cotangent included for the U-Net plans (tests check these equal the
//! [`crate::unet::memory::MemoryPlan`]'s own count), and for a sampler step
//! its state, its operator and its U-Net plan, on box inpainting (DPS's and
//! DMPS's flagship task).

use std::sync::Arc;

use crate::gpu::Gpu;
use crate::operators::task::{self, Task, TaskSpec};
use crate::samplers::{Measurement, Method, Sampler, SamplerError, SamplerOptions, UnetScore};
use crate::unet::memory::PlanKind;
use crate::unet::{Unet, UnetForward, UnetVjp};

/// One plan's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlanFigure {
    /// GPU memory the plan allocates beyond the weights (storage buffers).
    pub bytes: u64,
    /// Compute dispatches one execution records.
    pub dispatches: usize,
}

/// A model's plans at one batch size and resolution.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub image_size: usize,
    pub batch: usize,
    pub precision: &'static str,
    pub weights_bytes: u64,
    pub parameters: usize,
    /// Multiply-adds x 2 of one forward of the whole batch.
    pub flops: f64,
    pub plans: Plans,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plans {
    pub forward: PlanFigure,
    pub forward_vjp: PlanFigure,
    /// One reverse step per sampler the model supports at this batch (every
    /// method of the registry but those that refuse it: C-DPS and SMC on a
    /// flow, SMC with one particle).
    pub steps: std::collections::BTreeMap<&'static str, PlanFigure>,
}

/// `method` planned on box inpainting (a zero measurement, sigma_y 0.05) for
/// `batch` samples at the score model's resolution, at most 1000 steps;
/// `None` for a method that refuses this model or batch (C-DPS on a flow,
/// SMC with one particle).
pub fn box_inpainting_sampler(
    gpu: &Gpu,
    unet: &Unet,
    score: &UnetScore,
    method: Method,
    batch: usize,
) -> Result<Option<Sampler>, SamplerError> {
    let opts = SamplerOptions {
        steps: unet.process.max_steps().unwrap_or(1000).min(1000),
        ..SamplerOptions::default()
    };
    let op = task::build(
        gpu,
        &TaskSpec::new(Task::InpaintBox),
        crate::samplers::ScoreModel::in_shape(score),
        0,
    )?;
    let y = vec![0f32; op.out_shape().iter().product()];
    let meas = method.takes_measurement().then_some(Measurement {
        op: op.as_ref(),
        y: &y,
        sigma_y: 0.05,
    });
    match Sampler::new(gpu, method, score, meas, batch, &opts) {
        Ok(s) => Ok(Some(s)),
        Err(SamplerError::Invalid(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Plans everything for `batch` images of `size` x `size` and reports the figures.
pub fn measure(gpu: &Gpu, unet: Arc<Unet>, size: usize, batch: usize) -> Result<Figures, SamplerError> {
    let g = &unet.graph;
    let plan_err = |e: crate::unet::ForwardError| SamplerError::Invalid(e.to_string());
    let forward = {
        let before = gpu.allocated();
        let fwd = UnetForward::new_kind(gpu, &unet, batch, size, size, PlanKind::Forward).map_err(plan_err)?;
        PlanFigure {
            bytes: (gpu.allocated() - before).storage,
            dispatches: fwd.plan().dispatches(),
        }
    };
    let forward_vjp = {
        let before = gpu.allocated();
        let fwd = UnetForward::new_kind(gpu, &unet, batch, size, size, PlanKind::ForwardVjp).map_err(plan_err)?;
        let vjp = UnetVjp::new(gpu, &unet, &fwd).map_err(plan_err)?;
        PlanFigure {
            bytes: (gpu.allocated() - before).storage,
            dispatches: fwd.plan().dispatches() + vjp.plan().dispatches(),
        }
    };
    gpu.sync()?;
    let score = UnetScore::new(unet.clone(), size, size);
    let mut steps = std::collections::BTreeMap::new();
    for &method in Method::all() {
        let before = gpu.allocated();
        if let Some(s) = box_inpainting_sampler(gpu, &unet, &score, method, batch)? {
            steps.insert(
                method.name(),
                PlanFigure {
                    bytes: (gpu.allocated() - before).storage,
                    dispatches: s.step_dispatches(),
                },
            );
        }
        gpu.sync()?;
    }
    Ok(Figures {
        image_size: size,
        batch,
        precision: unet.dtype().wgsl(),
        weights_bytes: unet.weights.bytes(),
        parameters: g.num_params(),
        flops: g.flops(size, size) * batch as f64,
        plans: Plans {
            forward,
            forward_vjp,
            steps,
        },
    })
}
