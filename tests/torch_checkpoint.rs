//! PyTorch checkpoints read without Python (src/io/torch/): values equal to
//! what torch wrote in both formats and every float type, views gathered,
//! nested state dicts found; hostile and broken files refused in one line;
//! the architecture read from a state dict; a torch U-Net equal to its
//! safetensors twin on the GPU. Fixtures: tools/make_torch_fixtures.py.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, gpu};
use tweedie::io::{torch, TensorFile};
use tweedie::tensor::DType;
use tweedie::unet::infer::{infer_adm, read_model_config, ASSUMED};
use tweedie::unet::weights::{self, ConfigSource};
use tweedie::unet::{memory::PlanKind, Unet, UnetConfig, UnetForward, UnetVjp};

fn torch_fixture(name: &str) -> PathBuf {
    fixture(&format!("torch/{name}"))
}

/// Where the hostile pickles would `touch` if anything ran them.
const MARKER: &str = "/tmp/tweedie-torch-fixture-pwned";

#[test]
fn values_equal_what_torch_wrote_in_both_formats() {
    let want = TensorFile::open(torch_fixture("values.safetensors")).unwrap();
    for (name, nested) in [
        ("values_zip.pt", None),
        ("values_legacy.pt", None),
        ("nested_ema.pt", Some("ema")),
    ] {
        let got = torch::read(&torch_fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.nested.as_deref(), nested, "{name}: where the state dict is");
        assert_eq!(got.file.keys(), want.keys(), "{name}: keys (module. prefix stripped)");
        for key in want.keys() {
            let (g, w) = (got.file.get(&key).unwrap(), want.get(&key).unwrap());
            assert_eq!(g.shape, w.shape, "{name}: {key} shape");
            assert_eq!(g.data, w.data, "{name}: {key} values");
        }
    }
}

fn refusal(name: &str) -> String {
    match torch::read(&torch_fixture(name)) {
        Ok(_) => panic!("{name}: read, but should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_and_broken_files_are_refused_in_one_line() {
    let _ = std::fs::remove_file(MARKER);
    let cases = [
        ("hostile_os_system_zip.pt", "refused global posix.system"),
        ("hostile_os_system_legacy.pt", "refused global posix.system"),
        ("hostile_eval.pt", "refused global __builtin__.eval"),
        ("hostile_missing_storage.pt", "storage 0 is missing from the archive"),
        ("hostile_short_storage.pt", "declares"),
        ("hostile_oob_view.pt", "reaches past its storage"),
        ("hostile_huge.pt", "reaches past its storage"),
        ("hostile_truncated.pt", "truncated"),
        ("hostile_empty.pt", "the file is empty"),
        ("hostile_random.pt", "not a torch checkpoint"),
        ("hostile_deep.pt", "nests deeper than"),
    ];
    for (name, needle) in cases {
        let msg = refusal(name);
        eprintln!("{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg:?} does not say {needle:?}");
        assert!(msg.contains(name), "{name}: the message names the file: {msg}");
        assert!(!msg.contains('\n'), "{name}: one line: {msg:?}");
    }
    assert!(!Path::new(MARKER).exists(), "a hostile pickle's payload ran");
}

/// Every truncation and every single-byte corruption of a checkpoint in
/// either format is read or refused, never a panic.
#[test]
fn damaged_checkpoints_never_panic() {
    for name in ["values_zip.pt", "values_legacy.pt"] {
        let good = std::fs::read(torch_fixture(name)).unwrap();
        let path = Path::new(name);
        let (mut read, mut refused) = (0, 0);
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0xA5;
            for bytes in [&good[..i], &flipped[..]] {
                match torch::from_bytes(path, bytes) {
                    Ok(_) => read += 1,
                    Err(e) => {
                        assert!(!e.to_string().contains('\n'), "{name} at {i}: {e}");
                        refused += 1
                    }
                }
            }
        }
        eprintln!("{name}: {read} damaged copies still read, {refused} refused");
        assert!(refused > good.len(), "{name}: most damage is noticed");
    }
}

/// What DPS's configs/model_config.yaml holds for ffhq_10m.pt.
const DPS_YAML: &str = "image_size: 256
num_channels: 128
num_res_blocks: 1
channel_mult: \"\"
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: 16
num_heads: 4
num_head_channels: 64
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/ffhq_10m.pt
";

#[test]
fn dps_yaml_is_the_dps_prior() {
    let dir = std::env::temp_dir().join(format!("tweedie-torch-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model_config.yaml");
    std::fs::write(&path, DPS_YAML).unwrap();
    assert_eq!(read_model_config(&path).unwrap(), UnetConfig::dps_ffhq256());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every field the tensors determine equals the constructor's argument: with
/// the assumed ones (named) taken from the fixture, the whole config is the
/// fixture's.
#[test]
fn architecture_is_read_from_the_state_dict() {
    for name in ["adm_scale_shift", "adm_plain", "adm_gray", "adm_flow"] {
        let dir = fixture(&format!("unet/{name}"));
        let UnetConfig::Adm(want) = UnetConfig::from_file(dir.join("config.json")).unwrap() else {
            panic!("{name}: an ADM fixture")
        };
        let file = TensorFile::open(dir.join("model.safetensors")).unwrap();
        let got = infer_adm(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let assumed: Vec<&str> = got.assumed.iter().map(|a| a.0).collect();
        assert_eq!(assumed, ASSUMED, "{name}");
        let mut c = got.config;
        c.image_size = want.image_size;
        c.num_heads = want.num_heads;
        c.num_head_channels = want.num_head_channels;
        c.num_heads_upsample = want.num_heads_upsample;
        c.use_new_attention_order = want.use_new_attention_order;
        assert_eq!(c, want, "{name}: the inferred config");
    }
    let ddpm = TensorFile::open(fixture("unet/ddpm_small/model.safetensors")).unwrap();
    let e = infer_adm(&ddpm).unwrap_err();
    assert!(e.contains("needs its config.json"), "{e}");
}

#[test]
fn a_state_dict_missing_a_key_is_named() {
    let opened = weights::open(
        &torch_fixture("hostile_missing_key.pt"),
        Some(&torch_fixture("tiny/config.json")),
    )
    .unwrap();
    let e = opened.check().err().expect("a missing key is refused").to_string();
    assert!(e.contains("1 missing key(s): middle_block.1.qkv.weight"), "{e}");
}

/// Without a config, the DPS head layout is assumed; the tiny model's 32
/// channels do not split into 64-channel heads, and the message says so.
#[test]
fn an_inferred_config_that_does_not_fit_names_its_assumptions() {
    let opened = weights::open(&torch_fixture("tiny.pt"), None).unwrap();
    assert!(matches!(opened.source, ConfigSource::Inferred(_)));
    let e = opened.check().err().expect("64-channel heads do not fit").to_string();
    assert!(e.contains("assuming") && e.contains("num_head_channels 64"), "{e}");
}

/// The torch checkpoints (f16 zip, f32 legacy) and their safetensors twin
/// are the same model on the GPU: forward and VJP agree exactly.
#[test]
fn a_torch_unet_runs_identically_to_its_safetensors() {
    for file in ["tiny.pt", "tiny_legacy_f32.pt"] {
        torch_unet_matches_safetensors(file);
    }
}

fn torch_unet_matches_safetensors(file: &str) {
    let gpu = gpu();
    let config = torch_fixture("tiny/config.json");
    let from_pt = Unet::load_with_config(&gpu, &torch_fixture(file), Some(&config), DType::F32).unwrap();
    let from_st = Unet::load(&gpu, &torch_fixture("tiny")).unwrap();
    assert_eq!(from_pt.config, from_st.config, "{file}");
    let (n, h, w) = (2, 16, 16);
    let mut rng = common::rng(5);
    let x = common::randn(&mut rng, n * h * w);
    let t = [17.0, 803.5];
    let run = |unet: &Unet| {
        let fwd = UnetForward::new_kind(&gpu, unet, n, h, w, PlanKind::ForwardVjp).unwrap();
        let vjp = UnetVjp::new(&gpu, unet, &fwd).unwrap();
        let cot = vec![0.5f32; fwd.output().numel()];
        vjp.run(&gpu, &fwd, &x, &t, &cot).unwrap()
    };
    let (out_pt, vjp_pt) = run(&from_pt);
    let (out_st, vjp_st) = run(&from_st);
    assert!(out_pt.iter().any(|&v| v != 0.0), "{file}");
    assert_eq!(out_pt, out_st, "{file}: forward");
    assert_eq!(vjp_pt, vjp_st, "{file}: vjp");
}
