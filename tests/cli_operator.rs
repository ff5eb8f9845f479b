//! `tweedie operator --mode vjp`: J_A(x)^T v from a file holding "x" and
//! "v"; for a linear task it is A^T v whatever x is, so it must equal
//! `--mode adjoint` of v bit for bit, and a "v" not shaped like y is refused
//! in one line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tweedie::io::{write_tensors, TensorFile};
use tweedie::HostTensor;

fn tweedie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-cli-operator-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn vjp_of_a_linear_task_is_its_adjoint() {
    let dir = scratch("vjp");
    let mut r = common::rng(21);
    // x2 super-resolution of 2 x 16 x 16: y is 2 x 8 x 8.
    let (n, c, s, m) = (2, 2, 16, 8);
    let x = HostTensor::new(vec![n, c, s, s], common::randn(&mut r, n * c * s * s));
    let v = HostTensor::new(vec![n, c, m, m], common::randn(&mut r, n * c * m * m));
    let vjp_in = dir.join("xv.safetensors");
    write_tensors(&vjp_in, &[("x", &x), ("v", &v)]).unwrap();
    let adj_in = dir.join("v.safetensors");
    write_tensors(&adj_in, &[("x", &v)]).unwrap();
    let base = [
        "operator",
        "--task",
        "sr",
        "--factor",
        "2",
        "--image-size",
        "16",
        "--channels",
        "2",
    ];
    let run = |mode: &str, input: &Path, out: &Path| {
        tweedie(&[&base[..], &["--mode", mode, "--input", p(input), "--out", p(out)]].concat())
    };
    let (vjp_out, adj_out) = (dir.join("vjp.safetensors"), dir.join("adj.safetensors"));
    for (mode, input, out) in [("vjp", &vjp_in, &vjp_out), ("adjoint", &adj_in, &adj_out)] {
        let o = run(mode, input, out);
        assert!(o.status.success(), "{mode}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let vjp = TensorFile::open(&vjp_out).unwrap().get("y").unwrap();
    let adj = TensorFile::open(&adj_out).unwrap().get("y").unwrap();
    assert_eq!(vjp.shape, vec![n, c, s, s]);
    assert_eq!(vjp.shape, adj.shape);
    assert!(vjp.data.iter().any(|&v| v != 0.0), "J^T v is not all zeros");
    assert_eq!(vjp.data, adj.data, "J^T v = A^T v for a linear operator");

    // A "v" shaped like x, not like y: one line naming it.
    let bad = dir.join("bad.safetensors");
    write_tensors(&bad, &[("x", &x), ("v", &x)]).unwrap();
    let o = run("vjp", &bad, &dir.join("never.safetensors"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("tensor \"v\" has shape"), "{err}");
    // No "v" at all.
    let only_x = dir.join("only-x.safetensors");
    write_tensors(&only_x, &[("x", &x)]).unwrap();
    let o = run("vjp", &only_x, &dir.join("never.safetensors"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no tensor named \"v\""), "{err}");
}
