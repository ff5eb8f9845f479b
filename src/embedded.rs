//! The shipped default prior (an ADM U-Net trained on Fashion-MNIST at 32x32,
//! `weights/fashion-mnist-32/`) and its held-out test images, compiled into the
//! binary: `tweedie demo`, `restore` and `sample` without `--model` work from
//! any directory, after `cargo install`, with the source tree gone.

/// How the embedded prior is named in messages and reports.
pub const MODEL_NAME: &str = "fashion-mnist-32 (built in)";
/// Its `config.json`.
pub const CONFIG_JSON: &str = include_str!("../weights/fashion-mnist-32/config.json");
/// Its `model.safetensors` (2.7 MB).
pub const MODEL_SAFETENSORS: &[u8] = include_bytes!("../weights/fashion-mnist-32/model.safetensors");

include!(concat!(env!("OUT_DIR"), "/test_images.rs"));
