//! Diffusion samplers (DDPM, DPS, DMPS, C-DPS, SMC, ALD, RED-diff, DDNM+,
//! DiffPIR, DAPS, DDRM, PiGDM)
//! over any [`ScoreModel`] and [`Operator`], sharing one step-kernel family
//! (`shaders/sampler.wgsl`), the schedule code and the batched CG solver.
//!
//! A [`Sampler`] is planned once: every buffer, bind group and dispatch of a
//! reverse step is built in [`Sampler::new`]. A step then writes its scalars
//! (one uniform block), the per-sample timesteps and the noise streams with
//! `queue.write_buffer`, and replays its plan in one submission with no
//! read-back.
//!
//! The pieces: [`Core`] is the state every method shares (schedule, x_t, the
//! model call, the step uniform, the DDPM noise); a method is one file
//! implementing [`MethodStep`] (what it adds: its buffers, its step plan, its
//! scalars); [`Sampler`] holds the core and the method as `Box<dyn MethodStep>`.
//!
//! # Adding a method
//!
//! 1. Write `src/samplers/<name>.rs` with a type implementing [`MethodStep`]
//!    (see [`dmps`] for a short one): [`MethodStep::plan`] builds the type
//!    (named fields for every buffer its plan reads) and its step plan from the
//!    [`Core`]'s pieces (`eps_plan`, `launch` with a bindings struct of
//!    [`kernels`], `residual`, `x0_and_mask`, `noise`, `z_dispatch`,
//!    `ddpm_step`: visible to the child modules of this one);
//!    [`MethodStep::name`] gives the name the command line and reports use,
//!    [`MethodStep::options`] the settings it reads (its own [`OptionSpec`]s,
//!    declared in its file; the CLI makes a flag of each) and
//!    [`MethodStep::params`] writes step i's scalars: the shared guidance
//!    fields of [`StepParams`] (`guide`, `guide2`, `resid_scale`) and/or its
//!    own `#[repr(C)]` block laid over [`StepParams::method`] with
//!    [`MethodBlock::of`], read in the shader through accessors beside its
//!    kernels in `shaders/sampler.wgsl`. Besides `plan`, `name` and `label`
//!    nothing is required; the other trait methods default to no settings,
//!    no init work, no statistics. What it reports about a run (CG
//!    iterations, particle populations) goes out as [`Stat`]s from
//!    [`MethodStep::stats`].
//! 2. Declare the module (`pub mod <name>;`) and add one line to the registry
//!    at [`Method`]'s definition (`methods! { ... }` below): `Name =>
//!    name::Type,` makes `Method::Name` and plans it.
//!
//! Nothing outside this module names a method's variant: callers look
//! methods up by name ([`Method::from_name`]) or walk [`Method::all`], and
//! ask a method what it needs ([`Method::takes_measurement`],
//! [`Method::model_passes`], [`Method::options`]).

pub mod ald;
pub mod cdps;
pub mod cg;
pub mod daps;
pub mod ddnm;
pub mod ddpm;
pub mod ddrm;
pub mod diffpir;
pub mod dmps;
pub mod dps;
pub mod kernels;
pub mod options;
pub mod pigdm;
pub mod problem;
pub mod reddiff;
pub mod score;
pub mod smc;
pub mod smc_spectral;
pub mod unet_score;

use std::any::Any;

use thiserror::Error;

use crate::gpu::{dispatch_groups, Bindings, Dispatch, GpuError, KernelSig, Plan, WG1D};
use crate::kernels::random::Noise;
use crate::operators::{LinearOperator, Operator, OperatorError, SvdForm};
use crate::process::{Grid, Process};
use crate::schedule::{Schedule, ScheduleError, VarianceType};
use crate::tensor::Tensor;
use crate::Gpu;

pub use crate::kernels::smc::PopulationStats;
pub use cdps::{CdpsBasis, CdpsVariant};
pub use cg::CgStats;
pub use dmps::DmpsSolver;
pub use options::{MethodOptions, OptionSpec};
pub use score::{EpsArgs, GmmPrior, ScoreError, ScoreModel};
pub use unet_score::UnetScore;

#[derive(Debug, Error)]
pub enum SamplerError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("{0}")]
    Invalid(String),
    /// A step callback asked to stop.
    #[error("cancelled")]
    Cancelled,
}

/// The method registry: one line per method, `Variant => module::Type`. It
/// defines [`Method`] and its lookups, and `plan`, the one place a [`Method`]
/// becomes its [`MethodStep`].
macro_rules! methods {
    ($($variant:ident => $ty:ty,)+) => {
        /// Which sampler.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Method {
            $($variant,)+
        }

        impl Method {
            /// Every method, in the registry's order.
            pub fn all() -> &'static [Method] {
                &[$(Method::$variant,)+]
            }

            /// The name the command line and reports use (`dmps`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::name(),)+
                }
            }

            /// The settings the method reads.
            pub fn options(self) -> &'static [&'static OptionSpec] {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::options(),)+
                }
            }

            /// Whether the method conditions on a measurement (all but DDPM).
            pub fn takes_measurement(self) -> bool {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::takes_measurement(),)+
                }
            }

            /// Whether a step takes the model's VJP with settings `opts` on
            /// a measurement whose operator has an SVD form (`svd`) or not.
            pub fn uses_vjp(self, opts: &MethodOptions, svd: bool) -> bool {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::uses_vjp(opts, svd),)+
                }
            }

            /// Model forward passes one step makes with settings `opts`.
            fn model_calls(self, opts: &MethodOptions) -> usize {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::model_calls(opts),)+
                }
            }

            /// The batch the method runs for `batch` samples asked for.
            fn batch(self, batch: usize, opts: &SamplerOptions) -> usize {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::batch(batch, opts),)+
                }
            }

            /// Plans the method on `core`.
            fn plan(self, gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
                match self {
                    $(Method::$variant => <$ty as MethodStep>::plan(gpu, core, post),)+
                }
            }
        }
    };
}

methods! {
    Ddpm => ddpm::Ddpm,
    Dps => dps::Dps,
    Dmps => dmps::Dmps,
    Cdps => cdps::Cdps,
    Smc => smc::Smc,
    Ald => ald::Ald,
    RedDiff => reddiff::RedDiff,
    Ddnm => ddnm::Ddnm,
    Diffpir => diffpir::Diffpir,
    Daps => daps::Daps,
    Ddrm => ddrm::Ddrm,
    Pigdm => pigdm::Pigdm,
}

impl Method {
    /// The method called `name` ([`Method::name`]), if there is one.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::all().iter().copied().find(|m| m.name() == name)
    }

    /// The method that draws from the prior alone (DDPM's, or DDIM's or
    /// Euler's by [`SamplerOptions::sampler`] and the process).
    pub fn unconditional() -> Method {
        *Method::all()
            .iter()
            .find(|m| !m.takes_measurement())
            .expect("the registry has an unconditional method")
    }

    /// Whether the method reads setting `name`.
    pub fn takes(self, name: &str) -> bool {
        self.options().iter().any(|o| o.name == name)
    }

    /// Refuses a setting in `given` that the method does not read: one
    /// meant for another method would otherwise be ignored without a word.
    /// Pass only what the user gave, not the defaults a caller fills in.
    pub fn check_given(self, given: &MethodOptions) -> Result<(), SamplerError> {
        let Some(name) = given.given().find(|name| !self.takes(name)) else {
            return Ok(());
        };
        let takes: Vec<String> = self.options().iter().map(|o| format!("--{}", o.name)).collect();
        let takes = if takes.is_empty() {
            "no settings".to_string()
        } else {
            takes.join(", ")
        };
        Err(SamplerError::Invalid(format!(
            "--{name} does not apply to --method {} (it takes {takes})",
            self.name()
        )))
    }

    /// Model evaluations one step costs with settings `opts` (on an operator
    /// with an SVD form or not, `svd`), in forward passes: its forward calls,
    /// plus 1 for the VJP (a backward pass costs about a forward's FLOPs here).
    pub fn model_passes(self, opts: &MethodOptions, svd: bool) -> usize {
        self.model_calls(opts) + usize::from(self.uses_vjp(opts, svd))
    }
}

/// Every method's settings, each once, in the registry's order.
pub fn option_specs() -> Vec<&'static OptionSpec> {
    let mut out: Vec<&'static OptionSpec> = Vec::new();
    for m in Method::all() {
        for o in m.options() {
            if !out.iter().any(|x| x.name == o.name) {
                out.push(o);
            }
        }
    }
    out
}

options::choice_enum! {
    /// The base reverse step of a VP diffusion (a flow always takes Euler steps of its ODE).
    pub enum BaseSampler {
        Ddpm => "ddpm", "Ancestral sampling (guided-diffusion's `p_sample`)",
        Ddim => "ddim", "DDIM (Song et al.) with noise level eta (0: deterministic)",
    }
}

/// The step a run takes, resolved from the process and the options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepKind {
    /// DDPM ancestral step (VP)
    Ddpm,
    /// DDIM with this eta (VP)
    Ddim(f64),
    /// an Euler step of the flow ODE x <- x - dt u (flow)
    Euler,
}

impl StepKind {
    /// The step `opts` ask for on `process`, or a one-line refusal.
    pub fn resolve(process: &Process, opts: &SamplerOptions) -> Result<StepKind, SamplerError> {
        if process.is_flow() {
            if opts.eta.is_some() {
                return Err(SamplerError::Invalid(
                    "--eta applies to DDIM on a VP diffusion model; a flow model's Euler sampler has no eta".into(),
                ));
            }
            if opts.sampler.is_some() {
                return Err(SamplerError::Invalid(
                    "--sampler ddpm|ddim applies to VP diffusion models; a flow model takes Euler steps of its ODE"
                        .into(),
                ));
            }
            return Ok(StepKind::Euler);
        }
        match (opts.sampler.unwrap_or(BaseSampler::Ddpm), opts.eta) {
            (BaseSampler::Ddpm, Some(_)) => Err(SamplerError::Invalid("--eta needs --sampler ddim".into())),
            (BaseSampler::Ddpm, None) => Ok(StepKind::Ddpm),
            (BaseSampler::Ddim, eta) => {
                let eta = eta.unwrap_or(0.0) as f64;
                if !(eta.is_finite() && eta >= 0.0) {
                    return Err(SamplerError::Invalid(format!(
                        "--eta must be a non-negative number, got {eta}"
                    )));
                }
                Ok(StepKind::Ddim(eta))
            }
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StepKind::Ddpm => "DDPM",
            StepKind::Ddim(_) => "DDIM",
            StepKind::Euler => "Euler",
        }
    }
}

/// Everything a sampler run is configured by.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// Reverse steps: a VP model's training schedule respaced as guided-diffusion
    /// does (at most its training steps); a flow's uniform grid from t = 1 to 0.
    pub steps: usize,
    /// The base step of a VP model (None: DDPM); must be None for a flow.
    pub sampler: Option<BaseSampler>,
    /// DDIM's eta (None: 0); only with `sampler: Some(Ddim)`.
    pub eta: Option<f32>,
    pub seed: u64,
    /// Variance of models without learned sigma.
    pub variance: VarianceType,
    /// Clip x0hat to [-1, 1] (images yes, the Gaussian-mixture checks no).
    pub clip: bool,
    /// The methods' own settings (DPS's zeta, CG's tolerance, ...), each
    /// declared by the method that reads it.
    pub method: MethodOptions,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            steps: 1000,
            sampler: None,
            eta: None,
            seed: 0,
            variance: VarianceType::FixedLarge,
            clip: true,
            method: MethodOptions::default(),
        }
    }
}

/// The measurement y = A x0 + n, n ~ N(0, sigma_y^2 I).
pub struct Measurement<'a> {
    pub op: &'a dyn Operator,
    /// Either one measurement shaped like `op.out_shape()`, shared by the
    /// whole batch (K posterior samples of one image), or one per sample,
    /// [N, out_shape] (N images restored at once).
    pub y: &'a [f32],
    pub sigma_y: f32,
}

impl Measurement<'_> {
    /// y laid out per sample, [n, m_per].
    pub fn per_sample(&self, n: usize, m_per: usize) -> Vec<f32> {
        if self.y.len() == m_per {
            self.y.repeat(n)
        } else {
            self.y.to_vec()
        }
    }
}

/// Mirrors `Step` in shaders/sampler.wgsl: the head every method shares, then
/// the method's own block.
///
/// [`Core::base_params`] fills the head from the schedule; a method's
/// [`MethodStep::params`] sets the guidance fields its plan's shared kernels
/// read and lays its own scalars over `method`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// elements in x (batch * per)
    pub n: u32,
    /// elements per sample of x
    pub per: u32,
    /// elements per sample of the measurement (0 without one)
    pub m_per: u32,
    /// [`FLAG_CLIP`] | [`FLAG_NOISE`] | [`FLAG_LEARNED`]
    pub flags: u32,
    /// a_t of x_t = a_t x0 + b_t eps (VP: sqrt(abar_t); flow: 1 - t)
    pub a_t: f32,
    /// b_t (VP: sqrt(1 - abar_t); flow: t)
    pub b_t: f32,
    /// posterior mean coefficient on x0hat
    pub coef1: f32,
    /// posterior mean coefficient on x_t
    pub coef2: f32,
    /// log beta~ (clipped)
    pub log_var_min: f32,
    /// log beta
    pub log_var_max: f32,
    /// the fixed-small / fixed-large log variance
    pub log_var_fixed: f32,
    /// `ddpm_step`: the coefficient of g (0 for DDPM)
    pub guide: f32,
    /// `ddpm_step`: the coefficient of h
    pub guide2: f32,
    /// `residual`: r = y - resid_scale (A x)
    pub resid_scale: f32,
    /// x0hat = x0_x x + x0_out o (o: the model's output, see [`Process::coefficients`])
    pub x0_x: f32,
    pub x0_out: f32,
    /// epshat = eps_x x + eps_out o
    pub eps_x: f32,
    pub eps_out: f32,
    /// aligns `method` to 16 bytes, as WGSL's uniform layout does
    pub _pad: [u32; 2],
    /// the method's own scalars (see [`MethodBlock`])
    pub method: MethodBlock,
}

/// The method-owned tail of [`StepParams`] (12 words, `method: array<vec4<f32>, 3>`
/// in WGSL): a union each method lays its own `#[repr(C)]` block over with
/// [`MethodBlock::of`] and reads in the shader through its accessors
/// (`dmps_gamma()`, `cdps_meas_var()`, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MethodBlock(pub [u32; 12]);

impl MethodBlock {
    /// `block`'s bytes at the start of the tail, zeros after.
    pub fn of<T: bytemuck::Pod>(block: &T) -> MethodBlock {
        const { assert!(std::mem::size_of::<T>() <= std::mem::size_of::<MethodBlock>()) };
        let mut out = MethodBlock::default();
        let bytes = bytemuck::bytes_of(block);
        bytemuck::bytes_of_mut(&mut out.0)[..bytes.len()].copy_from_slice(bytes);
        out
    }
}

pub const FLAG_CLIP: u32 = 1;
pub const FLAG_NOISE: u32 = 2;
pub const FLAG_LEARNED: u32 = 4;

/// Noise roles: each gets its own seed so streams never collide.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Init = 0,
    Step = 1,
    MeasChain = 2,
    E1 = 3,
    E2 = 4,
    MeasInit = 5,
    Langevin = 6,
}

/// The state every sampler shares: schedule, x_t, the model call, the step
/// uniform, the DDPM noise.
pub struct Core {
    /// The model's process.
    pub process: Process,
    /// The base step every method's step builds on.
    pub kind: StepKind,
    /// The respaced VP schedule (None for a flow).
    pub vp: Option<Schedule>,
    /// Per-step (a, b), the next step's, and the network's time.
    pub grid: Grid,
    pub opts: SamplerOptions,
    pub batch: usize,
    /// elements per sample of x
    pub per: usize,
    /// elements per sample of the measurement (0 without one)
    pub m_per: usize,
    pub learned: bool,
    /// x_t: [N, C, H, W]
    pub x: Tensor,
    /// per-sample timesteps (original indices) [N]
    pub t: Tensor,
    pub eps: Tensor,
    /// v when the model has learned sigma, else a one-element placeholder.
    pub v: Tensor,
    /// DDPM noise z [N, ...]
    pub z: Tensor,
    pub step_uniform: wgpu::Buffer,
    /// eps (and v) = model(x_t, t)
    pub eps_plan: Plan,
    noises: Vec<Noise>,
    init_noise: Noise,
}

impl Core {
    /// `vjp`: the method also plans the model's VJP.
    fn new(
        gpu: &Gpu,
        model: &dyn ScoreModel,
        batch: usize,
        opts: &SamplerOptions,
        vjp: bool,
    ) -> Result<Core, SamplerError> {
        if batch == 0 {
            return Err(SamplerError::Invalid("the number of samples must be at least 1".into()));
        }
        let process = model.process();
        let max = process.max_steps();
        if opts.steps == 0 || max.is_some_and(|m| opts.steps > m) {
            return Err(SamplerError::Invalid(match max {
                Some(m) => format!(
                    "--steps must be between 1 and {m} (the model's diffusion steps), got {}",
                    opts.steps
                ),
                None => "--steps must be at least 1".into(),
            }));
        }
        let kind = StepKind::resolve(&process, opts)?;
        let vp = process.schedule(opts.steps)?;
        let grid = process.grid(opts.steps, vp.as_ref());
        let [c, h, w] = model.in_shape();
        let per = c * h * w;
        let shape = [batch, c, h, w];
        // DDIM and Euler steps have their own variance: the learned one goes unused.
        let learned = model.learned_sigma() && kind == StepKind::Ddpm;
        let x = Tensor::zeros(gpu, "x_t", &shape)?;
        let t = Tensor::zeros(gpu, "timesteps", &[batch])?;
        let eps = Tensor::zeros(gpu, "eps", &shape)?;
        let v = if model.learned_sigma() {
            Tensor::zeros(gpu, "v", &shape)?
        } else {
            Tensor::zeros(gpu, "v (unused)", &[1])?
        };
        let z = Tensor::zeros(gpu, "ddpm noise", &shape)?;
        let eps_plan = model.plan_eps(
            gpu,
            &EpsArgs {
                x: &x,
                t: &t,
                eps: &eps,
                v: model.learned_sigma().then_some(&v),
                vjp,
            },
        )?;
        let step_uniform = gpu.uniform("sampler step", &StepParams::default());
        let init_noise = Noise::new(gpu, &x, role_seed(opts.seed, Role::Init), 0, 0.0, 1.0)?;
        let zn = Noise::new(gpu, &z, role_seed(opts.seed, Role::Step), 0, 0.0, 1.0)?;
        Ok(Core {
            process,
            kind,
            vp,
            grid,
            opts: opts.clone(),
            batch,
            per,
            m_per: 0,
            learned,
            x,
            t,
            eps,
            v,
            z,
            step_uniform,
            eps_plan,
            noises: vec![zn],
            init_noise,
        })
    }

    /// A noise generator for `role` filling `out`, re-streamed every step
    /// (its dispatch goes into the method's step plan).
    fn noise(&mut self, gpu: &Gpu, out: &Tensor, role: Role) -> Result<Dispatch, SamplerError> {
        let n = Noise::new(gpu, out, role_seed(self.opts.seed, role), 0, 0.0, 1.0)?;
        let d = n.dispatch.clone();
        self.noises.push(n);
        Ok(d)
    }

    /// The DDPM noise z's dispatch (a step plan pushes it before [`Core::ddpm_step`]).
    fn z_dispatch(&self) -> Dispatch {
        self.noises[0].dispatch.clone()
    }

    /// The DDPM step x <- mean + sigma z + guide g + guide2 h (in place).
    fn ddpm_step(&self, gpu: &Gpu, g: &Tensor, h: &Tensor) -> Result<Dispatch, SamplerError> {
        let b = kernels::DdpmStep {
            s: &self.step_uniform,
            eps: &self.eps,
            v: &self.v,
            z: &self.z,
            g,
            h,
            x: &self.x,
        };
        self.launch(gpu, "ddpm_step", &b, self.batch * self.per)
    }

    /// r = y - resid_scale (A x) over the [N, m] measurement space.
    fn residual(&self, gpu: &Gpu, y: &Tensor, ax: &Tensor, r: &Tensor) -> Result<Dispatch, SamplerError> {
        let b = kernels::Residual {
            s: &self.step_uniform,
            y,
            ax,
            out: r,
        };
        self.launch(gpu, "residual", &b, r.numel())
    }

    /// x0hat(x_t) into `x0` (clamped when clipping) and the clamp's derivative into `mask`.
    fn x0_and_mask(&self, gpu: &Gpu, x0: &Tensor, mask: &Tensor) -> Result<Dispatch, SamplerError> {
        let b = kernels::X0AndMask {
            s: &self.step_uniform,
            x: &self.x,
            eps: &self.eps,
            x0,
            mask,
        };
        self.launch(gpu, "x0_and_mask", &b, self.batch * self.per)
    }

    /// One dispatch of a sampler.wgsl entry over `threads` threads (its
    /// bindings start with the step uniform, [`Core::step_uniform`]).
    fn launch<B: Bindings>(&self, gpu: &Gpu, entry: &str, b: &B, threads: usize) -> Result<Dispatch, SamplerError> {
        Ok(Dispatch::typed(gpu, entry, &[], b, dispatch_groups(threads, WG1D))?)
    }

    /// The scalars of step i shared by every sampler (the head of
    /// [`StepParams`]; no guidance, an empty method block): the base step as
    /// x' = coef1 x0hat + coef2 x + sigma z and the model-output maps.
    pub fn base_params(&self, i: usize) -> StepParams {
        let g = &self.grid;
        let (a, b, an) = (g.a[i], g.b[i], g.a_next[i]);
        let c = self.process.coefficients(a, b);
        let mut flags = 0;
        if self.opts.clip {
            flags |= FLAG_CLIP;
        }
        let mut p = StepParams {
            n: (self.batch * self.per) as u32,
            per: self.per as u32,
            m_per: self.m_per as u32,
            a_t: a as f32,
            b_t: b as f32,
            x0_x: c.x0_x as f32,
            x0_out: c.x0_out as f32,
            eps_x: c.eps_x as f32,
            eps_out: c.eps_out as f32,
            ..StepParams::default()
        };
        match (self.kind, &self.vp) {
            (StepKind::Ddpm, Some(s)) => {
                if i > 0 {
                    flags |= FLAG_NOISE;
                }
                if self.learned {
                    flags |= FLAG_LEARNED;
                }
                p.coef1 = s.posterior_mean_coef1[i] as f32;
                p.coef2 = s.posterior_mean_coef2[i] as f32;
                p.log_var_min = s.posterior_log_variance_clipped[i] as f32;
                p.log_var_max = s.betas[i].ln() as f32;
                p.log_var_fixed = s.fixed_log_variance(self.opts.variance, i) as f32;
            }
            _ => {
                // x' = an x0hat + ce epshat + sigma z with epshat re-derived from
                // the (clipped) x0hat, (x - a x0hat) / b, as guided-diffusion's DDIM does.
                let sigma = self.ddim_sigma(i);
                let ce = self.eps_coef(i);
                p.coef1 = (an - ce * a / b) as f32;
                p.coef2 = (ce / b) as f32;
                if sigma > 0.0 && i > 0 {
                    flags |= FLAG_NOISE;
                    p.log_var_fixed = (2.0 * sigma.ln()) as f32;
                }
            }
        }
        p.flags = flags;
        p
    }

    /// DDIM's sigma at step i (0 for Euler and eta = 0).
    fn ddim_sigma(&self, i: usize) -> f64 {
        match self.kind {
            StepKind::Ddim(eta) if eta > 0.0 => {
                let g = &self.grid;
                let (ab, abn) = (g.a[i] * g.a[i], g.a_next[i] * g.a_next[i]);
                eta * ((1.0 - abn) / (1.0 - ab) * (1.0 - ab / abn)).max(0.0).sqrt()
            }
            _ => 0.0,
        }
    }

    /// The coefficient of epshat in a DDIM / Euler step i: sqrt(b'^2 - sigma^2)
    /// (b' for Euler and eta = 0).
    pub fn eps_coef(&self, i: usize) -> f64 {
        let bn = self.grid.b_next[i];
        let sigma = self.ddim_sigma(i);
        (bn * bn - sigma * sigma).max(0.0).sqrt()
    }

    /// The coefficient a term added to the score takes in step i's base
    /// step: replacing the prior score grad log p_t by grad log p_t + v
    /// moves x_{t-1} by this times v. DDPM's mean (x + beta' grad log p_t) /
    /// sqrt(alpha') gives beta' / sqrt(alpha'); a step x' = a' x0hat + c
    /// epshat with epshat = -b grad log p_t gives b (a' b / a - c) (DDIM, a
    /// flow's Euler step). DMPS and ALD scale their likelihood scores by it.
    pub fn score_weight(&self, i: usize) -> f64 {
        let g = &self.grid;
        match self.kind {
            StepKind::Ddpm => {
                let alpha = 1.0 - self.schedule().betas[i];
                (1.0 - alpha) / alpha.sqrt()
            }
            StepKind::Ddim(_) | StepKind::Euler => g.b[i] * (g.a_next[i] * g.b[i] / g.a[i] - self.eps_coef(i)),
        }
    }

    /// The respaced VP schedule, for methods that run only on one (their
    /// `plan` refuses a flow with [`Core::require_ddpm`]).
    pub fn schedule(&self) -> &Schedule {
        self.vp
            .as_ref()
            .expect("a DDPM-only method was planned on a flow process")
    }

    /// Refuses a base step other than DDPM's for `what` (C-DPS, SMC), saying why.
    pub fn require_ddpm(&self, what: &str, why: &str) -> Result<(), SamplerError> {
        if self.kind == StepKind::Ddpm {
            return Ok(());
        }
        Err(SamplerError::Invalid(format!(
            "{what} runs on DDPM's ancestral step of a VP diffusion, not {} ({}): {why}",
            self.kind.label(),
            self.process.describe()
        )))
    }

    /// Refuses `--sampler` and `--eta` for `what` (RED-diff, DDNM+), a method
    /// that takes a step of its own (`why`), rather than ignoring them.
    pub fn refuse_base_step(&self, what: &str, why: &str) -> Result<(), SamplerError> {
        if self.opts.sampler.is_none() && self.opts.eta.is_none() {
            return Ok(());
        }
        Err(SamplerError::Invalid(format!(
            "{what} {why}: --sampler and --eta do not apply"
        )))
    }

    /// The plan of y~ = diag(s)^+ U^T y into `out` [N, m] (0 where s = 0):
    /// y's coordinates in the basis of V^T, V y~ = A^+ y. It reads m_per
    /// from the step uniform (an init plan writes it with
    /// [`Core::write_shape`] first).
    fn spectral_y(&self, gpu: &Gpu, svd: &dyn SvdForm, y: &Tensor, out: &Tensor) -> Result<Plan, SamplerError> {
        let mut plan = svd.ut(gpu, y, out)?;
        let b = kernels::Spectral {
            s: &self.step_uniform,
            sing: svd.singulars(),
            c: out,
        };
        plan.push(self.launch(gpu, "cdps_whiten", &b, out.numel())?);
        Ok(plan)
    }

    /// Writes the step uniform's sizes alone (n, per, m_per), for an init
    /// plan's kernels that read no step's scalars.
    fn write_shape(&self, gpu: &Gpu) {
        let p = StepParams {
            n: (self.batch * self.per) as u32,
            per: self.per as u32,
            m_per: self.m_per as u32,
            ..StepParams::default()
        };
        gpu.queue.write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(&p));
    }

    /// Number of reverse steps.
    pub fn steps(&self) -> usize {
        self.grid.a.len()
    }

    /// Queues step i's scalars, timesteps and noise streams.
    fn prepare(&self, gpu: &Gpu, i: usize, params: &StepParams) -> Result<(), SamplerError> {
        gpu.queue
            .write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(params));
        let ts = self.grid.net_time[i];
        self.t.write(gpu, &vec![ts; self.batch])?;
        for n in &self.noises {
            n.set_stream(gpu, i as u32);
        }
        Ok(())
    }

    /// The log variance sigma_t^2 of the reverse kernel at step i for a model
    /// without learned sigma (C-DPS reverse reading, host side).
    pub fn log_variance(&self, i: usize) -> f64 {
        self.schedule().fixed_log_variance(self.opts.variance, i)
    }
}

/// Every binding signature of the kernels this module launches itself
/// (`Dispatch::typed`), for `tests/bindings.rs`.
pub fn bindings() -> Vec<KernelSig> {
    [kernels::BINDINGS, cg::BINDINGS, score::BINDINGS].concat()
}

fn role_seed(seed: u64, role: Role) -> u64 {
    seed ^ (role as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What a method adds to the shared [`Core`]: its buffers, its step plan and
/// its per-step scalars. One implementation per file (`ddpm.rs`, `dps.rs`,
/// `dmps.rs`, `cdps.rs`), registered in one line of `methods!`.
pub trait MethodStep: Any {
    /// Builds the method on `core`: its buffers (named fields of `Self`), the
    /// plan of one reverse step (usually `core.eps_plan`, the method's
    /// dispatches, then `core.z_dispatch()` and `core.ddpm_step(..)`) and
    /// what [`Sampler::init`] runs once per run. `post.meas` has been
    /// validated against the model's shape; a method that needs it says so
    /// with [`Posterior::measurement`].
    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError>
    where
        Self: Sized;

    /// The name the command line and reports use ("cdps").
    fn name() -> &'static str
    where
        Self: Sized;

    /// The display name in messages ("C-DPS").
    fn label(&self) -> &'static str;

    /// The settings the method reads (see [`options`]). Default: none.
    fn options() -> &'static [&'static OptionSpec]
    where
        Self: Sized,
    {
        &[]
    }

    /// Whether the method conditions on a measurement. Default: yes.
    fn takes_measurement() -> bool
    where
        Self: Sized,
    {
        true
    }

    /// Whether the step takes the model's VJP (its U-Net forward then keeps
    /// what the VJP needs), with settings `opts` on a measurement whose
    /// operator has an SVD form (`svd`) or not.
    fn uses_vjp(_opts: &MethodOptions, _svd: bool) -> bool
    where
        Self: Sized,
    {
        false
    }

    /// Model forward passes one step makes with settings `opts` (DAPS runs
    /// its ODE several times per level): what NFE counts.
    fn model_calls(opts: &MethodOptions) -> usize
    where
        Self: Sized,
    {
        let _ = opts;
        1
    }

    /// Step i's scalars: `p` arrives with [`Core::base_params`]; the method
    /// sets what its kernels read (and host-driven state such as a CG's
    /// gamma). Default: nothing (plain DDPM).
    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let _ = (gpu, core, i, p);
    }

    /// What [`Sampler::init`] does before replaying the init plan (after
    /// x_T's noise stream is set): uniform values, noise streams. Default:
    /// nothing.
    fn prepare_init(&self, gpu: &Gpu, core: &Core) -> Result<(), SamplerError> {
        let _ = (gpu, core);
        Ok(())
    }

    /// The measurement y [N, m] the plan reads ([`Sampler::load_measurement`]
    /// copies into it). Default: none (the method takes no measurement).
    fn y(&self) -> Option<&Tensor> {
        None
    }

    /// How many samples the method runs for `batch` asked for (SMC: whole
    /// populations); [`Sampler::x`] shows the first `batch`. Default: `batch`.
    fn batch(batch: usize, opts: &SamplerOptions) -> usize
    where
        Self: Sized,
    {
        let _ = opts;
        batch
    }

    /// After the last reverse step (i = 0), with its scalars: work that ends
    /// a run (SMC's final weighing and resampling). Default: nothing.
    fn finish(&self, gpu: &Gpu, core: &Core, p: &StepParams) -> Result<(), SamplerError> {
        let _ = (gpu, core, p);
        Ok(())
    }

    /// What the method reports about the run so far, `steps` steps in (a
    /// read-back): CG iterations, particle populations. Default: nothing.
    fn stats(&self, gpu: &Gpu, steps: usize) -> Result<Vec<Stat>, SamplerError> {
        let _ = (gpu, steps);
        Ok(Vec::new())
    }
}

/// One statistic a method reports about a run.
#[derive(Clone, Debug)]
pub enum Stat {
    /// CG iteration counts (DMPS with CG, C-DPS).
    Cg(CgStats),
    /// SMC: resampling events and ESS / P per population.
    Populations(PopulationStats),
}

impl Stat {
    /// One line for a verbose log.
    pub fn summary(&self) -> String {
        match self {
            Stat::Cg(cg) => format!(
                "CG: {:.2} iterations per solve on average, {} samples unconverged in the last solve",
                cg.mean_per_solve(),
                cg.unconverged
            ),
            Stat::Populations(smc) => {
                let events: u32 = smc.events.iter().sum();
                let ess = smc.mean_ess.iter().sum::<f64>() / smc.mean_ess.len() as f64;
                let distinct = smc.distinct.iter().map(|&d| d as f64).sum::<f64>() / smc.distinct.len() as f64;
                format!(
                    "SMC: {} population(s), {events} resampling events, mean ESS {:.1}% of the particles, final ESS {:.1}%, {distinct:.0} distinct particles per population at the end",
                    smc.events.len(),
                    100.0 * ess,
                    100.0 * smc.last_ess.iter().map(|&v| v as f64).sum::<f64>() / smc.last_ess.len() as f64
                )
            }
        }
    }

    /// Lines beyond the summary for a verbose log: each SMC population's ESS
    /// over time (at 11 steps from the first to the last), resampling events
    /// and distinct particles at the end.
    pub fn details(&self) -> Vec<String> {
        let Stat::Populations(smc) = self else {
            return Vec::new();
        };
        let steps = smc.timeline(11);
        smc.ess_history
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let ess: Vec<String> = steps.iter().map(|&i| format!("{i}:{:.0}", 100.0 * h[i])).collect();
                format!(
                    "  population {k}: ESS % at step {}; {} resampling events; {} distinct at the end",
                    ess.join(" "),
                    smc.events[k],
                    smc.distinct[k]
                )
            })
            .collect()
    }
}

/// What [`MethodStep::plan`] hands the sampler.
pub struct Planned {
    pub method: Box<dyn MethodStep>,
    /// One reverse step, replayed by [`Sampler::step`] after
    /// [`MethodStep::params`].
    pub step: Plan,
    /// Run once per run by [`Sampler::init`], after x_T's draw.
    pub init: Plan,
}

impl Planned {
    /// `method` with its step plan and no init work.
    pub fn new(method: impl MethodStep, step: Plan) -> Planned {
        Planned {
            method: Box::new(method),
            step,
            init: Plan::new(),
        }
    }

    /// Adds work [`Sampler::init`] runs once per run.
    pub fn with_init(mut self, init: Plan) -> Planned {
        self.init = init;
        self
    }
}

/// What a method samples, as it is planned: the posterior of `model`'s
/// prior given `meas` (the prior itself without one).
pub struct Posterior<'a> {
    pub model: &'a dyn ScoreModel,
    pub meas: Option<&'a Measurement<'a>>,
}

impl<'a> Posterior<'a> {
    /// The measurement, or the error that `what` ("DPS") needs one.
    pub fn measurement(&self, what: &str) -> Result<&'a Measurement<'a>, SamplerError> {
        self.meas
            .ok_or_else(|| SamplerError::Invalid(format!("{what} needs a measurement (operator and y)")))
    }
}

/// The measurement's operator as a linear one, or the one-line refusal that
/// `what` ("DMPS") needs A^T (or an SVD form) and this measurement has none.
pub fn need_linear<'a>(meas: &Measurement<'a>, what: &str) -> Result<&'a dyn LinearOperator, SamplerError> {
    meas.op
        .linear()
        .ok_or_else(|| SamplerError::Invalid(format!("{what} needs a linear measurement; {} is not", meas.op.name())))
}

/// The measurement's operator's SVD form, or the one-line refusal that
/// `what` ("DDNM+") needs one and this measurement has none.
pub fn need_svd<'a>(meas: &Measurement<'a>, what: &str) -> Result<&'a dyn SvdForm, SamplerError> {
    need_linear(meas, what)?.svd().ok_or_else(|| {
        SamplerError::Invalid(format!(
            "{what} needs an operator with an SVD form; {} has none",
            meas.op.name()
        ))
    })
}

/// A planned sampler: `run` draws x_T and replays the K reverse steps.
pub struct Sampler {
    pub core: Core,
    /// The samples asked for: x, or its first rows when the method runs more
    /// (SMC rounds up to whole populations).
    out: Tensor,
    pub method: Method,
    kind: Box<dyn MethodStep>,
    step_plan: Plan,
    init_plan: Plan,
}

/// What a run reports.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub steps: usize,
    /// What the method reports ([`MethodStep::stats`]).
    pub method: Vec<Stat>,
}

impl RunStats {
    /// The CG statistic, when the method solved with CG.
    pub fn cg(&self) -> Option<&CgStats> {
        self.method.iter().find_map(|s| match s {
            Stat::Cg(c) => Some(c),
            _ => None,
        })
    }

    /// The particle populations' statistic, when the method has populations.
    pub fn populations(&self) -> Option<&PopulationStats> {
        self.method.iter().find_map(|s| match s {
            Stat::Populations(p) => Some(p),
            _ => None,
        })
    }
}

impl Sampler {
    /// Plans `method` for `batch` samples. DPS, DMPS and C-DPS need `meas`.
    pub fn new(
        gpu: &Gpu,
        method: Method,
        model: &dyn ScoreModel,
        meas: Option<Measurement<'_>>,
        batch: usize,
        opts: &SamplerOptions,
    ) -> Result<Sampler, SamplerError> {
        opts.method.validate()?;
        let svd = meas
            .as_ref()
            .is_some_and(|m| m.op.linear().and_then(|l| l.svd()).is_some());
        let vjp = method.uses_vjp(&opts.method, svd);
        let mut core = Core::new(gpu, model, method.batch(batch, opts), opts, vjp)?;
        if let Some(m) = &meas {
            if m.op.in_shape() != model.in_shape() {
                return Err(SamplerError::Invalid(format!(
                    "operator {} takes samples of shape {:?} but the model produces {:?}",
                    m.op.name(),
                    m.op.in_shape(),
                    model.in_shape()
                )));
            }
            let m_per: usize = m.op.out_shape().iter().product();
            if m.y.len() != m_per && m.y.len() != m_per * batch {
                return Err(SamplerError::Invalid(format!(
                    "the measurement has {} values but operator {} produces {:?} per sample",
                    m.y.len(),
                    m.op.name(),
                    m.op.out_shape()
                )));
            }
            if let Some(i) = m.y.iter().position(|v| !v.is_finite()) {
                return Err(SamplerError::Invalid(format!(
                    "the measurement y has a non-finite value at index {i}"
                )));
            }
            if !m.sigma_y.is_finite() || m.sigma_y < 0.0 {
                return Err(SamplerError::Invalid(format!(
                    "sigma_y must be finite and non-negative, got {}",
                    m.sigma_y
                )));
            }
            core.m_per = m_per;
        }
        let planned = method.plan(
            gpu,
            &mut core,
            &Posterior {
                model,
                meas: meas.as_ref(),
            },
        )?;
        let mut init_plan = Plan::new();
        init_plan.push(core.init_noise.dispatch.clone());
        init_plan.extend(planned.init);
        let out = Tensor::wrap(core.x.buffer.clone(), &[&[batch][..], &core.x.shape[1..]].concat());
        Ok(Sampler {
            core,
            out,
            method,
            kind: planned.method,
            step_plan: planned.step,
            init_plan,
        })
    }

    /// The method's own state when it is a `T` (`sampler.method_state::<cdps::Cdps>()`).
    pub fn method_state<T: MethodStep>(&self) -> Option<&T> {
        let any: &dyn Any = self.kind.as_ref();
        any.downcast_ref::<T>()
    }

    /// C-DPS's chain and noise buffers (None for the other methods).
    pub fn cdps_buffers(&self) -> Option<cdps::CdpsBuffers<'_>> {
        self.method_state::<cdps::Cdps>().map(|c| c.buffers())
    }

    /// Replaces the measurement with one already on the GPU (y [N, out_shape]
    /// or [out_shape]-per-sample layout as planned): a GPU-to-GPU buffer copy
    /// (`copy_buffer_to_buffer`, one submission; y's buffer needs COPY_SRC
    /// usage), no read-back. Call before [`Sampler::init`].
    pub fn load_measurement(&self, gpu: &Gpu, y: &Tensor) -> Result<(), SamplerError> {
        let own = self
            .kind
            .y()
            .ok_or_else(|| SamplerError::Invalid(format!("{} takes no measurement", self.kind.label())))?;
        if y.numel() != own.numel() {
            return Err(SamplerError::Invalid(format!(
                "the measurement tensor has {} values, the sampler was planned for {}",
                y.numel(),
                own.numel()
            )));
        }
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("load measurement"),
        });
        enc.copy_buffer_to_buffer(&y.buffer, 0, &own.buffer, 0, own.size_bytes() as u64);
        gpu.submit_checked("load measurement", enc)?;
        Ok(())
    }

    /// The samples: x_t during a run, x_0 after it.
    pub fn x(&self) -> &Tensor {
        &self.out
    }

    /// The plan of one reverse step ([`Sampler::step`] writes step i's
    /// scalars, then replays it).
    pub fn step_plan(&self) -> &Plan {
        &self.step_plan
    }

    /// Compute dispatches one reverse step records.
    pub fn step_dispatches(&self) -> usize {
        self.step_plan.dispatches()
    }

    pub fn steps(&self) -> usize {
        self.core.steps()
    }

    /// Draws x_T ~ N(0, I) (and what a method draws once per run).
    pub fn init(&self, gpu: &Gpu) -> Result<(), SamplerError> {
        self.core.init_noise.set_stream(gpu, 0);
        self.kind.prepare_init(gpu, &self.core)?;
        self.init_plan.run(gpu)?;
        Ok(())
    }

    /// Reverse step i (K-1 down to 0): one submission, no read-back.
    pub fn step(&self, gpu: &Gpu, i: usize) -> Result<(), SamplerError> {
        let mut p = self.core.base_params(i);
        self.kind.params(gpu, &self.core, i, &mut p);
        self.core.prepare(gpu, i, &p)?;
        self.step_plan.run(gpu)?;
        if i == 0 {
            self.kind.finish(gpu, &self.core, &p)?;
        }
        Ok(())
    }

    /// The whole run: init, then steps K-1 .. 0. Waits for the GPU at the end.
    pub fn run(&self, gpu: &Gpu) -> Result<RunStats, SamplerError> {
        self.init(gpu)?;
        for i in (0..self.steps()).rev() {
            self.step(gpu, i)?;
        }
        gpu.sync()?;
        self.stats(gpu)
    }

    /// Iteration counts so far (a read-back).
    pub fn stats(&self, gpu: &Gpu) -> Result<RunStats, SamplerError> {
        Ok(RunStats {
            steps: self.steps(),
            method: self.kind.stats(gpu, self.steps())?,
        })
    }
}
