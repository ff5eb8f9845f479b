//! Diagonal operators: `denoise` (A = I) and inpainting (A = diag(mask), one
//! [H, W] mask on every channel). Their SVD is U = V = I, s = the diagonal.

use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::mask::mask_apply;
use crate::operators::{check_pair, LinearOperator, Operator, OperatorError, SvdForm};
use crate::tensor::Tensor;
use crate::Gpu;

fn copy(gpu: &Gpu, src: &Tensor, dst: &Tensor) -> Result<Plan, OperatorError> {
    let mut plan = Plan::new();
    plan.push(Elementwise::new(gpu, Op::Affine, src, dst, 1.0, 0.0)?.dispatch);
    Ok(plan)
}

/// U = V = I with the diagonal as singular values.
pub struct DiagonalSvd {
    task: String,
    shape: [usize; 3],
    singulars: Tensor,
}

impl SvdForm for DiagonalSvd {
    fn singulars(&self) -> &Tensor {
        &self.singulars
    }
    fn vt(&self, gpu: &Gpu, x: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        check_pair(&self.task, x, self.shape, s, self.shape)?;
        copy(gpu, x, s)
    }
    fn v(&self, gpu: &Gpu, s: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        check_pair(&self.task, s, self.shape, x, self.shape)?;
        copy(gpu, s, x)
    }
    fn ut(&self, gpu: &Gpu, y: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        check_pair(&self.task, y, self.shape, s, self.shape)?;
        copy(gpu, y, s)
    }
    fn u(&self, gpu: &Gpu, s: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        check_pair(&self.task, s, self.shape, y, self.shape)?;
        copy(gpu, s, y)
    }
}

/// `denoise`: y = x.
pub struct Denoise {
    svd: DiagonalSvd,
}

impl Denoise {
    pub fn new(gpu: &Gpu, shape: [usize; 3]) -> Result<Denoise, OperatorError> {
        let ones = vec![1.0f32; shape.iter().product()];
        let singulars = Tensor::from_slice(gpu, "denoise singulars", &shape, &ones)?;
        Ok(Denoise {
            svd: DiagonalSvd {
                task: "denoise".into(),
                shape,
                singulars,
            },
        })
    }
}

impl Operator for Denoise {
    fn name(&self) -> &str {
        "denoise"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.svd.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.svd.shape
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        check_pair("denoise", x, self.svd.shape, y, self.svd.shape)?;
        copy(gpu, x, y)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Denoise {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        check_pair("denoise", y, self.svd.shape, x, self.svd.shape)?;
        copy(gpu, y, x)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(&self.svd)
    }
}

/// `inpaint-random` / `inpaint-box`: y = mask (.) x, the same [H, W] mask
/// (1 kept, 0 dropped) on every channel; y keeps the image's shape.
pub struct Inpaint {
    mask: wgpu::Buffer,
    svd: DiagonalSvd,
}

impl Inpaint {
    /// `mask` is [H, W] of 0/1 values.
    pub fn new(gpu: &Gpu, task: &str, shape: [usize; 3], mask: &[f32]) -> Result<Inpaint, OperatorError> {
        let [c, h, w] = shape;
        if mask.len() != h * w {
            return Err(OperatorError::Shape {
                task: task.into(),
                what: "mask".into(),
                got: vec![mask.len()],
                expected: vec![h, w],
            });
        }
        let per_channel: Vec<f32> = (0..c).flat_map(|_| mask.iter().copied()).collect();
        let singulars = Tensor::from_slice(gpu, &format!("{task} singulars"), &shape, &per_channel)?;
        Ok(Inpaint {
            mask: gpu.upload(&format!("{task} mask"), mask)?,
            svd: DiagonalSvd {
                task: task.into(),
                shape,
                singulars,
            },
        })
    }
}

impl Operator for Inpaint {
    fn name(&self) -> &str {
        &self.svd.task
    }
    fn in_shape(&self) -> [usize; 3] {
        self.svd.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.svd.shape
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        check_pair(&self.svd.task, x, self.svd.shape, y, self.svd.shape)?;
        let [_, h, w] = self.svd.shape;
        let mut plan = Plan::new();
        plan.push(mask_apply(gpu, &self.mask, h * w, x, y)?);
        Ok(plan)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Inpaint {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        // diag(mask) is symmetric.
        self.forward(gpu, y, x)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(&self.svd)
    }
}
