//! `shaders/embed.wgsl`: what a step-wise restoration shows between steps
//! (the mean and spread of its samples) and the check that refuses a run
//! that went non-finite, without reading the samples back.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, EMBED, WG1D};
use crate::tensor::Tensor;

/// Mirrors `Params` in shaders/embed.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmbedParams {
    pub images: u32,
    pub samples: u32,
    pub per: u32,
    pub rows: u32,
}

bindings! {
    /// `sample_stats`: per-pixel mean and standard deviation over each image's samples.
    pub struct SampleStats for EMBED: ["sample_stats"] {
        p: uniform,
        x0: read f32,
        mean: read_write f32,
        sd: read_write f32,
    }

    /// `finite_check`: per row, the non-finite count and the largest finite value.
    pub struct FiniteCheck for EMBED: ["finite_check"] {
        p: uniform,
        x: read f32,
        out: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[SampleStats::SIG, FiniteCheck::SIG];

/// Plans `mean` and `sd` [images, per] over `x0` [images * samples, per]
/// (image j's samples are rows j * samples ..).
pub fn sample_stats(gpu: &Gpu, x0: &Tensor, mean: &Tensor, sd: &Tensor, samples: usize) -> Result<Dispatch, GpuError> {
    let images = mean.shape.first().copied().unwrap_or(0);
    let per = mean.numel() / images.max(1);
    if samples == 0 || x0.numel() < images * samples * per || sd.numel() != mean.numel() {
        return Err(GpuError::Shape {
            what: "sample_stats".into(),
            expected: vec![images * samples, per],
            got: vec![x0.numel(), sd.numel()],
        });
    }
    let p = EmbedParams {
        images: images as u32,
        samples: samples as u32,
        per: per as u32,
        rows: (images * samples) as u32,
    };
    let u = gpu.uniform("sample_stats params", &p);
    let b = SampleStats { p: &u, x0, mean, sd };
    Dispatch::typed(gpu, "sample_stats", &[], &b, dispatch_groups(images * per, WG1D))
}

/// Plans the check of `x`'s first `rows` rows into `out` [rows, 2]: the
/// number of non-finite values, then the finite value of largest magnitude.
pub fn finite_check(gpu: &Gpu, x: &Tensor, rows: usize, out: &Tensor) -> Result<Dispatch, GpuError> {
    let per = x.shape[1..].iter().product::<usize>();
    if rows == 0 || x.numel() < rows * per || out.numel() != rows * 2 {
        return Err(GpuError::Shape {
            what: "finite_check".into(),
            expected: vec![rows, per, rows * 2],
            got: vec![x.numel(), out.numel()],
        });
    }
    let p = EmbedParams {
        images: rows as u32,
        samples: 1,
        per: per as u32,
        rows: rows as u32,
    };
    let u = gpu.uniform("finite_check params", &p);
    Dispatch::typed(
        gpu,
        "finite_check",
        &[],
        &FiniteCheck { p: &u, x, out },
        [rows as u32, 1, 1],
    )
}
