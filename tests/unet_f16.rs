//! Half-precision U-Net plans against the upstream float64 fixtures: f16
//! weights and activations, f32 accumulation, forward and VJP within 1e-2
//! relative (max |ours - ref| / max(1, max |ref|)) per sample, in a
//! forward-only plan and in a forward + VJP plan. Skipped, saying why, on an
//! adapter without `shader-f16`.

mod common;
use common::*;

use tweedie::io::TensorFile;
use tweedie::tensor::DType;
use tweedie::unet::memory::PlanKind;
use tweedie::unet::{Unet, UnetForward, UnetVjp};

const TOL: f32 = 1e-2;

fn per_sample_err(got: &[f32], want: &[f32], n: usize) -> f32 {
    let per = want.len() / n;
    (0..n)
        .map(|i| rel_max_err(&got[i * per..(i + 1) * per], &want[i * per..(i + 1) * per]))
        .fold(0.0, f32::max)
}

fn check(name: &str) {
    let gpu = gpu();
    if !gpu.features.contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipping {name} in f16: {} has no shader-f16", gpu.describe());
        return;
    }
    let dir = common::fixture(&format!("unet/{name}"));
    let unet = Unet::load_as(&gpu, &dir, DType::F16).unwrap_or_else(|e| panic!("{name}: {e}"));
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    let (x, t, cot) = (io.get("x").unwrap(), io.get("t").unwrap(), io.get("cotangent").unwrap());
    let (out, want) = (io.get("out").unwrap(), io.get("vjp").unwrap());
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);

    let only = UnetForward::new(&gpu, &unet, n, h, w).unwrap();
    assert_eq!(only.dtype, DType::F16);
    let got = only.run(&gpu, &x.data, &t.data).unwrap();
    let err = per_sample_err(&got, &out.data, n);
    eprintln!("{name} f16: forward relative max error {err:.3e}");
    assert!(err <= TOL, "{name} f16 forward: {err:.3e} > {TOL}");

    let fwd = UnetForward::new_kind(&gpu, &unet, n, h, w, PlanKind::ForwardVjp).unwrap();
    let vjp = UnetVjp::new(&gpu, &unet, &fwd).unwrap();
    let (got_out, got) = vjp.run(&gpu, &fwd, &x.data, &t.data, &cot.data).unwrap();
    let err_out = per_sample_err(&got_out, &out.data, n);
    let err = per_sample_err(&got, &want.data, n);
    eprintln!("{name} f16: vjp relative max error {err:.3e} (forward {err_out:.3e})");
    assert!(err_out <= TOL, "{name} f16 forward in the VJP plan: {err_out:.3e}");
    assert!(err <= TOL, "{name} f16 vjp: {err:.3e} > {TOL}");
    // Not f32 in disguise: half precision leaves a visible error.
    assert!(err_out > 1e-5, "{name}: f16 forward error {err_out:.3e} looks like f32");
}

#[test]
fn adm_scale_shift_f16() {
    check("adm_scale_shift");
}

#[test]
fn adm_plain_f16() {
    check("adm_plain");
}

#[test]
fn adm_gray_f16() {
    check("adm_gray");
}

#[test]
fn ddpm_small_f16() {
    check("ddpm_small");
}

#[test]
fn adm_flow_f16() {
    check("adm_flow");
}

#[test]
fn ddpm_vpred_cosine_f16() {
    check("ddpm_vpred_cosine");
}
