//! Sampler options shared by `restore`, `eval`, `demo` and `gmm`.

use crate::operators::task::Task;
use clap::Args;

use crate::samplers::{CdpsBasis, CdpsVariant, DmpsSolver, Method, SamplerOptions};
use crate::schedule::VarianceType;

/// Diffusion steps the models here were trained with.
pub const BASE_STEPS: usize = 1000;

#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Reverse steps (1..=1000; fewer respaces the 1000-step schedule as guided-diffusion does).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DPS step size (default: 0.5 for inpainting, 0.3 otherwise as DPS's configs, 1.0 for gmm).
    /// The defaults are made for 1000 steps; with ~20 steps the shipped prior wanted 4-8.
    #[arg(long)]
    pub zeta: Option<f32>,
    /// DMPS lambda (the paper's 1.75 is made for 1000 steps; with a few dozen respaced
    /// steps it overshoots, and about 1 is stable).
    #[arg(long, default_value_t = 1.75)]
    pub lambda: f32,
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
        if self.steps == 0 || self.steps > BASE_STEPS {
            anyhow::bail!("--steps must be between 1 and {BASE_STEPS}, got {}", self.steps);
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
        if !self.zeta.unwrap_or(1.0).is_finite() || !self.lambda.is_finite() {
            anyhow::bail!("--zeta and --lambda must be finite numbers");
        }
        Ok(())
    }

    pub fn options(&self, default_zeta: f32, clip: bool, variance: VarianceType) -> SamplerOptions {
        SamplerOptions {
            steps: self.steps,
            base_steps: BASE_STEPS,
            seed: self.seed,
            variance,
            clip,
            zeta: self.zeta.unwrap_or(default_zeta),
            lambda: self.lambda,
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
