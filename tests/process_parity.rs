//! Models that are not DDPM eps-predictors, loaded from their own process
//! files, against float64 fixtures (tools/make_process_fixtures.py): the
//! process read from the directory, and the first sampler steps from the
//! fixture's x_T, written independently of the engine (the flow in its own
//! data-at-1 convention; diffusers' own `DDIMScheduler.step` for v-prediction).

mod common;
use common::*;

use std::sync::Arc;

use tweedie::io::TensorFile;
use tweedie::process::{Betas, Kind, Prediction};
use tweedie::samplers::{BaseSampler, Method, Sampler, SamplerOptions, UnetScore};
use tweedie::unet::Unet;

/// Runs the first steps of `opts` from the fixture's x_T and compares each
/// with `x_steps` (relative max error, as the forward parity).
fn first_steps(name: &str, unet: Unet, opts: SamplerOptions, tol: f32) {
    let gpu = gpu();
    let dir = fixture(&format!("unet/{name}"));
    let io = TensorFile::open(dir.join("steps.safetensors")).unwrap();
    let x_t = io.get("x_T").unwrap();
    let want = io.get("x_steps").unwrap();
    let k = io.get("K").unwrap().data[0] as usize;
    assert_eq!(opts.steps, k, "{name}: the fixture's run length");
    let (n, c, h, w) = (x_t.shape[0], x_t.shape[1], x_t.shape[2], x_t.shape[3]);
    let model = UnetScore::new(Arc::new(unet), h, w);
    let s = Sampler::new(&gpu, Method::Ddpm, &model, None, n, &opts).unwrap();
    s.init(&gpu).unwrap();
    s.x().write(&gpu, &x_t.data).unwrap();
    let per = n * c * h * w;
    for j in 0..want.shape[0] {
        s.step(&gpu, k - 1 - j).unwrap();
        let got = s.x().read(&gpu).unwrap();
        let err = rel_max_err(&got, &want.data[j * per..(j + 1) * per]);
        println!("{name}: step {j}: relative max error {err:.3e}");
        assert!(err <= tol, "{name}: step {j}: relative max error {err:.3e} > {tol:e}");
    }
}

#[test]
fn adm_flow_reads_its_process_and_its_euler_steps_match() {
    let unet = Unet::load(&gpu(), &fixture("unet/adm_flow")).unwrap();
    assert_eq!(
        unet.process.kind,
        Kind::Flow {
            data_at_one: true,
            time_scale: 999.0
        }
    );
    assert_eq!(unet.process.prediction, Prediction::Velocity);
    let opts = SamplerOptions {
        steps: 10,
        clip: false,
        ..SamplerOptions::default()
    };
    first_steps("adm_flow", unet, opts, 1e-4);
}

#[test]
fn diffusers_vpred_cosine_reads_its_scheduler_and_its_ddim_steps_match() {
    let unet = Unet::load(&gpu(), &fixture("unet/ddpm_vpred_cosine")).unwrap();
    assert_eq!(
        unet.process.kind,
        Kind::Vp {
            betas: Betas::Cosine,
            train_steps: 1000
        }
    );
    assert_eq!(unet.process.prediction, Prediction::V);
    let opts = SamplerOptions {
        steps: 1000,
        sampler: Some(BaseSampler::Ddim),
        clip: false,
        ..SamplerOptions::default()
    };
    first_steps("ddpm_vpred_cosine", unet, opts, 1e-4);
}
