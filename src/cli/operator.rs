//! `tweedie operator`: applies one measurement operator (forward, adjoint,
//! or the vector-Jacobian product) to a batch of tensors from a file.

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
    /// J_A(x)^T v at x (the file also holds "v", shaped like y): A^T v for a linear operator
    Vjp,
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
    /// safetensors file with key "x" [N, C', H', W'] (and, for --mode vjp, "v" shaped like y).
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
        Mode::Vjp => (op.in_shape(), op.in_shape()),
    };
    // Checks a tensor of the file against [N, per]: one line naming it.
    let check = |name: &str, t: &HostTensor, per: [usize; 3], n: Option<usize>| -> anyhow::Result<()> {
        let n_ok = n.is_none_or(|n| t.shape.first() == Some(&n));
        if t.shape.len() != 4 || t.shape[0] == 0 || t.shape[1..] != per || !n_ok {
            bail!(
                "{}: tensor \"{name}\" has shape {:?}, expected [{}, {}, {}, {}] for --mode {:?} of {} at --image-size {} --channels {}",
                args.input.display(),
                t.shape,
                n.map_or("N".to_string(), |n| n.to_string()),
                per[0],
                per[1],
                per[2],
                args.mode,
                op.name(),
                args.image_size,
                args.channels
            );
        }
        if t.data.iter().any(|v| !v.is_finite()) {
            bail!(
                "{}: tensor \"{name}\" holds NaN or infinite values",
                args.input.display()
            );
        }
        Ok(())
    };
    check("x", &x, want, None)?;
    let n = x.shape[0];
    let out_shape = [n, out_per[0], out_per[1], out_per[2]];
    let xt = Tensor::from_host(&gpu, "operator input", &x)?;
    let yt = Tensor::zeros(&gpu, "operator output", &out_shape)?;
    let plan = match args.mode {
        Mode::Forward => op.forward(&gpu, &xt, &yt)?,
        Mode::Adjoint => match op.linear() {
            Some(lin) => lin.adjoint(&gpu, &xt, &yt)?,
            None => bail!(
                "--mode adjoint needs a linear operator; {} is not (use --mode vjp: J_A(x)^T v)",
                op.name()
            ),
        },
        Mode::Vjp => {
            let v = file.get("v")?;
            check("v", &v, op.out_shape(), Some(n))?;
            let vt = Tensor::from_host(&gpu, "operator cotangent", &v)?;
            op.vjp(&gpu, &xt, &vt, &yt)?
        }
    };
    plan.run(&gpu)?;
    let y = HostTensor::new(out_shape.to_vec(), yt.read(&gpu)?);
    write_tensors(&args.out, &[("y", &y)]).with_context(|| format!("writing {}", args.out.display()))?;
    if verbose {
        eprintln!("{} {:?}: {:?} -> {:?}", op.name(), args.mode, x.shape, out_shape);
    }
    Ok(())
}
