//! DDRM (Kawar et al. 2022, "Denoising diffusion restoration models"), as
//! its code's `efficient_generalized_steps` (bahjat-kawar/ddrm,
//! `functions/denoising.py`) takes a step: in the SVD basis of A = U diag(s)
//! V^T and in x0's units, where x_t / a_t = x0 + sigma_t eps with sigma_t =
//! b_t / a_t, each component c of V^T x0hat steps to level t-1 (sigma' =
//! b_{t-1} / a_{t-1}) by one of three rules:
//!
//! - unmeasured (s = 0, the null space): DDIM,
//!   c + sigma' sqrt(1 - eta^2) e + sigma' eta z, e = V^T epshat;
//! - less noisy than y (s sigma' < sigma_y):
//!   c + sigma' sqrt(1 - eta^2) (s y~ - s c) / sigma_y + sigma' eta z, y~ = U^T y / s;
//! - noisier than y (s sigma' > sigma_y):
//!   eta_b y~ + (1 - eta_b) c + sqrt(sigma'^2 - (eta_b sigma_y / s)^2) z,
//!
//! and x_{t-1} = a_{t-1} V (those components) plus the null space's DDIM
//! step. The code's defaults, eta = 0.85 (its etaA and etaC) and eta_b = 1,
//! are the options'. Its equality case s sigma' = sigma_y falls to the first
//! rule, as the code's strict comparisons do; so does every measured
//! component of the last step at sigma_y = 0 (sigma' = 0 there), where the
//! code returns x0hat.
//!
//! In x_t's units the step is DDNM+'s ([`super::ddnm`]): the base step
//! a' x0hat + b' sqrt(1 - eta^2) epshat + b' eta z, corrected per measured
//! component through V by `ddrm_spectral` (the same buffers and plan as
//! DDNM+'s `ddnm_spectral`; with eta_b = 1 the two differ only at sigma_y = 0
//! and the equality case). Two departures from the code: epshat comes from
//! x0hat, (x_t - a_t x0hat) / b_t, so a clipped x0hat stays consistent (the
//! code clips nothing; unclipped the two agree), and x_T is drawn from
//! N(0, I) rather than the code's p(x_T | y), which differs from it by about
//! a_T y~ in the measured components (a_T = 0.006 for the linear 1000-step
//! schedule, 0 for a flow). The comparisons and the rules read a and b from
//! the process's grid, so the step holds on a flow as on a VP diffusion.

use super::ald::{non_negative, unit_interval};
use super::ddnm::{DdnmStep, SvdStep};
use super::options::{Kind, OptionSpec};
use super::{Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, StepParams};
use crate::tensor::Tensor;
use crate::Gpu;

/// `--ddrm-eta`.
pub const ETA: OptionSpec = OptionSpec {
    name: "ddrm-eta",
    help: "DDRM's eta (the paper's 0.85): the share sigma' eta of an unmeasured or less-noisy-than-y \
           component's noise drawn fresh, the rest from the model's eps (0..1)",
    kind: Kind::Number,
    default: Some("0.85"),
    check: |v| unit_interval("ddrm-eta", v),
};

/// `--ddrm-eta-b`.
pub const ETA_B: OptionSpec = OptionSpec {
    name: "ddrm-eta-b",
    help: "DDRM's eta_b (the paper's 1): how far a component noisier than y moves onto y~ = U^T y / s",
    kind: Kind::Number,
    default: Some("1"),
    check: |v| non_negative("ddrm-eta-b", v),
};

/// DDRM's block of the step uniform: DDNM+'s, then eta_b (`ddrm_eta_b()`
/// in shaders/sampler.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DdrmStep {
    pub ddnm: DdnmStep,
    pub eta_b: f32,
}

/// DDRM: the [`SvdStep`] with `ddrm_spectral`.
pub struct Ddrm {
    step: SvdStep,
}

impl MethodStep for Ddrm {
    fn name() -> &'static str {
        "ddrm"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&ETA, &ETA_B]
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let (step, plan, init) = SvdStep::plan(gpu, core, post, ("DDRM", "ddrm_spectral", ETA.name))?;
        Ok(Planned::new(Ddrm { step }, plan).with_init(init))
    }

    fn label(&self) -> &'static str {
        "DDRM"
    }

    /// y~'s whitening reads m_per from the step uniform.
    fn prepare_init(&self, gpu: &Gpu, core: &Core) -> Result<(), SamplerError> {
        core.write_shape(gpu);
        Ok(())
    }

    fn params(&self, _gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let opts = &core.opts.method;
        let eta = opts.number(ETA.name).expect("--ddrm-eta has a default") as f64;
        let eta_b = opts.number(ETA_B.name).expect("--ddrm-eta-b has a default");
        let ddnm = self.step.params(core, i, eta, p);
        p.method = MethodBlock::of(&DdrmStep { ddnm, eta_b });
    }

    fn y(&self) -> Option<&Tensor> {
        Some(self.step.y())
    }
}
