use clap::Args;

#[derive(Args)]
pub struct InfoArgs {
    /// A model directory (model.safetensors + config.json) to describe.
    pub model: Option<std::path::PathBuf>,
}

pub fn run(args: InfoArgs, verbose: bool) -> anyhow::Result<()> {
    if let Some(path) = &args.model {
        return model_report(path);
    }
    println!("adapters wgpu can see:");
    for a in crate::Gpu::list_adapters() {
        println!(
            "  {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
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
    Ok(())
}

/// Architecture, parameter count and FLOPs of a model; the checkpoint's keys
/// and shapes are checked against the config on the way.
fn model_report(path: &std::path::Path) -> anyhow::Result<()> {
    let (config, graph, _) = crate::unet::weights::inspect(path)?;
    let files = crate::unet::weights::ModelFiles::resolve(path)?;
    let process = crate::process::Process::for_model(&files.config)?;
    let size = config.image_size();
    let sigma = if config.learned_sigma() {
        " (eps + learned variance)"
    } else {
        ""
    };
    println!("model: {}", path.display());
    println!("  architecture      {}", config.architecture());
    println!("  process           {}", process.describe());
    println!(
        "  channels          {} in, {} out{sigma}",
        config.in_channels(),
        config.out_channels()
    );
    println!(
        "  image size        {size}x{size} (any multiple of {} works)",
        graph.max_ds
    );
    println!(
        "  parameters        {} ({:.1} M)",
        graph.num_params(),
        graph.num_params() as f64 / 1e6
    );
    println!(
        "  FLOPs per forward {:.2} GFLOP at {size}x{size}, batch 1",
        graph.flops(size, size) / 1e9
    );
    println!("  layers            {}", graph.layers.len());
    let mib = graph.activation_bytes(size, size) as f64 / (1 << 20) as f64;
    println!("  activations       {mib:.0} MiB per image at {size}x{size} (about twice that with the VJP)");
    Ok(())
}
