//! DDPM: unconditional ancestral sampling (guided-diffusion's `p_sample`),
//! x_{t-1} = coef1 x0hat + coef2 x_t + sigma_t z, the base step of every other
//! sampler. The step itself is `ddpm_step` in shaders/sampler.wgsl with zero
//! guidance; DDPM adds nothing to the [`Core`] (a measurement, if given, is
//! ignored).

use super::{Core, MethodStep, Planned, Posterior, SamplerError};
use crate::Gpu;

pub struct Ddpm;

impl MethodStep for Ddpm {
    fn name() -> &'static str {
        "ddpm"
    }

    fn takes_measurement() -> bool {
        false
    }
    fn plan(gpu: &Gpu, core: &mut Core, _post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let mut step = core.eps_plan.clone();
        step.push(core.z_dispatch());
        step.push(core.ddpm_step(gpu, &core.eps, &core.eps)?);
        Ok(Planned::new(Ddpm, step))
    }

    fn label(&self) -> &'static str {
        "DDPM"
    }
}
