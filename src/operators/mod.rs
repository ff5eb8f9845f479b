//! Measurements y = A(x): the forward map and its vector-Jacobian product
//! J_A(x)^T v ([`Operator`]), which is all DPS and SMC need; linear ones
//! ([`LinearOperator`]) add the exact adjoint `A^T` and, where one exists
//! cheaply, an SVD form A = U diag(s) V^T, which DMPS, C-DPS and the CG
//! solves ask for.
//!
//! Images are [N, C, H, W] f32 in [-1, 1]; an operator maps each sample of
//! shape `in_shape` = [C, H, W] to one of `out_shape` = [C', H', W'].
//! Methods return [`Plan`]s: built once (pipelines, bind groups, temporaries),
//! replayed every sampler step.

use thiserror::Error;

use crate::gpu::{GpuError, Plan};
use crate::tensor::Tensor;
use crate::Gpu;

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{task}: {message}")]
    Invalid { task: String, message: String },
    #[error("{task}: tensor {what} has shape {got:?}, expected {expected:?}")]
    Shape {
        task: String,
        what: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
}

/// A measurement y = A(x), possibly non-linear.
pub trait Operator: Send + Sync {
    /// The task name as the CLI spells it (`deblur-gaussian`, ...).
    fn name(&self) -> &str;
    /// Per-sample input shape [C, H, W].
    fn in_shape(&self) -> [usize; 3];
    /// Per-sample output shape [C', H', W'].
    fn out_shape(&self) -> [usize; 3];
    /// Plans y = A(x) for a batch: x [N, in_shape], y [N, out_shape].
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError>;
    /// Plans out = J_A(x)^T v for a batch: x [N, in_shape], v [N, out_shape],
    /// out [N, in_shape]. Planned once; x is read when the plan is replayed,
    /// so a sampler can linearise at each step's x0hat. The default is the
    /// adjoint of [`Operator::linear`] (J_A = A for a linear map); a
    /// non-linear operator must override it.
    fn vjp(&self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        let _ = x;
        match self.linear() {
            Some(lin) => lin.adjoint(gpu, v, out),
            None => Err(OperatorError::Invalid {
                task: self.name().into(),
                message: "a non-linear measurement must implement its own vjp".into(),
            }),
        }
    }
    /// The operator as a linear one, when it is (`Some(self)` for every
    /// [`LinearOperator`]): methods that need A^T or an SVD form ask here.
    fn linear(&self) -> Option<&dyn LinearOperator> {
        None
    }
    /// For a non-linear measurement, a linear map whose rows have the
    /// Jacobian's row norms at every x (|A x|: A), so that SMC's twist can
    /// take the measurement's gain from it; None (the default) where the gains
    /// depend on x and no such map exists.
    fn gain_map(&self) -> Option<&dyn LinearOperator> {
        None
    }
    /// A classical estimate of x from y alone (no prior), the baseline
    /// reports set beside a restoration, for `ys` [N, out_shape]; None where
    /// the operator has none of its own (a linear one's is A^+ y, which
    /// callers take from its SVD form).
    fn classical(&self, gpu: &Gpu, ys: &[f32]) -> Result<Option<Classical>, OperatorError> {
        let _ = (gpu, ys);
        Ok(None)
    }
}

/// A classical estimate: x [N, in_shape] and what it is, in a line.
pub struct Classical {
    pub x: Vec<f32>,
    pub label: String,
}

/// A linear measurement y = A x with an exact adjoint.
pub trait LinearOperator: Operator {
    /// Plans x = A^T y for a batch (exact adjoint of `forward`).
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError>;
    /// The SVD form, where the operator has a cheap one.
    fn svd(&self) -> Option<&dyn SvdForm> {
        None
    }
}

/// A = U diag(s) V^T in "thin" form with the spectral space shaped like the
/// output: V^T maps [N, in] -> [N, out] (spectral coefficients), `singulars`
/// holds one value per output element, U maps spectral -> [N, out]. Rows of V^T
/// beyond the rank carry s = 0, so U diag(s) V^T = A holds exactly.
pub trait SvdForm: Send + Sync {
    /// Singular values, one per output element of one sample [C', H', W'].
    fn singulars(&self) -> &Tensor;
    fn vt(&self, gpu: &Gpu, x: &Tensor, s: &Tensor) -> Result<Plan, OperatorError>;
    fn v(&self, gpu: &Gpu, s: &Tensor, x: &Tensor) -> Result<Plan, OperatorError>;
    fn ut(&self, gpu: &Gpu, y: &Tensor, s: &Tensor) -> Result<Plan, OperatorError>;
    fn u(&self, gpu: &Gpu, s: &Tensor, y: &Tensor) -> Result<Plan, OperatorError>;
}

/// The orthonormal-row half of an SVD form as an operator of its own:
/// forward V^T (input -> spectral coefficients, shaped like the output),
/// adjoint V. C-DPS's spectral chain measures x with it.
pub struct SpectralRows<'a> {
    op: &'a dyn LinearOperator,
    svd: &'a dyn SvdForm,
    name: String,
}

impl<'a> SpectralRows<'a> {
    /// None when `op` has no SVD form.
    pub fn new(op: &'a dyn LinearOperator) -> Option<SpectralRows<'a>> {
        let svd = op.svd()?;
        Some(SpectralRows {
            op,
            svd,
            name: format!("{} (V^T)", op.name()),
        })
    }
}

impl Operator for SpectralRows<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_shape(&self) -> [usize; 3] {
        self.op.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.op.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.svd.vt(gpu, x, y)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for SpectralRows<'_> {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.svd.v(gpu, y, x)
    }
}

/// Every binding signature of the kernels this module launches itself
/// (`Dispatch::typed`), for `tests/bindings.rs`.
pub fn bindings() -> Vec<crate::gpu::KernelSig> {
    dense::BINDINGS.to_vec()
}

/// Checks that `t` is [N, shape...] and returns N.
pub fn batch_of(task: &str, what: &str, t: &Tensor, shape: [usize; 3]) -> Result<usize, OperatorError> {
    let per: usize = shape.iter().product();
    if per == 0 || t.numel() % per != 0 || t.numel() == 0 {
        let mut expected = vec![0];
        expected.extend_from_slice(&shape);
        return Err(OperatorError::Shape {
            task: task.into(),
            what: what.into(),
            got: t.shape.clone(),
            expected,
        });
    }
    Ok(t.numel() / per)
}

/// Checks that `src` is [N, src_shape...] and `dst` holds N samples of
/// `dst_shape`; returns N.
pub fn check_pair(
    task: &str,
    src: &Tensor,
    src_shape: [usize; 3],
    dst: &Tensor,
    dst_shape: [usize; 3],
) -> Result<usize, OperatorError> {
    let n = batch_of(task, "input", src, src_shape)?;
    if dst.numel() != n * dst_shape.iter().product::<usize>() {
        let mut expected = vec![n];
        expected.extend_from_slice(&dst_shape);
        return Err(OperatorError::Shape {
            task: task.into(),
            what: "output".into(),
            got: dst.shape.clone(),
            expected,
        });
    }
    Ok(n)
}

pub mod colorize;
pub mod deblur;
pub mod dense;
pub mod diagonal;
pub mod filters;
pub mod gain;
pub mod jpeg;
pub mod magnitude;
pub mod phase;
pub mod separable;
pub mod sr;
pub mod task;
