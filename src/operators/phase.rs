//! `phase-retrieval`: DPS's Fourier phase retrieval, y = |fftshift(F pad(x))|
//! per channel, F the orthonormal 2-D DFT and pad a zero border of
//! floor(oversample / 8 * side) pixels on every side (DPS pads by
//! `int(oversample / 8 * resolution)`; oversample 2 takes 32 px to 48).
//!
//! Non-linear: its VJP at x is J^T v = pad^T Re(F^H ifftshift(v z / |z|)) with
//! z = fftshift(F pad(x)), taking 0 where z = 0 (the modulus' subgradient
//! there), so it is finite everywhere. F orthonormal makes F^H the inverse
//! transform with the same scaling.

use crate::gpu::Plan;
use crate::kernels::fft::{Fft2, FftOptions, Norm};
use crate::kernels::phase::Padding;
use crate::operators::{check_pair, Classical, Operator, OperatorError};
use crate::tensor::Tensor;
use crate::Gpu;

/// The orthonormal 2-D DFT of complex planes z, centred: fftshift(F z)
/// forward, F^H ifftshift(z) inverse (its adjoint).
fn centred_fft(gpu: &Gpu, z: &Tensor, inverse: bool) -> Result<Fft2, OperatorError> {
    let opts = FftOptions {
        inverse,
        norm: Norm::Ortho,
        ishift_input: inverse,
        shift_output: !inverse,
    };
    Ok(Fft2::new(gpu, z, opts)?)
}

/// DPS's default oversampling.
pub const DEFAULT_OVERSAMPLE: f64 = 2.0;

pub struct PhaseRetrieval {
    shape: [usize; 3],
    pad: Padding,
}

impl PhaseRetrieval {
    /// The operator on images of `shape` [C, H, W] at `oversample` (> 0).
    pub fn new(shape: [usize; 3], oversample: f64) -> Result<PhaseRetrieval, OperatorError> {
        let invalid = |message: String| OperatorError::Invalid {
            task: "phase-retrieval".into(),
            message,
        };
        if !(oversample.is_finite() && oversample > 0.0) {
            return Err(invalid(format!("--oversample {oversample} must be a positive number")));
        }
        if oversample > 64.0 {
            return Err(invalid(format!(
                "--oversample {oversample} is too large (at most 64: it pads by oversample / 8 x the side on every side)"
            )));
        }
        let [_, h, w] = shape;
        let pad = |side: usize| (oversample / 8.0 * side as f64).floor() as usize;
        Ok(PhaseRetrieval {
            shape,
            pad: Padding {
                h,
                w,
                pad_h: pad(h),
                pad_w: pad(w),
            },
        })
    }

    /// The padding on each side [rows, columns].
    pub fn padding(&self) -> [usize; 2] {
        [self.pad.pad_h, self.pad.pad_w]
    }

    /// z = fftshift(F pad(x)) into a fresh [N C, PH, PW, 2] tensor, and its plan.
    fn spectrum(&self, gpu: &Gpu, x: &Tensor, n: usize) -> Result<(Fft2, Plan), OperatorError> {
        let [ph, pw] = self.pad.padded();
        let planes = n * self.shape[0];
        let z = Tensor::zeros(gpu, "phase retrieval padded", &[planes, ph, pw, 2])?;
        let mut plan = Plan::new();
        plan.push(self.pad.embed(gpu, x, &z)?);
        let fft = centred_fft(gpu, &z, false)?;
        plan.extend(fft.plan.clone());
        Ok((fft, plan))
    }
}

impl Operator for PhaseRetrieval {
    fn name(&self) -> &str {
        "phase-retrieval"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        let [ph, pw] = self.pad.padded();
        [self.shape[0], ph, pw]
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(self.name(), x, self.shape, y, self.out_shape())?;
        let (fft, mut plan) = self.spectrum(gpu, x, n)?;
        plan.push(self.pad.modulus(gpu, &fft.out, y)?);
        Ok(plan)
    }
    fn vjp(&self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(self.name(), x, self.shape, out, self.shape)?;
        check_pair(self.name(), v, self.out_shape(), out, self.shape)?;
        let (fft, mut plan) = self.spectrum(gpu, x, n)?;
        let weighted = Tensor::zeros(gpu, "phase retrieval cotangent", &fft.out.shape)?;
        plan.push(self.pad.phase_weight(gpu, &fft.out, v, &weighted)?);
        let back = centred_fft(gpu, &weighted, true)?;
        plan.extend(back.plan.clone());
        plan.push(self.pad.crop_real(gpu, &back.out, out)?);
        Ok(plan)
    }
    fn classical(&self, gpu: &Gpu, ys: &[f32]) -> Result<Option<Classical>, OperatorError> {
        Ok(Some(Classical {
            x: self.hio(gpu, ys)?,
            label: format!(
                "Fienup's HIO ({HIO_ITERATIONS} iterations, beta {HIO_BETA}) then {ER_ITERATIONS} of error reduction, best of {HIO_RESTARTS} random starts, clipped to [-1, 1]"
            ),
        }))
    }
}

/// The baseline's schedule: Fienup's hybrid input-output with beta 0.9, then
/// error reduction to settle, from random starts; of the restarts each image
/// keeps the one whose magnitudes fit y best (as DPS's comparison does). The
/// constraints are the image's window (the padding is known to be 0) and the
/// range [-1, 1]; with no positivity (images are centred on 0) x and -x fit
/// y equally, so the baseline may return either, and HIO often stagnates at
/// a partial fit (10-20% of |y| on the test's pictures).
pub const HIO_RESTARTS: usize = 4;
pub const HIO_ITERATIONS: usize = 1000;
pub const ER_ITERATIONS: usize = 200;
pub const HIO_BETA: f32 = 0.9;

/// Iterations chained into one plan (one submission each).
const CHAIN: usize = 10;

impl PhaseRetrieval {
    /// One HIO (or, with keep = beta = 0, ER) iteration on g [planes, PH, PW]
    /// against the measured magnitudes y: g' = Re(F^H ishift(y z / |z|)) with
    /// z = shift(F g), then the update.
    fn iteration(&self, gpu: &Gpu, g: &Tensor, y: &Tensor, keep: f32, beta: f32) -> Result<Plan, OperatorError> {
        let [ph, pw] = self.pad.padded();
        let full = Padding {
            h: ph,
            w: pw,
            pad_h: 0,
            pad_w: 0,
        };
        let mut shape = g.shape.clone();
        shape.push(2);
        let z = Tensor::zeros(gpu, "hio plane", &shape)?;
        let mut plan = Plan::new();
        plan.push(full.embed(gpu, g, &z)?);
        let fwd = centred_fft(gpu, &z, false)?;
        plan.extend(fwd.plan.clone());
        let imposed = Tensor::zeros(gpu, "hio imposed", &shape)?;
        plan.push(full.phase_weight(gpu, &fwd.out, y, &imposed)?);
        let back = centred_fft(gpu, &imposed, true)?;
        plan.extend(back.plan.clone());
        let g_prime = Tensor::zeros(gpu, "hio g'", &g.shape)?;
        plan.push(full.crop_real(gpu, &back.out, &g_prime)?);
        plan.push(self.pad.hio_update(gpu, &g_prime, g, keep, beta)?);
        Ok(plan)
    }

    /// HIO then ER from `HIO_RESTARTS` random starts, for `ys` [N, C, PH, PW];
    /// x [N, C, H, W] clamped to [-1, 1], each image its best-fitting restart.
    pub fn hio(&self, gpu: &Gpu, ys: &[f32]) -> Result<Vec<f32>, OperatorError> {
        use rand::{Rng, SeedableRng};
        let [c, h, w] = self.shape;
        let [ph, pw] = self.pad.padded();
        let (per_in, per_out) = (c * h * w, c * ph * pw);
        if ys.is_empty() || ys.len() % per_out != 0 {
            return Err(OperatorError::Invalid {
                task: self.name().into(),
                message: format!(
                    "{} measured values are not whole samples of {:?}",
                    ys.len(),
                    self.out_shape()
                ),
            });
        }
        let n = ys.len() / per_out;
        let y = Tensor::from_slice(gpu, "hio y", &[n * c, ph, pw], ys)?;
        let g = Tensor::zeros(gpu, "hio g", &[n * c, ph, pw])?;
        let chain = |keep, beta| -> Result<Plan, OperatorError> {
            let one = self.iteration(gpu, &g, &y, keep, beta)?;
            Ok(Plan::concat(std::iter::repeat_n(&one, CHAIN)))
        };
        let (hio, er) = (chain(1.0, HIO_BETA)?, chain(0.0, 0.0)?);
        let xt = Tensor::zeros(gpu, "hio estimate", &[n, c, h, w])?;
        let at = Tensor::zeros(gpu, "hio magnitudes", &[n, c, ph, pw])?;
        let fit = self.forward(gpu, &xt, &at)?;
        let mut best = vec![0f32; n * per_in];
        let mut best_misfit = vec![f64::INFINITY; n];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0048_494f);
        let [pad_h, pad_w] = self.padding();
        for _ in 0..HIO_RESTARTS {
            let mut start = vec![0f32; n * per_out];
            for (i, v) in start.iter_mut().enumerate() {
                let (r, col) = ((i / pw) % ph, i % pw);
                if (pad_h..pad_h + h).contains(&r) && (pad_w..pad_w + w).contains(&col) {
                    *v = rng.random_range(-1.0..1.0);
                }
            }
            g.write(gpu, &start)?;
            for _ in 0..HIO_ITERATIONS.div_ceil(CHAIN) {
                hio.run(gpu)?;
            }
            for _ in 0..ER_ITERATIONS.div_ceil(CHAIN) {
                er.run(gpu)?;
            }
            let plane = g.read(gpu)?;
            let x: Vec<f32> = (0..n * per_in)
                .map(|i| {
                    let (p, r, col) = (i / (h * w), (i / w) % h, i % w);
                    plane[(p * ph + r + pad_h) * pw + col + pad_w].clamp(-1.0, 1.0)
                })
                .collect();
            xt.write(gpu, &x)?;
            fit.run(gpu)?;
            let mags = at.read(gpu)?;
            for k in 0..n {
                let range = k * per_out..(k + 1) * per_out;
                let misfit: f64 = mags[range.clone()]
                    .iter()
                    .zip(&ys[range])
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                if misfit < best_misfit[k] {
                    best_misfit[k] = misfit;
                    best[k * per_in..(k + 1) * per_in].copy_from_slice(&x[k * per_in..(k + 1) * per_in]);
                }
            }
        }
        Ok(best)
    }
}
