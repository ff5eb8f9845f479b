//! DMPS (Meng & Kabashima): after the DDPM step add
//! lambda (1 - alpha_t) / sqrt(alpha_t) (1 / a_t) A^T (sigma_y^2 I + (b_t / a_t)^2 A A^T)^{-1} (y - A x_t / a_t),
//! the closed-form score of the pseudo-likelihood, evaluated at x_t. Applied
//! through the operator's SVD form, A^T (sigma^2 + c A A^T)^{-1} = V diag(s / (sigma^2 + c s^2)) U^T,
//! or, for operators without one, by matrix-free CG on (sigma_y^2 I + c A A^T)
//! in measurement space followed by A^T.
//!
//! **On other base steps and on flow models** (the DMPS paper's Algorithm 2).
//! Every step here is x' = a' x0hat + c epshat (+ noise), epshat = -b grad log p_t;
//! replacing the prior score by the posterior's, grad log p_t + grad log p(y | x_t),
//! moves x' by b (a' b / a - c) grad log p(y | x_t) (times lambda). For a flow
//! (a = 1 - t, b = t, an Euler step of dt: a' = a + dt, c = b' = b - dt) this is
//! b (a'_t b_t - a_t b'_t) / a_t lambda grad log p(y | x_t) dt with the
//! derivatives in the sampler's direction, i.e. the paper's added term
//! -b (a'b - ab') / a lambda grad dt in forward time, and the score
//! (a u - a' x) / (b (a' b - a b')) from the velocity u (its eq. 8) is what the
//! Euler step x - dt u already follows. For DDIM, c = sqrt(b'^2 - sigma^2).
//! DDPM keeps the paper's (1 - alpha_t) / sqrt(alpha_t).
//!
//! grad log p(y | x_t) = (1 / a) A^T (sigma_y^2 I + (b / a)^2 A A^T)^{-1} (y - A x_t / a)
//! is the same in every case. At the noise end of a flow (a_t = 0, t = 1) x_t
//! carries no information about x0, so the true likelihood p(y | x_t) is flat
//! and its gradient is 0; the approximation's 1 / a terms are not evaluated
//! there (the step is the plain Euler step) and nothing divides by a.

use super::cg::{self, Cg, CgStop, CgSystem, Space};
use super::kernels::Spectral;
use super::options::{self as opt, choice_enum, Kind, OptionSpec};
use super::{need_linear, Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, Stat, StepParams};
use crate::gpu::Plan;
use crate::operators::LinearOperator;
use crate::process::Process;

/// a_t at or below which the likelihood is taken as flat (a flow's t = 1).
pub(super) const A_FLAT: f64 = 1e-9;
use crate::tensor::Tensor;
use crate::Gpu;

/// DMPS's lambda on a VP diffusion (the paper's DDPM value).
pub const LAMBDA_VP: f32 = 1.75;
/// DMPS's lambda on a flow model (the paper's Algorithm 2 default).
pub const LAMBDA_FLOW: f32 = 2.0;

/// `--lambda`.
pub const LAMBDA: OptionSpec = OptionSpec {
    name: "lambda",
    help: "DMPS lambda (default: the paper's 1.75 on a VP diffusion, 2.0 on a flow model). The step \
           moves each measured direction at most onto the measurement at the level it steps to and \
           never enlarges its distance from it (its gain is capped at min(a_{t-1} / a_t, the base \
           step's coefficient on x_t + 1, or + 1/2 with x0hat clipped)), so the default holds at any \
           step count; at 1000 steps the cap never acts",
    kind: Kind::Number,
    default: None,
    check: super::dps::finite,
};

choice_enum! {
    /// How DMPS applies (sigma_y^2 I + c A A^T)^{-1}.
    pub enum DmpsSolver {
        Auto => "auto", "The SVD form when the operator has one, CG otherwise",
        Svd => "svd", "The SVD form (refused for an operator without one)",
        Cg => "cg", "Matrix-free CG in measurement space",
    }
}

/// `--dmps-solver`.
pub const SOLVER: OptionSpec = OptionSpec {
    name: "dmps-solver",
    help: "DMPS linear solve: SVD form when available, or CG",
    kind: Kind::Choice(DmpsSolver::CHOICES),
    default: Some("auto"),
    check: opt::any,
};

/// DMPS's lambda in `opts` on `process`: the one given, or the paper's default for it.
pub fn lambda(opts: &opt::MethodOptions, process: &Process) -> f32 {
    opts.number(LAMBDA.name)
        .unwrap_or(if process.is_flow() { LAMBDA_FLOW } else { LAMBDA_VP })
}

/// DMPS's block of the step uniform (`dmps_sigma_y2()`, `dmps_gamma()` in
/// shaders/sampler.wgsl), read by `dmps_spectral`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DmpsStep {
    /// sigma_y^2
    pub sigma_y2: f32,
    /// c = (b_t / a_t)^2, the weight of A A^T
    pub gamma: f32,
    /// the largest gain a direction takes ([`carried_gain_cap`])
    pub gain_cap: f32,
}

/// DMPS's buffers and solver. Only `y` and `solve` are read from the host
/// side; the others are held for the plan's bind groups.
#[allow(dead_code)]
pub struct Dmps {
    /// the measurement y [N, m]
    y: Tensor,
    /// A x_t [N, m]
    ax: Tensor,
    /// r = y - A x_t / a_t [N, m]
    r: Tensor,
    /// how (sigma_y^2 I + c A A^T)^{-1} is applied
    solve: Solve,
    /// the direction A^T (sigma_y^2 I + c A A^T)^{-1} r [N, ...]
    g: Tensor,
    sigma_y2: f32,
    /// ||A||_2^2 (CG only), which bounds every direction's gain (see [`gain`])
    s_max2: f64,
}

/// The solve of (d I + c A A^T) u = r behind g = A^T u (DMPS's with d =
/// sigma_y^2; DiffPIR's data step with d = 1, c = 1 / rho_t).
#[allow(dead_code)]
pub(super) enum Solve {
    /// Through the SVD form: `coeffs` holds U^T r, scaled in place by
    /// `dmps_spectral` to s / (d + c s^2) U^T r (d and c from [`DmpsStep`]).
    Svd { coeffs: Tensor },
    /// Matrix-free CG in measurement space: u and the diagonal d (c is the
    /// CG's gamma, [`Cg::set_gamma`]).
    Cg { cg: Box<Cg>, u: Tensor, diag: Tensor },
}

impl Solve {
    /// The solve of the residual `r` [N, m] and g = A^T u [N, ...], and its
    /// plan: through `op`'s SVD form when `use_svd`, else by CG (its stop
    /// from `--cg-tol` and `--cg-iters`) with the diagonal `d`.
    pub(super) fn plan(
        gpu: &Gpu,
        core: &Core,
        op: &dyn LinearOperator,
        use_svd: bool,
        d: f32,
        r: &Tensor,
        g: &Tensor,
    ) -> Result<(Solve, Plan), SamplerError> {
        let [n, m_per] = [r.shape[0], r.numel() / r.shape[0]];
        let mut plan = Plan::new();
        if use_svd {
            let svd = op.svd().expect("the caller checked the SVD form");
            let c = Tensor::zeros(gpu, "spectral residual", &[n, m_per])?;
            plan.extend(svd.ut(gpu, r, &c)?);
            let b = Spectral {
                s: &core.step_uniform,
                sing: svd.singulars(),
                c: &c,
            };
            plan.push(core.launch(gpu, "dmps_spectral", &b, n * m_per)?);
            plan.extend(svd.v(gpu, &c, g)?);
            return Ok((Solve::Svd { coeffs: c }, plan));
        }
        let u = Tensor::zeros(gpu, "weighted solve", &[n, m_per])?;
        let diag = Tensor::from_slice(gpu, "solve diagonal", &[n, m_per], &vec![d; n * m_per])?;
        let sys = CgSystem {
            op,
            space: Space::Output,
            b: r,
            x: &u,
            diag: &diag,
            weight: None,
            gamma: 0.0,
        };
        let cg = Cg::new(gpu, sys, CgStop::from_options(&core.opts.method))?;
        plan.extend(cg.plan.clone());
        plan.extend(op.adjoint(gpu, &u, g)?);
        let cg = Box::new(cg);
        Ok((Solve::Cg { cg, u, diag }, plan))
    }

    /// Sets c for the next solve (the SVD form reads it from the step's block).
    pub(super) fn set_gamma(&self, gpu: &Gpu, c: f32) {
        if let Solve::Cg { cg, .. } = self {
            cg.set_gamma(gpu, c);
        }
    }

    /// The CG's statistics (none through the SVD form).
    pub(super) fn stats(&self, gpu: &Gpu) -> Result<Vec<Stat>, SamplerError> {
        Ok(match self {
            Solve::Cg { cg, .. } => vec![Stat::Cg(cg.stats(gpu)?)],
            Solve::Svd { .. } => Vec::new(),
        })
    }
}

/// How far DMPS's update moves x_t's component along a singular direction of
/// A (singular value s) per unit of that component's residual:
/// guide resid_scale s^2 / (sigma_y^2 + c s^2), which at a DDPM step is
/// lambda beta'_t s^2 / (sqrt(alpha'_t) (a_t^2 sigma_y^2 + b_t^2 s^2)).
///
/// The paper's lambda 1.75 is made for 1000 steps, where beta'_t is small
/// and the gain stays far below 1; 10 respaced steps put it near 10, and the
/// step throws the sample past the measurement by more than it corrects
/// (DMPS diverged there). Capping each direction's gain at [`carried_gain_cap`]
/// keeps the paper's update wherever it is stable (every step of a 1000-step
/// run) and makes DMPS's defaults hold at any step count. The SVD form caps
/// each direction (`dmps_spectral`); CG has no spectrum, so it scales the
/// whole step by the largest direction's cap (s = ||A||_2: the gain grows
/// with s), which never overshoots either.
pub fn gain(guide: f64, resid_scale: f64, sigma_y2: f64, c: f64, s2: f64) -> f64 {
    let den = sigma_y2 + c * s2;
    if den > 0.0 {
        (guide * resid_scale).abs() * s2 / den
    } else {
        0.0
    }
}

/// The most a direction's gain may be at a step from level a_t to a_{t-1}:
/// a_{t-1} / a_t (at least 1). DMPS's term pulls x_t's measured component u
/// toward a_t y / s, the measurement at x_t's level, while the base step
/// carries u on to level a_{t-1} (its mean scales a measured component by
/// about a_{t-1} / a_t when x0hat follows x_t): a gain of a_{t-1} / a_t lands
/// the step on the measurement at the level it arrives at, a larger one
/// overshoots it. A 1000-step schedule keeps every gain far below 1, so the
/// cap never acts there (`tests/dmps_steps.rs`). DMPS and ALD tighten it
/// with [`carried_gain_cap`].
pub fn gain_cap(a: f64, a_next: f64) -> f64 {
    if a > 0.0 {
        (a_next / a).max(1.0)
    } else {
        1.0
    }
}

/// The most of a measured component's deviation from the measurement that
/// a DMPS step on a clipped x0hat may hand on, sign flipped
/// ([`carried_gain_cap`]).
pub const FLIP_LEFT: f64 = 0.5;

/// DMPS's cap: [`gain_cap`], and at most `carry` + [`FLIP_LEFT`] when x0hat
/// is clipped to [-1, 1] (`clipped`), `carry` + 1 when not, where `carry` is
/// the base step's coefficient on x_t itself (`coef2` of x' = coef1 x0hat +
/// coef2 x_t: DDPM's posterior-mean coefficient, c / b for DDIM and Euler).
///
/// Why: [`gain_cap`] assumes the base step carries u by a_{t-1} / a_t, which
/// holds only where x0hat follows x_t (d x0hat / du = 1 / a_t, low noise). At
/// high noise the network's x0hat barely moves with u (the prior decides
/// it), and the base step carries u by `carry` alone (0.35-0.5 over the
/// first steps of a 10-step schedule, where a_{t-1} / a_t is 1.5-2.9). u's
/// deviation from the measurement then leaves the step multiplied by
/// carry - gain, and with the paper's lambda 1.75 capped only at
/// a_{t-1} / a_t that is -0.9 to -2.5 at each of the first nine steps: the
/// measured components' noise could grow some 18-fold over 10 steps, x0hat
/// clipped to +-1, and `tweedie restore --method dmps --steps 10` returned
/// black-and-white noise (x2 SR 4.8 dB, box 5.8 dB, against A^+ y's 20.6 and
/// 16.9 on the first four test images). With gain at most carry + 1,
/// carry - gain >= -1: whatever x0hat does with u (its slope from 0 to
/// 1 / a_t), the step does not pass the measurement at the level it steps to
/// nor enlarge u's deviation from it. With x0hat clipped, a clipped pixel's
/// x0hat ignores u outright (most pixels over the first steps, where x_t / a_t
/// is far outside [-1, 1]), and carry + 1 still left 13.9 / 11.4 dB (SR / box)
/// on the first two test images; carry + 1/2, which at least halves the
/// deviation, gives 18.9 / 19.0 (carry + 1/4: 18.2 / 18.1; carry + 0.8 16.9 /
/// 15.1). Unclipped (the mixtures, `tests/dmps_steps.rs`) carry + 1/2 trails a
/// float64 DMPS with lambda 1 by 0.43 sliced W2 on d8_m2 and carry + 1 by
/// 0.04. The cap is at least 1/2, and a 1000-step run keeps every gain below
/// it (`tests/dmps_steps.rs`), so it is the paper's update still.
pub fn carried_gain_cap(a: f64, a_next: f64, carry: f64, clipped: bool) -> f64 {
    let left = if clipped { FLIP_LEFT } else { 1.0 };
    gain_cap(a, a_next).min(carry.max(0.0) + left)
}

/// How much [`largest_singular2`] raises its estimate, to cover the power
/// iteration's approach from below.
pub(super) const POWER_RAISE: f64 = 1.01;

/// ||A||_2^2 by power iteration on A^T A ([`crate::operators::gain::power_gain`]),
/// raised by [`POWER_RAISE`].
pub(super) fn largest_singular2(gpu: &Gpu, op: &dyn crate::operators::LinearOperator) -> Result<f64, SamplerError> {
    let s = crate::operators::gain::power_gain(gpu, op)? as f64;
    Ok(s * s * POWER_RAISE)
}

impl MethodStep for Dmps {
    fn name() -> &'static str {
        "dmps"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&LAMBDA, &cg::TOL, &cg::ITERS, &SOLVER]
    }
    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("DMPS")?;
        let op = need_linear(m, "DMPS")?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let ax = Tensor::zeros(gpu, "A x_t", &[n, m_per])?;
        let r = Tensor::zeros(gpu, "residual", &[n, m_per])?;
        let g = Tensor::zeros(gpu, "dmps direction", &core.x.shape)?;
        let mut plan = core.eps_plan.clone();
        plan.extend(op.forward(gpu, &core.x, &ax)?);
        plan.push(core.residual(gpu, &y, &ax, &r)?);
        let solver = DmpsSolver::from_choice(core.opts.method.choice(SOLVER.name)).expect("a checked choice");
        let use_svd = match solver {
            DmpsSolver::Auto => op.svd().is_some(),
            DmpsSolver::Svd => {
                if op.svd().is_none() {
                    return Err(SamplerError::Invalid(format!(
                        "operator {} has no SVD form; use CG",
                        m.op.name()
                    )));
                }
                true
            }
            DmpsSolver::Cg => false,
        };
        let sigma_y2 = m.sigma_y * m.sigma_y;
        let (solve, solve_plan) = Solve::plan(gpu, core, op, use_svd, sigma_y2, &r, &g)?;
        plan.extend(solve_plan);
        let s_max2 = match solve {
            Solve::Cg { .. } => largest_singular2(gpu, op)?,
            Solve::Svd { .. } => 0.0,
        };
        plan.push(core.z_dispatch());
        plan.push(core.ddpm_step(gpu, &g, &g)?);
        let dmps = Dmps {
            y,
            ax,
            r,
            solve,
            g,
            sigma_y2,
            s_max2,
        };
        Ok(Planned::new(dmps, plan))
    }

    fn label(&self) -> &'static str {
        "DMPS"
    }

    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let g = &core.grid;
        let (a, b) = (g.a[i], g.b[i]);
        let cap_here = carried_gain_cap(a, g.a_next[i], p.coef2 as f64, core.opts.clip);
        // a = 0 only at a flow's t = 1, where p(y | x_t) is flat: no guidance (see above).
        let (guide, c, resid_scale) = if a <= A_FLAT {
            (0.0, 0.0, 0.0)
        } else {
            let weight = core.score_weight(i);
            let lambda = lambda(&core.opts.method, &core.process);
            let (guide, c, resid_scale) = (lambda as f64 * weight / a, (b / a) * (b / a), 1.0 / a);
            // CG's step is capped as a whole (the SVD form caps each direction on the GPU).
            let cap = match &self.solve {
                Solve::Cg { .. } => {
                    (gain(guide, resid_scale, self.sigma_y2 as f64, c, self.s_max2) / cap_here).max(1.0)
                }
                Solve::Svd { .. } => 1.0,
            };
            (guide / cap, c, resid_scale)
        };
        p.resid_scale = resid_scale as f32;
        p.guide = guide as f32;
        p.guide2 = 0.0;
        p.method = MethodBlock::of(&DmpsStep {
            sigma_y2: self.sigma_y2,
            gamma: c as f32,
            gain_cap: cap_here as f32,
        });
        self.solve.set_gamma(gpu, c as f32);
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }

    fn stats(&self, gpu: &Gpu, _steps: usize) -> Result<Vec<Stat>, SamplerError> {
        self.solve.stats(gpu)
    }
}
