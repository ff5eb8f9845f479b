//! Thin Rust wrappers, one per shader family: compute shapes, check limits,
//! bind buffers, return [`Dispatch`](crate::gpu::Dispatch)es. The math is in WGSL.

pub mod attention;
pub mod axis_matmul;
pub mod colorize;
pub mod conv2d;
pub mod conv_choice;
pub mod conv_coop;
pub mod conv_reflect;
pub mod elementwise;
pub mod embed;
pub mod fft;
pub mod groupnorm;
pub mod jpeg;
pub mod linear;
pub mod mask;
pub mod phase;
pub mod random;
pub mod reduce;
pub mod resample;
pub mod smc;
pub mod timestep;

use crate::gpu::KernelSig;

/// Every binding signature of the kernels in this module (each kernel
/// module's `BINDINGS`), for `tests/bindings.rs`.
pub fn bindings() -> Vec<KernelSig> {
    [
        axis_matmul::BINDINGS,
        colorize::BINDINGS,
        conv2d::BINDINGS,
        conv_coop::BINDINGS,
        conv_reflect::BINDINGS,
        mask::BINDINGS,
        resample::BINDINGS,
        smc::BINDINGS,
        elementwise::BINDINGS,
        embed::BINDINGS,
        reduce::BINDINGS,
        random::BINDINGS,
        timestep::BINDINGS,
        linear::BINDINGS,
        groupnorm::BINDINGS,
        attention::BINDINGS,
        fft::BINDINGS,
        phase::BINDINGS,
        jpeg::BINDINGS,
    ]
    .concat()
}

/// A stack of `planes` independent [h, w] images (N * C of an NCHW tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneShape {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
}

impl PlaneShape {
    pub fn numel(&self) -> usize {
        self.planes * self.h * self.w
    }
}
