//! The `tweedie` command line (contract in DESIGN.md). Each subcommand lives in
//! its own module; errors end as one line on stderr and a non-zero exit.

use clap::{Parser, Subcommand};

mod info;
mod gmm;

#[derive(Parser)]
#[command(name = "tweedie", version, about = "Diffusion posterior sampling on the GPU (WGSL on wgpu)")]
pub struct Cli {
    /// Print the chosen adapter and other details to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Report the GPU adapters (and, given a model, its architecture).
    Info(info::InfoArgs),
    /// Sample a Gaussian-mixture inverse problem (exactness checks).
    Gmm(gmm::GmmArgs),
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::run(a, cli.verbose),
        Command::Gmm(a) => gmm::run(a, cli.verbose),
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
