//! Elementwise, reduction and RNG kernels against plain-Rust references on
//! awkward sizes (not multiples of the workgroup, batch > 1).

mod common;
use common::*;

use tweedie::gpu::Plan;
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::kernels::random::Noise;
use tweedie::kernels::reduce::BatchedDot;
use tweedie::Tensor;

const SIZES: &[usize] = &[1, 7, 255, 257, 1000, 4099];

#[test]
fn elementwise_ops_match_cpu() {
    let gpu = gpu();
    let mut r = rng(1);
    for &n in SIZES {
        let x = randn(&mut r, n);
        let y0 = randn(&mut r, n);
        type Case = (Op, f32, f32, Box<dyn Fn(f32, f32) -> f32>);
        let cases: [Case; 6] = [
            (Op::Axpby, 0.7, -1.3, Box::new(|x, y| 0.7 * x - 1.3 * y)),
            (Op::Affine, 2.0, 0.5, Box::new(|x, _| 2.0 * x + 0.5)),
            (Op::Clamp, -0.5, 0.25, Box::new(|x, _| x.clamp(-0.5, 0.25))),
            (Op::Mul, 0.0, 0.0, Box::new(|x, y| x * y)),
            (Op::Abs, 0.0, 0.0, Box::new(|x, _| x.abs())),
            (
                Op::SignMul,
                0.0,
                0.0,
                Box::new(|x, y| if x == 0.0 { 0.0 } else { x.signum() * y }),
            ),
        ];
        for (op, a, b, f) in cases {
            let tx = Tensor::from_slice(&gpu, "x", &[n], &x).unwrap();
            let ty = Tensor::from_slice(&gpu, "y", &[n], &y0).unwrap();
            let k = Elementwise::new(&gpu, op, &tx, &ty, a, b).unwrap();
            let mut plan = Plan::new();
            plan.push(k.dispatch.clone());
            plan.run(&gpu).unwrap();
            let want: Vec<f32> = x.iter().zip(&y0).map(|(&x, &y)| f(x, y)).collect();
            assert_close(&format!("{op:?} n={n}"), &ty.read(&gpu).unwrap(), &want, 1e-6, 1e-6);
        }
    }
}

#[test]
fn elementwise_set_changes_scalars_without_rebuild() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, "x", &[5], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let y = Tensor::zeros(&gpu, "y", &[5]).unwrap();
    let k = Elementwise::new(&gpu, Op::Affine, &x, &y, 1.0, 0.0).unwrap();
    k.set(&gpu, -2.0, 1.0);
    let mut plan = Plan::new();
    plan.push(k.dispatch.clone());
    plan.run(&gpu).unwrap();
    assert_close(
        "affine after set",
        &y.read(&gpu).unwrap(),
        &[-1.0, -3.0, -5.0, -7.0, -9.0],
        0.0,
        0.0,
    );
}

#[test]
fn batched_dot_and_norm_match_cpu() {
    let gpu = gpu();
    let mut r = rng(2);
    for &(batch, per) in &[
        (1usize, 1usize),
        (3, 7),
        (2, 1023),
        (5, 1025),
        (4, 3 * 33 * 31),
        (1, 70_001),
    ] {
        let x = randn(&mut r, batch * per);
        let y = randn(&mut r, batch * per);
        let tx = Tensor::from_slice(&gpu, "x", &[batch, per], &x).unwrap();
        let ty = Tensor::from_slice(&gpu, "y", &[batch, per], &y).unwrap();
        let dot = BatchedDot::new(&gpu, &tx, &ty, batch, false).unwrap();
        let norm = BatchedDot::new(&gpu, &tx, &tx, batch, true).unwrap();
        dot.plan.run(&gpu).unwrap();
        norm.plan.run(&gpu).unwrap();
        let want_dot: Vec<f32> = (0..batch)
            .map(|n| dot64(&x[n * per..(n + 1) * per], &y[n * per..(n + 1) * per]) as f32)
            .collect();
        let want_norm: Vec<f32> = (0..batch).map(|n| norm64(&x[n * per..(n + 1) * per]) as f32).collect();
        // f32 accumulation over `per` terms: error grows like sqrt(per) eps |x||y|.
        let tol = 1e-5 * (per as f32).sqrt();
        let scale = (per as f32).sqrt();
        assert_close(
            &format!("dot {batch}x{per}"),
            &dot.out.read(&gpu).unwrap(),
            &want_dot,
            tol * scale,
            1e-5,
        );
        assert_close(
            &format!("norm {batch}x{per}"),
            &norm.out.read(&gpu).unwrap(),
            &want_norm,
            tol,
            1e-5,
        );
    }
}

// ---- CPU reference of the RNG: Philox4x32-10 + Box-Muller, as random.wgsl ----

fn philox(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = 0xD2511F53u64 * ctr[0] as u64;
        let p1 = 0xCD9E8D57u64 * ctr[2] as u64;
        ctr = [
            (p1 >> 32) as u32 ^ ctr[1] ^ key[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ ctr[3] ^ key[1],
            p0 as u32,
        ];
        key = [key[0].wrapping_add(0x9E3779B9), key[1].wrapping_add(0xBB67AE85)];
    }
    ctr
}

fn cpu_normal(n: usize, seed: u64, stream: u32, mean: f32, std: f32) -> Vec<f32> {
    let unit = |u: u32| ((u >> 8) as f32 + 1.0) * (1.0 / 16777216.0);
    let mut out = Vec::with_capacity(n);
    for k in 0..n.div_ceil(4) {
        let r = philox([k as u32, stream, 0, 0], [seed as u32, (seed >> 32) as u32]);
        let r1 = (-2.0 * unit(r[0]).ln()).sqrt();
        let r2 = (-2.0 * unit(r[2]).ln()).sqrt();
        let t1 = std::f32::consts::TAU * unit(r[1]);
        let t2 = std::f32::consts::TAU * unit(r[3]);
        for z in [r1 * t1.cos(), r1 * t1.sin(), r2 * t2.cos(), r2 * t2.sin()] {
            if out.len() < n {
                out.push(mean + std * z);
            }
        }
    }
    out
}

#[test]
fn philox_known_answer() {
    // Random123's published known-answer vector for philox4x32-10.
    assert_eq!(
        philox([0, 0, 0, 0], [0, 0]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
}

#[test]
fn noise_matches_cpu_reference_and_is_gaussian() {
    let gpu = gpu();
    for &(n, seed, stream) in &[
        (1usize, 0u64, 0u32),
        (13, 42, 3),
        (4099, 0x1234_5678_9abc, 7),
        (100_003, 9, 1),
    ] {
        let t = Tensor::zeros(&gpu, "noise", &[n]).unwrap();
        let noise = Noise::new(&gpu, &t, seed, 0, 0.5, 2.0).unwrap();
        noise.set_stream(&gpu, stream);
        let mut plan = Plan::new();
        plan.push(noise.dispatch.clone());
        plan.run(&gpu).unwrap();
        let got = t.read(&gpu).unwrap();
        // Same bits in, so only transcendental rounding differs.
        assert_close(
            &format!("noise n={n}"),
            &got,
            &cpu_normal(n, seed, stream, 0.5, 2.0),
            2e-4,
            1e-4,
        );
        if n > 50_000 {
            let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            // 5 standard errors.
            assert!((mean - 0.5).abs() < 5.0 * 2.0 / (n as f64).sqrt(), "mean {mean}");
            assert!((var - 4.0).abs() < 5.0 * 4.0 * (2.0 / n as f64).sqrt(), "var {var}");
        }
    }
    // Different streams give different noise.
    assert_ne!(cpu_normal(8, 1, 0, 0.0, 1.0), cpu_normal(8, 1, 1, 0.0, 1.0));
}
