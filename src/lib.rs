//! tweedie: diffusion posterior sampling on the GPU, with every kernel
//! hand-written in WGSL on wgpu.
//!
//! Data flows `gpu` -> `tensor` -> `kernels` -> `operators` -> samplers.

pub mod cli;
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod operators;
pub mod tensor;

pub use gpu::{Gpu, GpuError};
pub use tensor::{HostTensor, Tensor};
pub mod restore;
pub mod samplers;
pub mod schedule;
pub mod unet;
