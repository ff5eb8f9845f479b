//! `tweedie unet --model M --input io.safetensors --out out.safetensors [--vjp]`:
//! one U-Net forward pass on the tensors `x` [N, C, H, W] and `t` [N].

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::common::PrecisionArg;

use crate::io::{write_tensors, TensorFile};
use crate::tensor::HostTensor;
use crate::unet::memory::PlanKind;
use crate::unet::{Unet, UnetForward, UnetVjp};

#[derive(Args)]
pub struct UnetArgs {
    /// Model directory (model.safetensors + config.json) or weights file with config.json beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `x` [N, C, H, W] and `t` [N] (float timesteps; [1] is broadcast).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `out` [N, out_channels, H, W].
    #[arg(long)]
    pub out: PathBuf,
    /// Also write `vjp` = (d out / d x)^T cotangent (reads `cotangent` from the input).
    #[arg(long)]
    pub vjp: bool,
    /// Also time every layer (each on its own, N times) and print where the time goes.
    #[arg(long, value_name = "N")]
    pub profile: Option<usize>,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

pub fn run(args: UnetArgs, verbose: bool) -> anyhow::Result<()> {
    let io = TensorFile::open(&args.input)?;
    let x = io.get("x")?;
    let t = io.get("t")?;
    if x.shape.len() != 4 {
        bail!("{}: x must be [N, C, H, W], got {:?}", args.input.display(), x.shape);
    }
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let t = match t.data.len() {
        len if len == n => t.data,
        1 => vec![t.data[0]; n],
        _ => bail!(
            "{}: t must have N = {n} entries (or 1), got shape {:?}",
            args.input.display(),
            t.shape
        ),
    };
    if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
        bail!("{}: x has a non-finite value at flat index {i}", args.input.display());
    }
    if let Some(i) = t.iter().position(|v| !v.is_finite()) {
        bail!("{}: t has a non-finite value at index {i}", args.input.display());
    }
    let gpu = super::open_gpu(verbose)?;
    gpu.require_dtype(args.precision.precision.dtype())?;
    let unet = Unet::load_as(&gpu, &args.model, args.precision.precision.dtype())
        .with_context(|| format!("loading {}", args.model.display()))?;
    if c != unet.config.in_channels() {
        bail!(
            "{}: x has {c} channels, the model takes {}",
            args.input.display(),
            unet.config.in_channels()
        );
    }
    let cotangent = if args.vjp {
        let c = io.get("cotangent")?;
        if let Some(i) = c.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: cotangent has a non-finite value at flat index {i}",
                args.input.display()
            );
        }
        Some(c)
    } else {
        None
    };
    let kind = if cotangent.is_some() {
        PlanKind::ForwardVjp
    } else {
        PlanKind::Forward
    };
    let fwd = UnetForward::new_kind(&gpu, &unet, n, h, w, kind)?;
    let start = std::time::Instant::now();
    let flops = unet.graph.flops(h, w) * n as f64 / 1e9;
    let shape = fwd.output().shape.clone();
    match cotangent {
        None => {
            let out = fwd.run(&gpu, &x.data, &t)?;
            if verbose {
                eprintln!("forward: {:.3} s ({flops:.1} GFLOP)", start.elapsed().as_secs_f64());
            }
            write_tensors(&args.out, &[("out", &HostTensor::new(shape, out))])?;
            if let Some(iters) = args.profile {
                let times = crate::unet::profile::profile(&gpu, &fwd, None, iters.max(1))?;
                print!("{}", crate::unet::profile::report(&times, 15));
            }
        }
        Some(c) => {
            if c.shape != shape {
                bail!(
                    "{}: cotangent must have the output's shape {shape:?}, got {:?}",
                    args.input.display(),
                    c.shape
                );
            }
            let vjp = UnetVjp::new(&gpu, &unet, &fwd)?;
            let (out, dx) = vjp.run(&gpu, &fwd, &x.data, &t, &c.data)?;
            if verbose {
                eprintln!("forward + vjp: {:.3} s", start.elapsed().as_secs_f64());
            }
            let out = HostTensor::new(shape, out);
            let dx = HostTensor::new(x.shape.clone(), dx);
            write_tensors(&args.out, &[("out", &out), ("vjp", &dx)])?;
            if let Some(iters) = args.profile {
                let times = crate::unet::profile::profile(&gpu, &fwd, Some(&vjp), iters.max(1))?;
                print!("{}", crate::unet::profile::report(&times, 15));
            }
        }
    }
    Ok(())
}
