//! `shaders/axis_matmul.wgsl`: a small dense matrix applied along the H or W
//! axis of [planes, H, W] tensors (SR resampling, Kronecker SVD factors).

use super::PlaneShape;
use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, AXIS_MATMUL, WG1D};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AxisParams {
    pub outer: u32,
    pub k: u32,
    pub q: u32,
    pub inner: u32,
    pub transpose: u32,
    pub _pad: [u32; 3],
}

impl AxisParams {
    /// [outer, k, inner] -> [outer, q, inner] with a [q, k] matrix (or the
    /// transpose of a [k, q] one).
    pub fn new(outer: usize, (k, q): (usize, usize), inner: usize, transpose: bool) -> AxisParams {
        AxisParams {
            outer: outer as u32,
            k: k as u32,
            q: q as u32,
            inner: inner as u32,
            transpose: transpose as u32,
            _pad: [0; 3],
        }
    }
}

bindings! {
    /// `axis_matmul`: `m` holds the matrix ([`AxisMatrix::buffer`]).
    pub struct AxisMatmul for AXIS_MATMUL: ["axis_matmul"] {
        p: uniform,
        m: read f32,
        src: read f32,
        dst: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[AxisMatmul::SIG];

/// Which image axis a matrix acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    H,
    W,
}

/// A row-major [rows, cols] matrix on the GPU.
pub struct AxisMatrix {
    pub buffer: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
}

impl AxisMatrix {
    pub fn new(gpu: &Gpu, label: &str, data: &[f32], rows: usize, cols: usize) -> Result<AxisMatrix, GpuError> {
        assert_eq!(data.len(), rows * cols, "axis matrix layout");
        Ok(AxisMatrix {
            buffer: gpu.upload(label, data)?,
            rows,
            cols,
        })
    }

    /// (input length, output length) along the axis, applied plain or transposed.
    pub fn lengths(&self, transpose: bool) -> (usize, usize) {
        if transpose {
            (self.rows, self.cols)
        } else {
            (self.cols, self.rows)
        }
    }
}

/// A matrix applied along one axis, plain or transposed.
#[derive(Clone, Copy)]
pub struct AxisFactor<'a> {
    pub m: &'a AxisMatrix,
    pub transpose: bool,
}

impl<'a> AxisFactor<'a> {
    pub fn new(m: &'a AxisMatrix, transpose: bool) -> AxisFactor<'a> {
        AxisFactor { m, transpose }
    }
}

/// Plans `dst = M src` along `axis` (or `M^T src` with `transpose`): src is
/// [planes, h, w], dst has that axis replaced by M's output length.
pub fn axis_matmul(
    gpu: &Gpu,
    f: AxisFactor<'_>,
    axis: Axis,
    src: &Tensor,
    dst: &Tensor,
    shape: PlaneShape,
) -> Result<Dispatch, GpuError> {
    let AxisFactor { m, transpose } = f;
    let PlaneShape { planes, h, w } = shape;
    let (k, q) = m.lengths(transpose);
    let (outer, along, inner, out_shape) = match axis {
        Axis::H => (planes, h, w, vec![planes, q, w]),
        Axis::W => (planes * h, w, 1, vec![planes, h, q]),
    };
    if along != k || src.numel() != planes * h * w || dst.numel() != outer * q * inner {
        return Err(GpuError::Shape {
            what: format!("axis_matmul along {axis:?}"),
            expected: out_shape,
            got: dst.shape.clone(),
        });
    }
    let params = AxisParams::new(outer, (k, q), inner, transpose);
    let ubuf = gpu.uniform("axis_matmul params", &params);
    Dispatch::typed(
        gpu,
        "axis_matmul",
        &[],
        &AxisMatmul {
            p: &ubuf,
            m: &m.buffer,
            src,
            dst,
        },
        dispatch_groups(outer * q * inner, WG1D),
    )
}
