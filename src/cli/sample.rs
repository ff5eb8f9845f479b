//! `tweedie sample`: unconditional samples from a model (DDPM or DDIM steps
//! for a VP diffusion, Euler steps for a flow), as a grid image (and the
//! tensors), e.g. to look at what a prior has learned.

use std::path::PathBuf;

use clap::Args;

use super::common::{progress, PriorArgs};
use super::sampling::base_sampler_parser;
use crate::io::{write_image, write_tensors};
use crate::restore::Restore;
use crate::samplers::{Method, SamplerOptions};
use crate::schedule::VarianceType;
use crate::tensor::HostTensor;

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub prior: PriorArgs,
    /// Number of samples (the grid is as square as it gets).
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// Reverse steps (a VP model's schedule respaced; a flow's Euler steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Base step of a VP diffusion model (default ddpm); a flow model always takes Euler steps.
    #[arg(long, value_parser = base_sampler_parser())]
    pub sampler: Option<crate::samplers::BaseSampler>,
    /// DDIM's noise level (needs --sampler ddim).
    #[arg(long)]
    pub eta: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Grid image to write (PNG); the tensors go beside it as .safetensors (key "samples").
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: SampleArgs, verbose: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    let gpu = super::open_gpu(verbose)?;
    let prior = args.prior.load(&gpu)?;
    let opts = SamplerOptions {
        steps: args.steps,
        sampler: args.sampler,
        eta: args.eta,
        seed: args.seed,
        variance: prior.score.unet().process.variance.unwrap_or(VarianceType::FixedLarge),
        clip: true,
        ..SamplerOptions::default()
    };
    let pb = progress(args.quiet, "sample");
    let mut cb = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        true
    };
    let r = Restore::new(&prior.score, Method::unconditional(), &opts).samples(
        &gpu,
        &[],
        args.samples,
        args.samples.min(64),
        &mut cb,
    )?;
    pb.finish_and_clear();
    let (c, s) = (prior.channels, prior.size);
    let cols = (args.samples as f64).sqrt().ceil() as usize;
    let rows = args.samples.div_ceil(cols);
    let gap = 2;
    let (w, h) = (cols * s + (cols + 1) * gap, rows * s + (rows + 1) * gap);
    let mut canvas = vec![1.0f32; c * h * w];
    for (k, img) in r.samples.iter().enumerate() {
        let (oy, ox) = (gap + (k / cols) * (s + gap), gap + (k % cols) * (s + gap));
        for ch in 0..c {
            for y in 0..s {
                for x in 0..s {
                    canvas[ch * h * w + (oy + y) * w + ox + x] = img[ch * s * s + y * s + x];
                }
            }
        }
    }
    write_image(&args.out, c, h, w, &canvas)?;
    let all: Vec<f32> = r.samples.iter().flatten().copied().collect();
    write_tensors(
        args.out.with_extension("safetensors"),
        &[("samples", &HostTensor::new(vec![args.samples, c, s, s], all))],
    )?;
    if !args.quiet {
        eprintln!(
            "{} samples, {} steps in {:.1} s on {}",
            args.samples,
            r.steps,
            r.seconds,
            gpu.describe()
        );
    }
    Ok(())
}
