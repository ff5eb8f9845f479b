//! Every U-Net kernel's f16 instance against its f32 instance (which
//! `unet_kernels.rs` checks against CPU references and finite differences) on
//! the same f16-representable inputs and weights, on awkward shapes (odd sizes,
//! sizes off the tile and workgroup, batch > 1, accumulate on and off). The
//! kernels accumulate in f32 either way, so the f16 outputs must sit within
//! f16 rounding of the f32 ones: |f16 - f32| <= 2e-3 max(1, |f32|) elementwise.
//! Skipped, saying why, on an adapter without `shader-f16`.

mod common;
use common::conv::conv_shape;
use common::groupnorm::{affine, gn_shape};
use common::*;

use half::f16;
use tweedie::gpu::{Dispatch, Gpu};
use tweedie::kernels::attention::{attention, attention_bwd, AttentionGrads, AttentionShape};
use tweedie::kernels::conv2d::{conv2d, conv2d_bwd_data, ConvBackward, ConvForward, ConvResidual};
use tweedie::kernels::conv_choice::{self, ConvPass};
use tweedie::kernels::groupnorm::{group_norm_bwd_onepass, group_norm_onepass, GroupNormGrad};
use tweedie::kernels::linear::{linear, LinearShape};
use tweedie::kernels::resample::{
    avg_pool2x2, avg_pool2x2_bwd, concat_channels, split_channels, upsample_nearest2x, upsample_nearest2x_bwd, Concat,
    Nchw,
};
use tweedie::tensor::{DType, Tensor};

/// Rounds to the nearest f16 (the inputs both instances see).
fn r16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn up(gpu: &Gpu, dtype: DType, v: &[f32]) -> wgpu::Buffer {
    match dtype {
        DType::F32 => gpu.upload("t", v).unwrap(),
        DType::F16 => gpu
            .upload("t", &v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
            .unwrap(),
    }
}

fn down(gpu: &Gpu, dtype: DType, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    match dtype {
        DType::F32 => gpu.read::<f32>(b, 0, n).unwrap(),
        DType::F16 => gpu.read::<f16>(b, 0, n).unwrap().iter().map(|x| x.to_f32()).collect(),
    }
}

/// The whole buffer as a flat `dtype` tensor (the launchers that take tensors).
fn ten(dtype: DType, b: &wgpu::Buffer) -> Tensor {
    Tensor::wrap_typed(b.clone(), &[b.size() as usize / dtype.size_bytes()], dtype)
}

fn f32_zeros(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.storage_buffer("z", (n * 4) as u64).unwrap()
}

fn run(gpu: &Gpu, ds: Vec<Dispatch>) {
    tweedie::gpu::Plan { steps: ds }.run(gpu).unwrap();
}

/// Runs `case` in f32 and in f16 and compares.
fn compare(what: &str, case: impl Fn(DType) -> Vec<f32>) {
    let (a, b) = (case(DType::F32), case(DType::F16));
    assert!(a.iter().all(|v| v.is_finite()), "{what}: f32 not finite");
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert_close(&format!("{what} f16 vs f32"), &b, &a, 2e-3 * scale, 2e-3);
}

fn has_f16() -> bool {
    let gpu = gpu();
    let ok = gpu.features.contains(wgpu::Features::SHADER_F16);
    if !ok {
        eprintln!("skipping: {} has no shader-f16", gpu.describe());
    }
    ok
}

#[test]
fn conv2d_forward_and_backward_data_in_f16() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let mut r = rng(41);
    for s in [
        conv_shape([2, 5, 7, 9, 6, 3, 1], [1, 1, 1, 1]),
        conv_shape([3, 3, 9, 6, 67, 3, 2], [0, 0, 1, 1]),
        conv_shape([1, 70, 5, 5, 9, 1, 1], [0; 4]),
    ] {
        let (ho, wo) = s.out_hw();
        let ny = s.n * s.cout * ho * wo;
        let nx = s.n * s.cin * s.h * s.w;
        let x = r16(&randn(&mut r, nx));
        let wts = r16(&randn(&mut r, 1 + s.cout * s.cin * s.ks * s.ks + s.cout));
        let res = r16(&randn(&mut r, ny));
        let dy = r16(&randn(&mut r, ny));
        let prior = r16(&randn(&mut r, nx));
        let b_off = 1 + s.cout * s.cin * s.ks * s.ks;
        compare(&format!("conv2d {s:?}"), |dt| {
            let (xb, wb, rb, yb, dummy) = (
                up(&gpu, dt, &x),
                up(&gpu, dt, &wts),
                up(&gpu, dt, &res),
                up(&gpu, dt, &vec![0.0; ny]),
                f32_zeros(&gpu, 4),
            );
            // The plan's own choice (split-K on a big GPU: its scratch too).
            let kernel = conv_choice::choose(&gpu, ConvPass::Forward, &s, dt);
            let (m, p, k) = ConvPass::Forward.gemm(&s);
            let scratch = f32_zeros(&gpu, (kernel.scratch_bytes(m, p, k) as usize / 4).max(1));
            let op = ConvForward {
                x: &ten(dt, &xb),
                w: (&wb, 1),
                b: (&wb, b_off),
                res: ConvResidual::Full(&rb, 0),
                out_scale: 0.7,
                y: &ten(dt, &yb),
                dummy: &dummy,
                scratch: Some(&scratch),
            };
            let d = conv2d(&gpu, &kernel, &s, &op).unwrap();
            run(&gpu, d);
            down(&gpu, dt, &yb, ny)
        });
        for accumulate in [false, true] {
            compare(&format!("conv2d_bwd_data {s:?} acc {accumulate}"), |dt| {
                let (gb, wb, dxb) = (up(&gpu, dt, &dy), up(&gpu, dt, &wts), up(&gpu, dt, &prior));
                let kernel = conv_choice::choose(&gpu, ConvPass::BwdData, &s, dt);
                let (m, p, k) = ConvPass::BwdData.gemm(&s);
                let scratch = f32_zeros(&gpu, (kernel.scratch_bytes(m, p, k) as usize / 4).max(1));
                let op = ConvBackward {
                    dy: &ten(dt, &gb),
                    w: (&wb, 1),
                    scale: 0.7,
                    accumulate,
                    dx: &ten(dt, &dxb),
                    scratch: Some(&scratch),
                };
                let d = conv2d_bwd_data(&gpu, &kernel, &s, &op).unwrap();
                run(&gpu, d);
                down(&gpu, dt, &dxb, nx)
            });
        }
    }
}

#[test]
fn group_norm_one_pass_in_f16() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let mut r = rng(43);
    for (s, silu, with_ss) in [
        (gn_shape(2, 6, 35, 3, 1e-5), true, true),
        (gn_shape(3, 64, 9, 32, 1e-6), false, false),
    ] {
        let len = s.n * s.c * s.hw;
        let x: Vec<f32> = r16(&randn(&mut r, len).iter().map(|v| 2.0 * v + 1.0).collect::<Vec<_>>());
        let wts = r16(&randn(&mut r, 1 + 2 * s.c));
        let ss = r16(&randn(&mut r, s.n * 2 * s.c).iter().map(|v| 0.3 * v).collect::<Vec<_>>());
        let dy = r16(&randn(&mut r, len));
        let prior = r16(&randn(&mut r, len));
        // The forward pass in `dt`: its output, and the saved statistics
        // (f32 in both instances).
        let forward = |dt: DType| {
            let (xb, wb, sb, yb, st, dummy) = (
                up(&gpu, dt, &x),
                up(&gpu, dt, &wts),
                up(&gpu, dt, &ss),
                up(&gpu, dt, &vec![0.0; len]),
                f32_zeros(&gpu, s.n * s.groups * 2),
                f32_zeros(&gpu, 4),
            );
            let sbt = Tensor::wrap_typed(sb, &[ss.len()], dt);
            let a = affine(&wb, 1, &s, with_ss.then_some(&sbt), silu);
            let (xt, stt, yt) = (
                Tensor::wrap_typed(xb, &[len], dt),
                Tensor::wrap(st.clone(), &[s.n * s.groups * 2]),
                Tensor::wrap_typed(yb.clone(), &[len], dt),
            );
            let d = group_norm_onepass(&gpu, &s, &xt, &stt, &a, &yt, &dummy).unwrap();
            run(&gpu, vec![d]);
            (
                down(&gpu, dt, &yb, len),
                gpu.read::<f32>(&st, 0, s.n * s.groups * 2).unwrap(),
            )
        };
        let ((y_f32, stats_f32), (y16, st16)) = (forward(DType::F32), forward(DType::F16));
        let scale = y_f32.iter().fold(1f32, |m, v| m.max(v.abs()));
        assert_close(&format!("group_norm {s:?} f16"), &y16, &y_f32, 2e-3 * scale, 2e-3);
        assert_close(&format!("group_norm {s:?} f16 stats"), &st16, &stats_f32, 1e-5, 1e-5);
        for accumulate in [false, true] {
            compare(&format!("group_norm_bwd {s:?} acc {accumulate}"), |dt| {
                let (xb, wb, sb, gb, dxb, st, dummy) = (
                    up(&gpu, dt, &x),
                    up(&gpu, dt, &wts),
                    up(&gpu, dt, &ss),
                    up(&gpu, dt, &dy),
                    up(&gpu, dt, &prior),
                    gpu.upload("stats", &stats_f32).unwrap(),
                    f32_zeros(&gpu, 4),
                );
                let sbt = Tensor::wrap_typed(sb, &[ss.len()], dt);
                let a = affine(&wb, 1, &s, with_ss.then_some(&sbt), silu);
                let (xt, stt, gt, dxt) = (
                    Tensor::wrap_typed(xb, &[len], dt),
                    Tensor::wrap(st, &[s.n * s.groups * 2]),
                    Tensor::wrap_typed(gb, &[len], dt),
                    Tensor::wrap_typed(dxb.clone(), &[len], dt),
                );
                let g = GroupNormGrad {
                    dy: &gt,
                    dx: &dxt,
                    accumulate,
                };
                let d = group_norm_bwd_onepass(&gpu, &s, &xt, &stt, &a, &g, &dummy).unwrap();
                run(&gpu, vec![d]);
                down(&gpu, dt, &dxb, len)
            });
        }
    }
}

#[test]
fn attention_forward_and_backward_in_f16() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let mut r = rng(47);
    // Off the 16-row blocks and the key tiles, head widths of 1, off the 4
    // lanes, one block and several (the last partial), t = 1.
    for (n, heads, ch, t, split) in [
        (2, 3, 5, 7, false),
        (2, 2, 16, 33, true),
        (1, 2, 70, 6, true),
        (2, 4, 1, 37, false),
        (1, 3, 33, 1, true),
        (2, 2, 64, 37, false),
        (1, 1, 256, 20, true),
    ] {
        let sc = 1.0 / (ch as f32).sqrt().sqrt();
        let s = AttentionShape {
            n,
            heads,
            ch,
            t,
            split_order: split,
            scale_q: sc,
            scale_k: sc,
        };
        let ny = n * heads * ch * t;
        let qkv = r16(&randn(&mut r, n * 3 * heads * ch * t));
        let dy = r16(&randn(&mut r, ny));
        let prior = r16(&randn(&mut r, qkv.len()));
        compare(&format!("attention {s:?}"), |dt| {
            let (qb, yb, lse) = (
                up(&gpu, dt, &qkv),
                up(&gpu, dt, &vec![0.0; ny]),
                f32_zeros(&gpu, n * heads * t),
            );
            let lse = Tensor::wrap(lse, &[n * heads * t]);
            run(
                &gpu,
                vec![attention(&gpu, &s, &ten(dt, &qb), &ten(dt, &yb), &lse).unwrap()],
            );
            down(&gpu, dt, &yb, ny)
        });
        for accumulate in [false, true] {
            compare(&format!("attention_bwd {s:?} acc {accumulate}"), |dt| {
                let (qb, yb, lse, gb, dsum, dq) = (
                    up(&gpu, dt, &qkv),
                    up(&gpu, dt, &vec![0.0; ny]),
                    f32_zeros(&gpu, n * heads * t),
                    up(&gpu, dt, &dy),
                    f32_zeros(&gpu, n * heads * t),
                    up(&gpu, dt, &prior),
                );
                let (qt, yt) = (ten(dt, &qb), ten(dt, &yb));
                let (lse, dsum) = (
                    Tensor::wrap(lse, &[n * heads * t]),
                    Tensor::wrap(dsum, &[n * heads * t]),
                );
                run(&gpu, vec![attention(&gpu, &s, &qt, &yt, &lse).unwrap()]);
                let g = AttentionGrads {
                    qkv: &qt,
                    y: &yt,
                    lse: &lse,
                    dy: &ten(dt, &gb),
                    dsum: &dsum,
                    dqkv: &ten(dt, &dq),
                    accumulate,
                };
                let d = attention_bwd(&gpu, &s, &g).unwrap();
                run(&gpu, d.into());
                down(&gpu, dt, &dq, qkv.len())
            });
        }
    }
}

#[test]
fn linear_and_resampling_in_f16() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let mut r = rng(53);
    let (n, din, dout) = (3, 37, 70);
    let x = r16(&randn(&mut r, n * din));
    let wts = r16(&randn(&mut r, 5 + dout * din + dout));
    for (si, so) in [(false, false), (true, true)] {
        compare(&format!("linear silu ({si}, {so})"), |dt| {
            let (xb, wb, yb) = (up(&gpu, dt, &x), up(&gpu, dt, &wts), up(&gpu, dt, &vec![0.0; n * dout]));
            let s = LinearShape {
                n,
                din,
                dout,
                silu_in: si,
                silu_out: so,
            };
            let (xt, yt) = (
                Tensor::wrap_typed(xb, &[n, din], dt),
                Tensor::wrap_typed(yb.clone(), &[n, dout], dt),
            );
            let d = linear(&gpu, &s, &xt, (&wb, 5), (&wb, 5 + dout * din), &yt).unwrap();
            run(&gpu, vec![d]);
            down(&gpu, dt, &yb, n * dout)
        });
    }
    let (n, c, h, w) = (2, 3, 5, 7);
    let img = r16(&randn(&mut r, n * c * h * w));
    let big = r16(&randn(&mut r, n * c * 4 * h * w));
    let small = r16(&randn(&mut r, n * c * (h / 2) * (w / 2)));
    let other = r16(&randn(&mut r, n * 2 * h * w));
    let cat = r16(&randn(&mut r, n * (c + 2) * h * w));
    let nchw = Nchw { n, c, h, w };
    let concat = Concat {
        n,
        ca: c,
        cb: 2,
        hw: h * w,
    };
    compare("upsample", |dt| {
        let (xb, yb) = (up(&gpu, dt, &img), up(&gpu, dt, &vec![0.0; big.len()]));
        run(
            &gpu,
            vec![upsample_nearest2x(&gpu, nchw, &ten(dt, &xb), &ten(dt, &yb)).unwrap()],
        );
        down(&gpu, dt, &yb, big.len())
    });
    compare("avg_pool", |dt| {
        let (xb, yb) = (up(&gpu, dt, &img), up(&gpu, dt, &vec![0.0; small.len()]));
        run(
            &gpu,
            vec![avg_pool2x2(&gpu, nchw, &ten(dt, &xb), &ten(dt, &yb)).unwrap()],
        );
        down(&gpu, dt, &yb, small.len())
    });
    compare("concat", |dt| {
        let (a, b, y) = (
            up(&gpu, dt, &img),
            up(&gpu, dt, &other),
            up(&gpu, dt, &vec![0.0; cat.len()]),
        );
        run(
            &gpu,
            vec![concat_channels(&gpu, concat, &ten(dt, &a), &ten(dt, &b), &ten(dt, &y)).unwrap()],
        );
        down(&gpu, dt, &y, cat.len())
    });
    for acc in [false, true] {
        compare(&format!("upsample_bwd acc {acc}"), |dt| {
            let (gb, dx) = (up(&gpu, dt, &big), up(&gpu, dt, &img));
            run(
                &gpu,
                vec![upsample_nearest2x_bwd(&gpu, nchw, &ten(dt, &gb), &ten(dt, &dx), acc).unwrap()],
            );
            down(&gpu, dt, &dx, img.len())
        });
        compare(&format!("avg_pool_bwd acc {acc}"), |dt| {
            let (gb, dx) = (up(&gpu, dt, &small), up(&gpu, dt, &img));
            run(
                &gpu,
                vec![avg_pool2x2_bwd(&gpu, nchw, &ten(dt, &gb), &ten(dt, &dx), acc).unwrap()],
            );
            down(&gpu, dt, &dx, img.len())
        });
        compare(&format!("split acc {acc}"), |dt| {
            let (gb, da, db) = (up(&gpu, dt, &cat), up(&gpu, dt, &img), up(&gpu, dt, &other));
            run(
                &gpu,
                vec![split_channels(&gpu, concat, &ten(dt, &gb), (&ten(dt, &da), &ten(dt, &db)), (acc, !acc)).unwrap()],
            );
            let mut v = down(&gpu, dt, &da, img.len());
            v.extend(down(&gpu, dt, &db, other.len()));
            v
        });
    }
}
