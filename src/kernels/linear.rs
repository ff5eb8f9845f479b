//! `shaders/linear.wgsl`: dense layers with optional SiLU on input and output.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, LINEAR};
use crate::tensor::Tensor;

bindings! {
    /// y = silu_out?(W silu_in?(x) + b), W and b in weight buffers.
    pub struct Linear for LINEAR: ["linear"] {
        p: uniform,
        x: read T,
        wt: read T,
        bias: read T,
        y: read_write T,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Linear::SIG];

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LinearParams {
    pub n: u32,
    pub din: u32,
    pub dout: u32,
    pub silu_in: u32,
    pub silu_out: u32,
    pub w_off: u32,
    pub b_off: u32,
    pub x_off: u32,
}

/// A dense layer over a batch: x [n, din] -> y [n, dout], with SiLU on the
/// input and/or the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub n: usize,
    pub din: usize,
    pub dout: usize,
    pub silu_in: bool,
    pub silu_out: bool,
}

impl LinearParams {
    /// W at element `w_off`, b at `b_off` of their buffers.
    pub fn new(s: &LinearShape, w_off: usize, b_off: usize) -> LinearParams {
        LinearParams {
            n: s.n as u32,
            din: s.din as u32,
            dout: s.dout as u32,
            silu_in: s.silu_in as u32,
            silu_out: s.silu_out as u32,
            w_off: w_off as u32,
            b_off: b_off as u32,
            x_off: 0,
        }
    }
}

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 64;

/// y [n, dout] = silu_out?(W silu_in?(x) + b): W [dout, din] at element
/// `w.1` of buffer `w.0`, b at `b.1` of `b.0` (weight arenas of x's dtype).
pub fn linear(
    gpu: &Gpu,
    s: &LinearShape,
    x: &Tensor,
    w: (&wgpu::Buffer, usize),
    b: (&wgpu::Buffer, usize),
    y: &Tensor,
) -> Result<Dispatch, GpuError> {
    let p = &gpu.uniform("linear params", &LinearParams::new(s, w.1, b.1));
    Dispatch::typed(
        gpu,
        "linear",
        &[("WG", WG as f64)],
        &Linear {
            p,
            x,
            wt: w.0,
            bias: b.0,
            y,
        },
        dispatch_groups(s.n * s.dout, WG),
    )
}
