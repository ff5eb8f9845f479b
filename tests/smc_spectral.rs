//! The spectral SMC (src/samplers/smc_spectral.rs) against exact
//! Gaussian-mixture posteriors (issue 27): with its defaults (1000
//! particles, 1000 steps) it closes at least 75% of the prior-to-exact gap on
//! the fixtures' linear mixtures and on harder ones of the same family (25
//! components, sigma_y 0.05) at d = 20 (m = 1) and d = 800 (m = 1 and 8), where
//! TDS stalled; the gap shrinks as the population grows; and `--method smc`
//! takes it for an operator with an SVD form. The exact floor is the median
//! sliced W2 of several independent exact draws (one draw of 1000 is noisy).

mod common;
use common::gmm::*;

use tweedie::samplers::{Method, MethodOptions, SamplerOptions};

const STEPS: usize = 1000;

fn opts(particles: usize, variant: &str, seed: u64) -> SamplerOptions {
    SamplerOptions {
        method: MethodOptions::default()
            .with("particles", particles)
            .unwrap()
            .with("smc-variant", variant)
            .unwrap(),
        ..mixture_opts(STEPS, seed)
    }
}

/// A problem of the fixtures' family with 20000 exact posterior draws.
fn family_case(d: usize, m: usize, seed: u64) -> Case {
    let problem = family(d, m, seed);
    let reference = exact_posterior_samples(&problem, 20000, 77);
    Case { problem, reference }
}

/// Sliced W2 of `x` to the reference, of the prior, and the exact floor (the
/// median over five independent exact draws of as many samples).
struct Score {
    w2: f64,
    prior: f64,
    floor: f64,
}

impl Score {
    fn of(case: &Case, x: &[f32], n: usize) -> Score {
        let p = &case.problem;
        let sw = |s: &[f32]| sliced_w2(s, &case.reference, p.d, 99);
        let mut floors: Vec<f64> = (0..5).map(|k| sw(&exact_posterior_samples(p, n, 100 + k))).collect();
        floors.sort_by(f64::total_cmp);
        Score {
            w2: sw(x),
            prior: sw(&prior_samples(p, n, 1)),
            floor: floors[2],
        }
    }

    /// The fraction of the prior-to-exact gap closed.
    fn closed(&self) -> f64 {
        (self.prior - self.w2) / (self.prior - self.floor)
    }
}

fn run(case: &Case, particles: usize, variant: &str, n: usize, seed: u64) -> Score {
    let label = format!("{variant}, {particles} particles");
    run_opts(case, &opts(particles, variant, seed), &label, n).0
}

/// `n` samples with `o`: the score and the seconds it took, printed with the
/// populations' resampling events and mean ESS.
fn run_opts(case: &Case, o: &SamplerOptions, label: &str, n: usize) -> (Score, f64) {
    let t = std::time::Instant::now();
    let (x, stats) = sample_stats(case, Method::Smc, o, n);
    let secs = t.elapsed().as_secs_f64();
    let s = Score::of(case, &x, n);
    let pop = stats.populations().expect("SMC reports its populations");
    println!(
        "d{} m{} {label}: sliced W2 {:.4} (prior {:.4}, exact {:.4}), gap closed {:.1}%, {} resampling events, mean ESS {:.3}, {secs:.1} s",
        case.problem.d,
        case.problem.m,
        s.w2,
        s.prior,
        s.floor,
        100.0 * s.closed(),
        pop.events.iter().sum::<u32>(),
        pop.mean_ess.iter().sum::<f64>() / pop.mean_ess.len() as f64
    );
    (s, secs)
}

fn check_closes(case: &Case) {
    let s = run(case, 1000, "auto", 1000, 5);
    assert!(
        s.closed() > 0.75,
        "d{} m{}: the spectral SMC closes {:.1}% of the gap (W2 {}, prior {}, floor {})",
        case.problem.d,
        case.problem.m,
        100.0 * s.closed(),
        s.w2,
        s.prior,
        s.floor
    );
}

#[test]
fn spectral_closes_the_gap_d20_m1() {
    check_closes(&family_case(20, 1, 31));
}

#[test]
fn spectral_closes_the_gap_d800_m1() {
    check_closes(&family_case(800, 1, 32));
}

#[test]
fn spectral_closes_the_gap_d800_m8() {
    check_closes(&family_case(800, 8, 33));
}

#[test]
fn spectral_closes_the_gap_on_the_fixtures() {
    for name in ["d8_m2", "d80_m4"] {
        check_closes(&load(name));
    }
}

/// More particles, a smaller gap: 10 -> 100 -> 1000 on d = 20, m = 1.
#[test]
fn spectral_converges_as_the_population_grows() {
    let case = family_case(20, 1, 31);
    let rows: Vec<f64> = [10, 100, 1000]
        .iter()
        .map(|&p| run(&case, p, "spectral", 2000, 9).w2)
        .collect();
    assert!(
        rows[1] < rows[0] && rows[2] < rows[1],
        "W2 must fall with particles: {rows:?}"
    );
}

/// `--smc-variant auto` plans the spectral sampler for an operator with an
/// SVD form and TDS for one without (the non-linear |A x|); `spectral` on the
/// latter is refused in one line naming the flag.
#[test]
fn the_variant_follows_the_operator() {
    use tweedie::samplers::smc::Smc;
    use tweedie::samplers::smc_spectral::SpectralSmc;
    use tweedie::samplers::{Measurement, Sampler};
    let gpu = common::gpu();
    for (name, spectral) in [("d8_m2", true), ("d8_m3_abs", false)] {
        let case = load(name);
        let p = &case.problem;
        let (model, op) = prior_and_operator(&gpu, p, &tweedie::process::Process::default());
        let meas = || Measurement {
            op: op.as_ref(),
            y: &p.y,
            sigma_y: p.sigma_y,
        };
        let s = Sampler::new(&gpu, Method::Smc, &model, Some(meas()), 4, &opts(4, "auto", 0)).unwrap();
        assert_eq!(s.method_state::<SpectralSmc>().is_some(), spectral, "{name}: auto");
        assert_eq!(s.method_state::<Smc>().is_some(), !spectral, "{name}: auto");
        // Only TDS takes the model's VJP (so only it keeps the activations a
        // VJP needs, and `compare` counts VJPs for it alone).
        for (variant, vjp) in [("auto", !spectral), ("tds", true), ("spectral", false)] {
            assert_eq!(
                Method::Smc.uses_vjp(&opts(4, variant, 0).method, spectral),
                vjp,
                "{name}: {variant}"
            );
        }
        let forced = Sampler::new(&gpu, Method::Smc, &model, Some(meas()), 4, &opts(4, "spectral", 0));
        match (spectral, forced) {
            (true, Ok(s)) => assert!(s.method_state::<SpectralSmc>().is_some()),
            (false, Err(e)) => assert!(e.to_string().contains("--smc-variant spectral"), "{name}: {e}"),
            (_, r) => panic!("{name}: --smc-variant spectral: {:?}", r.err()),
        }
    }
}

/// TDS (`--smc-variant tds`) with `--smc-twist` `twist`: its score and seconds.
fn tds(case: &Case, particles: usize, twist: &str) -> (Score, f64) {
    let o = opts(particles, "tds", 5);
    let o = SamplerOptions {
        method: o.method.clone().with("smc-twist", twist).unwrap(),
        ..o
    };
    run_opts(
        case,
        &o,
        &format!("tds/{twist}, {particles} particles"),
        particles.max(1000),
    )
}

/// TDS's twist with the operator's geometry (sigma_y^2 + r_t ||a||^2 here)
/// against the paper's isotropic one on d = 20, m = 1 (||a||^2 != 1):
/// measured 96.7% against 88.1% of the gap; asserted > 90% and better.
#[test]
fn tds_with_the_operator_twist_closes_the_gap() {
    let case = family_case(20, 1, 31);
    let operator = tds(&case, 1000, "operator").0.closed();
    let isotropic = tds(&case, 1000, "isotropic").0.closed();
    assert!(
        operator > 0.9 && operator > isotropic,
        "operator twist {operator}, isotropic {isotropic}"
    );
}

/// The README's SMC tables (`--ignored`): TWEEDIE_TABLE = d,m,seed;... picks
/// the problems ("fixtures": the two fixtures), TWEEDIE_PARTICLES the
/// populations (comma-separated, default 1000), TWEEDIE_VARIANTS the samplers
/// (comma-separated `spectral`, `tds/operator`, `tds/isotropic`; default the
/// two TDS twists). One line per run, as it finishes.
#[test]
#[ignore]
fn tds_twist_table() {
    let spec = std::env::var("TWEEDIE_TABLE").unwrap_or_else(|_| "20,1,31".into());
    let cases: Vec<Case> = if spec == "fixtures" {
        vec![load("d8_m2"), load("d80_m4")]
    } else {
        spec.split(';')
            .map(|c| {
                let v: Vec<u64> = c.split(',').map(|e| e.parse().unwrap()).collect();
                family_case(v[0] as usize, v[1] as usize, v[2])
            })
            .collect()
    };
    let list = |name: &str, default: &str| -> Vec<String> {
        let v = std::env::var(name).unwrap_or_else(|_| default.into());
        v.split(',').map(|e| e.trim().to_string()).collect()
    };
    let particles: Vec<usize> = list("TWEEDIE_PARTICLES", "1000")
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let variants = list("TWEEDIE_VARIANTS", "tds/operator,tds/isotropic");
    for case in &cases {
        for &n in &particles {
            for v in &variants {
                match v.strip_prefix("tds/") {
                    Some(twist) => drop(tds(case, n, twist)),
                    None => drop(run(case, n, v, n.max(1000), 5)),
                }
            }
        }
    }
}
