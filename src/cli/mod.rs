//! The `tweedie` command line (contract in docs/cli.md). Each subcommand lives in
//! its own module; errors end as one line on stderr and a non-zero exit.

use clap::{Parser, Subcommand};

mod bench;
mod common;
mod compare;
mod convert;
mod degrade;
mod demo;
mod devices;
mod eval;
mod gmm;
mod info;
mod operator;
mod restore;
mod sample;
mod sampling;
mod task;
mod unet;

#[derive(Parser)]
#[command(
    name = "tweedie",
    version,
    about = "Diffusion posterior sampling on the GPU (WGSL on wgpu)"
)]
pub struct Cli {
    /// Print the chosen adapter and other details to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The main job on the shipped prior: restore held-out test images, PSNR/SSIM vs a baseline, pictures.
    Demo(demo::DemoArgs),
    /// Restore image(s): posterior samples, their mean and per-pixel std, report.json.
    Restore(restore::RestoreArgs),
    /// Unconditional samples from a model (DDPM/DDIM for a VP diffusion, Euler for a flow), as a grid image.
    Sample(sample::SampleArgs),
    /// Evaluate a method on a folder of clean images: PSNR/SSIM per image and the mean.
    Eval(eval::EvalArgs),
    /// Several methods on the same images and measurements: results.json, results.md, a picture grid, a PSNR-vs-time plot.
    Compare(compare::CompareArgs),
    /// Combine the shard files of `tweedie eval --shard i/n` into results.json and results.csv.
    EvalMerge(eval::MergeArgs),
    /// Report the GPU adapters (and, given a model, its architecture, parameters, FLOPs, and every plan's memory and dispatches).
    Info(info::InfoArgs),
    /// Time each kernel family on this GPU, or (--model) every layer shape, pass and sampler step of a model.
    Bench(bench::BenchArgs),
    /// Make a measurement y = A x + sigma_y n from a clean image.
    Degrade(degrade::DegradeArgs),
    /// Apply a measurement operator (forward or adjoint) to tensors in a file.
    Operator(operator::OperatorArgs),
    /// One U-Net forward pass on the tensors x, t of a safetensors file.
    Unet(unet::UnetArgs),
    /// Sample a Gaussian-mixture inverse problem (exactness checks).
    Gmm(gmm::GmmArgs),
    /// Write a model (a PyTorch .pt/.pth/.ckpt/.bin checkpoint) as model.safetensors + config.json.
    Convert(convert::ConvertArgs),
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's message in one line, like every other error: the usage
            // and "for more information" lines dropped, the rest joined.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
                .collect();
            eprintln!("{}", msg.join(" "));
            return 2;
        }
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(a, cli.verbose),
        Command::Restore(a) => restore::run(a, cli.verbose),
        Command::Sample(a) => sample::run(a, cli.verbose),
        Command::Eval(a) => eval::run(a, cli.verbose),
        Command::Compare(a) => compare::run(a, cli.verbose),
        Command::EvalMerge(a) => eval::run_merge(a, cli.verbose),
        Command::Info(a) => info::run(a, cli.verbose),
        Command::Bench(a) => bench::run(a, cli.verbose),
        Command::Degrade(a) => degrade::run(a, cli.verbose),
        Command::Operator(a) => operator::run(a, cli.verbose),
        Command::Unet(a) => unet::run(a, cli.verbose),
        Command::Gmm(a) => gmm::run(a, cli.verbose),
        Command::Convert(a) => convert::run(a, cli.verbose),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // One line: the chain of causes joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            1
        }
    }
}

/// Opens the GPU, printing the adapter when verbose.
pub fn open_gpu(verbose: bool) -> anyhow::Result<crate::Gpu> {
    let gpu = crate::Gpu::new()?;
    if verbose {
        eprintln!("adapter: {}", gpu.describe());
    }
    Ok(gpu)
}
