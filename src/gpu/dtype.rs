//! The element type of GPU data. It lives in the GPU core because shader
//! instantiation and the pipeline cache are keyed by it; tensors and kernels
//! above use it from here (also re-exported as `tweedie::tensor::DType`).

/// Element type of a GPU tensor. Kernels written against the WGSL alias `T`
/// (see [`Shader::typed`](crate::gpu::Shader::typed)) run on either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DType {
    #[default]
    F32,
    /// Needs the adapter's `shader-f16` feature.
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    /// The WGSL scalar type name.
    pub const fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}
