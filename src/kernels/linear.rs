//! `shaders/linear.wgsl`: dense layers with optional SiLU on input and output.

use crate::gpu::{dispatch_groups, Dispatch, Gpu, GpuError, LINEAR};

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

/// Threads per workgroup (mirrors `WG`).
pub const WG: u32 = 64;

/// y [n, dout] = silu_out?(W silu_in?(x) + b), W [dout, din] at `w`, b at `b`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    gpu: &Gpu,
    n: usize,
    din: usize,
    dout: usize,
    x: &wgpu::Buffer,
    w: (&wgpu::Buffer, usize),
    b: (&wgpu::Buffer, usize),
    silu_in: bool,
    silu_out: bool,
    y: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let params = LinearParams {
        n: n as u32,
        din: din as u32,
        dout: dout as u32,
        silu_in: silu_in as u32,
        silu_out: silu_out as u32,
        w_off: w.1 as u32,
        b_off: b.1 as u32,
        x_off: 0,
    };
    let u = gpu.uniform("linear params", &params);
    Dispatch::new(
        gpu,
        &LINEAR,
        "linear",
        &[("WG", WG as f64)],
        &[&u, x, w.0, b.0, y],
        dispatch_groups(n * dout, WG),
    )
}
