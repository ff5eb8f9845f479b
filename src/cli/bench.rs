use clap::Args;

use super::common::Precision;

use crate::gpu::{time_plan, Plan};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::random::Noise;
use crate::kernels::reduce::BatchedDot;
use crate::Tensor;

#[derive(Args)]
pub struct BenchArgs {
    /// Image side for the image-sized kernels (images are side x side x 3).
    #[arg(long, default_value_t = 256)]
    pub image_size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Replays per kernel.
    #[arg(long, default_value_t = 50)]
    pub iters: u64,
    /// Storage precision of the model's weights and activations (f16 needs the adapter's shader-f16).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// A quick timing of each kernel family on this machine's GPU (the criterion
/// benches in benches/ are the careful version).
pub fn run(args: BenchArgs, verbose: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.image_size > 0 && args.batch > 0 && args.iters > 0,
        "--image-size, --batch and --iters must be positive"
    );
    let gpu = super::open_gpu(verbose)?;
    println!("device: {}", gpu.describe());
    let n = args.batch * 3 * args.image_size * args.image_size;
    let dtype = args.precision.dtype();
    gpu.require_dtype(dtype)?;
    let (x32, y32) = (Tensor::zeros(&gpu, "x", &[n])?, Tensor::zeros(&gpu, "y", &[n])?);
    let x = Tensor::zeros_typed(&gpu, "x", &[n], dtype)?;
    let y = Tensor::zeros_typed(&gpu, "y", &[n], dtype)?;
    let report = |name: &str, plan: &Plan, bytes: f64| -> anyhow::Result<()> {
        let t = time_plan(&gpu, plan, args.iters)?.as_secs_f64() / args.iters as f64;
        println!("{name:<28} {:>10.3} ms  {:>8.2} GB/s", t * 1e3, bytes / t / 1e9);
        Ok(())
    };
    println!(
        "{} x {}x{}x3 {} (dot and noise: f32)",
        args.batch,
        args.image_size,
        args.image_size,
        args.precision.name()
    );
    let axpby = Elementwise::new(&gpu, Op::Axpby, &x, &y, 0.5, 0.5)?;
    report(
        "elementwise axpby",
        &Plan {
            steps: vec![axpby.dispatch.clone()],
        },
        3.0 * dtype.size_bytes() as f64 * n as f64,
    )?;
    let dot = BatchedDot::new(&gpu, &x32, &y32, args.batch, false)?;
    report("reduce dot (per image)", &dot.plan, 8.0 * n as f64)?;
    let noise = Noise::new(&gpu, &y32, 0, 0, 0.0, 1.0)?;
    report(
        "random normal",
        &Plan {
            steps: vec![noise.dispatch.clone()],
        },
        4.0 * n as f64,
    )?;
    Ok(())
}
