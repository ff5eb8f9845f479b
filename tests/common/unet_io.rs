//! A U-Net fixture's reference run (`tests/fixtures/unet/NAME/io.safetensors`,
//! float64 upstream on the stored float32 weights) and the per-sample parity
//! check the U-Net tests hold every output to.

use tweedie::io::TensorFile;
use tweedie::HostTensor;

use super::{fixture, rel_max_err};

/// Inputs x and t, the output, and the input VJP of the cotangent.
pub struct UnetIo {
    pub x: HostTensor,
    pub t: HostTensor,
    pub cot: HostTensor,
    pub out: HostTensor,
    pub vjp: HostTensor,
}

/// The reference run of fixture `unet/NAME`.
pub fn unet_io(name: &str) -> UnetIo {
    let io = TensorFile::open(fixture(&format!("unet/{name}")).join("io.safetensors")).unwrap();
    let get = |key: &str| io.get(key).unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
    UnetIo {
        x: get("x"),
        t: get("t"),
        cot: get("cotangent"),
        out: get("out"),
        vjp: get("vjp"),
    }
}

/// Each of the `n` samples has its own timestep `t[i]`, so each is held to
/// max |got - want| <= tol max(1, max |want|) on its own (its error printed).
#[track_caller]
pub fn per_sample(what: &str, got: &[f32], want: &[f32], n: usize, t: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let per = want.len() / n;
    for i in 0..n {
        let err = rel_max_err(&got[i * per..(i + 1) * per], &want[i * per..(i + 1) * per]);
        println!("{what}: sample {i} (t = {}): relative max error {err:.3e}", t[i]);
        assert!(
            err <= tol,
            "{what}: sample {i} (t = {}): relative max error {err:.3e} > {tol:e}",
            t[i]
        );
    }
}
