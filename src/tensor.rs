//! Tensors: a GPU buffer plus a shape and an element type (f32 unless asked
//! otherwise; row-major, [N, C, H, W] for images), and the host-side twin used
//! for files and CPU references.

pub use crate::gpu::DType;
use crate::gpu::{Bindable, Gpu, GpuError};

/// f32 data on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "HostTensor shape/data length"
        );
        HostTensor { shape, data }
    }
    pub fn zeros(shape: &[usize]) -> HostTensor {
        HostTensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// A tensor on the GPU (f32 unless built with [`Tensor::zeros_typed`] or
/// [`Tensor::from_f16`]). Cloning shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Tensor {
    /// Wraps a storage buffer the caller owns as an f32 tensor.
    pub fn wrap(buffer: wgpu::Buffer, shape: &[usize]) -> Tensor {
        Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype: DType::F32,
        }
    }

    /// Wraps a storage buffer the caller owns as a tensor of `dtype` (the
    /// buffer may be larger than the tensor: kernels touch its prefix).
    pub fn wrap_typed(buffer: wgpu::Buffer, shape: &[usize], dtype: DType) -> Tensor {
        Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        }
    }

    /// A zero-filled f32 tensor; refused up front if it exceeds the adapter's limits.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<Tensor, GpuError> {
        Self::zeros_typed(gpu, label, shape, DType::F32)
    }

    /// A zero-filled tensor of element type `dtype`.
    pub fn zeros_typed(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor, GpuError> {
        let n: usize = shape.iter().product();
        let buffer = gpu.storage_buffer(label, (n * dtype.size_bytes()) as u64)?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// An f16 tensor holding `data`.
    pub fn from_f16(gpu: &Gpu, label: &str, shape: &[usize], data: &[half::f16]) -> Result<Tensor, GpuError> {
        Self::check_len(label, shape, data.len())?;
        Ok(Tensor {
            buffer: gpu.upload(label, data)?,
            shape: shape.to_vec(),
            dtype: DType::F16,
        })
    }

    fn check_len(what: &str, shape: &[usize], len: usize) -> Result<(), GpuError> {
        if shape.iter().product::<usize>() != len {
            return Err(GpuError::Shape {
                what: what.to_string(),
                expected: shape.to_vec(),
                got: vec![len],
            });
        }
        Ok(())
    }

    fn expect(&self, dtype: DType, what: &str) -> Result<(), GpuError> {
        if self.dtype != dtype {
            return Err(GpuError::Other(format!(
                "{what}: tensor holds {:?}, not {dtype:?}",
                self.dtype
            )));
        }
        Ok(())
    }

    /// Bytes of the elements (the buffer may be rounded up past this).
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype.size_bytes()
    }

    pub fn from_slice(gpu: &Gpu, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor, GpuError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(GpuError::Shape {
                what: label.to_string(),
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        let buffer = gpu.upload(label, data)?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    pub fn from_host(gpu: &Gpu, label: &str, t: &HostTensor) -> Result<Tensor, GpuError> {
        Self::from_slice(gpu, label, &t.shape, &t.data)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Overwrites the contents (queued; ordered before the next submission).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<(), GpuError> {
        self.expect(DType::F32, "tensor write")?;
        if data.len() != self.numel() {
            return Err(GpuError::Shape {
                what: "tensor write".into(),
                expected: self.shape.clone(),
                got: vec![data.len()],
            });
        }
        gpu.queue.write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Reads the whole f32 tensor back (a sync point).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        self.expect(DType::F32, "tensor read")?;
        gpu.read::<f32>(&self.buffer, 0, self.numel())
    }

    /// Reads the whole f16 tensor back (a sync point).
    pub fn read_f16(&self, gpu: &Gpu) -> Result<Vec<half::f16>, GpuError> {
        self.expect(DType::F16, "tensor read")?;
        gpu.read::<half::f16>(&self.buffer, 0, self.numel())
    }

    pub fn to_host(&self, gpu: &Gpu) -> Result<HostTensor, GpuError> {
        Ok(HostTensor {
            shape: self.shape.clone(),
            data: self.read(gpu)?,
        })
    }

    /// The same buffer seen with another shape of equal size.
    pub fn reshaped(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.numel(),
            "reshape must keep the element count"
        );
        Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        }
    }
}

/// Tensors bind with their dtype known, so typed bindings check it and
/// instantiate generic kernels for it.
impl Bindable for Tensor {
    fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    fn dtype(&self) -> Option<DType> {
        Some(self.dtype)
    }
    fn bytes(&self) -> u64 {
        self.size_bytes() as u64
    }
}
