//! Models that are not DDPM eps-predictors, loaded from their own process
//! files, against float64 fixtures (tools/make_process_fixtures.py; see
//! tests/fixtures/README.md):
//!
//! - `adm_flow`: a guided-diffusion-layout U-Net trained as a flow in
//!   torchcfm's convention (data at s = 1, network time 999 s, output dx/ds),
//!   declared in its `config.json`;
//! - `ddpm_vpred_cosine`: a diffusers `UNet2DModel` with diffusers' own
//!   `scheduler_config.json` (DDIM, cosine betas, v-prediction).
//!
//! For each: the process read from the directory, forward and VJP parity
//! (as tests/unet_parity.rs: max |ours - ref| <= 1e-4 max(1, max |ref|) per
//! sample), and sampler steps from the fixture's states against steps written
//! independently of the engine (the flow's Euler steps in its own data-at-1
//! convention; diffusers' own `DDIMScheduler.step` for the v-prediction model).

mod common;
use common::unet_io::{per_sample, unet_io, UnetIo};
use common::*;

use std::sync::Arc;

use tweedie::io::TensorFile;
use tweedie::process::{Betas, Kind, Prediction};
use tweedie::samplers::{BaseSampler, Method, Sampler, SamplerOptions, UnetScore};
use tweedie::unet::memory::PlanKind;
use tweedie::unet::{Unet, UnetForward, UnetVjp};

/// The tolerance of every comparison here: the U-Net parity measure.
const TOL: f32 = 1e-4;

/// The tolerance on a step's increment x_next - x, the same measure over the
/// increments. A 1000-step DDIM step moves x by ~1e-3 of its size, so the
/// state check above cannot see a 10 % error in what the network contributes;
/// this one can. Its floor is float32 rounding of the states (x up to ~4, so
/// an ulp of 4.8e-7, over increments of ~3e-3): 1.4e-4 measured at timestep
/// 500, <= 3.4e-6 elsewhere. (Stepping from timestep 501 instead of 500 moves
/// the state by only 2.4e-5, under TOL, but the increment by 3.2e-2.)
const INCREMENT_TOL: f32 = 1e-3;

fn load(name: &str) -> Unet {
    Unet::load(&gpu(), &fixture(&format!("unet/{name}"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Forward and input VJP against the fixture's `io.safetensors`.
fn forward_and_vjp(name: &str) {
    let gpu = gpu();
    let unet = load(name);
    let UnetIo { x, t, cot, out, vjp } = unet_io(name);
    let n = x.shape[0];
    let fwd = UnetForward::new_kind(&gpu, &unet, n, x.shape[2], x.shape[3], PlanKind::ForwardVjp).unwrap();
    let got = fwd.run(&gpu, &x.data, &t.data).unwrap();
    assert_eq!(fwd.output().shape, out.shape, "{name}: output shape");
    per_sample(&format!("{name}: forward"), &got, &out.data, n, &t.data, TOL);
    let v = UnetVjp::new(&gpu, &unet, &fwd).unwrap();
    let (got_out, got_vjp) = v.run(&gpu, &fwd, &x.data, &t.data, &cot.data).unwrap();
    per_sample(
        &format!("{name}: forward in the VJP run"),
        &got_out,
        &out.data,
        n,
        &t.data,
        TOL,
    );
    per_sample(&format!("{name}: vjp"), &got_vjp, &vjp.data, n, &t.data, TOL);
}

/// rel_max_err of the increments (got - got_from) against (want - want_from).
fn increment_err(got: &[f32], got_from: &[f32], want: &[f32], want_from: &[f32]) -> f32 {
    let d = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(a, b)| a - b).collect() };
    let (d_got, d_want) = (d(got, got_from), d(want, want_from));
    let scale = d_want.iter().fold(0f32, |m, v| m.max(v.abs()));
    d_got.iter().zip(&d_want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Runs the first steps of `opts` from the fixture's `x_T` and compares each
/// with `x_steps`; then single steps from `x_single` (starting at the model's
/// own times `single_time`, step index `index(time, K)` in the engine's grid)
/// against `x_single_next`.
fn sampler_steps(name: &str, opts: SamplerOptions, index: fn(f32, usize) -> usize) {
    let gpu = gpu();
    let unet = load(name);
    let io = TensorFile::open(fixture(&format!("unet/{name}")).join("steps.safetensors")).unwrap();
    let x_t = io.get("x_T").unwrap();
    let want = io.get("x_steps").unwrap();
    let k = io.get("K").unwrap().data[0] as usize;
    assert_eq!(opts.steps, k, "{name}: the fixture's run length");
    let (n, c, h, w) = (x_t.shape[0], x_t.shape[1], x_t.shape[2], x_t.shape[3]);
    let per = n * c * h * w;
    let model = UnetScore::new(Arc::new(unet), h, w);
    let s = Sampler::new(&gpu, Method::Ddpm, &model, None, n, &opts).unwrap();
    s.init(&gpu).unwrap();
    s.x().write(&gpu, &x_t.data).unwrap();
    let (mut got_from, mut want_from) = (x_t.data.clone(), &x_t.data[..]);
    for j in 0..want.shape[0] {
        s.step(&gpu, k - 1 - j).unwrap();
        let got = s.x().read(&gpu).unwrap();
        let want_j = &want.data[j * per..(j + 1) * per];
        let err = rel_max_err(&got, want_j);
        let d_err = increment_err(&got, &got_from, want_j, want_from);
        println!(
            "{name}: step {j} (index {}): relative max error {err:.3e}, of the increment {d_err:.3e}",
            k - 1 - j
        );
        assert!(err <= TOL, "{name}: step {j}: relative max error {err:.3e} > {TOL:e}");
        assert!(
            d_err <= INCREMENT_TOL,
            "{name}: step {j}: increment's relative max error {d_err:.3e} > {INCREMENT_TOL:e}"
        );
        (got_from, want_from) = (got, want_j);
    }
    let (times, from, to) = (
        io.get("single_time").unwrap(),
        io.get("x_single").unwrap(),
        io.get("x_single_next").unwrap(),
    );
    for (j, &time) in times.data.iter().enumerate() {
        let (x0, x1) = (&from.data[j * per..(j + 1) * per], &to.data[j * per..(j + 1) * per]);
        let i = index(time, k);
        s.x().write(&gpu, x0).unwrap();
        s.step(&gpu, i).unwrap();
        let got = s.x().read(&gpu).unwrap();
        let err = rel_max_err(&got, x1);
        let d_err = increment_err(&got, x0, x1, x0);
        println!(
            "{name}: single step from time {time} (index {i}): relative max error {err:.3e}, of the increment {d_err:.3e}"
        );
        assert!(
            err <= TOL,
            "{name}: single step from time {time}: relative max error {err:.3e} > {TOL:e}"
        );
        assert!(
            d_err <= INCREMENT_TOL,
            "{name}: single step from time {time}: increment's relative max error {d_err:.3e} > {INCREMENT_TOL:e}"
        );
    }
}

// ---------------------------------------------------------------- adm_flow

#[test]
fn adm_flow_reads_its_process_from_config_json() {
    let unet = load("adm_flow");
    assert_eq!(
        unet.process.kind,
        Kind::Flow {
            data_at_one: true,
            time_scale: 999.0
        }
    );
    assert_eq!(unet.process.prediction, Prediction::Velocity);
}

#[test]
fn adm_flow_forward_and_vjp_match_its_twin() {
    forward_and_vjp("adm_flow");
}

#[test]
fn adm_flow_euler_steps_match_the_data_at_one_convention() {
    let opts = SamplerOptions {
        steps: 10,
        clip: false,
        ..SamplerOptions::default()
    };
    // The model's s is 1 - t; step i starts at t = (i + 1) / K.
    sampler_steps("adm_flow", opts, |s, k| {
        (((1.0 - s as f64) * k as f64).round() as usize) - 1
    });
}

// ---------------------------------------------------------------- ddpm_vpred_cosine

#[test]
fn diffusers_vpred_cosine_reads_its_scheduler_config() {
    let unet = load("ddpm_vpred_cosine");
    assert_eq!(
        unet.process.kind,
        Kind::Vp {
            betas: Betas::Cosine,
            train_steps: 1000
        }
    );
    assert_eq!(unet.process.prediction, Prediction::V);
}

#[test]
fn diffusers_vpred_cosine_forward_and_vjp_match_diffusers() {
    forward_and_vjp("ddpm_vpred_cosine");
}

#[test]
fn diffusers_vpred_cosine_ddim_steps_match_diffusers() {
    let opts = SamplerOptions {
        steps: 1000,
        sampler: Some(BaseSampler::Ddim),
        clip: false,
        ..SamplerOptions::default()
    };
    // K = the training steps: step i is timestep i.
    sampler_steps("ddpm_vpred_cosine", opts, |t, _| t as usize);
}
