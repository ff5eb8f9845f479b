//! Sampler options shared by `restore`, `eval`, `demo` and `gmm`.

use crate::operators::task::Task;
use clap::Args;

use crate::process::Process;
use crate::samplers::{BaseSampler, CdpsBasis, CdpsVariant, DmpsSolver, Method, SamplerOptions};
use crate::schedule::VarianceType;

/// DMPS's lambda on a VP diffusion (the paper's DDPM value).
pub const DMPS_LAMBDA_VP: f32 = 1.75;
/// DMPS's lambda on a flow model (the paper's Algorithm 2 default).
pub const DMPS_LAMBDA_FLOW: f32 = 2.0;

#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Reverse steps: a VP model's training steps at most (fewer respaces its schedule as
    /// guided-diffusion does); a flow model's Euler steps from t = 1 to 0.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Base step of a VP diffusion model: DDPM's ancestral step or DDIM (a flow model always
    /// takes Euler steps of its ODE).
    #[arg(long, value_enum)]
    pub sampler: Option<BaseSampler>,
    /// DDIM's noise level (0: deterministic, 1: DDPM-like); needs --sampler ddim.
    #[arg(long)]
    pub eta: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DPS step size (default: 0.5 for inpainting, 0.3 otherwise as DPS's configs, 1.0 for gmm).
    /// The defaults are made for 1000 steps; with ~20 steps the shipped prior wanted 4-8.
    #[arg(long)]
    pub zeta: Option<f32>,
    /// DMPS lambda (default: the paper's 1.75 on a VP diffusion, 2.0 on a flow model; 1.75 is
    /// made for 1000 DDPM steps: with a few dozen respaced steps it overshoots, and about 1 is stable).
    #[arg(long)]
    pub lambda: Option<f32>,
    /// CG relative-residual tolerance.
    #[arg(long, default_value_t = 1e-5)]
    pub cg_tol: f32,
    /// CG iteration cap.
    #[arg(long, default_value_t = 30)]
    pub cg_iters: usize,
    /// C-DPS x-factor: the learned reverse kernel (right) or the slides' forward kernel.
    #[arg(long, value_enum, default_value_t = CdpsVariant::Reverse)]
    pub cdps_variant: CdpsVariant,
    /// C-DPS measurement chain: in the operator's spectral basis (orthonormal rows, per-component
    /// noise) when it has an SVD form (auto), or on y as given.
    #[arg(long, value_enum, default_value_t = CdpsBasis::Auto)]
    pub cdps_basis: CdpsBasis,
    /// DMPS linear solve: SVD form when available, or CG.
    #[arg(long, value_enum, default_value_t = DmpsSolver::Auto)]
    pub dmps_solver: DmpsSolver,
    /// SMC: particles per population (default: all the samples of a batch form one population).
    #[arg(long)]
    pub particles: Option<usize>,
    /// SMC: resample when the effective sample size falls below this fraction of the particles.
    #[arg(long, default_value_t = 0.5)]
    pub ess_threshold: f32,
}

impl SamplingArgs {
    /// Checks the ranges; one clear line on failure.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.steps == 0 {
            anyhow::bail!("--steps must be at least 1");
        }
        if self.eta.is_some_and(|e| !(e.is_finite() && e >= 0.0)) {
            anyhow::bail!("--eta must be a non-negative number");
        }
        if !(self.cg_tol > 0.0) || self.cg_iters == 0 {
            anyhow::bail!("--cg-tol must be positive and --cg-iters at least 1");
        }
        if self.particles.is_some_and(|p| p < 2) {
            anyhow::bail!("--particles must be at least 2");
        }
        if !(0.0..=1.0).contains(&self.ess_threshold) {
            anyhow::bail!("--ess-threshold {} must be in [0, 1]", self.ess_threshold);
        }
        if !self.zeta.unwrap_or(1.0).is_finite() || !self.lambda.unwrap_or(1.0).is_finite() {
            anyhow::bail!("--zeta and --lambda must be finite numbers");
        }
        Ok(())
    }

    /// DMPS's lambda for a model of `process`: --lambda, or the paper's default for it.
    pub fn lambda(&self, process: &Process) -> f32 {
        self.lambda.unwrap_or(if process.is_flow() {
            DMPS_LAMBDA_FLOW
        } else {
            DMPS_LAMBDA_VP
        })
    }

    /// The sampler options for a model of `process`.
    pub fn options(&self, default_zeta: f32, clip: bool, variance: VarianceType, process: &Process) -> SamplerOptions {
        SamplerOptions {
            steps: self.steps,
            sampler: self.sampler,
            eta: self.eta,
            seed: self.seed,
            variance,
            clip,
            zeta: self.zeta.unwrap_or(default_zeta),
            lambda: self.lambda(process),
            cg_tol: self.cg_tol,
            cg_iters: self.cg_iters,
            cdps_variant: self.cdps_variant,
            cdps_basis: self.cdps_basis,
            dmps_solver: self.dmps_solver,
            particles: self.particles,
            ess_threshold: self.ess_threshold,
        }
    }
}

/// DPS's official step sizes: 0.5 for inpainting, 0.3 for blur and SR.
pub fn default_zeta(task: Task) -> f32 {
    if task.is_inpainting() {
        0.5
    } else {
        0.3
    }
}

/// The method's CLI name (`dmps`), as clap spells its value: no list to keep
/// in step with the registry.
pub fn method_name(m: Method) -> String {
    use clap::ValueEnum;
    m.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{m:?}").to_lowercase())
}
