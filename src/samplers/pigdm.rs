//! PiGDM (Song, Vahdat, Mardani & Kautz 2023, "Pseudoinverse-guided
//! diffusion models for inverse problems"): a DDIM step plus the guidance
//!
//!   g = ((y - A x0hat)^T (r_t^2 A A^T + sigma_y^2 I)^{-1} A d x0hat / d x_t)^T,
//!
//! the likelihood score of p(y | x_t) ~ N(A x0hat, r_t^2 A A^T + sigma_y^2 I)
//! with x0hat held as the mean and r_t^2 its variance: r_t^2 = sigma_t^2 /
//! (1 + sigma_t^2) for a VE sigma_t (the paper's choice, the posterior
//! variance of a unit Gaussian's x0), i.e. b^2 / (a^2 + b^2) for x_t = a x0 +
//! b eps, 1 - abar_t on a VP diffusion. The step follows NVlabs/RED-diff's
//! `algos/pgdm.py` (its `_configs/algo/pgdm.yaml`: eta 0, grad_term_weight 1,
//! adaptive weighting on):
//!
//!   x_{t-1} = a_{t-1} x0hat + c1 z + c2 epshat + w a_{t-1} a_t r_t^2 g,
//!   c1 = eta b_{t-1} sqrt(1 - (a_t b_{t-1} / (a_{t-1} b_t))^2),  c2 = sqrt(b_{t-1}^2 - c1^2),
//!
//! DDIM's c1 written for any a and b (on a VP diffusion eta sqrt((1 -
//! abar_t / abar_{t-1}) (1 - abar_{t-1}) / (1 - abar_t)), the code's). That
//! code is the noiseless case: its guidance is (d x0hat / d x_t)^T A^+ (y - A
//! x0hat) with the weight a_{t-1} a_t, which is r_t^2 g at sigma_y = 0; here
//! r_t^2 g keeps the paper's sigma_y. epshat comes from x0hat, (x_t - a_t
//! x0hat) / b_t, so a clipped x0hat stays consistent (unclipped it is the
//! model's eps, the code's).
//!
//! The inverse goes through the operator's SVD form, A^T (r^2 A A^T +
//! sigma_y^2)^{-1} = V diag(s / (r^2 s^2 + sigma_y^2)) U^T (DMPS's
//! `dmps_spectral` with its cap off), or, for a linear operator without one,
//! matrix-free CG on (sigma_y^2 I + r^2 A A^T) in measurement space
//! (DMPS's solve, [`super::dmps::Solve`], `--cg-tol`, `--cg-iters`). The
//! clamp's derivative masks the gradient at x0hat and the model's VJP
//! carries it to x_t, as in DPS ([`super::dps::X0Guidance`]). At a flow's
//! t = 1 (a_t = 0) the weight is 0 and the step is the plain Euler step,
//! which DDIM at eta 0 is on a flow.

use super::ald::{non_negative, unit_interval};
use super::cg;
use super::ddnm::own_ddim_step;
use super::dmps::{DmpsStep, Solve};
use super::dps::X0Guidance;
use super::options::{Kind, OptionSpec};
use super::{need_linear, Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, Stat, StepParams};
use crate::tensor::Tensor;
use crate::Gpu;

/// `--pigdm-eta`.
pub const ETA: OptionSpec = OptionSpec {
    name: "pigdm-eta",
    help: "PiGDM's DDIM eta (RED-diff's pgdm config: 0, deterministic steps; 1 is DDPM's variance) (0..1)",
    kind: Kind::Number,
    default: Some("0"),
    check: |v| unit_interval("pigdm-eta", v),
};

/// `--pigdm-weight`.
pub const WEIGHT: OptionSpec = OptionSpec {
    name: "pigdm-weight",
    help: "PiGDM's guidance weight w (RED-diff's grad_term_weight, 1): the step adds \
           w a_{t-1} a_t r_t^2 g, a weight the schedule sets at any step count",
    kind: Kind::Number,
    default: Some("1"),
    check: |v| non_negative("pigdm-weight", v),
};

/// PiGDM's buffers: the x0hat guidance's and the solve's.
pub struct Pigdm {
    guidance: X0Guidance,
    solve: Solve,
    sigma_y2: f32,
}

impl MethodStep for Pigdm {
    fn name() -> &'static str {
        "pigdm"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&ETA, &WEIGHT, &cg::TOL, &cg::ITERS]
    }

    fn uses_vjp(_opts: &super::MethodOptions, _svd: bool) -> bool {
        true
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("PiGDM")?;
        let op = need_linear(m, "PiGDM")?;
        core.refuse_base_step("PiGDM", "takes its own DDIM step (--pigdm-eta)")?;
        let sigma_y2 = m.sigma_y * m.sigma_y;
        // g0 = A^T (r^2 A A^T + sigma_y^2)^{-1} r at x0hat.
        let direction = |core: &Core, _x0: &Tensor, r: &Tensor, g0: &Tensor| {
            let (solve, plan) = Solve::plan(gpu, core, op, op.svd().is_some(), sigma_y2, r, g0)?;
            Ok((plan, solve))
        };
        let (guidance, solve, plan) = X0Guidance::plan(gpu, core, post, "PiGDM", direction)?;
        let pigdm = Pigdm {
            guidance,
            solve,
            sigma_y2,
        };
        Ok(Planned::new(pigdm, plan))
    }

    fn label(&self) -> &'static str {
        "PiGDM"
    }

    /// The DDIM step (c1 fresh, c2 on epshat) plus W (d x0hat / d x_t)^T g0 =
    /// W (x0_x g0 + x0_out h), W = w a_{t-1} a_t r_t^2; the spectral scaling
    /// reads sigma_y^2 and r_t^2 from DMPS's block, its cap at f32::MAX (off).
    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let g = &core.grid;
        let (a, b, an, bn) = (g.a[i], g.b[i], g.a_next[i], g.b_next[i]);
        let opts = &core.opts.method;
        let eta = opts.number(ETA.name).expect("--pigdm-eta has a default") as f64;
        let w = opts.number(WEIGHT.name).expect("--pigdm-weight has a default") as f64;
        let ratio = a * bn / (an * b);
        let c1 = eta * bn * (1.0 - ratio * ratio).max(0.0).sqrt();
        let c2 = (bn * bn - c1 * c1).max(0.0).sqrt();
        own_ddim_step(core, i, c1, c2, p);
        let r2 = b * b / (a * a + b * b);
        let weight = w * an * a * r2;
        p.resid_scale = 1.0;
        p.guide = (weight * p.x0_x as f64) as f32;
        p.guide2 = (weight * p.x0_out as f64) as f32;
        p.method = MethodBlock::of(&DmpsStep {
            sigma_y2: self.sigma_y2,
            gamma: r2 as f32,
            gain_cap: f32::MAX,
        });
        self.solve.set_gamma(gpu, r2 as f32);
    }

    fn y(&self) -> Option<&Tensor> {
        Some(self.guidance.y())
    }

    fn stats(&self, gpu: &Gpu, _steps: usize) -> Result<Vec<Stat>, SamplerError> {
        self.solve.stats(gpu)
    }
}
