//! y = |A x| elementwise for a linear A: the real-valued phase retrieval of
//! the mixture problems with `abs` = [1] (the signs of A x are lost). Its VJP
//! is A^T (sign(A x) v), 0 where A x = 0 (the subgradient there), so it stays
//! finite.

use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::operators::{batch_of, LinearOperator, Operator, OperatorError};
use crate::tensor::Tensor;
use crate::Gpu;

pub struct Magnitude {
    inner: Box<dyn LinearOperator>,
    name: String,
}

impl Magnitude {
    pub fn new(inner: Box<dyn LinearOperator>) -> Magnitude {
        let name = format!("abs-{}", inner.name());
        Magnitude { inner, name }
    }

    /// A x into a fresh [N, out_shape] tensor, and its plan.
    fn ax(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, Plan), OperatorError> {
        let n = batch_of(&self.name, "x", x, self.in_shape())?;
        let [c, h, w] = self.out_shape();
        let ax = Tensor::zeros(gpu, "A x", &[n, c, h, w])?;
        let plan = self.inner.forward(gpu, x, &ax)?;
        Ok((ax, plan))
    }
}

impl Operator for Magnitude {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_shape(&self) -> [usize; 3] {
        self.inner.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.inner.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let (ax, mut plan) = self.ax(gpu, x)?;
        plan.push(Elementwise::new(gpu, Op::Abs, &ax, y, 0.0, 0.0)?.dispatch);
        Ok(plan)
    }
    /// |J| = |diag(sign(A x)) A| row by row: A's gains wherever A x has no 0.
    fn gain_map(&self) -> Option<&dyn LinearOperator> {
        Some(self.inner.as_ref())
    }
    fn vjp(&self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        let (ax, mut plan) = self.ax(gpu, x)?;
        let signed = Tensor::zeros(gpu, "sign(A x) v", &ax.shape)?;
        plan.push(Elementwise::new(gpu, Op::Affine, v, &signed, 1.0, 0.0)?.dispatch);
        plan.push(Elementwise::new(gpu, Op::SignMul, &ax, &signed, 0.0, 0.0)?.dispatch);
        plan.extend(self.inner.adjoint(gpu, &signed, out)?);
        Ok(plan)
    }
}
