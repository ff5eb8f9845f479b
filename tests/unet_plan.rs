//! The one record / submit path the U-Net's forward, VJP and profiler share:
//! the per-layer plans replayed through `Plan` give the same values as the
//! passes' own `submit`, and the profiler times exactly those plans.

mod common;
use common::*;

use tweedie::gpu::Plan;
use tweedie::io::TensorFile;
use tweedie::kernels::conv2d::ConvTiles;
use tweedie::kernels::conv_choice::{heuristic_for, AdapterTraits, ConvPass};
use tweedie::tensor::DType;
use tweedie::unet::memory::PlanKind;
use tweedie::unet::profile::{profile, report};
use tweedie::unet::{Graph, Unet, UnetConfig, UnetForward, UnetVjp};

#[test]
fn forward_vjp_and_profile_replay_the_same_layer_plans() {
    let gpu = gpu();
    let dir = common::fixture("unet/adm_gray");
    let unet = Unet::load(&gpu, &dir).unwrap();
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    let (x, t, cot) = (io.get("x").unwrap(), io.get("t").unwrap(), io.get("cotangent").unwrap());
    let fwd = UnetForward::new_kind(&gpu, &unet, x.shape[0], x.shape[2], x.shape[3], PlanKind::ForwardVjp).unwrap();
    let vjp = UnetVjp::new(&gpu, &unet, &fwd).unwrap();
    let (out, dx) = vjp.run(&gpu, &fwd, &x.data, &t.data, &cot.data).unwrap();

    // Same dispatches, composed as plans by the caller: identical results.
    assert_eq!(fwd.layer_plans().count(), unet.graph.layers.len());
    assert_eq!(
        fwd.plan().len(),
        fwd.records.iter().map(|r| r.dispatches.len()).sum::<usize>()
    );
    fwd.output().write(&gpu, &vec![0.0; out.len()]).unwrap();
    vjp.dx().write(&gpu, &vec![0.0; dx.len()]).unwrap();
    Plan::concat([&fwd.plan(), &vjp.plan()]).run(&gpu).unwrap();
    assert!(rel_max_err(&fwd.output().read(&gpu).unwrap(), &out) <= 1e-6);
    assert!(rel_max_err(&vjp.dx().read(&gpu).unwrap(), &dx) <= 1e-6);

    // One forward entry per layer, one backward entry per layer with dispatches.
    let times = profile(&gpu, &fwd, Some(&vjp), 1).unwrap();
    let backward = vjp.records.iter().filter(|r| !r.dispatches.is_empty()).count();
    assert_eq!(times.iter().filter(|t| t.pass == "forward").count(), fwd.records.len());
    assert_eq!(times.iter().filter(|t| t.pass == "backward").count(), backward);
    assert!(times.iter().all(|t| t.seconds >= 0.0));
    assert!(report(&times, 5).contains("slowest layers:"));
}

/// DPS's FFHQ-256 U-Net on an H100-like adapter (132 multiprocessors):
/// the 256 px layers take 128 x 128 tiles, every layer short of a wave is split
/// along K until it has a wave of workgroups (or K runs out), f16 goes
/// to tensor cores where they exist, and a CPU adapter never splits.
#[test]
fn the_heuristic_fills_a_datacenter_gpu() {
    let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
    let h100 = AdapterTraits {
        multiprocessors: Some(132),
        coop: false,
        fits: [true; 4],
    };
    let cpu = AdapterTraits {
        multiprocessors: None,
        ..h100
    };
    let mut split_layers = 0;
    for s in g.conv_shapes(1, 256, 256) {
        for pass in [ConvPass::Forward, ConvPass::BwdData] {
            let (m, p, k) = pass.gemm(&s);
            let c = heuristic_for(&h100, pass, &s, DType::F32);
            assert!(!c.coop);
            let groups = c.workgroups(m, p, k);
            let slices = k.div_ceil(16) as u64;
            assert!(
                groups >= 132 || slices < 8 || c.splits == 16 || (c.splits as u64) * 8 > slices,
                "{s:?} {pass:?}: {c:?} gives {groups} workgroups"
            );
            if m >= 128 && p >= 256 * 256 {
                assert_eq!(c.tiles, ConvTiles::WIDE, "{s:?} {pass:?}");
            }
            split_layers += (c.splits > 1) as usize;
            let f16 = heuristic_for(&AdapterTraits { coop: true, ..h100 }, pass, &s, DType::F16);
            // Every f16 layer on the tensor cores, the thin ones (3 or 6
            // channels) too.
            assert!(f16.coop, "{s:?} {pass:?}");
            let c = heuristic_for(&cpu, pass, &s, DType::F32);
            assert_eq!(c.splits, 1);
            assert!(!c.coop);
        }
    }
    assert!(split_layers >= 20, "the 8x8 to 32x32 levels split ({split_layers})");
}
