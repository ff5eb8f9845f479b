//! Tensors: a GPU buffer plus a shape (f32, row-major, [N, C, H, W] for
//! images), and the host-side twin used for files and CPU references.

use crate::gpu::{Gpu, GpuError};

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

/// An f32 tensor on the GPU. Cloning shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
}

impl Tensor {
    /// A zero-filled tensor; refused up front if it exceeds the adapter's limits.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<Tensor, GpuError> {
        let n: usize = shape.iter().product();
        let buffer = gpu.storage_buffer(label, n as u64 * 4)?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
        })
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

    /// Reads the whole tensor back (a sync point).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        gpu.read::<f32>(&self.buffer, 0, self.numel())
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
        }
    }
}
