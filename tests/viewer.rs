//! `examples/viewer.rs` headless: under Xvfb (where `xvfb-run` is installed;
//! `.ci/run` installs it) the viewer restores the built-in test image live,
//! saves the frame presented when the restoration ends, and that frame shows
//! three different, non-blank panels: measurement, estimate, spread.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The viewer example built beside this test (`cargo test` builds examples).
fn viewer_exe() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let exe = deps.parent()?.join("examples").join("viewer");
    exe.exists().then_some(exe)
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

#[test]
fn the_viewer_runs_headless_and_shows_three_panels() {
    if !on_path("xvfb-run") {
        eprintln!("skipping: xvfb-run is not installed (apt-get install xvfb; .ci/run does)");
        return;
    }
    let Some(exe) = viewer_exe() else {
        eprintln!("skipping: the viewer example is not built (cargo build --release --example viewer)");
        return;
    };
    let shot = std::env::temp_dir().join(format!("tweedie-viewer-{}.png", std::process::id()));
    let mut child = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1024x768x24"])
        .arg(&exe)
        .args(["--steps", "8", "--per-frame", "2", "--screenshot"])
        .arg(&shot)
        .spawn()
        .expect("xvfb-run starts");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(600) {
            child.kill().unwrap();
            panic!("the viewer did not finish in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the viewer failed: {status}");
    let frame = image::open(&shot).expect("the saved frame").to_rgb8();
    std::fs::remove_file(&shot).ok();
    let (w, h) = frame.dimensions();
    assert!(w > 3 * 32 && h >= 32, "a {w}x{h} frame");
    // The middle half of each third: away from the gaps between panels.
    let panel = |k: u32| -> Vec<f64> {
        let (x0, x1) = (k * w / 3 + w / 12, (k + 1) * w / 3 - w / 12);
        let mut v = Vec::new();
        for y in h / 4..3 * h / 4 {
            for x in x0..x1 {
                v.push(frame.get_pixel(x, y).0.iter().map(|&c| c as f64).sum::<f64>() / 3.0);
            }
        }
        v
    };
    let panels: Vec<Vec<f64>> = (0..3).map(panel).collect();
    for (k, p) in panels.iter().enumerate() {
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        let spread = (p.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / p.len() as f64).sqrt();
        assert!(spread > 2.0, "panel {k} is blank (grey level {mean:.1} +- {spread:.2})");
    }
    for a in 0..3 {
        for b in a + 1..3 {
            let diff = panels[a]
                .iter()
                .zip(&panels[b])
                .map(|(x, y)| (x - y).abs())
                .sum::<f64>()
                / panels[a].len() as f64;
            assert!(
                diff > 2.0,
                "panels {a} and {b} are alike (mean difference {diff:.2} grey levels)"
            );
        }
    }
}
