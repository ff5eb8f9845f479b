//! DMPS and DPS on a flow prior against the same methods on the DDPM prior:
//! the DMPS paper's claim that a flow model at 50-100 Euler steps leaves no
//! more of the prior-to-posterior gap than diffusion at 1000 steps.
//!
//! The mixture runs as a flow x_t = (1 - t) x0 + t eps with its exact velocity
//! (`GmmPrior` with `Process::flow`), and as the DDPM process with its exact
//! eps; everything after the model is the samplers' shared code. Scores are
//! sliced W2 to exact posterior samples (tests/fixtures/gmm), as in
//! tests/samplers.rs.
//!
//! Measured on lavapipe (sliced W2 as printed by this file's tests; 1000
//! samples, seed 5):
//!
//! | | DDPM 1000 | flow 100 | flow 50 | DDIM eta 0, 100 | DDIM eta 1, 100 |
//! | --- | --- | --- | --- | --- | --- |
//! | DPS d8_m2 | 0.91 | 0.86 | 0.65 | | |
//! | DPS d80_m4 | 0.48 | 0.48 | 0.24 | | |
//! | DMPS d8_m2 | 2.04 | 2.68 | 2.62 | 2.76 | 2.07 |
//! | DMPS d80_m4 | 1.78 | 1.77 | 1.75 | | |
//!
//! The claim holds for DPS on both problems and for DMPS on d80_m4; DMPS on
//! d8_m2 (two modes 8 apart) trails by 0.6. That shortfall is the ODE's, not
//! the flow's: DMPS on the DDPM prior with deterministic DDIM steps scores the
//! same 2.76, and DDIM with eta = 1 recovers DDPM's 2.07 (the stochastic
//! sampler re-weights the modes that a deterministic transport fixes early).
//! `dmps_flow_d8_m2_*` asserts the measured shortfall stays bounded.

mod common;
use common::gmm::*;

use std::sync::OnceLock;

use tweedie::process::Process;
use tweedie::samplers::{BaseSampler, Method, SamplerOptions};

const SAMPLES: usize = 1000;

fn opts(steps: usize) -> SamplerOptions {
    mixture_opts(steps, 5)
}

fn case(name: &'static str) -> &'static Case {
    static D8: OnceLock<Case> = OnceLock::new();
    static D80: OnceLock<Case> = OnceLock::new();
    let cell = if name == "d8_m2" { &D8 } else { &D80 };
    cell.get_or_init(|| load(name))
}

/// Sliced W2 of `method` to the exact posterior: on the DDPM prior (`flow`
/// false, `sampler` its base step) or the flow prior.
fn score(name: &'static str, method: Method, steps: usize, flow: bool, sampler: Option<(BaseSampler, f32)>) -> f64 {
    let c = case(name);
    let mut o = opts(steps);
    if let Some((s, eta)) = sampler {
        o.sampler = Some(s);
        o.eta = Some(eta);
    }
    if flow {
        o.method.set("lambda", "2").unwrap();
    }
    let process = if flow { Process::flow(1.0) } else { Process::default() };
    let (x, _) = sample_process(c, method, &o, SAMPLES, &process);
    let sw = sliced_w2(&x, &c.reference, c.problem.d, 99);
    println!("{name} {method:?} {steps} steps, flow {flow}, {sampler:?}: sliced W2 {sw:.4}");
    sw
}

/// DMPS / DPS on the DDPM prior at 1000 steps, computed once per problem.
fn ddpm_1000(name: &'static str, method: Method) -> f64 {
    static CELLS: [OnceLock<f64>; 4] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = usize::from(name == "d80_m4") * 2 + usize::from(method == Method::Dps);
    *CELLS[i].get_or_init(|| score(name, method, 1000, false, None))
}

fn prior_score(name: &'static str) -> f64 {
    let c = case(name);
    sliced_w2(&prior_samples(&c.problem, SAMPLES, 1), &c.reference, c.problem.d, 99)
}

/// The paper's claim: the flow at `steps` leaves no more of the gap than DDPM at 1000, within 0.1.
fn claim(name: &'static str, method: Method, steps: usize) {
    let base = ddpm_1000(name, method);
    let flow = score(name, method, steps, true, None);
    let prior = prior_score(name);
    assert!(
        flow <= base + 0.1,
        "{name} {method:?}: the flow at {steps} steps scores {flow:.3}, DDPM at 1000 {base:.3} (prior {prior:.3})"
    );
}

#[test]
fn dps_flow_matches_ddpm_1000_d8_m2() {
    claim("d8_m2", Method::Dps, 100);
    claim("d8_m2", Method::Dps, 50);
}

#[test]
fn dps_flow_matches_ddpm_1000_d80_m4() {
    claim("d80_m4", Method::Dps, 100);
    claim("d80_m4", Method::Dps, 50);
}

#[test]
fn dmps_flow_matches_ddpm_1000_d80_m4() {
    claim("d80_m4", Method::Dmps, 100);
    claim("d80_m4", Method::Dmps, 50);
}

/// The claim fails here (see the module docs): assert what is measured, a
/// bounded shortfall, and that the flow still closes most of the gap.
#[test]
fn dmps_flow_d8_m2_trails_ddpm_1000_by_at_most_0_7() {
    let base = ddpm_1000("d8_m2", Method::Dmps);
    let prior = prior_score("d8_m2");
    for steps in [100, 50] {
        let flow = score("d8_m2", Method::Dmps, steps, true, None);
        assert!(
            flow <= base + 0.7,
            "DMPS flow {steps}: {flow:.3} vs DDPM 1000 {base:.3}"
        );
        assert!(flow < 0.4 * prior, "DMPS flow {steps}: {flow:.3}, prior {prior:.3}");
    }
}

/// The shortfall is the deterministic sampler's: DDIM with eta = 0 on the
/// DDPM prior trails as the flow does, eta = 1 matches DDPM.
#[test]
fn dmps_ddim_eta_decides_the_d8_m2_mode_weights() {
    let base = ddpm_1000("d8_m2", Method::Dmps);
    let ode = score("d8_m2", Method::Dmps, 100, false, Some((BaseSampler::Ddim, 0.0)));
    let sde = score("d8_m2", Method::Dmps, 100, false, Some((BaseSampler::Ddim, 1.0)));
    assert!(sde <= base + 0.1, "DDIM eta 1: {sde:.3}, DDPM {base:.3}");
    assert!(ode > sde + 0.3, "DDIM eta 0 {ode:.3} should trail eta 1 {sde:.3}");
}

/// Unconditional: Euler steps of the exact velocity, and DDIM on the exact
/// eps, both draw the prior (as close to fresh prior samples as two prior
/// sample sets are to each other, up to the step error).
#[test]
fn euler_and_ddim_sample_the_prior() {
    for name in ["d8_m2", "d80_m4"] {
        let c = case(name);
        let d = c.problem.d;
        let fresh = prior_samples(&c.problem, SAMPLES, 7);
        let floor = sliced_w2(&prior_samples(&c.problem, SAMPLES, 8), &fresh, d, 99);
        for (label, process, sampler) in [
            ("euler 50", Process::flow(1.0), None),
            ("ddim eta 0, 50", Process::default(), Some(BaseSampler::Ddim)),
        ] {
            let mut o = opts(50);
            o.sampler = sampler;
            let (x, _) = sample_process(c, Method::Ddpm, &o, SAMPLES, &process);
            let sw = sliced_w2(&x, &fresh, d, 99);
            println!("{name} {label}: sliced W2 to prior samples {sw:.4} (two prior sets: {floor:.4})");
            assert!(sw <= 2.0 * floor + 0.05, "{name} {label}: {sw:.4} vs {floor:.4}");
        }
    }
}
