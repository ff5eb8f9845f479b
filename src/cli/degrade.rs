//! `tweedie degrade`: makes a measurement y = A x + sigma_y n (or DPS's
//! Poisson corruption of A x) from a clean image. Writes y as an image and, beside it, `<out>.safetensors` with `y`
//! [1, C', H', W'], `sigma_y` [1], `in_shape` [3] and what pins A down (`mask`,
//! `kernel`), so a later restore rebuilds exactly the same operator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::sampling::NoiseArgs;
use crate::io::{read_image, write_image};
use crate::operators::task::{resolve, TaskSpec};
use crate::restore::{measure, save_measurement};

#[derive(Args)]
pub struct DegradeArgs {
    #[command(flatten)]
    pub spec: TaskSpec,
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Seed of the operator's random parts and of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Clean image (PNG or JPEG).
    #[arg(long)]
    pub input: PathBuf,
    /// Measurement image to write (PNG); the tensors go to the same name with
    /// the extension .safetensors (only that file when --out ends in .safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: DegradeArgs, verbose: bool) -> anyhow::Result<()> {
    let noise = args.noise.model()?;
    let x = read_image(&args.input)?;
    let in_shape = [x.shape[1], x.shape[2], x.shape[3]];
    let resolved = resolve(&args.spec, in_shape, args.seed)?;
    let gpu = super::open_gpu(verbose)?;
    let op = resolved.build(&gpu)?;
    let [c, h, w] = op.out_shape();
    let y = measure(&gpu, op.as_ref(), &x, noise, args.seed)?;

    let is_tensor_file = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let st_path = args.out.with_extension("safetensors");
    save_measurement(&st_path, &y, noise.sigma_y(), &resolved, [c, h, w])
        .with_context(|| format!("writing {}", st_path.display()))?;
    if !is_tensor_file {
        write_image(&args.out, c, h, w, &y).with_context(|| format!("writing {}", args.out.display()))?;
    }
    if verbose {
        eprintln!(
            "{}: {:?} -> {:?}, noise {}, wrote {}",
            op.name(),
            in_shape,
            [c, h, w],
            noise.describe(),
            st_path.display()
        );
    }
    Ok(())
}
