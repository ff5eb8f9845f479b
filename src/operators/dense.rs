//! `dense`: y = A x with a given matrix A [m, d] (tests and the Gaussian-mixture
//! checks), its adjoint A^T, and an SVD form computed once on the CPU (faer, f64).
//!
//! Per sample the input is [C, H, W] with C*H*W = d, the output [m, 1, 1]. The
//! spectral space is shaped like the output: V^T is stored as [m, d] whose rows
//! beyond rank r = min(m, d) are zero (singular value 0), so U diag(s) V^T = A
//! also when m > d.

use std::path::Path;

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, GpuError, KernelSig, Plan, DENSE, WG1D};
use crate::io::TensorFile;
use crate::operators::{batch_of, Operator, OperatorError, SvdForm};
use crate::tensor::{HostTensor, Tensor};
use crate::Gpu;

const TASK: &str = "dense";

/// Mirrors `Params` in shaders/dense.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DenseParams {
    pub rows: u32,
    pub cols: u32,
    pub batch: u32,
    pub _pad: u32,
}

bindings! {
    /// `dense_fwd` (M x) and `dense_adj` (M^T y): `mat` holds M ([`GpuMatrix`]).
    pub struct DenseApply for DENSE: ["dense_fwd", "dense_adj"] {
        p: uniform,
        mat: read f32,
        src: read f32,
        dst: read_write f32,
    }
}

/// The binding signatures of the kernels this module launches (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[DenseApply::SIG];

/// A matrix on the GPU, applied to batches as M x (`dense_fwd`) or M^T y (`dense_adj`).
struct GpuMatrix {
    buffer: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl GpuMatrix {
    fn new(gpu: &Gpu, label: &str, rows: usize, cols: usize, data: &[f32]) -> Result<GpuMatrix, GpuError> {
        Ok(GpuMatrix {
            buffer: gpu.upload(label, data)?,
            rows,
            cols,
        })
    }

    /// dst [N, rows] = M src [N, cols].
    fn apply(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor, transpose: bool) -> Result<Plan, OperatorError> {
        let (n_in, n_out) = if transpose {
            (self.rows, self.cols)
        } else {
            (self.cols, self.rows)
        };
        let batch = batch_of(TASK, "input", src, [n_in, 1, 1])?;
        if dst.numel() != batch * n_out {
            return Err(OperatorError::Shape {
                task: TASK.into(),
                what: "output".into(),
                got: dst.shape.clone(),
                expected: vec![batch, n_out, 1, 1],
            });
        }
        let params = gpu.uniform(
            "dense params",
            &DenseParams {
                rows: self.rows as u32,
                cols: self.cols as u32,
                batch: batch as u32,
                _pad: 0,
            },
        );
        let entry = if transpose { "dense_adj" } else { "dense_fwd" };
        let mut plan = Plan::new();
        plan.push(Dispatch::typed(
            gpu,
            entry,
            &[],
            &DenseApply {
                p: &params,
                mat: &self.buffer,
                src,
                dst,
            },
            dispatch_groups(batch * n_out, WG1D),
        )?);
        Ok(plan)
    }
}

/// y = A x for a dense A [m, d].
pub struct Dense {
    in_shape: [usize; 3],
    m: usize,
    d: usize,
    a: GpuMatrix,
    svd: DenseSvd,
    host: HostTensor,
}

/// The SVD form of [`Dense`]: V^T [m, d] (zero rows past the rank), U [m, m],
/// singular values [m] (zero-padded).
pub struct DenseSvd {
    vt: GpuMatrix,
    ut_mat: GpuMatrix,
    singulars: Tensor,
    host_singulars: Vec<f32>,
}

impl Dense {
    /// Takes A [m, d]; `in_shape` [C, H, W] must have C*H*W = d. Refuses
    /// non-finite entries. The SVD is computed here, once.
    pub fn new(gpu: &Gpu, matrix: &HostTensor, in_shape: [usize; 3]) -> Result<Dense, OperatorError> {
        let invalid = |message: String| OperatorError::Invalid {
            task: TASK.into(),
            message,
        };
        if matrix.shape.len() != 2 || matrix.shape[0] == 0 || matrix.shape[1] == 0 {
            return Err(invalid(format!(
                "the matrix must be 2-D [m, d], got shape {:?}",
                matrix.shape
            )));
        }
        let (m, d) = (matrix.shape[0], matrix.shape[1]);
        if in_shape.iter().product::<usize>() != d {
            return Err(invalid(format!(
                "input shape {in_shape:?} has {} elements but the matrix has d = {d} columns",
                in_shape.iter().product::<usize>()
            )));
        }
        if let Some(i) = matrix.data.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!("matrix entry ({}, {}) is not finite", i / d, i % d)));
        }
        let a = GpuMatrix::new(gpu, "dense A", m, d, &matrix.data)?;
        let svd = DenseSvd::compute(gpu, m, d, &matrix.data)?;
        Ok(Dense {
            in_shape,
            m,
            d,
            a,
            svd,
            host: matrix.clone(),
        })
    }

    /// Reads A from tensor `key` of a safetensors file.
    pub fn from_file(
        gpu: &Gpu,
        path: impl AsRef<Path>,
        key: &str,
        in_shape: [usize; 3],
    ) -> Result<Dense, OperatorError> {
        let file = TensorFile::open(path.as_ref()).map_err(|e| OperatorError::Invalid {
            task: TASK.into(),
            message: e.to_string(),
        })?;
        let matrix = file.get(key).map_err(|e| OperatorError::Invalid {
            task: TASK.into(),
            message: e.to_string(),
        })?;
        Self::new(gpu, &matrix, in_shape)
    }

    /// The matrix as given (host copy, for CPU references).
    pub fn matrix(&self) -> &HostTensor {
        &self.host
    }

    pub fn m(&self) -> usize {
        self.m
    }

    pub fn d(&self) -> usize {
        self.d
    }
}

impl DenseSvd {
    fn compute(gpu: &Gpu, m: usize, d: usize, a: &[f32]) -> Result<DenseSvd, OperatorError> {
        let mat = faer::Mat::<f64>::from_fn(m, d, |i, j| a[i * d + j] as f64);
        let svd = mat.svd().map_err(|e| OperatorError::Invalid {
            task: TASK.into(),
            message: format!("SVD did not converge: {e:?}"),
        })?;
        let (u, v, s) = (svd.U(), svd.V(), svd.S().column_vector());
        let r = m.min(d);
        let mut vt = vec![0f32; m * d];
        for i in 0..r {
            for j in 0..d {
                vt[i * d + j] = v[(j, i)] as f32;
            }
        }
        // U^T stored row-major as [m, m]: row i is column i of U.
        let mut ut = vec![0f32; m * m];
        for i in 0..m {
            for k in 0..m {
                ut[i * m + k] = u[(k, i)] as f32;
            }
        }
        let mut sing = vec![0f32; m];
        for i in 0..r {
            sing[i] = s[i] as f32;
        }
        Ok(DenseSvd {
            vt: GpuMatrix::new(gpu, "dense V^T", m, d, &vt)?,
            ut_mat: GpuMatrix::new(gpu, "dense U^T", m, m, &ut)?,
            singulars: Tensor::from_slice(gpu, "dense singulars", &[m, 1, 1], &sing)?,
            host_singulars: sing,
        })
    }

    /// Singular values on the host (zero-padded to m).
    pub fn host_singulars(&self) -> &[f32] {
        &self.host_singulars
    }
}

impl Operator for Dense {
    fn name(&self) -> &str {
        TASK
    }
    fn in_shape(&self) -> [usize; 3] {
        self.in_shape
    }
    fn out_shape(&self) -> [usize; 3] {
        [self.m, 1, 1]
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        batch_of(TASK, "x", x, self.in_shape)?;
        self.a.apply(gpu, &x.reshaped(&[x.numel()]), y, false)
    }
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        batch_of(TASK, "y", y, [self.m, 1, 1])?;
        self.a.apply(gpu, y, x, true)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(&self.svd)
    }
}

impl SvdForm for DenseSvd {
    fn singulars(&self) -> &Tensor {
        &self.singulars
    }
    fn vt(&self, gpu: &Gpu, x: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        self.vt.apply(gpu, x, s, false)
    }
    fn v(&self, gpu: &Gpu, s: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.vt.apply(gpu, s, x, true)
    }
    fn ut(&self, gpu: &Gpu, y: &Tensor, s: &Tensor) -> Result<Plan, OperatorError> {
        self.ut_mat.apply(gpu, y, s, false)
    }
    fn u(&self, gpu: &Gpu, s: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.ut_mat.apply(gpu, s, y, true)
    }
}
