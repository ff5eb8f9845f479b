//! The largest singular value of a linear operator, ||A||_2: read off the
//! SVD form where there is one, else by power iteration on A^T A. DPS's
//! default step size is capped by it (`samplers::dps::ZetaRule`): one guided
//! step moves x by up to zeta ||A|| / a_t.

use rand::{Rng, SeedableRng};

use super::{LinearOperator, OperatorError};
use crate::tensor::Tensor;
use crate::Gpu;

/// Power iterations at most; each is one forward and one adjoint.
pub const MAX_ITERS: usize = 200;
/// Stop when the estimate of ||A||^2 moves less than this, relatively.
pub const TOL: f64 = 1e-6;

/// ||A||_2 of `op`: the largest of the SVD form's singular values, or
/// [`power_gain`]'s estimate where the operator has no SVD form. 0 for the
/// zero operator.
pub fn largest_gain(gpu: &Gpu, op: &dyn LinearOperator) -> Result<f32, OperatorError> {
    if let Some(svd) = op.svd() {
        let s = svd.singulars().read(gpu)?;
        return Ok(s.iter().fold(0f32, |m, v| m.max(v.abs())));
    }
    power_gain(gpu, op)
}

/// ||A||_2 by power iteration on A^T A (one sample, from a fixed
/// pseudo-random start so runs agree), until the estimate of ||A||^2 moves
/// less than [`TOL`] relatively or [`MAX_ITERS`] pass. It approaches from
/// below.
pub fn power_gain(gpu: &Gpu, op: &dyn LinearOperator) -> Result<f32, OperatorError> {
    let d: usize = op.in_shape().iter().product();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6761_696e);
    let mut v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
    normalise(&mut v);
    let [c, h, w] = op.in_shape();
    let [c2, h2, w2] = op.out_shape();
    let x = Tensor::from_slice(gpu, "power iterate", &[1, c, h, w], &v)?;
    let y = Tensor::zeros(gpu, "A x", &[1, c2, h2, w2])?;
    let back = Tensor::zeros(gpu, "A^T A x", &[1, c, h, w])?;
    let mut plan = op.forward(gpu, &x, &y)?;
    plan.extend(op.adjoint(gpu, &y, &back)?);
    let mut last = 0f64;
    for _ in 0..MAX_ITERS {
        plan.run(gpu)?;
        let mut next = back.read(gpu)?;
        // v has unit norm, so <v, A^T A v> = |A v|^2 estimates ||A||^2 from below.
        let rayleigh: f64 = v.iter().zip(&next).map(|(a, b)| *a as f64 * *b as f64).sum();
        if normalise(&mut next) == 0.0 {
            return Ok(0.0);
        }
        let done = (rayleigh - last).abs() <= TOL * rayleigh.abs();
        last = rayleigh;
        if done {
            break;
        }
        v = next;
        x.write(gpu, &v)?;
    }
    Ok(last.max(0.0).sqrt() as f32)
}

/// Scales `v` to unit norm; returns the norm it had.
fn normalise(v: &mut [f32]) -> f64 {
    let n = v.iter().map(|a| *a as f64 * *a as f64).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|a| *a = (*a as f64 / n) as f32);
    }
    n
}
