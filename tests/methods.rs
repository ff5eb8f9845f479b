//! ALD, RED-diff, DDNM+, DiffPIR and DAPS (src/samplers/ald.rs, reddiff.rs,
//! ddnm.rs, diffpir.rs, daps.rs): one step of each against an f64 CPU replay
//! of its paper's formula (same x_t or mu, same noise read back from the GPU),
//! runs on the mixture fixtures scored against exact posterior samples by
//! sliced W2, and their refusals.

mod common;
use common::gmm::*;
use common::*;

use std::sync::OnceLock;

use tweedie::gpu::Plan;
use tweedie::operators::dense::Dense;
use tweedie::operators::{LinearOperator, Operator, OperatorError};
use tweedie::process::Process;
use tweedie::samplers::daps::Daps;
use tweedie::samplers::reddiff::RedDiff;
use tweedie::samplers::{BaseSampler, Measurement, Method, MethodOptions, Sampler, SamplerOptions};
use tweedie::schedule::{Schedule, VarianceType};
use tweedie::{Gpu, Tensor};

use rand::rngs::StdRng;

/// Samples per replayed step.
const N: usize = 5;

fn method(name: &str) -> Method {
    Method::from_name(name).unwrap_or_else(|| panic!("no method {name}"))
}

fn d8() -> &'static Case {
    static CASE: OnceLock<Case> = OnceLock::new();
    CASE.get_or_init(|| load("d8_m2"))
}

/// A sampler of `method` on the d8_m2 mixture, initialised.
fn planned(gpu: &Gpu, method: Method, opts: &SamplerOptions) -> Sampler {
    planned_on(gpu, method, opts, None)
}

/// A sampler of `method` on the d8_m2 mixture measured through `op` (None:
/// the fixture's own A), initialised.
fn planned_on(gpu: &Gpu, method: Method, opts: &SamplerOptions, op: Option<&dyn Operator>) -> Sampler {
    let p = &d8().problem;
    let (model, own) = prior_and_operator(gpu, p, &Process::default());
    let meas = Measurement {
        op: op.unwrap_or(own.as_ref()),
        y: &p.y,
        sigma_y: p.sigma_y,
    };
    let smp = Sampler::new(gpu, method, &model, Some(meas), N, opts).unwrap();
    smp.init(gpu).unwrap();
    smp
}

fn with(opts: SamplerOptions, settings: &[(&str, f32)]) -> SamplerOptions {
    let mut o = opts;
    for (k, v) in settings {
        o.method = o.method.with(k, v).unwrap();
    }
    o
}

/// Step i of a fresh `name` sampler on d8_m2 from a random x_t: x_t, the
/// step's result and its noise z, read back.
fn step_from_random(
    gpu: &Gpu,
    name: &str,
    opts: &SamplerOptions,
    i: usize,
    r: &mut StdRng,
) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    let (x_in, got, z, _) = step_on(gpu, name, opts, i, r, None);
    (x_in, got, z)
}

/// [`step_from_random`] measured through `op` (None: the fixture's A), with
/// the sampler kept for its method's state.
fn step_on(
    gpu: &Gpu,
    name: &str,
    opts: &SamplerOptions,
    i: usize,
    r: &mut StdRng,
    op: Option<&dyn Operator>,
) -> (Vec<f32>, Vec<f32>, Vec<f64>, Sampler) {
    let smp = planned_on(gpu, method(name), opts, op);
    let x_in: Vec<f32> = randn(r, N * d8().problem.d).iter().map(|v| 3.0 * v).collect();
    smp.x().write(gpu, &x_in).unwrap();
    smp.step(gpu, i).unwrap();
    let got = smp.x().read(gpu).unwrap();
    let z = f64s(&smp.core.z.read(gpu).unwrap());
    (x_in, got, z, smp)
}

/// [a_t, b_t, a_{t-1}, b_{t-1}] at step i.
fn levels(sched: &Schedule, i: usize) -> [f64; 4] {
    let (abar, abar_prev) = (sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]);
    [abar, 1.0 - abar, abar_prev, 1.0 - abar_prev].map(f64::sqrt)
}

/// ||A||_2^2 of the mixture's A (power iteration on A^T A in f64).
fn largest_singular2(mix: &Mixture64) -> f64 {
    let mut v = vec![1.0; mix.d];
    let mut s2 = 0.0;
    for _ in 0..500 {
        let w = mix.atv(&mix.ax(&v));
        s2 = dot(&w, &w).sqrt();
        v = w.iter().map(|x| x / s2).collect();
    }
    s2
}

/// ALD's step: the base step (DDPM, or DDIM with eta 0) plus
/// guide A^T (y - A x_t / a), guide = step w / (a (sigma_y^2 + (b / a)^2 ||A||^2))
/// with w the base step's score weight, the whole term scaled down where
/// the largest direction's gain guide s_max^2 / a passes min(max(a' / a, 1),
/// coef2 + 1) (coef2: the base step's coefficient on x_t; x0hat unclipped).
#[test]
fn ald_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    // The sampler's power iteration is raised by 1% for the cap.
    let norm2 = largest_singular2(&mix);
    let s_max2 = 1.01 * norm2;
    let (d, s2y) = (mix.d, mix.sigma_y * mix.sigma_y);
    let mut r = rng(17);
    let (mut capped, mut free) = (0, 0);
    // This A's ||A||_2^2 is 0.22: the defaults never reach the cap; a step of 20 does.
    let cases = [
        (50, BaseSampler::Ddpm, 1.0f32),
        (10, BaseSampler::Ddpm, 20.0),
        (10, BaseSampler::Ddim, 0.7),
    ];
    for (steps, base, step) in cases {
        let sched = Schedule::linear(1000, steps).unwrap();
        for i in [0, 1, steps / 2, steps - 1] {
            let what = format!("ALD {base:?} {steps} steps, step {i}, --ald-step {step}");
            let opts = SamplerOptions {
                sampler: Some(base),
                ..with(mixture_opts(steps, 9), &[("ald-step", step)])
            };
            let (x_in, got, z) = step_from_random(&gpu, "ald", &opts, i, &mut r);
            let [a, b, an, bn] = levels(&sched, i);
            let (coef1, coef2, sigma, weight) = match base {
                BaseSampler::Ddpm => {
                    let beta = sched.betas[i];
                    let logvar = sched.fixed_log_variance(VarianceType::FixedLarge, i);
                    let sigma = if i > 0 { (0.5 * logvar).exp() } else { 0.0 };
                    (
                        sched.posterior_mean_coef1[i],
                        sched.posterior_mean_coef2[i],
                        sigma,
                        beta / (1.0 - beta).sqrt(),
                    )
                }
                // x' = a' x0hat + b' (x - a x0hat) / b.
                BaseSampler::Ddim => (an - bn * a / b, bn / b, 0.0, b * (an * b / a - bn)),
            };
            let guide = step as f64 * weight / (a * (s2y + (b / a).powi(2) * norm2));
            let gain = guide / a * s_max2;
            // DMPS's carried cap: a' / a (at least 1), and at most the base
            // step's carry on x_t (coef2) + 1, x0hat unclipped here.
            let bound = (an / a).max(1.0).min(coef2.max(0.0) + 1.0);
            let cap = (gain / bound).max(1.0);
            if cap > 1.0 {
                capped += 1;
            } else {
                free += 1;
            }
            let mut want = Vec::with_capacity(N * d);
            for n in 0..N {
                let x = f64s(&x_in[n * d..(n + 1) * d]);
                let eps = mix.eps(&x, a, b);
                let resid: Vec<f64> = mix.ax(&x).iter().zip(&mix.y).map(|(ax, y)| y - ax / a).collect();
                let g = mix.atv(&resid);
                want.extend((0..d).map(|j| {
                    let x0 = (x[j] - b * eps[j]) / a;
                    (coef1 * x0 + coef2 * x[j] + sigma * z[n * d + j] + guide / cap * g[j]) as f32
                }));
            }
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
    // Both sides of the cap were replayed.
    assert!(capped > 0 && free > 0, "capped {capped}, uncapped {free}");
}

/// A^+ y per sample, [N, d]: A^T (A A^T)^{-1} y (A has full row rank).
fn pinv_y(mix: &Mixture64) -> Vec<f64> {
    let (m, d) = (mix.m, mix.d);
    let mut aat = vec![0f64; m * m];
    for p in 0..m {
        for q in 0..m {
            aat[p * m + q] = (0..d).map(|k| mix.a[p * d + k] * mix.a[q * d + k]).sum();
        }
    }
    mix.atv(&solve(aat, m, mix.y.clone())).repeat(N)
}

/// RED-diff's Adam decays are the paper's code's at 1000 steps and shorten
/// their memory on coarser schedules.
#[test]
fn reddiff_adam_decays_follow_the_step_count() {
    use tweedie::samplers::reddiff::{adam_decays, BETA1, BETA2};
    assert_eq!(adam_decays(1000), (BETA1, BETA2));
    assert_eq!((BETA1, BETA2), (0.9, 0.99));
    let (b1, b2) = adam_decays(20);
    assert!((b1 - 0.4747).abs() < 1e-3 && (b2 - 0.9314).abs() < 1e-3, "{b1} {b2}");
    let mut last = (0.0, 0.0);
    for k in [10, 20, 50, 100, 1000, 4000] {
        let d = adam_decays(k);
        assert!(
            d.0 > last.0 && d.1 > last.1,
            "decays grow with the step count: {k} {d:?}"
        );
        last = d;
    }
}

/// RED-diff's init (mu = A^+ y through the SVD form, Adam's moments 0) and
/// one Adam step on ||y - A mu||^2 / (2 m) + lambda (b / a) (eps(x_t) - z)^T mu / d
/// at x_t = a mu + b z, from a random mu and random moments.
#[test]
fn reddiff_init_and_one_step_match_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let (d, m) = (mix.d, mix.m);
    let (lr, lambda) = (0.3f32, 0.4f32);
    let steps = 20;
    let sched = Schedule::linear(1000, steps).unwrap();
    let mut r = rng(23);
    for i in [steps - 1, 11, 0] {
        let what = format!("RED-diff step {i} of {steps}");
        let opts = with(
            mixture_opts(steps, 4),
            &[("reddiff-lr", lr), ("reddiff-lambda", lambda)],
        );
        let smp = planned(&gpu, method("reddiff"), &opts);
        let state = smp.method_state::<RedDiff>().unwrap().state();
        let [mu, m1, m2] = state.map(|t| t.read(&gpu).unwrap());
        assert_close(
            &format!("{what}: init mu = A^+ y"),
            &mu,
            &f32s(&pinv_y(&mix)),
            1e-4,
            1e-4,
        );
        assert!(
            m1.iter().chain(&m2).all(|&v| v == 0.0),
            "{what}: Adam's moments start at 0"
        );

        let mu_in: Vec<f32> = randn(&mut r, N * d).iter().map(|v| 4.0 * v).collect();
        let m1_in: Vec<f32> = randn(&mut r, N * d).iter().map(|v| 0.1 * v).collect();
        let m2_in: Vec<f32> = randn(&mut r, N * d).iter().map(|v| 0.01 * (1.0 + v.abs())).collect();
        for (t, v) in state.iter().zip([&mu_in, &m1_in, &m2_in]) {
            t.write(&gpu, v).unwrap();
        }
        smp.step(&gpu, i).unwrap();
        let z = f64s(&smp.core.z.read(&gpu).unwrap());
        let got = state.map(|t| t.read(&gpu).unwrap());

        let [a, b, ..] = levels(&sched, i);
        let k = (steps - i) as i32;
        // Adam's decays at 20 steps: the code's raised to sqrt(1000 / 20).
        let (b1, b2) = (0.9f64.powf(50f64.sqrt()), 0.99f64.powf(50f64.sqrt()));
        let mut want: [Vec<f32>; 3] = Default::default();
        for n in 0..N {
            let mu = f64s(&mu_in[n * d..(n + 1) * d]);
            let zn = &z[n * d..(n + 1) * d];
            let xt: Vec<f64> = (0..d).map(|j| a * mu[j] + b * zn[j]).collect();
            let eps = mix.eps(&xt, a, b);
            let resid: Vec<f64> = mix.ax(&mu).iter().zip(&mix.y).map(|(ax, y)| ax - y).collect();
            let obs = mix.atv(&resid);
            for j in 0..d {
                let grad = obs[j] / m as f64 + lambda as f64 * (b / a) * (eps[j] - zn[j]) / d as f64;
                let m1 = b1 * m1_in[n * d + j] as f64 + (1.0 - b1) * grad;
                let m2 = b2 * m2_in[n * d + j] as f64 + (1.0 - b2) * grad * grad;
                let step = lr as f64 * (m1 / (1.0 - b1.powi(k))) / ((m2 / (1.0 - b2.powi(k))).sqrt() + 1e-8);
                want[0].push((mu[j] - step) as f32);
                want[1].push(m1 as f32);
                want[2].push(m2 as f32);
            }
        }
        for ((name, g), w) in ["mu", "Adam m", "Adam v"].iter().zip(&got).zip(&want) {
            let scale = w.iter().fold(0f32, |acc, v| acc.max(v.abs()));
            assert_close(&format!("{what}: {name}"), g, w, 1e-3 * scale, 1e-3);
        }
        // The run's sample is mu.
        assert_eq!(smp.x().read(&gpu).unwrap(), got[0], "{what}: x holds mu");
    }
}

/// Rows times a vector: `rows` [r, c] times v [c].
fn times(rows: &[f64], r: usize, v: &[f64]) -> Vec<f64> {
    let c = v.len();
    (0..r).map(|k| dot(&rows[k * c..(k + 1) * c], v)).collect()
}

/// The transpose times a vector: `rows` [r, c]^T times v [r].
fn times_t(rows: &[f64], c: usize, v: &[f64]) -> Vec<f64> {
    (0..c)
        .map(|j| (0..v.len()).map(|k| rows[k * c + j] * v[k]).sum())
        .collect()
}

/// DDNM+'s step as its code writes it (`ddnm_plus_diffusion` with the SVD
/// operators' `Lambda` and `Lambda_noise`): x0hat' = x0hat - V Lambda V^T
/// A^+ (A x0hat - y), then x' = a' x0hat' + V (d1 V^T z + d2 V^T e) with
/// d1 = sigma eta, d2 = sigma sqrt(1 - eta^2) on the null space and eq. 19's
/// choice on the measured components; the SVD here is the CPU's (faer).
#[test]
fn ddnm_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let (d, m) = (mix.d, mix.m);
    let svd = tweedie::operators::separable::svd_1d("test", &mix.a, m, d).unwrap();
    let (u, sing, vt) = (&svd.u, &svd.s, &svd.vt);
    let steps = 20;
    let sched = Schedule::linear(1000, steps).unwrap();
    let mut r = rng(31);
    let (mut lifted, mut scaled) = (0, 0);
    for (eta, clip) in [(0.85f32, false), (0.3, false), (0.85, true)] {
        for i in [steps - 1, 10, 3, 1, 0] {
            let what = format!("DDNM+ eta {eta} clip {clip}, step {i} of {steps}");
            let opts = SamplerOptions {
                clip,
                ..with(mixture_opts(steps, 6), &[("ddnm-eta", eta)])
            };
            let (x_in, got, z) = step_from_random(&gpu, "ddnm", &opts, i, &mut r);
            let [a, b, an, sigma] = levels(&sched, i);
            let (eta, sy) = (eta as f64, mix.sigma_y);
            let (d1_null, d2_null) = (sigma * eta, sigma * (1.0 - eta * eta).sqrt());
            // Lambda, d1, d2 per measured component.
            let mut lambda = vec![1.0; m];
            let (mut d1, mut d2) = (vec![d1_null; m], vec![d2_null; m]);
            for k in 0..m {
                let lim = an * sy / sing[k];
                if sigma < lim {
                    lambda[k] = sing[k] * sigma * (1.0 - eta * eta).sqrt() / (an * sy);
                    d2[k] = 0.0;
                    scaled += 1;
                } else if sigma > lim {
                    d1[k] = (sigma * sigma - lim * lim).sqrt();
                    d2[k] = 0.0;
                    lifted += 1;
                }
            }
            let mut want = Vec::with_capacity(N * d);
            for n in 0..N {
                let x = f64s(&x_in[n * d..(n + 1) * d]);
                let zn = &z[n * d..(n + 1) * d];
                let eps = mix.eps(&x, a, b);
                let x0: Vec<f64> = (0..d)
                    .map(|j| {
                        let v = (x[j] - b * eps[j]) / a;
                        if clip {
                            v.clamp(-1.0, 1.0)
                        } else {
                            v
                        }
                    })
                    .collect();
                let e: Vec<f64> = (0..d).map(|j| (x[j] - a * x0[j]) / b).collect();
                // A^+ (A x0 - y) = V diag(1 / s) U^T (A x0 - y)
                let res: Vec<f64> = mix.ax(&x0).iter().zip(&mix.y).map(|(ax, y)| ax - y).collect();
                let ut_res = times_t(u, m, &res);
                let pinv = times_t(vt, d, &(0..m).map(|k| ut_res[k] / sing[k]).collect::<Vec<_>>());
                let spec = times(vt, m, &pinv);
                let fix = times_t(vt, d, &(0..m).map(|k| lambda[k] * spec[k]).collect::<Vec<_>>());
                let (vz, ve) = (times(vt, m, zn), times(vt, m, &e));
                let (pz, pe) = (times_t(vt, d, &vz), times_t(vt, d, &ve));
                let measured = times_t(
                    vt,
                    d,
                    &(0..m).map(|k| d1[k] * vz[k] + d2[k] * ve[k]).collect::<Vec<_>>(),
                );
                want.extend((0..d).map(|j| {
                    let x0hat = x0[j] - fix[j];
                    let null = d1_null * (zn[j] - pz[j]) + d2_null * (e[j] - pe[j]);
                    (an * x0hat + measured[j] + null) as f32
                }));
            }
            let scale = want.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
    // Both of eq. 19's cases were replayed.
    assert!(lifted > 0 && scaled > 0, "lambda = 1: {lifted}, lambda < 1: {scaled}");
}

/// A problem's prior distance to the reference (prior samples' sliced W2).
fn prior_distance(case: &Case, n: usize) -> f64 {
    let p = &case.problem;
    sliced_w2(&prior_samples(p, n, 1), &case.reference, p.d, 99)
}

/// `name` with its defaults on fixture `problem` at 100 steps closes at least
/// the part of the prior's distance its bound leaves (`frac` of the prior's
/// sliced W2), and at 10 steps stays finite and near the prior at worst.
fn check_mixture(name: &str, problem: &str, frac: f64) {
    let case = load(problem);
    let n = 1000;
    let prior = prior_distance(&case, n);
    let sw = |steps: usize| {
        let (x, _) = sample(&case, method(name), &mixture_opts(steps, 5), n);
        sliced_w2(&x, &case.reference, case.problem.d, 99)
    };
    let (sw100, sw10) = (sw(100), sw(10));
    println!("{name} {problem}: prior {prior:.4}, 100 steps {sw100:.4}, 10 steps {sw10:.4}");
    assert!(
        sw100 < frac * prior,
        "{name} {problem}: 100 steps {sw100} vs prior {prior}"
    );
    assert!(
        sw10 < 1.05 * prior,
        "{name} {problem}: 10 steps {sw10} vs prior {prior}"
    );
}

// Measured on lavapipe (1000 samples; prior 7.15 / 1.99): ALD 2.75 / 1.76 at
// 100 steps, 2.85 / 1.63 at 10 (its likelihood is isotropic in the measured
// directions; these A's singular values spread 0.16-0.47 and 0.15-0.86);
// RED-diff 1.24 / 1.44 at 100 steps, 3.47 / 1.90 at 10 (Adam at lr 0.25
// moves mu at most 2.5 from A^+ y in 10 steps; d8_m2's modes lie ~8 away;
// with the 1000-step decays at every step count it was 1.32 / 1.45 and
// 3.60 / 1.83);
// DDNM+ 1.00 / 1.23 at 100 steps, 1.64 / 1.53 at 10; DDRM the same (at its
// defaults and sigma_y > 0 its step is DDNM+'s); PiGDM 0.54 / 0.88 at 100
// steps, 1.49 / 1.57 at 10.

/// One test per method and fixture, each with its bound on the 100-step
/// distance as a fraction of the prior's.
macro_rules! mixture_tests {
    ($($test:ident: $name:literal on $problem:literal below $frac:literal,)+) => {$(
        #[test]
        fn $test() {
            check_mixture($name, $problem, $frac);
        }
    )+};
}

mixture_tests! {
    ald_d8_m2: "ald" on "d8_m2" below 0.5,
    ald_d80_m4: "ald" on "d80_m4" below 0.95,
    reddiff_d8_m2: "reddiff" on "d8_m2" below 0.35,
    reddiff_d80_m4: "reddiff" on "d80_m4" below 0.85,
    ddnm_d8_m2: "ddnm" on "d8_m2" below 0.25,
    ddnm_d80_m4: "ddnm" on "d80_m4" below 0.75,
    diffpir_d8_m2: "diffpir" on "d8_m2" below 0.3,
    diffpir_d80_m4: "diffpir" on "d80_m4" below 0.85,
    daps_d8_m2: "daps" on "d8_m2" below 0.25,
    daps_d80_m4: "daps" on "d80_m4" below 0.75,
}

/// On a flow model (x_t = (1 - t) x0 + t eps, the exact velocity, Euler
/// steps) each method runs from its own reading of a and b and lands closer
/// to the posterior than the prior (measured at 50 steps: ALD 3.50, RED-diff
/// 1.56 (1.22 with the 1000-step Adam decays), DDNM+ 1.11, DiffPIR 1.71, DAPS 1.36, DDRM 1.15, PiGDM 0.83 against
/// the prior's 7.15).
#[test]
fn flow_d8_m2() {
    let case = d8();
    let n = 1000;
    let prior = prior_distance(case, n);
    for (name, frac) in [
        ("ald", 0.65),
        ("reddiff", 0.3),
        ("ddnm", 0.3),
        ("diffpir", 0.35),
        ("daps", 0.3),
        ("ddrm", 0.3),
        ("pigdm", 0.3),
    ] {
        let (x, _) = sample_process(case, method(name), &mixture_opts(50, 5), n, &Process::flow(1.0));
        let sw = sliced_w2(&x, &case.reference, case.problem.d, 99);
        println!("{name} on the flow, d8_m2, 50 steps: {sw:.4} (prior {prior:.4})");
        assert!(sw < frac * prior, "{name} on the flow: {sw} vs prior {prior}");
    }
}

/// The mixture's A behind less than `Dense` offers: with `linear` it is a
/// linear operator without an SVD form, without it a measurement that does
/// not say it is linear (only its forward map and VJP, A^T v).
struct Hidden {
    dense: Dense,
    linear: bool,
}

impl Operator for Hidden {
    fn name(&self) -> &str {
        if self.linear {
            "plain-dense"
        } else {
            "opaque-dense"
        }
    }
    fn in_shape(&self) -> [usize; 3] {
        self.dense.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.dense.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.dense.forward(gpu, x, y)
    }
    fn vjp(&self, gpu: &Gpu, _x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        self.dense.adjoint(gpu, v, out)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        self.linear.then_some(self as &dyn LinearOperator)
    }
}

impl LinearOperator for Hidden {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.dense.adjoint(gpu, y, x)
    }
}

/// ALD needs A^T and DDNM+ an SVD form: measurements without them are
/// refused in one line. RED-diff needs only the VJP: it samples with it
/// (from mu = 0, no pseudo-inverse) and lands closer to the posterior than
/// the prior is. RED-diff and DDNM+ take steps of their own, so
/// `--sampler ddim` is refused rather than ignored.
#[test]
fn refusals_and_a_measurement_without_a_transpose() {
    let gpu = gpu();
    let case = d8();
    let p = &case.problem;
    let hidden = |linear: bool| Hidden {
        dense: Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap(),
        linear,
    };
    let (opaque, plain) = (hidden(false), hidden(true));
    let (model, dense) = prior_and_operator(&gpu, p, &Process::default());
    let plan = |name: &str, op: &dyn Operator, opts: &SamplerOptions, n: usize| {
        let meas = Measurement {
            op,
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        Sampler::new(&gpu, method(name), &model, Some(meas), n, opts)
    };
    let refusal = |name: &str, op: &dyn Operator, opts: &SamplerOptions| {
        let err = plan(name, op, opts, 4)
            .err()
            .unwrap_or_else(|| panic!("{name} planned"));
        let err = err.to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let o = mixture_opts(10, 1);
    let (linear, svd) = (
        "needs a linear measurement; opaque-dense is not",
        "needs an operator with an SVD form; plain-dense has none",
    );
    let cases: [(&str, &dyn Operator, &str); 6] = [
        ("ald", &opaque, &format!("ALD {linear}")),
        ("ddnm", &opaque, &format!("DDNM+ {linear}")),
        ("ddnm", &plain, &format!("DDNM+ {svd}")),
        ("ddrm", &opaque, &format!("DDRM {linear}")),
        ("ddrm", &plain, &format!("DDRM {svd}")),
        ("pigdm", &opaque, &format!("PiGDM {linear}")),
    ];
    for (name, op, want) in cases {
        assert_eq!(refusal(name, op, &o), want);
    }
    let ddim = SamplerOptions {
        sampler: Some(BaseSampler::Ddim),
        ..o.clone()
    };
    for name in ["reddiff", "ddnm", "ddrm", "pigdm"] {
        let err = refusal(name, dense.as_ref(), &ddim);
        assert!(err.contains("--sampler and --eta do not apply"), "{err}");
    }

    let n = 1000;
    let smp = plan("reddiff", &opaque, &mixture_opts(100, 5), n).unwrap();
    smp.run(&gpu).unwrap();
    let x = smp.x().read(&gpu).unwrap();
    assert!(x.iter().all(|v| v.is_finite()), "RED-diff diverged");
    let sw = sliced_w2(&x, &case.reference, p.d, 99);
    let prior = prior_distance(case, n);
    println!("RED-diff without A^T, d8_m2, 100 steps: {sw:.4} (prior {prior:.4})");
    assert!(sw < 0.5 * prior, "RED-diff without A^T: {sw} vs prior {prior}");
}

/// The registry lists the new methods with their options, so the command line
/// offers `--method ald|reddiff` and their flags.
#[test]
fn registry_names_the_methods_and_their_options() {
    for (name, flags) in [
        ("ald", &["ald-step"][..]),
        ("reddiff", &["reddiff-lr", "reddiff-lambda"][..]),
        ("ddrm", &["ddrm-eta", "ddrm-eta-b"][..]),
        ("pigdm", &["pigdm-eta", "pigdm-weight", "cg-tol", "cg-iters"][..]),
    ] {
        let m = method(name);
        assert!(
            m.takes_measurement() && m.uses_vjp(&MethodOptions::default(), true) == (name == "pigdm"),
            "{name}"
        );
        let names: Vec<&str> = m.options().iter().map(|o| o.name).collect();
        assert_eq!(names, flags, "{name}");
    }
    let bad = MethodOptions::default().with("reddiff-lr", -1.0).unwrap();
    let err = bad.validate().err().unwrap().to_string();
    assert_eq!(err, "--reddiff-lr must be a non-negative number, got -1");
    let bad = MethodOptions::default().with("ddnm-eta", 1.5).unwrap();
    let err = bad.validate().err().unwrap().to_string();
    assert_eq!(err, "--ddnm-eta must be at most 1, got 1.5");
    let bad = MethodOptions::default().with("ddrm-eta-b", -0.5).unwrap();
    let err = bad.validate().err().unwrap().to_string();
    assert_eq!(err, "--ddrm-eta-b must be a non-negative number, got -0.5");
}

/// DDRM's step as its code writes it (`efficient_generalized_steps`), in x0's
/// units (sigma' = b' / a') and the CPU's SVD: per measured component of
/// V^T x0hat, DDIM's rule where s sigma' = sigma_y, y~'s pull scaled by
/// sigma' sqrt(1 - eta^2) s / sigma_y where s sigma' < sigma_y, eta_b y~ +
/// (1 - eta_b) c with the remaining noise where s sigma' > sigma_y; DDIM on
/// the null space; x' = a' V (those) + a' (null space).
#[test]
fn ddrm_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let (d, m) = (mix.d, mix.m);
    let svd = tweedie::operators::separable::svd_1d("test", &mix.a, m, d).unwrap();
    let (u, sing, vt) = (&svd.u, &svd.s, &svd.vt);
    let uty = times_t(u, m, &mix.y);
    let steps = 20;
    let sched = Schedule::linear(1000, steps).unwrap();
    let mut r = rng(37);
    let (mut before, mut after) = (0, 0);
    for (eta, eta_b) in [(0.85f32, 1.0f32), (0.3, 0.6)] {
        for i in [steps - 1, 10, 3, 1, 0] {
            let what = format!("DDRM eta {eta} eta_b {eta_b}, step {i} of {steps}");
            let opts = with(mixture_opts(steps, 6), &[("ddrm-eta", eta), ("ddrm-eta-b", eta_b)]);
            let (x_in, got, z) = step_from_random(&gpu, "ddrm", &opts, i, &mut r);
            let [a, b, an, bn] = levels(&sched, i);
            let (eta, eta_b, sy) = (eta as f64, eta_b as f64, mix.sigma_y);
            let sn = bn / an;
            let (fresh, kept) = (sn * eta, sn * (1.0 - eta * eta).sqrt());
            let mut want = Vec::with_capacity(N * d);
            for n in 0..N {
                let x = f64s(&x_in[n * d..(n + 1) * d]);
                let zn = &z[n * d..(n + 1) * d];
                let eps = mix.eps(&x, a, b);
                let x0: Vec<f64> = (0..d).map(|j| (x[j] - b * eps[j]) / a).collect();
                let (c, e, vz) = (times(vt, m, &x0), times(vt, m, &eps), times(vt, m, zn));
                let next: Vec<f64> = (0..m)
                    .map(|k| {
                        let s = sing[k];
                        if s * sn > sy {
                            before += 1;
                            let rest = (sn * sn - (sy * eta_b / s).powi(2)).sqrt();
                            eta_b * uty[k] / s + (1.0 - eta_b) * c[k] + rest * vz[k]
                        } else if s * sn < sy {
                            after += 1;
                            c[k] + kept * (uty[k] - s * c[k]) / sy + fresh * vz[k]
                        } else {
                            c[k] + kept * e[k] + fresh * vz[k]
                        }
                    })
                    .collect();
                let ddim: Vec<f64> = (0..d).map(|j| x0[j] + kept * eps[j] + fresh * zn[j]).collect();
                let measured = times_t(vt, d, &next);
                let null = times_t(vt, d, &times(vt, m, &ddim));
                want.extend((0..d).map(|j| (an * (measured[j] + ddim[j] - null[j])) as f32));
            }
            let scale = want.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
    // Both measured cases were replayed.
    assert!(before > 0 && after > 0, "noisier than y: {before}, less noisy: {after}");
}

/// d x0hat / d x_t transposed times v, by central differences of the exact
/// mixture's x0hat = (x - b eps(x)) / a in f64.
fn x0hat_vjp(mix: &Mixture64, x: &[f64], a: f64, b: f64, v: &[f64]) -> Vec<f64> {
    let h = 1e-5;
    let along = |j: usize, step: f64| {
        let mut xs = x.to_vec();
        xs[j] += step;
        let eps = mix.eps(&xs, a, b);
        dot(v, &(0..xs.len()).map(|k| (xs[k] - b * eps[k]) / a).collect::<Vec<_>>())
    };
    (0..x.len()).map(|j| (along(j, h) - along(j, -h)) / (2.0 * h)).collect()
}

/// PiGDM's step as RED-diff's `pgdm.py` takes it, with the paper's noisy
/// guidance: x' = a' x0hat + c1 z + c2 epshat + w a' a r^2 J^T u with
/// u = A^T (r^2 A A^T + sigma_y^2)^{-1} (y - A x0hat), r^2 = 1 - abar_t and
/// c1 DDIM's eta-scaled sigma; the VJP by finite differences, the inverse by
/// a dense solve.
#[test]
fn pigdm_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let d = mix.d;
    let steps = 20;
    let sched = Schedule::linear(1000, steps).unwrap();
    let mut r = rng(41);
    for (eta, w) in [(0.0f32, 1.0f32), (0.6, 0.5)] {
        for i in [steps - 1, 10, 1, 0] {
            let what = format!("PiGDM eta {eta} weight {w}, step {i} of {steps}");
            let opts = with(mixture_opts(steps, 8), &[("pigdm-eta", eta), ("pigdm-weight", w)]);
            let (x_in, got, z) = step_from_random(&gpu, "pigdm", &opts, i, &mut r);
            let [a, b, an, bn] = levels(&sched, i);
            let (abar, abar_prev) = (sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]);
            let c1 = eta as f64 * ((1.0 - abar / abar_prev) * (1.0 - abar_prev) / (1.0 - abar)).sqrt();
            let c2 = (1.0 - abar_prev - c1 * c1).sqrt();
            let r2 = 1.0 - abar;
            let weight = w as f64 * an * a * r2;
            assert!((bn * bn - (1.0 - abar_prev)).abs() < 1e-12);
            let mut want = Vec::with_capacity(N * d);
            for n in 0..N {
                let x = f64s(&x_in[n * d..(n + 1) * d]);
                let eps = mix.eps(&x, a, b);
                let x0: Vec<f64> = (0..d).map(|j| (x[j] - b * eps[j]) / a).collect();
                let resid: Vec<f64> = mix.ax(&x0).iter().zip(&mix.y).map(|(ax, y)| y - ax).collect();
                let g = x0hat_vjp(&mix, &x, a, b, &mix.at_solve(r2, &resid));
                want.extend((0..d).map(|j| (an * x0[j] + c1 * z[n * d + j] + c2 * eps[j] + weight * g[j]) as f32));
            }
            let scale = want.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
}

mixture_tests! {
    ddrm_d8_m2: "ddrm" on "d8_m2" below 0.25,
    ddrm_d80_m4: "ddrm" on "d80_m4" below 0.75,
    pigdm_d8_m2: "pigdm" on "d8_m2" below 0.15,
    pigdm_d80_m4: "pigdm" on "d80_m4" below 0.6,
}

/// PiGDM on a linear operator without an SVD form solves (sigma_y^2 I +
/// r_t^2 A A^T) u = r by CG: from the same seed it draws the SVD form's
/// samples (to the CG's tolerance) and reports its iterations.
#[test]
fn pigdm_without_an_svd_form_solves_by_cg() {
    let gpu = gpu();
    let p = &d8().problem;
    let (model, dense) = prior_and_operator(&gpu, p, &Process::default());
    let plain = Hidden {
        dense: Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap(),
        linear: true,
    };
    let run = |op: &dyn Operator| {
        let meas = Measurement {
            op,
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        let smp = Sampler::new(&gpu, method("pigdm"), &model, Some(meas), 200, &mixture_opts(20, 3)).unwrap();
        let stats = smp.run(&gpu).unwrap();
        (smp.x().read(&gpu).unwrap(), stats.cg().map(|c| c.mean_per_solve()))
    };
    let (svd, no_cg) = run(dense.as_ref());
    let (cg, iters) = run(&plain);
    assert!(no_cg.is_none(), "the SVD form ran CG");
    let iters = iters.expect("CG reports its iterations");
    assert!(iters >= 1.0, "CG took {iters} iterations per solve");
    assert_close("PiGDM: CG against the SVD form", &cg, &svd, 2e-3, 2e-3);
}

/// The fixture's A as a linear operator without an SVD form (DiffPIR then
/// solves its data step by CG).
fn plain_dense(gpu: &Gpu) -> Hidden {
    let p = &d8().problem;
    Hidden {
        dense: Dense::new(gpu, &p.a, [p.d, 1, 1]).unwrap(),
        linear: true,
    }
}

/// DiffPIR's step as its paper writes it: x0hat' = argmin ||y - A x||^2 +
/// rho ||x - x0hat||^2 with rho = lambda sigma_y^2 / (b / a)^2, i.e. x0hat +
/// A^T (rho I + A A^T)^{-1} (y - A x0hat), then x' = a' x0hat' + b' (sqrt(1 -
/// zeta) (x - a x0hat') / b + sqrt(zeta) z); through the SVD form and by CG.
#[test]
fn diffpir_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let d = mix.d;
    let steps = 20;
    let sched = Schedule::linear(1000, steps).unwrap();
    let plain = plain_dense(&gpu);
    let mut r = rng(41);
    for (lambda, zeta, op) in [(1.0f32, 0.25f32, None), (4.0, 1.0, None), (0.5, 0.0, Some(&plain))] {
        for i in [steps - 1, 9, 1, 0] {
            let what = format!("DiffPIR lambda {lambda} zeta {zeta} CG {}, step {i}", op.is_some());
            let opts = with(
                mixture_opts(steps, 8),
                &[("diffpir-lambda", lambda), ("diffpir-zeta", zeta), ("cg-tol", 1e-7)],
            );
            let (x_in, got, z, _) = step_on(&gpu, "diffpir", &opts, i, &mut r, op.map(|o| o as &dyn Operator));
            let [a, b, an, bn] = levels(&sched, i);
            // A^T (rho I + A A^T)^{-1} = (s2 / lambda) A^T (sigma_y^2 I + (s2 / lambda) A A^T)^{-1}, s2 = (b / a)^2.
            let c = (b / a).powi(2) / lambda as f64;
            let zeta = zeta as f64;
            let mut want = Vec::with_capacity(N * d);
            for n in 0..N {
                let x = f64s(&x_in[n * d..(n + 1) * d]);
                let eps = mix.eps(&x, a, b);
                let x0: Vec<f64> = (0..d).map(|j| (x[j] - b * eps[j]) / a).collect();
                let res: Vec<f64> = mix.ax(&x0).iter().zip(&mix.y).map(|(ax, y)| y - ax).collect();
                let step = mix.at_solve(c, &res);
                want.extend((0..d).map(|j| {
                    let x0 = x0[j] + c * step[j];
                    let e = (x[j] - a * x0) / b;
                    (an * x0 + bn * ((1.0 - zeta).sqrt() * e + zeta.sqrt() * z[n * d + j])) as f32
                }));
            }
            let scale = want.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
}

/// The training timestep whose sigma = sqrt(1 / abar - 1) is nearest
/// `sigma` in log, as (a, b, t).
fn nearest_level(abar: &[f64], sigma: f64) -> (f64, f64, usize) {
    let t = (0..abar.len())
        .min_by(|&p, &q| {
            let off = |t: usize| ((1.0 / abar[t] - 1.0).sqrt() / sigma).ln().abs();
            off(p).total_cmp(&off(q))
        })
        .unwrap();
    (abar[t].sqrt(), (1.0 - abar[t]).sqrt(), t)
}

/// DAPS's step as its code takes it, with one Langevin step: the annealing
/// level sigma_j = (100^(1/7) + j / K (0.1^(1/7) - 100^(1/7)))^7 (snapped to
/// the nearest training timestep), `k` Euler steps of the probability-flow
/// ODE from it toward 0.01 (DDIM, eta 0; the last to x0hat), one Langevin
/// step x0 += eta (A^T (y - A x0) / tau^2 + (x0hat - x0) / r^2) + sqrt(2 eta) xi
/// with eta = step (1 - 0.99 j / (K + 1)) / (||A||^2 / tau^2 + 1 / r^2), r =
/// sigma_j, tau = sigma_y, then x' = a' x0 + b' z at the next level.
#[test]
fn daps_one_step_matches_cpu_replay() {
    let gpu = gpu();
    let mix = Mixture64::new(&d8().problem);
    let d = mix.d;
    let abar = Process::default().train_alphas_cumprod().unwrap();
    let s_max2 = 1.01 * largest_singular2(&mix);
    let tau2 = mix.sigma_y * mix.sigma_y;
    let steps = 20;
    let edm = |hi: f64, lo: f64, r: f64| (hi.powf(1.0 / 7.0) + r * (lo.powf(1.0 / 7.0) - hi.powf(1.0 / 7.0))).powf(7.0);
    let mut r = rng(43);
    for (k, step) in [(1usize, 1.0f32), (3, 0.6)] {
        for i in [steps - 1, 12, 0] {
            let what = format!("DAPS {k} ODE steps, --daps-step {step}, step {i} of {steps}");
            let opts = with(
                mixture_opts(steps, 2),
                &[
                    ("daps-ode-steps", k as f32),
                    ("daps-langevin-steps", 1.0),
                    ("daps-step", step),
                ],
            );
            let (x_in, got, z, smp) = step_on(&gpu, "daps", &opts, i, &mut r, None);
            let [x0hat, xi] = smp
                .method_state::<Daps>()
                .unwrap()
                .state()
                .map(|t| f64s(&t.read(&gpu).unwrap()));
            let j = steps - 1 - i;
            let level = nearest_level(&abar, edm(100.0, 0.1, j as f64 / steps as f64));
            let (an, bn) = if i == 0 {
                (1.0, 0.0)
            } else {
                let next = nearest_level(&abar, edm(100.0, 0.1, (j + 1) as f64 / steps as f64));
                (next.0, next.1)
            };
            let sigma = level.1 / level.0;
            let mut ode: Vec<(f64, f64)> = vec![(level.0, level.1)];
            ode.extend((1..k).map(|q| {
                let l = nearest_level(&abar, edm(sigma, 0.01, q as f64 / k as f64));
                (l.0, l.1)
            }));
            ode.push((1.0, 0.0));
            let lr =
                step as f64 * (1.0 - 0.99 * j as f64 / (steps + 1) as f64) / (s_max2 / tau2 + 1.0 / (sigma * sigma));
            let (mut want_x0, mut want) = (Vec::new(), Vec::new());
            for n in 0..N {
                let mut x = f64s(&x_in[n * d..(n + 1) * d]);
                for w in ode.windows(2) {
                    let ((a, b), (a2, b2)) = (w[0], w[1]);
                    let eps = mix.eps(&x, a, b);
                    x = (0..d)
                        .map(|q| {
                            let x0 = (x[q] - b * eps[q]) / a;
                            a2 * x0 + b2 * (x[q] - a * x0) / b
                        })
                        .collect();
                }
                want_x0.extend(x.iter().map(|&v| v as f32));
                let res: Vec<f64> = mix.ax(&x).iter().zip(&mix.y).map(|(ax, y)| y - ax).collect();
                let g = mix.atv(&res);
                want.extend((0..d).map(|q| {
                    let x0 = x[q] + lr * g[q] / tau2 + (2.0 * lr).sqrt() * xi[n * d + q];
                    (an * x0 + bn * z[n * d + q]) as f32
                }));
            }
            let scale = want_x0.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&format!("{what}: x0hat"), &f32s(&x0hat), &want_x0, 2e-3 * scale, 2e-3);
            let scale = want.iter().fold(1f32, |acc, v| acc.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
}

// Measured on lavapipe (1000 samples; prior 7.15 / 1.99 on d8_m2 / d80_m4):
// DiffPIR 1.50 / 1.50 at 100 steps, 2.17 / 1.63 at 10 (1.50 on d8_m2 by CG
// too); DAPS 1.07 / 1.22 at 100 steps, 1.86 / 1.57 at 10, 1.24 on d8_m2
// through an A that does not say it is linear (||A||^2 then taken as 1, so
// smaller Langevin steps), and 2.34 on d8_m3_abs (prior 3.24).

/// DiffPIR by CG (a linear A without an SVD form) samples as well as
/// through the SVD form; DAPS, which needs only the measurement's VJP, runs
/// on an A that does not say it is linear and on |A x| (d8_m3_abs), stays
/// finite and lands nearer the exact posterior than the prior.
#[test]
fn diffpir_by_cg_and_daps_without_a_transpose() {
    let gpu = gpu();
    let n = 1000;
    let case = d8();
    let p = &case.problem;
    let (model, _) = prior_and_operator(&gpu, p, &Process::default());
    let plain = plain_dense(&gpu);
    let opaque = Hidden {
        dense: Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap(),
        linear: false,
    };
    let prior = prior_distance(case, n);
    for (name, op, frac) in [("diffpir", &plain, 0.3), ("daps", &opaque, 0.25)] {
        let meas = Measurement {
            op,
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        let smp = Sampler::new(&gpu, method(name), &model, Some(meas), n, &mixture_opts(100, 5)).unwrap();
        smp.run(&gpu).unwrap();
        let x = smp.x().read(&gpu).unwrap();
        assert!(x.iter().all(|v| v.is_finite()), "{name} on {} diverged", op.name());
        let sw = sliced_w2(&x, &case.reference, p.d, 99);
        println!("{name} on {}, d8_m2, 100 steps: {sw:.4} (prior {prior:.4})", op.name());
        assert!(sw < frac * prior, "{name} on {}: {sw} vs prior {prior}", op.name());
    }
    let abs = load("d8_m3_abs");
    let prior = prior_distance(&abs, n);
    let (x, _) = sample(&abs, method("daps"), &mixture_opts(100, 5), n);
    assert!(x.iter().all(|v| v.is_finite()), "DAPS on |A x| diverged");
    let sw = sliced_w2(&x, &abs.reference, abs.problem.d, 99);
    println!("daps on d8_m3_abs, 100 steps: {sw:.4} (prior {prior:.4})");
    assert!(sw < 0.85 * prior, "DAPS on |A x|: {sw} vs prior {prior}");
}

/// DAPS's likelihood default: the code's tau (0.0071) on clipped (image)
/// runs, sigma_y on unclipped ones (the mixtures): each default run equals
/// the run given that tau explicitly, on the same seeds, and the two differ.
#[test]
fn daps_tau_defaults_to_the_codes_on_images_and_sigma_y_on_mixtures() {
    use tweedie::samplers::daps::TAU_CODE;
    let case = d8();
    let sigma_y = case.problem.sigma_y;
    let n = 64;
    let run = |clip: bool, tau: Option<f32>| {
        let base = SamplerOptions {
            clip,
            ..with(mixture_opts(10, 3), &[("daps-langevin-steps", 5.0)])
        };
        let opts = match tau {
            Some(t) => with(base, &[("daps-tau", t)]),
            None => base,
        };
        sample(case, method("daps"), &opts, n).0
    };
    let image_default = run(true, None);
    assert_eq!(
        image_default,
        run(true, Some(TAU_CODE)),
        "clipped runs default to the code's tau"
    );
    assert_ne!(image_default, run(true, Some(sigma_y)), "and not to sigma_y");
    let mixture_default = run(false, None);
    assert_eq!(
        mixture_default,
        run(false, Some(sigma_y)),
        "unclipped runs default to sigma_y"
    );
    assert_ne!(mixture_default, run(false, Some(TAU_CODE)));
}

/// DiffPIR needs a linear measurement; both take their own steps, so
/// `--sampler ddim` is refused; their settings' ranges are checked.
#[test]
fn diffpir_and_daps_refusals_and_options() {
    let gpu = gpu();
    let p = &d8().problem;
    let (model, dense) = prior_and_operator(&gpu, p, &Process::default());
    let opaque = Hidden {
        dense: Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap(),
        linear: false,
    };
    let refusal = |name: &str, op: &dyn Operator, opts: &SamplerOptions| {
        let meas = Measurement {
            op,
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        let err = Sampler::new(&gpu, method(name), &model, Some(meas), 2, opts)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let o = mixture_opts(10, 1);
    assert_eq!(
        refusal("diffpir", &opaque, &o),
        "DiffPIR needs a linear measurement; opaque-dense is not"
    );
    let ddim = SamplerOptions {
        sampler: Some(BaseSampler::Ddim),
        ..o.clone()
    };
    for name in ["diffpir", "daps"] {
        let err = refusal(name, dense.as_ref(), &ddim);
        assert!(err.contains("--sampler and --eta do not apply"), "{err}");
    }
    let inverted = with(o.clone(), &[("daps-sigma-min", 5.0), ("daps-sigma-max", 2.0)]);
    assert_eq!(
        refusal("daps", dense.as_ref(), &inverted),
        "--daps-sigma-min (5) must be below --daps-sigma-max (2)"
    );
    for (name, flags) in [
        ("diffpir", &["diffpir-lambda", "diffpir-zeta", "cg-tol", "cg-iters"][..]),
        (
            "daps",
            &[
                "daps-ode-steps",
                "daps-langevin-steps",
                "daps-step",
                "daps-tau",
                "daps-sigma-max",
                "daps-sigma-min",
            ][..],
        ),
    ] {
        let names: Vec<&str> = method(name).options().iter().map(|o| o.name).collect();
        assert_eq!(names, flags, "{name}");
    }
    for (setting, value, message) in [
        ("diffpir-zeta", 1.5, "--diffpir-zeta must be at most 1, got 1.5"),
        ("daps-ode-steps", 0.0, "--daps-ode-steps must be at least 1"),
        (
            "daps-tau",
            -1.0,
            "DAPS's tau and sigma levels must be positive numbers, got -1",
        ),
    ] {
        let bad = MethodOptions::default().with(setting, value).unwrap();
        assert_eq!(bad.validate().err().unwrap().to_string(), message, "{setting}");
    }
}
