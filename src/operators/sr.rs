//! `sr`: downscale by an integer factor, separable: y = M_h X M_w^T per
//! channel, with M the antialiased bicubic matrix of MATLAB `imresize` / DPS's
//! `Resizer` (output ceil(n / f)) or the block average (`avg_pool2d`, output
//! floor(n / f)). The SVD is the Kronecker product of the thin 1-D SVDs, so the
//! spectral space has the output's shape.

use crate::gpu::Plan;
use crate::kernels::axis_matmul::{AxisFactor, AxisMatrix};
use crate::operators::filters::{block_matrix, cubic, resize_matrix};
use crate::operators::separable::{separable_apply, KroneckerSvd};
use crate::operators::{LinearOperator, Operator, OperatorError, SvdForm};
use crate::tensor::Tensor;
use crate::Gpu;

/// How `sr` downsamples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrFilter {
    Bicubic,
    Block,
}

impl SrFilter {
    /// Every filter, in the order the command line lists them.
    pub const ALL: [SrFilter; 2] = [SrFilter::Bicubic, SrFilter::Block];

    /// The name `--filter` takes.
    pub fn name(self) -> &'static str {
        match self {
            SrFilter::Bicubic => "bicubic",
            SrFilter::Block => "block",
        }
    }

    /// What the filter is, in a line.
    pub fn help(self) -> &'static str {
        match self {
            SrFilter::Bicubic => "Antialiased bicubic (a = -0.5), as MATLAB `imresize` and DPS",
            SrFilter::Block => "Mean over f x f blocks",
        }
    }
}

/// The 1-D matrix [n_out, n] of `filter` at `factor`.
pub fn sr_matrix(filter: SrFilter, n: usize, factor: usize) -> (usize, Vec<f64>) {
    match filter {
        SrFilter::Bicubic => resize_matrix(n, factor, cubic, 4.0),
        SrFilter::Block => block_matrix(n, factor),
    }
}

pub struct Sr {
    shape: [usize; 3],
    out: [usize; 3],
    mh: AxisMatrix,
    mw: AxisMatrix,
    svd: KroneckerSvd,
}

impl Sr {
    pub fn new(gpu: &Gpu, shape: [usize; 3], factor: usize, filter: SrFilter) -> Result<Sr, OperatorError> {
        let [c, h, w] = shape;
        if factor == 0 || factor > h || factor > w {
            return Err(OperatorError::Invalid {
                task: "sr".into(),
                message: format!("--factor {factor} must be between 1 and the image side ({h}x{w})"),
            });
        }
        let (ho, ah) = sr_matrix(filter, h, factor);
        let (wo, aw) = sr_matrix(filter, w, factor);
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mh = AxisMatrix::new(gpu, "sr M_h", &f32s(&ah), ho, h)?;
        let mw = AxisMatrix::new(gpu, "sr M_w", &f32s(&aw), wo, w)?;
        let svd = KroneckerSvd::new(gpu, "sr", c, (&ah, ho, h), (&aw, wo, w))?;
        Ok(Sr {
            shape,
            out: [c, ho, wo],
            mh,
            mw,
            svd,
        })
    }
}

impl Operator for Sr {
    fn name(&self) -> &str {
        "sr"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.out
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        separable_apply(
            gpu,
            "sr",
            [AxisFactor::new(&self.mh, false), AxisFactor::new(&self.mw, false)],
            x,
            self.shape,
            y,
        )
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Sr {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        separable_apply(
            gpu,
            "sr",
            [AxisFactor::new(&self.mh, true), AxisFactor::new(&self.mw, true)],
            y,
            self.out,
            x,
        )
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(&self.svd)
    }
}
