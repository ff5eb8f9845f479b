//! A float64 replay of whole SMC runs (issue 27): the twisted diffusion
//! sampler exactly as src/samplers/smc.rs documents it (twist
//! N(y; A x0hat(x_t), sigma_y^2 I + (b_t^2 / a_t^2) A A^T), the default
//! `--smc-twist operator`, here as a dense solve where the GPU works per
//! component in the SVD basis), the guided DDPM proposal,
//! log p/q per step, systematic resampling below half the particles, the
//! exact likelihood at the end, a forced final resampling), on the exact
//! mixture eps and its exact Jacobian, in plain Rust. On low-dimensional
//! mixtures of the fixtures' family (d = 2 and 3, one measurement) the
//! replay must converge as the population grows, and the GPU sampler must
//! land where the replay does with as many particles.

mod common;
use common::gmm::*;
use common::{randn, rng};

use rand::Rng;
use tweedie::kernels::smc::STAT_ESS;
use tweedie::process::Process;
use tweedie::samplers::smc::Smc;
use tweedie::samplers::{Measurement, Method, MethodOptions, Sampler, SamplerOptions};
use tweedie::schedule::{Schedule, VarianceType};
use tweedie::tensor::Tensor;

/// What the replay reports beside its samples.
struct Replay {
    samples: Vec<f32>,
    /// Mean ESS / P over the weighings (the final forced one excluded).
    mean_ess: f64,
}

/// Systematic resampling: ancestors of `w` (normalised) from offset `u`.
fn systematic(w: &[f64], u: f64) -> Vec<usize> {
    let p = w.len();
    let mut cdf = Vec::with_capacity(p);
    let mut acc = 0.0;
    for wi in w {
        acc += wi;
        cdf.push(acc);
    }
    (0..p)
        .map(|j| {
            let target = (j as f64 + u) / p as f64 * acc;
            cdf.iter().position(|&c| c > target).unwrap_or(p - 1)
        })
        .collect()
}

/// Normalised weights of log-weights, and their ESS / P.
fn normalise(logw: &[f64]) -> (Vec<f64>, f64) {
    let mx = logw.iter().cloned().fold(f64::MIN, f64::max);
    let w: Vec<f64> = logw.iter().map(|l| (l - mx).exp()).collect();
    let t: f64 = w.iter().sum();
    let w: Vec<f64> = w.iter().map(|v| v / t).collect();
    let ess = 1.0 / (w.iter().map(|v| v * v).sum::<f64>() * w.len() as f64);
    (w, ess)
}

/// One particle's twist at x_t: eps, x0hat, log p~_t(y | x_t) = -|y - A
/// x0hat|^2 / (2 v) and its gradient in x_t (the exact mixture eps and its
/// exact Jacobian).
struct Twisted {
    eps: Vec<f64>,
    x0: Vec<f64>,
    twist: f64,
    grad: Vec<f64>,
}

/// The twist log N(y; A x0hat(x_t), cov) (less its constant) and its
/// gradient in x_t.
fn twisted(p: &Mixture64, xs: &[f64], a: f64, b: f64, cov: &[f64]) -> Twisted {
    let d = p.d;
    let (resp, sk, s) = diffused_score(&p.w, &p.mu, &p.var, xs, a, b);
    let x0: Vec<f64> = (0..d).map(|j| (xs[j] + b * b * s[j]) / a).collect();
    let ax = p.ax(&x0);
    let res: Vec<f64> = (0..p.m).map(|q| p.y[q] - ax[q]).collect();
    let white = solve(cov.to_vec(), p.m, res.clone());
    // d twist / d x = J_x0^T A^T cov^{-1} r, J_x0 = (I + b^2 H) / a with H the
    // diffused log-density's Hessian (symmetric):
    // H g = sum_k resp_k (s_k (s_k . g) - g / v_k) - s (s . g).
    let g = p.atv(&white);
    let sg: f64 = s.iter().zip(&g).map(|(a, b)| a * b).sum();
    let mut hg: Vec<f64> = s.iter().map(|sj| -sj * sg).collect();
    for c in 0..p.k {
        let skc = &sk[c * d..(c + 1) * d];
        let skg: f64 = skc.iter().zip(&g).map(|(a, b)| a * b).sum();
        for j in 0..d {
            let vk = a * a * p.var[c * d + j] + b * b;
            hg[j] += resp[c] * (skc[j] * skg - g[j] / vk);
        }
    }
    Twisted {
        eps: s.iter().map(|sj| -b * sj).collect(),
        twist: -0.5 * res.iter().zip(&white).map(|(e, w)| e * w).sum::<f64>(),
        grad: (0..d).map(|j| (g[j] + b * b * hg[j]) / a).collect(),
        x0,
    }
}

/// One population of the twisted diffusion sampler in float64 (see the
/// module doc of src/samplers/smc.rs): `steps` respaced DDPM steps with the
/// fixed-large variance, no clipping. A step is [`Pop64::weigh`], then
/// [`Pop64::resampled`] when the ESS fell below half, then [`Pop64::advance`]
/// with the step's noise, so a replay can take its noise and offsets from
/// anywhere (its own generator, or the GPU's).
struct Pop64<'a> {
    p: &'a Mixture64,
    sched: Schedule,
    /// Particles [P][d] at the current step.
    x: Vec<Vec<f64>>,
    logw: Vec<f64>,
    /// The last weighing's twist, gathered to the ancestors.
    carried: Vec<f64>,
    /// log p/q of the last proposal.
    lpq: Vec<f64>,
    /// The current step's twists (set by `weigh`).
    tw: Vec<Twisted>,
}

impl<'a> Pop64<'a> {
    fn new(p: &'a Mixture64, steps: usize, x: Vec<Vec<f64>>) -> Pop64<'a> {
        let n = x.len();
        Pop64 {
            p,
            sched: Schedule::linear(1000, steps).unwrap(),
            x,
            logw: vec![0.0; n],
            carried: vec![0.0; n],
            lpq: vec![0.0; n],
            tw: Vec::new(),
        }
    }

    /// Step i's twists and log w += twist_t - carried twist + log p/q; returns
    /// the normalised weights and ESS / P.
    fn weigh(&mut self, i: usize) -> (Vec<f64>, f64) {
        let abar = self.sched.alphas_cumprod[i];
        let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
        // The default `--smc-twist operator`: sigma_y^2 I + (b^2 / a^2) A A^T.
        let cov = self.p.meas_cov((b / a) * (b / a));
        self.tw = self.x.iter().map(|xs| twisted(self.p, xs, a, b, &cov)).collect();
        for q in 0..self.x.len() {
            self.logw[q] += self.tw[q].twist - self.carried[q] + self.lpq[q];
        }
        normalise(&self.logw)
    }

    /// A resampling: equal weights again.
    fn resampled(&mut self) {
        self.logw.iter_mut().for_each(|l| *l = 0.0);
    }

    /// The guided proposal from the ancestors `anc` with noise `z` [P * d]:
    /// x_{t-1} = mean + shift + sd z, log p/q = -shift^2 / (2 sd^2) - shift z / sd
    /// per element (the plain mean and 0 at the last step).
    fn advance(&mut self, i: usize, anc: &[usize], z: &[f64]) {
        let (sched, d) = (&self.sched, self.p.d);
        let sd2 = sched.fixed_log_variance(VarianceType::FixedLarge, i).exp();
        let sd = sd2.sqrt();
        let mut next = Vec::with_capacity(anc.len());
        for (q, &an) in anc.iter().enumerate() {
            let (xs, t) = (&self.x[an], &self.tw[an]);
            self.carried[q] = t.twist;
            let mut l = 0.0;
            let xn: Vec<f64> = (0..d)
                .map(|j| {
                    let mean = sched.posterior_mean_coef1[i] * t.x0[j] + sched.posterior_mean_coef2[i] * xs[j];
                    if i == 0 {
                        return mean;
                    }
                    let shift = sd2 * t.grad[j];
                    let zj = z[q * d + j];
                    l += -shift * shift / (2.0 * sd2) - shift * zj / sd;
                    mean + shift + sd * zj
                })
                .collect();
            self.lpq[q] = l;
            next.push(xn);
        }
        self.x = next;
    }

    /// The end: the exact log-likelihood per particle replaces the last twist;
    /// returns it and the final normalised weights.
    fn finish(&mut self) -> (Vec<f64>, Vec<f64>) {
        let s2 = self.p.sigma_y * self.p.sigma_y;
        let exact: Vec<f64> = self
            .x
            .iter()
            .map(|x| {
                let ax = self.p.ax(x);
                -0.5 * (0..self.p.m).map(|i| (self.p.y[i] - ax[i]).powi(2)).sum::<f64>() / s2
            })
            .collect();
        for (q, e) in exact.iter().enumerate() {
            self.logw[q] += e - self.carried[q] + self.lpq[q];
        }
        (exact, normalise(&self.logw).0)
    }
}

/// A whole population run on the replay's own noise (seeded).
fn tds64(p: &Mixture64, steps: usize, particles: usize, seed: u64) -> Replay {
    let d = p.d;
    let mut r = rng(seed);
    let x: Vec<Vec<f64>> = (0..particles)
        .map(|_| randn(&mut r, d).iter().map(|&v| v as f64).collect())
        .collect();
    let mut pop = Pop64::new(p, steps, x);
    let mut ess_sum = 0.0;
    for i in (0..steps).rev() {
        let (w, ess) = pop.weigh(i);
        ess_sum += ess;
        let anc: Vec<usize> = if ess < 0.5 {
            pop.resampled();
            systematic(&w, r.random::<f64>())
        } else {
            (0..particles).collect()
        };
        let z: Vec<f64> = randn(&mut r, particles * d).iter().map(|&v| v as f64).collect();
        pop.advance(i, &anc, &z);
    }
    let (_, w) = pop.finish();
    let anc = systematic(&w, r.random::<f64>());
    Replay {
        samples: anc.iter().flat_map(|&q| pop.x[q].iter().map(|&v| v as f32)).collect(),
        mean_ess: ess_sum / steps as f64,
    }
}

/// `n` replay samples from populations of `particles` (n a multiple of it).
fn replay(p: &Mixture64, steps: usize, particles: usize, n: usize, seed: u64) -> (Vec<f32>, f64) {
    let mut out = Vec::with_capacity(n * p.d);
    let mut ess = 0.0;
    for g in 0..n / particles {
        let run = tds64(p, steps, particles, seed.wrapping_mul(1000) + g as u64);
        ess += run.mean_ess;
        out.extend(run.samples);
    }
    (out, ess / (n / particles) as f64)
}

fn case(d: usize, m: usize, seed: u64, n: usize) -> Case {
    let problem = family(d, m, seed);
    let reference = exact_posterior_samples(&problem, n, 77);
    Case { problem, reference }
}

/// The replay converges as the population grows: on a d = 2 and a d = 3
/// problem (one measurement), sliced W2 to 20000 exact draws falls from 10
/// to 100 to 1000 particles and reaches the exact sampling floor.
fn check_replay_converges(d: usize, seed: u64) {
    let c = case(d, 1, seed, 20000);
    let p = Mixture64::new(&c.problem);
    let n = 2000;
    let sw = |x: &[f32]| sliced_w2(x, &c.reference, d, 5);
    let floor = sw(&exact_posterior_samples(&c.problem, n, 3));
    let prior = sw(&prior_samples(&c.problem, n, 4));
    let mut rows = Vec::new();
    for particles in [10, 100, 1000] {
        let (x, ess) = replay(&p, 200, particles, n, 11);
        let v = sw(&x);
        println!("d{d} seed {seed}: {particles} particles: sliced W2 {v:.4} (prior {prior:.4}, floor {floor:.4}), mean ESS {ess:.3}");
        rows.push(v);
    }
    // Measured on lavapipe: d2 1.490 / 0.030 / 0.062 (floor 0.032), d3 0.418 /
    // 0.319 / 0.378 (floor 0.347; its unmeasured directions are wide).
    assert!(rows[1] < rows[0], "d{d}: 100 particles no closer than 10: {rows:?}");
    assert!(rows[2] < rows[0], "d{d}: 1000 particles no closer than 10: {rows:?}");
    assert!(
        rows[2] < 3.0 * floor,
        "d{d}: 1000 particles far from the exact floor: {rows:?}, prior {prior}, floor {floor}"
    );
}

#[test]
fn replay_converges_with_particles_d2() {
    check_replay_converges(2, 21);
}

#[test]
fn replay_converges_with_particles_d3() {
    check_replay_converges(3, 22);
}

/// The GPU sampler lands where the float64 replay does with the same
/// particles and steps (statistically: different noise streams).
#[test]
fn gpu_smc_agrees_with_the_replay() {
    for (d, seed) in [(2, 21), (3, 22)] {
        let c = case(d, 1, seed, 20000);
        let p = Mixture64::new(&c.problem);
        let (n, particles, steps) = (2000, 500, 200);
        let sw = |x: &[f32]| sliced_w2(x, &c.reference, d, 5);
        let floor = sw(&exact_posterior_samples(&c.problem, n, 3));
        let prior = sw(&prior_samples(&c.problem, n, 4));
        let (x64, _) = replay(&p, steps, particles, n, 12);
        let opts = SamplerOptions {
            method: MethodOptions::default()
                .with("particles", particles)
                .unwrap()
                .with("smc-variant", "tds")
                .unwrap(),
            ..mixture_opts(steps, 13)
        };
        let (x, _) = sample_stats(&c, Method::Smc, &opts, n);
        let (v64, v) = (sw(&x64), sw(&x));
        println!("d{d}: GPU {v:.4}, replay {v64:.4} (prior {prior:.4}, floor {floor:.4})");
        // Measured on lavapipe: d2 GPU 0.065, replay 0.028 (floor 0.032); d3
        // 0.348 and 0.456 (floor 0.347).
        assert!(
            v < 3.0 * floor && v64 < 3.0 * floor,
            "d{d}: GPU {v}, replay {v64}, floor {floor}"
        );
        assert!(
            (v - v64).abs() < 1.5 * floor,
            "d{d}: GPU {v} vs replay {v64} (floor {floor})"
        );
    }
}

/// The largest disagreements of a GPU run with its float64 replay on the
/// GPU's own noise (x_T, z per step, systematic offsets).
#[derive(Debug, Default)]
struct Agreement {
    /// Teacher-forced (the replay restarted from the GPU's x_t, log-weights,
    /// carried twists and log p/q every step), relative to max(1, |value|):
    /// eps, the twist at x_t, log p/q per particle, x_{t-1}.
    eps: f64,
    twist: f64,
    lpq: f64,
    x: f64,
    /// Normalised weights (times P, so 1 is a uniform weight) and ESS / P.
    w: f64,
    ess: f64,
    /// Ancestors that differ, over all resampling steps.
    ancestors: usize,
    resamplings: usize,
    /// Carried twists that are not the step's twist at the particle's ancestor.
    carried: usize,
    /// The final weighing: exact log-likelihood and the weights (times P).
    exact: f64,
    final_w: f64,
    /// The free-running replay (its own state and weights, the GPU's noise):
    /// its ancestors that differ from the GPU's (it then follows the GPU's,
    /// so that one tie on a cdf boundary does not part the runs), and max
    /// |x - x64| over the final samples.
    free_flips: usize,
    free_x: f64,
    /// Sliced W2 to the exact posterior: GPU, free-running replay.
    sw_gpu: f64,
    sw_replay: f64,
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// One GPU SMC population of `particles`, stepped one step at a time with
/// every per-particle quantity read back and compared with float64 on the
/// same noise.
fn same_noise(c: &Case, particles: usize, steps: usize, seed: u64) -> Agreement {
    let gpu = common::gpu();
    let pr = &c.problem;
    let (p, d) = (Mixture64::new(pr), pr.d);
    let (model, op) = prior_and_operator(&gpu, pr, &Process::default());
    let meas = Measurement {
        op: op.as_ref(),
        y: &pr.y,
        sigma_y: pr.sigma_y,
    };
    let opts = SamplerOptions {
        method: MethodOptions::default()
            .with("particles", particles)
            .unwrap()
            .with("smc-variant", "tds")
            .unwrap(),
        ..mixture_opts(steps, seed)
    };
    let s = Sampler::new(&gpu, Method::Smc, &model, Some(meas), particles, &opts).unwrap();
    let smc = s.method_state::<Smc>().unwrap();
    let tr = smc.trace();
    let read = |t: &Tensor| -> Vec<f64> { t.read(&gpu).unwrap().iter().map(|&v| v as f64).collect() };
    let rows = |v: Vec<f64>| -> Vec<Vec<f64>> { v.chunks(d).map(|r| r.to_vec()).collect() };
    // Normalised weights from the prefix sums smc_cumsum leaves in `cdf`.
    let weights = || -> Vec<f64> {
        let cdf = read(&smc.pop.cdf);
        (0..particles)
            .map(|k| cdf[k] - if k > 0 { cdf[k - 1] } else { 0.0 })
            .collect()
    };
    let ancestors = || -> Vec<usize> {
        let a: Vec<u32> = gpu.read(&smc.pop.ancestors, 0, particles).unwrap();
        a.iter().map(|&k| k as usize).collect()
    };
    let ess_of = || read(&smc.pop.stats)[STAT_ESS];
    let mut out = Agreement::default();
    let pf = particles as f64;
    s.init(&gpu).unwrap();
    let x_t = rows(read(&s.core.x));
    let mut forced = Pop64::new(&p, steps, x_t.clone());
    let mut free = Pop64::new(&p, steps, x_t);
    for i in (0..steps).rev() {
        s.step(&gpu, i).unwrap();
        let u = Smc::offset(seed, i) as f64;
        let z = read(&s.core.z);
        // Step 0's ancestors are overwritten by the final draw's.
        let mut gpu_anc = None;
        let (w, ess) = forced.weigh(i);
        out.eps = out.eps.max(rel(
            &read(&s.core.eps),
            &forced.tw.iter().flat_map(|t| t.eps.clone()).collect::<Vec<_>>(),
        ));
        let anc: Vec<usize> = if ess < 0.5 {
            forced.resampled();
            systematic(&w, u)
        } else {
            (0..particles).collect()
        };
        if i > 0 {
            // Step 0's weighing is overwritten by the final one: its checks follow.
            let twist = read(tr.twist);
            out.twist = out
                .twist
                .max(rel(&twist, &forced.tw.iter().map(|t| t.twist).collect::<Vec<_>>()));
            let wg = weights();
            out.w = out
                .w
                .max(wg.iter().zip(&w).map(|(a, b)| pf * (a - b).abs()).fold(0.0, f64::max));
            out.ess = out.ess.max((ess_of() - ess).abs());
            let ag = ancestors();
            gpu_anc = Some(ag.clone());
            if ess < 0.5 {
                out.resamplings += 1;
                out.ancestors += ag.iter().zip(&anc).filter(|(a, b)| a != b).count();
            }
            let carried = read(tr.carried_twist);
            out.carried += (0..particles).filter(|&k| carried[k] != twist[ag[k]]).count();
            // Continue from the GPU's own choice of ancestors.
            forced.advance(i, &ag, &z);
            let (xg, lpq) = (rows(read(&s.core.x)), read(tr.lpq));
            out.x = out.x.max(rel(&xg.concat(), &forced.x.concat()));
            out.lpq = out.lpq.max(rel(&lpq, &forced.lpq));
            // Teacher forcing: the next step starts from the GPU's state.
            forced.x = xg;
            forced.logw = read(&smc.pop.logw);
            forced.carried = carried;
            forced.lpq = lpq;
        } else {
            forced.advance(0, &anc, &z);
            let (exact, wf) = forced.finish();
            out.exact = rel(&read(tr.twist), &exact);
            out.final_w = weights()
                .iter()
                .zip(&wf)
                .map(|(a, b)| pf * (a - b).abs())
                .fold(0.0, f64::max);
        }
        // The free-running replay: the GPU's noise and offsets, its own state.
        let (w, ess) = free.weigh(i);
        let mut anc: Vec<usize> = (0..particles).collect();
        if ess < 0.5 {
            free.resampled();
            anc = systematic(&w, u);
            if let Some(ag) = &gpu_anc {
                out.free_flips += ag.iter().zip(&anc).filter(|(a, b)| a != b).count();
                anc = ag.clone();
            }
        }
        free.advance(i, &anc, &z);
    }
    let (_, w) = free.finish();
    let ag = ancestors();
    let anc = systematic(&w, Smc::offset(seed, steps) as f64);
    out.free_flips += ag.iter().zip(&anc).filter(|(a, b)| a != b).count();
    let x64: Vec<f32> = ag.iter().flat_map(|&q| free.x[q].iter().map(|&v| v as f32)).collect();
    let x = s.x().read(&gpu).unwrap();
    out.free_x = x
        .iter()
        .zip(&x64)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    out.sw_gpu = sliced_w2(&x, &c.reference, d, 5);
    out.sw_replay = sliced_w2(&x64, &c.reference, d, 5);
    out
}

/// The GPU sampler is the float64 replay, particle by particle, on the GPU's
/// own noise: every step's eps, twist, log p/q, weights, ESS, ancestors,
/// carried twist and move agree to f32 rounding, and so do the final
/// exact-likelihood weights and samples (d = 2 and d = 20 with one
/// measurement, d = 8 with three).
#[test]
fn gpu_smc_is_the_replay_on_the_same_noise() {
    // m = 3 at d = 8: the twist's covariance is not a multiple of the
    // identity, so the GPU's per-component form in the SVD basis meets the
    // replay's dense solve.
    for (d, m, family_seed, particles, steps) in [(2, 1, 21, 500, 200), (20, 1, 31, 500, 200), (8, 3, 41, 300, 100)] {
        let c = case(d, m, family_seed, 20000);
        let a = same_noise(&c, particles, steps, 3);
        println!("d{d}, {particles} particles, {steps} steps: {a:?}");
        // Measured on lavapipe (d20, 1000 particles, 1000 steps): eps 4e-6,
        // twist 2.5e-5, log p/q 6e-6, x 3e-7, weights 1.2e-4 / P, ESS 3e-7, no
        // ancestor or carried twist differs, final weights 8e-5 / P, samples
        // 3.4e-5 apart, sliced W2 0.2301 both. At 500 particles and 200 steps
        // one ancestor flips (a tie on the cdf).
        assert!(
            a.eps < 1e-4 && a.twist < 1e-3 && a.lpq < 1e-4 && a.x < 1e-5,
            "d{d}: {a:?}"
        );
        assert!(
            a.w < 1e-2 && a.ess < 1e-4 && a.exact < 1e-3 && a.final_w < 1e-2,
            "d{d}: {a:?}"
        );
        assert!(a.resamplings > 0, "d{d}: no resampling to compare: {a:?}");
        assert!(a.ancestors * 200 <= a.resamplings * particles, "d{d}: {a:?}");
        assert_eq!(
            a.carried, 0,
            "d{d}: carried twists not gathered with their particles: {a:?}"
        );
        assert!(
            a.free_flips * 100 <= particles && a.free_x < 1e-3 && (a.sw_gpu - a.sw_replay).abs() < 1e-3,
            "d{d}: {a:?}"
        );
    }
}

/// One population of the spectral sampler (src/samplers/smc_spectral.rs) in
/// float64 for one measurement (m = 1: A = u s v^T with u = 1, s = |a|,
/// v = a / s): the potential N(y; s kappa (v.x), s^2 rho + sigma_y^2) at each
/// level with prior variance `v0`, the auxiliary weights Z / g (no divide at
/// the first step), systematic resampling below half the particles, the
/// exact product proposal along v and the reverse kernel elsewhere, the
/// likelihood at x_0 in the last weighing and a forced final resampling.
fn spectral64(p: &Mixture64, steps: usize, particles: usize, v0: f64, seed: u64) -> Vec<f32> {
    use tweedie::samplers::smc_spectral::potential;
    assert_eq!(p.m, 1, "the replay takes one measurement");
    let d = p.d;
    let s = p.a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let v: Vec<f64> = p.a.iter().map(|a| a / s).collect();
    let (y, s2y) = (p.y[0], p.sigma_y * p.sigma_y);
    let dot = |x: &[f64]| x.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
    let sched = Schedule::linear(1000, steps).unwrap();
    let level = |i: usize| {
        let abar = sched.alphas_cumprod[i];
        (abar.sqrt(), (1.0 - abar).sqrt())
    };
    let mut r = rng(seed);
    let mut x: Vec<Vec<f64>> = (0..particles)
        .map(|_| randn(&mut r, d).iter().map(|&e| e as f64).collect())
        .collect();
    let mut logw = vec![0.0; particles];
    for i in (0..steps).rev() {
        let (a, b) = level(i);
        let (an, bn) = if i > 0 { level(i - 1) } else { (1.0, 0.0) };
        let var = if i > 0 {
            sched.fixed_log_variance(VarianceType::FixedLarge, i).exp()
        } else {
            0.0
        };
        let (kappa, rho) = potential(a, b, v0);
        let (kn, rn) = potential(an, bn, v0);
        let mu: Vec<Vec<f64>> = x
            .iter()
            .map(|xs| {
                let eps = p.eps(xs, a, b);
                (0..d)
                    .map(|j| {
                        let x0 = (xs[j] - b * eps[j]) / a;
                        sched.posterior_mean_coef1[i] * x0 + sched.posterior_mean_coef2[i] * xs[j]
                    })
                    .collect()
            })
            .collect();
        let gain = s * kn;
        let dn = s * s * rn + s2y;
        let big_s = gain * gain * var + dn;
        for q in 0..particles {
            let e = y - gain * dot(&mu[q]);
            logw[q] += -0.5 * e * e / big_s;
            if i + 1 < steps {
                let e = y - s * kappa * dot(&x[q]);
                logw[q] += 0.5 * e * e / (s * s * rho + s2y);
            }
        }
        let (w, ess) = normalise(&logw);
        let anc: Vec<usize> = if ess < 0.5 {
            logw.iter_mut().for_each(|l| *l = 0.0);
            systematic(&w, r.random::<f64>())
        } else {
            (0..particles).collect()
        };
        x = anc
            .iter()
            .map(|&k| {
                let m = &mu[k];
                let z: Vec<f64> = randn(&mut r, d).iter().map(|&e| e as f64).collect();
                let delta =
                    var * gain / big_s * (y - gain * dot(m)) + ((var * dn / big_s).sqrt() - var.sqrt()) * dot(&z);
                (0..d).map(|j| m[j] + var.sqrt() * z[j] + v[j] * delta).collect()
            })
            .collect();
    }
    let (w, _) = normalise(&logw);
    systematic(&w, r.random::<f64>())
        .iter()
        .flat_map(|&k| x[k].iter().map(|&e| e as f32))
        .collect()
}

/// The mixture's variance per coordinate, averaged (the spectral sampler's
/// default `--smc-prior-var` for a mixture).
fn prior_var(p: &Mixture64) -> f64 {
    let (k, d) = (p.k, p.d);
    let wsum: f64 = p.w.iter().sum();
    (0..d)
        .map(|j| {
            let m1: f64 = (0..k).map(|c| p.w[c] * p.mu[c * d + j]).sum::<f64>() / wsum;
            let m2: f64 = (0..k)
                .map(|c| p.w[c] * (p.var[c * d + j] + p.mu[c * d + j].powi(2)))
                .sum::<f64>()
                / wsum;
            m2 - m1 * m1
        })
        .sum::<f64>()
        / d as f64
}

/// The spectral sampler's float64 replay is at the exact floor from 10
/// particles on (d = 2 and 3, one measurement, 200 steps, 2000 samples: with
/// one measured component its proposal is the exact conditional there, so
/// the population barely matters; measured d2 0.047 / 0.025 / 0.039 for 10 /
/// 100 / 1000 particles, floor 0.032; d3 0.27 / 0.37 / 0.34, floor 0.35;
/// the fall with particles on a harder problem is tests/smc_spectral.rs's),
/// and the GPU sampler with 500 particles lands where the replay does
/// (different noise streams: statistically; d2 0.029 vs 0.039, d3 0.41 vs
/// 0.46).
#[test]
fn spectral_replay_reaches_the_floor_and_the_gpu_agrees() {
    for (d, seed) in [(2, 21), (3, 22)] {
        let c = case(d, 1, seed, 20000);
        let p = Mixture64::new(&c.problem);
        let v0 = prior_var(&p);
        let n = 2000;
        let sw = |x: &[f32]| sliced_w2(x, &c.reference, d, 5);
        let floor = sw(&exact_posterior_samples(&c.problem, n, 3));
        let prior = sw(&prior_samples(&c.problem, n, 4));
        let run = |particles: usize, seed: u64| -> Vec<f32> {
            (0..n / particles)
                .flat_map(|g| spectral64(&p, 200, particles, v0, seed * 1000 + g as u64))
                .collect()
        };
        let rows: Vec<f64> = [10, 100, 1000].iter().map(|&k| sw(&run(k, 11))).collect();
        let v64 = sw(&run(500, 12));
        let opts = SamplerOptions {
            method: MethodOptions::default()
                .with("particles", 500)
                .unwrap()
                .with("smc-variant", "spectral")
                .unwrap()
                .with("smc-prior-var", v0)
                .unwrap(),
            ..mixture_opts(200, 13)
        };
        let gpu = sw(&sample_stats(&c, Method::Smc, &opts, n).0);
        println!(
            "d{d} spectral replay: 10 / 100 / 1000 particles {rows:.4?}; 500: replay {v64:.4}, GPU {gpu:.4} (prior {prior:.4}, floor {floor:.4}, v0 {v0:.3})"
        );
        assert!(rows.iter().all(|&w| w < 3.0 * floor), "d{d}: {rows:?}, floor {floor}");
        assert!(
            gpu < 3.0 * floor && v64 < 3.0 * floor,
            "d{d}: GPU {gpu}, replay {v64}, floor {floor}"
        );
        assert!(
            (gpu - v64).abs() < 1.5 * floor,
            "d{d}: GPU {gpu} vs replay {v64} (floor {floor})"
        );
    }
}
