//! GPU core: the context (adapter, device, queue), the pipeline cache, buffers,
//! dispatch records and error capture. Everything above this module talks to
//! wgpu through these few types.

mod context;
mod dispatch;
mod error;
mod shaders;
mod timing;

pub use context::{AdapterReport, Gpu};
pub use dispatch::{dispatch_groups, Dispatch, Plan};
pub use error::GpuError;
pub use shaders::*;
pub use timing::time_plan;

/// Workgroup size of the 1-D elementwise kernels (mirrored by `WG` in the WGSL).
pub const WG1D: u32 = 256;
