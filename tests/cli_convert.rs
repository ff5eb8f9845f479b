//! `tweedie convert`: a torch checkpoint written as model.safetensors +
//! config.json equal to what torch saved; hostile or unfit input ends with
//! one line on stderr, exit 1, and nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;
use tweedie::io::TensorFile;
use tweedie::unet::UnetConfig;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn convert(args: &[&Path]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .arg("convert")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn same_tensors(got: &Path, want: &Path) {
    let (g, w) = (TensorFile::open(got).unwrap(), TensorFile::open(want).unwrap());
    assert_eq!(g.keys(), w.keys());
    for k in w.keys() {
        assert_eq!(g.get(&k).unwrap().data, w.get(&k).unwrap().data, "{k}");
    }
}

#[test]
fn convert_round_trips_a_torch_unet() {
    let twin = fixture("torch/tiny");
    let config = twin.join("config.json");
    for precision in ["f32", "f16"] {
        let out = tmp(&format!("tiny-{precision}"));
        let (code, err) = convert(&[
            &fixture("torch/tiny.pt"),
            Path::new("--model-config"),
            &config,
            Path::new("--out"),
            &out,
            Path::new("--precision"),
            Path::new(precision),
        ]);
        assert_eq!(code, 0, "{precision}: {err}");
        // The weights were f16 in the checkpoint: exact in either precision.
        same_tensors(&out.join("model.safetensors"), &twin.join("model.safetensors"));
        assert_eq!(
            UnetConfig::from_file(out.join("config.json")).unwrap(),
            UnetConfig::from_file(&config).unwrap()
        );
    }
}

/// A directory holding the checkpoint (and its config.json) in place of model.safetensors.
#[test]
fn convert_reads_a_directory_holding_a_checkpoint() {
    let dir = tmp("dir-in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("torch/tiny.pt"), dir.join("ema_0.9999_000100.pt")).unwrap();
    std::fs::copy(fixture("torch/tiny/config.json"), dir.join("config.json")).unwrap();
    let out = tmp("dir-out");
    let o = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(["-v", "convert"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("state dict: the top level"), "{err}");
    same_tensors(&out.join("model.safetensors"), &fixture("torch/tiny/model.safetensors"));
}

#[test]
fn convert_refuses_in_one_line_and_writes_nothing() {
    let marker = Path::new("/tmp/tweedie-torch-fixture-pwned");
    let _ = std::fs::remove_file(marker);
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("hostile_os_system_zip.pt", None, "refused global posix.system"),
        ("hostile_eval.pt", None, "refused global __builtin__.eval"),
        ("hostile_truncated.pt", None, "truncated"),
        // No config: DPS's 64-channel heads are assumed, and do not fit.
        ("tiny.pt", None, "num_head_channels 64"),
    ];
    for (i, (name, config, needle)) in cases.into_iter().enumerate() {
        let out = tmp(&format!("refused-{i}"));
        let input = fixture(&format!("torch/{name}"));
        let mut args: Vec<&Path> = vec![&input, Path::new("--out"), &out];
        let config = config.map(|c| fixture(&format!("torch/{c}")));
        if let Some(c) = &config {
            args.extend([Path::new("--model-config"), c.as_path()]);
        }
        let (code, err) = convert(&args);
        assert_eq!(code, 1, "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err:?}");
        assert!(err.contains(needle), "{name}: {err:?} does not say {needle:?}");
        assert!(!out.exists(), "{name}: {} was written", out.display());
    }
    assert!(!marker.exists(), "a hostile pickle's payload ran");
}
