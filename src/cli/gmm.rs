//! `tweedie gmm`: sample a Gaussian-mixture inverse problem (the exactness
//! fixtures) with any sampler; writes `samples` [N, d].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::io::write_tensors;
use crate::process::Process;
use crate::samplers::problem::GmmProblem;
use crate::samplers::{GmmPrior, Measurement, Method, Sampler};
use crate::schedule::VarianceType;
use crate::HostTensor;

use super::sampling::{method_parser, SamplingArgs};

/// `tweedie gmm --process`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GmmProcess {
    Ddpm,
    Flow,
}

impl GmmProcess {
    pub fn process(self) -> Process {
        match self {
            GmmProcess::Ddpm => Process::default(),
            GmmProcess::Flow => Process::flow(1.0),
        }
    }
}

#[derive(Args)]
pub struct GmmArgs {
    /// Problem file: prior.weights [K], prior.means [K,d], prior.vars [K,d], A [m,d], y [m], sigma_y [1].
    #[arg(long)]
    pub problem: PathBuf,
    #[arg(long, value_parser = method_parser())]
    pub method: Method,
    /// Number of posterior samples.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// The mixture's process: a VP diffusion (linear betas, 1000 steps, the exact eps) or a
    /// flow x_t = (1 - t) x0 + t eps (the exact velocity, Euler steps).
    #[arg(long, value_enum, default_value_t = GmmProcess::Ddpm)]
    pub process: GmmProcess,
    /// Output safetensors file (key "samples" [N, d]).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: GmmArgs, verbose: bool) -> anyhow::Result<()> {
    if args.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    args.sampling.validate(args.method)?;
    let problem = GmmProblem::load(&args.problem)?;
    let gpu = super::open_gpu(verbose)?;
    let process = args.process.process();
    let model = GmmPrior::new(
        &gpu,
        &problem.weights,
        &problem.means,
        &problem.vars,
        problem.d,
        &process,
    )?;
    let op = problem
        .operator(&gpu)
        .with_context(|| format!("{}: A", args.problem.display()))?;
    // The mixture's samples are not images: no [-1, 1] clipping.
    let opts = args.sampling.options(1.0, false, VarianceType::FixedLarge)?;
    let meas = Measurement {
        op: op.as_ref(),
        y: &problem.y,
        sigma_y: problem.sigma_y,
    };
    let sampler = Sampler::new(&gpu, args.method, &model, Some(meas), args.samples, &opts)?;
    let start = std::time::Instant::now();
    let stats = sampler.run(&gpu)?;
    let x = sampler.x().read(&gpu)?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "sampling diverged: sample {} has a non-finite value (try a smaller --zeta or more --steps)",
            i / problem.d
        );
    }
    write_tensors(
        &args.out,
        &[("samples", &HostTensor::new(vec![args.samples, problem.d], x))],
    )?;
    if verbose {
        eprintln!(
            "{:?}: {} samples, {} steps in {:.2} s",
            args.method,
            args.samples,
            stats.steps,
            start.elapsed().as_secs_f64()
        );
        for stat in &stats.method {
            eprintln!("{}", stat.summary());
            for line in stat.details() {
                eprintln!("{line}");
            }
        }
    }
    Ok(())
}
