//! The built-in default prior: a release binary copied away from the source
//! tree (no `weights/` beside it, a fresh working directory) still runs
//! `demo`, `sample` and `restore` without `--model`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A directory with only a copy of the binary in it, made once per test
/// process (copying while another thread spawns a child can leave the new
/// file open in that child: "text file busy").
fn lone_binary() -> &'static (PathBuf, PathBuf) {
    static LONE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LONE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tweedie-lone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tweedie");
        std::fs::copy(env!("CARGO_BIN_EXE_tweedie"), &bin).expect("copy the binary");
        (dir, bin)
    })
}

/// A fresh working directory beside the copied binary.
fn workdir(name: &str) -> PathBuf {
    let d = lone_binary().0.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(bin: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    for _ in 0..20 {
        match Command::new(bin).current_dir(cwd).args(args).output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(std::time::Duration::from_millis(50)),
            r => return r.expect("run tweedie"),
        }
    }
    panic!("{}: text file busy", bin.display())
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_runs_from_a_copied_binary_with_no_source_tree() {
    let (dir, bin) = (workdir("demo"), &lone_binary().1);
    let out = run(
        bin,
        &dir,
        &["demo", "--count", "2", "--steps", "2", "--quiet", "--out", "d"],
    );
    ok(&out, "demo");
    for f in ["inpaint-box.png", "sr.png", "report.json"] {
        assert!(dir.join("d").join(f).is_file(), "demo wrote no {f}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("d/report.json")).unwrap()).unwrap();
    assert_eq!(report["model"], tweedie::embedded::MODEL_NAME);
    // Two images per task: their rows come from the embedded test images.
    assert_eq!(
        report["results"][0]["images"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_and_restore_default_to_the_built_in_prior() {
    let (dir, bin) = (workdir("sample"), &lone_binary().1);
    let out = run(
        bin,
        &dir,
        &["sample", "--samples", "2", "--steps", "2", "--quiet", "--out", "s.png"],
    );
    ok(&out, "sample");
    // restore needs an input image: one of the built-in ones, written out.
    let (name, png) = tweedie::embedded::TEST_IMAGES[0];
    std::fs::write(dir.join(name), png).unwrap();
    let out = run(
        bin,
        &dir,
        &[
            "restore",
            "--task",
            "denoise",
            "--method",
            "dps",
            "--input",
            name,
            "--steps",
            "2",
            "--samples",
            "1",
            "--quiet",
            "--out",
            "r",
        ],
    );
    ok(&out, "restore");
    assert!(dir.join("r/mean.png").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_embedded_images_are_the_shipped_ones() {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-mnist-32/test-images");
    let mut names: Vec<String> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let embedded: Vec<&str> = tweedie::embedded::TEST_IMAGES.iter().map(|(n, _)| *n).collect();
    assert_eq!(embedded, names);
    for (n, bytes) in tweedie::embedded::TEST_IMAGES {
        assert_eq!(*bytes, std::fs::read(shipped.join(n)).unwrap().as_slice(), "{n}");
    }
}
