//! The shipped flow prior (`weights/fashion-mnist-32-flow`): its directory
//! declares a flow with velocity prediction, DMPS (Algorithm 2) restores with
//! it above the A^+ y baseline, and what a flow cannot run is refused with one
//! line.

mod common;

use std::path::PathBuf;
use std::process::Command;

use tweedie::process::{Kind, Prediction};
use tweedie::unet::Unet;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("weights/fashion-mnist-32-flow")
}

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

#[test]
fn the_flow_prior_declares_its_process() {
    let gpu = common::gpu();
    let unet = Unet::load(&gpu, &model()).unwrap();
    assert_eq!(
        unet.process.kind,
        Kind::Flow {
            data_at_one: false,
            time_scale: 1000.0
        }
    );
    assert_eq!(unet.process.prediction, Prediction::Velocity);
    assert_eq!(unet.config.out_channels(), 1);
}

/// DMPS at 10 Euler steps on 4 held-out images: the mean PSNR beats the
/// pseudo-inverse on box inpainting and x2 SR.
#[test]
fn dmps_on_the_flow_prior_beats_the_baseline() {
    let images = root().join("weights/fashion-mnist-32/test-images");
    for (task, extra) in [("inpaint-box", ["--box", "12"]), ("sr", ["--factor", "2"])] {
        let out = std::env::temp_dir().join(format!("tweedie-flow-eval-{task}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let m = model();
        let mut args = vec![
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--input",
            images.to_str().unwrap(),
            "--limit",
            "4",
            "--task",
            task,
        ];
        args.extend(extra);
        args.extend(["--method", "dmps", "--steps", "10", "--batch", "4", "--quiet", "--out"]);
        args.push(out.to_str().unwrap());
        let o = tweedie(&args);
        assert!(o.status.success(), "{task}: {}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(r["lambda"].as_f64(), Some(2.0), "{task}: the flow default lambda");
        let (psnr, base) = (
            r["mean"]["psnr"].as_f64().unwrap(),
            r["mean"]["baseline_psnr"].as_f64().unwrap(),
        );
        println!("{task}: DMPS-flow 10 steps {psnr:.2} dB, baseline {base:.2} dB");
        assert!(psnr > base, "{task}: {psnr:.2} dB <= baseline {base:.2} dB");
    }
}

#[test]
fn what_a_flow_cannot_run_is_refused_with_one_line() {
    let m = model();
    let img = root().join("weights/fashion-mnist-32/test-images/0000-boot.png");
    for (extra, needle) in [
        (vec!["--method", "cdps"], "C-DPS runs on DDPM's ancestral step"),
        (vec!["--method", "smc"], "SMC runs on DDPM's ancestral step"),
        (
            vec!["--method", "dmps", "--sampler", "ddim", "--eta", "0.5"],
            "has no eta",
        ),
        (vec!["--method", "dps", "--sampler", "ddim"], "takes Euler steps"),
    ] {
        let out = std::env::temp_dir().join(format!("tweedie-flow-refuse-{}", std::process::id()));
        let mut args = vec![
            "restore",
            "--model",
            m.to_str().unwrap(),
            "--task",
            "sr",
            "--input",
            img.to_str().unwrap(),
            "--steps",
            "2",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        let o = tweedie(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!out.join("report.json").exists());
    }
}
