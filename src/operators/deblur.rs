//! Blurs: depthwise correlation with a reflect boundary (torch
//! `ReflectionPad2d(k // 2)` + `conv2d`, DPS's `Blurkernel`). Separable
//! kernels (Gaussian, uniform) run as two 1-D passes and have a Kronecker SVD;
//! a general 2-D kernel (motion) runs as one pass and has no SVD (use CG).

use crate::gpu::Plan;
use crate::kernels::conv_reflect::{conv_reflect, ConvTaps};
use crate::kernels::PlaneShape;
use crate::operators::filters::{reflect_conv_matrix, trim_zero_border};
use crate::operators::separable::KroneckerSvd;
use crate::operators::{check_pair, LinearOperator, Operator, OperatorError, SvdForm};
use crate::tensor::Tensor;
use crate::Gpu;

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Refuses kernels whose reflect padding (size / 2) reaches the image side,
/// as torch's `ReflectionPad2d` does.
pub fn check_reach(task: &str, kh: usize, kw: usize, shape: [usize; 3]) -> Result<(), OperatorError> {
    let [_, h, w] = shape;
    if kh % 2 == 0 || kw % 2 == 0 {
        return Err(OperatorError::Invalid {
            task: task.into(),
            message: format!("kernel is {kh}x{kw}: sizes must be odd (the centre tap sits on the pixel)"),
        });
    }
    if kh / 2 >= h || kw / 2 >= w {
        return Err(OperatorError::Invalid {
            task: task.into(),
            message: format!(
                "a {kh}x{kw} kernel needs reflect padding ({}, {}) below the image side, but the image is {h}x{w}; use a smaller --kernel-size or a larger image",
                kh / 2,
                kw / 2
            ),
        });
    }
    Ok(())
}

/// Gaussian / uniform blur: 2-D kernel g_h g_w^T applied as a W pass then an H pass.
pub struct SeparableBlur {
    task: String,
    shape: [usize; 3],
    taps_h: ConvTaps,
    taps_w: ConvTaps,
    svd: KroneckerSvd,
}

impl SeparableBlur {
    /// `gh`, `gw`: the odd-length 1-D taps along H and W (centre tap in the middle).
    pub fn new(
        gpu: &Gpu,
        task: &str,
        shape: [usize; 3],
        gh: &[f64],
        gw: &[f64],
    ) -> Result<SeparableBlur, OperatorError> {
        check_reach(task, gh.len(), gw.len(), shape)?;
        let [c, h, w] = shape;
        let (th, kh, _, rh, _) = trim_zero_border(gh, gh.len(), 1);
        let (tw, _, kw, _, rw) = trim_zero_border(gw, 1, gw.len());
        let taps_h = ConvTaps::new(gpu, &format!("{task} taps h"), &f32s(&th), kh, 1, rh, 0)?;
        let taps_w = ConvTaps::new(gpu, &format!("{task} taps w"), &f32s(&tw), 1, kw, 0, rw)?;
        let ah = reflect_conv_matrix(gh, h);
        let aw = reflect_conv_matrix(gw, w);
        let svd = KroneckerSvd::new(gpu, task, c, (&ah, h, h), (&aw, w, w))?;
        Ok(SeparableBlur {
            task: task.into(),
            shape,
            taps_h,
            taps_w,
            svd,
        })
    }

    fn plan(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor, adjoint: bool) -> Result<Plan, OperatorError> {
        let n = check_pair(&self.task, src, self.shape, dst, self.shape)?;
        let [c, h, w] = self.shape;
        let tmp = Tensor::zeros(gpu, &format!("{} temporary", self.task), &[n, c, h, w])?;
        let (first, second) = if adjoint {
            (&self.taps_h, &self.taps_w)
        } else {
            (&self.taps_w, &self.taps_h)
        };
        let mut plan = Plan::new();
        let shape = PlaneShape { planes: n * c, h, w };
        plan.push(conv_reflect(gpu, first, src, &tmp, shape, adjoint)?);
        plan.push(conv_reflect(gpu, second, &tmp, dst, shape, adjoint)?);
        Ok(plan)
    }
}

impl Operator for SeparableBlur {
    fn name(&self) -> &str {
        &self.task
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        self.plan(gpu, x, y, false)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for SeparableBlur {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.plan(gpu, y, x, true)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        Some(&self.svd)
    }
}

/// A general 2-D blur kernel (motion): one non-separable pass over its
/// nonzero taps, no SVD.
pub struct Blur2d {
    task: String,
    shape: [usize; 3],
    taps: ConvTaps,
}

impl Blur2d {
    /// `kernel` is [kh, kw] row-major with odd sides, centre tap in the middle.
    pub fn new(
        gpu: &Gpu,
        task: &str,
        shape: [usize; 3],
        kernel: &[f64],
        kh: usize,
        kw: usize,
    ) -> Result<Blur2d, OperatorError> {
        check_reach(task, kh, kw, shape)?;
        let (t, th, tw, rh, rw) = trim_zero_border(kernel, kh, kw);
        let taps = ConvTaps::sparse(gpu, &format!("{task} taps"), &f32s(&t), th, tw, rh, rw)?;
        Ok(Blur2d {
            task: task.into(),
            shape,
            taps,
        })
    }
}

impl Operator for Blur2d {
    fn name(&self) -> &str {
        &self.task
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(&self.task, x, self.shape, y, self.shape)?;
        let [c, h, w] = self.shape;
        let mut plan = Plan::new();
        plan.push(conv_reflect(
            gpu,
            &self.taps,
            x,
            y,
            PlaneShape { planes: n * c, h, w },
            false,
        )?);
        Ok(plan)
    }
    fn linear(&self) -> Option<&dyn LinearOperator> {
        Some(self)
    }
}

impl LinearOperator for Blur2d {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(&self.task, y, self.shape, x, self.shape)?;
        let [c, h, w] = self.shape;
        let mut plan = Plan::new();
        plan.push(conv_reflect(
            gpu,
            &self.taps,
            y,
            x,
            PlaneShape { planes: n * c, h, w },
            true,
        )?);
        Ok(plan)
    }
}
