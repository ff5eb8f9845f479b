//! `tweedie operator`: applies one measurement operator (forward or adjoint)
//! to a batch of tensors from a file.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::io::{write_tensors, TensorFile};
use crate::operators::task::{build, TaskSpec};
use crate::tensor::{HostTensor, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// y = A x
    Forward,
    /// x = A^T y (the input is in the output space of A)
    Adjoint,
}

#[derive(Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub spec: TaskSpec,
    /// Image side H = W of the operator's input space.
    #[arg(long)]
    pub image_size: usize,
    /// Channels of the operator's input space.
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Seed of the operator's random parts (masks, motion kernels).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// safetensors file with key "x" [N, C', H', W'].
    #[arg(long)]
    pub input: PathBuf,
    /// safetensors file to write, key "y".
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: OperatorArgs, verbose: bool) -> anyhow::Result<()> {
    let shape = [args.channels, args.image_size, args.image_size];
    let file = TensorFile::open(&args.input)?;
    let x = file.get("x")?;
    let gpu = super::open_gpu(verbose)?;
    let op = build(&gpu, &args.spec, shape, args.seed)?;
    let (want, out_per) = match args.mode {
        Mode::Forward => (op.in_shape(), op.out_shape()),
        Mode::Adjoint => (op.out_shape(), op.in_shape()),
    };
    if x.shape.len() != 4 || x.shape[0] == 0 || x.shape[1..] != want {
        bail!(
            "{}: tensor \"x\" has shape {:?}, expected [N, {}, {}, {}] for --mode {:?} of {} at --image-size {} --channels {}",
            args.input.display(),
            x.shape,
            want[0],
            want[1],
            want[2],
            args.mode,
            op.name(),
            args.image_size,
            args.channels
        );
    }
    if x.data.iter().any(|v| !v.is_finite()) {
        bail!("{}: tensor \"x\" holds NaN or infinite values", args.input.display());
    }
    let n = x.shape[0];
    let out_shape = [n, out_per[0], out_per[1], out_per[2]];
    let xt = Tensor::from_host(&gpu, "operator input", &x)?;
    let yt = Tensor::zeros(&gpu, "operator output", &out_shape)?;
    let plan = match args.mode {
        Mode::Forward => op.forward(&gpu, &xt, &yt)?,
        Mode::Adjoint => op.adjoint(&gpu, &xt, &yt)?,
    };
    plan.run(&gpu)?;
    let y = HostTensor::new(out_shape.to_vec(), yt.read(&gpu)?);
    write_tensors(&args.out, &[("y", &y)]).with_context(|| format!("writing {}", args.out.display()))?;
    if verbose {
        eprintln!("{} {:?}: {:?} -> {:?}", op.name(), args.mode, x.shape, out_shape);
    }
    Ok(())
}
