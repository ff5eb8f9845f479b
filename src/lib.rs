//! tweedie: diffusion posterior sampling on the GPU, with every kernel
//! hand-written in WGSL on wgpu.
//!
//! Data flows `gpu` -> `tensor` -> `kernels` -> `operators` -> `samplers`;
//! [`restore`] is the one call an application needs. The modules form one
//! stack, bottom first: `embedded`, `metrics`, `schedule`, `process`, `gpu`,
//! `tensor`, `io`, `kernels`, `operators`, `unet`, `samplers`, `restore`,
//! `figures`, `bench`, `cli`; code names only modules below its own
//! (`tests/layering.rs` checks every `crate::` path).
//!
//! # Embedding in an application that owns its wgpu device
//!
//! The engine runs on the caller's `wgpu::Device` and `Queue`, reads the
//! measurement from a buffer the caller owns and writes the restoration into
//! another, with no CPU round trip; a callback sees every step and can cancel.
//! A render loop drives [`restore::Stepper`] instead ([`restore::Restore::stepwise`]:
//! planned once, a few steps a frame without waiting for the GPU, the
//! estimate drawn into the application's texture by [`restore::TextureWriter`];
//! `examples/viewer.rs`). Values are planar f32 N C H W on [-1, 1]; the usage
//! flags, features and limits the engine needs are in `docs/extending.md`.
//!
//! ```
//! use std::sync::Arc;
//! use tweedie::operators::task::{build, Task, TaskSpec};
//! use tweedie::restore::Restore;
//! use tweedie::samplers::{Method, SamplerOptions, UnetScore};
//! use tweedie::unet::Unet;
//! use tweedie::{Gpu, Tensor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The application's own device (here made on the spot).
//! let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
//! let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
//! let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))?;
//! let gpu = Gpu::from_device(device.clone(), queue, Some(adapter.get_info()));
//!
//! // The built-in 32x32 grayscale prior (`Unet::load(&gpu, dir)` reads any other)
//! // and a x2 super-resolution operator.
//! let model = UnetScore::new(Arc::new(Unet::load_embedded(&gpu)?), 32, 32);
//! let op = build(&gpu, &TaskSpec { factor: Some(2), ..TaskSpec::new(Task::Sr) }, [1, 32, 32], 0)?;
//!
//! // Buffers the application owns: a 16x16 measurement in, a 32x32 image out.
//! let buffer = |bytes: u64| device.create_buffer(&wgpu::BufferDescriptor {
//!     label: Some("app buffer"),
//!     size: bytes,
//!     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
//!     mapped_at_creation: false,
//! });
//! let y = Tensor::wrap(buffer(16 * 16 * 4), &[1, 1, 16, 16]);
//! let out = Tensor::wrap(buffer(32 * 32 * 4), &[1, 1, 32, 32]);
//!
//! let opts = SamplerOptions { steps: 2, ..SamplerOptions::default() };
//! let dmps = Method::from_name("dmps").expect("a registered method");
//! let job = Restore::new(&model, dmps, &opts).measured(op.as_ref(), 0.05);
//! job.on_gpu(&gpu, &y, &out, &mut |done, total| {
//!     eprintln!("step {done}/{total}");
//!     true // false cancels: Err(SamplerError::Cancelled)
//! })?;
//! // `out` now holds the restoration, still on the GPU.
//! # Ok(())
//! # }
//! ```

pub mod bench;
pub mod cli;
pub mod embedded;
pub mod figures;
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod operators;
pub mod process;
pub mod tensor;

pub use gpu::{Gpu, GpuError};
pub use tensor::{HostTensor, Tensor};
pub mod restore;
pub mod samplers;
pub mod schedule;
pub mod unet;
