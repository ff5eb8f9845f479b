use thiserror::Error;

/// Everything that can go wrong between us and the GPU.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter found ({0}); on Debian install the software Vulkan driver with `apt-get install mesa-vulkan-drivers libvulkan1`")]
    NoAdapter(String),
    #[error("no adapter name contains {wanted:?} (TWEEDIE_ADAPTER); available: {available}")]
    AdapterNotFound { wanted: String, available: String },
    #[error("no adapter {index}: wgpu sees {count} (`tweedie info` lists them, numbered from 0)")]
    AdapterIndex { index: usize, count: usize },
    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),
    #[error("{what} needs {bytes} bytes in one buffer, over this GPU's limit of {limit} bytes ({adapter})")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        adapter: String,
    },
    #[error("{what} needs {groups} workgroups in one dimension, over the limit of {limit}")]
    TooManyGroups { what: String, groups: u64, limit: u32 },
    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },
    #[error("GPU out of memory in {context}")]
    OutOfMemory { context: String },
    #[error("GPU error: {0}")]
    Other(String),
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    #[error("shape mismatch in {what}: expected {expected:?}, got {got:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

impl GpuError {
    pub(crate) fn from_wgpu(context: &str, e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory {
                context: context.to_string(),
            },
            wgpu::Error::Validation { description, .. } => GpuError::Validation {
                context: context.to_string(),
                message: first_line(&description),
            },
            other => GpuError::Other(format!("{context}: {}", first_line(&other.to_string()))),
        }
    }
}

/// wgpu's messages span many lines; the CLI prints one.
fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
