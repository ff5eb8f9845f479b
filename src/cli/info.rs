use clap::Args;

#[derive(Args)]
pub struct InfoArgs {
    /// A model directory (model.safetensors + config.json) to describe.
    pub model: Option<std::path::PathBuf>,
}

pub fn run(args: InfoArgs, verbose: bool) -> anyhow::Result<()> {
    if args.model.is_some() {
        anyhow::bail!("model reports are not implemented yet");
    }
    println!("adapters wgpu can see:");
    for a in crate::Gpu::list_adapters() {
        println!("  {} ({:?}, {:?}, driver {} {})", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let gpu = super::open_gpu(verbose)?;
    let r = gpu.report();
    println!("chosen (TWEEDIE_ADAPTER=<substring> picks another): {}", gpu.describe());
    println!("  max storage binding     {} MiB", r.max_storage_buffer_binding_size >> 20);
    println!("  max buffer              {} MiB", r.max_buffer_size >> 20);
    println!("  workgroup memory        {} KiB", r.max_compute_workgroup_storage_size >> 10);
    println!("  invocations/workgroup   {}", r.max_compute_invocations_per_workgroup);
    println!("  shader-f16 {}  subgroups {}  timestamps {}", r.shader_f16, r.subgroups, r.timestamp_query);
    Ok(())
}
