//! The f64 reference of GroupNorm (with the optional scale-shift and SiLU)
//! and its input gradient, shared by the kernel tests.

use tweedie::kernels::groupnorm::{GroupNormAffine, GroupNormShape};
use tweedie::tensor::Tensor;

use super::{dot, silu};

/// GroupNorm of n samples, c channels of hw pixels, in `groups` groups: one
/// test case a line.
pub fn gn_shape(n: usize, c: usize, hw: usize, groups: usize, eps: f32) -> GroupNormShape {
    GroupNormShape { n, c, hw, groups, eps }
}

/// The affine parameters as the tests pack them: gamma at `gamma_off` in
/// `weights` with beta right after it, the scale-shift (if any) from the
/// start of its tensor.
pub fn affine<'a>(
    weights: &'a wgpu::Buffer,
    gamma_off: usize,
    s: &GroupNormShape,
    scale_shift: Option<&'a Tensor>,
    silu: bool,
) -> GroupNormAffine<'a> {
    GroupNormAffine {
        weights,
        gamma_off,
        beta_off: gamma_off + s.c,
        scale_shift: scale_shift.map(|t| (t, 0)),
        silu,
    }
}

/// A GroupNorm layer: the shape, affine parameters, the optional per-sample
/// (scale, shift) vector [n, 2c] and the fused SiLU.
pub struct GnCase {
    pub s: GroupNormShape,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub ss: Option<Vec<f64>>,
    pub silu: bool,
}

/// Calls `f(n, first channel, first element, mean, 1 / std)` for every
/// (sample, group) of x; a group is `len` consecutive elements.
fn each_group(c: &GnCase, x: &[f64], mut f: impl FnMut(usize, usize, usize, f64, f64)) {
    let s = &c.s;
    let cpg = s.c / s.groups;
    let len = cpg * s.hw;
    for n in 0..s.n {
        for g in 0..s.groups {
            let base = (n * s.c + g * cpg) * s.hw;
            let xs = &x[base..base + len];
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64;
            f(n, g * cpg, base, mean, 1.0 / (var + s.eps as f64).sqrt());
        }
    }
}

/// y = GroupNorm(x) (then scale-shift and SiLU) in f64: the forward reference.
pub fn gn_f64(c: &GnCase, x: &[f64]) -> Vec<f64> {
    let s = &c.s;
    let len = s.c / s.groups * s.hw;
    let mut y = vec![0f64; x.len()];
    each_group(c, x, |n, c0, base, mean, rstd| {
        for i in 0..len {
            let ch = c0 + i / s.hw;
            let mut u = (x[base + i] - mean) * rstd * c.gamma[ch] + c.beta[ch];
            if let Some(e) = &c.ss {
                u = u * (1.0 + e[n * 2 * s.c + ch]) + e[n * 2 * s.c + s.c + ch];
            }
            y[base + i] = if c.silu { silu(u) } else { u };
        }
    });
    y
}

/// dx of [`gn_f64`] for output gradient dy.
pub fn gn_bwd_f64(c: &GnCase, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let s = &c.s;
    let len = s.c / s.groups * s.hw;
    let mut dx = vec![0f64; x.len()];
    each_group(c, x, |n, c0, base, mean, rstd| {
        let mut xhat = vec![0f64; len];
        let mut dxhat = vec![0f64; len];
        for i in 0..len {
            let ch = c0 + i / s.hw;
            xhat[i] = (x[base + i] - mean) * rstd;
            let (mut u, mut gain) = (xhat[i] * c.gamma[ch] + c.beta[ch], c.gamma[ch]);
            if let Some(e) = &c.ss {
                let s1 = 1.0 + e[n * 2 * s.c + ch];
                u = u * s1 + e[n * 2 * s.c + s.c + ch];
                gain *= s1;
            }
            let mut d = dy[base + i];
            if c.silu {
                let sg = 1.0 / (1.0 + (-u).exp());
                d *= sg * (1.0 + u * (1.0 - sg));
            }
            dxhat[i] = d * gain;
        }
        let ma = dxhat.iter().sum::<f64>() / len as f64;
        let mb = dot(&dxhat, &xhat) / len as f64;
        for i in 0..len {
            dx[base + i] = rstd * (dxhat[i] - ma - xhat[i] * mb);
        }
    });
    dx
}
