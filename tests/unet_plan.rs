//! The one record / submit path the U-Net's forward, VJP and profiler share:
//! the per-layer plans replayed through `Plan` give the same values as the
//! passes' own `submit`, and the profiler times exactly those plans.

mod common;
use common::*;

use tweedie::gpu::Plan;
use tweedie::io::TensorFile;
use tweedie::unet::memory::PlanKind;
use tweedie::unet::profile::{profile, report};
use tweedie::unet::{Unet, UnetForward, UnetVjp};

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
