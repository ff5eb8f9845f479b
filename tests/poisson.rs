//! DPS's Poisson noise: y = Poisson(255 R (A x + 1) / 2) / (255 R) * 2 - 1,
//! clamped to [-1, 1]. Its moments against the formula, its clamping and
//! seeding, the samplers' Gaussian approximation, and the command line:
//! `degrade --noise poisson` writes the approximation's sigma_y, and bad
//! noise flags are refused in one line with nothing written.

use std::path::PathBuf;
use std::process::Command;

use tweedie::restore::{poisson_counts, NoiseModel};

#[test]
fn moments_match_the_scaled_poisson() {
    for (v, rate) in [(0.2f32, 1.0f32), (-0.6, 1.0), (0.0, 0.1), (0.5, 4.0)] {
        let n = 200_000;
        let y = poisson_counts(&vec![v; n], rate, 3);
        let mean = y.iter().map(|&y| y as f64).sum::<f64>() / n as f64;
        let var = y.iter().map(|&y| (y as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let scale = 255.0 * rate as f64;
        // E y = v; Var y = 4 lambda / scale^2 with lambda = scale (v + 1) / 2.
        let want_var = 2.0 * (v as f64 + 1.0) / scale;
        let se = (want_var / n as f64).sqrt();
        assert!((mean - v as f64).abs() < 5.0 * se, "v {v} R {rate}: mean {mean}");
        assert!(
            (var / want_var - 1.0).abs() < 0.02,
            "v {v} R {rate}: var {var} vs {want_var}"
        );
        // Values are whole counts on the grid 2 k / scale - 1.
        for &y in &y[..100] {
            let k = (y as f64 + 1.0) * scale / 2.0;
            assert!((k - k.round()).abs() < 1e-3 * k.max(1.0), "{y} is not a count");
        }
    }
}

#[test]
fn clamped_seeded_and_zero_at_black() {
    let ax = [-1.0f32, -3.0, 1.0, 2.0, 0.3];
    let y = poisson_counts(&ax, 1.0, 9);
    assert_eq!(y[0], -1.0, "black has mean 0: no photons");
    assert_eq!(y[1], -1.0, "below -1 is clamped before the draw");
    assert!(y.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(y, poisson_counts(&ax, 1.0, 9));
    assert_ne!(poisson_counts(&[0.3; 64], 1.0, 9), poisson_counts(&[0.3; 64], 1.0, 10));
}

#[test]
fn the_samplers_gaussian_approximation() {
    let p = NoiseModel::Poisson { rate: 1.0 };
    assert!((p.sigma_y() as f64 - (2.0f64 / 255.0).sqrt()).abs() < 1e-7);
    assert_eq!(NoiseModel::Gaussian { sigma: 0.05 }.sigma_y(), 0.05);
    assert!(NoiseModel::Poisson { rate: 0.0 }.validate().is_err());
    assert!(NoiseModel::Poisson { rate: f32::NAN }.validate().is_err());
    assert!(NoiseModel::Gaussian { sigma: -1.0 }.validate().is_err());
}

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

fn image() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("weights/fashion-mnist-32/test-images/0000-boot.png")
        .display()
        .to_string()
}

#[test]
fn degrade_with_poisson_noise() {
    let dir = std::env::temp_dir().join(format!("tweedie-poisson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("y.png");
    let base = ["degrade", "--task", "denoise", "--input", &image()];
    let o = tweedie(
        &[
            &base[..],
            &["--noise", "poisson", "--seed", "2", "--out", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = tweedie::io::TensorFile::open(dir.join("y.safetensors")).unwrap();
    let sigma = f.get("sigma_y").unwrap().data[0];
    assert!((sigma - (2.0f32 / 255.0).sqrt()).abs() < 1e-6);
    let y = f.get("y").unwrap().data;
    let clean = tweedie::io::read_image(image()).unwrap().data;
    // Black stays black (no photons); elsewhere y scatters about x.
    for (c, v) in clean.iter().zip(&y) {
        if *c == -1.0 {
            assert_eq!(*v, -1.0);
        }
    }
    let rms = (clean.iter().zip(&y).map(|(c, v)| (c - v).powi(2)).sum::<f32>() / y.len() as f32).sqrt();
    assert!(rms > 0.01 && rms < 0.2, "rms {rms}");
    for (flags, needle) in [
        (
            vec!["--noise", "poisson", "--poisson-rate", "0"],
            "--poisson-rate 0 must be a positive number",
        ),
        (
            vec!["--noise", "poisson", "--poisson-rate=-2"],
            "--poisson-rate -2 must be a positive number",
        ),
        (vec!["--poisson-rate", "1"], "--poisson-rate needs --noise poisson"),
        (
            vec!["--noise", "poisson", "--sigma", "0.1"],
            "--noise poisson takes --poisson-rate",
        ),
    ] {
        let bad = dir.join("bad.png");
        let o = tweedie(&[&base[..], &flags[..], &["--out", bad.to_str().unwrap()]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flags:?}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!bad.exists() && !dir.join("bad.safetensors").exists());
    }
}
