//! The U-Net behind the [`ScoreModel`] interface: the same sampler code that
//! runs on the exact Gaussian-mixture prior runs on a trained network.

use std::sync::{Arc, Mutex};

use super::score::{EpsArgs, ScoreError, ScoreModel};
use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::resample::{copy_channels, slice_channels, ChannelSlice};
use crate::tensor::Tensor;
use crate::unet::memory::PlanKind;
use crate::unet::{ForwardError, Unet, UnetForward, UnetVjp};
use crate::Gpu;

/// A loaded U-Net planned at one resolution. `plan_eps` plans a forward pass
/// whose activations `plan_vjp` then reuses (DPS: forward then backward).
pub struct UnetScore {
    unet: Arc<Unet>,
    height: usize,
    width: usize,
    /// The forward planned by the last `plan_eps` (activations for the VJP).
    forward: Mutex<Option<Arc<UnetForward>>>,
}

fn score_err(e: ForwardError) -> ScoreError {
    match e {
        ForwardError::Gpu(g) => ScoreError::Gpu(g),
        other => ScoreError::Invalid {
            model: "unet".into(),
            message: other.to_string(),
        },
    }
}

impl UnetScore {
    pub fn new(unet: Arc<Unet>, height: usize, width: usize) -> UnetScore {
        UnetScore {
            unet,
            height,
            width,
            forward: Mutex::new(None),
        }
    }

    pub fn unet(&self) -> &Unet {
        &self.unet
    }

    fn check(&self, what: &str, t: &Tensor, batch: usize, c: usize) -> Result<(), ScoreError> {
        let want = batch * c * self.height * self.width;
        if t.numel() != want {
            return Err(ScoreError::Shape {
                model: "unet".into(),
                what: what.into(),
                got: t.shape.clone(),
                expected: vec![batch, c, self.height, self.width],
            });
        }
        Ok(())
    }
}

impl ScoreModel for UnetScore {
    fn name(&self) -> &str {
        "unet"
    }

    fn in_shape(&self) -> [usize; 3] {
        [self.unet.config.in_channels(), self.height, self.width]
    }

    fn learned_sigma(&self) -> bool {
        self.unet.config.learned_sigma()
    }

    fn process(&self) -> crate::process::Process {
        self.unet.process
    }

    fn plan_eps(&self, gpu: &Gpu, args: &EpsArgs<'_>) -> Result<Plan, ScoreError> {
        let EpsArgs { x, t, eps, v, vjp } = *args;
        let c = self.unet.config.in_channels();
        let per = c * self.height * self.width;
        if per == 0 || x.numel() % per != 0 {
            return Err(ScoreError::Shape {
                model: "unet".into(),
                what: "x".into(),
                got: x.shape.clone(),
                expected: vec![0, c, self.height, self.width],
            });
        }
        let batch = x.numel() / per;
        self.check("eps", eps, batch, c)?;
        if let Some(v) = v {
            self.check("v", v, batch, c)?;
        }
        if t.numel() != batch {
            return Err(ScoreError::Shape {
                model: "unet".into(),
                what: "t".into(),
                got: t.shape.clone(),
                expected: vec![batch],
            });
        }
        let kind = if vjp { PlanKind::ForwardVjp } else { PlanKind::Forward };
        let x4 = x.reshaped(&[batch, c, self.height, self.width]);
        let fwd = UnetForward::with_input_kind(gpu, &self.unet, &x4, kind).map_err(score_err)?;
        let hw = self.height * self.width;
        let out_c = self.unet.config.out_channels();
        let mut plan = Plan::new();
        // The forward reads x in place; t is copied in and [eps, v] (channel
        // halves of the output) out: the sampler owns its state.
        plan.push(Elementwise::new(gpu, Op::Affine, t, &fwd.t, 1.0, 0.0)?.dispatch);
        plan.extend(fwd.plan());
        let half = |c_off| ChannelSlice {
            n: batch,
            c,
            hw,
            c_total: out_c,
            c_off,
        };
        plan.push(slice_channels(gpu, half(0), fwd.output(), eps, false)?);
        if let Some(v) = v {
            if !self.learned_sigma() {
                return Err(ScoreError::Invalid {
                    model: "unet".into(),
                    message: "v asked of a model without learned sigma".into(),
                });
            }
            plan.push(slice_channels(gpu, half(c), fwd.output(), v, false)?);
        }
        *self.forward.lock().unwrap() = Some(Arc::new(fwd));
        Ok(plan)
    }

    fn plan_vjp(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        _t: &Tensor,
        cotangent: &Tensor,
        dx: &Tensor,
    ) -> Result<Plan, ScoreError> {
        let fwd = self
            .forward
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| ScoreError::Invalid {
                model: "unet".into(),
                message: "plan_vjp needs the forward planned by plan_eps first".into(),
            })?;
        if fwd.input().numel() != x.numel() {
            return Err(ScoreError::Shape {
                model: "unet".into(),
                what: "x".into(),
                got: x.shape.clone(),
                expected: fwd.input().shape.clone(),
            });
        }
        let c = self.unet.config.in_channels();
        self.check("cotangent", cotangent, fwd.batch, c)?;
        self.check("dx", dx, fwd.batch, c)?;
        let vjp = UnetVjp::new(gpu, &self.unet, &fwd).map_err(score_err)?;
        let hw = self.height * self.width;
        let mut plan = Plan::new();
        // The cotangent of [eps, v]: eps's part from the sampler, v's stays 0
        // (the buffer is zeroed at creation and never written elsewhere).
        let eps_half = ChannelSlice {
            n: fwd.batch,
            c,
            hw,
            c_total: self.unet.config.out_channels(),
            c_off: 0,
        };
        plan.push(copy_channels(gpu, eps_half, cotangent, &vjp.cotangent)?);
        plan.extend(vjp.plan());
        plan.push(Elementwise::new(gpu, Op::Affine, vjp.dx(), dx, 1.0, 0.0)?.dispatch);
        Ok(plan)
    }
}
