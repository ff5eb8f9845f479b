//! Score-based annealed Langevin dynamics (Jalal et al. 2021, "Robust
//! compressed sensing MRI with deep generative priors"): the prior score is
//! replaced by the posterior's, with the likelihood score approximated as
//! grad log p(y | x) ~ A^T (y - A x) / (sigma_y^2 + gamma^2) for a sample x
//! = x0 + gamma eps (x0 blurred by noise gamma).
//!
//! **On a VP diffusion or a flow**, x_t = a_t x0 + b_t eps: x_t / a_t = x0 +
//! (b_t / a_t) eps is Jalal's sample at noise level gamma_t = b_t / a_t in
//! x0's units, and p(y | x_t) = p(y | x_t / a_t), so by the chain rule
//!
//!   grad_{x_t} log p(y | x_t) ~ (1 / a_t) A^T (y - A x_t / a_t) / (sigma_y^2 + gamma_t^2 ||A||^2)
//!                            = A^T (a_t y - A x_t) / (a_t^2 sigma_y^2 + b_t^2 ||A||^2),
//!
//! which is Jalal's term itself where a_t = 1 (gamma_t = b_t = sigma_t) and
//! ||A||_2 = 1. **The ||A||^2**: Jalal's denominator takes A A^T as I (the
//! x0 noise gamma eps reaches y as gamma A eps), right for the orthonormal
//! rows of subsampled Fourier MRI and of inpainting. The likelihood it
//! approximates does not change when y, A and sigma_y are scaled together,
//! but that approximation does: with A's singular values below 1 (x2 SR's
//! are at most 1/2, the mixture fixtures' 0.15-0.86) its guidance is too
//! weak by 1 / s^2 at high noise (measured: x2 SR 15.6 dB against the
//! baseline's 20.0 at 20 steps on 8 test images; with the norm 20.3 dB).
//! Jalal's term applied to the measurement rescaled to ||A||_2 = 1 (y, A and
//! sigma_y divided by ||A||_2, by power iteration) is the form above; it is
//! Jalal's own wherever ||A||_2 = 1.
//!
//! The step is the base reverse step (DDPM, DDIM or a flow's Euler step) plus
//! this term times `--ald-step` times the weight the base step gives its own
//! score ([`Core::score_weight`]): at `--ald-step 1` the likelihood score
//! takes the same step as the prior score, as in Jalal's Langevin update
//! x <- x + alpha (grad log p(x) + grad log p(y | x)) + sqrt(2 alpha) z.
//! The weight follows the schedule, so no constant is tuned to one step
//! count; a respaced schedule's large steps would still throw a strongly
//! measured direction past the measurement (the term's gain along a
//! direction of singular value s is step s^2 / (a_t^2 sigma_y^2 + b_t^2 ||A||^2),
//! 1 / sigma_y^2 large near t = 0), so the whole term is scaled down where
//! the largest direction's gain would pass DMPS's cap
//! ([`super::dmps::carried_gain_cap`]): a_{t-1} / a_t, and at most the base
//! step's carry on x_t plus 1/2 (x0hat clipped) or 1, since at high noise
//! x0hat barely follows x_t and the base step carries a measured component
//! by its coefficient on x_t alone. The step then neither passes the
//! measurement nor enlarges a component's deviation from it. On the first 4
//! held-out images at 10 steps the box went from 12.68 to 16.68 dB (baseline
//! 16.89) and x2 SR from 19.05 to 19.73 dB (20.62); at 20 steps from 19.25
//! to 20.49 and from 21.94 to 21.72. A 1000-step run keeps every gain below
//! the cap (`tests/dmps_steps.rs`), so ALD there is Jalal's update.
//!
//! At a flow's t = 1 (a_t = 0) x_t says nothing about x0: the likelihood is
//! flat and the step is the plain base step.

use super::dmps::{carried_gain_cap, largest_singular2, A_FLAT, POWER_RAISE};
use super::options::{Kind, OptionSpec, Value};
use super::{need_linear, Core, MethodStep, Planned, Posterior, SamplerError, StepParams};
use crate::tensor::Tensor;
use crate::Gpu;

/// `--ald-step`.
pub const STEP: OptionSpec = OptionSpec {
    name: "ald-step",
    help: "ALD step size: the likelihood score A^T (a y - A x_t) / (a^2 sigma_y^2 + b^2 ||A||^2)'s step as \
           a multiple of the base step's own score step (beta'/sqrt(alpha') for DDPM, from the schedule, so 1 \
           is Jalal's equal-step Langevin update at any step count); where a step would move the most \
           measured direction past the measurement (10-20 steps) the whole term is scaled down to land on it",
    kind: Kind::Number,
    default: Some("1"),
    check: |v| non_negative("ald-step", v),
};

/// The range check of a step size or weight: finite and >= 0.
pub fn non_negative(name: &str, v: Value) -> Result<(), String> {
    match v {
        Value::Number(x) if !(x.is_finite() && x >= 0.0) => {
            Err(format!("--{name} must be a non-negative number, got {x}"))
        }
        _ => Ok(()),
    }
}

/// The range check of a share (DDNM+'s eta, DiffPIR's zeta): in [0, 1].
pub fn unit_interval(name: &str, v: Value) -> Result<(), String> {
    non_negative(name, v)?;
    match v {
        Value::Number(x) if x > 1.0 => Err(format!("--{name} must be at most 1, got {x}")),
        _ => Ok(()),
    }
}

/// ALD's buffers. Only `y` is read from the host side; the others are held
/// for the plan's bind groups.
#[allow(dead_code)]
pub struct Ald {
    /// the measurement y [N, m]
    y: Tensor,
    /// A x_t [N, m]
    ax: Tensor,
    /// r = y - A x_t / a_t [N, m]
    r: Tensor,
    /// A^T r [N, ...]
    g: Tensor,
    sigma_y2: f64,
    /// ||A||_2^2, the largest direction's s^2, raised by [`POWER_RAISE`]
    /// (the cap's bound)
    s_max2: f64,
}

impl MethodStep for Ald {
    fn name() -> &'static str {
        "ald"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&STEP]
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("ALD")?;
        let op = need_linear(m, "ALD")?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let ax = Tensor::zeros(gpu, "A x_t", &[n, m_per])?;
        let r = Tensor::zeros(gpu, "residual", &[n, m_per])?;
        let g = Tensor::zeros(gpu, "ald direction", &core.x.shape)?;
        let mut plan = core.eps_plan.clone();
        plan.extend(op.forward(gpu, &core.x, &ax)?);
        plan.push(core.residual(gpu, &y, &ax, &r)?);
        plan.extend(op.adjoint(gpu, &r, &g)?);
        plan.push(core.z_dispatch());
        plan.push(core.ddpm_step(gpu, &g, &g)?);
        let ald = Ald {
            y,
            ax,
            r,
            g,
            sigma_y2: (m.sigma_y as f64).powi(2),
            s_max2: largest_singular2(gpu, op)?,
        };
        Ok(Planned::new(ald, plan))
    }

    fn label(&self) -> &'static str {
        "ALD"
    }

    /// guide = step / (a_t (sigma_y^2 + gamma_t^2 ||A||^2)) on g = A^T (y - A x_t / a_t),
    /// step = `--ald-step` times the base step's score weight, capped.
    fn params(&self, _gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let g = &core.grid;
        let (a, b) = (g.a[i], g.b[i]);
        let (guide, resid_scale) = if a <= A_FLAT {
            (0.0, 0.0)
        } else {
            let multiple = core.opts.method.number(STEP.name).expect("--ald-step has a default") as f64;
            // gamma_t^2 ||A||^2: x0's noise as it reaches y.
            let gamma2 = (b / a) * (b / a) * self.s_max2 / POWER_RAISE;
            let guide = multiple * core.score_weight(i) / (a * (self.sigma_y2 + gamma2));
            let gain = (guide / a).abs() * self.s_max2;
            let cap = carried_gain_cap(a, g.a_next[i], p.coef2 as f64, core.opts.clip);
            (guide / (gain / cap).max(1.0), 1.0 / a)
        };
        p.resid_scale = resid_scale as f32;
        p.guide = guide as f32;
        p.guide2 = 0.0;
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }
}
