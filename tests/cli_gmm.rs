//! `tweedie gmm`: a good run writes `samples` [N, d]; bad input ends with one
//! clear line on stderr, exit 1, and no output file.

use std::path::{Path, PathBuf};
use std::process::Command;

use tweedie::io::{write_tensors, TensorFile};
use tweedie::HostTensor;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-cli-gmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

struct Problem {
    w: HostTensor,
    mu: HostTensor,
    var: HostTensor,
    a: HostTensor,
    y: HostTensor,
    sy: HostTensor,
}

fn good() -> Problem {
    let (k, d, m) = (2, 3, 2);
    Problem {
        w: HostTensor::new(vec![k], vec![0.4, 0.6]),
        mu: HostTensor::new(vec![k, d], vec![-1.0, 0.0, 1.0, 1.0, 0.5, -1.0]),
        var: HostTensor::new(vec![k, d], vec![0.5; k * d]),
        a: HostTensor::new(vec![m, d], vec![1.0, 0.0, 0.5, 0.0, 1.0, -0.5]),
        y: HostTensor::new(vec![m], vec![0.3, -0.2]),
        sy: HostTensor::new(vec![1], vec![0.1]),
    }
}

fn write(path: &Path, p: &Problem) {
    write_tensors(
        path,
        &[
            ("prior.weights", &p.w),
            ("prior.means", &p.mu),
            ("prior.vars", &p.var),
            ("A", &p.a),
            ("y", &p.y),
            ("sigma_y", &p.sy),
        ],
    )
    .unwrap();
}

fn run(problem: &Path, extra: &[&str], out: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()),
        )
        .args(["gmm", "--problem"])
        .arg(problem)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap_or(-1), stderr)
}

#[test]
fn good_runs_write_samples() {
    let prob = tmp("good.safetensors");
    write(&prob, &good());
    for method in ["ddpm", "dps", "dmps", "cdps"] {
        let out = tmp(&format!("out-{method}.safetensors"));
        let (code, err) = run(
            &prob,
            &["--method", method, "--samples", "7", "--steps", "20", "--seed", "3"],
            &out,
        );
        assert_eq!(code, 0, "{method}: {err}");
        let s = TensorFile::open(&out).unwrap().get("samples").unwrap();
        assert_eq!(s.shape, vec![7, 3]);
        assert!(s.data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn bad_input_is_refused_with_one_line() {
    let mut cases: Vec<(&str, Problem, Vec<&str>, &str)> = Vec::new();
    let mut p = good();
    p.mu = HostTensor::new(vec![2, 4], vec![0.0; 8]);
    cases.push(("mismatched means", p, vec![], "prior.vars"));
    let mut p = good();
    p.a = HostTensor::new(vec![2, 4], vec![0.0; 8]);
    cases.push(("mismatched A", p, vec![], "A must be"));
    let mut p = good();
    p.var.data[4] = 0.0;
    cases.push(("zero variance", p, vec![], "not positive"));
    let mut p = good();
    p.sy.data[0] = -0.1;
    cases.push(("negative sigma_y", p, vec![], "negative"));
    let mut p = good();
    p.y.data[1] = f32::NAN;
    cases.push(("NaN in y", p, vec![], "non-finite"));
    // The good problem with bad flags (as typed on the command line).
    let flag_cases = [
        ("too many steps", "--steps 1001", "--steps"),
        ("no samples", "--samples 0", "--samples"),
        ("eta without ddim", "--eta 0.5", "--eta needs --sampler ddim"),
        ("negative eta", "--sampler ddim --eta=-1", "--eta must be"),
        (
            "eta on a flow",
            "--process flow --eta 0.5",
            "a flow model's Euler sampler has no eta",
        ),
        (
            "ddim on a flow",
            "--process flow --sampler ddim",
            "a flow model takes Euler steps",
        ),
        (
            "cdps on a flow",
            "--process flow --method cdps",
            "C-DPS runs on DDPM's ancestral step",
        ),
        (
            "smc on a flow",
            "--process flow --method smc",
            "SMC runs on DDPM's ancestral step",
        ),
        ("cdps on ddim", "--sampler ddim --method cdps", "not DDIM"),
        // A setting of another method, given to this one, is refused, not ignored.
        (
            "lambda on dps",
            "--method dps --lambda 1",
            "--lambda does not apply to --method dps (it takes --zeta)",
        ),
        (
            "zeta on ddpm",
            "--method ddpm --zeta 1",
            "--zeta does not apply to --method ddpm (it takes no settings)",
        ),
        (
            "cg-tol on smc",
            "--method smc --cg-tol 1e-4",
            "--cg-tol does not apply to --method smc",
        ),
        (
            "cdps-variant on dmps",
            "--method dmps --cdps-variant forward",
            "--cdps-variant does not apply to --method dmps",
        ),
    ];
    for (what, extra, needle) in flag_cases {
        cases.push((what, good(), extra.split_whitespace().collect(), needle));
    }
    for (what, p, extra, needle) in cases {
        let prob = tmp(&format!("bad-{}.safetensors", what.replace(' ', "_")));
        write(&prob, &p);
        let out = tmp(&format!("bad-out-{}.safetensors", what.replace(' ', "_")));
        let mut args = vec![];
        if !extra.contains(&"--method") {
            args.extend(["--method", "dmps"]);
        }
        if !extra.contains(&"--samples") {
            args.extend(["--samples", "4"]);
        }
        if !extra.contains(&"--steps") {
            args.extend(["--steps", "10"]);
        }
        args.extend(extra);
        let (code, err) = run(&prob, &args, &out);
        assert_eq!(code, 1, "{what}: exit code {code}, stderr {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line, got {err:?}");
        assert!(lines[0].contains(needle), "{what}: {:?} lacks {needle:?}", lines[0]);
        assert!(!out.exists(), "{what}: an output file was left behind");
    }
    // A missing file names the path.
    let (code, err) = run(
        Path::new("/nonexistent/p.safetensors"),
        &["--method", "ddpm"],
        &tmp("never.safetensors"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/p.safetensors"), "{err}");
}

#[test]
fn settings_the_method_reads_are_taken() {
    let prob = tmp("settings.safetensors");
    write(&prob, &good());
    for args in [
        &["--method", "dps", "--zeta", "0.5"][..],
        &["--method", "dmps", "--lambda", "1", "--cg-tol", "1e-4"][..],
        &["--method", "cdps", "--cg-iters", "50"][..],
    ] {
        let out = tmp(&format!("settings-{}.safetensors", args[1]));
        let (code, err) = run(&prob, &[args, &["--samples", "4", "--steps", "10"][..]].concat(), &out);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.exists(), "{args:?}");
    }
}
