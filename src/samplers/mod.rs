//! Diffusion samplers (DDPM, DPS, DMPS, C-DPS) over any [`ScoreModel`] and
//! [`Operator`], sharing one step-kernel family (`shaders/sampler.wgsl`), the
//! schedule code and the batched CG solver.
//!
//! A [`Sampler`] is planned once: every buffer, bind group and dispatch of a
//! reverse step is built in [`Sampler::new`]. A step then writes its scalars
//! (one uniform block), the per-sample timesteps and the noise streams with
//! `queue.write_buffer`, and replays its plan in one submission with no
//! read-back.

pub mod cdps;
pub mod cg;
pub mod ddpm;
pub mod dmps;
pub mod dps;
pub mod problem;
pub mod score;
pub mod smc;
pub mod unet_score;

use thiserror::Error;

use crate::gpu::{dispatch_groups, Dispatch, GpuError, Plan, SAMPLER, WG1D};
use crate::kernels::random::Noise;
use crate::operators::{Operator, OperatorError};
use crate::schedule::{Schedule, ScheduleError, VarianceType};
use crate::tensor::Tensor;
use crate::Gpu;

pub use cg::CgStats;
pub use score::{GmmPrior, ScoreError, ScoreModel};
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

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Ddpm,
    Dps,
    Dmps,
    Cdps,
    /// Sequential Monte Carlo (the twisted diffusion sampler): particles
    /// weighted by how well they explain y and resampled; asymptotically exact.
    Smc,
}

/// Where C-DPS takes the factor in x_{t-1} from (see [`cdps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CdpsVariant {
    /// The learned reverse kernel p_theta(x_{t-1} | x_t) = N(m_theta, sigma_t^2 I): the default.
    Reverse,
    /// The seed slides read literally: the forward kernel p(x_t | x_{t-1}).
    Forward,
}

/// Which coordinates C-DPS runs its measurement chain in (see [`cdps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CdpsBasis {
    /// The spectral basis when the operator has an SVD form, the measurement otherwise.
    Auto,
    /// y itself, as the paper writes it: right when A has orthonormal rows.
    Measurement,
    /// y~ = diag(s)^+ U^T y = V^T x + n~: orthonormal rows, noise sigma_y / s per component.
    Spectral,
}

/// How DMPS applies (sigma_y^2 I + c A A^T)^{-1}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DmpsSolver {
    /// The SVD form when the operator has one, CG otherwise.
    Auto,
    Svd,
    Cg,
}

/// Everything a sampler run is configured by.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// Reverse steps (respaced from `base_steps` as guided-diffusion does).
    pub steps: usize,
    /// Steps of the schedule the model was trained with.
    pub base_steps: usize,
    pub seed: u64,
    /// Variance of models without learned sigma.
    pub variance: VarianceType,
    /// Clip x0hat to [-1, 1] (images yes, the Gaussian-mixture checks no).
    pub clip: bool,
    /// DPS step size.
    pub zeta: f32,
    /// DMPS lambda.
    pub lambda: f32,
    pub cg_tol: f32,
    pub cg_iters: usize,
    pub cdps_variant: CdpsVariant,
    pub cdps_basis: CdpsBasis,
    pub dmps_solver: DmpsSolver,
    /// SMC: particles per population (None: the whole batch is one population).
    pub particles: Option<usize>,
    /// SMC: resample when the effective sample size falls below this fraction of the particles.
    pub ess_threshold: f32,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            steps: 1000,
            base_steps: 1000,
            seed: 0,
            variance: VarianceType::FixedLarge,
            clip: true,
            zeta: 1.0,
            lambda: 1.75,
            cg_tol: 1e-5,
            cg_iters: 30,
            cdps_variant: CdpsVariant::Reverse,
            cdps_basis: CdpsBasis::Auto,
            dmps_solver: DmpsSolver::Auto,
            particles: None,
            ess_threshold: 0.5,
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

/// Mirrors `Step` in shaders/sampler.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    pub n: u32,
    pub per: u32,
    pub m_per: u32,
    pub flags: u32,
    pub a_t: f32,
    pub b_t: f32,
    pub coef1: f32,
    pub coef2: f32,
    pub log_var_min: f32,
    pub log_var_max: f32,
    pub log_var_fixed: f32,
    pub guide: f32,
    pub guide2: f32,
    pub resid_scale: f32,
    pub sigma_y2: f32,
    pub gamma: f32,
    pub y_coef0: f32,
    pub y_coef1: f32,
    pub y_std: f32,
    pub meas_var: f32,
    pub tw_coef: f32,
    pub prec: f32,
    pub h_coef: f32,
    pub variant: u32,
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
}

/// The state every sampler shares: schedule, x_t, the model call, the step
/// uniform, the DDPM noise.
pub struct Core {
    pub schedule: Schedule,
    pub opts: SamplerOptions,
    pub batch: usize,
    pub per: usize,
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
    fn new(gpu: &Gpu, model: &dyn ScoreModel, batch: usize, opts: &SamplerOptions) -> Result<Core, SamplerError> {
        if batch == 0 {
            return Err(SamplerError::Invalid("the number of samples must be at least 1".into()));
        }
        if opts.steps == 0 || opts.steps > opts.base_steps {
            return Err(SamplerError::Invalid(format!(
                "steps must be between 1 and {} (the model's diffusion steps), got {}",
                opts.base_steps, opts.steps
            )));
        }
        let schedule = Schedule::linear(opts.base_steps, opts.steps)?;
        let [c, h, w] = model.in_shape();
        let per = c * h * w;
        let shape = [batch, c, h, w];
        let learned = model.learned_sigma();
        let x = Tensor::zeros(gpu, "x_t", &shape)?;
        let t = Tensor::zeros(gpu, "timesteps", &[batch])?;
        let eps = Tensor::zeros(gpu, "eps", &shape)?;
        let v = if learned {
            Tensor::zeros(gpu, "v", &shape)?
        } else {
            Tensor::zeros(gpu, "v (unused)", &[1])?
        };
        let z = Tensor::zeros(gpu, "ddpm noise", &shape)?;
        let eps_plan = model.plan_eps(gpu, &x, &t, &eps, learned.then_some(&v))?;
        let step_uniform = gpu.uniform("sampler step", &StepParams::default());
        let init_noise = Noise::new(gpu, &x, role_seed(opts.seed, Role::Init), 0, 0.0, 1.0)?;
        let zn = Noise::new(gpu, &z, role_seed(opts.seed, Role::Step), 0, 0.0, 1.0)?;
        Ok(Core {
            schedule,
            opts: opts.clone(),
            batch,
            per,
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

    /// A noise generator for `role` filling `out`, re-streamed every step.
    fn noise(&mut self, gpu: &Gpu, out: &Tensor, role: Role) -> Result<Dispatch, SamplerError> {
        let n = Noise::new(gpu, out, role_seed(self.opts.seed, role), 0, 0.0, 1.0)?;
        let d = n.dispatch.clone();
        self.noises.push(n);
        Ok(d)
    }

    fn z_dispatch(&self) -> Dispatch {
        self.noises[0].dispatch.clone()
    }

    /// The DDPM step x <- mean + sigma z + guide g + guide2 h (in place).
    fn ddpm_step(&self, gpu: &Gpu, g: &Tensor, h: &Tensor) -> Result<Dispatch, SamplerError> {
        Ok(Dispatch::new(
            gpu,
            &SAMPLER,
            "ddpm_step",
            &[],
            &[
                &self.step_uniform,
                &self.eps.buffer,
                &self.v.buffer,
                &self.z.buffer,
                &g.buffer,
                &h.buffer,
                &self.x.buffer,
            ],
            dispatch_groups(self.batch * self.per, WG1D),
        )?)
    }

    /// One dispatch of a sampler.wgsl entry over `threads` threads.
    fn kernel(
        &self,
        gpu: &Gpu,
        entry: &str,
        buffers: &[&wgpu::Buffer],
        threads: usize,
    ) -> Result<Dispatch, SamplerError> {
        let mut all = vec![&self.step_uniform];
        all.extend_from_slice(buffers);
        Ok(Dispatch::new(
            gpu,
            &SAMPLER,
            entry,
            &[],
            &all,
            dispatch_groups(threads, WG1D),
        )?)
    }

    /// The scalars of step i shared by every sampler.
    fn base_params(&self, i: usize, m_per: usize) -> StepParams {
        let s = &self.schedule;
        let abar = s.alphas_cumprod[i];
        let mut flags = 0;
        if self.opts.clip {
            flags |= FLAG_CLIP;
        }
        if i > 0 {
            flags |= FLAG_NOISE;
        }
        if self.learned {
            flags |= FLAG_LEARNED;
        }
        StepParams {
            n: (self.batch * self.per) as u32,
            per: self.per as u32,
            m_per: m_per as u32,
            flags,
            a_t: abar.sqrt() as f32,
            b_t: (1.0 - abar).sqrt() as f32,
            coef1: s.posterior_mean_coef1[i] as f32,
            coef2: s.posterior_mean_coef2[i] as f32,
            log_var_min: s.posterior_log_variance_clipped[i] as f32,
            log_var_max: s.betas[i].ln() as f32,
            log_var_fixed: s.fixed_log_variance(self.opts.variance, i) as f32,
            ..StepParams::default()
        }
    }

    /// Queues step i's scalars, timesteps and noise streams.
    fn prepare(&self, gpu: &Gpu, i: usize, params: &StepParams) -> Result<(), SamplerError> {
        gpu.queue
            .write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(params));
        let ts = self.schedule.timestep_map[i] as f32;
        self.t.write(gpu, &vec![ts; self.batch])?;
        for n in &self.noises {
            n.set_stream(gpu, i as u32);
        }
        Ok(())
    }

    /// The log variance sigma_t^2 of the reverse kernel at step i for a model
    /// without learned sigma (C-DPS reverse reading, host side).
    pub fn log_variance(&self, i: usize) -> f64 {
        self.schedule.fixed_log_variance(self.opts.variance, i)
    }
}

fn role_seed(seed: u64, role: Role) -> u64 {
    seed ^ (role as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What a method adds to the shared core.
enum Method_ {
    Ddpm,
    Dps(dps::Dps),
    Dmps(dmps::Dmps),
    Cdps(cdps::Cdps),
    Smc(smc::Smc),
}

/// A planned sampler: `run` draws x_T and replays the K reverse steps.
pub struct Sampler {
    pub core: Core,
    /// The samples asked for: x, or its first N rows when SMC rounds the
    /// batch up to whole populations.
    out: Tensor,
    pub method: Method,
    kind: Method_,
    step_plan: Plan,
    init_plan: Plan,
    m_per: usize,
}

/// What a run reports.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub steps: usize,
    /// CG iteration counts (DMPS with CG, C-DPS).
    pub cg: Option<CgStats>,
    /// SMC: resampling events and mean ESS / P per population.
    pub smc: Option<crate::kernels::smc::PopulationStats>,
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
        // SMC runs whole populations: the batch rounded up to a multiple of P.
        let particles = opts.particles.unwrap_or(batch).max(1);
        let core_batch = if method == Method::Smc {
            if let Some(m) = &meas {
                let m_per: usize = m.op.out_shape().iter().product();
                if m.y.len() != m_per && batch % particles != 0 {
                    return Err(SamplerError::Invalid(format!(
                        "SMC with one measurement per sample needs a batch that is a multiple of --particles ({batch} samples, {particles} particles)"
                    )));
                }
            }
            batch.div_ceil(particles) * particles
        } else {
            batch
        };
        let mut core = Core::new(gpu, model, core_batch, opts)?;
        let mut init_plan = Plan::new();
        init_plan.push(core.init_noise.dispatch.clone());
        let mut m_per = 0;
        if let Some(m) = &meas {
            if m.op.in_shape() != model.in_shape() {
                return Err(SamplerError::Invalid(format!(
                    "operator {} takes samples of shape {:?} but the model produces {:?}",
                    m.op.name(),
                    m.op.in_shape(),
                    model.in_shape()
                )));
            }
            m_per = m.op.out_shape().iter().product();
            if m.y.len() != m_per && m.y.len() != m_per * batch {
                // (per-sample measurements: batch rows, checked against the rounding above)
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
        }
        let need = |what: &str| SamplerError::Invalid(format!("{what} needs a measurement (operator and y)"));
        let (kind, step_plan) = match method {
            Method::Ddpm => {
                let mut plan = core.eps_plan.clone();
                plan.push(core.z_dispatch());
                plan.push(core.ddpm_step(gpu, &core.eps, &core.eps)?);
                (Method_::Ddpm, plan)
            }
            Method::Dps => {
                let m = meas.ok_or_else(|| need("DPS"))?;
                let (d, plan) = dps::Dps::plan(gpu, &mut core, model, &m)?;
                (Method_::Dps(d), plan)
            }
            Method::Dmps => {
                let m = meas.ok_or_else(|| need("DMPS"))?;
                let (d, plan) = dmps::Dmps::plan(gpu, &mut core, &m)?;
                (Method_::Dmps(d), plan)
            }
            Method::Cdps => {
                let m = meas.ok_or_else(|| need("C-DPS"))?;
                if m.sigma_y <= 0.0 {
                    // Sigma_{y|x} = sigma_y^2 at the last step: its precision would be infinite.
                    return Err(SamplerError::Invalid(
                        "C-DPS needs sigma_y > 0 (its last step conditions on y with variance sigma_y^2)".into(),
                    ));
                }
                let (d, plan, init) = cdps::Cdps::plan(gpu, &mut core, &m)?;
                init_plan.extend(init);
                (Method_::Cdps(d), plan)
            }
            Method::Smc => {
                let m = meas.ok_or_else(|| need("SMC"))?;
                let (s, plan) = smc::Smc::plan(gpu, &mut core, model, &m, particles)?;
                (Method_::Smc(s), plan)
            }
        };
        let out = Tensor::wrap(core.x.buffer.clone(), &[&[batch][..], &core.x.shape[1..]].concat());
        Ok(Sampler {
            core,
            out,
            method,
            kind,
            step_plan,
            init_plan,
            m_per,
        })
    }

    /// C-DPS's chain and noise buffers (None for the other methods).
    pub fn cdps_buffers(&self) -> Option<cdps::CdpsBuffers<'_>> {
        match &self.kind {
            Method_::Cdps(c) => Some(c.buffers()),
            _ => None,
        }
    }

    /// Replaces the measurement with one already on the GPU (y [N, out_shape]
    /// or [out_shape]-per-sample layout as planned): a GPU-to-GPU copy, no
    /// read-back. Call before [`Sampler::init`].
    pub fn load_measurement(&self, gpu: &Gpu, y: &Tensor) -> Result<(), SamplerError> {
        let own = match &self.kind {
            Method_::Ddpm => return Err(SamplerError::Invalid("DDPM takes no measurement".into())),
            Method_::Dps(d) => d.y(),
            Method_::Dmps(d) => d.y(),
            Method_::Cdps(c) => c.y(),
            Method_::Smc(s) => s.y(),
        };
        if y.numel() != own.numel() {
            return Err(SamplerError::Invalid(format!(
                "the measurement tensor has {} values, the sampler was planned for {}",
                y.numel(),
                own.numel()
            )));
        }
        let copy = crate::kernels::elementwise::Elementwise::new(
            gpu,
            crate::kernels::elementwise::Op::Affine,
            y,
            own,
            1.0,
            0.0,
        )?;
        Plan {
            steps: vec![copy.dispatch],
        }
        .run(gpu)?;
        Ok(())
    }

    /// The samples: x_t during a run, x_0 after it.
    pub fn x(&self) -> &Tensor {
        &self.out
    }

    pub fn steps(&self) -> usize {
        self.core.schedule.len()
    }

    /// Draws x_T ~ N(0, I) (and what a method draws once per run).
    pub fn init(&self, gpu: &Gpu) -> Result<(), SamplerError> {
        self.core.init_noise.set_stream(gpu, 0);
        match &self.kind {
            Method_::Cdps(c) => c.prepare_init(gpu, &self.core, self.m_per)?,
            Method_::Smc(s) => s.prepare_init(gpu)?,
            _ => {}
        }
        self.init_plan.run(gpu)?;
        Ok(())
    }

    /// Reverse step i (K-1 down to 0): one submission, no read-back.
    pub fn step(&self, gpu: &Gpu, i: usize) -> Result<(), SamplerError> {
        let mut p = self.core.base_params(i, self.m_per);
        match &self.kind {
            Method_::Ddpm => {}
            Method_::Dps(d) => d.params(&self.core, i, &mut p),
            Method_::Dmps(d) => d.params(gpu, &self.core, i, &mut p),
            Method_::Cdps(c) => c.params(gpu, &self.core, i, &mut p),
            Method_::Smc(s) => s.params(gpu, &self.core, i, &mut p),
        }
        self.core.prepare(gpu, i, &p)?;
        self.step_plan.run(gpu)?;
        if let (Method_::Smc(s), 0) = (&self.kind, i) {
            s.finish(gpu, &self.core, &p)?;
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
        let cg = match &self.kind {
            Method_::Dmps(d) => d.cg_stats(gpu)?,
            Method_::Cdps(c) => Some(c.cg.stats(gpu)?),
            _ => None,
        };
        let smc = match &self.kind {
            Method_::Smc(s) => Some(s.stats(gpu, self.steps())?),
            _ => None,
        };
        Ok(RunStats {
            steps: self.steps(),
            cg,
            smc,
        })
    }
}
