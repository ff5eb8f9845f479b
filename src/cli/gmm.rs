//! `tweedie gmm`: sample a Gaussian-mixture inverse problem (the exactness
//! fixtures) with any sampler; writes `samples` [N, d].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::io::write_tensors;
use crate::operators::dense::Dense;
use crate::samplers::problem::GmmProblem;
use crate::samplers::{
    CdpsVariant, DmpsSolver, GmmPrior, Measurement, Method, Sampler, SamplerOptions,
};
use crate::schedule::{Schedule, VarianceType};
use crate::HostTensor;

/// Diffusion steps of the mixture prior's schedule (the image models' too).
const BASE_STEPS: usize = 1000;

#[derive(Args)]
pub struct GmmArgs {
    /// Problem file: prior.weights [K], prior.means [K,d], prior.vars [K,d], A [m,d], y [m], sigma_y [1].
    #[arg(long)]
    pub problem: PathBuf,
    #[arg(long, value_enum)]
    pub method: Method,
    /// Number of posterior samples.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Reverse steps (1..=1000; fewer respaces the 1000-step schedule).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output safetensors file (key "samples" [N, d]).
    #[arg(long)]
    pub out: PathBuf,
    /// DPS step size.
    #[arg(long, default_value_t = 1.0)]
    pub zeta: f32,
    /// DMPS lambda.
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
    /// DMPS linear solve: SVD form when available, or CG.
    #[arg(long, value_enum, default_value_t = DmpsSolver::Auto)]
    pub dmps_solver: DmpsSolver,
}

pub fn run(args: GmmArgs, verbose: bool) -> anyhow::Result<()> {
    if args.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    if args.steps == 0 || args.steps > BASE_STEPS {
        anyhow::bail!(
            "--steps must be between 1 and {BASE_STEPS}, got {}",
            args.steps
        );
    }
    if args.cg_tol.is_nan() || args.cg_tol <= 0.0 || args.cg_iters == 0 {
        anyhow::bail!("--cg-tol must be positive and --cg-iters at least 1");
    }
    if !args.zeta.is_finite() || !args.lambda.is_finite() {
        anyhow::bail!("--zeta and --lambda must be finite numbers");
    }
    let problem = GmmProblem::load(&args.problem)?;
    let gpu = super::open_gpu(verbose)?;
    let base = Schedule::linear(BASE_STEPS, BASE_STEPS)?;
    let model = GmmPrior::new(
        &gpu,
        &problem.weights,
        &problem.means,
        &problem.vars,
        problem.d,
        &base.alphas_cumprod,
    )?;
    let op = Dense::new(&gpu, &problem.a, [problem.d, 1, 1])
        .with_context(|| format!("{}: A", args.problem.display()))?;
    let opts = SamplerOptions {
        steps: args.steps,
        base_steps: BASE_STEPS,
        seed: args.seed,
        variance: VarianceType::FixedLarge,
        // The mixture's samples are not images: no [-1, 1] clipping.
        clip: false,
        zeta: args.zeta,
        lambda: args.lambda,
        cg_tol: args.cg_tol,
        cg_iters: args.cg_iters,
        cdps_variant: args.cdps_variant,
        dmps_solver: args.dmps_solver,
    };
    let meas = Measurement {
        op: &op,
        y: &problem.y,
        sigma_y: problem.sigma_y,
    };
    let sampler = Sampler::new(&gpu, args.method, &model, Some(meas), args.samples, &opts)?;
    let start = std::time::Instant::now();
    let stats = sampler.run(&gpu)?;
    let x = sampler.x().read(&gpu)?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        anyhow::bail!("sampling diverged: sample {} has a non-finite value (try a smaller --zeta or more --steps)", i / problem.d);
    }
    write_tensors(
        &args.out,
        &[(
            "samples",
            &HostTensor::new(vec![args.samples, problem.d], x),
        )],
    )?;
    if verbose {
        eprintln!(
            "{:?}: {} samples, {} steps in {:.2} s",
            args.method,
            args.samples,
            stats.steps,
            start.elapsed().as_secs_f64()
        );
        if let Some(cg) = &stats.cg {
            eprintln!(
                "CG: {:.2} iterations per solve on average, {} samples unconverged in the last solve",
                cg.mean_per_solve(),
                cg.unconverged
            );
        }
    }
    Ok(())
}
