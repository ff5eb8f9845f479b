//! U-Net forward parity with the upstream fixtures (guided-diffusion and
//! diffusers run in float64 on the stored float32 weights):
//! max |ours - ref| <= 1e-4 * max(1, max |ref|) at every timestep of each fixture.

mod common;
use common::unet_io::{per_sample, unet_io, UnetIo};
use common::*;

use std::path::PathBuf;

use tweedie::io::TensorFile;
use tweedie::unet::memory::PlanKind;
use tweedie::unet::{Unet, UnetForward, UnetVjp};

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("unet/{name}"))
}

fn check(name: &str) {
    let gpu = gpu();
    let dir = fixture(name);
    let unet = Unet::load(&gpu, &dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let UnetIo { x, t, out: want, .. } = unet_io(name);
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let fwd = UnetForward::new(&gpu, &unet, n, h, w).unwrap();
    let got = fwd.run(&gpu, &x.data, &t.data).unwrap();
    assert_eq!(fwd.output().shape, want.shape, "{name}: output shape");
    per_sample(name, &got, &want.data, n, &t.data, 1e-4);
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

// ---------------------------------------------------------------- loader errors

use tweedie::io::write_tensors;
use tweedie::HostTensor;

/// A scratch model directory holding `config` and the given tensors.
fn scratch_model(tag: &str, config: &str, tensors: &[(String, HostTensor)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-unet-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    write_tensors(dir.join("model.safetensors"), &refs).unwrap();
    dir
}

fn fixture_tensors(name: &str) -> (String, Vec<(String, HostTensor)>) {
    let dir = fixture(name);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let f = TensorFile::open(dir.join("model.safetensors")).unwrap();
    let tensors = f.keys().into_iter().map(|k| (k.clone(), f.get(&k).unwrap())).collect();
    (config, tensors)
}

fn load_err(dir: &std::path::Path) -> String {
    match Unet::load(&gpu(), dir) {
        Ok(_) => panic!("{}: loaded, but should have been refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loader_reports_every_missing_unexpected_and_misshapen_key() {
    let (config, mut tensors) = fixture_tensors("adm_scale_shift");
    tensors.retain(|(k, _)| k != "middle_block.1.qkv.bias" && k != "out.2.weight");
    for (k, t) in tensors.iter_mut() {
        if k == "input_blocks.1.0.in_layers.2.weight" {
            *t = HostTensor::zeros(&[32, 32, 1, 1]);
        }
    }
    tensors.push(("label_emb.weight".into(), HostTensor::zeros(&[10, 128])));
    let dir = scratch_model("mismatch", &config, &tensors);
    let msg = load_err(&dir);
    for needle in [
        "middle_block.1.qkv.bias",
        "out.2.weight",
        "label_emb.weight",
        "input_blocks.1.0.in_layers.2.weight expected [32, 32, 3, 3], got [32, 32, 1, 1]",
    ] {
        assert!(msg.contains(needle), "error does not name {needle:?}: {msg}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn loader_refuses_unsupported_options_by_name() {
    let (config, tensors) = fixture_tensors("adm_gray");
    let cases = [
        ("num_classes", "\"num_classes\": 10"),
        ("dims", "\"dims\": 3"),
        ("some_new_flag", "\"some_new_flag\": true"),
    ];
    for (option, replacement) in cases {
        let cfg = config.replacen("\"num_classes\": null", replacement, 1);
        assert_ne!(cfg, config, "fixture config changed shape");
        let dir = scratch_model(&format!("opt-{option}"), &cfg, &tensors);
        let msg = load_err(&dir);
        assert!(msg.contains(option), "error does not name {option}: {msg}");
        std::fs::remove_dir_all(dir).ok();
    }
    let (config, tensors) = fixture_tensors("ddpm_small");
    for (option, from, to) in [
        (
            "resnet_time_scale_shift",
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"spatial\"",
        ),
        ("act_fn", "\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\""),
        ("down_block_types", "\"AttnDownBlock2D\"", "\"CrossAttnDownBlock2D\""),
    ] {
        let cfg = config.replacen(from, to, 1);
        assert_ne!(cfg, config, "fixture config changed shape");
        let dir = scratch_model(&format!("dopt-{option}"), &cfg, &tensors);
        let msg = load_err(&dir);
        assert!(msg.contains(option), "error does not name {option}: {msg}");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// f16 / bf16 checkpoints are converted on load: the forward pass equals the
/// one on f32 weights rounded the same way.
#[test]
fn half_precision_checkpoints_load() {
    use safetensors::{tensor::TensorView, Dtype};
    let gpu = gpu();
    let (config, tensors) = fixture_tensors("ddpm_small");
    let io = TensorFile::open(fixture("ddpm_small").join("io.safetensors")).unwrap();
    let x = io.get("x").unwrap();
    let t = io.get("t").unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let (bytes, rounded): (Vec<Vec<u8>>, Vec<(String, HostTensor)>) = tensors
            .iter()
            .map(|(k, ten)| {
                let (b, r): (Vec<u8>, Vec<f32>) = match dtype {
                    Dtype::F16 => {
                        let h: Vec<half::f16> = ten.data.iter().map(|&v| half::f16::from_f32(v)).collect();
                        (
                            bytemuck::cast_slice(&h).to_vec(),
                            h.iter().map(|v| v.to_f32()).collect(),
                        )
                    }
                    _ => {
                        let h: Vec<half::bf16> = ten.data.iter().map(|&v| half::bf16::from_f32(v)).collect();
                        (
                            bytemuck::cast_slice(&h).to_vec(),
                            h.iter().map(|v| v.to_f32()).collect(),
                        )
                    }
                };
                (b, (k.clone(), HostTensor::new(ten.shape.clone(), r)))
            })
            .unzip();
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((k, ten), b)| (k.clone(), TensorView::new(dtype, ten.shape.clone(), b).unwrap()))
            .collect();
        let half_dir = scratch_model(&format!("{dtype:?}"), &config, &[]);
        std::fs::write(
            half_dir.join("model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        let f32_dir = scratch_model(&format!("{dtype:?}-f32"), &config, &rounded);
        let run = |dir: &std::path::Path| {
            let unet = Unet::load(&gpu, dir).unwrap();
            let fwd = UnetForward::new(&gpu, &unet, 2, 32, 32).unwrap();
            fwd.run(&gpu, &x.data, &t.data).unwrap()
        };
        assert_close(
            &format!("{dtype:?} checkpoint"),
            &run(&half_dir),
            &run(&f32_dir),
            0.0,
            0.0,
        );
        std::fs::remove_dir_all(half_dir).ok();
        std::fs::remove_dir_all(f32_dir).ok();
    }
}

#[test]
fn forward_refuses_resolutions_the_unet_cannot_take() {
    let gpu = gpu();
    let unet = Unet::load(&gpu, &fixture("adm_plain")).unwrap();
    let e = UnetForward::new(&gpu, &unet, 1, 30, 32)
        .err()
        .expect("30 is not a multiple of 4");
    assert!(e.to_string().contains("multiples of 4"), "{e}");
}

#[test]
fn cli_unet_writes_the_forward_and_the_vjp() {
    let dir = fixture("adm_gray");
    let out = std::env::temp_dir().join(format!("tweedie-unet-cli-{}.safetensors", std::process::id()));
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tweedie"))
            .args(["unet", "--model"])
            .arg(&dir)
            .arg("--input")
            .arg(dir.join("io.safetensors"))
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    for (extra, keys) in [(&[][..], &["out"][..]), (&["--vjp"][..], &["out", "vjp"][..])] {
        let r = run(extra);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let f = TensorFile::open(&out).unwrap();
        assert_eq!(f.keys(), keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        for k in keys {
            let (got, want) = (f.get(k).unwrap(), io.get(k).unwrap());
            assert_eq!(got.shape, want.shape, "{k}");
            assert!(rel_max_err(&got.data, &want.data) <= 1e-4, "{k}");
        }
        std::fs::remove_file(&out).ok();
    }
    // Bad input ends with one line and no output file.
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(["unet", "--model"])
        .arg(&dir)
        .arg("--input")
        .arg(fixture("adm_scale_shift").join("io.safetensors"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("3 channels") && err.lines().count() == 1, "{err}");
    assert!(!out.exists());
}

/// (d out / d x)^T cotangent through the same plan, against the fixtures' `vjp`.
fn check_vjp(name: &str) {
    let gpu = gpu();
    let dir = fixture(name);
    let unet = Unet::load(&gpu, &dir).unwrap();
    let UnetIo {
        x,
        t,
        cot,
        out,
        vjp: want,
    } = unet_io(name);
    let n = x.shape[0];
    let fwd = UnetForward::new_kind(&gpu, &unet, n, x.shape[2], x.shape[3], PlanKind::ForwardVjp).unwrap();
    let vjp = UnetVjp::new(&gpu, &unet, &fwd).unwrap();
    let (got_out, got) = vjp.run(&gpu, &fwd, &x.data, &t.data, &cot.data).unwrap();
    assert!(
        rel_max_err(&got_out, &out.data) <= 1e-4,
        "{name}: forward inside the VJP run"
    );
    per_sample(&format!("{name}: vjp"), &got, &want.data, n, &t.data, 1e-4);
}

#[test]
fn adm_scale_shift_vjp_matches_guided_diffusion() {
    check_vjp("adm_scale_shift");
}

#[test]
fn adm_plain_vjp_matches_guided_diffusion() {
    check_vjp("adm_plain");
}

#[test]
fn adm_gray_vjp_matches_guided_diffusion() {
    check_vjp("adm_gray");
}

#[test]
fn ddpm_small_vjp_matches_diffusers() {
    check_vjp("ddpm_small");
}

/// diffusers checkpoints saved before 0.14 name the attention projections
/// query/key/value/proj_attn; they load into the same layers.
#[test]
fn diffusers_old_attention_key_names_load() {
    let gpu = gpu();
    let (config, tensors) = fixture_tensors("ddpm_small");
    let renamed: Vec<(String, HostTensor)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            (k, t)
        })
        .collect();
    assert!(renamed.iter().any(|(k, _)| k.ends_with(".proj_attn.weight")));
    let dir = scratch_model("old-names", &config, &renamed);
    let unet = Unet::load(&gpu, &dir).unwrap();
    let io = TensorFile::open(fixture("ddpm_small").join("io.safetensors")).unwrap();
    let (x, t, want) = (io.get("x").unwrap(), io.get("t").unwrap(), io.get("out").unwrap());
    let fwd = UnetForward::new(&gpu, &unet, 2, 32, 32).unwrap();
    let got = fwd.run(&gpu, &x.data, &t.data).unwrap();
    assert!(rel_max_err(&got, &want.data) <= 1e-4);
    std::fs::remove_dir_all(dir).ok();
}

/// Models larger than one binding (ADM-256 on a 128 MiB adapter) are packed
/// into several arenas; the forward pass must not notice.
#[test]
fn weights_split_over_several_arenas_give_the_same_output() {
    let gpu = gpu();
    for name in ["adm_scale_shift", "ddpm_small"] {
        let dir = fixture(name);
        let unet = Unet::load_with_arena_limit(&gpu, &dir, 100_000).unwrap();
        assert!(
            unet.weights.arenas.len() > 10,
            "{name}: {} arenas",
            unet.weights.arenas.len()
        );
        let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
        let (x, t, want) = (io.get("x").unwrap(), io.get("t").unwrap(), io.get("out").unwrap());
        let fwd = UnetForward::new(&gpu, &unet, 2, 32, 32).unwrap();
        let got = fwd.run(&gpu, &x.data, &t.data).unwrap();
        assert!(rel_max_err(&got, &want.data) <= 1e-4, "{name}");
    }
}

/// The DPS / DMPS FFHQ prior (93.6 M parameters, random weights): plans
/// forward and VJP on this adapter (weights over several arenas where one
/// binding cannot hold them) and runs at the smallest resolution it takes.
#[test]
fn dps_ffhq_prior_plans_and_runs() {
    use tweedie::unet::UnetConfig;
    let gpu = gpu();
    let unet = Unet::random(&gpu, &UnetConfig::dps_ffhq256(), 1).unwrap();
    assert_eq!(unet.num_params(), unet.weights.total_elems());
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size) as usize;
    assert!(unet.weights.arenas.len() >= (unet.num_params() * 4).div_ceil(limit));
    let fwd = UnetForward::new_kind(&gpu, &unet, 1, 32, 32, PlanKind::ForwardVjp).unwrap();
    let vjp = UnetVjp::new(&gpu, &unet, &fwd).unwrap();
    let mut r = rng(5);
    let x = randn(&mut r, 3 * 32 * 32);
    let cot = randn(&mut r, 6 * 32 * 32);
    let (out, dx) = vjp.run(&gpu, &fwd, &x, &[500.0], &cot).unwrap();
    assert!(out.iter().chain(&dx).all(|v| v.is_finite()), "non-finite output");
    assert!(out.iter().any(|&v| v != 0.0) && dx.iter().any(|&v| v != 0.0));
}

/// A sampler's own x and cotangent tensors plugged into the plans directly.
#[test]
fn plans_read_caller_tensors() {
    use tweedie::Tensor;
    let gpu = gpu();
    let dir = fixture("adm_plain");
    let unet = Unet::load(&gpu, &dir).unwrap();
    let UnetIo { x, t, cot, out, vjp } = unet_io("adm_plain");
    let xt = Tensor::from_host(&gpu, "sampler x_t", &x).unwrap();
    let ct = Tensor::from_host(&gpu, "sampler cotangent", &cot).unwrap();
    let fwd = UnetForward::with_input_kind(&gpu, &unet, &xt, PlanKind::ForwardVjp).unwrap();
    let v = UnetVjp::with_cotangent(&gpu, &unet, &fwd, &ct).unwrap();
    fwd.t.write(&gpu, &t.data).unwrap();
    v.submit(&gpu, &fwd).unwrap();
    assert!(rel_max_err(&fwd.output().read(&gpu).unwrap(), &out.data) <= 1e-4);
    assert!(rel_max_err(&v.dx().read(&gpu).unwrap(), &vjp.data) <= 1e-4);
    let bad = Tensor::zeros(&gpu, "wrong channels", &[2, 4, 32, 32]).unwrap();
    assert!(UnetForward::with_input(&gpu, &unet, &bad).is_err());
}
