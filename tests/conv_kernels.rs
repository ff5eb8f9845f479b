//! The convolution kernels shaped for real GPUs, against plain-Rust
//! references on awkward shapes: every candidate kernel of a shape (tile
//! families, split-K on and off), the tensor-core path's numerics emulated
//! in the SIMT kernel (operands rounded to f16, f32 sums), the
//! cooperative-matrix kernel itself where the adapter has it, and the
//! plan-time choice. tests/unet_kernels.rs has the finite-difference test of
//! the backward kernel and the residual / scale epilogues.

mod common;
use common::conv::conv_shape;
use common::*;

use tweedie::gpu::{Dispatch, Plan};
use tweedie::kernels::conv2d::{
    conv2d, conv2d_bwd_data, Conv2dShape, ConvBackward, ConvForward, ConvKernel, ConvResidual, ConvTiles,
};
use tweedie::kernels::conv_choice::{self, ConvPass};
use tweedie::kernels::conv_coop;
use tweedie::tensor::{DType, Tensor};
use tweedie::Gpu;

/// Awkward shapes: odd sizes, K not a multiple of any TK, channel counts not
/// multiples of a tile, batch > 1, strides 1 and 2, asymmetric padding,
/// and one deep enough (K = 1152) for 16-way splits.
fn shapes() -> Vec<Conv2dShape> {
    vec![
        conv_shape([2, 5, 7, 9, 11, 3, 1], [1; 4]),
        conv_shape([3, 13, 5, 3, 70, 1, 1], [0; 4]),
        conv_shape([2, 6, 9, 7, 5, 3, 2], [1; 4]),
        conv_shape([1, 3, 8, 6, 4, 3, 2], [0, 0, 1, 1]),
        conv_shape([2, 67, 5, 6, 9, 3, 1], [1; 4]),
        conv_shape([1, 128, 4, 4, 33, 3, 1], [1; 4]),
    ]
}

/// f32 -> f16 -> f32, round to nearest even (the tensor cores' operand rounding).
fn r16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

fn f64s(v: &[f32], round: bool) -> Vec<f64> {
    v.iter()
        .map(|&a| if round { r16(a) as f64 } else { a as f64 })
        .collect()
}

/// y = conv(x, W) + b ([`common::conv::conv_out`]) over operands optionally
/// rounded to f16.
fn conv_ref(s: &Conv2dShape, x: &[f32], w: &[f32], b: &[f32], round: bool) -> Vec<f32> {
    common::conv::conv_out(
        s,
        &f64s(x, round),
        &f64s(w, round),
        b,
        common::conv::Residual::None,
        1.0,
    )
}

/// dx = conv_transpose(dy, W) ([`common::conv::conv_bwd_f64`]) over operands
/// optionally rounded to f16.
fn conv_bwd_ref(s: &Conv2dShape, dy: &[f32], w: &[f32], round: bool) -> Vec<f32> {
    common::conv::conv_bwd_f64(s, &f64s(dy, round), &f64s(w, round))
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

fn run(gpu: &Gpu, steps: Vec<Dispatch>) {
    Plan { steps }.run(gpu).unwrap();
}

/// Runs the forward and backward-data kernels `k` of shape `s` on random
/// data and returns (y, dx) next to the inputs.
struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    fn new(s: &Conv2dShape, seed: u64) -> Case {
        let mut r = rng(seed);
        let (ho, wo) = s.out_hw();
        Case {
            x: randn(&mut r, s.n * s.cin * s.h * s.w),
            w: randn(&mut r, s.cout * s.cin * s.ks * s.ks),
            b: randn(&mut r, s.cout),
            dy: randn(&mut r, s.n * s.cout * ho * wo),
        }
    }

    fn run(&self, gpu: &Gpu, s: &Conv2dShape, k: &ConvKernel, dtype: DType) -> (Vec<f32>, Vec<f32>) {
        self.runs(gpu, s, k, dtype, 1).remove(0)
    }

    /// (y, dx) of `times` runs of one forward and one backward plan.
    fn runs(
        &self,
        gpu: &Gpu,
        s: &Conv2dShape,
        k: &ConvKernel,
        dtype: DType,
        times: usize,
    ) -> Vec<(Vec<f32>, Vec<f32>)> {
        let (ho, wo) = s.out_hw();
        let up = |v: &[f32]| match dtype {
            DType::F32 => gpu.upload("t", v).unwrap(),
            DType::F16 => gpu
                .upload("t", &v.iter().map(|&a| half::f16::from_f32(a)).collect::<Vec<_>>())
                .unwrap(),
        };
        let down = |b: &wgpu::Buffer, n: usize| match dtype {
            DType::F32 => gpu.read::<f32>(b, 0, n).unwrap(),
            DType::F16 => {
                let h = gpu.read::<half::f16>(b, 0, n).unwrap();
                h.iter().map(|v| v.to_f32()).collect()
            }
        };
        let mut arena = self.w.clone();
        arena.extend(&self.b);
        let (xb, wb, dyb) = (up(&self.x), up(&arena), up(&self.dy));
        let ny = s.n * s.cout * ho * wo;
        let nx = self.x.len();
        let yb = up(&vec![0.0; ny]);
        let dxb = up(&vec![0.0; nx]);
        let dummy = gpu.storage_buffer("dummy", 16).unwrap();
        let (m, p, kd) = ConvPass::Forward.gemm(s);
        let (mb, pb, kb) = ConvPass::BwdData.gemm(s);
        let bytes = k.scratch_bytes(m, p, kd).max(k.scratch_bytes(mb, pb, kb)).max(16);
        let scratch = gpu.storage_buffer("split-K scratch", bytes).unwrap();
        let ten = |b: &wgpu::Buffer| Tensor::wrap_typed(b.clone(), &[b.size() as usize / dtype.size_bytes()], dtype);
        let (xt, yt, dyt, dxt) = (ten(&xb), ten(&yb), ten(&dyb), ten(&dxb));
        let fwd = ConvForward {
            x: &xt,
            w: (&wb, 0),
            b: (&wb, self.w.len()),
            res: ConvResidual::None,
            out_scale: 1.0,
            y: &yt,
            dummy: &dummy,
            scratch: Some(&scratch),
        };
        let f = conv2d(gpu, k, s, &fwd).unwrap();
        assert_eq!(f.len(), k.dispatches(kd), "{k:?}: forward dispatches");
        let bwd = ConvBackward {
            dy: &dyt,
            w: (&wb, 0),
            scale: 1.0,
            accumulate: false,
            dx: &dxt,
            scratch: Some(&scratch),
        };
        let bw = conv2d_bwd_data(gpu, k, s, &bwd).unwrap();
        assert_eq!(bw.len(), k.dispatches(kb), "{k:?}: backward dispatches");
        (0..times)
            .map(|_| {
                run(gpu, f.clone());
                run(gpu, bw.clone());
                (down(&yb, ny), down(&dxb, nx))
            })
            .collect()
    }
}

/// Every candidate the autotuner would time gives the same convolution:
/// each tile family, unsplit and split 2..16 ways.
#[test]
fn every_candidate_kernel_matches_the_reference() {
    let gpu = gpu();
    for (i, s) in shapes().iter().enumerate() {
        let c = Case::new(s, 10 + i as u64);
        let want_y = conv_ref(s, &c.x, &c.w, &c.b, false);
        let want_dx = conv_bwd_ref(s, &c.dy, &c.w, false);
        let mut kernels = conv_choice::candidates(&gpu, ConvPass::Forward, s, DType::F32);
        kernels.extend(conv_choice::candidates(&gpu, ConvPass::BwdData, s, DType::F32));
        kernels.dedup();
        assert!(kernels.iter().any(|k| k.splits > 1) || s.cin * s.ks * s.ks < 128);
        for k in kernels {
            let (y, dx) = c.run(&gpu, s, &k, DType::F32);
            assert_close(&format!("conv2d {s:?} {}", k.describe()), &y, &want_y, 1e-4, 1e-4);
            assert_close(
                &format!("conv2d_bwd_data {s:?} {}", k.describe()),
                &dx,
                &want_dx,
                1e-4,
                1e-4,
            );
        }
    }
}

/// Split-K edge cases: more splits asked than K has slices (clamped, no
/// empty split), and a split count that does not divide the slices.
#[test]
fn split_plans_cover_k_exactly_once() {
    for kdim in [1usize, 15, 16, 17, 27, 603, 1152, 4608] {
        for splits in [1u32, 2, 3, 5, 16, 64] {
            let k = ConvKernel::simt(ConvTiles::MEDIUM).split(splits);
            let (k_split, used) = k.split_plan(kdim);
            assert_eq!(k_split % 16, 0, "K {kdim} splits {splits}: whole TK slices");
            assert!(
                used >= 1 && used <= splits.max(1),
                "K {kdim} splits {splits}: used {used}"
            );
            // Every split starts inside K and together they cover it.
            assert!((used - 1) * k_split < kdim as u32 && used * k_split >= kdim as u32);
        }
    }
    let gpu = gpu();
    let s = conv_shape([2, 3, 5, 5, 7, 3, 1], [1; 4]); // K = 27: two slices
    let c = Case::new(&s, 3);
    let k = ConvKernel::simt(ConvTiles::SMALL).split(16);
    assert_eq!(k.split_plan(27), (16, 2));
    let (y, dx) = c.run(&gpu, &s, &k, DType::F32);
    assert_close(
        "over-split forward",
        &y,
        &conv_ref(&s, &c.x, &c.w, &c.b, false),
        1e-4,
        1e-4,
    );
    assert_close(
        "over-split backward",
        &dx,
        &conv_bwd_ref(&s, &c.dy, &c.w, false),
        1e-4,
        1e-4,
    );
}

/// The tensor cores' numerics, emulated on any adapter: the SIMT kernel with
/// operands rounded to f16 as they enter workgroup memory matches a
/// reference that rounds the same way to f32 accuracy, and differs from the
/// unrounded reference by the rounding (so the emulation is really on).
#[test]
fn f16_operand_rounding_is_emulated_exactly() {
    let gpu = gpu();
    for (i, s) in shapes().iter().enumerate() {
        let c = Case::new(s, 40 + i as u64);
        let want_y = conv_ref(s, &c.x, &c.w, &c.b, true);
        let want_dx = conv_bwd_ref(s, &c.dy, &c.w, true);
        let plain_y = conv_ref(s, &c.x, &c.w, &c.b, false);
        for (tiles, splits) in [(ConvTiles::MEDIUM, 1), (ConvTiles::WIDE, 3), (ConvTiles::SMALL, 2)] {
            let k = ConvKernel {
                round_f16: true,
                ..ConvKernel::simt(tiles).split(splits)
            };
            let (y, dx) = c.run(&gpu, s, &k, DType::F32);
            assert_close(
                &format!("rounded conv2d {s:?} {}", k.describe()),
                &y,
                &want_y,
                2e-5,
                2e-5,
            );
            assert_close(
                &format!("rounded conv2d_bwd {s:?} {}", k.describe()),
                &dx,
                &want_dx,
                2e-5,
                2e-5,
            );
            let moved = rel_max_err(&y, &plain_y);
            assert!(
                moved > 1e-5,
                "{s:?}: f16 operands should move the result off the f32 one (moved {moved})"
            );
        }
    }
}

/// Whether the cooperative-matrix kernel must run on this adapter
/// (`TWEEDIE_REQUIRE_COOP=1`, as tools/gpu_bench.sh sets on datacenter GPUs):
/// then an adapter without it fails the tests instead of skipping them.
fn coop_required() -> bool {
    std::env::var("TWEEDIE_REQUIRE_COOP").is_ok_and(|v| v == "1")
}

/// Fails when the cooperative-matrix kernel is required but cannot run (`why`).
#[track_caller]
fn allow_no_coop(gpu: &Gpu, why: &str) {
    assert!(
        !coop_required(),
        "TWEEDIE_REQUIRE_COOP=1 but {} cannot run the cooperative-matrix kernel: {why}",
        gpu.describe()
    );
}

/// The cooperative-matrix kernel itself, where the adapter has a matching
/// configuration; elsewhere (lavapipe) it says why it was skipped, or fails
/// with TWEEDIE_REQUIRE_COOP=1.
#[test]
fn cooperative_matrix_kernel_matches_the_rounded_reference() {
    let gpu = gpu();
    if let Some(why) = conv_coop::unsupported(&gpu) {
        allow_no_coop(&gpu, &why);
        eprintln!("cooperative-matrix kernel skipped on {}: {why}", gpu.describe());
        // Asking for it anyway is a clear error, not a crash.
        let s = conv_shape([1, 4, 4, 4, 4, 3, 1], [1; 4]);
        let c = Case::new(&s, 1);
        let k = ConvKernel {
            coop: true,
            ..ConvKernel::simt(ConvTiles::MEDIUM)
        };
        let buf = gpu.upload("x", &c.x).unwrap();
        let t = Tensor::wrap(buf.clone(), &[c.x.len()]);
        let op = ConvBackward {
            dy: &t,
            w: (&buf, 0),
            scale: 1.0,
            accumulate: false,
            dx: &t,
            scratch: None,
        };
        let Err(err) = conv2d_bwd_data(&gpu, &k, &s, &op) else {
            panic!("the cooperative kernel planned on an adapter without it");
        };
        assert!(err.to_string().contains("cooperative"), "{err}");
        return;
    }
    for (i, s) in shapes().iter().enumerate() {
        let c = Case::new(s, 70 + i as u64);
        // f16 storage: the reference sees the stored (rounded) values.
        let want_y = conv_ref(s, &c.x, &c.w, &c.b, true);
        let want_dx = conv_bwd_ref(s, &c.dy, &c.w, true);
        for splits in [1, 3] {
            let k = coop_kernel(splits);
            let (y, dx) = c.run(&gpu, s, &k, DType::F16);
            // Outputs are stored in f16: half an ulp of f16 on top of the sums.
            assert!(rel_max_err(&y, &want_y) < 2e-3, "coop conv2d {s:?} split {splits}");
            assert!(
                rel_max_err(&dx, &want_dx) < 2e-3,
                "coop conv2d_bwd {s:?} split {splits}"
            );
        }
    }
}

fn coop_kernel(splits: u32) -> ConvKernel {
    ConvKernel {
        coop: true,
        ..ConvKernel::simt(ConvTiles::MEDIUM).split(splits)
    }
}

/// How this adapter runs the cooperative kernel: `Some(false)` the kernel
/// itself, `Some(true)` its emulated instance (no cooperative matrices here;
/// a failure instead with TWEEDIE_REQUIRE_COOP=1), `None` neither.
fn coop_mode(gpu: &Gpu) -> Option<bool> {
    let Some(why) = conv_coop::unsupported(gpu) else {
        return Some(false);
    };
    allow_no_coop(gpu, &why);
    match conv_coop::emulation_unsupported(gpu) {
        None => {
            eprintln!("{}: {why}; running the emulated instance", gpu.describe());
            Some(true)
        }
        Some(also) => {
            eprintln!("{}: {why}; nor the emulated instance: {also}", gpu.describe());
            None
        }
    }
}

/// `f` with the cooperative kernel launched as the mode says.
fn in_mode<R>(emulated: bool, f: impl FnOnce() -> R) -> R {
    if emulated {
        conv_coop::emulated(f)
    } else {
        f()
    }
}

/// The cooperative kernel's own indexing (tiles, quadrants, fragment loads
/// and stores, strides, the gathers, the epilogue, split-K), run through its
/// emulated instance on any adapter: the result is the reference's over
/// f16-rounded operands to f32 accuracy (f32 storage), forward and backward,
/// on the awkward shapes, split-K off and on.
#[test]
fn emulated_cooperative_kernel_matches_the_rounded_reference() {
    let gpu = gpu();
    if let Some(why) = conv_coop::emulation_unsupported(&gpu) {
        eprintln!("emulated cooperative kernel skipped on {}: {why}", gpu.describe());
        return;
    }
    for (i, s) in shapes().iter().enumerate() {
        let c = Case::new(s, 90 + i as u64);
        let want_y = conv_ref(s, &c.x, &c.w, &c.b, true);
        let want_dx = conv_bwd_ref(s, &c.dy, &c.w, true);
        for splits in [1, 3] {
            let k = coop_kernel(splits);
            let (y, dx) = conv_coop::emulated(|| c.run(&gpu, s, &k, DType::F32));
            let what = format!("emulated coop {s:?} split {splits}");
            assert_close(&format!("{what} forward"), &y, &want_y, 2e-5, 2e-5);
            assert_close(&format!("{what} backward"), &dx, &want_dx, 2e-5, 2e-5);
        }
        // f16 storage, as the tensor-core path runs f16 models.
        let k = coop_kernel(2);
        let (y, dx) = conv_coop::emulated(|| c.run(&gpu, s, &k, DType::F16));
        assert!(rel_max_err(&y, &want_y) < 2e-3, "emulated coop f16 conv2d {s:?}");
        assert!(rel_max_err(&dx, &want_dx) < 2e-3, "emulated coop f16 conv2d_bwd {s:?}");
    }
}

/// The orientation canary (tools/gpu_bench.sh runs it before timing): a 1x1
/// convolution by a permutation matrix through the cooperative kernel (its
/// emulation without the hardware) moves channels exactly, forward (y[co] =
/// x[perm co]) and backward (dx[perm co] = dy[co]). A fragment loaded or
/// stored transposed, or a quadrant misplaced, moves them elsewhere.
#[test]
fn coop_orientation_canary() {
    let gpu = gpu();
    let Some(emulated) = coop_mode(&gpu) else {
        return;
    };
    // 70 channels: two M tiles, five K slices (the last partial); batch 2 of
    // 5 x 7 pixels: one partial column tile.
    let ch = 70;
    let s = conv_shape([2, ch, 5, 7, ch, 1, 1], [0; 4]);
    let perm: Vec<usize> = (0..ch).map(|co| (co * 3 + 5) % ch).collect();
    let mut w = vec![0.0f32; ch * ch];
    for (co, &ci) in perm.iter().enumerate() {
        w[co * ch + ci] = 1.0;
    }
    // Small integers: exact in f16, their sums with zeros exact in f32.
    let ints = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + seed) % 17) as f32 - 8.0).collect() };
    let hw = s.h * s.w;
    let c = Case {
        x: ints(s.n * ch * hw, 1),
        w,
        b: vec![0.0; ch],
        dy: ints(s.n * ch * hw, 5),
    };
    for dtype in [DType::F16, DType::F32] {
        for splits in [1, 2] {
            let (y, dx) = in_mode(emulated, || c.run(&gpu, &s, &coop_kernel(splits), dtype));
            for n in 0..s.n {
                for (co, &ci) in perm.iter().enumerate() {
                    for i in 0..hw {
                        let (o, src) = ((n * ch + co) * hw + i, (n * ch + ci) * hw + i);
                        assert_eq!(
                            y[o], c.x[src],
                            "{dtype:?} split {splits}: y[n {n}, co {co}, pixel {i}] should be x[ci {ci}] (emulated {emulated})"
                        );
                        assert_eq!(
                            dx[src], c.dy[o],
                            "{dtype:?} split {splits}: dx[n {n}, ci {ci}, pixel {i}] should be dy[co {co}] (emulated {emulated})"
                        );
                    }
                }
            }
        }
    }
}

/// Run-to-run determinism (tools/gpu_bench.sh runs it before timing): the
/// cooperative kernel (its emulation without the hardware), split-K on and
/// off, gives bitwise the same forward and backward outputs in 20 runs of one
/// plan on the same inputs.
#[test]
fn coop_runs_are_bit_identical() {
    let gpu = gpu();
    let Some(emulated) = coop_mode(&gpu) else {
        return;
    };
    let s = conv_shape([2, 40, 9, 7, 70, 3, 1], [1; 4]);
    let c = Case::new(&s, 17);
    let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
    for splits in [1, 3] {
        let k = coop_kernel(splits);
        let runs = in_mode(emulated, || c.runs(&gpu, &s, &k, DType::F16, 20));
        let first = &runs[0];
        for (i, (y, dx)) in runs.iter().enumerate().skip(1) {
            assert!(
                bits(y) == bits(&first.0),
                "split {splits}: forward run {i} differs from the first"
            );
            assert!(
                bits(dx) == bits(&first.1),
                "split {splits}: backward run {i} differs from the first"
            );
        }
    }
}

/// The plan-time choice: on a CPU adapter (lavapipe) never split-K or tensor
/// cores; every choice is among the candidates and fits the adapter.
#[test]
fn the_choice_fits_the_adapter() {
    let gpu = gpu();
    let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    for s in shapes().into_iter().chain([
        conv_shape([1, 512, 8, 8, 512, 3, 1], [1; 4]),
        conv_shape([1, 128, 256, 256, 128, 3, 1], [1; 4]),
    ]) {
        for pass in [ConvPass::Forward, ConvPass::BwdData] {
            for dtype in [DType::F32, DType::F16] {
                let k = conv_choice::heuristic(&gpu, pass, &s, dtype);
                assert!(k.coop || k.tiles.fits(&gpu), "{s:?}: {k:?} does not fit");
                if cpu {
                    assert_eq!(k.splits, 1, "{s:?}: no split-K on a CPU adapter");
                    assert!(!k.coop);
                }
                if dtype == DType::F32 {
                    assert!(!k.coop, "f32 models stay on SIMT");
                }
                let cands = conv_choice::candidates(&gpu, pass, &s, dtype);
                assert!(cands.contains(&k), "{s:?} {pass:?}: {k:?} not among the candidates");
            }
        }
    }
}
