//! A non-linear problem with an exact posterior: y = |A x| + sigma_y n on a
//! Gaussian mixture (`abs` = [1] in the problem file; the fixtures and their
//! exact samples come from tools/make_abs_problems.py, by rejection per sign
//! pattern). The operator |A x| against a CPU reference and finite
//! differences; DPS, which needs only the VJP, against a float64 DPS with the
//! same gradient (A^T (sign(A x0hat) r) / |r| through the mixture's exact
//! Hessian); SMC closer to the exact posterior than DPS and the prior; the
//! methods that need A^T refusing it.

mod common;
use common::gmm::*;
use common::{assert_close, randn, rng};

use tweedie::process::Process;
use tweedie::samplers::{Measurement, Method, MethodOptions, Sampler, SamplerOptions};
use tweedie::Tensor;

const PROBLEMS: [&str; 2] = ["d8_m3_abs", "d20_m4_abs"];

#[test]
fn the_fixtures_are_abs_problems() {
    for name in PROBLEMS {
        let case = load(name);
        assert!(case.problem.abs, "{name}");
        assert_eq!(case.reference.len(), 4000 * case.problem.d);
    }
    assert!(!load("d8_m2").problem.abs);
}

#[test]
fn magnitude_operator_matches_cpu_and_finite_differences() {
    let gpu = common::gpu();
    let case = load("d8_m3_abs");
    let p = &case.problem;
    let m64 = Mixture64::new(p);
    let op = p.operator(&gpu).unwrap();
    let n = 5;
    let mut g = rng(3);
    let x = randn(&mut g, n * p.d);
    let v = randn(&mut g, n * p.m);
    let xt = Tensor::from_slice(&gpu, "x", &[n, p.d, 1, 1], &x).unwrap();
    let yt = Tensor::zeros(&gpu, "y", &[n, p.m, 1, 1]).unwrap();
    let vt = Tensor::from_slice(&gpu, "v", &[n, p.m, 1, 1], &v).unwrap();
    let out = Tensor::zeros(&gpu, "vjp", &[n, p.d, 1, 1]).unwrap();
    op.forward(&gpu, &xt, &yt).unwrap().run(&gpu).unwrap();
    op.vjp(&gpu, &xt, &vt, &out).unwrap().run(&gpu).unwrap();
    let (mut want_y, mut want_vjp) = (Vec::new(), Vec::new());
    for s in 0..n {
        let xs: Vec<f64> = x[s * p.d..(s + 1) * p.d].iter().map(|&v| v as f64).collect();
        let ax = m64.ax(&xs);
        want_y.extend(ax.iter().map(|v| v.abs() as f32));
        let sv: Vec<f64> = (0..p.m).map(|i| ax[i].signum() * v[s * p.m + i] as f64).collect();
        want_vjp.extend(m64.atv(&sv).iter().map(|&v| v as f32));
        // <v, (|A(x + h e_j)| - |A(x - h e_j)|) / 2h> = (J^T v)_j away from A x = 0.
        let h = 1e-6;
        for j in 0..p.d {
            let at = |sign: f64| {
                let mut xh = xs.clone();
                xh[j] += sign * h;
                m64.ax(&xh)
                    .iter()
                    .zip(&v[s * p.m..(s + 1) * p.m])
                    .map(|(a, &v)| a.abs() * v as f64)
                    .sum::<f64>()
            };
            let fd = (at(1.0) - at(-1.0)) / (2.0 * h);
            let an = want_vjp[s * p.d + j] as f64;
            assert!(
                (fd - an).abs() < 1e-5 * an.abs().max(1.0),
                "sample {s} coord {j}: {fd} vs {an}"
            );
        }
    }
    assert_close("|A x|", &yt.read(&gpu).unwrap(), &want_y, 1e-5, 1e-5);
    assert_close("A^T (sign(A x) v)", &out.read(&gpu).unwrap(), &want_vjp, 1e-5, 1e-5);
}

/// DPS in float64 on the abs problem: the DDPM step on the exact mixture
/// eps minus zeta (d x0hat / d x)^T g0, with x0hat = (x + b^2 s(x)) / a (s
/// the diffused mixture's score), g0 = -A^T (sign(A x0hat) r) / |r| the
/// gradient of |r| = |y - |A x0hat|| and d x0hat / d x = (I + b^2 H) / a,
/// H the score's Jacobian (symmetric):
/// sum_k r_k (s_k s_k^T - diag(1 / v_k)) - s s^T.
fn dps64(p: &Mixture64, steps: usize, zeta: f64, n: usize, seed: u64) -> Vec<f32> {
    ddpm64(p, steps, n, seed, |xs, a, b, _| dps_guide64(p, xs, a, b, zeta))
}

/// DPS's term at x_t (see [`dps64`]).
fn dps_guide64(p: &Mixture64, xs: &[f64], a: f64, b: f64, zeta: f64) -> Vec<f64> {
    let d = p.d;
    let (resp, sk, score) = diffused_score(&p.w, &p.mu, &p.var, xs, a, b);
    let x0: Vec<f64> = (0..d).map(|j| (xs[j] + b * b * score[j]) / a).collect();
    let ax = p.ax(&x0);
    let res: Vec<f64> = (0..p.m).map(|k| p.y[k] - ax[k].abs()).collect();
    let norm = res.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
    let signed: Vec<f64> = (0..p.m).map(|k| -ax[k].signum() * res[k] / norm).collect();
    let g0 = p.atv(&signed);
    // H g0, then -zeta (g0 + b^2 H g0) / a.
    let sg: f64 = (0..d).map(|j| score[j] * g0[j]).sum();
    let mut hg = vec![0f64; d];
    for (c, &rc) in resp.iter().enumerate() {
        let skc = &sk[c * d..(c + 1) * d];
        let dot: f64 = (0..d).map(|j| skc[j] * g0[j]).sum();
        for j in 0..d {
            let v = a * a * p.var[c * d + j] + b * b;
            hg[j] += rc * (skc[j] * dot - g0[j] / v);
        }
    }
    (0..d)
        .map(|j| -zeta * (g0[j] + b * b * (hg[j] - score[j] * sg)) / a)
        .collect()
}

const SAMPLES: usize = 3000;

fn opts(steps: usize, method: MethodOptions) -> SamplerOptions {
    SamplerOptions {
        method,
        ..mixture_opts(steps, 5)
    }
}

fn check_dps(name: &str) {
    let case = load(name);
    let p = &case.problem;
    let m64 = Mixture64::new(p);
    let gpu: Vec<Vec<f32>> = [5, 6]
        .iter()
        .map(|&seed| {
            let o = SamplerOptions {
                method: MethodOptions::default(),
                ..mixture_opts(100, seed)
            };
            sample(&case, Method::Dps, &o, SAMPLES).0
        })
        .collect();
    let f64s: Vec<Vec<f32>> = [31, 32, 33]
        .iter()
        .map(|&seed| dps64(&m64, 100, 1.0, SAMPLES, seed))
        .collect();
    // The posterior's modes lie far apart, so a few percent of the mass
    // landing in another mode moves sliced W2 by a lot: two float64 runs of
    // 1000 samples differ by 0.7-1.6 on d8_m3_abs. The GPU's runs must sit
    // among the float64 ones: their mean distance to them no larger than the
    // float64 runs' mean distance to each other, with 30% to spare.
    let mean = |pairs: Vec<(&Vec<f32>, &Vec<f32>)>| {
        pairs.iter().map(|(a, b)| sliced_w2(a, b, p.d, 12)).sum::<f64>() / pairs.len() as f64
    };
    let noise = mean(vec![(&f64s[0], &f64s[1]), (&f64s[0], &f64s[2]), (&f64s[1], &f64s[2])]);
    let apart = mean(gpu.iter().flat_map(|g| f64s.iter().map(move |f| (g, f))).collect());
    let score = |x: &Vec<f32>| sliced_w2(x, &case.reference, p.d, 11);
    eprintln!(
        "{name}: DPS to the exact posterior: GPU {:?}, float64 {:?}; GPU vs float64 {apart:.3}, float64 vs float64 {noise:.3}",
        gpu.iter().map(score).collect::<Vec<_>>(),
        f64s.iter().map(score).collect::<Vec<_>>()
    );
    assert!(
        apart <= 1.3 * noise,
        "{name}: GPU DPS runs are {apart} from float64 DPS runs; float64 runs are {noise} apart"
    );
}

// d8_m3_abs is checked on the same noise (below): its runs' spread between
// seeds (sliced W2 1.55 to 1.97 at 3000 samples) is too wide for a
// comparison of a few runs on different noise.
#[test]
fn dps_matches_a_float64_dps_d20_m4_abs() {
    check_dps("d20_m4_abs");
}

/// The fraction of the prior-to-exact gap that `x` closes (tools/score_gmm.py's).
fn gap_closed(case: &Case, x: &[f32]) -> (f64, f64) {
    let p = &case.problem;
    let score = |x: &[f32]| sliced_w2(x, &case.reference, p.d, 11);
    let n = x.len() / p.d;
    let prior = score(&prior_samples(p, n, 7));
    // The floor: as many of the reference's own samples against the whole set.
    let floor = score(&case.reference[..n.min(2000) * p.d]);
    let got = score(x);
    ((prior - got) / (prior - floor), got)
}

/// The median of an even number of values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
}

/// SMC on d8_m3_abs at 100 steps, one population of 3000 particles per seed.
/// Its result swings with the resampling draws (one population's particles
/// share ancestors, so the split between sign patterns is a few effective
/// draws): over seeds 1-4 it closes 73%, 44%, 82% and 78% of the
/// prior-to-exact gap with the operator twist (the isotropic one: 83%, 33%,
/// 67%, 78%; DPS: 47-54%). Asserted: every seed closes a quarter of it, the
/// median closes 65%, and SMC beats DPS in the median.
#[test]
fn smc_on_d8_m3_abs_closes_most_of_the_gap_in_the_median() {
    let case = load("d8_m3_abs");
    let mut smc = Vec::new();
    let mut dps = Vec::new();
    for seed in 1..=4 {
        let o = SamplerOptions {
            method: MethodOptions::default(),
            ..mixture_opts(100, seed)
        };
        smc.push(gap_closed(&case, &sample(&case, Method::Smc, &o, SAMPLES).0).0);
        dps.push(gap_closed(&case, &sample(&case, Method::Dps, &o, SAMPLES).0).0);
    }
    eprintln!("d8_m3_abs, 100 steps, gap closed per seed: SMC {smc:.3?}, DPS {dps:.3?}");
    assert!(smc.iter().all(|&g| g > 0.25), "SMC per seed: {smc:?}");
    assert!(median(smc.clone()) >= 0.65, "SMC per seed: {smc:?}");
    assert!(median(smc) > median(dps));
}

/// SMC on d20_m4_abs (two opposite sign patterns hold the posterior), 1000
/// steps, 1000 samples as 10 populations of 100 per seed: each population
/// splits its particles between the two patterns by a few effective draws,
/// and ten independent populations average the split. Measured (lavapipe)
/// over seeds 5-8: 99%, 69%, 83%, 32% of the gap (median 76%); one
/// population of 1000 (`tweedie gmm`, tools/score_gmm.py, seeds 0, 2, 5-8)
/// swung from -56% to 84%. Asserted: the median over the four seeds closes 65%.
#[test]
fn smc_on_d20_m4_abs_closes_most_of_the_gap_in_the_median() {
    let case = load("d20_m4_abs");
    let mut smc = Vec::new();
    for seed in 5..=8 {
        let o = SamplerOptions {
            method: MethodOptions::default().with("particles", 100).unwrap(),
            ..mixture_opts(1000, seed)
        };
        smc.push(gap_closed(&case, &sample(&case, Method::Smc, &o, 1000).0).0);
    }
    eprintln!("d20_m4_abs, 1000 steps, 10 x 100 particles, gap closed per seed: SMC {smc:.3?}");
    assert!(median(smc.clone()) >= 0.65, "SMC per seed: {smc:?}");
}

#[test]
fn methods_that_need_a_linear_measurement_refuse_abs() {
    let gpu = common::gpu();
    let case = load("d8_m3_abs");
    let p = &case.problem;
    let (model, op) = prior_and_operator(&gpu, p, &Process::default());
    for (method, label) in [(Method::Dmps, "DMPS"), (Method::Cdps, "C-DPS")] {
        let meas = Measurement {
            op: op.as_ref(),
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        let e = Sampler::new(&gpu, method, &model, Some(meas), 4, &opts(10, MethodOptions::default()))
            .err()
            .unwrap_or_else(|| panic!("{label} accepted |A x|"))
            .to_string();
        assert_eq!(e, format!("{label} needs a linear measurement; abs-dense is not"));
    }
}

/// `dps64`'s step i (zeta 1) from x_t = `xs` with the noise `z` (the GPU's,
/// in the replays below).
fn dps_step64(m: &Mixture64, sched: &tweedie::schedule::Schedule, i: usize, xs: &[f64], z: &[f32]) -> Vec<f64> {
    let abar = sched.alphas_cumprod[i];
    let g = dps_guide64(m, xs, abar.sqrt(), (1.0 - abar).sqrt(), 1.0);
    ddpm_step64(m, sched, i, xs, &g, z)
}

/// A GPU DPS sampler (zeta 1, the exact mixture score) of `n` samples on
/// `case`, `steps` steps from `seed`.
fn dps_sampler(gpu: &tweedie::Gpu, case: &Case, n: usize, steps: usize, seed: u64) -> Sampler {
    let p = &case.problem;
    let (model, op) = prior_and_operator(gpu, p, &Process::default());
    let o = SamplerOptions {
        method: MethodOptions::default(),
        ..mixture_opts(steps, seed)
    };
    let meas = Measurement {
        op: op.as_ref(),
        y: &p.y,
        sigma_y: p.sigma_y,
    };
    Sampler::new(gpu, Method::Dps, &model, Some(meas), n, &o).unwrap()
}

/// One GPU DPS step on d8_m3_abs from random x_t against the float64 step
/// that `dps64` takes (the same gradient through the mixture's exact
/// Hessian), at early, middle and late steps of a 100-step run, the last
/// (no noise) included.
#[test]
fn dps_one_step_on_abs_matches_the_float64_step() {
    let gpu = common::gpu();
    let case = load("d8_m3_abs");
    let p = &case.problem;
    let m64 = Mixture64::new(p);
    let (steps, n, d) = (100, 64, p.d);
    let sched = tweedie::schedule::Schedule::linear(1000, steps).unwrap();
    let mut r = rng(41);
    for i in [99, 90, 60, 30, 5, 1, 0] {
        let s = dps_sampler(&gpu, &case, n, steps, 3);
        let abar = sched.alphas_cumprod[i];
        let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
        let x_in: Vec<f32> = randn(&mut r, n * d).iter().map(|v| v * (a + b) as f32).collect();
        s.x().write(&gpu, &x_in).unwrap();
        s.step(&gpu, i).unwrap();
        let got = s.x().read(&gpu).unwrap();
        let z = s.core.z.read(&gpu).unwrap();
        let mut want = Vec::with_capacity(n * d);
        for k in 0..n {
            let xs: Vec<f64> = x_in[k * d..(k + 1) * d].iter().map(|&v| v as f64).collect();
            want.extend(
                dps_step64(&m64, &sched, i, &xs, &z[k * d..(k + 1) * d])
                    .iter()
                    .map(|&v| v as f32),
            );
        }
        assert_close(&format!("DPS step {i} on |A x|"), &got, &want, 1e-4, 1e-4);
    }
}

/// The GPU's whole DPS run on d8_m3_abs replayed in float64 on the GPU's
/// own noise (x_T and every z), so that the two differ only by rounding
/// (which a multimodal posterior amplifies in some samples): both land at
/// the same sliced W2 from the exact posterior, and the noise itself is
/// standard normal. This is the d8_m3_abs check of "DPS matches a float64
/// DPS": run against float64 runs on their own noise (as d20_m4_abs is,
/// above) the between-run spread decides. Measured: GPU seeds 5-10 scored
/// 1.87, 1.78, 1.68, 1.61, 1.55, 1.64 (mean 1.69), float64 seeds 31-38
/// 1.68, 1.65, 1.59, 1.62, 1.97, 1.74, 1.60, 1.75 (mean 1.70); the "0.2
/// farther" once noted here was seeds 5 and 6 being the GPU's two highest.
/// Same noise, seed 5: GPU 1.871, float64 1.863, 528 of 3000 samples apart
/// by more than 0.01.
#[test]
fn dps_on_d8_m3_abs_is_the_float64_dps_on_the_same_noise() {
    let gpu = common::gpu();
    let case = load("d8_m3_abs");
    let p = &case.problem;
    let m64 = Mixture64::new(p);
    let (steps, n, d) = (100, SAMPLES, p.d);
    let sched = tweedie::schedule::Schedule::linear(1000, steps).unwrap();
    let s = dps_sampler(&gpu, &case, n, steps, 5);
    s.init(&gpu).unwrap();
    let mut x: Vec<f64> = s.x().read(&gpu).unwrap().iter().map(|&v| v as f64).collect();
    let mut noise: Vec<f64> = x.clone();
    for i in (0..steps).rev() {
        s.step(&gpu, i).unwrap();
        let z = s.core.z.read(&gpu).unwrap();
        if i > 0 {
            noise.extend(z.iter().map(|&v| v as f64));
        }
        for k in 0..n {
            let next = dps_step64(&m64, &sched, i, &x[k * d..(k + 1) * d], &z[k * d..(k + 1) * d]);
            x[k * d..(k + 1) * d].copy_from_slice(&next);
        }
    }
    // The noise: 3000 x 8 x 100 draws, mean 0 and variance 1 to within a few
    // standard errors, consecutive draws uncorrelated.
    let k = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / k;
    let var = noise.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / k;
    let lag1 = noise.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (k - 1.0);
    assert!(
        mean.abs() < 0.005 && (var - 1.0).abs() < 0.01 && lag1.abs() < 0.005,
        "noise: mean {mean}, variance {var}, lag-1 {lag1}"
    );
    let got = s.x().read(&gpu).unwrap();
    let replay: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let far = (0..n)
        .filter(|&k| (0..d).any(|j| (got[k * d + j] - replay[k * d + j]).abs() > 1e-2))
        .count();
    let score = |x: &[f32]| sliced_w2(x, &case.reference, d, 11);
    let (g, f) = (score(&got), score(&replay));
    eprintln!("d8_m3_abs, same noise: GPU {g:.3}, float64 {f:.3}, {far} of {n} samples apart by > 0.01");
    assert!((g - f).abs() < 0.05, "GPU DPS {g}, float64 DPS on the same noise {f}");
    assert!(far < n / 4, "{far} of {n} samples left the float64 replay");
}
