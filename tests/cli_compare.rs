//! `tweedie compare` end to end on a fixture U-Net and four shipped test
//! images: the files a user expects, and one line for bad input.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

fn images() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("weights/fashion-mnist-32/test-images")
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-compare-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `tweedie compare` on the fixture model and the first four images, with
/// `methods` and `extra` flags (box inpainting unless they give a task).
fn compare(out: &std::path::Path, methods: &str, extra: &[&str]) -> std::process::Output {
    let model = common::fixture("unet/adm_gray").display().to_string();
    let (input, out) = (images(), out.display().to_string());
    let mut args = vec![
        "compare",
        "--input",
        &input,
        "--limit",
        "4",
        "--model",
        &model,
        "--methods",
        methods,
        "--out",
        &out,
        "--quiet",
    ];
    if !extra.contains(&"--task") {
        args.extend(["--task", "inpaint-box", "--box", "12"]);
    }
    args.extend(extra);
    tweedie(&args)
}

#[test]
fn compare_writes_table_grid_and_plot() {
    let out = scratch("ok");
    let steps = 3;
    let o = compare(&out, "dps,dmps,ddnm", &["--steps", "3", "--seed", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["results.json", "results.md", "grid.png", "tradeoff.png"] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["images"], 4);
    assert_eq!(doc["task"], "inpaint-box");
    assert!(doc["baseline"]["psnr"].as_f64().unwrap().is_finite());
    assert!(doc["baseline"]["label"].as_str().unwrap().contains("A^+ y"));
    let methods = doc["methods"].as_object().unwrap();
    assert_eq!(methods.len(), 3);
    // (name, model passes per step, takes the VJP)
    for (name, passes, vjp) in [("dps", 2, true), ("dmps", 1, false), ("ddnm", 1, false)] {
        let m = &methods[name];
        for k in ["psnr", "ssim", "psnr_sem", "seconds_per_image"] {
            assert!(m[k].as_f64().is_some_and(f64::is_finite), "{name} {k}: {}", m[k]);
        }
        assert_eq!(m["nfe"], steps * passes, "{name} nfe");
        assert_eq!(m["vjps"], if vjp { steps } else { 0 }, "{name} vjps");
        assert_eq!(m["steps"], steps);
        assert_eq!(m["images"].as_array().unwrap().len(), 4);
    }
    // 3 steps: the paper's 0.5 x 1000 / 3, capped at 4 (src/samplers/dps.rs, ZetaRule).
    assert_eq!(methods["dps"]["settings"]["zeta"], 4.0);
    assert_eq!(methods["dmps"]["settings"]["lambda"], 1.75);

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .collect();
    assert_eq!(rows.len(), 4, "{md}");
    assert!(rows[0].starts_with("| baseline |"), "{md}");
    for name in ["dps", "dmps", "ddnm"] {
        assert!(rows.iter().any(|r| r.starts_with(&format!("| {name} |"))), "{md}");
    }

    // Rows: images; columns: clean, measurement, baseline, three methods;
    // tiles of 32 x 3 with 2-pixel gaps.
    let grid = image::open(out.join("grid.png")).unwrap();
    let (tile, gap) = (32 * 3, 2);
    assert_eq!(grid.width() as usize, 6 * tile + 7 * gap);
    assert_eq!(grid.height() as usize, 4 * tile + 5 * gap);
    let plot = image::open(out.join("tradeoff.png")).unwrap().to_rgb8();
    // Drawn on: not all white.
    assert!(plot.pixels().any(|p| p.0 != [255, 255, 255]));
}

/// `compare --devices 0,0`: two workers give one worker's numbers and grid.
#[test]
fn compare_devices_give_one_workers_results() {
    let (plain, two) = (scratch("one-worker"), scratch("two-workers"));
    let flags = ["--steps", "2", "--batch", "2"];
    for (out, extra) in [(&plain, &[][..]), (&two, &["--devices", "0,0"][..])] {
        let o = compare(out, "ddnm", &[&flags[..], extra].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("results.json")).unwrap()).unwrap()
    };
    let rows = |d| read(d)["methods"]["ddnm"]["images"].clone();
    assert_eq!(rows(&two), rows(&plain));
    assert_eq!(rows(&two).as_array().unwrap().len(), 4);
    let grid = |d: &std::path::Path| std::fs::read(d.join("grid.png")).unwrap();
    assert!(grid(&two) == grid(&plain), "the grids differ");
}

/// A killed compare resumes: its methods' finished batches (rows and
/// pictures) are read back, so the rerun's results and grid equal an
/// uninterrupted run's; a different command in the same --out is refused in
/// one line unless --overwrite.
#[test]
fn compare_resumes_where_a_killed_run_stopped() {
    let (whole, killed) = (scratch("resume-whole"), scratch("resume-killed"));
    let flags = ["--steps", "2", "--batch", "2"];
    for out in [&whole, &killed] {
        let o = compare(out, "ddnm,dmps", &flags);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The kill: dmps had finished its first batch of two only, ddnm both;
    // nothing was written after.
    let journal = killed.join("dmps.progress.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a head and two batches: {text}");
    std::fs::write(&journal, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    std::fs::remove_file(killed.join("dmps.batch-00001.safetensors")).unwrap();
    for f in ["results.json", "results.md", "grid.png", "tradeoff.png"] {
        std::fs::remove_file(killed.join(f)).unwrap();
    }
    let o = compare(&killed, "ddnm,dmps", &flags);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("results.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&whole), read(&killed));
    for m in ["ddnm", "dmps"] {
        assert_eq!(a["methods"][m]["images"], b["methods"][m]["images"], "{m}'s rows");
        assert_eq!(a["methods"][m]["resumed_batches"], 0);
    }
    assert_eq!(b["methods"]["ddnm"]["resumed_batches"], 2);
    assert_eq!(b["methods"]["dmps"]["resumed_batches"], 1);
    let grid = |d: &std::path::Path| std::fs::read(d.join("grid.png")).unwrap();
    assert!(grid(&whole) == grid(&killed), "the resumed grid differs");

    // Another command in the same --out: one line, then --overwrite starts afresh.
    let o = compare(&killed, "ddnm", &["--steps", "3", "--batch", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a different run must be refused");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    let o = compare(&killed, "ddnm", &["--steps", "3", "--batch", "2", "--overwrite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&killed)["methods"]["ddnm"]["resumed_batches"], 0);

    // A damaged pictures file: one line naming it, no panic.
    let bad = killed.join("ddnm.batch-00000.safetensors");
    let t = tweedie::HostTensor::new(vec![3, 1], vec![0.0; 3]);
    tweedie::io::write_tensors(&bad, &[("estimate", &t), ("baseline", &t), ("y", &t)]).unwrap();
    let o = compare(&killed, "ddnm", &["--steps", "3", "--batch", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a damaged pictures file must stop the run");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("ddnm.batch-00000.safetensors") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn compare_refuses_bad_methods_in_one_line() {
    for (name, methods) in [("unknown", "dps,nope"), ("empty", ""), ("twice", "dps,dps")] {
        let out = scratch(name);
        let o = compare(&out, methods, &["--steps", "3"]);
        assert!(!o.status.success(), "{name}: accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(!out.exists(), "{name}: wrote {}", out.display());
    }
    // A setting none of the methods reads.
    let out = scratch("setting");
    let o = compare(&out, "dmps,ddnm", &["--steps", "3", "--zeta", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--zeta"), "{err}");
    assert!(!out.exists());
    // A method that refuses the task stops the run before any sampling, with its reason.
    let out = scratch("refuses");
    let o = compare(&out, "dps,dmps", &["--steps", "3", "--task", "phase-retrieval"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "phase retrieval with dmps accepted");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("dmps") && err.contains("linear"), "{err}");
    assert!(!out.exists());
}

/// `compare --methods smc --samples K --particles P` runs K / P populations
/// per image, as `eval` does (its settings say P); a P that does not divide K
/// is refused in one line.
#[test]
fn compare_passes_smc_populations_through() {
    let out = scratch("smc-pops");
    let o = compare(
        &out,
        "smc,ddnm",
        &[
            "--task",
            "sr",
            "--factor",
            "2",
            "--steps",
            "2",
            "--batch",
            "2",
            "--samples",
            "4",
            "--particles",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        doc["methods"]["smc"]["settings"]["particles"], 2,
        "{}",
        doc["methods"]["smc"]["settings"]
    );
    assert!(doc["methods"]["smc"]["psnr"].as_f64().unwrap().is_finite());
    let bad = scratch("smc-pops-bad");
    let o = compare(
        &bad,
        "smc",
        &[
            "--task",
            "sr",
            "--factor",
            "2",
            "--steps",
            "2",
            "--samples",
            "4",
            "--particles",
            "3",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--particles 3 must divide --samples 4"), "{err}");
}
