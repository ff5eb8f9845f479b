use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use super::common::PrecisionArg;
use crate::figures::{Figures, PlanFigure};

#[derive(Args)]
pub struct InfoArgs {
    /// A model directory (model.safetensors + config.json) to describe; a
    /// directory with config.json alone is planned with random weights.
    pub model: Option<std::path::PathBuf>,
    /// Resolution the plans are made for (default: the model's image size).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Images per plan.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[command(flatten)]
    pub precision: PrecisionArg,
    /// Print the model's figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs, verbose: bool) -> anyhow::Result<()> {
    if let Some(path) = &args.model {
        return model_report(path, &args, verbose);
    }
    println!("adapters wgpu can see (--devices takes these numbers):");
    let adapters = crate::Gpu::list_adapters();
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "  {i}: {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    let all: Vec<String> = crate::Gpu::default_adapters(&adapters)
        .iter()
        .map(|i| i.to_string())
        .collect();
    println!("--devices all: {}", all.join(","));
    let gpu = super::open_gpu(verbose)?;
    let r = gpu.report();
    println!("chosen (TWEEDIE_ADAPTER=<substring> picks another): {}", gpu.describe());
    println!(
        "  max storage binding     {} MiB",
        r.max_storage_buffer_binding_size >> 20
    );
    println!("  max buffer              {} MiB", r.max_buffer_size >> 20);
    println!(
        "  workgroup memory        {} KiB",
        r.max_compute_workgroup_storage_size >> 10
    );
    println!("  invocations/workgroup   {}", r.max_compute_invocations_per_workgroup);
    println!(
        "  shader-f16 {}  subgroups {}  timestamps {}",
        r.shader_f16, r.subgroups, r.timestamp_query
    );
    println!("  tensor-core convolution {}", r.cooperative_matrix);
    let sms = crate::kernels::conv_choice::multiprocessors(&gpu);
    println!(
        "  kernel choice           {}; autotune cache {}",
        sms.map_or("CPU adapter: no split-K".into(), |n| format!(
            "fills {n} multiprocessors"
        )),
        crate::kernels::conv_choice::cache_path().map_or("off".into(), |p| p.display().to_string())
    );
    Ok(())
}

/// Architecture, parameter count, FLOPs, and the memory and dispatches of
/// every plan at `--image-size` and `--batch` (checkpoint keys and shapes
/// are checked against the config on the way).
fn model_report(path: &Path, args: &InfoArgs, verbose: bool) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let gpu = super::open_gpu(verbose)?;
    let (unet, random) = super::common::load_for_plans(&gpu, path, args.precision.precision)?;
    let size = args.image_size.unwrap_or(unet.config.image_size());
    let m = unet.graph.max_ds;
    if size == 0 || size % m != 0 {
        bail!("--image-size {size}: this U-Net needs a positive multiple of {m}");
    }
    let process = unet.process;
    let (config, graph) = (unet.config.clone(), unet.graph.clone());
    let figures = crate::figures::measure(&gpu, Arc::new(unet), size, args.batch)?;
    if args.json {
        let mut v = serde_json::to_value(&figures)?;
        v["model"] = path.display().to_string().into();
        v["architecture"] = config.architecture().into();
        v["process"] = process.describe().into();
        v["random_weights"] = random.into();
        (v["config"], v["assumed"]) = crate::unet::infer::describe(path, &config);
        v["adapter"] = gpu.describe().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let sigma = if config.learned_sigma() {
        " (eps + learned variance)"
    } else {
        ""
    };
    println!(
        "model: {}{}",
        path.display(),
        if random { " (config only: random weights)" } else { "" }
    );
    println!("  architecture      {}", config.architecture());
    println!("  process           {}", process.describe());
    println!(
        "  channels          {} in, {} out{sigma}",
        config.in_channels(),
        config.out_channels()
    );
    println!(
        "  image size        {0}x{0} (any multiple of {1} works)",
        config.image_size(),
        graph.max_ds
    );
    println!(
        "  parameters        {} ({:.1} M)",
        graph.num_params(),
        graph.num_params() as f64 / 1e6
    );
    println!("  layers            {}", graph.layers.len());
    print!("{}", plan_table(&figures, &gpu.describe()));
    Ok(())
}

/// The figures as `tweedie info` prints them.
pub fn plan_table(f: &Figures, adapter: &str) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut out = format!(
        "plans at {0}x{0}, batch {1}, {2} (on {adapter}):\n  FLOPs per forward {3:.2} GFLOP\n  weights           {4:.1} MiB\n",
        f.image_size,
        f.batch,
        f.precision,
        f.flops / 1e9,
        mib(f.weights_bytes)
    );
    let mut row = |name: &str, p: &PlanFigure| {
        out += &format!("  {name:<18}{:>9.1} MiB {:>6} dispatches\n", mib(p.bytes), p.dispatches);
    };
    row("forward", &f.plans.forward);
    row("forward + VJP", &f.plans.forward_vjp);
    for (name, p) in &f.plans.steps {
        row(&format!("{name} step"), p);
    }
    out
}
