//! DDNM+ (Wang et al. 2023, "Zero-shot image restoration using denoising
//! diffusion null-space model"), in the SVD form of its code (wyhuai/DDNM,
//! `functions/svd_ddnm.py` and `svd_operators.py`): each step takes x0hat
//! from the model, replaces its range-space part by the measurement's,
//!
//!   x0hat' = x0hat - Sigma_t A^+ (A x0hat - y),
//!
//! and steps to level t-1 as DDIM with the code's noise split (DDRM's):
//!
//!   x_{t-1} = a_{t-1} x0hat' + sigma_t eta z + sigma_t sqrt(1 - eta^2) epshat,  sigma_t = b_{t-1}
//!
//! with the noisy-measurement choice of Sigma_t and of the noise on the
//! measured components (eq. 19 and its appendix, per singular direction s of
//! A = U diag(s) V^T): y's noise reaches x_{t-1} as a_{t-1} sigma_y / s; where
//! that is below sigma_t the component takes y whole (lambda = 1) and fresh
//! noise tops it up to sigma_t; where it is above, lambda = s sigma_t
//! sqrt(1 - eta^2) / (a_{t-1} sigma_y) scales y's noise down to
//! sigma_t sqrt(1 - eta^2) and fresh noise sigma_t eta completes it. Either
//! way a measured component carries no epshat, and the null space steps as
//! plain DDIM. At sigma_y = 0 this is DDNM itself (lambda = 1 throughout).
//!
//! The correction is computed on spectral coefficients (`ddnm_spectral`: V^T
//! of x0hat, x_t and z, y~ = U^T y / s) and added through V as the base
//! step's guidance. eps comes from x0hat, (x_t - a_t x0hat) / b_t, so a
//! clipped x0hat stays consistent (guided-diffusion's DDIM does the same);
//! the step holds on a flow as on a VP diffusion (a and b from its grid).

use super::ald::unit_interval;
use super::kernels::DdnmSpectral;
use super::options::{Kind, OptionSpec};
use super::{need_svd, Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, StepParams};
use super::{FLAG_CLIP, FLAG_NOISE};
use crate::gpu::Plan;
use crate::tensor::Tensor;
use crate::Gpu;

/// `--ddnm-eta`.
pub const ETA: OptionSpec = OptionSpec {
    name: "ddnm-eta",
    help: "DDNM+'s eta (the paper's 0.85): the share sigma_t eta of x_{t-1}'s noise drawn fresh, the rest \
           from the model's eps (0..1)",
    kind: Kind::Number,
    default: Some("0.85"),
    check: |v| unit_interval("ddnm-eta", v),
};

/// DDNM+'s block of the step uniform (`ddnm_a_next()` ... in
/// shaders/sampler.wgsl), read by `ddnm_spectral`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DdnmStep {
    /// a_{t-1}
    pub a_next: f32,
    /// sigma_t = b_{t-1}
    pub sigma: f32,
    pub eta: f32,
    pub sigma_y: f32,
}

/// The buffers of a step corrected in the SVD basis (DDNM+'s, and DDRM's
/// through [`SvdStep::plan`] with its own kernel). Only `y` is read from the
/// host side; the others are held for the plan's bind groups.
#[allow(dead_code)]
pub struct SvdStep {
    /// the measurement y [N, m]
    y: Tensor,
    /// y~ = U^T y / s [N, m]
    ytil: Tensor,
    /// x0hat and the clamp's mask (unused) [N, ...]
    x0: Tensor,
    mask: Tensor,
    /// V^T x0hat, then the correction's coefficients in place [N, m]
    c: Tensor,
    /// V^T x_t and V^T z [N, m]
    vx: Tensor,
    zeta: Tensor,
    /// V of the correction [N, ...]
    g: Tensor,
    sigma_y: f32,
}

impl SvdStep {
    /// The step of `what` ("DDNM+") whose correction kernel `entry` computes
    /// from V^T x0hat, V^T x_t, V^T z and y~ (binding [`DdnmSpectral`]), and
    /// the init plan that whitens y; `flag` names its eta for the refusal of
    /// `--sampler` and `--eta`.
    pub(super) fn plan(
        gpu: &Gpu,
        core: &mut Core,
        post: &Posterior<'_>,
        (what, entry, flag): (&str, &str, &str),
    ) -> Result<(SvdStep, Plan, Plan), SamplerError> {
        let m = post.measurement(what)?;
        let svd = need_svd(m, what)?;
        core.refuse_base_step(what, &format!("takes its own DDIM step (--{flag})"))?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let shape = core.x.shape.clone();
        let spectral = |name: &str| Tensor::zeros(gpu, name, &[n, m_per]);
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let ytil = spectral("y~")?;
        let x0 = Tensor::zeros(gpu, "x0hat", &shape)?;
        let mask = Tensor::zeros(gpu, "clamp mask", &shape)?;
        let (c, vx, zeta) = (spectral("V^T x0hat")?, spectral("V^T x_t")?, spectral("V^T z")?);
        let g = Tensor::zeros(gpu, "spectral correction", &shape)?;
        let init = core.spectral_y(gpu, svd, &y, &ytil)?;
        let mut plan = core.eps_plan.clone();
        plan.push(core.z_dispatch());
        plan.push(core.x0_and_mask(gpu, &x0, &mask)?);
        plan.extend(svd.vt(gpu, &x0, &c)?);
        plan.extend(svd.vt(gpu, &core.x, &vx)?);
        plan.extend(svd.vt(gpu, &core.z, &zeta)?);
        let b = DdnmSpectral {
            s: &core.step_uniform,
            sing: svd.singulars(),
            ytil: &ytil,
            vx: &vx,
            zeta: &zeta,
            c: &c,
        };
        plan.push(core.launch(gpu, entry, &b, n * m_per)?);
        plan.extend(svd.v(gpu, &c, &g)?);
        plan.push(core.ddpm_step(gpu, &g, &g)?);
        let step = SvdStep {
            y,
            ytil,
            x0,
            mask,
            c,
            vx,
            zeta,
            g,
            sigma_y: m.sigma_y,
        };
        Ok((step, plan, init))
    }

    /// The measurement y [N, m].
    pub(super) fn y(&self) -> &Tensor {
        &self.y
    }

    /// Step i's scalars with x_{t-1}'s noise sigma_t = b_{t-1} split as
    /// sigma_t eta fresh and sigma_t sqrt(1 - eta^2) from epshat, the
    /// correction V delta added whole (guide 1); the block the kernel reads.
    pub(super) fn params(&self, core: &Core, i: usize, eta: f64, p: &mut StepParams) -> DdnmStep {
        let g = &core.grid;
        let (an, sigma) = (g.a_next[i], g.b_next[i]);
        own_ddim_step(core, i, sigma * eta, sigma * (1.0 - eta * eta).max(0.0).sqrt(), p);
        p.guide = 1.0;
        p.guide2 = 0.0;
        DdnmStep {
            a_next: an as f32,
            sigma: sigma as f32,
            eta: eta as f32,
            sigma_y: self.sigma_y,
        }
    }
}

/// Makes step i's base step x' = coef1 x0hat + coef2 x_t + fresh z with
/// coef1 = a' - kept a / b and coef2 = kept / b, i.e. x' = a' x0hat +
/// kept epshat + fresh z with epshat = (x_t - a x0hat) / b (from the clipped
/// x0hat, as guided-diffusion's DDIM takes it), for a method that takes its
/// own step.
pub(super) fn own_ddim_step(core: &Core, i: usize, fresh: f64, kept: f64, p: &mut StepParams) {
    let g = &core.grid;
    let (a, b, an) = (g.a[i], g.b[i], g.a_next[i]);
    p.coef1 = (an - kept * a / b) as f32;
    p.coef2 = (kept / b) as f32;
    p.flags &= FLAG_CLIP;
    if fresh > 0.0 {
        p.flags |= FLAG_NOISE;
        p.log_var_fixed = (2.0 * fresh.ln()) as f32;
    }
}

/// DDNM+ itself: the [`SvdStep`] with `ddnm_spectral`.
pub struct Ddnm {
    step: SvdStep,
}

impl MethodStep for Ddnm {
    fn name() -> &'static str {
        "ddnm"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&ETA]
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let (step, plan, init) = SvdStep::plan(gpu, core, post, ("DDNM+", "ddnm_spectral", ETA.name))?;
        Ok(Planned::new(Ddnm { step }, plan).with_init(init))
    }

    fn label(&self) -> &'static str {
        "DDNM+"
    }

    /// y~'s whitening reads m_per from the step uniform.
    fn prepare_init(&self, gpu: &Gpu, core: &Core) -> Result<(), SamplerError> {
        core.write_shape(gpu);
        Ok(())
    }

    /// The base step x' = a' x0hat + sigma_t sqrt(1 - eta^2) epshat +
    /// sigma_t eta z and the correction V delta ([`SvdStep::params`]).
    fn params(&self, _gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let eta = core.opts.method.number(ETA.name).expect("--ddnm-eta has a default") as f64;
        p.method = MethodBlock::of(&self.step.params(core, i, eta, p));
    }

    fn y(&self) -> Option<&Tensor> {
        Some(self.step.y())
    }
}
