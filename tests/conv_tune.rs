//! The autotune cache steers plan-time kernel choice: a cached split-K (or
//! other family) entry for this adapter is what a U-Net plan then runs, its
//! scratch is in the plan's memory, and the results are the same. One test
//! in its own binary: it points TWEEDIE_TUNE_CACHE at a file of its own
//! before anything reads the cache.

mod common;
use common::*;

use tweedie::io::TensorFile;
use tweedie::kernels::conv2d::{ConvKernel, ConvTiles};
use tweedie::kernels::conv_choice::{self, ConvPass, TuneCache};
use tweedie::tensor::DType;
use tweedie::unet::memory::{buffer_bytes, MemoryPlan, PlanKind};
use tweedie::unet::{Unet, UnetForward, UnetVjp};

#[test]
fn cached_kernels_are_what_plans_run() {
    let dir = std::env::temp_dir().join(format!("tweedie-tune-{}", std::process::id()));
    let path = dir.join("tune.json");
    std::env::set_var("TWEEDIE_TUNE_CACHE", &path);
    assert_eq!(conv_choice::cache_path().as_deref(), Some(path.as_path()));

    let gpu = gpu();
    let fixture = common::fixture("unet/adm_scale_shift");
    let unet = Unet::load(&gpu, &fixture).unwrap();
    let io = TensorFile::open(fixture.join("io.safetensors")).unwrap();
    let (x, t) = (io.get("x").unwrap(), io.get("t").unwrap());
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);

    // Without a cache file: the heuristic, and a plan with no split-K scratch.
    let plain = UnetForward::new_kind(&gpu, &unet, n, h, w, PlanKind::ForwardVjp).unwrap();
    let planned = MemoryPlan::new(&unet.graph, n, h, w, PlanKind::ForwardVjp, true, DType::F32);
    // (A big GPU's heuristic may split some layers already: their scratch.)
    let own_scratch = |f: &UnetForward| -> u64 {
        f.memory
            .own
            .iter()
            .filter(|b| b.label == "split-K scratch")
            .map(|b| b.bytes)
            .sum()
    };
    assert_eq!(plain.memory.bytes(), planned.bytes() + own_scratch(&plain));
    let plain_vjp = UnetVjp::new(&gpu, &unet, &plain).unwrap();
    let ct: Vec<f32> = (0..plain.output().numel())
        .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
        .collect();
    let want_out = plain.run(&gpu, &x.data, &t.data).unwrap();
    let want_dx = plain_vjp.run(&gpu, &plain, &x.data, &t.data, &ct).unwrap();

    // Cache every convolution of the model as 32 x 32 tiles split 4 ways (or
    // as far as K allows), and one entry this build cannot parse.
    let convs = unet.graph.conv_shapes(n, h, w);
    let split = ConvKernel::simt(ConvTiles::SMALL).split(4);
    let mut cache = TuneCache {
        version: 1,
        ..TuneCache::default()
    };
    let entries = cache.adapters.entry(conv_choice::adapter_key(&gpu)).or_default();
    for s in &convs {
        for pass in [ConvPass::Forward, ConvPass::BwdData] {
            entries.insert(conv_choice::layer_key(pass, s, DType::F32), conv_choice::spec(&split));
        }
    }
    let first = convs[0];
    entries.insert(
        conv_choice::layer_key(ConvPass::Forward, &first, DType::F16),
        "warp-speed".into(),
    );
    cache.write(&path).unwrap();

    for s in &convs {
        assert_eq!(conv_choice::choose(&gpu, ConvPass::Forward, s, DType::F32), split);
    }
    // An unknown spec falls back to the heuristic.
    assert_eq!(
        conv_choice::choose(&gpu, ConvPass::Forward, &first, DType::F16),
        conv_choice::heuristic(&gpu, ConvPass::Forward, &first, DType::F16)
    );

    // The plan now runs split-K: one fix-up dispatch per split layer and pass,
    // one shared scratch buffer in its memory, the same results.
    let before = gpu.allocated();
    let tuned = UnetForward::new_kind(&gpu, &unet, n, h, w, PlanKind::ForwardVjp).unwrap();
    let tuned_vjp = UnetVjp::new(&gpu, &unet, &tuned).unwrap();
    let made = (gpu.allocated() - before).storage;
    let scratch = own_scratch(&tuned);
    assert_eq!(tuned.memory.bytes(), planned.bytes() + scratch);
    let want_scratch = convs
        .iter()
        .flat_map(|s| {
            [ConvPass::Forward, ConvPass::BwdData].map(|p| {
                let (m, q, k) = p.gemm(s);
                split.scratch_bytes(m, q, k)
            })
        })
        .max()
        .unwrap();
    assert!(want_scratch > 0);
    assert_eq!(
        scratch,
        buffer_bytes(want_scratch),
        "the plan's memory names its split-K scratch"
    );
    let cotangent = buffer_bytes(tuned.output().size_bytes() as u64);
    assert_eq!(made, tuned.memory.bytes() + cotangent, "buffers made vs planned");
    // One fix-up per split forward convolution, against the heuristic's own.
    let fixups = |kernel: &dyn Fn(&tweedie::kernels::conv2d::Conv2dShape) -> ConvKernel| -> usize {
        convs
            .iter()
            .map(|s| {
                let (_, _, k) = ConvPass::Forward.gemm(s);
                kernel(s).dispatches(k) - 1
            })
            .sum()
    };
    let splits_fwd = fixups(&|_| split);
    let heuristic_fwd = fixups(&|s| conv_choice::heuristic(&gpu, ConvPass::Forward, s, DType::F32));
    assert!(splits_fwd > heuristic_fwd);
    assert_eq!(
        tuned.plan().steps.len() + heuristic_fwd,
        plain.plan().steps.len() + splits_fwd,
        "one fix-up per split forward convolution"
    );
    assert!(tuned_vjp.plan().steps.len() > plain_vjp.plan().steps.len());
    let got_out = tuned.run(&gpu, &x.data, &t.data).unwrap();
    let got_dx = tuned_vjp.run(&gpu, &tuned, &x.data, &t.data, &ct).unwrap();
    assert!(rel_max_err(&got_out, &want_out) <= 1e-5, "split-K forward");
    assert!(rel_max_err(&got_dx.0, &want_dx.0) <= 1e-5, "split-K VJP (out)");
    assert!(rel_max_err(&got_dx.1, &want_dx.1) <= 1e-5, "split-K VJP (dx)");

    // A cache that is not JSON is refused by the reader (the tuner reports it).
    std::fs::write(&path, "{ not json").unwrap();
    assert!(TuneCache::read(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
