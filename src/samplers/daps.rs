//! DAPS, decoupled annealing posterior sampling (Zhang et al., CVPR 2025,
//! "Improving diffusion inverse problem solving with decoupled noise
//! annealing"; code zhangbingliang2019/DAPS, `sampler.py`, `cores/mcmc.py`,
//! `cores/scheduler.py`). Each annealing level sigma_t (x_t = x0 + sigma_t
//! eps in the code's variance-exploding units; here x_t = a x0 + b eps with
//! sigma = b / a) takes three moves:
//!
//! 1. x0hat from x_t by `--daps-ode-steps` Euler steps of the probability-flow
//!    ODE (the code's `DiffusionPFODE` with its EDM scheduler: levels
//!    sigma_t to 0.01 spaced as (sigma^(1/7) linear)^7), each one model call.
//!    An Euler step of the ODE in sigma is DDIM with eta 0 between the same
//!    levels, which is what the plan replays: per substep a kernel writes the
//!    level's network time into the Core's timesteps, the Core's model call
//!    runs, and `ddpm_step` reads the substep's own uniform (its a, b, x0hat
//!    map and DDIM coefficients). The last substep lands on x0hat itself
//!    (sigma 0) where the code stops its ODE at sigma 0.01.
//! 2. Langevin on x0 toward p(x0 | x_t, y) with p(x0 | x_t) taken as
//!    N(x0hat, r_t^2), r_t = sigma_t (the code's `gaussian` prior solver):
//!
//!      x0 <- x0 + eta_t (J_A(x0)^T (y - A(x0)) / tau^2 + (x0hat - x0) / r_t^2) + sqrt(2 eta_t) xi,
//!
//!    `--daps-langevin-steps` of them from x0 = x0hat, each a forward and a VJP
//!    of the measurement (no A^T: phase retrieval and |A x| run as they are).
//! 3. x_{t-1} = a_{t-1} (x0 + sigma_{t-1} z), and x0 itself after the last level.
//!
//! Model evaluations per step: `--daps-ode-steps` (5 by default; DAPS-1K is
//! 200 levels of 5). The annealing levels are the code's: `--steps` levels
//! of (sigma^(1/7) linear)^7 from `--daps-sigma-max` 100 toward
//! `--daps-sigma-min` 0.1 (the code's K + 1 points without the last), each
//! snapped to the model's nearest level: a VP model's training timestep
//! nearest in log sigma (its network sees whole timesteps), a flow's exact t
//! = sigma / (1 + sigma). x_T ~ N(0, I) stands for the first level (sigma
//! 100: a = 0.01). The run's own respaced grid goes unused.
//!
//! **Langevin step and likelihood.** The code's lr (1e-4 for SR, deblurring
//! and inpainting, 5e-5 for phase retrieval, decayed linearly to 0.01 of
//! itself over the annealing) is in units of its tau = 0.01 and a loss
//! without the 1/2 (an effective tau of 0.0071): it is a gain eta L of 2
//! and 1 on the stiffest direction, L = ||A||^2 / tau^2 + 1 / r_t^2 the
//! drift's largest curvature, with ||A|| = 1. A fixed lr holds only at that
//! tau and operator scale (at tau = 0.05 it would be a gain of 0.04), so the
//! step here is `--daps-step` / L: the gain itself (default 1, phase
//! retrieval's), with the code's linear decay to 0.01. ||A||^2 comes from a
//! power iteration for a linear operator and is taken as 1 for a
//! non-linear one. On images (clipped runs) tau defaults to the code's
//! sharpened 0.0071 whatever the noise, the paper's published setting; on
//! unclipped runs (`gmm`'s mixtures, scored against an exact posterior) to
//! the measurement's sigma_y, the likelihood DAPS's derivation states (a
//! noiseless measurement takes 0.0071). With tau = sigma_y on images the
//! Langevin draws calibrated posterior samples whose spread costs PSNR: on
//! held-out images 100-101 at 20 steps, x2 SR 16.67 dB (baseline 20.54) and
//! box 20.72 (20.52), against 21.10 and 23.15 with the code's tau (stop 36;
//! docs/accuracy.md, "DAPS's likelihood on images").

use super::ald::non_negative;
use super::dmps::largest_singular2;
use super::kernels::{DapsLangevin, DapsTime, DdpmStep, StepSlots};
use super::options::{Kind, MethodOptions, OptionSpec, Value};
use super::{role_seed, Core, MethodBlock, MethodStep, Planned, Posterior, Role, SamplerError, StepParams};
use super::{FLAG_CLIP, FLAG_NOISE};
use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::random::Noise;
use crate::process::{Kind as ProcessKind, Process};
use crate::tensor::Tensor;
use crate::Gpu;

/// The ODE's last level (the code's diffusion scheduler `sigma_min`).
pub const ODE_SIGMA_MIN: f64 = 0.01;
/// The Langevin step's final fraction of its first (the code's `lr_min_ratio`).
pub const LR_MIN_RATIO: f64 = 0.01;
/// The code's effective tau: 0.01 on a loss without the 1/2.
pub const TAU_CODE: f32 = 0.007_071_068;
/// The exponent of the EDM level spacing (`poly-7`).
const RHO: f64 = 7.0;

/// `--daps-ode-steps`.
pub const ODE_STEPS: OptionSpec = OptionSpec {
    name: "daps-ode-steps",
    help: "DAPS's probability-flow ODE steps from x_t to x0hat per annealing level (the paper's 5), each one \
           model evaluation: a step costs this many",
    kind: Kind::Count,
    default: Some("5"),
    check: at_least_one,
};

/// `--daps-langevin-steps`.
pub const LANGEVIN_STEPS: OptionSpec = OptionSpec {
    name: "daps-langevin-steps",
    help: "DAPS's Langevin steps on x0 per annealing level (the paper's 100), each a forward and a VJP of \
           the measurement",
    kind: Kind::Count,
    default: Some("100"),
    check: super::options::any,
};

/// `--daps-step`.
pub const STEP: OptionSpec = OptionSpec {
    name: "daps-step",
    help: "DAPS's Langevin step as a gain on the stiffest direction: eta_t = step / (||A||^2 / tau^2 + \
           1 / r_t^2), decayed linearly to 0.01 of it over the annealing (the code's lr 5e-5 for phase \
           retrieval is 1, its 1e-4 for SR 2, Langevin's stability edge); being relative to tau and A it \
           holds at any noise level and operator scale",
    kind: Kind::Number,
    default: Some("1"),
    check: |v| non_negative("daps-step", v),
};

/// `--daps-tau`.
pub const TAU: OptionSpec = OptionSpec {
    name: "daps-tau",
    help: "DAPS's likelihood std in the Langevin target (default on images: the code's 0.0071, its tau \
           0.01 with the loss's missing 1/2, whatever the noise; on gmm's unclipped mixtures the \
           measurement's sigma_y, the derivation's, or 0.0071 without noise)",
    kind: Kind::Number,
    default: None,
    check: positive,
};

/// `--daps-sigma-max`.
pub const SIGMA_MAX: OptionSpec = OptionSpec {
    name: "daps-sigma-max",
    help: "DAPS's first annealing level, in x0's units (the paper's 100)",
    kind: Kind::Number,
    default: Some("100"),
    check: positive,
};

/// `--daps-sigma-min`.
pub const SIGMA_MIN: OptionSpec = OptionSpec {
    name: "daps-sigma-min",
    help: "DAPS's annealing end: the levels run from --daps-sigma-max toward it (the paper's 0.1)",
    kind: Kind::Number,
    default: Some("0.1"),
    check: positive,
};

fn at_least_one(v: Value) -> Result<(), String> {
    match v {
        Value::Count(0) => Err("--daps-ode-steps must be at least 1".into()),
        _ => Ok(()),
    }
}

fn positive(v: Value) -> Result<(), String> {
    match v {
        Value::Number(x) if !(x.is_finite() && x > 0.0) => {
            Err(format!("DAPS's tau and sigma levels must be positive numbers, got {x}"))
        }
        _ => Ok(()),
    }
}

/// A level the model is evaluated at: x = a x0 + b eps, the network fed `net_time`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub a: f64,
    pub b: f64,
    pub net_time: f32,
}

impl Level {
    /// sigma = 0: x0 itself.
    pub const CLEAN: Level = Level {
        a: 1.0,
        b: 0.0,
        net_time: 0.0,
    };

    /// The level's noise in x0's units, b / a.
    pub fn sigma(&self) -> f64 {
        self.b / self.a
    }
}

/// The levels a model can be evaluated at.
pub enum Levels {
    /// A VP model's training timesteps: sigma_t = sqrt(1 / abar_t - 1), increasing in t.
    Vp { abar: Vec<f64> },
    /// A flow's continuum t = sigma / (1 + sigma).
    Flow { data_at_one: bool, time_scale: f64 },
}

impl Levels {
    pub fn new(process: &Process) -> Levels {
        match process.kind {
            ProcessKind::Vp { .. } => Levels::Vp {
                abar: process.train_alphas_cumprod().expect("a VP process has a schedule"),
            },
            ProcessKind::Flow {
                data_at_one,
                time_scale,
            } => Levels::Flow {
                data_at_one,
                time_scale,
            },
        }
    }

    /// The model's level nearest `sigma` (VP: nearest in log sigma).
    pub fn at(&self, sigma: f64) -> Level {
        match self {
            Levels::Vp { abar } => {
                let sig = |t: usize| (1.0 / abar[t] - 1.0).sqrt();
                let above = abar.partition_point(|&ab| (1.0 / ab - 1.0).sqrt() < sigma);
                let t = match above {
                    0 => 0,
                    t if t == abar.len() => t - 1,
                    t if (sig(t) / sigma).ln() < (sigma / sig(t - 1)).ln() => t,
                    t => t - 1,
                };
                Level {
                    a: abar[t].sqrt(),
                    b: (1.0 - abar[t]).sqrt(),
                    net_time: t as f32,
                }
            }
            Levels::Flow {
                data_at_one,
                time_scale,
            } => {
                let t = sigma / (1.0 + sigma);
                Level {
                    a: 1.0 - t,
                    b: t,
                    net_time: (time_scale * if *data_at_one { 1.0 - t } else { t }) as f32,
                }
            }
        }
    }

    /// Point `r` in [0, 1] of the EDM spacing from `hi` to `lo`, (hi^(1/7) + r (lo^(1/7) - hi^(1/7)))^7.
    pub fn edm(hi: f64, lo: f64, r: f64) -> f64 {
        (hi.powf(1.0 / RHO) + r * (lo.powf(1.0 / RHO) - hi.powf(1.0 / RHO))).powf(RHO)
    }

    /// The annealing level of reverse step i of `steps` and the one it steps to.
    pub fn annealing(&self, opts: &super::MethodOptions, steps: usize, i: usize) -> (Level, Level) {
        let hi = opts.number(SIGMA_MAX.name).expect("--daps-sigma-max has a default") as f64;
        let lo = opts.number(SIGMA_MIN.name).expect("--daps-sigma-min has a default") as f64;
        let j = steps - 1 - i;
        let level = |j: usize| self.at(Levels::edm(hi, lo, j as f64 / steps as f64));
        (level(j), if i == 0 { Level::CLEAN } else { level(j + 1) })
    }

    /// The ODE's levels from `from` to x0hat, `k` of them (model evaluations),
    /// then [`Level::CLEAN`].
    pub fn ode(&self, from: Level, k: usize) -> Vec<Level> {
        let hi = from.sigma();
        let lo = ODE_SIGMA_MIN.min(hi);
        let mut out = vec![from];
        out.extend((1..k).map(|j| self.at(Levels::edm(hi, lo, j as f64 / k as f64))));
        out.push(Level::CLEAN);
        out
    }
}

/// DAPS's Langevin block of the step uniform (`daps_lr()` ... in
/// shaders/sampler.wgsl), read by `daps_langevin`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DapsStep {
    pub lr: f32,
    /// 1 / tau^2
    pub data_weight: f32,
    /// 1 / r_t^2
    pub prior_prec: f32,
    /// sqrt(2 lr)
    pub noise: f32,
}

/// DAPS's state. The host side writes the substeps' uniforms and the
/// Langevin noise streams; the tensors are held for the plan's bind groups.
#[allow(dead_code)]
pub struct Daps {
    /// the measurement y [N, m]
    y: Tensor,
    /// A(x0), y - A(x0) [N, m]
    ax: Tensor,
    r: Tensor,
    /// J_A(x0)^T (y - A(x0)) [N, ...]
    g: Tensor,
    /// x0hat, the Langevin prior's centre [N, ...]
    x0: Tensor,
    /// the Langevin noise xi [N, ...]
    xi: Tensor,
    copy: Elementwise,
    /// one generator per Langevin step, re-streamed every reverse step
    noises: Vec<Noise>,
    /// one step uniform per ODE substep
    substeps: Vec<wgpu::Buffer>,
    levels: Levels,
    /// ||A||^2 (1 for a non-linear measurement)
    s_max2: f64,
    tau: f64,
}

impl Daps {
    /// x0hat (the ODE's end) and the last Langevin step's noise.
    pub fn state(&self) -> [&Tensor; 2] {
        [&self.x0, &self.xi]
    }

    /// The substep's uniform: DDIM (eta 0) from `from` to `to` on the model's output at `from`.
    fn substep(core: &Core, from: Level, to: Level) -> StepParams {
        let c = core.process.coefficients(from.a, from.b);
        StepParams {
            n: (core.batch * core.per) as u32,
            per: core.per as u32,
            m_per: core.m_per as u32,
            flags: if core.opts.clip { FLAG_CLIP } else { 0 },
            a_t: from.a as f32,
            b_t: from.b as f32,
            coef1: (to.a - to.b * from.a / from.b) as f32,
            coef2: (to.b / from.b) as f32,
            x0_x: c.x0_x as f32,
            x0_out: c.x0_out as f32,
            eps_x: c.eps_x as f32,
            eps_out: c.eps_out as f32,
            method: MethodBlock::of(&[from.net_time, 0.0, 0.0, 0.0]),
            ..StepParams::default()
        }
    }
}

impl MethodStep for Daps {
    fn name() -> &'static str {
        "daps"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&ODE_STEPS, &LANGEVIN_STEPS, &STEP, &TAU, &SIGMA_MAX, &SIGMA_MIN]
    }

    /// One model call per ODE step (the Langevin steps call only the measurement).
    fn model_calls(opts: &MethodOptions) -> usize {
        opts.count(ODE_STEPS.name).expect("--daps-ode-steps has a default")
    }

    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("DAPS")?;
        core.refuse_base_step("DAPS", "takes its own steps (an ODE, Langevin, then fresh noise)")?;
        let opts = &core.opts.method;
        let hi = opts.number(SIGMA_MAX.name).expect("--daps-sigma-max has a default");
        let lo = opts.number(SIGMA_MIN.name).expect("--daps-sigma-min has a default");
        if lo >= hi {
            return Err(SamplerError::Invalid(format!(
                "--daps-sigma-min ({lo}) must be below --daps-sigma-max ({hi})"
            )));
        }
        let ode_steps = opts.count(ODE_STEPS.name).expect("--daps-ode-steps has a default");
        let langevin = opts
            .count(LANGEVIN_STEPS.name)
            .expect("--daps-langevin-steps has a default");
        let tau = match opts.number(TAU.name) {
            Some(t) => t,
            // Images (x0 clipped to [-1, 1]): the code's sharpened likelihood.
            None if core.opts.clip => TAU_CODE,
            None if m.sigma_y > 0.0 => m.sigma_y,
            None => TAU_CODE,
        } as f64;
        let (n, per) = (core.batch, core.per);
        let m_per: usize = m.op.out_shape().iter().product();
        let shape = core.x.shape.clone();
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let ax = Tensor::zeros(gpu, "A x0", &[n, m_per])?;
        let r = Tensor::zeros(gpu, "residual", &[n, m_per])?;
        let g = Tensor::zeros(gpu, "measurement gradient", &shape)?;
        let x0 = Tensor::zeros(gpu, "x0hat", &shape)?;
        let xi = Tensor::zeros(gpu, "langevin noise", &shape)?;

        let mut plan = Plan::new();
        let substeps: Vec<wgpu::Buffer> = (0..ode_steps)
            .map(|_| gpu.uniform("daps ode substep", &StepParams::default()))
            .collect();
        for sub in &substeps {
            plan.push(core.launch(gpu, "daps_time", &DapsTime { s: sub, t: &core.t }, n)?);
            plan.extend(core.eps_plan.clone());
            let slots = StepSlots {
                s: sub,
                eps: &core.eps,
                v: &core.v,
                z: &core.z,
                g: &core.z,
                h: &core.z,
            };
            plan.push(core.launch(gpu, "ddpm_step", &DdpmStep::new(slots, &core.x), n * per)?);
        }
        let copy = Elementwise::new(gpu, Op::Affine, &core.x, &x0, 1.0, 0.0)?;
        plan.push(copy.dispatch.clone());
        let mut body = m.op.forward(gpu, &core.x, &ax)?;
        body.push(core.residual(gpu, &y, &ax, &r)?);
        body.extend(m.op.vjp(gpu, &core.x, &r, &g)?);
        let b = DapsLangevin {
            s: &core.step_uniform,
            x0: &x0,
            g: &g,
            xi: &xi,
            x: &core.x,
        };
        let update = core.launch(gpu, "daps_langevin", &b, n * per)?;
        let base = role_seed(core.opts.seed, Role::Langevin);
        let noises = (0..langevin)
            .map(|j| {
                Noise::new(
                    gpu,
                    &xi,
                    base ^ (j as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03),
                    0,
                    0.0,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for noise in &noises {
            plan.extend(body.clone());
            plan.push(noise.dispatch.clone());
            plan.push(update.clone());
        }
        plan.push(core.z_dispatch());
        plan.push(core.ddpm_step(gpu, &g, &g)?);
        let s_max2 = match m.op.linear() {
            Some(op) => largest_singular2(gpu, op)?,
            None => 1.0,
        };
        let daps = Daps {
            y,
            ax,
            r,
            g,
            x0,
            xi,
            copy,
            noises,
            substeps,
            levels: Levels::new(&core.process),
            s_max2,
            tau,
        };
        Ok(Planned::new(daps, plan))
    }

    fn label(&self) -> &'static str {
        "DAPS"
    }

    /// The substeps' uniforms (the ODE from this level), the Langevin
    /// scalars and noise streams, and x_{t-1} = a' x0 + b' z as the base
    /// step with coef1 = 0, coef2 = a', sigma = b'.
    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let steps = core.steps();
        let opts = &core.opts.method;
        let (level, next) = self.levels.annealing(opts, steps, i);
        let ode = self.levels.ode(level, self.substeps.len());
        for (k, sub) in self.substeps.iter().enumerate() {
            let params = Daps::substep(core, ode[k], ode[k + 1]);
            gpu.queue.write_buffer(sub, 0, bytemuck::bytes_of(&params));
        }
        for noise in &self.noises {
            noise.set_stream(gpu, i as u32);
        }
        let step = opts.number(STEP.name).expect("--daps-step has a default") as f64;
        let ratio = (steps - 1 - i) as f64 / (steps + 1) as f64;
        let decay = 1.0 + ratio * (LR_MIN_RATIO - 1.0);
        let (data, prior) = (1.0 / (self.tau * self.tau), 1.0 / level.sigma().powi(2));
        let lr = step * decay / (self.s_max2 * data + prior);
        p.method = MethodBlock::of(&DapsStep {
            lr: lr as f32,
            data_weight: data as f32,
            prior_prec: prior as f32,
            noise: (2.0 * lr).sqrt() as f32,
        });
        p.resid_scale = 1.0;
        p.coef1 = 0.0;
        p.coef2 = next.a as f32;
        p.guide = 0.0;
        p.guide2 = 0.0;
        p.flags = 0;
        if next.b > 0.0 {
            p.flags = FLAG_NOISE;
            p.log_var_fixed = (2.0 * next.b.ln()) as f32;
        }
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }
}
