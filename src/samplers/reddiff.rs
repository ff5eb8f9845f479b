//! RED-diff (Mardani et al. 2024, "A variational perspective on solving
//! inverse problems with diffusion models"): the sample is a point mu,
//! optimised by Adam over descending t on
//!
//!   ||y - A(mu)||^2 / (2 m) + lambda w_t (eps_theta(x_t, t) - eps)^T mu / d,
//!   x_t = a_t mu + b_t eps, eps ~ N(0, I) fresh each step,
//!
//! with eps_theta held fixed (the gradient takes no VJP through the network)
//! and w_t = b_t / a_t = sqrt(1 / SNR_t), the paper's "linear" weighting.
//!
//! The loss is written as the paper's code (NVlabs/RED-diff,
//! `algos/reddiff.py`) writes it: each term a mean over its elements (m per
//! measurement, d per sample) and no 1 / sigma_y^2. The paper's
//! ||y - A mu||^2 / (2 sigma_v^2) is the same with the measurement term's
//! weight relative to the denoiser's set by sigma_v; the code, whose defaults
//! (lambda 0.25, Adam) are the ones published, weighs them by the element
//! counts instead, which also serves noiseless measurements. Adam divides
//! each coordinate's step by its gradient's running RMS, so only the two
//! terms' ratio matters, not the loss's scale.
//!
//! mu starts at the measurement's pseudo-inverse A^+ y through the SVD form
//! where the operator has one (the code's `H_pinv`), at A^T y for a linear
//! operator without one, and at 0 for a non-linear measurement, whose
//! gradient is its own VJP J_A(mu)^T (y - A(mu)). The Core's x_t is rebuilt
//! from mu and fresh noise (the DDPM noise stream) each step, its model call
//! plan reads it, and after the Adam step x holds mu: the run's sample is the
//! last mu (the code's x0_pred with sigma_x0 = 0).
//!
//! On a flow (a_t = 1 - t) the first step's w_t = 1 / 0 is taken as 0: at
//! t = 1, x_t carries nothing about mu and only the measurement term acts.
//!
//! **Adam's memory follows the step count** ([`adam_decays`]). The code's
//! decays (0.9, 0.99) are made for 1000 steps. Its first steps, at high
//! noise, carry the largest gradients (w_t = b_t / a_t reaches ~150 at
//! t = T, times a fresh eps each step), and with 0.99 they stay in Adam's
//! second moment for about 100 steps: at 1000 steps they are long forgotten
//! when the low-noise steps shape the image, but at 20 steps (0.99^20 = 0.82)
//! they still fill the denominator at the end, so the last steps barely move
//! mu while the first ones had moved it by lr per coordinate in directions
//! set mostly by noise. Keeping the memory in steps (the code's constants)
//! fails coarse schedules; keeping it in diffusion time (decays raised to
//! 1000 / K) forgets so fast at K = 20 that Adam's normalisation stops
//! averaging the noisy denoiser term. The decays are raised to
//! sqrt(1000 / K), between the two, the code's at 1000 steps. On the tuning
//! images (held-out indices 100-103, sigma_y 0.05, one sample, PSNR in dB;
//! baseline A^+ y 21.28 on x2 SR, 21.17 on a 12x12 box), the code's decays ->
//! the rule: 10 steps 15.51 -> 21.60 (SR), 17.84 -> 23.35 (box); 20 steps
//! 19.57 -> 22.91, 20.58 -> 24.87; 50 steps 22.55 -> 24.02, 25.07 -> 25.79;
//! 100 steps 24.24 -> 24.36, 25.36 -> 25.34. The exponent 1000 / K scored
//! 21.56 / 22.69 at 20 steps and 21.49 / 23.44 at 10; the exponent 10 at 20
//! steps 22.99 / 24.97, within noise of the rule (docs/accuracy.md, "RED-diff's
//! Adam at any step count").

use super::ald::non_negative;
use super::dmps::A_FLAT;
use super::dps::PAPER_STEPS;
use super::kernels::{RedDiffAdam, RedDiffDiffuse};
use super::options::{Kind, OptionSpec};
use super::{Core, MethodBlock, MethodStep, Planned, Posterior, SamplerError, StepParams};
use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::tensor::Tensor;
use crate::Gpu;

/// Adam's moment decays at 1000 steps, as the paper's code sets them (0.99,
/// not torch's 0.999).
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.99;
/// Adam's epsilon (torch's default).
const ADAM_EPS: f32 = 1e-8;

/// Adam's moment decays for a run of `steps` steps: [`BETA1`] and [`BETA2`]
/// raised to sqrt(1000 / steps) (the module's doc says why), so the code's
/// at 1000 steps, (0.47, 0.93) at 20.
pub fn adam_decays(steps: usize) -> (f64, f64) {
    let power = (PAPER_STEPS as f64 / steps.max(1) as f64).sqrt();
    (BETA1.powf(power), BETA2.powf(power))
}

/// `--reddiff-lr`.
pub const LR: OptionSpec = OptionSpec {
    name: "reddiff-lr",
    help: "RED-diff's Adam learning rate (the paper's 0.25): the largest move of a coordinate per step, in \
           the data's units; fewer steps move mu less far from its start, A^+ y. Adam's decays follow the \
           step count: the paper's 0.9 / 0.99 at 1000 steps, raised to sqrt(1000 / steps) (0.47 / 0.93 at 20)",
    kind: Kind::Number,
    default: Some("0.25"),
    check: |v| non_negative("reddiff-lr", v),
};

/// `--reddiff-lambda`.
pub const LAMBDA: OptionSpec = OptionSpec {
    name: "reddiff-lambda",
    help: "RED-diff's regularisation weight lambda (the paper's 0.25): the denoiser term's weight \
           lambda sqrt(1/SNR_t) against the measurement's",
    kind: Kind::Number,
    default: Some("0.25"),
    check: |v| non_negative("reddiff-lambda", v),
};

/// RED-diff's block of the step uniform (`reddiff_lr()` ... in
/// shaders/sampler.wgsl), read by `reddiff_adam`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RedDiffStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// the measurement term's gradient weight, 1 / m
    pub obs: f32,
    /// the denoiser term's, lambda w_t / d
    pub prior: f32,
    /// 1 - beta1^k at Adam step k (k = 1 at the first reverse step)
    pub bias1: f32,
    /// 1 - beta2^k
    pub bias2: f32,
}

/// RED-diff's state. Only `y`, `mu` and the moments are read from the host
/// side; the others are held for the plan's bind groups.
#[allow(dead_code)]
pub struct RedDiff {
    /// the measurement y [N, m]
    y: Tensor,
    /// the variational mean mu [N, ...]
    mu: Tensor,
    /// A(mu) [N, m]
    amu: Tensor,
    /// y - A(mu) [N, m]
    r: Tensor,
    /// J_A(mu)^T (y - A(mu)) [N, ...]
    g: Tensor,
    /// Adam's first and second moments [N, ...]
    m1: Tensor,
    m2: Tensor,
    /// the spectral coefficients of A^+ y (SVD form only) [N, m]
    spectral: Option<Tensor>,
    /// the init's zeroing passes
    zeroing: Vec<Elementwise>,
}

impl RedDiff {
    /// mu, and Adam's first and second moments.
    pub fn state(&self) -> [&Tensor; 3] {
        [&self.mu, &self.m1, &self.m2]
    }
}

impl MethodStep for RedDiff {
    fn name() -> &'static str {
        "reddiff"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&LR, &LAMBDA]
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("RED-diff")?;
        core.refuse_base_step("RED-diff", "takes no reverse step (it optimises a point with Adam)")?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let shape = core.x.shape.clone();
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let mu = Tensor::zeros(gpu, "reddiff mu", &shape)?;
        let amu = Tensor::zeros(gpu, "A mu", &[n, m_per])?;
        let r = Tensor::zeros(gpu, "residual", &[n, m_per])?;
        let g = Tensor::zeros(gpu, "measurement gradient", &shape)?;
        let m1 = Tensor::zeros(gpu, "adam m", &shape)?;
        let m2 = Tensor::zeros(gpu, "adam v", &shape)?;

        // Init: Adam's moments to 0 (x holds finite noise here), mu to A^+ y.
        let zero = |t: &Tensor| Elementwise::new(gpu, Op::Affine, &core.x, t, 0.0, 0.0);
        let mut zeroing = vec![zero(&m1)?, zero(&m2)?];
        let mut init = Plan::new();
        let mut spectral = None;
        match m.op.linear() {
            Some(op) => match op.svd() {
                Some(svd) => {
                    let c = Tensor::zeros(gpu, "spectral A^+ y", &[n, m_per])?;
                    init.extend(core.spectral_y(gpu, svd, &y, &c)?);
                    init.extend(svd.v(gpu, &c, &mu)?);
                    spectral = Some(c);
                }
                None => init.extend(op.adjoint(gpu, &y, &mu)?),
            },
            None => zeroing.push(zero(&mu)?),
        }
        for z in &zeroing {
            init.push(z.dispatch.clone());
        }

        let mut plan = Plan::new();
        plan.push(core.z_dispatch());
        let b = RedDiffDiffuse {
            s: &core.step_uniform,
            mu: &mu,
            z: &core.z,
            x: &core.x,
        };
        plan.push(core.launch(gpu, "reddiff_diffuse", &b, n * core.per)?);
        plan.extend(core.eps_plan.clone());
        plan.extend(m.op.forward(gpu, &mu, &amu)?);
        plan.push(core.residual(gpu, &y, &amu, &r)?);
        plan.extend(m.op.vjp(gpu, &mu, &r, &g)?);
        let b = RedDiffAdam {
            s: &core.step_uniform,
            out: &core.eps,
            z: &core.z,
            g: &g,
            x: &core.x,
            mu: &mu,
            m1: &m1,
            m2: &m2,
        };
        plan.push(core.launch(gpu, "reddiff_adam", &b, n * core.per)?);
        let red = RedDiff {
            y,
            mu,
            amu,
            r,
            g,
            m1,
            m2,
            spectral,
            zeroing,
        };
        Ok(Planned::new(red, plan).with_init(init))
    }

    fn label(&self) -> &'static str {
        "RED-diff"
    }

    /// The pseudo-inverse's whitening reads m_per from the step uniform.
    fn prepare_init(&self, gpu: &Gpu, core: &Core) -> Result<(), SamplerError> {
        core.write_shape(gpu);
        Ok(())
    }

    fn params(&self, _gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let (a, b) = (core.grid.a[i], core.grid.b[i]);
        let w = if a <= A_FLAT { 0.0 } else { b / a };
        let opts = &core.opts.method;
        let lambda = opts.number(LAMBDA.name).expect("--reddiff-lambda has a default") as f64;
        // Adam's step count: 1 at the first reverse step (i = K - 1).
        let k = (core.steps() - i) as i32;
        let (beta1, beta2) = adam_decays(core.steps());
        p.resid_scale = 1.0;
        p.method = MethodBlock::of(&RedDiffStep {
            lr: opts.number(LR.name).expect("--reddiff-lr has a default"),
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: ADAM_EPS,
            obs: 1.0 / core.m_per as f32,
            prior: (lambda * w / core.per as f64) as f32,
            bias1: (1.0 - beta1.powi(k)) as f32,
            bias2: (1.0 - beta2.powi(k)) as f32,
        });
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }
}
