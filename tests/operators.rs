//! Measurement operators: exact adjoints (<A u, v> = <u, A^T v>), SVD forms
//! (U S V^T = A, V^T V = I), GPU forward against plain-Rust references (direct
//! reflect-padded convolution, average pooling, imresize's bicubic), the task
//! factory's errors, and the `operator` / `degrade` commands.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::Rng;

use tweedie::gpu::Plan;
use tweedie::io::{read_image, write_tensors, TensorFile};
use tweedie::operators::sr::SrFilter;
use tweedie::operators::task::{build_linear, resolve, resolve_saved, Resolved, Task, TaskSpec};
use tweedie::operators::{LinearOperator, Operator, OperatorError};
use tweedie::{Gpu, HostTensor, Tensor};

// ---------- CPU references ----------

/// torch ReflectionPad2d index: -1 -> 1, n -> n - 2.
fn refl(m: i64, n: i64) -> usize {
    let mut r = m.abs();
    if r > n - 1 {
        r = 2 * (n - 1) - r;
    }
    assert!(r >= 0 && r < n, "one reflection");
    r as usize
}

/// A row-major [kh, kw] kernel `k` whose tap (rh, rw) sits on the output pixel.
#[derive(Clone, Copy)]
struct CpuTaps<'a> {
    k: &'a [f64],
    kh: usize,
    kw: usize,
    rh: usize,
    rw: usize,
}

/// ReflectionPad2d(k // 2) then conv2d (correlation), depthwise, planes of [h, w].
fn conv_reflect_cpu(x: &[f32], h: usize, w: usize, k: &[f64], kh: usize, kw: usize) -> Vec<f32> {
    let taps = CpuTaps {
        k,
        kh,
        kw,
        rh: kh / 2,
        rw: kw / 2,
    };
    conv_reflect_at_cpu(x, h, w, taps)
}

/// The same with any tap on the output pixel.
fn conv_reflect_at_cpu(x: &[f32], h: usize, w: usize, taps: CpuTaps<'_>) -> Vec<f32> {
    let CpuTaps { k, kh, kw, rh, rw } = taps;
    let (rh, rw) = (rh as i64, rw as i64);
    let planes = x.len() / (h * w);
    let mut y = vec![0f32; x.len()];
    for p in 0..planes {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for i in 0..h {
            for j in 0..w {
                let mut acc = 0f64;
                for a in 0..kh {
                    let ii = refl(i as i64 + a as i64 - rh, h as i64);
                    for b in 0..kw {
                        let jj = refl(j as i64 + b as i64 - rw, w as i64);
                        acc += k[a * kw + b] * xp[ii * w + jj] as f64;
                    }
                }
                y[p * h * w + i * w + j] = acc as f32;
            }
        }
    }
    y
}

/// The adjoint of `conv_reflect_at_cpu` as a scatter (the GPU gathers).
fn conv_reflect_adj_cpu(y: &[f32], h: usize, w: usize, taps: CpuTaps<'_>) -> Vec<f32> {
    let CpuTaps { k, kh, kw, rh, rw } = taps;
    let planes = y.len() / (h * w);
    let mut x = vec![0f64; y.len()];
    for p in 0..planes {
        for i in 0..h {
            for j in 0..w {
                for a in 0..kh {
                    let ii = refl(i as i64 + a as i64 - rh as i64, h as i64);
                    for b in 0..kw {
                        let jj = refl(j as i64 + b as i64 - rw as i64, w as i64);
                        x[p * h * w + ii * w + jj] += k[a * kw + b] * y[p * h * w + i * w + j] as f64;
                    }
                }
            }
        }
    }
    x.iter().map(|&v| v as f32).collect()
}

/// torch avg_pool2d(f): mean over f x f blocks, remainder dropped.
fn avg_pool_cpu(x: &[f32], h: usize, w: usize, f: usize) -> Vec<f32> {
    let (ho, wo) = (h / f, w / f);
    let planes = x.len() / (h * w);
    let mut y = Vec::with_capacity(planes * ho * wo);
    for p in 0..planes {
        for i in 0..ho {
            for j in 0..wo {
                let mut s = 0f64;
                for a in 0..f {
                    for b in 0..f {
                        s += x[p * h * w + (i * f + a) * w + j * f + b] as f64;
                    }
                }
                y.push((s / (f * f) as f64) as f32);
            }
        }
    }
    y
}

fn keys_cubic(x: f64) -> f64 {
    let a = -0.5;
    let t = x.abs();
    if t <= 1.0 {
        (a + 2.0) * t * t * t - (a + 3.0) * t * t + 1.0
    } else if t < 2.0 {
        a * t * t * t - 5.0 * a * t * t + 8.0 * a * t - 4.0 * a
    } else {
        0.0
    }
}

/// MATLAB imresize(x, 1/f, 'bicubic') along one axis for n divisible by f:
/// output o sits at input coordinate (o + 0.5) f - 0.5; weights cubic(d / f),
/// normalised; symmetric boundary (-1 -> 0).
fn imresize_weights(n: usize, f: usize) -> Vec<Vec<(usize, f64)>> {
    (0..n / f)
        .map(|o| {
            let u = (o as f64 + 0.5) * f as f64 - 0.5;
            let lo = (u - 2.0 * f as f64).floor() as i64 - 1;
            let hi = (u + 2.0 * f as f64).ceil() as i64 + 1;
            let mut taps: Vec<(usize, f64)> = Vec::new();
            for j in lo..=hi {
                let wgt = keys_cubic((u - j as f64) / f as f64);
                if wgt != 0.0 {
                    let m = j.rem_euclid(2 * n as i64);
                    let src = if m >= n as i64 { 2 * n as i64 - 1 - m } else { m };
                    taps.push((src as usize, wgt));
                }
            }
            let total: f64 = taps.iter().map(|t| t.1).sum();
            taps.iter().map(|&(j, wgt)| (j, wgt / total)).collect()
        })
        .collect()
}

fn bicubic_cpu(x: &[f32], h: usize, w: usize, f: usize) -> Vec<f32> {
    let (wh, ww) = (imresize_weights(h, f), imresize_weights(w, f));
    let planes = x.len() / (h * w);
    let mut y = Vec::new();
    for p in 0..planes {
        for row in &wh {
            for col in &ww {
                let mut acc = 0f64;
                for &(i, a) in row {
                    for &(j, b) in col {
                        acc += a * b * x[p * h * w + i * w + j] as f64;
                    }
                }
                y.push(acc as f32);
            }
        }
    }
    y
}

/// DPS's Gaussian kernel: delta through scipy gaussian_filter(sigma), truncate 4.
fn dps_gaussian_2d(size: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut g: Vec<f64> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let t: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= t);
    let c = (size / 2) as i64;
    let mut k1 = vec![0.0; size];
    for d in -radius..=radius {
        k1[(c + d) as usize] = g[(d + radius) as usize];
    }
    k1.iter().flat_map(|&a| k1.iter().map(move |&b| a * b)).collect()
}

// ---------- GPU helpers ----------

fn run_plan(gpu: &Gpu, plan: Plan) {
    plan.run(gpu).unwrap();
}

fn shape4(n: usize, s: [usize; 3]) -> Vec<usize> {
    vec![n, s[0], s[1], s[2]]
}

fn forward(gpu: &Gpu, op: &dyn Operator, n: usize, x: &[f32]) -> Vec<f32> {
    let xt = Tensor::from_slice(gpu, "x", &shape4(n, op.in_shape()), x).unwrap();
    let yt = Tensor::zeros(gpu, "y", &shape4(n, op.out_shape())).unwrap();
    run_plan(gpu, op.forward(gpu, &xt, &yt).unwrap());
    yt.read(gpu).unwrap()
}

fn adjoint(gpu: &Gpu, op: &dyn LinearOperator, n: usize, y: &[f32]) -> Vec<f32> {
    let yt = Tensor::from_slice(gpu, "y", &shape4(n, op.out_shape()), y).unwrap();
    let xt = Tensor::zeros(gpu, "x", &shape4(n, op.in_shape())).unwrap();
    run_plan(gpu, op.adjoint(gpu, &yt, &xt).unwrap());
    xt.read(gpu).unwrap()
}

fn numel(s: [usize; 3]) -> usize {
    s.iter().product()
}

fn spec(task: &str) -> TaskSpec {
    TaskSpec::new(task.parse().unwrap_or_else(|e| panic!("{e}")))
}

/// The operators under test on small, awkward shapes (odd, non-square, a
/// kernel reaching nearly across the image).
fn cases() -> Vec<(TaskSpec, usize, [usize; 3])> {
    let k = |task: &str, size: usize| TaskSpec {
        kernel_size: Some(size),
        ..spec(task)
    };
    // A dense A [7, 2*3*5] (wide: m < d) through the factory's --matrix file.
    let dense_path = std::env::temp_dir().join(format!("tweedie-ops-{}-dense.safetensors", std::process::id()));
    let a = HostTensor::new(vec![7, 30], randn(&mut rng(77), 7 * 30));
    write_tensors(&dense_path, &[("A", &a)]).unwrap();
    vec![
        (
            TaskSpec {
                matrix: Some(dense_path),
                ..spec("dense")
            },
            3,
            [2, 3, 5],
        ),
        (spec("denoise"), 2, [3, 17, 13]),
        (
            TaskSpec {
                ratio: Some(0.4),
                ..spec("inpaint-random")
            },
            2,
            [3, 17, 13],
        ),
        (spec("inpaint-random"), 1, [1, 9, 14]),
        (
            TaskSpec {
                box_side: Some(6),
                ..spec("inpaint-box")
            },
            2,
            [3, 17, 13],
        ),
        (
            TaskSpec {
                kernel_size: Some(9),
                kernel_sigma: Some(1.5),
                ..spec("deblur-gaussian")
            },
            2,
            [3, 17, 13],
        ),
        (spec("deblur-gaussian"), 2, [3, 33, 35]),
        (k("deblur-uniform", 9), 2, [3, 17, 13]),
        (k("deblur-uniform", 15), 1, [2, 8, 9]),
        (
            TaskSpec {
                kernel_size: Some(9),
                intensity: Some(0.5),
                ..spec("deblur-motion")
            },
            2,
            [3, 17, 13],
        ),
        (k("deblur-motion", 15), 1, [1, 8, 11]),
        (
            TaskSpec {
                factor: Some(2),
                ..spec("sr")
            },
            2,
            [3, 17, 13],
        ),
        (spec("sr"), 1, [3, 16, 12]),
        (
            TaskSpec {
                factor: Some(4),
                filter: Some(SrFilter::Block),
                ..spec("sr")
            },
            2,
            [3, 17, 13],
        ),
        (
            TaskSpec {
                factor: Some(3),
                filter: Some(SrFilter::Block),
                ..spec("sr")
            },
            1,
            [1, 9, 12],
        ),
        (spec("colorize"), 2, [3, 17, 13]),
        (spec("colorize"), 1, [3, 5, 8]),
    ]
}

// ---------- the conv_reflect kernel itself ----------

#[test]
fn conv_reflect_kernel_dense_and_sparse_match_cpu() {
    use tweedie::kernels::conv_reflect::{conv_reflect, ConvTaps};
    let gpu = gpu();
    let mut r = rng(10);
    // Off-centre origins and reaches up to side - 1 (the full one-reflection range).
    for &(planes, h, w, kh, kw, rh, rw) in &[
        (5usize, 6usize, 9usize, 5usize, 7usize, 1usize, 5usize),
        (2, 11, 4, 3, 7, 2, 3),
        (3, 1, 13, 1, 5, 0, 2),
        (1, 7, 7, 13, 13, 6, 6),
    ] {
        let mut k = randn(&mut r, kh * kw);
        for (i, v) in k.iter_mut().enumerate() {
            if i % 3 == 1 {
                *v = 0.0; // the sparse path keeps only nonzeros
            }
        }
        let k64: Vec<f64> = k.iter().map(|&v| v as f64).collect();
        let x = randn(&mut r, planes * h * w);
        let y = randn(&mut r, planes * h * w);
        let taps = CpuTaps {
            k: &k64,
            kh,
            kw,
            rh,
            rw,
        };
        let want_fwd = conv_reflect_at_cpu(&x, h, w, taps);
        let want_adj = conv_reflect_adj_cpu(&y, h, w, taps);
        let xt = Tensor::from_slice(&gpu, "x", &[planes, h, w], &x).unwrap();
        let yt = Tensor::from_slice(&gpu, "y", &[planes, h, w], &y).unwrap();
        let out = Tensor::zeros(&gpu, "out", &[planes, h, w]).unwrap();
        for sparse in [false, true] {
            let taps = if sparse {
                ConvTaps::sparse(&gpu, "k", &k, kh, kw, rh, rw)
            } else {
                ConvTaps::new(&gpu, "k", &k, kh, kw, rh, rw)
            }
            .unwrap();
            for (adj, src, want) in [(false, &xt, &want_fwd), (true, &yt, &want_adj)] {
                let mut plan = Plan::new();
                let shape = tweedie::kernels::PlaneShape { planes, h, w };
                plan.push(conv_reflect(&gpu, &taps, src, &out, shape, adj).unwrap());
                run_plan(&gpu, plan);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let what = format!(
                    "conv_reflect sparse={sparse} adjoint={adj} {planes}x{h}x{w} taps {kh}x{kw} at ({rh},{rw})"
                );
                assert_close(&what, &out.read(&gpu).unwrap(), want, 1e-5 * scale, 1e-5);
            }
        }
    }
}

// ---------- adjoints ----------

#[test]
fn every_operator_has_an_exact_adjoint() {
    let gpu = gpu();
    let mut r = rng(11);
    for (i, (spec, n, shape)) in cases().into_iter().enumerate() {
        let op = build_linear(&gpu, &spec, shape, 5 + i as u64).unwrap();
        let u = randn(&mut r, n * numel(op.in_shape()));
        let v = randn(&mut r, n * numel(op.out_shape()));
        let au = forward(&gpu, op.as_ref(), n, &u);
        let atv = adjoint(&gpu, op.as_ref(), n, &v);
        let lhs = dot64(&au, &v);
        let rhs = dot64(&u, &atv);
        let tol = 1e-5 * norm64(&au) * norm64(&v);
        assert!(
            (lhs - rhs).abs() <= tol,
            "{} {:?} batch {n}: <Au,v> = {lhs}, <u,A^T v> = {rhs}, diff {} > {tol}",
            spec.task,
            shape,
            (lhs - rhs).abs()
        );
        assert!(norm64(&au) > 0.0, "{}: A u is zero", spec.task);
    }
}

// ---------- the largest gain ||A||_2 ----------

/// `op` without its SVD form, so that `largest_gain` takes the power iteration.
struct NoSvd<'a>(&'a dyn LinearOperator);

impl Operator for NoSvd<'_> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn in_shape(&self) -> [usize; 3] {
        self.0.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.0.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.0.forward(gpu, x, y)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for NoSvd<'_> {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.0.adjoint(gpu, y, x)
    }
}

/// ||A||_2 (DPS's default step size's cap) on every operator of the
/// awkward-shape set: `largest_gain` (the SVD form's largest value, or the
/// power iteration where there is none: motion blur) and the power iteration
/// alone both equal the largest singular value of A written out as a dense
/// matrix (A applied to the identity, its SVD on the CPU with faer); the
/// tasks whose gain is known in closed form have it.
#[test]
fn largest_gain_is_the_operators_norm() {
    use tweedie::operators::gain::largest_gain;
    let gpu = gpu();
    let mut r = rng(14);
    for (i, (spec, _, shape)) in cases().into_iter().enumerate() {
        let op = build_linear(&gpu, &spec, shape, 5 + i as u64).unwrap();
        let what = format!("{} {:?} {:?}", spec.task, spec.factor, shape);
        let gain = largest_gain(&gpu, op.as_ref()).unwrap() as f64;
        let power = largest_gain(&gpu, &NoSvd(op.as_ref())).unwrap() as f64;
        println!("{what}: ||A|| = {gain:.6} (power iteration {power:.6})");
        assert!(gain > 0.0 && gain.is_finite(), "{what}: {gain}");
        assert!(
            (gain - power).abs() <= 2e-3 * gain,
            "{what}: SVD form {gain} vs power iteration {power}"
        );
        // A as a dense m x d matrix: column j is A e_j (a batch of d basis images).
        let (d, m) = (numel(op.in_shape()), numel(op.out_shape()));
        let mut eye = vec![0f32; d * d];
        (0..d).for_each(|j| eye[j * d + j] = 1.0);
        let cols = forward(&gpu, op.as_ref(), d, &eye);
        let dense: Vec<f64> = (0..m * d).map(|k| cols[(k % d) * m + k / d] as f64).collect();
        let exact = tweedie::operators::separable::svd_1d("dense A", &dense, m, d)
            .unwrap()
            .s
            .iter()
            .fold(0f64, |a, v| a.max(*v));
        assert!(
            (gain - exact).abs() <= 1e-4 * exact,
            "{what}: largest_gain {gain} vs the dense SVD's {exact}"
        );
        let x = randn(&mut r, d);
        let ax = forward(&gpu, op.as_ref(), 1, &x);
        assert!(
            norm64(&ax) <= gain * norm64(&x) * (1.0 + 1e-4),
            "{what}: |A x| > ||A|| |x|"
        );
        let known = match (spec.task, spec.factor, spec.filter) {
            (Task::Denoise | Task::InpaintBox | Task::InpaintRandom, ..) => Some(1.0),
            (Task::Sr, Some(f), Some(SrFilter::Block)) => Some(1.0 / f as f64),
            (Task::Dense, ..) => {
                let f = TensorFile::open(spec.matrix.as_ref().unwrap()).unwrap();
                let a: Vec<f64> = f.get("A").unwrap().data.iter().map(|&v| v as f64).collect();
                let svd = tweedie::operators::separable::svd_1d("dense", &a, 7, 30).unwrap();
                Some(svd.s.iter().fold(0f64, |m, v| m.max(*v)))
            }
            _ => None,
        };
        if let Some(k) = known {
            assert!((gain - k).abs() <= 1e-4 * k, "{what}: ||A|| {gain}, expected {k}");
        }
    }
    // Bicubic x2 and x4 on even sides: constants are kept at 1 / f of their
    // norm, and no frequency gains more (the kernel's response peaks at 0),
    // so ||A|| is 1 / f, the value DPS's cap was first written for.
    for (f, shape) in [(2, [1, 32, 32]), (2, [3, 64, 48]), (4, [3, 64, 64])] {
        let spec = TaskSpec {
            factor: Some(f),
            ..spec("sr")
        };
        let op = build_linear(&gpu, &spec, shape, 1).unwrap();
        let gain = largest_gain(&gpu, op.as_ref()).unwrap() as f64;
        println!("bicubic x{f} {shape:?}: ||A|| = {gain:.6}");
        assert!((gain - 1.0 / f as f64).abs() <= 1e-4, "bicubic x{f} {shape:?}: {gain}");
    }
}

// ---------- SVD forms ----------

fn svd_apply(gpu: &Gpu, op: &dyn LinearOperator, n: usize, which: &str, src: &[f32]) -> Vec<f32> {
    let svd = op.svd().unwrap();
    let (si, so) = match which {
        "vt" => (op.in_shape(), op.out_shape()),
        "v" => (op.out_shape(), op.in_shape()),
        _ => (op.out_shape(), op.out_shape()),
    };
    let a = Tensor::from_slice(gpu, "svd in", &shape4(n, si), src).unwrap();
    let b = Tensor::zeros(gpu, "svd out", &shape4(n, so)).unwrap();
    let plan = match which {
        "vt" => svd.vt(gpu, &a, &b),
        "v" => svd.v(gpu, &a, &b),
        "ut" => svd.ut(gpu, &a, &b),
        "u" => svd.u(gpu, &a, &b),
        _ => unreachable!(),
    };
    run_plan(gpu, plan.unwrap());
    b.read(gpu).unwrap()
}

#[test]
fn svd_forms_reconstruct_the_operator() {
    let gpu = gpu();
    let mut r = rng(12);
    for (i, (spec, n, shape)) in cases().into_iter().enumerate() {
        let op = build_linear(&gpu, &spec, shape, 5 + i as u64).unwrap();
        let Some(svd) = op.svd() else {
            assert_eq!(spec.task, Task::DeblurMotion, "only motion blur lacks an SVD");
            continue;
        };
        let what = format!("{} {:?}", spec.task, shape);
        let out = op.out_shape();
        let s = svd.singulars().read(&gpu).unwrap();
        assert_eq!(s.len(), numel(out), "{what}: one singular value per output element");
        assert!(
            s.iter().all(|&v| v >= 0.0 && v.is_finite()),
            "{what}: singulars must be >= 0"
        );

        // U diag(s) V^T x = A x
        let x = randn(&mut r, n * numel(op.in_shape()));
        let ax = forward(&gpu, op.as_ref(), n, &x);
        let mut coef = svd_apply(&gpu, op.as_ref(), n, "vt", &x);
        for (k, c) in coef.iter_mut().enumerate() {
            *c *= s[k % s.len()];
        }
        let usvx = svd_apply(&gpu, op.as_ref(), n, "u", &coef);
        let scale = ax.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{what}: U S V^T x vs A x"), &usvx, &ax, 1e-4 * scale, 1e-4);

        // V^T V = I and U^T U = I on the spectral side.
        let z = randn(&mut r, n * numel(out));
        let vz = svd_apply(&gpu, op.as_ref(), n, "v", &z);
        let vtvz = svd_apply(&gpu, op.as_ref(), n, "vt", &vz);
        assert_close(&format!("{what}: V^T V z"), &vtvz, &z, 1e-4, 1e-4);
        let uz = svd_apply(&gpu, op.as_ref(), n, "u", &z);
        let utuz = svd_apply(&gpu, op.as_ref(), n, "ut", &uz);
        assert_close(&format!("{what}: U^T U z"), &utuz, &z, 1e-4, 1e-4);

        // A^T y = V S U^T y
        let y = randn(&mut r, n * numel(out));
        let aty = adjoint(&gpu, op.as_ref(), n, &y);
        let mut c2 = svd_apply(&gpu, op.as_ref(), n, "ut", &y);
        for (k, c) in c2.iter_mut().enumerate() {
            *c *= s[k % s.len()];
        }
        let vsuy = svd_apply(&gpu, op.as_ref(), n, "v", &c2);
        let scale = aty.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{what}: V S U^T y vs A^T y"), &vsuy, &aty, 1e-4 * scale, 1e-4);
    }
}

// ---------- forward against CPU references ----------

#[test]
fn forward_matches_cpu_references() {
    let gpu = gpu();
    let mut r = rng(13);
    for (i, (spec, n, shape)) in cases().into_iter().enumerate() {
        let seed = 5 + i as u64;
        let resolved = resolve(&spec, shape, seed).unwrap();
        let op = resolved.build_linear(&gpu).unwrap();
        let [c, h, w] = shape;
        let x: Vec<f32> = randn(&mut r, n * numel(shape));
        let got = forward(&gpu, op.as_ref(), n, &x);
        let want: Vec<f32> = match (&resolved.kind, spec.task.name()) {
            (Resolved::Denoise, _) => x.clone(),
            (Resolved::Dense { matrix }, _) => {
                let (m, d) = (matrix.shape[0], matrix.shape[1]);
                (0..n * m)
                    .map(|k| {
                        (0..d)
                            .map(|j| matrix.data[(k % m) * d + j] as f64 * x[(k / m) * d + j] as f64)
                            .sum::<f64>() as f32
                    })
                    .collect()
            }
            (Resolved::Inpaint { mask }, _) => x.iter().enumerate().map(|(k, &v)| v * mask[k % (h * w)]).collect(),
            (Resolved::SeparableBlur { gh, gw }, _) => {
                let k2: Vec<f64> = gh.iter().flat_map(|&a| gw.iter().map(move |&b| a * b)).collect();
                conv_reflect_cpu(&x, h, w, &k2, gh.len(), gw.len())
            }
            (Resolved::Blur2d { kernel, kh, kw }, _) => conv_reflect_cpu(&x, h, w, kernel, *kh, *kw),
            (
                Resolved::Sr {
                    factor,
                    filter: SrFilter::Block,
                },
                _,
            ) => avg_pool_cpu(&x, h, w, *factor),
            (
                Resolved::Sr {
                    factor,
                    filter: SrFilter::Bicubic,
                },
                _,
            ) => {
                if h % factor != 0 || w % factor != 0 {
                    continue; // imresize's shifted grid; covered by adjoint/SVD tests
                }
                bicubic_cpu(&x, h, w, *factor)
            }
            (Resolved::Colorize, _) => (0..n * h * w)
                .map(|k| {
                    let (s, p) = (k / (h * w), k % (h * w));
                    (0..c).map(|ch| x[(s * c + ch) * h * w + p]).sum::<f32>() / c as f32
                })
                .collect(),
            // Non-linear: tests/phase_retrieval.rs has its reference; `cases` holds linear tasks.
            (Resolved::PhaseRetrieval { .. } | Resolved::Jpeg { .. }, _) => unreachable!("cases() are linear tasks"),
        };
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{} {:?} forward", spec.task, shape),
            &got,
            &want,
            1e-5 * scale,
            1e-5,
        );
    }
}

#[test]
fn gaussian_blur_is_dps_kernel_with_reflect_boundary() {
    let gpu = gpu();
    let mut r = rng(14);
    let (n, shape) = (2, [3, 33, 35]);
    let op = build_linear(&gpu, &spec("deblur-gaussian"), shape, 0).unwrap();
    let x = randn(&mut r, n * numel(shape));
    let got = forward(&gpu, op.as_ref(), n, &x);
    let want = conv_reflect_cpu(&x, 33, 35, &dps_gaussian_2d(61, 3.0), 61, 61);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close("deblur-gaussian vs 61x61 reflect conv", &got, &want, 1e-5 * scale, 1e-5);
    // The saved kernel is DPS's, too.
    let saved = resolve(&spec("deblur-gaussian"), shape, 0).unwrap().tensors();
    let k: Vec<f32> = dps_gaussian_2d(61, 3.0).iter().map(|&v| v as f32).collect();
    assert_eq!(saved[0].1.shape, vec![61, 61]);
    assert_close("saved gaussian kernel", &saved[0].1.data, &k, 1e-8, 1e-5);
}

#[test]
fn bicubic_sr_preserves_constants_and_ramps() {
    let gpu = gpu();
    let (h, w, f) = (32, 24, 4);
    let op = build_linear(
        &gpu,
        &TaskSpec {
            factor: Some(f),
            ..spec("sr")
        },
        [1, h, w],
        0,
    )
    .unwrap();
    assert_eq!(op.out_shape(), [1, 8, 6]);
    let constant = forward(&gpu, op.as_ref(), 1, &vec![0.3; h * w]);
    assert_close("bicubic of a constant", &constant, &[0.3; 48], 1e-6, 1e-5);
    // Cubic convolution reproduces linear functions: away from the border the
    // output is the ramp at the output's centre, (o + 0.5) f - 0.5.
    let ramp: Vec<f32> = (0..h * w).map(|k| (k % w) as f32 * 0.01).collect();
    let y = forward(&gpu, op.as_ref(), 1, &ramp);
    for o in 2..4 {
        let want = ((o as f32 + 0.5) * f as f32 - 0.5) * 0.01;
        assert!(
            (y[3 * 6 + o] - want).abs() < 1e-5,
            "ramp at {o}: {} vs {want}",
            y[3 * 6 + o]
        );
    }
}

// ---------- factory ----------

#[test]
fn masks_follow_dps() {
    let (h, w) = (64, 48);
    // inpaint-random: exactly int(H W ratio) pixels dropped, the same for a seed.
    let m = |seed| match resolve(
        &TaskSpec {
            ratio: Some(0.37),
            ..spec("inpaint-random")
        },
        [3, h, w],
        seed,
    )
    .unwrap()
    .kind
    {
        Resolved::Inpaint { mask } => mask,
        _ => unreachable!(),
    };
    let a = m(1);
    assert_eq!(
        a.iter().filter(|&&v| v == 0.0).count(),
        (h as f64 * w as f64 * 0.37) as usize
    );
    assert_eq!(a, m(1));
    assert_ne!(a, m(2));
    // Without --ratio the ratio is drawn in [0.3, 0.7].
    for seed in 0..8 {
        let Resolved::Inpaint { mask } = resolve(&spec("inpaint-random"), [3, h, w], seed).unwrap().kind else {
            unreachable!()
        };
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / (h * w) as f64;
        assert!((0.29..=0.71).contains(&dropped), "drawn ratio {dropped}");
    }
    // inpaint-box: one side x side square of zeros, inside the scaled margin.
    for seed in 0..8 {
        let Resolved::Inpaint { mask } = resolve(
            &TaskSpec {
                box_side: Some(20),
                ..spec("inpaint-box")
            },
            [3, h, w],
            seed,
        )
        .unwrap()
        .kind
        else {
            unreachable!()
        };
        let zeros: Vec<(usize, usize)> = (0..h * w).filter(|&k| mask[k] == 0.0).map(|k| (k / w, k % w)).collect();
        assert_eq!(zeros.len(), 400);
        let (t, l) = (
            zeros.iter().map(|z| z.0).min().unwrap(),
            zeros.iter().map(|z| z.1).min().unwrap(),
        );
        assert!(zeros.iter().all(|&(i, j)| i < t + 20 && j < l + 20));
        assert!(t >= 16 * h / 256 && t + 20 <= h - 16 * h / 256, "box row {t}");
        assert!(l >= 16 * w / 256 && l + 20 <= w - 16 * w / 256, "box col {l}");
    }
    // Default box: half the side (128 at 256).
    let Resolved::Inpaint { mask } = resolve(&spec("inpaint-box"), [3, 256, 256], 3).unwrap().kind else {
        unreachable!()
    };
    assert_eq!(mask.iter().filter(|&&v| v == 0.0).count(), 128 * 128);
}

#[test]
fn motion_kernels_are_seeded_random_trajectories() {
    let k = |seed| match resolve(&spec("deblur-motion"), [3, 64, 64], seed).unwrap().kind {
        Resolved::Blur2d { kernel, kh, kw } => {
            assert_eq!((kh, kw), (61, 61));
            kernel
        }
        _ => unreachable!(),
    };
    let a = k(7);
    assert_eq!(a, k(7), "same seed, same kernel");
    let mut distinct = 0;
    for seed in 0..6 {
        let kern = k(seed);
        let sum: f64 = kern.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "kernel sums to {sum}");
        assert!(kern.iter().all(|&v| v >= 0.0));
        let support = kern.iter().filter(|&&v| v > 0.0).count();
        assert!(support >= 5, "a trajectory, not a point: support {support}");
        let peak = kern.iter().cloned().fold(0.0, f64::max);
        assert!(peak < 0.5, "mass spread along a path: peak {peak}");
        if kern != a {
            distinct += 1;
        }
    }
    assert!(distinct >= 5, "different seeds give different kernels");
}

fn build_err(task: TaskSpec, shape: [usize; 3]) -> String {
    match build_linear(&gpu(), &task, shape, 0) {
        Ok(_) => panic!("{} {:?} should be refused", task.task, shape),
        Err(e) => {
            assert!(matches!(e, OperatorError::Invalid { .. } | OperatorError::Shape { .. }));
            e.to_string()
        }
    }
}

#[test]
fn factory_refuses_bad_tasks_and_options() {
    let e = build_err(spec("deblur-gaussian"), [3, 17, 13]);
    assert!(e.contains("--kernel-size") && e.contains("17x13"), "{e}");
    let e = "nonsense".parse::<Task>().unwrap_err();
    assert!(e.contains("unknown --task"), "{e}");
    // Phase retrieval builds as an operator, never as a linear one.
    let e = build_err(spec("phase-retrieval"), [1, 16, 16]);
    assert_eq!(e, "phase-retrieval: is not a linear measurement");
    let e = build_err(
        TaskSpec {
            oversample: Some(-1.0),
            ..spec("phase-retrieval")
        },
        [1, 16, 16],
    );
    assert!(e.contains("--oversample -1 must be a positive number"), "{e}");
    let e = build_err(
        TaskSpec {
            oversample: Some(2.0),
            ..spec("sr")
        },
        [1, 16, 16],
    );
    assert!(e.contains("--oversample does not apply"), "{e}");
    for t in Task::ALL {
        assert_eq!(t.name().parse::<Task>(), Ok(t), "names round-trip");
    }
    // --box 0 is out of range like any other side (it used to become 1).
    let e = build_err(
        TaskSpec {
            box_side: Some(0),
            ..spec("inpaint-box")
        },
        [1, 8, 8],
    );
    assert!(e.contains("--box 0"), "{e}");
    let e = build_err(
        TaskSpec {
            factor: Some(2),
            ..spec("deblur-uniform")
        },
        [3, 32, 32],
    );
    assert!(e.contains("--factor"), "{e}");
    let e = build_err(
        TaskSpec {
            ratio: Some(1.5),
            ..spec("inpaint-random")
        },
        [3, 8, 8],
    );
    assert!(e.contains("--ratio"), "{e}");
    let e = build_err(
        TaskSpec {
            box_side: Some(40),
            ..spec("inpaint-box")
        },
        [3, 32, 32],
    );
    assert!(e.contains("--box"), "{e}");
    let e = build_err(
        TaskSpec {
            kernel_size: Some(8),
            ..spec("deblur-uniform")
        },
        [3, 32, 32],
    );
    assert!(e.contains("--kernel-size 8"), "{e}");
    let e = build_err(
        TaskSpec {
            factor: Some(0),
            ..spec("sr")
        },
        [3, 32, 32],
    );
    assert!(e.contains("--factor"), "{e}");
    let e = build_err(spec("colorize"), [1, 8, 8]);
    assert!(e.contains("3-channel"), "{e}");
    let e = build_err(spec("dense"), [1, 8, 8]);
    assert!(e.contains("--matrix FILE is required"), "{e}");
    // Shape mismatches at plan time.
    let gpu = gpu();
    let op = build_linear(
        &gpu,
        &TaskSpec {
            factor: Some(2),
            ..spec("sr")
        },
        [3, 8, 8],
        0,
    )
    .unwrap();
    let x = Tensor::zeros(&gpu, "x", &[2, 3, 8, 8]).unwrap();
    let bad = Tensor::zeros(&gpu, "y", &[2, 3, 8, 8]).unwrap();
    assert!(matches!(op.forward(&gpu, &x, &bad), Err(OperatorError::Shape { .. })));
    let odd = Tensor::zeros(&gpu, "x", &[7]).unwrap();
    assert!(matches!(op.adjoint(&gpu, &odd, &x), Err(OperatorError::Shape { .. })));
}

// ---------- CLI ----------

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-ops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie")).args(args).output().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn cli_operator_forward_matches_cpu_and_refuses_bad_input() {
    let dir = scratch("operator");
    let mut r = rng(15);
    let (n, c, s) = (2, 3, 33);
    let x = HostTensor::new(vec![n, c, s, s], randn(&mut r, n * c * s * s));
    let input = dir.join("in.safetensors");
    write_tensors(&input, &[("x", &x)]).unwrap();
    let out = dir.join("out.safetensors");
    let base = [
        "operator",
        "--task",
        "deblur-gaussian",
        "--image-size",
        "33",
        "--channels",
        "3",
        "--seed",
        "1",
    ];
    let o = tweedie(
        &[
            &base[..],
            &["--mode", "forward", "--input", p(&input), "--out", p(&out)],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let y = TensorFile::open(&out).unwrap().get("y").unwrap();
    assert_eq!(y.shape, vec![n, c, s, s]);
    let want = conv_reflect_cpu(&x.data, s, s, &dps_gaussian_2d(61, 3.0), 61, 61);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close("cli deblur-gaussian forward", &y.data, &want, 1e-5 * scale, 1e-5);

    // Adjoint mode: the input lives in the output space (same shape here).
    let out_adj = dir.join("out_adj.safetensors");
    let o = tweedie(
        &[
            &base[..],
            &["--mode", "adjoint", "--input", p(&input), "--out", p(&out_adj)],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let xa = TensorFile::open(&out_adj).unwrap().get("y").unwrap();
    let k = dps_gaussian_2d(61, 3.0);
    let taps = CpuTaps {
        k: &k,
        kh: 61,
        kw: 61,
        rh: 30,
        rw: 30,
    };
    let want = conv_reflect_adj_cpu(&x.data, s, s, taps);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close("cli deblur-gaussian adjoint", &xa.data, &want, 1e-5 * scale, 1e-5);

    // Bad inputs: one line on stderr, non-zero exit, no output file.
    let wrong_key = dir.join("wrong_key.safetensors");
    write_tensors(&wrong_key, &[("z", &x)]).unwrap();
    let wrong_shape = dir.join("wrong_shape.safetensors");
    write_tensors(&wrong_shape, &[("x", &HostTensor::zeros(&[1, 3, 32, 33]))]).unwrap();
    for (bad, extra) in [
        (&wrong_key, vec!["--mode", "forward"]),
        (&wrong_shape, vec!["--mode", "forward"]),
        (&wrong_shape, vec!["--mode", "adjoint"]),
        (&input, vec!["--mode", "forward", "--factor", "2"]),
    ] {
        let out = dir.join("bad_out.safetensors");
        let o = tweedie(&[&base[..], &extra[..], &["--input", p(bad), "--out", p(&out)]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{} {extra:?} should fail", bad.display());
        assert_eq!(err.trim_end().lines().count(), 1, "one line on stderr, got: {err}");
        assert!(!out.exists(), "no output file after an error");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_degrade_writes_a_measurement_that_rebuilds_the_operator() {
    let gpu = gpu();
    let dir = scratch("degrade");
    let mut r = rng(16);
    let (h, w) = (24, 20);
    let clean = dir.join("clean.png");
    let img: Vec<f32> = (0..3 * h * w).map(|_| r.random_range(-1.0f32..1.0)).collect();
    tweedie::io::write_image(&clean, 3, h, w, &img).unwrap();
    let x = read_image(&clean).unwrap();
    for (task, extra) in [
        ("inpaint-random", vec![]),
        ("deblur-motion", vec!["--kernel-size", "9"]),
        ("deblur-uniform", vec!["--kernel-size", "5"]),
        ("sr", vec!["--factor", "2", "--filter", "block"]),
        ("colorize", vec![]),
    ] {
        let out = dir.join(format!("y_{task}.png"));
        let args = [
            &["degrade", "--task", task],
            &extra[..],
            &["--sigma", "0", "--seed", "9", "--input", p(&clean), "--out", p(&out)],
        ]
        .concat();
        let o = tweedie(&args);
        assert!(o.status.success(), "{task}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(out.exists(), "{task}: the measurement image");
        let file = TensorFile::open(out.with_extension("safetensors")).unwrap();
        let y = file.get("y").unwrap();
        assert_eq!(file.get("sigma_y").unwrap().data, vec![0.0]);
        // Rebuild A from the file alone (its seed-drawn parts), apply it to the clean image.
        let mut spec = spec(task);
        if task == "sr" {
            spec.factor = Some(2);
            spec.filter = Some(SrFilter::Block);
        }
        let op = resolve_saved(&spec, [3, h, w], &file)
            .unwrap()
            .build_linear(&gpu)
            .unwrap();
        assert_eq!(y.shape, shape4(1, op.out_shape()));
        let want = forward(&gpu, op.as_ref(), 1, &x.data);
        assert_close(
            &format!("{task}: y vs A x from the rebuilt operator"),
            &y.data,
            &want,
            1e-5,
            1e-5,
        );
        let png = read_image(&out).unwrap();
        assert_eq!(png.shape, y.shape);
    }
    // Noise: sigma 0.05 adds N(0, 0.05^2) on top of A x.
    let out = dir.join("noisy.png");
    let o = tweedie(&[
        "degrade",
        "--task",
        "denoise",
        "--sigma",
        "0.05",
        "--seed",
        "3",
        "--input",
        p(&clean),
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let y = TensorFile::open(out.with_extension("safetensors"))
        .unwrap()
        .get("y")
        .unwrap();
    let resid: Vec<f32> = y.data.iter().zip(&x.data).map(|(a, b)| a - b).collect();
    let std = (dot64(&resid, &resid) / resid.len() as f64).sqrt();
    assert!((std - 0.05).abs() < 0.005, "noise std {std}");
    let _ = std::fs::remove_dir_all(&dir);
}
