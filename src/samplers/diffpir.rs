//! DiffPIR (Zhu et al. 2023, "Denoising diffusion models for plug-and-play
//! image restoration"; code yuanzhi-zhu/DiffPIR), half-quadratic splitting
//! with the diffusion model as the prior's proximal step. Each step takes
//! x0hat from the model, solves the data subproblem (the paper's eq. 13)
//!
//!   x0hat' = argmin_x ||y - A x||^2 + rho_t ||x - x0hat||^2,  rho_t = lambda sigma_y^2 / sigma_t^2,
//!
//! with sigma_t = b_t / a_t (x0hat's noise level), and steps to level t-1 with
//! the noise mixed by zeta (eq. 15):
//!
//!   x_{t-1} = a_{t-1} x0hat' + b_{t-1} (sqrt(1 - zeta) epshat + sqrt(zeta) z),
//!   epshat = (x_t - a_t x0hat') / b_t.
//!
//! The data step is closed-form: x0hat' = x0hat + A^T (rho_t I + A A^T)^{-1}
//! (y - A x0hat), the code's `data_solution` (its FFT form for SR and
//! deblurring, its mask form for inpainting) written for any linear A. It is
//! applied per singular direction through the SVD form where the operator
//! has one (s^2 / (s^2 + rho_t) of the residual's coordinates, DMPS's
//! `dmps_spectral` with d = rho_t, c = 1), and by the batched CG in
//! measurement space otherwise ((I + A A^T / rho_t) u = r, x0hat' = x0hat +
//! A^T u / rho_t). A non-linear measurement has no such step and is refused.
//!
//! Defaults are the code's configs: lambda 1 (all three), zeta 0.25 (its SR
//! config; deblurring takes 0.1, inpainting 1). sigma_y is floored at the
//! code's 0.001, so a noiseless measurement gets a tight but finite rho_t
//! (the data step then all but projects onto A x = y). The steps follow the
//! run's respaced schedule (guided-diffusion's uniform spacing) rather than
//! the code's quadratic one, and the data step is taken at every step, the
//! last included, as the paper's Algorithm 1 does. On a flow the same
//! formulas hold with its a_t = 1 - t, b_t = t; at t = 1 (a_t = 0) rho_t is
//! 0 and the data step is the projection.

use super::ald::{non_negative, unit_interval};
use super::cg;
use super::ddnm::own_ddim_step;
use super::dmps::{DmpsStep, Solve};
use super::dps::Residual;
use super::options::{Kind, OptionSpec};
use super::{need_linear, Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, Stat, StepParams};
use crate::tensor::Tensor;
use crate::Gpu;

/// The code's floor on sigma_y (`sigma = max(0.001, noise_level_img)`).
const SIGMA_Y_MIN: f64 = 0.001;
/// The least rho_t a step solves with (a flow's t = 1 gives 0; CG divides by it).
const RHO_MIN: f64 = 1e-8;

/// `--diffpir-lambda`.
pub const LAMBDA: OptionSpec = OptionSpec {
    name: "diffpir-lambda",
    help: "DiffPIR's lambda (the code's configs: 1): the data step's penalty rho_t = lambda sigma_y^2 / \
           sigma_t^2 on leaving x0hat; larger trusts the model more",
    kind: Kind::Number,
    default: Some("1"),
    check: |v| non_negative("diffpir-lambda", v),
};

/// `--diffpir-zeta`.
pub const ZETA: OptionSpec = OptionSpec {
    name: "diffpir-zeta",
    help: "DiffPIR's zeta (the code's SR config: 0.25; deblurring 0.1, inpainting 1): the share of \
           x_{t-1}'s noise variance drawn fresh, the rest from the step's epshat (0..1)",
    kind: Kind::Number,
    default: Some("0.25"),
    check: |v| unit_interval("diffpir-zeta", v),
};

/// DiffPIR's buffers. Only `res.y` and `solve` are read from the host side;
/// the others are held for the plan's bind groups.
#[allow(dead_code)]
pub struct Diffpir {
    /// y, x0hat, A x0hat and y - A x0hat
    res: Residual,
    /// the data step's move x0hat' - x0hat (times rho_t for CG) [N, ...]
    g: Tensor,
    solve: Solve,
    sigma_y2: f64,
}

impl MethodStep for Diffpir {
    fn name() -> &'static str {
        "diffpir"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&LAMBDA, &ZETA, &cg::TOL, &cg::ITERS]
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("DiffPIR")?;
        let op = need_linear(m, "DiffPIR")?;
        core.refuse_base_step("DiffPIR", "takes its own step (its noise mixed by --diffpir-zeta)")?;
        let (res, mut plan) = Residual::plan(gpu, core, m)?;
        let g = Tensor::zeros(gpu, "diffpir data step", &core.x.shape)?;
        let (solve, solve_plan) = Solve::plan(gpu, core, op, op.svd().is_some(), 1.0, &res.r, &g)?;
        plan.extend(solve_plan);
        plan.push(core.z_dispatch());
        plan.push(core.ddpm_step(gpu, &g, &g)?);
        let sy = (m.sigma_y as f64).max(SIGMA_Y_MIN);
        let diffpir = Diffpir {
            res,
            g,
            solve,
            sigma_y2: sy * sy,
        };
        Ok(Planned::new(diffpir, plan))
    }

    fn label(&self) -> &'static str {
        "DiffPIR"
    }

    /// The base step x' = coef1 x0hat + coef2 x_t + b' sqrt(zeta) z with
    /// coef1 = a' - c a / b, coef2 = c / b, c = b' sqrt(1 - zeta), and the
    /// data step's move added through x0hat's coefficient (guide coef1).
    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let (a, b, bn) = (core.grid.a[i], core.grid.b[i], core.grid.b_next[i]);
        let opts = &core.opts.method;
        let lambda = opts.number(LAMBDA.name).expect("--diffpir-lambda has a default") as f64;
        let zeta = opts.number(ZETA.name).expect("--diffpir-zeta has a default") as f64;
        let rho = (lambda * self.sigma_y2 * (a / b).powi(2)).max(RHO_MIN);
        own_ddim_step(core, i, bn * zeta.sqrt(), bn * (1.0 - zeta).max(0.0).sqrt(), p);
        p.resid_scale = 1.0;
        p.guide2 = 0.0;
        match &self.solve {
            // s / (rho + s^2) on U^T r; no gain cap (the step is a proximal one).
            Solve::Svd { .. } => {
                p.guide = p.coef1;
                p.method = MethodBlock::of(&DmpsStep {
                    sigma_y2: rho as f32,
                    gamma: 1.0,
                    gain_cap: f32::MAX,
                });
            }
            Solve::Cg { cg, .. } => {
                cg.set_gamma(gpu, (1.0 / rho) as f32);
                p.guide = (p.coef1 as f64 / rho) as f32;
            }
        }
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.res.y)
    }

    fn stats(&self, gpu: &Gpu, _steps: usize) -> Result<Vec<Stat>, SamplerError> {
        self.solve.stats(gpu)
    }
}
