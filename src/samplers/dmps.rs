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
use super::{need_linear, Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, Stat, StepKind, StepParams};
use crate::process::Process;

/// a_t at or below which the likelihood is taken as flat (a flow's t = 1).
const A_FLAT: f64 = 1e-9;
use crate::tensor::Tensor;
use crate::Gpu;

/// DMPS's lambda on a VP diffusion (the paper's DDPM value).
pub const LAMBDA_VP: f32 = 1.75;
/// DMPS's lambda on a flow model (the paper's Algorithm 2 default).
pub const LAMBDA_FLOW: f32 = 2.0;

/// `--lambda`.
pub const LAMBDA: OptionSpec = OptionSpec {
    name: "lambda",
    help: "DMPS lambda (default: the paper's 1.75 on a VP diffusion, 2.0 on a flow model; 1.75 is \
           made for 1000 DDPM steps: with a few dozen respaced steps it overshoots, and about 1 is stable)",
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
}

/// DMPS's buffers and solver. Only `y` and `cg` are read from the host side;
/// the others are held for the plan's bind groups.
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
}

/// DMPS's solve of (sigma_y^2 I + c A A^T) u = r.
#[allow(dead_code)]
enum Solve {
    /// Through the SVD form: `coeffs` holds U^T r, scaled in place.
    Svd { coeffs: Tensor },
    /// Matrix-free CG in measurement space: u, the diagonal sigma_y^2.
    Cg { cg: Box<Cg>, u: Tensor, diag: Tensor },
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
        let solve = if use_svd {
            let svd = op.svd().expect("checked above");
            let c = Tensor::zeros(gpu, "spectral residual", &[n, m_per])?;
            plan.extend(svd.ut(gpu, &r, &c)?);
            let b = Spectral {
                s: &core.step_uniform,
                sing: svd.singulars(),
                c: &c,
            };
            plan.push(core.launch(gpu, "dmps_spectral", &b, n * m_per)?);
            plan.extend(svd.v(gpu, &c, &g)?);
            Solve::Svd { coeffs: c }
        } else {
            let u = Tensor::zeros(gpu, "dmps solve", &[n, m_per])?;
            let diag = Tensor::from_slice(gpu, "sigma_y^2", &[n, m_per], &vec![sigma_y2; n * m_per])?;
            let sys = CgSystem {
                op,
                space: Space::Output,
                b: &r,
                x: &u,
                diag: &diag,
                weight: None,
                gamma: 0.0,
            };
            let cg = Cg::new(gpu, sys, CgStop::from_options(&core.opts.method))?;
            plan.extend(cg.plan.clone());
            plan.extend(op.adjoint(gpu, &u, &g)?);
            Solve::Cg {
                cg: Box::new(cg),
                u,
                diag,
            }
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
        };
        Ok(Planned::new(dmps, plan))
    }

    fn label(&self) -> &'static str {
        "DMPS"
    }

    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let g = &core.grid;
        let (a, b) = (g.a[i], g.b[i]);
        // a = 0 only at a flow's t = 1, where p(y | x_t) is flat: no guidance (see above).
        let (guide, c, resid_scale) = if a <= A_FLAT {
            (0.0, 0.0, 0.0)
        } else {
            let weight = match core.kind {
                StepKind::Ddpm => {
                    let alpha = 1.0 - core.schedule().betas[i];
                    (1.0 - alpha) / alpha.sqrt()
                }
                StepKind::Ddim(_) | StepKind::Euler => b * (g.a_next[i] * b / a - core.eps_coef(i)),
            };
            let lambda = lambda(&core.opts.method, &core.process);
            (lambda as f64 * weight / a, (b / a) * (b / a), 1.0 / a)
        };
        p.resid_scale = resid_scale as f32;
        p.guide = guide as f32;
        p.guide2 = 0.0;
        p.method = MethodBlock::of(&DmpsStep {
            sigma_y2: self.sigma_y2,
            gamma: c as f32,
        });
        if let Solve::Cg { cg, .. } = &self.solve {
            cg.set_gamma(gpu, c as f32);
        }
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }

    fn stats(&self, gpu: &Gpu, _steps: usize) -> Result<Vec<Stat>, SamplerError> {
        Ok(match &self.solve {
            Solve::Cg { cg, .. } => vec![Stat::Cg(cg.stats(gpu)?)],
            Solve::Svd { .. } => Vec::new(),
        })
    }
}
