//! The Gaussian-mixture score model (eps and its VJP) against an f64 CPU
//! reference and finite differences, and the batched CG / PW-CG solvers
//! against dense CPU solves.

mod common;
use common::gmm::diffused_score;
use common::*;

use tweedie::operators::dense::Dense;
use tweedie::samplers::cg::{Cg, CgStop, CgSystem, PwCgDraw, Space};
use tweedie::samplers::{EpsArgs, GmmPrior, ScoreModel};
use tweedie::schedule::Schedule;
use tweedie::{HostTensor, Tensor};

struct Mix {
    w: Vec<f64>,
    mu: Vec<f64>,
    var: Vec<f64>,
    k: usize,
    d: usize,
}

impl Mix {
    fn random(r: &mut rand::rngs::StdRng, k: usize, d: usize) -> (Mix, Vec<f32>, Vec<f32>, Vec<f32>) {
        use rand::Rng;
        let w: Vec<f32> = (0..k).map(|_| 0.2 + r.random::<f32>()).collect();
        let mu: Vec<f32> = randn(r, k * d).iter().map(|v| 0.8 * v).collect();
        let var: Vec<f32> = (0..k * d).map(|_| 0.05 + 0.5 * r.random::<f32>()).collect();
        let tot: f64 = w.iter().map(|&v| v as f64).sum();
        let m = Mix {
            w: w.iter().map(|&v| v as f64 / tot).collect(),
            mu: mu.iter().map(|&v| v as f64).collect(),
            var: var.iter().map(|&v| v as f64).collect(),
            k,
            d,
        };
        (m, w, mu, var)
    }

    /// (responsibilities, per-component scores s_k [K*d], total score s)
    fn parts(&self, x: &[f64], a: f64, b: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        diffused_score(&self.w, &self.mu, &self.var, x, a, b)
    }

    fn eps(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        self.parts(x, a, b).2.iter().map(|s| -b * s).collect()
    }

    fn vjp(&self, x: &[f64], a: f64, b: f64, g: &[f64]) -> Vec<f64> {
        let (k, d) = (self.k, self.d);
        let (resp, sk, s) = self.parts(x, a, b);
        let mut out = vec![0f64; d];
        for c in 0..k {
            let dot: f64 = (0..d).map(|j| sk[c * d + j] * g[j]).sum();
            for j in 0..d {
                let v = a * a * self.var[c * d + j] + b * b;
                out[j] += resp[c] * (-g[j] / v + (sk[c * d + j] - s[j]) * dot);
            }
        }
        out.iter().map(|o| -b * o).collect()
    }
}

const TS: [usize; 5] = [0, 17, 250, 601, 999];

#[test]
fn gmm_vjp_matches_finite_differences_cpu() {
    let mut r = rng(21);
    let (mix, ..) = Mix::random(&mut r, 4, 6);
    let sched = Schedule::linear(1000, 1000).unwrap();
    for &t in &TS {
        let ab = sched.alphas_cumprod[t];
        let (a, b) = (ab.sqrt(), (1.0 - ab).sqrt());
        let x: Vec<f64> = randn(&mut r, 6).iter().map(|&v| v as f64).collect();
        let g: Vec<f64> = randn(&mut r, 6).iter().map(|&v| v as f64).collect();
        let vjp = mix.vjp(&x, a, b, &g);
        let h = 1e-6;
        for j in 0..6 {
            let mut xp = x.clone();
            let mut xm = x.clone();
            xp[j] += h;
            xm[j] -= h;
            let fp: f64 = mix.eps(&xp, a, b).iter().zip(&g).map(|(e, g)| e * g).sum();
            let fm: f64 = mix.eps(&xm, a, b).iter().zip(&g).map(|(e, g)| e * g).sum();
            let fd = (fp - fm) / (2.0 * h);
            assert!(
                (fd - vjp[j]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "t={t} j={j}: fd {fd} vs analytic {}",
                vjp[j]
            );
        }
    }
}

#[test]
fn gmm_eps_and_vjp_gpu_match_cpu() {
    let gpu = gpu();
    let mut r = rng(22);
    let (k, d) = (5, 13);
    let (mix, w, mu, var) = Mix::random(&mut r, k, d);
    let sched = Schedule::linear(1000, 1000).unwrap();
    let model = GmmPrior::new(&gpu, &w, &mu, &var, d, &tweedie::process::Process::default()).unwrap();
    assert_eq!(model.in_shape(), [d, 1, 1]);
    assert!(!model.learned_sigma());
    let n = TS.len() * 60 + 3; // > one workgroup of threads, not a multiple
    let x = randn(&mut r, n * d);
    let g = randn(&mut r, n * d);
    let t: Vec<f32> = (0..n).map(|i| TS[i % TS.len()] as f32).collect();
    let tx = Tensor::from_slice(&gpu, "x", &[n, d], &x).unwrap();
    let tt = Tensor::from_slice(&gpu, "t", &[n], &t).unwrap();
    let tg = Tensor::from_slice(&gpu, "g", &[n, d], &g).unwrap();
    let eps = Tensor::zeros(&gpu, "eps", &[n, d]).unwrap();
    let dx = Tensor::zeros(&gpu, "dx", &[n, d]).unwrap();
    let args = EpsArgs {
        x: &tx,
        t: &tt,
        eps: &eps,
        v: None,
        vjp: true,
    };
    let mut plan = model.plan_eps(&gpu, &args).unwrap();
    plan.extend(model.plan_vjp(&gpu, &tx, &tt, &tg, &dx).unwrap());
    plan.run(&gpu).unwrap();
    let (ge, gd) = (eps.read(&gpu).unwrap(), dx.read(&gpu).unwrap());
    let mut want_e = Vec::new();
    let mut want_d = Vec::new();
    for i in 0..n {
        let ab = sched.alphas_cumprod[TS[i % TS.len()]];
        let (a, b) = (ab.sqrt(), (1.0 - ab).sqrt());
        let xi: Vec<f64> = x[i * d..(i + 1) * d].iter().map(|&v| v as f64).collect();
        let gi: Vec<f64> = g[i * d..(i + 1) * d].iter().map(|&v| v as f64).collect();
        want_e.extend(mix.eps(&xi, a, b).iter().map(|&v| v as f32));
        want_d.extend(mix.vjp(&xi, a, b, &gi).iter().map(|&v| v as f32));
    }
    assert_close("gmm eps", &ge, &want_e, 2e-4, 2e-3);
    let scale = want_d.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert_close("gmm vjp", &gd, &want_d, 2e-4 * scale, 2e-3);
    // wrong shapes are refused, not silently accepted
    let short = Tensor::zeros(&gpu, "t", &[n - 1]).unwrap();
    assert!(model
        .plan_eps(
            &gpu,
            &EpsArgs {
                t: &short,
                vjp: false,
                ..args
            }
        )
        .is_err());
}

/// Dense symmetric positive-definite solve in f64 (Cholesky).
fn chol_solve(m: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                l[i * n + i] = (m[i * n + i] - s).sqrt();
            } else {
                l[i * n + j] = (m[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut z = vec![0f64; n];
    for i in 0..n {
        z[i] = (b[i] - (0..i).map(|k| l[i * n + k] * z[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        x[i] = (z[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    x
}

/// diag(D) + gamma G for G = A^T W A (input) or A W A^T (output), per sample;
/// W = diag(w) in the other space (all ones when `w` is None).
#[allow(clippy::too_many_arguments)]
fn system(a: &[f32], m: usize, d: usize, diag: &[f32], w: Option<&[f32]>, gamma: f64, input: bool) -> Vec<f64> {
    let n = if input { d } else { m };
    let wk = |k: usize| w.map_or(1.0, |w| w[k] as f64);
    let mut s = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            let g: f64 = if input {
                (0..m).map(|k| wk(k) * a[k * d + i] as f64 * a[k * d + j] as f64).sum()
            } else {
                (0..d).map(|k| wk(k) * a[i * d + k] as f64 * a[j * d + k] as f64).sum()
            };
            s[i * n + j] = gamma * g + if i == j { diag[i] as f64 } else { 0.0 };
        }
    }
    s
}

#[test]
fn cg_matches_dense_solve_in_both_spaces() {
    use rand::Rng;
    let gpu = gpu();
    let mut r = rng(23);
    // d > CHUNK so a sample spans several workgroups.
    // (m, d, batch, random diagonal): d > CHUNK takes the multi-workgroup
    // kernels; a constant diagonal makes M a rank-m update of a scaled
    // identity, which CG solves in at most m + 1 iterations.
    for &(m, d, batch, random_diag) in &[
        (5usize, 9usize, 3usize, true),
        (4, 300, 67, false),
        (7, 1301, 2, false),
        (6, 2100, 3, true),
    ] {
        let a = randn(&mut r, m * d);
        let op = Dense::new(&gpu, &HostTensor::new(vec![m, d], a.clone()), [d, 1, 1]).unwrap();
        for (input, weighted) in [(true, false), (false, false), (true, true), (false, true)] {
            let per = if input { d } else { m };
            let other = if input { m } else { d };
            // A diagonal weight between the Gram's halves (C-DPS's spectral
            // precisions), some of it zero as for s = 0 components.
            let weight: Option<Vec<f32>> = weighted.then(|| {
                (0..batch * other)
                    .map(|k| if k % 5 == 3 { 0.0 } else { 0.2 + 1.3 * r.random::<f32>() })
                    .collect()
            });
            let diag: Vec<f32> = (0..batch * per)
                .map(|_| if random_diag { 0.5 + r.random::<f32>() } else { 0.8 })
                .collect();
            let b = randn(&mut r, batch * per);
            let gamma = 0.7f32;
            let tb = Tensor::from_slice(&gpu, "b", &[batch, per], &b).unwrap();
            let td = Tensor::from_slice(&gpu, "diag", &[batch, per], &diag).unwrap();
            let tx = Tensor::zeros(&gpu, "x", &[batch, per]).unwrap();
            let space = if input { Space::Input } else { Space::Output };
            let tw = weight
                .as_ref()
                .map(|w| Tensor::from_slice(&gpu, "weight", &[batch, other], w).unwrap());
            let sys = CgSystem {
                op: &op,
                space,
                b: &tb,
                x: &tx,
                diag: &td,
                weight: tw.as_ref(),
                gamma: 0.3,
            };
            let cg = Cg::new(&gpu, sys, CgStop { tol: 1e-6, iters: 80 }).unwrap();
            cg.set_gamma(&gpu, gamma);
            cg.plan.run(&gpu).unwrap();
            let got = tx.read(&gpu).unwrap();
            let stats = cg.stats(&gpu).unwrap();
            assert_eq!(stats.unconverged, 0, "all samples converge: {stats:?}");
            // A rank-m update of a scaled identity: m + 1 iterations in exact
            // arithmetic, a few more in f32. Weighted input-space systems, whose
            // spectrum is wider, take up to ~2m in f32 (measured); for them the
            // solution is what is checked.
            let bound = if random_diag || (weighted && input) {
                80
            } else {
                per.min(m + 1) + 3
            };
            assert!(
                stats.last.iter().all(|&i| i >= 1 && i as usize <= bound),
                "iterations {stats:?}"
            );
            for s in 0..batch {
                let ws = weight.as_ref().map(|w| &w[s * other..(s + 1) * other]);
                let sys = system(&a, m, d, &diag[s * per..(s + 1) * per], ws, gamma as f64, input);
                let bs: Vec<f64> = b[s * per..(s + 1) * per].iter().map(|&v| v as f64).collect();
                let want: Vec<f32> = chol_solve(&sys, per, &bs).iter().map(|&v| v as f32).collect();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_close(
                    &format!("cg m={m} d={d} input={input} weighted={weighted} sample {s}"),
                    &got[s * per..(s + 1) * per],
                    &want,
                    1e-4 * scale,
                    1e-3,
                );
            }
            // Replaying solves again from scratch: same answer, solve count 2.
            cg.plan.run(&gpu).unwrap();
            assert_close("cg replay", &tx.read(&gpu).unwrap(), &got, 1e-6, 1e-6);
            assert_eq!(cg.stats(&gpu).unwrap().solves, 2);
        }
    }
}

#[test]
fn pw_cg_draw_has_covariance_lambda_inverse() {
    let gpu = gpu();
    let mut r = rng(24);
    let (m, d) = (3, 5);
    let a = randn(&mut r, m * d);
    let op = Dense::new(&gpu, &HostTensor::new(vec![m, d], a.clone()), [d, 1, 1]).unwrap();
    let batch = 4000;
    let diag1: Vec<f32> = (0..d).map(|j| 0.3 + 0.2 * j as f32).collect();
    let diag: Vec<f32> = (0..batch).flat_map(|_| diag1.clone()).collect();
    let gamma = 2.0f32;
    let td = Tensor::from_slice(&gpu, "diag", &[batch, d], &diag).unwrap();
    let out = Tensor::zeros(&gpu, "v", &[batch, d]).unwrap();
    let draw = PwCgDraw::new(&gpu, &op, &td, gamma, &out, 7, CgStop { tol: 1e-6, iters: 12 }).unwrap();
    let mut samples: Vec<f32> = Vec::new();
    for s in 0..3u32 {
        draw.set_stream(&gpu, s);
        draw.plan.run(&gpu).unwrap();
        samples.extend(out.read(&gpu).unwrap());
    }
    let n = samples.len() / d;
    // Lambda^{-1} by solving against unit vectors.
    let lam = system(&a, m, d, &diag1, None, gamma as f64, true);
    let mut inv = vec![0f64; d * d];
    for j in 0..d {
        let mut e = vec![0f64; d];
        e[j] = 1.0;
        let col = chol_solve(&lam, d, &e);
        for i in 0..d {
            inv[i * d + j] = col[i];
        }
    }
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|s| samples[s * d + j] as f64).sum::<f64>() / n as f64)
        .collect();
    for i in 0..d {
        // mean within 5 standard errors of 0
        assert!(
            mean[i].abs() <= 5.0 * (inv[i * d + i] / n as f64).sqrt(),
            "mean[{i}] = {}",
            mean[i]
        );
        for j in 0..d {
            let c: f64 = (0..n)
                .map(|s| (samples[s * d + i] as f64 - mean[i]) * (samples[s * d + j] as f64 - mean[j]))
                .sum::<f64>()
                / (n - 1) as f64;
            // sampling std of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
            let se = ((inv[i * d + i] * inv[j * d + j] + inv[i * d + j].powi(2)) / n as f64).sqrt();
            assert!(
                (c - inv[i * d + j]).abs() <= 5.0 * se,
                "cov[{i},{j}] = {c}, want {} (se {se})",
                inv[i * d + j]
            );
        }
    }
}
