//! `tweedie degrade`: makes a measurement y = A x + sigma_y n from a clean
//! image. Writes y as an image and, beside it, `<out>.safetensors` with `y`
//! [1, C', H', W'], `sigma_y` [1], `in_shape` [3] and what pins A down (`mask`,
//! `kernel`), so a later restore rebuilds exactly the same operator.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::gpu::Plan;
use crate::io::{read_image, write_image, write_tensors};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::random::Noise;
use crate::operators::task::{resolve, TaskSpec};
use crate::tensor::{HostTensor, Tensor};

#[derive(Args)]
pub struct DegradeArgs {
    #[command(flatten)]
    pub spec: TaskSpec,
    /// Noise standard deviation on the [-1, 1] scale (DPS/DMPS use 0.05).
    #[arg(long, default_value_t = 0.05)]
    pub sigma: f32,
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
    if !(args.sigma.is_finite() && args.sigma >= 0.0) {
        bail!("--sigma {} must be a finite value >= 0", args.sigma);
    }
    let x = read_image(&args.input)?;
    let in_shape = [x.shape[1], x.shape[2], x.shape[3]];
    let resolved = resolve(&args.spec, in_shape, args.seed)?;
    let gpu = super::open_gpu(verbose)?;
    let op = resolved.build(&gpu)?;
    let [c, h, w] = op.out_shape();
    let xt = Tensor::from_host(&gpu, "clean image", &x)?;
    let yt = Tensor::zeros(&gpu, "measurement", &[1, c, h, w])?;
    let mut plan: Plan = op.forward(&gpu, &xt, &yt)?;
    let noise = Tensor::zeros(&gpu, "measurement noise", &[1, c, h, w])?;
    if args.sigma > 0.0 {
        plan.push(Noise::new(&gpu, &noise, args.seed, 0, 0.0, args.sigma)?.dispatch);
        plan.push(Elementwise::new(&gpu, Op::Axpby, &noise, &yt, 1.0, 1.0)?.dispatch);
    }
    plan.run(&gpu)?;
    let y = yt.read(&gpu)?;

    let is_tensor_file = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let st_path = args.out.with_extension("safetensors");
    let y_host = HostTensor::new(vec![1, c, h, w], y.clone());
    let sigma = HostTensor::new(vec![1], vec![args.sigma]);
    let shape = HostTensor::new(vec![3], in_shape.iter().map(|&v| v as f32).collect());
    let extra = resolved.tensors();
    let mut tensors: Vec<(&str, &HostTensor)> =
        vec![("y", &y_host), ("sigma_y", &sigma), ("in_shape", &shape)];
    tensors.extend(extra.iter().map(|(k, t)| (k.as_str(), t)));
    write_tensors(&st_path, &tensors).with_context(|| format!("writing {}", st_path.display()))?;
    if !is_tensor_file {
        write_image(&args.out, c, h, w, &y)
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    if verbose {
        eprintln!(
            "{}: {:?} -> {:?}, sigma_y {}, wrote {}",
            op.name(),
            in_shape,
            [c, h, w],
            args.sigma,
            st_path.display()
        );
    }
    Ok(())
}
