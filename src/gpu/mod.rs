//! GPU core: the context (adapter, device, queue), the pipeline cache, buffers,
//! dispatch records and error capture. Everything above this module talks to
//! wgpu through these few types.

pub mod bindings;
mod context;
mod dispatch;
mod dtype;
mod error;
mod hardware;
mod shaders;
mod timing;

pub use bindings::{Access, Bindable, Bindings, Elem, KernelSig, Slot};
pub use context::{AdapterReport, Allocated, Gpu};
pub use dispatch::{dispatch_groups, Dispatch, Plan};
pub use dtype::DType;
pub use error::GpuError;
pub use hardware::{multiprocessors, peak_for, Peak, PEAKS};
pub use shaders::*;
pub use timing::{gpu_times, time_plan};

/// Workgroup size of the 1-D elementwise kernels (mirrored by `WG` in the WGSL).
pub const WG1D: u32 = 256;

/// Workgroup size of the small-grid kernels that run one thread per sample
/// or per group (CG's per-sample updates, GroupNorm's statistics merge, the
/// GMM logits); mirrored by `WG_SMALL` in the WGSL.
pub const WG_SMALL: u32 = 64;

/// A 1-D grid of `n` threads in workgroups of [`WG_SMALL`] (small `n` only:
/// no spill into y).
pub fn small_groups(n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(WG_SMALL), 1, 1]
}
