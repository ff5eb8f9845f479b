//! SMC (the twisted diffusion sampler) against exact Gaussian-mixture
//! posteriors: it converges as the population grows, and with 1000
//! particles it closes most of the prior-to-posterior gap that DPS, DMPS and
//! C-DPS leave (sliced W2 against the fixtures' exact posterior samples).
//! 250 respaced steps (as the d80 row of tests/samplers.rs); 4000 samples
//! (several populations) keep the W2 estimate's own noise small: one
//! population's final resampling repeats particles, which inflates W2.

mod common;
use common::gmm::*;

use tweedie::process::Process;
use tweedie::samplers::{Method, MethodOptions, SamplerOptions};

fn smc_opts(steps: usize, particles: usize, seed: u64) -> SamplerOptions {
    SamplerOptions {
        method: MethodOptions::default().with("particles", particles).unwrap(),
        ..mixture_opts(steps, seed)
    }
}

/// Fraction of the prior-to-exact gap closed: (prior - x) / (prior - floor).
fn closed(case: &Case, x: &[f32], n: usize) -> (f64, f64, f64, f64) {
    let p = &case.problem;
    let sw = |s: &[f32]| sliced_w2(s, &case.reference, p.d, 99);
    let prior = sw(&prior_samples(p, n, 1));
    let floor = sw(&exact_posterior_samples(p, n, 2));
    let v = sw(x);
    ((prior - v) / (prior - floor), v, prior, floor)
}

#[test]
fn smc_converges_as_the_population_grows_d8_m2() {
    let case = load("d8_m2");
    let n = 4000;
    let mut w2 = Vec::new();
    for particles in [10, 100, 1000] {
        let (x, stats) = sample_stats(&case, Method::Smc, &smc_opts(250, particles, 7), n);
        let smc = stats.populations().expect("SMC reports its populations");
        assert_eq!(smc.events.len(), n / particles, "populations");
        let (frac, v, prior, floor) = closed(&case, &x, n);
        println!(
            "d8_m2, {particles} particles: sliced W2 {v:.4} (prior {prior:.4}, exact {floor:.4}), gap closed {:.1}%, {} resampling events, mean ESS {:.2}",
            100.0 * frac,
            smc.events.iter().sum::<u32>(),
            smc.mean_ess.iter().sum::<f64>() / smc.mean_ess.len() as f64
        );
        w2.push((particles, v, frac));
    }
    // Measured on lavapipe: 0.928 / 0.200 / 0.192. From about 100 particles on
    // the distance left is the 250-step chain's own (its x_0 marginal is the
    // prior up to discretisation): at 1000 steps both 100 and 1000 particles
    // reach 0.11 against an exact floor of 0.08 (docs/accuracy.md, "Posterior accuracy").
    assert!(w2[1].1 < 0.5 * w2[0].1, "10 -> 100 particles must close in: {w2:?}");
    assert!(w2[2].1 < 1.1 * w2[1].1, "1000 particles no worse than 100: {w2:?}");
    assert!(w2[2].2 > 0.95, "1000 particles close at least 95% of the gap: {w2:?}");
}

#[test]
fn smc_closes_the_gap_d80_m4() {
    let case = load("d80_m4");
    let n = 4000;
    let (x, stats) = sample_stats(&case, Method::Smc, &smc_opts(250, 1000, 3), n);
    let (frac, v, prior, floor) = closed(&case, &x, n);
    let smc = stats.populations().unwrap();
    println!(
        "d80_m4, 1000 particles: sliced W2 {v:.4} (prior {prior:.4}, exact {floor:.4}), gap closed {:.1}%, events {:?}",
        100.0 * frac,
        smc.events
    );
    // Measured: see the printout; DPS at these settings closes 80%, DMPS 10%.
    assert!(
        frac > 0.75,
        "SMC with 1000 particles closes {:.1}% of the gap",
        100.0 * frac
    );
}

#[test]
fn smc_refuses_what_it_cannot_run() {
    let case = load("d8_m2");
    let gpu = common::gpu();
    let p = &case.problem;
    let (model, op) = prior_and_operator(&gpu, p, &Process::default());
    let run = |sigma_y: f32, y: &[f32], n: usize, particles: usize| {
        let meas = tweedie::samplers::Measurement {
            op: op.as_ref(),
            y,
            sigma_y,
        };
        tweedie::samplers::Sampler::new(&gpu, Method::Smc, &model, Some(meas), n, &smc_opts(10, particles, 0))
            .err()
            .map(|e| e.to_string())
    };
    let e = run(0.0, &p.y, 8, 4).expect("sigma_y = 0 refused");
    assert!(e.contains("sigma_y"), "{e}");
    let e = run(p.sigma_y, &p.y, 8, 1).expect("one particle refused");
    assert!(e.contains("2 particles"), "{e}");
    // Per-sample measurements must fill whole populations.
    let ys: Vec<f32> = p.y.iter().cycle().take(p.m * 6).copied().collect();
    let e = run(p.sigma_y, &ys, 6, 4).expect("6 samples in populations of 4 refused");
    assert!(e.contains("multiple of --particles"), "{e}");
    // A partial last population is fine with one shared measurement.
    assert!(run(p.sigma_y, &p.y, 6, 4).is_none());
}
