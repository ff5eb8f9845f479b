//! `colorize`: gray = mean of the C colour channels, [C, H, W] -> [1, H, W].
//! Per pixel A = 1^T / C has one singular value 1/sqrt(C) with right vector
//! 1/sqrt(C) and left vector 1, so U = I and V^T = sum / sqrt(C).

use crate::gpu::Plan;
use crate::kernels::colorize::{gray, ColorShape};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::operators::{check_pair, LinearOperator, Operator, OperatorError, SvdForm};
use crate::tensor::Tensor;
use crate::Gpu;

pub struct Colorize {
    shape: [usize; 3],
    singulars: Tensor,
}

impl Colorize {
    pub fn new(gpu: &Gpu, shape: [usize; 3]) -> Result<Colorize, OperatorError> {
        if shape[0] != 3 {
            return Err(OperatorError::Invalid {
                task: "colorize".into(),
                message: format!("needs a 3-channel (RGB) image, got {} channels", shape[0]),
            });
        }
        let s = vec![1.0 / (shape[0] as f32).sqrt(); shape[1] * shape[2]];
        let singulars = Tensor::from_slice(gpu, "colorize singulars", &[1, shape[1], shape[2]], &s)?;
        Ok(Colorize { shape, singulars })
    }

    fn gray_plan(
        &self,
        gpu: &Gpu,
        src: &Tensor,
        dst: &Tensor,
        scale: f32,
        transpose: bool,
    ) -> Result<Plan, OperatorError> {
        let [c, h, w] = self.shape;
        let n = if transpose {
            check_pair("colorize", src, self.out_shape(), dst, self.shape)?
        } else {
            check_pair("colorize", src, self.shape, dst, self.out_shape())?
        };
        let mut plan = Plan::new();
        let shape = ColorShape {
            batch: n,
            channels: c,
            hw: h * w,
        };
        plan.push(gray(gpu, src, dst, shape, scale, transpose)?);
        Ok(plan)
    }
}

impl Operator for Colorize {
    fn name(&self) -> &str {
        "colorize"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        [1, self.shape[1], self.shape[2]]
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.gray_plan(gpu, x, y, 1.0 / self.shape[0] as f32, false)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Colorize {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.gray_plan(gpu, y, x, 1.0 / self.shape[0] as f32, true)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(self)
    }
}

impl SvdForm for Colorize {
    fn singulars(&self) -> &Tensor {
        &self.singulars
    }
    fn vt(&self, gpu: &Gpu, x: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        self.gray_plan(gpu, x, s, 1.0 / (self.shape[0] as f32).sqrt(), false)
    }
    fn v(&self, gpu: &Gpu, s: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.gray_plan(gpu, s, x, 1.0 / (self.shape[0] as f32).sqrt(), true)
    }
    fn ut(&self, gpu: &Gpu, y: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        let out = self.out_shape();
        check_pair("colorize", y, out, s, out)?;
        let mut plan = Plan::new();
        plan.push(Elementwise::new(gpu, Op::Affine, y, s, 1.0, 0.0)?.dispatch);
        Ok(plan)
    }
    fn u(&self, gpu: &Gpu, s: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.ut(gpu, s, y)
    }
}
