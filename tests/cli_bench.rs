//! `tweedie bench --model` and `tweedie info MODEL --json` end to end on a
//! fixture U-Net: the rows a kernel engineer reads, and the plan figures.

mod common;

use std::process::Command;

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

fn model() -> String {
    common::fixture("unet/adm_scale_shift").display().to_string()
}

#[test]
fn bench_model_reports_every_layer_shape_pass_and_step() {
    let m = model();
    let out = tweedie(&[
        "bench",
        "--model",
        &m,
        "--image-size",
        "16",
        "--batch",
        "2",
        "--iters",
        "1",
        "--json",
        "--peak-tflops",
        "2",
        "--peak-gbps",
        "50",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "forward",
        "forward_vjp",
        "step ddpm",
        "step dps",
        "step dmps",
        "step cdps",
    ] {
        assert!(names.contains(&want), "no {want} row in {names:?}");
    }
    // Every convolution shape has its backward-data row; names are distinct.
    let convs: Vec<&str> = names.iter().filter(|n| n.starts_with("conv ")).copied().collect();
    assert!(convs.len() >= 5, "{convs:?}");
    for c in &convs {
        let b = c.replacen("conv ", "conv_bwd ", 1);
        assert!(names.contains(&b.as_str()), "{b} missing");
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate rows");
    for kind in ["groupnorm", "attention", "attention_bwd", "linear"] {
        assert!(rows.iter().any(|r| r["kind"] == kind), "no {kind} row");
    }
    for r in &rows {
        let ms = r["median_ms"].as_f64().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{r}");
        assert_eq!(r["batch"], 2);
        assert_eq!(r["precision"], "f32");
        // The fraction is of the given peaks.
        match (r["tflops"].as_f64(), r["gbps"].as_f64()) {
            (Some(t), _) => assert!((r["peak_fraction"].as_f64().unwrap() - t / 2.0).abs() < 1e-12),
            (None, Some(g)) => assert!((r["peak_fraction"].as_f64().unwrap() - g / 50.0).abs() < 1e-12),
            _ => panic!("{r}: neither FLOPs nor bytes"),
        }
    }
    // The layer counts add up to the model's convolutions.
    let conv_layers: u64 = rows
        .iter()
        .filter(|r| r["kind"] == "conv")
        .map(|r| r["layers"].as_u64().unwrap())
        .sum();
    let info = tweedie(&["info", &m, "--json", "--image-size", "16", "--batch", "2"]);
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let f: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let graph_convs = tweedie::unet::Graph::build(
        &tweedie::unet::UnetConfig::from_file(common::fixture("unet/adm_scale_shift/config.json")).unwrap(),
        false,
    )
    .unwrap()
    .layers
    .iter()
    .filter(|l| matches!(l, tweedie::unet::Layer::Conv { .. }))
    .count();
    assert_eq!(conv_layers as usize, graph_convs);
    // info --json: the plan figures the issue asks for, per plan and per step.
    for plan in ["forward", "forward_vjp"] {
        assert!(f["plans"][plan]["bytes"].as_u64().unwrap() > 0);
        assert!(f["plans"][plan]["dispatches"].as_u64().unwrap() > 0);
    }
    for step in ["ddpm", "dps", "dmps", "cdps"] {
        assert!(f["plans"]["steps"][step]["dispatches"].as_u64().unwrap() > 0, "{step}");
    }
    assert!(f["weights_bytes"].as_u64().unwrap() > 0);
    // The forward row's dispatches are the forward plan's.
    let fwd = rows.iter().find(|r| r["name"] == "forward").unwrap();
    assert_eq!(fwd["dispatches"], f["plans"]["forward"]["dispatches"]);
}

#[test]
fn bench_and_info_refuse_bad_input_in_one_line() {
    let m = model();
    for args in [
        vec!["bench", "--model", &m, "--image-size", "18", "--iters", "1"],
        vec!["info", &m, "--image-size", "18"],
        vec!["info", &m, "--batch", "0"],
        vec!["bench", "--model", "/nonexistent/model", "--iters", "1"],
    ] {
        let out = tweedie(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `bench --tune`: one record per convolution shape and pass, the best of the
/// candidates timed (never slower than the heuristic's own time), saved in
/// the cache the environment names under this adapter; without `--model` it
/// is refused in one line. (The adapter needs timestamp queries; lavapipe
/// has them.)
#[test]
fn bench_tune_times_candidates_and_fills_the_cache() {
    let dir = std::env::temp_dir().join(format!("tweedie-cli-tune-{}", std::process::id()));
    let cache = dir.join("tune.json");
    let m = model();
    let out = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args([
            "bench",
            "--model",
            &m,
            "--image-size",
            "16",
            "--iters",
            "1",
            "--tune",
            "--json",
        ])
        .env("TWEEDIE_TUNE_CACHE", &cache)
        .output()
        .expect("run tweedie");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("timestamp queries") {
        eprintln!("skipped: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 4, "{rows:?}");
    for r in &rows {
        assert_eq!(r["kind"], "tune");
        let cands = r["candidates"].as_array().unwrap();
        assert!(cands.len() >= 2, "{r}");
        let best = r["best_ms"].as_f64().unwrap();
        let fastest = cands
            .iter()
            .map(|c| c["ms"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(best, fastest, "{r}");
        if let Some(h) = r["heuristic_ms"].as_f64() {
            assert!(best <= h, "{r}");
        }
    }
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let adapters = saved["adapters"].as_object().unwrap();
    assert_eq!(adapters.len(), 1);
    let entries = adapters.values().next().unwrap().as_object().unwrap();
    assert_eq!(entries.len(), rows.len(), "one cache entry per layer shape and pass");
    let _ = std::fs::remove_dir_all(&dir);

    let out = tweedie(&["bench", "--tune"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--model") && err.trim().lines().count() == 1, "{err}");
}
