//! Gaussian-mixture inverse problems (tests/fixtures/gmm): loading, prior
//! and exact posterior samples, and the sliced Wasserstein-2 score every
//! posterior-accuracy test uses.

use rand::Rng;
use tweedie::io::TensorFile;
use tweedie::operators::Operator;
use tweedie::process::Process;
use tweedie::samplers::problem::GmmProblem;
use tweedie::samplers::{GmmPrior, Measurement, Method, RunStats, Sampler, SamplerOptions};
use tweedie::schedule::VarianceType;
use tweedie::tensor::HostTensor;
use tweedie::Gpu;

use super::{fixture, randn, rng};

/// Sliced W2: 1000 random unit directions, sorted projections, RMS difference;
/// when the sample counts differ the larger set is read at the smaller set's
/// quantile levels (linear interpolation).
pub fn sliced_w2(a: &[f32], b: &[f32], d: usize, seed: u64) -> f64 {
    let mut r = rng(seed);
    let (na, nb) = (a.len() / d, b.len() / d);
    let (small, ns, large, nl) = if na <= nb { (a, na, b, nb) } else { (b, nb, a, na) };
    let mut total = 0.0;
    let dirs = 1000;
    for _ in 0..dirs {
        let mut u: Vec<f64> = randn(&mut r, d).iter().map(|&v| v as f64).collect();
        let nrm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
        u.iter_mut().for_each(|v| *v /= nrm);
        let proj = |x: &[f32], n: usize| {
            let mut p: Vec<f64> = (0..n)
                .map(|i| (0..d).map(|j| x[i * d + j] as f64 * u[j]).sum())
                .collect();
            p.sort_by(|a, b| a.partial_cmp(b).unwrap());
            p
        };
        let ps = proj(small, ns);
        let pl = proj(large, nl);
        let mut s = 0.0;
        for (k, v) in ps.iter().enumerate() {
            let q = (k as f64 + 0.5) / ns as f64 * nl as f64 - 0.5;
            let lo = q.floor().clamp(0.0, (nl - 1) as f64) as usize;
            let hi = (lo + 1).min(nl - 1);
            let f = (q - lo as f64).clamp(0.0, 1.0);
            let w = pl[lo] * (1.0 - f) + pl[hi] * f;
            s += (v - w).powi(2);
        }
        total += s / ns as f64;
    }
    (total / dirs as f64).sqrt()
}

fn pick(r: &mut rand::rngs::StdRng, logw: &[f64]) -> usize {
    let mx = logw.iter().cloned().fold(f64::MIN, f64::max);
    let w: Vec<f64> = logw.iter().map(|l| (l - mx).exp()).collect();
    let mut u = r.random::<f64>() * w.iter().sum::<f64>();
    for (k, &wk) in w.iter().enumerate() {
        if u < wk {
            return k;
        }
        u -= wk;
    }
    w.len() - 1
}

pub fn prior_samples(p: &GmmProblem, n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let logw: Vec<f64> = p.weights.iter().map(|&w| (w as f64).ln()).collect();
    let mut out = Vec::with_capacity(n * p.d);
    for _ in 0..n {
        let k = pick(&mut r, &logw);
        let z = randn(&mut r, p.d);
        for (j, zj) in z.iter().enumerate() {
            out.push(p.means[k * p.d + j] + p.vars[k * p.d + j].sqrt() * zj);
        }
    }
    out
}

fn cholesky(m: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j {
                (m[i * n + i] - s).sqrt()
            } else {
                (m[i * n + j] - s) / l[j * n + j]
            };
        }
    }
    l
}

/// Exact posterior samples: a mixture of Gaussians with precision
/// diag(1/Sigma_k) + A^T A / sigma^2 and weights w_k N(y; A mu_k, A Sigma_k A^T + sigma^2 I).
pub fn exact_posterior_samples(p: &GmmProblem, n: usize, seed: u64) -> Vec<f32> {
    let (d, m) = (p.d, p.m);
    let a = |i: usize, j: usize| p.a.data[i * d + j] as f64;
    let s2 = (p.sigma_y as f64).powi(2);
    let mut comps = Vec::new();
    let mut logw = Vec::new();
    for k in 0..p.k {
        let v = |j: usize| p.vars[k * d + j] as f64;
        let mu = |j: usize| p.means[k * d + j] as f64;
        let mut lam = vec![0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                lam[i * d + j] =
                    (0..m).map(|r| a(r, i) * a(r, j)).sum::<f64>() / s2 + if i == j { 1.0 / v(i) } else { 0.0 };
            }
        }
        let l = cholesky(&lam, d);
        let rhs: Vec<f64> = (0..d)
            .map(|j| mu(j) / v(j) + (0..m).map(|r| a(r, j) * p.y[r] as f64).sum::<f64>() / s2)
            .collect();
        // mean = Lambda^{-1} rhs
        let mut z = vec![0f64; d];
        for i in 0..d {
            z[i] = (rhs[i] - (0..i).map(|q| l[i * d + q] * z[q]).sum::<f64>()) / l[i * d + i];
        }
        let mut mean = vec![0f64; d];
        for i in (0..d).rev() {
            mean[i] = (z[i] - (i + 1..d).map(|q| l[q * d + i] * mean[q]).sum::<f64>()) / l[i * d + i];
        }
        // evidence N(y; A mu, A Sigma A^T + s2 I)
        let mut c = vec![0f64; m * m];
        for i in 0..m {
            for j in 0..m {
                c[i * m + j] = (0..d).map(|q| a(i, q) * v(q) * a(j, q)).sum::<f64>() + if i == j { s2 } else { 0.0 };
            }
        }
        let lc = cholesky(&c, m);
        let res: Vec<f64> = (0..m)
            .map(|i| p.y[i] as f64 - (0..d).map(|q| a(i, q) * mu(q)).sum::<f64>())
            .collect();
        let mut u = vec![0f64; m];
        for i in 0..m {
            u[i] = (res[i] - (0..i).map(|q| lc[i * m + q] * u[q]).sum::<f64>()) / lc[i * m + i];
        }
        let logdet: f64 = (0..m).map(|i| lc[i * m + i].ln()).sum();
        logw.push((p.weights[k] as f64).ln() - 0.5 * u.iter().map(|x| x * x).sum::<f64>() - logdet);
        comps.push((mean, l));
    }
    let mut r = rng(seed);
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let (mean, l) = &comps[pick(&mut r, &logw)];
        let z: Vec<f64> = randn(&mut r, d).iter().map(|&v| v as f64).collect();
        // x = mean + L^{-T} z has covariance Lambda^{-1}
        let mut x = vec![0f64; d];
        for i in (0..d).rev() {
            x[i] = (z[i] - (i + 1..d).map(|q| l[q * d + i] * x[q]).sum::<f64>()) / l[i * d + i];
        }
        out.extend(x.iter().zip(mean).map(|(x, m)| (x + m) as f32));
    }
    out
}

/// A problem of the fixtures' family (tools/make_abs_problems.py, linear):
/// a 5 x 5 grid of components with means (i, j) * 4 / sqrt(d / 8) repeated
/// over the coordinates plus a little noise, random variances and weights,
/// A = U diag(s) V^T with s uniform in [0.1, 1], y = A x0 + 0.05 n for x0 drawn
/// from the prior.
pub fn family(d: usize, m: usize, seed: u64) -> GmmProblem {
    let mut r = rng(seed);
    let scale = 4.0 / (d as f64 / 8.0).sqrt();
    let mut means = Vec::new();
    let mut vars = Vec::new();
    let mut weights = Vec::new();
    for i in -2..=2 {
        for j in -2..=2 {
            let noise = randn(&mut r, d);
            means.extend((0..d).map(|c| (scale * if c % 2 == 0 { i } else { j } as f64) as f32 + 0.1 * noise[c]));
            let v = r.random_range(0.5f32..1.5);
            vars.extend(std::iter::repeat_n(v, d));
            weights.push(r.random_range(0.2f32..1.0));
        }
    }
    let total: f32 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    // Orthonormal rows by Gram-Schmidt on Gaussian ones, scaled by s.
    let mut a: Vec<Vec<f64>> = Vec::new();
    for _ in 0..m {
        let mut row: Vec<f64> = randn(&mut r, d).iter().map(|&v| v as f64).collect();
        for prev in &a {
            let dot: f64 = row.iter().zip(prev).map(|(x, y)| x * y).sum();
            row.iter_mut().zip(prev).for_each(|(x, y)| *x -= dot * y);
        }
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
        a.push(row);
    }
    let s: Vec<f64> = (0..m).map(|_| r.random_range(0.1..1.0)).collect();
    let a: Vec<f32> = a
        .iter()
        .zip(&s)
        .flat_map(|(row, s)| row.iter().map(move |x| (x * s) as f32))
        .collect();
    let sigma_y = 0.05f32;
    let mut problem = GmmProblem {
        weights,
        means,
        vars,
        a: HostTensor::new(vec![m, d], a),
        y: vec![0.0; m],
        sigma_y,
        abs: false,
        k: 25,
        d,
        m,
    };
    let x0 = prior_samples(&problem, 1, seed ^ 0x5eed);
    let n = randn(&mut r, m);
    problem.y = (0..m)
        .map(|i| (0..d).map(|j| problem.a.data[i * d + j] * x0[j]).sum::<f32>() + sigma_y * n[i])
        .collect();
    problem
}

pub struct Case {
    pub problem: GmmProblem,
    pub reference: Vec<f32>,
}

pub fn load(name: &str) -> Case {
    let problem = GmmProblem::load(fixture(&format!("gmm/{name}.safetensors"))).unwrap();
    let reference = TensorFile::open(fixture(&format!("gmm/{name}.ref.safetensors")))
        .unwrap()
        .get("reference")
        .unwrap()
        .data;
    Case { problem, reference }
}

/// The options every mixture run starts from: the samples are not images (no
/// [-1, 1] clipping), and the exact prior's reverse steps use the fixed-large
/// variance.
pub fn mixture_opts(steps: usize, seed: u64) -> SamplerOptions {
    SamplerOptions {
        steps,
        clip: false,
        seed,
        variance: VarianceType::FixedLarge,
        ..Default::default()
    }
}

/// The problem's exact mixture prior run as `process`, and its operator
/// (A, or |A x| for an `abs` problem).
pub fn prior_and_operator(gpu: &Gpu, p: &GmmProblem, process: &Process) -> (GmmPrior, Box<dyn Operator>) {
    let model = GmmPrior::new(gpu, &p.weights, &p.means, &p.vars, p.d, process).unwrap();
    (model, p.operator(gpu).unwrap())
}

/// `n` samples of `method` on the problem with its exact mixture score;
/// returns them and the mean CG iterations per solve (when it solves).
pub fn sample(case: &Case, method: Method, opts: &SamplerOptions, n: usize) -> (Vec<f32>, Option<f64>) {
    let (x, stats) = sample_stats(case, method, opts, n);
    (x, stats.cg().map(|c| c.mean_per_solve()))
}

/// As [`sample`], with the whole run report.
pub fn sample_stats(case: &Case, method: Method, opts: &SamplerOptions, n: usize) -> (Vec<f32>, RunStats) {
    sample_process(case, method, opts, n, &Process::default())
}

/// As [`sample_stats`], with the mixture run as `process` (DDPM or a flow).
pub fn sample_process(
    case: &Case,
    method: Method,
    opts: &SamplerOptions,
    n: usize,
    process: &Process,
) -> (Vec<f32>, RunStats) {
    let gpu = super::gpu();
    let p = &case.problem;
    let (model, op) = prior_and_operator(&gpu, p, process);
    let meas = Measurement {
        op: op.as_ref(),
        y: &p.y,
        sigma_y: p.sigma_y,
    };
    let s = Sampler::new(&gpu, method, &model, Some(meas), n, opts).unwrap();
    let stats = s.run(&gpu).unwrap();
    let x = s.x().read(&gpu).unwrap();
    assert!(x.iter().all(|v| v.is_finite()), "{method:?}: non-finite samples");
    (x, stats)
}

/// A mixture problem in float64 for CPU replays of whole sampler runs: the
/// exact eps of the diffused mixture and the measurement's A, A^T.
pub struct Mixture64 {
    pub w: Vec<f64>,
    pub mu: Vec<f64>,
    pub var: Vec<f64>,
    /// [m, d]
    pub a: Vec<f64>,
    pub y: Vec<f64>,
    pub sigma_y: f64,
    pub k: usize,
    pub d: usize,
    pub m: usize,
}

impl Mixture64 {
    pub fn new(p: &GmmProblem) -> Mixture64 {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        Mixture64 {
            w: f(&p.weights),
            mu: f(&p.means),
            var: f(&p.vars),
            a: f(&p.a.data),
            y: f(&p.y),
            sigma_y: p.sigma_y as f64,
            k: p.k,
            d: p.d,
            m: p.m,
        }
    }

    /// E[eps | x_t] for x_t = a x0 + b eps: -b times the mixture's score.
    pub fn eps(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        diffused_score(&self.w, &self.mu, &self.var, x, a, b)
            .2
            .iter()
            .map(|s| -b * s)
            .collect()
    }

    pub fn ax(&self, x: &[f64]) -> Vec<f64> {
        (0..self.m)
            .map(|i| (0..self.d).map(|j| self.a[i * self.d + j] * x[j]).sum())
            .collect()
    }

    pub fn atv(&self, v: &[f64]) -> Vec<f64> {
        (0..self.d)
            .map(|j| (0..self.m).map(|i| self.a[i * self.d + j] * v[i]).sum())
            .collect()
    }

    /// sigma_y^2 I + c A A^T [m, m]: the measurement's covariance given x0
    /// with covariance c I.
    pub fn meas_cov(&self, c: f64) -> Vec<f64> {
        let (m, d) = (self.m, self.d);
        let mut sys = vec![0f64; m * m];
        for p in 0..m {
            for q in 0..m {
                let g: f64 = (0..d).map(|k| self.a[p * d + k] * self.a[q * d + k]).sum();
                sys[p * m + q] = c * g + if p == q { self.sigma_y * self.sigma_y } else { 0.0 };
            }
        }
        sys
    }

    /// A^T (sigma_y^2 I + c A A^T)^{-1} r.
    pub fn at_solve(&self, c: f64, r: &[f64]) -> Vec<f64> {
        self.atv(&solve(self.meas_cov(c), self.m, r.to_vec()))
    }
}

/// A whole DDPM run in float64 on the exact mixture eps: the linear schedule
/// respaced to `steps`, the fixed-large variance, no clipping, `n` samples
/// from `seed`; each step adds `guide(x_t, a_t, b_t, i)` (a method's
/// measurement term, evaluated at x_t) to x_{t-1} = mean + sd z.
pub fn ddpm64(
    p: &Mixture64,
    steps: usize,
    n: usize,
    seed: u64,
    guide: impl Fn(&[f64], f64, f64, usize) -> Vec<f64>,
) -> Vec<f32> {
    let sched = tweedie::schedule::Schedule::linear(1000, steps).unwrap();
    let d = p.d;
    let mut r = rng(seed);
    let mut x: Vec<f64> = randn(&mut r, n * d).iter().map(|&v| v as f64).collect();
    for i in (0..steps).rev() {
        let abar = sched.alphas_cumprod[i];
        let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
        let z = randn(&mut r, n * d);
        for s in 0..n {
            let xs = &x[s * d..(s + 1) * d];
            let g = guide(xs, a, b, i);
            let next = ddpm_step64(p, &sched, i, xs, &g, &z[s * d..(s + 1) * d]);
            x[s * d..(s + 1) * d].copy_from_slice(&next);
        }
    }
    x.iter().map(|&v| v as f32).collect()
}

/// One step of [`ddpm64`] for one sample: from x_t = `xs` at step `i` of
/// `sched`, the posterior mean of the exact x0hat, plus `z` times the
/// fixed-large standard deviation (none at i = 0), plus the method's term `g`.
/// The replays of GPU runs on the GPU's own noise use it directly.
pub fn ddpm_step64(
    p: &Mixture64,
    sched: &tweedie::schedule::Schedule,
    i: usize,
    xs: &[f64],
    g: &[f64],
    z: &[f32],
) -> Vec<f64> {
    let abar = sched.alphas_cumprod[i];
    let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
    let sd = (0.5 * sched.fixed_log_variance(VarianceType::FixedLarge, i)).exp();
    let eps = p.eps(xs, a, b);
    (0..xs.len())
        .map(|j| {
            let x0 = (xs[j] - b * eps[j]) / a;
            let mean = sched.posterior_mean_coef1[i] * x0 + sched.posterior_mean_coef2[i] * xs[j];
            let noise = if i > 0 { sd * z[j] as f64 } else { 0.0 };
            mean + noise + g[j]
        })
        .collect()
}

/// The diffused mixture at x_t = a x0 + b eps (diagonal components, weights
/// `w` need not be normalised): (responsibilities, per-component scores s_k
/// [K*d], the total score).
pub fn diffused_score(w: &[f64], mu: &[f64], var: &[f64], x: &[f64], a: f64, b: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (k, d) = (w.len(), x.len());
    let mut logits = vec![0f64; k];
    let mut sk = vec![0f64; k * d];
    for c in 0..k {
        let mut q = 0.0;
        for j in 0..d {
            let v = a * a * var[c * d + j] + b * b;
            let r = x[j] - a * mu[c * d + j];
            q += r * r / v + v.ln();
            sk[c * d + j] = -r / v;
        }
        logits[c] = w[c].ln() - 0.5 * q;
    }
    let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
    let tot: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
    let resp: Vec<f64> = logits.iter().map(|l| (l - mx).exp() / tot).collect();
    let s: Vec<f64> = (0..d).map(|j| (0..k).map(|c| resp[c] * sk[c * d + j]).sum()).collect();
    (resp, sk, s)
}

/// Gaussian elimination with partial pivoting (small dense systems).
pub fn solve(mut m: Vec<f64>, n: usize, mut b: Vec<f64>) -> Vec<f64> {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().partial_cmp(&m[j * n + c].abs()).unwrap())
            .unwrap();
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
        }
        b.swap(c, p);
        for r in c + 1..n {
            let f = m[r * n + c] / m[c * n + c];
            for k in c..n {
                m[r * n + k] -= f * m[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0f64; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| m[r * n + k] * x[k]).sum::<f64>()) / m[r * n + r];
    }
    x
}
