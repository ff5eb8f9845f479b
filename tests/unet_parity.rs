//! U-Net forward parity with the upstream fixtures (guided-diffusion and
//! diffusers run in float64 on the stored float32 weights):
//! max |ours - ref| <= 1e-4 * max(1, max |ref|) at every timestep of each fixture.

mod common;
use common::*;

use std::path::PathBuf;

use tweedie::io::TensorFile;
use tweedie::unet::{Unet, UnetForward};

/// `../shared/fixtures/unet` beside the project root; `TWEEDIE_FIXTURES`
/// points elsewhere (a worktree whose parent has no `shared/`).
fn fixture(name: &str) -> PathBuf {
    let root = std::env::var_os("TWEEDIE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    root.join("unet").join(name)
}

fn check(name: &str) {
    let gpu = gpu();
    let dir = fixture(name);
    let unet = Unet::load(&gpu, &dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    let x = io.get("x").unwrap();
    let t = io.get("t").unwrap();
    let want = io.get("out").unwrap();
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let fwd = UnetForward::new(&gpu, &unet, n, h, w).unwrap();
    let got = fwd.run(&gpu, &x.data, &t.data).unwrap();
    assert_eq!(fwd.output().shape, want.shape, "{name}: output shape");
    // Each sample has its own timestep: check them one by one.
    let per = want.numel() / n;
    for i in 0..n {
        let err = rel_max_err(
            &got[i * per..(i + 1) * per],
            &want.data[i * per..(i + 1) * per],
        );
        eprintln!(
            "{name}: sample {i} (t = {}): relative max error {err:.3e}",
            t.data[i]
        );
        assert!(
            err <= 1e-4,
            "{name}: sample {i} at t = {}: relative max error {err:.3e} > 1e-4",
            t.data[i]
        );
    }
}

#[test]
fn adm_scale_shift_matches_guided_diffusion() {
    check("adm_scale_shift");
}

#[test]
fn adm_plain_matches_guided_diffusion() {
    check("adm_plain");
}

#[test]
fn adm_gray_matches_guided_diffusion() {
    check("adm_gray");
}

#[test]
fn ddpm_small_matches_diffusers() {
    check("ddpm_small");
}
