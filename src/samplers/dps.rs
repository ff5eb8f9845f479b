//! DPS (Chung et al., 2023): x_{t-1} = base_step(x_t) - zeta grad_{x_t} |y - A x0hat(x_t)|,
//! the non-squared norm per sample. The base step is DDPM's, DDIM's or, on a
//! flow model, an Euler step of its ODE; x0hat comes from whatever the model
//! predicts (for a flow's velocity u, x0hat = x_t - t u, and the gradient runs
//! through the velocity network's VJP). With clipping on, x0hat is clamped to
//! [-1, 1] inside the norm and the clamp's derivative (0 outside the range)
//! masks the gradient, as autograd through `clamp` does upstream. The
//! gradient is x0_x g0 + x0_out J^T g0 with g0 = -J_A(x0hat)^T r / |r| masked
//! (-A^T r / |r| for a linear measurement; a non-linear one supplies its own
//! VJP) and J the Jacobian of the model's output (its VJP): (g0 - b_t J^T g0)
//! / a_t for an eps-model.

use super::kernels::{DpsDirection, DpsDirectionRows};
use super::options::{Kind, OptionSpec, Value};
use super::{Core, Measurement, MethodStep, Planned, Posterior, SamplerError, StepParams};
use crate::gpu::{Dispatch, Plan};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::reduce::BatchedDot;
use crate::operators::task::Task;
use crate::tensor::Tensor;
use crate::Gpu;

/// Measurements up to this size per sample take the one-thread-per-sample norm
/// (a shared-memory reduction per 2-element row costs more than the math).
const ROWS_MAX: usize = 1024;

/// DPS's step size when neither the caller nor `--zeta` gives one (the
/// command line gives [`default_zeta`]'s by task at its step count).
pub const DEFAULT_ZETA: f32 = 1.0;

/// The step count DPS's constants are made for: Chung et al. take 1000 DDPM
/// steps, one guided step each.
pub const PAPER_STEPS: usize = 1000;

/// How far one guided step may move x: the cap of [`ZetaRule::PerStep`].
/// On the 8 tuning images at 20 steps the best pull was about this long for
/// box inpainting (gain 1; zeta 2 / 4 / 8: 21.44 / 22.83 / 20.05 dB) and x2 SR
/// (gain about 1/2; zeta 4 / 8 / 15: 20.89 / 22.40 / 20.57 dB); see
/// docs/accuracy.md, "Step sizes at 20 steps".
pub const MAX_MOVE: f32 = 4.0;

/// DPS's default step size, as a function of the step count.
///
/// The paper's zeta is made for 1000 DDPM steps: each one pulls x toward
/// the measurement by zeta along the normalised gradient of |y - A x0hat|,
/// and over a run those pulls add up while the noise of each step undoes
/// part of them. Respaced to K steps, each step spans 1000 / K DDPM steps
/// and gets one pull, so keeping the run's total pull takes
/// zeta_K = zeta_1000 x 1000 / K; with the paper's constant as it is, 20
/// steps pull 50 times less and leave the measurement unkept.
///
/// A single pull must not overshoot, though: it moves x by
/// zeta |A^T r| / (a_t |r|), up to zeta s / a_t for the operator's largest
/// gain s, and past a few units it jumps over the posterior's mass instead of
/// walking into it. So zeta_K stops at [`MAX_MOVE`] / s, which bounds coarse
/// schedules only (box inpainting below 125 steps, x2 SR below 38); at 1000
/// steps zeta_K is the paper's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZetaRule {
    /// This zeta at any step count: `gmm`'s, and a non-linear measurement's
    /// (phase retrieval, JPEG), whose gain the bound above does not cover.
    Fixed(f32),
    /// The paper's zeta `paper` for 1000 steps, times 1000 / steps, at most
    /// [`MAX_MOVE`] / `gain` (never below `paper`), for a linear operator
    /// whose largest singular value is about `gain`.
    PerStep { paper: f32, gain: f32 },
}

impl ZetaRule {
    /// The zeta of a run of `steps` steps.
    pub fn at(self, steps: usize) -> f32 {
        match self {
            ZetaRule::Fixed(zeta) => zeta,
            ZetaRule::PerStep { paper, gain } => {
                // paper x 1000 first: whole numbers for the shipped constants,
                // so 50 steps of SR's 0.3 record 6, not 6.0000005.
                let scaled = paper * PAPER_STEPS as f32 / steps.max(1) as f32;
                scaled.min((MAX_MOVE / gain).max(paper))
            }
        }
    }
}

impl From<f32> for ZetaRule {
    fn from(zeta: f32) -> ZetaRule {
        ZetaRule::Fixed(zeta)
    }
}

/// DPS's step size by task ([`ZetaRule`]): the official 1000-step values,
/// 0.5 for inpainting, 0.3 for blur, SR and the other linear tasks, scaled
/// to the step count and capped by the operator's largest gain `gain`
/// (||A||_2, measured: [`crate::operators::gain::largest_gain`]; 1 for
/// inpainting and the blurs, about 1/2 for x2 bicubic SR, 1/4 at x4). The
/// non-linear ones keep theirs at any step count: 0.4 for phase retrieval,
/// and for JPEG 4 x 0.3, as the cubic stand-in's slope through the rounding
/// averages 1/4. A linear task without a measured gain takes the cap of
/// gain 1.
pub fn default_zeta(task: Task, gain: Option<f32>) -> ZetaRule {
    let gain = gain.unwrap_or(1.0);
    match task {
        Task::PhaseRetrieval => ZetaRule::Fixed(0.4),
        Task::Jpeg => ZetaRule::Fixed(1.2),
        t if t.is_inpainting() => ZetaRule::PerStep { paper: 0.5, gain },
        _ => ZetaRule::PerStep { paper: 0.3, gain },
    }
}

/// `--zeta`.
pub const ZETA: OptionSpec = OptionSpec {
    name: "zeta",
    help: "DPS step size. Default: DPS's value for 1000 steps (0.5 for inpainting, 0.3 otherwise) times \
           1000 / steps, at most 4 / s for the operator's largest singular value s (measured: 1 for \
           inpainting and blur, about 1/2 for x2 SR): inpainting / x2 SR take 4 / 8 at 20 steps, 4 / 6 at \
           50, 0.5 / 0.3 at 1000. \
           Fixed at any step count: 0.4 for phase retrieval, 1.2 for JPEG, 1.0 for gmm",
    kind: Kind::Number,
    default: None,
    check: finite,
};

/// The check `--zeta` and `--lambda` share.
pub fn finite(v: Value) -> Result<(), String> {
    match v {
        Value::Number(x) if !x.is_finite() => Err("--zeta and --lambda must be finite numbers".into()),
        _ => Ok(()),
    }
}

/// The residual at the model's estimate, the start of every step that
/// measures x0hat (DPS, PiGDM, DiffPIR): y, x0hat (clamped when clipping) and
/// the clamp's mask, A x0hat and r = y - resid_scale A x0hat. Only `y` is read
/// from the host side; the others are held for the plan's bind groups.
#[allow(dead_code)]
pub struct Residual {
    /// the measurement y [N, m]
    pub(super) y: Tensor,
    /// x0hat(x_t), clamped when clipping [N, ...]
    pub(super) x0: Tensor,
    /// the clamp's derivative (1 inside [-1, 1]) [N, ...]
    pub(super) mask: Tensor,
    /// A x0hat [N, m]
    ax: Tensor,
    /// the residual y - A x0hat [N, m]
    pub(super) r: Tensor,
}

impl Residual {
    /// The buffers and the plan: the model, x0hat and its mask, A x0hat, r.
    pub(super) fn plan(gpu: &Gpu, core: &Core, m: &Measurement<'_>) -> Result<(Residual, Plan), SamplerError> {
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let shape = core.x.shape.clone();
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let x0 = Tensor::zeros(gpu, "x0hat", &shape)?;
        let mask = Tensor::zeros(gpu, "clamp mask", &shape)?;
        let ax = Tensor::zeros(gpu, "A x0hat", &[n, m_per])?;
        let r = Tensor::zeros(gpu, "residual", &[n, m_per])?;
        let mut plan = core.eps_plan.clone();
        plan.push(core.x0_and_mask(gpu, &x0, &mask)?);
        plan.extend(m.op.forward(gpu, &x0, &ax)?);
        plan.push(core.residual(gpu, &y, &ax, &r)?);
        Ok((Residual { y, x0, mask, ax, r }, plan))
    }
}

/// The buffers of a step guided through x0hat's residual and the model's
/// VJP (DPS, PiGDM): the [`Residual`] (DPS turns r into its direction in
/// place), a method's direction g0 from it (the gradient at x0hat), masked,
/// and h = J^T g0, held for the plan's bind groups.
#[allow(dead_code)]
pub struct X0Guidance {
    res: Residual,
    /// g0, the direction at x0hat, masked [N, ...]
    g0: Tensor,
    /// h = J^T g0, the model's VJP [N, ...]
    h: Tensor,
    /// g0 *= mask
    masker: Elementwise,
}

impl X0Guidance {
    /// The step of `what` ("DPS"): the model, x0hat and its mask, A x0hat,
    /// r = y - resid_scale A x0hat, then `direction`'s plan of g0 from
    /// (x0hat, r) (with what it keeps, `T`), g0 masked, its VJP h and the
    /// base step plus guide g0 + guide2 h.
    pub(super) fn plan<T>(
        gpu: &Gpu,
        core: &Core,
        post: &Posterior<'_>,
        what: &str,
        direction: impl FnOnce(&Core, &Tensor, &Tensor, &Tensor) -> Result<(Plan, T), SamplerError>,
    ) -> Result<(X0Guidance, T, Plan), SamplerError> {
        let m = post.measurement(what)?;
        let shape = core.x.shape.clone();
        let (res, mut plan) = Residual::plan(gpu, core, m)?;
        let g0 = Tensor::zeros(gpu, "grad x0hat", &shape)?;
        let h = Tensor::zeros(gpu, "eps vjp", &shape)?;
        let masker = Elementwise::new(gpu, Op::Mul, &res.mask, &g0, 0.0, 0.0)?;
        let (dir, kept) = direction(core, &res.x0, &res.r, &g0)?;
        plan.extend(dir);
        plan.push(masker.dispatch.clone());
        // The model VJP sees the same (x_t, t) as the eps plan above.
        plan.extend(post.model.plan_vjp(gpu, &core.x, &core.t, &g0, &h)?);
        plan.push(core.z_dispatch());
        plan.push(core.ddpm_step(gpu, &g0, &h)?);
        let guidance = X0Guidance { res, g0, h, masker };
        Ok((guidance, kept, plan))
    }

    /// The measurement y [N, m].
    pub(super) fn y(&self) -> &Tensor {
        &self.res.y
    }
}

/// DPS: [`X0Guidance`] with g0 = J_A(x0hat)^T (-r / |r|).
pub struct Dps {
    guidance: X0Guidance,
    /// |r| per sample, for measurements over `ROWS_MAX` per sample
    #[allow(dead_code)]
    norm: Option<BatchedDot>,
}

impl MethodStep for Dps {
    fn name() -> &'static str {
        "dps"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&ZETA]
    }

    fn uses_vjp(_opts: &super::MethodOptions, _svd: bool) -> bool {
        true
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("DPS")?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let direction = |core: &Core, x0: &Tensor, r: &Tensor, g0: &Tensor| {
            let mut plan = Plan::new();
            let mut norm = None;
            if m_per <= ROWS_MAX {
                let groups = [n.div_ceil(64) as u32, 1, 1];
                let b = DpsDirectionRows {
                    s: &core.step_uniform,
                    r,
                };
                plan.push(Dispatch::typed(gpu, "dps_direction_rows", &[], &b, groups)?);
            } else {
                let dot = BatchedDot::new(gpu, r, r, n, true)?;
                plan.extend(dot.plan.clone());
                let b = DpsDirection {
                    s: &core.step_uniform,
                    norm: &dot.out,
                    r,
                };
                plan.push(core.launch(gpu, "dps_direction", &b, n * m_per)?);
                norm = Some(dot);
            }
            // J_A(x0hat)^T of the direction: A^T r for a linear measurement.
            plan.extend(m.op.vjp(gpu, x0, r, g0)?);
            Ok((plan, norm))
        };
        let (guidance, norm, plan) = X0Guidance::plan(gpu, core, post, "DPS", direction)?;
        Ok(Planned::new(Dps { guidance, norm }, plan))
    }

    fn label(&self) -> &'static str {
        "DPS"
    }

    /// The base step minus zeta (d x0hat / d x)^T g0 = zeta (x0_x g0 + x0_out h):
    /// guide = -zeta x0_x, guide2 = -zeta x0_out (for an eps-model -zeta / a_t
    /// and zeta b_t / a_t; for a flow's velocity -zeta and zeta b_t).
    fn params(&self, _gpu: &Gpu, core: &Core, _i: usize, p: &mut StepParams) {
        let zeta = core.opts.method.number(ZETA.name).unwrap_or(DEFAULT_ZETA);
        p.resid_scale = 1.0;
        p.guide = -zeta * p.x0_x;
        p.guide2 = -zeta * p.x0_out;
    }

    fn y(&self) -> Option<&Tensor> {
        Some(self.guidance.y())
    }
}
