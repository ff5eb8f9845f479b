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

/// A blur with a reflect boundary: its taps, and the Kronecker SVD a
/// separable kernel has.
pub struct Blur {
    task: String,
    shape: [usize; 3],
    taps: BlurTaps,
}

enum BlurTaps {
    /// Gaussian / uniform: 2-D kernel g_h g_w^T applied as a W pass then an H pass.
    Separable {
        h: ConvTaps,
        w: ConvTaps,
        svd: Box<KroneckerSvd>,
    },
    /// A general 2-D kernel (motion): one non-separable pass over its
    /// nonzero taps, no SVD.
    Full(ConvTaps),
}

impl Blur {
    /// `gh`, `gw`: the odd-length 1-D taps along H and W (centre tap in the middle).
    pub fn separable(gpu: &Gpu, task: &str, shape: [usize; 3], gh: &[f64], gw: &[f64]) -> Result<Blur, OperatorError> {
        check_reach(task, gh.len(), gw.len(), shape)?;
        let [c, h, w] = shape;
        let (th, kh, _, rh, _) = trim_zero_border(gh, gh.len(), 1);
        let (tw, _, kw, _, rw) = trim_zero_border(gw, 1, gw.len());
        let taps_h = ConvTaps::new(gpu, &format!("{task} taps h"), &f32s(&th), kh, 1, rh, 0)?;
        let taps_w = ConvTaps::new(gpu, &format!("{task} taps w"), &f32s(&tw), 1, kw, 0, rw)?;
        let ah = reflect_conv_matrix(gh, h);
        let aw = reflect_conv_matrix(gw, w);
        let svd = KroneckerSvd::new(gpu, task, c, (&ah, h, h), (&aw, w, w))?;
        Ok(Blur {
            task: task.into(),
            shape,
            taps: BlurTaps::Separable {
                h: taps_h,
                w: taps_w,
                svd: Box::new(svd),
            },
        })
    }

    /// `kernel` is [kh, kw] row-major with odd sides, centre tap in the middle.
    pub fn full(
        gpu: &Gpu,
        task: &str,
        shape: [usize; 3],
        kernel: &[f64],
        kh: usize,
        kw: usize,
    ) -> Result<Blur, OperatorError> {
        check_reach(task, kh, kw, shape)?;
        let (t, th, tw, rh, rw) = trim_zero_border(kernel, kh, kw);
        let taps = ConvTaps::sparse(gpu, &format!("{task} taps"), &f32s(&t), th, tw, rh, rw)?;
        Ok(Blur {
            task: task.into(),
            shape,
            taps: BlurTaps::Full(taps),
        })
    }

    /// The passes from `src` to `dst` (the adjoint's correlate with the
    /// flipped taps, in the opposite order for a separable kernel).
    fn plan(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor, adjoint: bool) -> Result<Plan, OperatorError> {
        let n = check_pair(&self.task, src, self.shape, dst, self.shape)?;
        let [c, h, w] = self.shape;
        let shape = PlaneShape { planes: n * c, h, w };
        let mut plan = Plan::new();
        match &self.taps {
            BlurTaps::Separable {
                h: taps_h, w: taps_w, ..
            } => {
                let tmp = Tensor::zeros(gpu, &format!("{} temporary", self.task), &[n, c, h, w])?;
                let (first, second) = if adjoint { (taps_h, taps_w) } else { (taps_w, taps_h) };
                plan.push(conv_reflect(gpu, first, src, &tmp, shape, adjoint)?);
                plan.push(conv_reflect(gpu, second, &tmp, dst, shape, adjoint)?);
            }
            BlurTaps::Full(taps) => plan.push(conv_reflect(gpu, taps, src, dst, shape, adjoint)?),
        }
        Ok(plan)
    }
}

impl Operator for Blur {
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

impl LinearOperator for Blur {
    fn adjoint(&self, gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Plan, OperatorError> {
        self.plan(gpu, y, x, true)
    }
    fn svd(&self) -> Option<&dyn SvdForm> {
        match &self.taps {
            BlurTaps::Separable { svd, .. } => Some(svd.as_ref()),
            BlurTaps::Full(_) => None,
        }
    }
}
