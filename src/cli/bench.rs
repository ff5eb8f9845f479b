use clap::Args;

use super::common::PrecisionArg;

use crate::gpu::{time_plan, Plan};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::random::Noise;
use crate::kernels::reduce::BatchedDot;
use crate::Tensor;

#[derive(Args)]
pub struct BenchArgs {
    /// A model directory (or a directory with only config.json: random
    /// weights) to benchmark layer by layer, as whole passes and as one step
    /// of each sampler; without it, the elementwise / reduction / noise kernels.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Image side (the model's resolution, or the image-sized kernels' side x side x 3).
    #[arg(long, default_value_t = 256)]
    pub image_size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Replays per kernel.
    #[arg(long, default_value_t = 50)]
    pub iters: u64,
    /// With --model: one JSON record per line (the fields tools/bench_torch.py prints).
    #[arg(long)]
    pub json: bool,
    /// The adapter's peak TFLOP/s the fractions are taken of (default: the
    /// built-in table's FP32 figure for known GPUs).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// The adapter's peak memory bandwidth in GB/s (default: the built-in table).
    #[arg(long)]
    pub peak_gbps: Option<f64>,
    #[command(flatten)]
    pub precision: PrecisionArg,
    /// With --model: time every candidate convolution kernel (tile family,
    /// split-K, tensor cores) on each of the model's convolution shapes at
    /// this size, batch and precision, and save the fastest in the autotune
    /// cache ($TWEEDIE_TUNE_CACHE, else $XDG_CACHE_HOME/tweedie/tune.json or
    /// ~/.cache/tweedie/tune.json) for this adapter. Plans built afterwards
    /// use it. Needs GPU timestamp queries.
    #[arg(long, requires = "model")]
    pub tune: bool,
}

/// A quick timing of each kernel family on this machine's GPU (the criterion
/// benches in benches/ are the careful version).
pub fn run(args: BenchArgs, verbose: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.image_size > 0 && args.batch > 0 && args.iters > 0,
        "--image-size, --batch and --iters must be positive"
    );
    let gpu = super::open_gpu(verbose)?;
    if let Some(model) = &args.model {
        return model_bench(&gpu, model, &args);
    }
    println!("device: {}", gpu.describe());
    let n = args.batch * 3 * args.image_size * args.image_size;
    let dtype = args.precision.precision.dtype();
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
        args.precision.precision.name()
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

/// `tweedie bench --model`: the harness of [`crate::bench`], as a table or JSON lines.
fn model_bench(gpu: &crate::Gpu, model: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let (unet, random) = super::common::load_for_plans(gpu, model, args.precision.precision)?;
    let m = unet.graph.max_ds;
    anyhow::ensure!(
        args.image_size % m == 0,
        "--image-size {}: this U-Net needs a multiple of {m}",
        args.image_size
    );
    if args.tune {
        let records = crate::bench::tune_model(gpu, &unet, args.image_size, args.batch, args.iters as usize)?;
        if args.json {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            println!(
                "tuned {} on {}: {2}x{2}, batch {3}, {4}",
                model.display(),
                gpu.describe(),
                args.image_size,
                args.batch,
                args.precision.precision.name()
            );
            print!("{}", crate::bench::tune_table(&records));
            if let Some(p) = crate::kernels::conv_choice::cache_path() {
                println!("saved to {}", p.display());
            }
        }
        return Ok(());
    }
    let peak = crate::bench::PeakOverride {
        tflops: args.peak_tflops,
        gbps: args.peak_gbps,
    };
    // JSON lines go out as each group is timed, so a run cut short (a
    // time limit on a lent GPU) keeps what it measured.
    let json = args.json;
    let mut emit = |rows: &[serde_json::Value]| {
        if json {
            for r in rows {
                println!("{r}");
            }
        }
    };
    let records = crate::bench::bench_model(
        gpu,
        std::sync::Arc::new(unet),
        args.image_size,
        args.batch,
        args.iters as usize,
        peak,
        &mut emit,
    )?;
    if json {
        return Ok(());
    }
    println!(
        "{} ({}) on {}: {3}x{3}, batch {4}, {5}",
        model.display(),
        if random { "random weights" } else { "checkpoint" },
        gpu.describe(),
        args.image_size,
        args.batch,
        args.precision.precision.name(),
    );
    print!("{}", crate::bench::table(&records));
    Ok(())
}
