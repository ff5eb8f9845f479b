//! CG's early exit (indirect dispatch gated on the GPU): once every sample of
//! the batch has converged, the remaining recorded iterations run no
//! workgroups, without changing the result; the gates reset at every replay of
//! one recorded plan; the iteration cap still stops a solve.
//!
//! The operator here is a dense A whose forward plan also adds 1 to a GPU-side
//! counter, so the counter is the number of Gram products that actually ran
//! (one per executed iteration), independent of the solver's own bookkeeping.

mod common;
use common::*;

use tweedie::gpu::Plan;
use tweedie::kernels::elementwise::{Elementwise, Op as ElementOp};
use tweedie::operators::dense::Dense;
use tweedie::operators::{LinearOperator, Operator, OperatorError};
use tweedie::samplers::cg::{Cg, CgStats, CgStop, CgSystem, Space};
use tweedie::{Gpu, HostTensor, Tensor};

/// A dense operator that counts its forward applications on the GPU.
struct Counting {
    inner: Dense,
    bump: Elementwise,
    count: Tensor,
}

impl Counting {
    fn new(gpu: &Gpu, a: &[f32], m: usize, d: usize) -> Counting {
        let inner = Dense::new(gpu, &HostTensor::new(vec![m, d], a.to_vec()), [d, 1, 1]).unwrap();
        let one = Tensor::from_slice(gpu, "one", &[1], &[1.0]).unwrap();
        let count = Tensor::zeros(gpu, "forward count", &[1]).unwrap();
        // count = 1 * one + 1 * count
        let bump = Elementwise::new(gpu, ElementOp::Axpby, &one, &count, 1.0, 1.0).unwrap();
        Counting { inner, bump, count }
    }

    fn count(&self, gpu: &Gpu) -> u32 {
        self.count.read(gpu).unwrap()[0] as u32
    }
}

impl Operator for Counting {
    fn name(&self) -> &str {
        "counting-dense"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.inner.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.inner.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let mut p = self.inner.forward(gpu, x, y)?;
        p.push(self.bump.dispatch.clone());
        Ok(p)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Counting {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.inner.adjoint(gpu, y, x)
    }
}

/// M = diag(D) + gamma A^T A (A is [m, d], row-major), f64, [d, d].
fn system(a: &[f32], m: usize, d: usize, diag: &[f32], gamma: f64) -> Vec<f64> {
    let mut s = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            let g: f64 = (0..m).map(|k| a[k * d + i] as f64 * a[k * d + j] as f64).sum();
            s[i * d + j] = gamma * g + if i == j { diag[i] as f64 } else { 0.0 };
        }
    }
    s
}

/// Plain CG in f64 with the solver's stopping rule (|r|^2 <= tol^2 |b|^2,
/// checked after each iteration), at most `iters` iterations: (x, iterations).
fn cpu_cg(mat: &[f64], b: &[f32], tol: f64, iters: usize) -> (Vec<f64>, usize) {
    let d = b.len();
    let mut x = vec![0f64; d];
    let mut r: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let mut p = r.clone();
    let bb: f64 = r.iter().map(|v| v * v).sum();
    let mut rr = bb;
    if bb == 0.0 {
        return (x, 0);
    }
    for it in 0..iters {
        let mp: Vec<f64> = (0..d).map(|i| (0..d).map(|j| mat[i * d + j] * p[j]).sum()).collect();
        let pmp: f64 = p.iter().zip(&mp).map(|(a, b)| a * b).sum();
        let alpha = rr / pmp;
        for i in 0..d {
            x[i] += alpha * p[i];
            r[i] -= alpha * mp[i];
        }
        let rr_new: f64 = r.iter().map(|v| v * v).sum();
        if rr_new <= tol * tol * bb {
            return (x, it + 1);
        }
        let beta = rr_new / rr;
        for i in 0..d {
            p[i] = r[i] + beta * p[i];
        }
        rr = rr_new;
    }
    (x, iters)
}

struct Setup {
    op: Counting,
    b: Tensor,
    x: Tensor,
    diag: Tensor,
    diag_host: Vec<f32>,
    a: Vec<f32>,
    m: usize,
    d: usize,
    batch: usize,
}

fn setup(gpu: &Gpu, a: Vec<f32>, m: usize, d: usize, batch: usize, diag_host: Vec<f32>) -> Setup {
    let op = Counting::new(gpu, &a, m, d);
    let b = Tensor::zeros(gpu, "b", &[batch, d]).unwrap();
    let x = Tensor::zeros(gpu, "x", &[batch, d]).unwrap();
    let diag = Tensor::from_slice(gpu, "diag", &[batch, d], &diag_host).unwrap();
    Setup {
        op,
        b,
        x,
        diag,
        diag_host,
        a,
        m,
        d,
        batch,
    }
}

impl Setup {
    fn cg(&self, gpu: &Gpu, gamma: f32, tol: f32, iters: usize) -> Cg {
        let sys = CgSystem {
            op: &self.op,
            space: Space::Input,
            b: &self.b,
            x: &self.x,
            diag: &self.diag,
            weight: None,
            gamma,
        };
        Cg::new(gpu, sys, CgStop { tol, iters }).unwrap()
    }

    /// Runs `cg` once on right-hand side `b`: (x, stats, Gram products run).
    fn solve(&self, gpu: &Gpu, cg: &Cg, b: &[f32]) -> (Vec<f32>, CgStats, u32) {
        self.b.write(gpu, b).unwrap();
        let before = self.op.count(gpu);
        cg.plan.run(gpu).unwrap();
        let x = self.x.read(gpu).unwrap();
        let stats = cg.stats(gpu).unwrap();
        (x, stats, self.op.count(gpu) - before)
    }

    /// Checks every sample of `x` against the f64 CG run for `iters`
    /// iterations (the exact solve once converged).
    fn check(&self, what: &str, x: &[f32], b: &[f32], gamma: f32, tol: f32, iters: usize) {
        let d = self.d;
        for s in 0..self.batch {
            let mat = system(&self.a, self.m, d, &self.diag_host[s * d..(s + 1) * d], gamma as f64);
            let (want, _) = cpu_cg(&mat, &b[s * d..(s + 1) * d], tol as f64, iters);
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            assert_close(
                &format!("{what} sample {s}"),
                &x[s * d..(s + 1) * d],
                &want,
                2e-4 * scale,
                1e-3,
            );
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Both kernel paths: d <= CHUNK (one thread per sample) and d > CHUNK.
const SIZES: [(usize, usize, usize); 2] = [(5, 40, 3), (6, 1301, 2)];

#[test]
fn converged_batch_skips_remaining_iterations_with_the_same_result() {
    let gpu = gpu();
    let mut r = rng(41);
    for (m, d, batch) in SIZES {
        // A constant diagonal: a rank-m update of a scaled identity, solved in
        // about m + 1 iterations, far below the cap of 60.
        let s = setup(&gpu, randn(&mut r, m * d), m, d, batch, vec![0.8; batch * d]);
        let b = randn(&mut r, batch * d);
        let (gamma, tol, cap) = (0.7f32, 1e-5f32, 60usize);
        let cg = s.cg(&gpu, gamma, tol, cap);
        let (x, stats, ran) = s.solve(&gpu, &cg, &b);
        let most = *stats.last.iter().max().unwrap();
        assert_eq!(stats.unconverged, 0, "d={d}: {stats:?}");
        assert!(most >= 2 && (most as usize) <= m + 4, "d={d}: {stats:?}");
        // The iterations after the last sample converged did not run: neither
        // the Gram products (the operator's own counter) nor the CG kernels.
        assert_eq!(stats.executed_last, most, "d={d}: {stats:?}");
        assert_eq!(ran, most, "d={d}: Gram products run");
        s.check(&format!("d={d} early exit"), &x, &b, gamma, tol, cap);

        // The same solve recorded with exactly that many iterations (nothing
        // skipped) and with a few more: bit for bit the same answer.
        for iters in [most as usize, most as usize + 3] {
            let exact = s.cg(&gpu, gamma, tol, iters);
            let (x2, st2, ran2) = s.solve(&gpu, &exact, &b);
            assert_eq!(bits(&x2), bits(&x), "d={d}: cap {iters} vs cap {cap}");
            assert_eq!(st2.last, stats.last);
            assert_eq!((st2.executed_last, ran2), (most, most), "d={d}: cap {iters}");
        }
    }
}

#[test]
fn one_recorded_plan_solves_each_new_right_hand_side() {
    let gpu = gpu();
    let mut r = rng(42);
    for (m, d, batch) in SIZES {
        let diag: Vec<f32> = (0..batch * d).map(|k| 0.6 + 0.1 * (k % 7) as f32).collect();
        let s = setup(&gpu, randn(&mut r, m * d), m, d, batch, diag);
        let (gamma, tol, cap) = (0.5f32, 1e-5f32, 200usize);
        let cg = s.cg(&gpu, gamma, tol, cap);
        let b1 = randn(&mut r, batch * d);
        let b2: Vec<f32> = randn(&mut r, batch * d).iter().map(|v| 3.0 * v + 0.5).collect();
        let (x1, st1, ran1) = s.solve(&gpu, &cg, &b1);
        assert_eq!(st1.unconverged, 0, "{st1:?}");
        assert_eq!(
            (st1.executed_last, ran1),
            (*st1.last.iter().max().unwrap(), st1.executed_last)
        );
        assert!((st1.executed_last as usize) < cap, "{st1:?}");
        s.check(&format!("d={d} rhs 1"), &x1, &b1, gamma, tol, cap);

        // A second right-hand side through the same plan: the gates were
        // reopened by the replay, so it solves fully again.
        let (x2, st2, ran2) = s.solve(&gpu, &cg, &b2);
        assert_eq!(st2.unconverged, 0, "{st2:?}");
        assert_eq!(
            (st2.executed_last, ran2),
            (*st2.last.iter().max().unwrap(), st2.executed_last)
        );
        assert!(st2.executed_last >= 2, "{st2:?}");
        s.check(&format!("d={d} rhs 2"), &x2, &b2, gamma, tol, cap);

        // b = 0: every sample is solved at init, no iteration runs.
        let zero = vec![0.0; batch * d];
        let (x0, st0, ran0) = s.solve(&gpu, &cg, &zero);
        assert!(x0.iter().all(|&v| v == 0.0));
        assert_eq!((st0.executed_last, ran0), (0, 0), "{st0:?}");
        assert!(st0.last.iter().all(|&i| i == 0));

        // ... and after a solve that ran nothing, the first one again, bit for bit.
        let (x3, st3, ran3) = s.solve(&gpu, &cg, &b1);
        assert_eq!(bits(&x3), bits(&x1), "d={d}: replay of rhs 1");
        assert_eq!((st3.executed_last, ran3), (st1.executed_last, ran1));
        assert_eq!(st3.solves, 4);
        assert_eq!(st3.executed_total, st1.executed_last * 2 + st2.executed_last);
        let per_sample: Vec<u32> = (0..batch).map(|k| 2 * st1.last[k] + st2.last[k]).collect();
        assert_eq!(st3.total, per_sample);
    }
}

#[test]
fn samples_converging_at_different_iterations() {
    let gpu = gpu();
    for (m, d) in [(6usize, 16usize), (6, 1500)] {
        // A = [diag(s_1..s_m) | 0]: M = c I + gamma diag(s^2, 0, ...) has
        // distinct eigenvalues on the first m coordinates and c on the rest.
        // Sample k's b touches k + 1 distinct eigenvalues, so exact CG takes
        // k + 1 iterations: the batch keeps iterating after sample 0 is done.
        let sv: Vec<f32> = (0..m).map(|i| 0.5 + i as f32).collect();
        let mut a = vec![0f32; m * d];
        for i in 0..m {
            a[i * d + i] = sv[i];
        }
        let batch = 4;
        let (c, gamma, tol) = (1.0f32, 1.0f32, 1e-5f32);
        let s = setup(&gpu, a, m, d, batch, vec![c; batch * d]);
        let mut b = vec![0f32; batch * d];
        for k in 0..batch {
            for j in 0..=k {
                b[k * d + j] = 1.0 + 0.25 * j as f32;
            }
        }
        let cg = s.cg(&gpu, gamma, tol, 40);
        let (x, stats, ran) = s.solve(&gpu, &cg, &b);
        assert_eq!(stats.unconverged, 0, "{stats:?}");
        let want_iters: Vec<u32> = (1..=batch as u32).collect();
        assert_eq!(stats.last, want_iters, "d={d}: {stats:?}");
        assert_eq!((stats.executed_last, ran), (batch as u32, batch as u32), "d={d}");
        // The samples that converged early were frozen: every sample is the
        // exact solution x_j = b_j / (c + gamma s_j^2).
        let want: Vec<f32> = (0..batch * d)
            .map(|k| {
                let j = k % d;
                let lam = c + if j < m { gamma * sv[j] * sv[j] } else { 0.0 };
                b[k] / lam
            })
            .collect();
        assert_close(&format!("d={d} staggered"), &x, &want, 1e-5, 1e-4);
    }
}

#[test]
fn iteration_cap_below_convergence_stops_the_solve() {
    let gpu = gpu();
    let mut r = rng(43);
    for (m, d, batch) in [(30usize, 60usize, 3usize), (30, 1200, 2)] {
        use rand::Rng;
        let diag: Vec<f32> = (0..batch * d).map(|_| 0.3 + 1.5 * r.random::<f32>()).collect();
        let s = setup(&gpu, randn(&mut r, m * d), m, d, batch, diag);
        let b = randn(&mut r, batch * d);
        let (gamma, tol) = (0.7f32, 1e-6f32);
        for cap in [3usize, 1] {
            let cg = s.cg(&gpu, gamma, tol, cap);
            let (x, stats, ran) = s.solve(&gpu, &cg, &b);
            assert_eq!(stats.unconverged, batch, "d={d} cap {cap}: {stats:?}");
            assert!(stats.last.iter().all(|&i| i as usize == cap), "{stats:?}");
            assert_eq!((stats.executed_last, ran), (cap as u32, cap as u32));
            s.check(&format!("d={d} cap {cap}"), &x, &b, gamma, tol, cap);
            // A replay runs the capped solve again.
            let (x2, st2, ran2) = s.solve(&gpu, &cg, &b);
            assert_eq!(bits(&x2), bits(&x));
            assert_eq!((st2.executed_total, ran2, st2.solves), (2 * cap as u32, cap as u32, 2));
        }
        // No iterations at all: x = 0, nothing runs.
        let cg = s.cg(&gpu, gamma, tol, 0);
        let (x, stats, ran) = s.solve(&gpu, &cg, &b);
        assert!(x.iter().all(|&v| v == 0.0));
        assert_eq!((stats.executed_last, ran, stats.unconverged), (0, 0, batch));
    }
}

#[test]
fn gate_control_words_match_the_shader() {
    // tests/layout.rs checks the other CG mirrors; these two are read back by
    // `Cg::stats`.
    use tweedie::samplers::cg::{G_RUN, G_RUN_TOTAL};
    let src = tweedie::gpu::CG.source;
    for (name, v) in [("G_RUN", G_RUN), ("G_RUN_TOTAL", G_RUN_TOTAL)] {
        let decl = format!("const {name}: u32 = {v}u;");
        assert!(src.contains(&decl), "shaders/cg.wgsl lacks `{decl}`");
    }
}
