//! U-Net kernels against plain-Rust references (f64 accumulation) on awkward
//! shapes: odd H/W, channel counts that are not multiples of the tiles, batch 2.

mod common;
use common::attention::{attention_bwd_f64, attention_f64};
use common::conv::{conv_bwd_f64, conv_f64, conv_out, conv_shape, Residual};
use common::groupnorm::{affine, gn_bwd_f64, gn_f64, gn_shape, GnCase};
use common::*;

use tweedie::tensor::Tensor;

use tweedie::gpu::{Dispatch, Gpu, Plan};
use tweedie::kernels::attention::{attention, attention_tiled, AttentionGrads, AttentionShape, AttentionTiles};
use tweedie::kernels::conv2d::{conv2d, Conv2dShape, ConvBackward, ConvForward, ConvKernel, ConvResidual, ConvTiles};
use tweedie::kernels::groupnorm::{group_norm, group_norm_onepass, GroupNormGrad, CHUNK};
use tweedie::kernels::linear::{linear, LinearShape};
use tweedie::kernels::resample::{
    avg_pool2x2, concat_channels, copy_channels, split_channels, upsample_nearest2x, ChannelSlice, Concat, Nchw,
};
use tweedie::kernels::timestep::{timestep_embedding, TimestepShape};
use tweedie::unet::graph::timestep_freqs;

fn buf(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.upload("test", data).unwrap()
}

fn zeros(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.storage_buffer("test out", (n * 4) as u64).unwrap()
}

/// Channels [c_off, c_off + c) of a 5-channel [n, 5, hw] tensor (the concat tests).
fn slice5(n: usize, c: usize, hw: usize, c_off: usize) -> ChannelSlice {
    ChannelSlice {
        n,
        c,
        hw,
        c_total: 5,
        c_off,
    }
}

/// The whole f32 buffer as a flat tensor (the launchers that take tensors).
fn t32(b: &wgpu::Buffer) -> Tensor {
    Tensor::wrap(b.clone(), &[b.size() as usize / 4])
}

fn run(gpu: &Gpu, ds: Vec<Dispatch>) {
    let mut p = Plan::new();
    for d in ds {
        p.push(d);
    }
    p.run(gpu).unwrap();
}

// ---------------------------------------------------------------- conv2d

fn conv_case(gpu: &Gpu, kernel: &ConvKernel, s: Conv2dShape, res_mode: u32, out_scale: f32, seed: u64) {
    let mut r = rng(seed);
    let (ho, wo) = s.out_hw();
    let x = randn(&mut r, s.n * s.cin * s.h * s.w);
    let w = randn(&mut r, s.cout * s.cin * s.ks * s.ks);
    // Weights and bias at offsets inside one arena, as the model packs them.
    let w_off = 4;
    let b_off = w_off + w.len() + 3;
    let mut arena = vec![9.0f32; b_off + s.cout + 2];
    arena[w_off..w_off + w.len()].copy_from_slice(&w);
    let b = randn(&mut r, s.cout);
    arena[b_off..b_off + s.cout].copy_from_slice(&b);
    let res = match res_mode {
        1 => randn(&mut r, s.n * s.cout * ho * wo),
        2 => randn(&mut r, s.n * s.cout),
        _ => vec![0.0],
    };
    let residual = match res_mode {
        1 => Residual::Full(&res),
        2 => Residual::Channel(&res),
        _ => Residual::None,
    };
    let want = conv_out(&s, &f64s(&x), &f64s(&w), &b, residual, out_scale);
    let (xb, ab, rb, yb, dummy) = (
        buf(gpu, &x),
        buf(gpu, &arena),
        buf(gpu, &res),
        zeros(gpu, want.len()),
        zeros(gpu, 4),
    );
    let residual = match res_mode {
        1 => ConvResidual::Full(&rb, 0),
        2 => ConvResidual::Channel(&rb, 0, s.cout),
        _ => ConvResidual::None,
    };
    let scratch = zeros(
        gpu,
        (kernel.scratch_bytes(s.cout, s.n * ho * wo, s.cin * s.ks * s.ks) as usize / 4).max(1),
    );
    let op = ConvForward {
        x: &t32(&xb),
        w: (&ab, w_off),
        b: (&ab, b_off),
        res: residual,
        out_scale,
        y: &t32(&yb),
        dummy: &dummy,
        scratch: Some(&scratch),
    };
    let d = conv2d(gpu, kernel, &s, &op).unwrap();
    run(gpu, d);
    let got = gpu.read::<f32>(&yb, 0, want.len()).unwrap();
    assert_close(
        &format!("conv2d {s:?} res {res_mode} kernel {kernel:?}"),
        &got,
        &want,
        1e-4,
        1e-4,
    );
}

#[test]
fn conv2d_matches_cpu() {
    let gpu = gpu();
    // Every tile family, and a shallow k tile.
    let shallow = ConvTiles {
        wg_m: 8,
        wg_n: 8,
        tk: 8,
        rm: 4,
        rn: 4,
    };
    // Every tile family, unsplit and split along K.
    let kernels = [
        ConvTiles::WIDE,
        ConvTiles::LARGE,
        ConvTiles::MEDIUM,
        ConvTiles::SMALL,
        shallow,
    ]
    .into_iter()
    .flat_map(|t| [ConvKernel::simt(t), ConvKernel::simt(t).split(3)]);
    for k in kernels {
        // 3x3 pad 1, odd sizes, cout not a multiple of the tile, batch 2.
        conv_case(&gpu, &k, conv_shape([2, 5, 7, 9, 11, 3, 1], [1; 4]), 0, 1.0, 1);
        // 1x1 with a full residual and an output scale (diffusers' skip).
        conv_case(&gpu, &k, conv_shape([2, 13, 5, 3, 70, 1, 1], [0; 4]), 1, 0.5, 2);
        // Additive time embedding per (n, channel).
        conv_case(&gpu, &k, conv_shape([2, 4, 6, 5, 3, 3, 1], [1; 4]), 2, 1.0, 3);
        // Stride 2, pad 1 (guided-diffusion Downsample) on odd input.
        conv_case(&gpu, &k, conv_shape([2, 6, 9, 7, 5, 3, 2], [1; 4]), 0, 1.0, 4);
        // Stride 2, pad (0, 0, 1, 1) (diffusers downsample_padding = 0).
        conv_case(&gpu, &k, conv_shape([1, 3, 8, 6, 4, 3, 2], [0, 0, 1, 1]), 1, 1.0, 5);
        // K = 603: many slices, not a multiple of TK, uneven splits.
        conv_case(&gpu, &k, conv_shape([2, 67, 5, 6, 9, 3, 1], [1; 4]), 2, 1.0, 6);
    }
}

// ---------------------------------------------------------------- groupnorm

#[test]
fn group_norm_matches_cpu() {
    let gpu = gpu();
    let mut r = rng(7);
    let cases = [
        (gn_shape(2, 6, 35, 3, 1e-5), false, false),
        (gn_shape(2, 64, 9, 32, 1e-6), true, false),
        (gn_shape(2, 96, 77, 32, 1e-5), true, true),
        (gn_shape(1, 4, 1000, 2, 1e-5), false, true),
        // Groups longer than one statistics chunk (two full chunks and a partial one).
        (gn_shape(2, 4, CHUNK + 41, 2, 1e-5), true, true),
    ];
    for (s, silu_on, with_ss) in cases {
        // An offset mean checks the two-pass variance.
        let x: Vec<f32> = randn(&mut r, s.n * s.c * s.hw).iter().map(|v| 3.0 * v + 5.0).collect();
        let gamma = randn(&mut r, s.c);
        let beta = randn(&mut r, s.c);
        let ss = randn(&mut r, s.n * 2 * s.c);
        let mut arena = vec![0f32; 3];
        arena.extend(&gamma);
        arena.extend(&beta);
        let gn = GnCase {
            s,
            gamma: f64s(&gamma),
            beta: f64s(&beta),
            ss: with_ss.then(|| f64s(&ss)),
            silu: silu_on,
        };
        let want = f32s(&gn_f64(&gn, &f64s(&x)));
        let (xb, ab, sb, yb, stats, dummy) = (
            buf(&gpu, &x),
            buf(&gpu, &arena),
            buf(&gpu, &ss),
            zeros(&gpu, x.len()),
            zeros(&gpu, s.n * s.groups * 2),
            zeros(&gpu, 4),
        );
        let sbt = Tensor::wrap(sb, &[ss.len()]);
        let a = affine(&ab, 3, &s, with_ss.then_some(&sbt), silu_on);
        let (xt, stt, yt) = (
            Tensor::wrap(xb, &[x.len()]),
            Tensor::wrap(stats.clone(), &[s.n * s.groups * 2]),
            Tensor::wrap(yb.clone(), &[x.len()]),
        );
        let d = group_norm(&gpu, &s, &xt, &stt, &a, &yt, &dummy).unwrap();
        run(&gpu, d.into());
        let got = gpu.read::<f32>(&yb, 0, x.len()).unwrap();
        let label = format!("group_norm {s:?} silu {silu_on} ss {with_ss}");
        assert_close(&label, &got, &want, 1e-5, 1e-4);
        let chunked_stats = gpu.read::<f32>(&stats, 0, s.n * s.groups * 2).unwrap();
        // The one-pass form: same output, same saved statistics.
        let (yb1, stats1) = (zeros(&gpu, x.len()), zeros(&gpu, s.n * s.groups * 2));
        let (yt1, stt1) = (
            Tensor::wrap(yb1.clone(), &[x.len()]),
            Tensor::wrap(stats1.clone(), &[s.n * s.groups * 2]),
        );
        let d = group_norm_onepass(&gpu, &s, &xt, &stt1, &a, &yt1, &dummy).unwrap();
        run(&gpu, vec![d]);
        let got = gpu.read::<f32>(&yb1, 0, x.len()).unwrap();
        assert_close(&format!("{label} one-pass"), &got, &want, 1e-5, 1e-4);
        let stats1 = gpu.read::<f32>(&stats1, 0, s.n * s.groups * 2).unwrap();
        assert_close(&format!("{label} one-pass stats"), &stats1, &chunked_stats, 1e-5, 1e-5);
    }
}

// ---------------------------------------------------------------- linear

#[test]
fn linear_matches_cpu() {
    let gpu = gpu();
    let mut r = rng(11);
    for (n, din, dout, si, so) in [
        (2, 7, 13, false, true),
        (3, 65, 130, true, false),
        (1, 1, 1, true, true),
    ] {
        let x = randn(&mut r, n * din);
        let w = randn(&mut r, dout * din);
        let b = randn(&mut r, dout);
        let mut arena = vec![0f32; 5];
        arena.extend(&w);
        arena.extend(&b);
        let mut want = vec![0f32; n * dout];
        for i in 0..n {
            for o in 0..dout {
                let mut s = b[o] as f64;
                for k in 0..din {
                    let v = x[i * din + k] as f64;
                    s += w[o * din + k] as f64 * if si { silu(v) } else { v };
                }
                want[i * dout + o] = if so { silu(s) } else { s } as f32;
            }
        }
        let (xb, ab, yb) = (buf(&gpu, &x), buf(&gpu, &arena), zeros(&gpu, n * dout));
        let s = LinearShape {
            n,
            din,
            dout,
            silu_in: si,
            silu_out: so,
        };
        let (xt, yt) = (Tensor::wrap(xb, &[n, din]), Tensor::wrap(yb.clone(), &[n, dout]));
        let d = linear(&gpu, &s, &xt, (&ab, 5), (&ab, 5 + w.len()), &yt).unwrap();
        run(&gpu, vec![d]);
        let got = gpu.read::<f32>(&yb, 0, n * dout).unwrap();
        assert_close(&format!("linear {n}x{din}->{dout}"), &got, &want, 1e-5, 1e-4);
    }
}

// ---------------------------------------------------------------- attention

/// Shapes off every tile: token counts of 1, not a multiple of the 16-row
/// block or of the 4/8/16-token tiles; head widths of 1, 3, off the 4 lanes
/// (33), exactly one 64-channel block, and wider heads split into blocks
/// whose last one is partial (80, 130, 160) or full (256); batch > 1; 1-4
/// heads; both head orders.
const ATTENTION_CASES: [(usize, usize, usize, usize, bool); 17] = [
    (2, 3, 5, 7, false),
    (2, 2, 16, 65, true),
    (1, 1, 33, 9, false),
    (2, 4, 8, 20, true),
    (2, 1, 130, 10, true),
    (1, 2, 64, 12, false),
    (1, 1, 1, 1, false),
    (2, 4, 1, 37, true),
    (3, 2, 3, 7, true),
    (2, 3, 8, 70, false),
    (1, 4, 33, 37, true),
    (2, 2, 64, 70, true),
    (1, 1, 64, 16, false),
    (1, 3, 80, 37, false),
    (2, 1, 256, 37, true),
    (1, 2, 160, 1, false),
    (2, 2, 160, 23, true),
];

fn attention_shape(n: usize, heads: usize, ch: usize, t: usize, split_order: bool) -> AttentionShape {
    let sc = 1.0 / (ch as f32).sqrt().sqrt();
    AttentionShape {
        n,
        heads,
        ch,
        t,
        split_order,
        scale_q: sc,
        scale_k: sc,
    }
}

/// The tilings a shape runs with here: the device's choice, and the smallest
/// tiles (4 keys / tokens) a device with little workgroup memory would get.
fn attention_tilings(gpu: &Gpu, s: &AttentionShape) -> Vec<AttentionTiles> {
    let chosen = s.tiles(gpu).unwrap();
    vec![chosen, AttentionTiles { bk: 4, bs: 4, ..chosen }]
}

/// The backward pass's tensors over the f32 buffers qkv, y, lse, dy, dsum, dqkv.
fn attention_grads(t: &[Tensor; 6], accumulate: bool) -> AttentionGrads<'_> {
    let [qkv, y, lse, dy, dsum, dqkv] = t;
    AttentionGrads {
        qkv,
        y,
        lse,
        dy,
        dsum,
        dqkv,
        accumulate,
    }
}

#[test]
fn attention_matches_cpu() {
    let gpu = gpu();
    let mut r = rng(13);
    for (n, heads, ch, t, split) in ATTENTION_CASES {
        let s = attention_shape(n, heads, ch, t, split);
        let qkv: Vec<f32> = randn(&mut r, n * 3 * heads * ch * t).iter().map(|v| 1.5 * v).collect();
        let want = f32s(&attention_f64(&s, &f64s(&qkv)));
        for tiles in attention_tilings(&gpu, &s) {
            let (qb, yb, lse) = (buf(&gpu, &qkv), zeros(&gpu, want.len()), zeros(&gpu, n * heads * t));
            let d = attention_tiled(&gpu, &s, &tiles, &t32(&qb), &t32(&yb), &t32(&lse)).unwrap();
            run(&gpu, vec![d]);
            let got = gpu.read::<f32>(&yb, 0, want.len()).unwrap();
            assert_close(&format!("attention {s:?} {tiles:?}"), &got, &want, 1e-5, 1e-4);
        }
    }
}

// ---------------------------------------------------------------- resampling

#[test]
fn resample_kernels_match_cpu() {
    let gpu = gpu();
    let mut r = rng(17);
    let (n, c, h, w) = (2, 3, 5, 7);
    let x = randn(&mut r, n * c * h * w);
    let xb = buf(&gpu, &x);

    let mut up = vec![0f32; n * c * 4 * h * w];
    for nc in 0..n * c {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                up[(nc * 2 * h + oy) * 2 * w + ox] = x[(nc * h + oy / 2) * w + ox / 2];
            }
        }
    }
    let yb = zeros(&gpu, up.len());
    run(
        &gpu,
        vec![upsample_nearest2x(&gpu, Nchw { n, c, h, w }, &t32(&xb), &t32(&yb)).unwrap()],
    );
    assert_close("upsample", &gpu.read::<f32>(&yb, 0, up.len()).unwrap(), &up, 0.0, 0.0);

    let (ho, wo) = (h / 2, w / 2);
    let mut pool = vec![0f32; n * c * ho * wo];
    for nc in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let g = |dy: usize, dx: usize| x[(nc * h + 2 * oy + dy) * w + 2 * ox + dx] as f64;
                pool[(nc * ho + oy) * wo + ox] = ((g(0, 0) + g(0, 1) + g(1, 0) + g(1, 1)) / 4.0) as f32;
            }
        }
    }
    let pb = zeros(&gpu, pool.len());
    run(
        &gpu,
        vec![avg_pool2x2(&gpu, Nchw { n, c, h, w }, &t32(&xb), &t32(&pb)).unwrap()],
    );
    assert_close(
        "avg_pool",
        &gpu.read::<f32>(&pb, 0, pool.len()).unwrap(),
        &pool,
        1e-6,
        1e-6,
    );

    // Concat [x (3 ch), z (2 ch)] into 5 channels.
    let z = randn(&mut r, n * 2 * h * w);
    let zb = buf(&gpu, &z);
    let hw = h * w;
    let mut cat = vec![0f32; n * 5 * hw];
    for i in 0..n {
        cat[i * 5 * hw..i * 5 * hw + 3 * hw].copy_from_slice(&x[i * 3 * hw..(i + 1) * 3 * hw]);
        cat[i * 5 * hw + 3 * hw..(i + 1) * 5 * hw].copy_from_slice(&z[i * 2 * hw..(i + 1) * 2 * hw]);
    }
    let cb = zeros(&gpu, cat.len());
    run(
        &gpu,
        vec![
            copy_channels(&gpu, slice5(n, 3, hw, 0), &t32(&xb), &t32(&cb)).unwrap(),
            copy_channels(&gpu, slice5(n, 2, hw, 3), &t32(&zb), &t32(&cb)).unwrap(),
        ],
    );
    assert_close("concat", &gpu.read::<f32>(&cb, 0, cat.len()).unwrap(), &cat, 0.0, 0.0);
    // The same concat in one dispatch.
    let cb1 = zeros(&gpu, cat.len());
    run(
        &gpu,
        vec![concat_channels(&gpu, Concat { n, ca: 3, cb: 2, hw }, &t32(&xb), &t32(&zb), &t32(&cb1)).unwrap()],
    );
    assert_close(
        "concat one dispatch",
        &gpu.read::<f32>(&cb1, 0, cat.len()).unwrap(),
        &cat,
        0.0,
        0.0,
    );
}

/// The one-dispatch concat's adjoint: both slices, every accumulate pairing,
/// odd channel counts and a pixel count off the workgroup size.
#[test]
fn split_channels_is_the_concat_adjoint() {
    let gpu = gpu();
    let mut r = rng(37);
    let (n, ca, cb, hw) = (3, 5, 2, 37);
    let ct = ca + cb;
    let dy = randn(&mut r, n * ct * hw);
    let (pa, pb) = (randn(&mut r, n * ca * hw), randn(&mut r, n * cb * hw));
    let dyb = buf(&gpu, &dy);
    for (acc_a, acc_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let (da, db) = (buf(&gpu, &pa), buf(&gpu, &pb));
        run(
            &gpu,
            vec![split_channels(
                &gpu,
                Concat { n, ca, cb, hw },
                &t32(&dyb),
                (&t32(&da), &t32(&db)),
                (acc_a, acc_b),
            )
            .unwrap()],
        );
        let (mut wa, mut wb) = (vec![0f32; pa.len()], vec![0f32; pb.len()]);
        for i in 0..n {
            for c in 0..ct {
                for p in 0..hw {
                    let v = dy[(i * ct + c) * hw + p];
                    if c < ca {
                        let j = (i * ca + c) * hw + p;
                        wa[j] = v + if acc_a { pa[j] } else { 0.0 };
                    } else {
                        let j = (i * cb + c - ca) * hw + p;
                        wb[j] = v + if acc_b { pb[j] } else { 0.0 };
                    }
                }
            }
        }
        let label = format!("split acc ({acc_a}, {acc_b})");
        assert_close(&label, &gpu.read::<f32>(&da, 0, pa.len()).unwrap(), &wa, 0.0, 0.0);
        assert_close(&label, &gpu.read::<f32>(&db, 0, pb.len()).unwrap(), &wb, 0.0, 0.0);
    }
}

// ---------------------------------------------------------------- timestep

#[test]
fn timestep_embedding_matches_f64_of_f32_arguments() {
    let gpu = gpu();
    let t = [0.0f32, 3.0, 517.0, 999.0, 250.5];
    for (dim, cos_first, shift) in [(32usize, true, 0.0), (33, false, 1.0), (128, true, 0.0)] {
        let half = dim / 2;
        let freqs = timestep_freqs(half, half as f64 - shift);
        let mut want = vec![0f32; t.len() * dim];
        for (n, &tn) in t.iter().enumerate() {
            for j in 0..half {
                // The argument is an f32 product upstream; only sin/cos are exact here.
                let a = (tn * freqs[j]) as f64;
                let (first, second) = if cos_first {
                    (a.cos(), a.sin())
                } else {
                    (a.sin(), a.cos())
                };
                want[n * dim + j] = first as f32;
                want[n * dim + half + j] = second as f32;
            }
        }
        let (tb, fb, yb) = (buf(&gpu, &t), buf(&gpu, &freqs), zeros(&gpu, want.len()));
        let s = TimestepShape {
            n: t.len(),
            dim,
            cos_first,
        };
        let (tt, ft) = (Tensor::wrap(tb, &[t.len()]), Tensor::wrap(fb, &[half]));
        let yt = Tensor::wrap(yb.clone(), &[want.len()]);
        run(&gpu, vec![timestep_embedding(&gpu, &s, &tt, &ft, &yt).unwrap()]);
        let got = gpu.read::<f32>(&yb, 0, want.len()).unwrap();
        assert_close(&format!("timestep dim {dim}"), &got, &want, 5e-7, 0.0);
    }
}

#[test]
fn timestep_freqs_follow_torch_f32() {
    // guided-diffusion: exp(-ln(10000) * i / half) over f32 arange.
    let f = timestep_freqs(64, 64.0);
    assert_eq!(f[0], 1.0);
    let c = -(10000f64.ln()) as f32;
    for (i, &v) in f.iter().enumerate() {
        let want = (((c * i as f32) / 64.0) as f64).exp();
        assert!((v as f64 - want).abs() <= want * 1e-7, "freq {i}: {v} vs {want}");
    }
}

// ================================================================ backward kernels
//
// Each backward kernel: a plain f64 CPU reference, checked by central finite
// differences of the f64 forward reference (L = <g, f(x)> along a random
// direction), then the GPU kernel against that reference, overwriting and
// accumulating.

use tweedie::kernels::attention::{attention_bwd, attention_bwd_tiled};
use tweedie::kernels::conv2d::conv2d_bwd_data;
use tweedie::kernels::groupnorm::{group_norm_bwd, group_norm_bwd_onepass};
use tweedie::kernels::resample::{avg_pool2x2_bwd, slice_channels, upsample_nearest2x_bwd};

/// Central difference of <g, f(x)> along v vs <grad, v>.
#[track_caller]
fn check_fd(what: &str, f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], g: &[f64], grad: &[f64], v: &[f64]) {
    let h = 1e-5;
    let xp: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + h * b).collect();
    let xm: Vec<f64> = x.iter().zip(v).map(|(a, b)| a - h * b).collect();
    let fd = (dot(g, &f(&xp)) - dot(g, &f(&xm))) / (2.0 * h);
    let an = dot(grad, v);
    assert!(
        (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
        "{what}: finite difference {fd} vs analytic {an}"
    );
}

/// A backward kernel's dx buffer and what it held before the run, which an
/// accumulating kernel adds to.
struct Dx<'a> {
    buf: &'a wgpu::Buffer,
    prior: &'a [f32],
}

impl Dx<'_> {
    /// Asserts dx = grad (+ prior when accumulating) within `tol` (absolute
    /// and relative), then puts the prior back for the next run.
    #[track_caller]
    fn check(&self, gpu: &Gpu, what: &str, grad: impl Iterator<Item = f64>, accumulate: bool, tol: f32) {
        let got = gpu.read::<f32>(self.buf, 0, self.prior.len()).unwrap();
        let want: Vec<f32> = grad
            .zip(self.prior)
            .map(|(gv, p)| (gv + if accumulate { *p as f64 } else { 0.0 }) as f32)
            .collect();
        assert_close(what, &got, &want, tol, tol);
        gpu.queue.write_buffer(self.buf, 0, bytemuck::cast_slice(self.prior));
    }
}

#[test]
fn conv2d_bwd_data_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut r = rng(21);
    for s in [
        conv_shape([2, 5, 7, 9, 11, 3, 1], [1; 4]),
        conv_shape([2, 13, 5, 3, 70, 1, 1], [0; 4]),
        conv_shape([2, 6, 9, 7, 5, 3, 2], [1; 4]),
        conv_shape([1, 3, 8, 6, 4, 3, 2], [0, 0, 1, 1]),
        conv_shape([2, 67, 4, 4, 3, 3, 1], [1; 4]),
    ] {
        let (ho, wo) = s.out_hw();
        let x = f64s(&randn(&mut r, s.n * s.cin * s.h * s.w));
        let w = f64s(&randn(&mut r, s.cout * s.cin * s.ks * s.ks));
        let g = f64s(&randn(&mut r, s.n * s.cout * ho * wo));
        let v = f64s(&randn(&mut r, x.len()));
        let grad = conv_bwd_f64(&s, &g, &w);
        check_fd(&format!("conv {s:?}"), &|x| conv_f64(&s, x, &w), &x, &g, &grad, &v);

        let tiles = [ConvTiles::WIDE, ConvTiles::LARGE, ConvTiles::MEDIUM, ConvTiles::SMALL][s.cin % 4];
        let kernel = ConvKernel::simt(tiles).split(1 + (s.cout % 3) as u32);
        let scratch = zeros(
            &gpu,
            (kernel.scratch_bytes(s.cin, s.n * s.h * s.w, s.cout * s.ks * s.ks) as usize / 4).max(1),
        );
        let scale = 0.75f32;
        let prior = randn(&mut r, x.len());
        let (gb, wb, dxb) = (buf(&gpu, &f32s(&g)), buf(&gpu, &f32s(&w)), buf(&gpu, &prior));
        let dx = Dx {
            buf: &dxb,
            prior: &prior,
        };
        for accumulate in [true, false] {
            if !accumulate {
                gpu.queue.write_buffer(&dxb, 0, bytemuck::cast_slice(&prior));
            }
            let op = ConvBackward {
                dy: &t32(&gb),
                w: (&wb, 0),
                scale,
                accumulate,
                dx: &t32(&dxb),
                scratch: Some(&scratch),
            };
            let d = conv2d_bwd_data(&gpu, &kernel, &s, &op).unwrap();
            run(&gpu, d);
            let what = format!("conv2d_bwd_data {s:?} acc {accumulate} {kernel:?}");
            let scaled = grad.iter().map(|gv| scale as f64 * gv);
            dx.check(&gpu, &what, scaled, accumulate, 1e-4);
        }
    }
}

#[test]
fn group_norm_bwd_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut r = rng(23);
    for (s, silu_on, with_ss) in [
        (gn_shape(2, 6, 35, 3, 1e-5), false, false),
        (gn_shape(2, 64, 9, 32, 1e-6), true, false),
        (gn_shape(2, 96, 7, 32, 1e-5), true, true),
        (gn_shape(1, 4, 300, 2, 1e-5), false, true),
        // Groups longer than one statistics chunk (two full chunks and a partial one).
        (gn_shape(2, 4, CHUNK + 41, 2, 1e-5), true, true),
    ] {
        let c = GnCase {
            s,
            gamma: f64s(&randn(&mut r, s.c)),
            beta: f64s(&randn(&mut r, s.c)),
            ss: with_ss.then(|| f64s(&randn(&mut r, s.n * 2 * s.c))),
            silu: silu_on,
        };
        let x: Vec<f64> = randn(&mut r, s.n * s.c * s.hw)
            .iter()
            .map(|&v| 2.0 * v as f64 + 1.0)
            .collect();
        let g = f64s(&randn(&mut r, x.len()));
        let v = f64s(&randn(&mut r, x.len()));
        let grad = gn_bwd_f64(&c, &x, &g);
        check_fd(&format!("group_norm {s:?}"), &|x| gn_f64(&c, x), &x, &g, &grad, &v);

        // GPU: forward (for the saved statistics), then backward.
        let x32 = f32s(&x);
        let mut arena = vec![0f32; 1];
        arena.extend(f32s(&c.gamma));
        arena.extend(f32s(&c.beta));
        let ssv = c.ss.as_ref().map(|e| f32s(e)).unwrap_or(vec![0.0]);
        let prior = randn(&mut r, x.len());
        let (xb, ab, sb, yb, stats, gb, dxb, dummy) = (
            buf(&gpu, &x32),
            buf(&gpu, &arena),
            buf(&gpu, &ssv),
            zeros(&gpu, x.len()),
            zeros(&gpu, s.n * s.groups * 2),
            buf(&gpu, &f32s(&g)),
            buf(&gpu, &prior),
            zeros(&gpu, 4),
        );
        let sbt = Tensor::wrap(sb, &[ssv.len()]);
        let a = affine(&ab, 1, &s, with_ss.then_some(&sbt), silu_on);
        let (xt, stt, yt, gt, dxt) = (
            Tensor::wrap(xb, &[x.len()]),
            Tensor::wrap(stats, &[s.n * s.groups * 2]),
            Tensor::wrap(yb, &[x.len()]),
            Tensor::wrap(gb, &[x.len()]),
            Tensor::wrap(dxb.clone(), &[x.len()]),
        );
        let fwd = group_norm(&gpu, &s, &xt, &stt, &a, &yt, &dummy).unwrap();
        run(&gpu, fwd.into());
        let dx = Dx {
            buf: &dxb,
            prior: &prior,
        };
        for (accumulate, onepass) in [(true, false), (false, false), (true, true), (false, true)] {
            let g = GroupNormGrad {
                dy: &gt,
                dx: &dxt,
                accumulate,
            };
            let d = if onepass {
                vec![group_norm_bwd_onepass(&gpu, &s, &xt, &stt, &a, &g, &dummy).unwrap()]
            } else {
                group_norm_bwd(&gpu, &s, &xt, &stt, &a, &g, &dummy).unwrap().into()
            };
            run(&gpu, d);
            let what = format!("group_norm_bwd {s:?} acc {accumulate} one-pass {onepass}");
            dx.check(&gpu, &what, grad.iter().copied(), accumulate, 1e-4);
        }
    }
}

#[test]
fn attention_bwd_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut r = rng(29);
    for (n, heads, ch, t, split) in [(1, 1, 9, 5, false), (1, 2, 70, 6, true), (2, 2, 16, 33, true)]
        .into_iter()
        .chain(ATTENTION_CASES)
    {
        let s = attention_shape(n, heads, ch, t, split);
        let qkv = f64s(&randn(&mut r, n * 3 * heads * ch * t));
        let g = f64s(&randn(&mut r, n * heads * ch * t));
        let v = f64s(&randn(&mut r, qkv.len()));
        let grad = attention_bwd_f64(&s, &qkv, &g);
        check_fd(
            &format!("attention {s:?}"),
            &|q| attention_f64(&s, q),
            &qkv,
            &g,
            &grad,
            &v,
        );

        let prior = randn(&mut r, qkv.len());
        for tiles in attention_tilings(&gpu, &s) {
            let (qb, yb, lse, gb, dsum, dq) = (
                buf(&gpu, &f32s(&qkv)),
                zeros(&gpu, g.len()),
                zeros(&gpu, n * heads * t),
                buf(&gpu, &f32s(&g)),
                zeros(&gpu, n * heads * t),
                buf(&gpu, &prior),
            );
            let ts = [&qb, &yb, &lse, &gb, &dsum, &dq].map(t32);
            let d = attention_tiled(&gpu, &s, &tiles, &ts[0], &ts[1], &ts[2]).unwrap();
            run(&gpu, vec![d]);
            let dx = Dx {
                buf: &dq,
                prior: &prior,
            };
            for accumulate in [true, false] {
                let bwd = |acc| attention_bwd_tiled(&gpu, &s, &tiles, &attention_grads(&ts, acc));
                run(&gpu, bwd(accumulate).unwrap().into());
                let what = format!("attention_bwd {s:?} {tiles:?} acc {accumulate}");
                dx.check(&gpu, &what, grad.iter().copied(), accumulate, 1e-4);
            }
        }
    }
}

/// The public entry points pick the device's tiles and keep the dispatch
/// counts the U-Net plans assume: one forward dispatch, three backward.
#[test]
fn attention_entry_points_use_the_device_tiles() {
    let gpu = gpu();
    let mut r = rng(31);
    let s = attention_shape(2, 3, 33, 37, false);
    let qkv = randn(&mut r, 2 * 3 * 3 * 33 * 37);
    let dy = randn(&mut r, 2 * 3 * 33 * 37);
    let out = |plain: bool| {
        let (qb, yb, lse, gb, dsum, dq) = (
            buf(&gpu, &qkv),
            zeros(&gpu, dy.len()),
            zeros(&gpu, 2 * 3 * 37),
            buf(&gpu, &dy),
            zeros(&gpu, 2 * 3 * 37),
            zeros(&gpu, qkv.len()),
        );
        let tiles = s.tiles(&gpu).unwrap();
        let ts = [&qb, &yb, &lse, &gb, &dsum, &dq].map(t32);
        let g = attention_grads(&ts, false);
        let fwd = if plain {
            attention(&gpu, &s, g.qkv, g.y, g.lse).unwrap()
        } else {
            attention_tiled(&gpu, &s, &tiles, g.qkv, g.y, g.lse).unwrap()
        };
        let bwd = if plain {
            attention_bwd(&gpu, &s, &g).unwrap()
        } else {
            attention_bwd_tiled(&gpu, &s, &tiles, &g).unwrap()
        };
        run(&gpu, vec![fwd]);
        run(&gpu, bwd.into());
        let y = gpu.read::<f32>(&yb, 0, dy.len()).unwrap();
        (y, gpu.read::<f32>(&dq, 0, qkv.len()).unwrap())
    };
    let (plain, tiled) = (out(true), out(false));
    assert_eq!(plain, tiled);
    assert!(plain.1.iter().any(|v| *v != 0.0));
    // Tiles that do not suit the heads are refused, not run.
    let bad = AttentionTiles { hd: 64, bk: 16, bs: 8 };
    let [qb, yb, lse] = [buf(&gpu, &qkv), zeros(&gpu, dy.len()), zeros(&gpu, 2 * 3 * 37)].map(|b| t32(&b));
    assert!(attention_tiled(&gpu, &s, &bad, &qb, &yb, &lse).is_err());
    let mut odd = s.tiles(&gpu).unwrap();
    odd.bk = 6;
    assert!(attention_tiled(&gpu, &s, &odd, &qb, &yb, &lse).is_err());
}

/// The resampling adjoints: <A x, y> = <x, A^T y> with the forward kernels,
/// and A^T against a CPU scatter, overwriting and accumulating.
#[test]
fn resample_adjoints_match_cpu() {
    let gpu = gpu();
    let mut r = rng(31);
    let (n, c, h, w) = (2, 3, 5, 7);
    let x = randn(&mut r, n * c * h * w);
    let xb = buf(&gpu, &x);
    let prior = randn(&mut r, x.len());
    let dxb = buf(&gpu, &prior);
    let dx = Dx {
        buf: &dxb,
        prior: &prior,
    };
    type Fwd<'a> = dyn Fn(&wgpu::Buffer, &wgpu::Buffer) -> Dispatch + 'a;
    type Bwd<'a> = dyn Fn(&wgpu::Buffer, &wgpu::Buffer, bool) -> Dispatch + 'a;
    type Cpu<'a> = dyn Fn(&[f32]) -> Vec<f64> + 'a;
    type Case<'a> = (&'a str, usize, Box<Fwd<'a>>, Box<Bwd<'a>>, Box<Cpu<'a>>);
    let g = &gpu;
    let cases: Vec<Case<'_>> = vec![
        (
            "upsample",
            n * c * 4 * h * w,
            Box::new(move |a, b| upsample_nearest2x(g, Nchw { n, c, h, w }, &t32(a), &t32(b)).unwrap()),
            Box::new(move |a, b, acc| upsample_nearest2x_bwd(g, Nchw { n, c, h, w }, &t32(a), &t32(b), acc).unwrap()),
            Box::new(move |dy| {
                let mut dx = vec![0f64; n * c * h * w];
                for nc in 0..n * c {
                    for oy in 0..2 * h {
                        for ox in 0..2 * w {
                            dx[(nc * h + oy / 2) * w + ox / 2] += dy[(nc * 2 * h + oy) * 2 * w + ox] as f64;
                        }
                    }
                }
                dx
            }),
        ),
        (
            "avg_pool",
            n * c * (h / 2) * (w / 2),
            Box::new(move |a, b| avg_pool2x2(g, Nchw { n, c, h, w }, &t32(a), &t32(b)).unwrap()),
            Box::new(move |a, b, acc| avg_pool2x2_bwd(g, Nchw { n, c, h, w }, &t32(a), &t32(b), acc).unwrap()),
            Box::new(move |dy| {
                let (ho, wo) = (h / 2, w / 2);
                let mut dx = vec![0f64; n * c * h * w];
                for nc in 0..n * c {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            for (dy_, dx_) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                                dx[(nc * h + 2 * oy + dy_) * w + 2 * ox + dx_] +=
                                    0.25 * dy[(nc * ho + oy) * wo + ox] as f64;
                            }
                        }
                    }
                }
                dx
            }),
        ),
        (
            "concat slice",
            n * 5 * h * w,
            Box::new(move |a, b| copy_channels(g, slice5(n, c, h * w, 2), &t32(a), &t32(b)).unwrap()),
            Box::new(move |a, b, acc| slice_channels(g, slice5(n, c, h * w, 2), &t32(a), &t32(b), acc).unwrap()),
            Box::new(move |dy| {
                let hw = h * w;
                let mut dx = vec![0f64; n * c * hw];
                for i in 0..n {
                    for ch in 0..c {
                        for p in 0..hw {
                            dx[(i * c + ch) * hw + p] = dy[(i * 5 + 2 + ch) * hw + p] as f64;
                        }
                    }
                }
                dx
            }),
        ),
    ];
    for (name, ny, fwd, bwd, cpu) in cases {
        let yv = randn(&mut r, ny);
        let yb = buf(&gpu, &yv);
        let ax = zeros(&gpu, ny);
        run(&gpu, vec![fwd(&xb, &ax)]);
        let ax = gpu.read::<f32>(&ax, 0, ny).unwrap();
        let want = cpu(&yv);
        let lhs = dot(&f64s(&ax), &f64s(&yv));
        let rhs = dot(&f64s(&x), &want);
        assert!(
            (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
            "{name}: <Ax, y> = {lhs} vs <x, A^T y> = {rhs}"
        );
        for accumulate in [true, false] {
            gpu.queue.write_buffer(&dxb, 0, bytemuck::cast_slice(&prior));
            run(&gpu, vec![bwd(&yb, &dxb, accumulate)]);
            dx.check(
                &gpu,
                &format!("{name} adjoint acc {accumulate}"),
                want.iter().copied(),
                accumulate,
                1e-5,
            );
        }
    }
}
