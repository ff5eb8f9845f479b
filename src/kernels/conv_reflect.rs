//! `shaders/conv_reflect.wgsl`: depthwise 2-D correlation with a reflect
//! boundary (torch `ReflectionPad2d` + `conv2d`) and its exact adjoint.

use super::PlaneShape;
use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, CONV_REFLECT, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub planes: u32,
    pub h: u32,
    pub w: u32,
    pub kh: u32,
    pub kw: u32,
    pub rh: u32,
    pub rw: u32,
    pub ntaps: u32,
}

impl ConvParams {
    /// `taps` over [planes, h, w] images.
    pub fn new(taps: &ConvTaps, s: PlaneShape) -> ConvParams {
        ConvParams {
            planes: s.planes as u32,
            h: s.h as u32,
            w: s.w as u32,
            kh: taps.kh as u32,
            kw: taps.kw as u32,
            rh: taps.rh as u32,
            rw: taps.rw as u32,
            ntaps: taps.sparse.unwrap_or(0) as u32,
        }
    }
}

bindings! {
    /// The dense and sparse correlations and their adjoints: `k` holds the
    /// taps ([`ConvTaps::buffer`]).
    pub struct ConvReflect for CONV_REFLECT: ["conv_fwd", "conv_adj", "conv_sparse_fwd", "conv_sparse_adj"] {
        p: uniform,
        k: read f32,
        src: read f32,
        dst: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[ConvReflect::SIG];

/// Taps on the GPU for a `kh x kw` kernel whose tap (`rh`, `rw`) sits on the
/// output pixel: all of them (dense), or only the nonzero ones as
/// (dy, dx, weight) triples (sparse).
pub struct ConvTaps {
    pub buffer: wgpu::Buffer,
    pub kh: usize,
    pub kw: usize,
    pub rh: usize,
    pub rw: usize,
    /// Number of (dy, dx, weight) triples when sparse.
    pub sparse: Option<usize>,
}

impl ConvTaps {
    /// Dense taps, row-major [kh, kw].
    pub fn new(
        gpu: &Gpu,
        label: &str,
        taps: &[f32],
        kh: usize,
        kw: usize,
        rh: usize,
        rw: usize,
    ) -> Result<ConvTaps, GpuError> {
        assert!(taps.len() == kh * kw && rh < kh && rw < kw, "conv taps layout");
        Ok(ConvTaps {
            buffer: gpu.upload(label, taps)?,
            kh,
            kw,
            rh,
            rw,
            sparse: None,
        })
    }

    /// Only the nonzero taps of a row-major [kh, kw] kernel (a motion-blur
    /// path fills a few percent of its box).
    pub fn sparse(
        gpu: &Gpu,
        label: &str,
        taps: &[f32],
        kh: usize,
        kw: usize,
        rh: usize,
        rw: usize,
    ) -> Result<ConvTaps, GpuError> {
        assert!(taps.len() == kh * kw && rh < kh && rw < kw, "conv taps layout");
        let mut triples = Vec::new();
        for (i, &v) in taps.iter().enumerate() {
            if v != 0.0 {
                triples.extend_from_slice(&[(i / kw) as f32 - rh as f32, (i % kw) as f32 - rw as f32, v]);
            }
        }
        let count = triples.len() / 3;
        Ok(ConvTaps {
            buffer: gpu.upload(label, &triples)?,
            kh,
            kw,
            rh,
            rw,
            sparse: Some(count),
        })
    }

    /// The farthest a tap reaches from the output pixel along h and w.
    pub fn reach(&self) -> (usize, usize) {
        (self.rh.max(self.kh - 1 - self.rh), self.rw.max(self.kw - 1 - self.rw))
    }
}

/// Plans `dst = conv(src)` (`adjoint` false) or its adjoint, over
/// [planes, h, w] tensors of the same shape.
pub fn conv_reflect(
    gpu: &Gpu,
    taps: &ConvTaps,
    src: &Tensor,
    dst: &Tensor,
    shape: PlaneShape,
    adjoint: bool,
) -> Result<Dispatch, GpuError> {
    let PlaneShape { planes, h, w } = shape;
    let n = shape.numel();
    if src.numel() != n || dst.numel() != n {
        return Err(GpuError::Shape {
            what: "conv_reflect".into(),
            expected: vec![planes, h, w],
            got: src.shape.clone(),
        });
    }
    let (ah, aw) = taps.reach();
    // One reflection must suffice (the operator refuses such sizes first).
    assert!(
        ah < h && aw < w,
        "conv_reflect reach ({ah}, {aw}) must be below the image side ({h}, {w})"
    );
    let params = ConvParams::new(taps, shape);
    let ubuf = gpu.uniform("conv_reflect params", &params);
    let entry = match (taps.sparse.is_some(), adjoint) {
        (false, false) => "conv_fwd",
        (false, true) => "conv_adj",
        (true, false) => "conv_sparse_fwd",
        (true, true) => "conv_sparse_adj",
    };
    Dispatch::typed(
        gpu,
        entry,
        &[],
        &ConvReflect {
            p: &ubuf,
            k: &taps.buffer,
            src,
            dst,
        },
        dispatch_groups(n, WG1D),
    )
}
