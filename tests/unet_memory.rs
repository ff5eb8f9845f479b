//! The memory plan against the buffers a planned pass really creates, the
//! forward-only plan against the VJP plan, and the figures `tweedie info`
//! prints for DPS's FFHQ-256 configuration (issue targets: forward <= 256 MiB,
//! forward + VJP <= 1 GiB in f32, half that in f16; weights <= 200 MB in f16;
//! <= 450 dispatches per DPS step, <= 250 per DMPS step).

mod common;
use common::*;

use std::sync::Arc;

use tweedie::figures;
use tweedie::io::TensorFile;
use tweedie::tensor::{DType, Tensor};
use tweedie::unet::memory::{buffer_bytes, MemoryPlan, PlanKind};
use tweedie::unet::{Graph, Unet, UnetConfig, UnetForward, UnetVjp};

const MIB: u64 = 1 << 20;

/// The precisions this adapter runs.
fn dtypes(gpu: &tweedie::Gpu) -> Vec<DType> {
    if gpu.features.contains(wgpu::Features::SHADER_F16) {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!("f16 skipped: {} has no shader-f16", gpu.describe());
        vec![DType::F32]
    }
}

/// Every byte a forward (and VJP) plan allocates is the memory plan's, for
/// both plan kinds, own and borrowed x, batch 1 and 3, square and not, two
/// architectures (one with attention), in each precision.
#[test]
fn planned_bytes_equal_the_buffers_a_pass_creates() {
    // A device of its own: the allocation meter counts every buffer made on it.
    let gpu = tweedie::Gpu::new().unwrap();
    for (name, dtype) in ["unet/adm_scale_shift", "unet/ddpm_small"]
        .into_iter()
        .flat_map(|n| dtypes(&gpu).into_iter().map(move |d| (n, d)))
    {
        let unet = Unet::load_as(&gpu, &common::fixture(name), dtype).unwrap();
        let c = unet.config.in_channels();
        for (n, h, w) in [(1, 32, 32), (3, 32, 64)] {
            for kind in [PlanKind::Forward, PlanKind::ForwardVjp] {
                for own_input in [true, false] {
                    let x = Tensor::zeros(&gpu, "x", &[n, c, h, w]).unwrap();
                    let before = gpu.allocated();
                    let fwd = if own_input {
                        UnetForward::new_kind(&gpu, &unet, n, h, w, kind).unwrap()
                    } else {
                        UnetForward::with_input_kind(&gpu, &unet, &x, kind).unwrap()
                    };
                    let mut cotangent = 0;
                    if kind == PlanKind::ForwardVjp {
                        UnetVjp::new(&gpu, &unet, &fwd).unwrap();
                        cotangent = buffer_bytes(fwd.output().size_bytes() as u64);
                    }
                    let made = (gpu.allocated() - before).storage;
                    let planned = MemoryPlan::new(&unet.graph, n, h, w, kind, own_input, dtype);
                    let what = format!("{name} {dtype:?} n {n} {h}x{w} {kind:?} own x {own_input}");
                    // Split-K scratch, where this adapter's kernel choice splits
                    // a convolution (never on a CPU adapter such as lavapipe).
                    let scratch: u64 = fwd
                        .memory
                        .own
                        .iter()
                        .filter(|b| b.label == "split-K scratch")
                        .map(|b| b.bytes)
                        .sum();
                    if gpu.info.device_type == wgpu::DeviceType::Cpu {
                        assert_eq!(scratch, 0, "{what}: no split-K on a CPU adapter");
                    }
                    assert_eq!(fwd.memory.bytes(), planned.bytes() + scratch, "{what}");
                    assert_eq!(
                        made,
                        planned.bytes() + scratch + cotangent,
                        "{what}: buffers made vs planned"
                    );
                    assert!(planned.pool_bytes() >= planned.peak, "{what}");
                }
            }
        }
    }
}

/// A forward-only plan keeps nothing for a VJP and refuses one; the VJP plan
/// computes the same forward, and its pooled gradients give the fixture's VJP.
#[test]
fn forward_only_plans_are_smaller_and_refuse_a_vjp() {
    let gpu = gpu();
    let dir = common::fixture("unet/adm_scale_shift");
    let unet = Unet::load(&gpu, &dir).unwrap();
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    let (x, t) = (io.get("x").unwrap(), io.get("t").unwrap());
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let only = UnetForward::new_kind(&gpu, &unet, n, h, w, PlanKind::Forward).unwrap();
    let both = UnetForward::new_kind(&gpu, &unet, n, h, w, PlanKind::ForwardVjp).unwrap();
    assert!(only.memory.bytes() < both.memory.bytes());
    let err = UnetVjp::new(&gpu, &unet, &only)
        .err()
        .expect("a forward-only plan refuses a VJP");
    assert!(err.to_string().contains("forward-only"), "{err}");
    let a = only.run(&gpu, &x.data, &t.data).unwrap();
    let b = both.run(&gpu, &x.data, &t.data).unwrap();
    assert!(rel_max_err(&a, &b) <= 1e-6);
    assert!(rel_max_err(&a, &io.get("out").unwrap().data) <= 1e-4);
}

/// The FFHQ-256 figures from the planner alone (no GPU): the targets.
#[test]
fn ffhq256_memory_targets_hold() {
    let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
    for (dtype, fwd_max, vjp_max) in [(DType::F32, 256 * MIB, 1024 * MIB), (DType::F16, 128 * MIB, 512 * MIB)] {
        let fwd = MemoryPlan::new(&g, 1, 256, 256, PlanKind::Forward, true, dtype);
        let vjp = MemoryPlan::new(&g, 1, 256, 256, PlanKind::ForwardVjp, true, dtype);
        eprintln!(
            "ffhq256 {dtype:?}: forward {:.1} MiB (peak {:.1}), forward + VJP {:.1} MiB (peak {:.1})",
            fwd.bytes() as f64 / MIB as f64,
            fwd.peak as f64 / MIB as f64,
            vjp.bytes() as f64 / MIB as f64,
            vjp.peak as f64 / MIB as f64
        );
        assert!(fwd.bytes() <= fwd_max, "{dtype:?} forward plan {} bytes", fwd.bytes());
        assert!(
            vjp.bytes() <= vjp_max,
            "{dtype:?} forward + VJP plan {} bytes",
            vjp.bytes()
        );
        // The figures scale with the batch.
        let fwd4 = MemoryPlan::new(&g, 4, 256, 256, PlanKind::Forward, true, dtype);
        assert!(fwd4.pool_bytes() == 4 * fwd.pool_bytes(), "pool grows with the batch");
        // Every residual ResBlock / attention skip gradient is dy's buffer itself.
        let aliased = vjp.residual_alias.iter().filter(|&&a| a).count();
        assert!(aliased >= 25, "{aliased} residual gradients aliased");
    }
}

/// Dispatch counts of DPS's FFHQ configuration (random weights; counts do not
/// depend on the resolution, so 64x64 keeps the test light): the issue's
/// per-step targets, and the plans `tweedie info` reports.
#[test]
fn ffhq_dispatch_targets_hold() {
    let gpu = tweedie::Gpu::new().unwrap();
    let unet = Unet::random(&gpu, &UnetConfig::dps_ffhq256(), 1).unwrap();
    let f = figures::measure(&gpu, Arc::new(unet), 64, 1).unwrap();
    eprintln!("{}", serde_json::to_string(&f.plans).unwrap());
    // 218 layers, one dispatch each: the GroupNorms and concats are single dispatches.
    assert_eq!(f.plans.forward.dispatches, 218);
    assert!(f.plans.steps["dps"].dispatches <= 450, "{:?}", f.plans.steps["dps"]);
    assert!(f.plans.steps["dmps"].dispatches <= 250, "{:?}", f.plans.steps["dmps"]);
    assert!(f.plans.steps["ddpm"].dispatches < f.plans.steps["dmps"].dispatches);
    // The VJP plan is the forward plan plus gradients.
    assert!(f.plans.forward_vjp.bytes > f.plans.forward.bytes);
    assert_eq!(
        f.plans.forward.bytes,
        MemoryPlan::new(
            &Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap(),
            1,
            64,
            64,
            PlanKind::Forward,
            true,
            DType::F32
        )
        .bytes()
    );
}

/// The shipped FFHQ-256 config file is DPS's configuration.
#[test]
fn shipped_ffhq_config_is_dps_configuration() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ffhq256-dps/config.json");
    assert_eq!(UnetConfig::from_file(&path).unwrap(), UnetConfig::dps_ffhq256());
}
