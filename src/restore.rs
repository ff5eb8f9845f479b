//! Restoration as a library call: measurement -> K posterior samples, their
//! mean and per-pixel standard deviation. The CLI (`restore`, `demo`, `eval`)
//! and embedding applications go through here.

use std::path::Path;
use std::time::Instant;

use crate::gpu::Plan;
use crate::io::{write_tensors, IoError};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::random::Noise;
use crate::operators::task::ResolvedTask;
use crate::operators::Operator;
use crate::samplers::{CgStats, Measurement, Method, Sampler, SamplerError, SamplerOptions, ScoreModel};
use crate::tensor::{HostTensor, Tensor};
use crate::Gpu;

/// y = A x + sigma n for one image x [1, C, H, W] (noise from the GPU RNG, seeded).
pub fn measure(gpu: &Gpu, op: &dyn Operator, x: &HostTensor, sigma: f32, seed: u64) -> Result<Vec<f32>, SamplerError> {
    let [c, h, w] = op.out_shape();
    let xt = Tensor::from_host(gpu, "clean image", x)?;
    let yt = Tensor::zeros(gpu, "measurement", &[1, c, h, w])?;
    let mut plan: Plan = op.forward(gpu, &xt, &yt)?;
    let noise = Tensor::zeros(gpu, "measurement noise", &[1, c, h, w])?;
    if sigma > 0.0 {
        plan.push(Noise::new(gpu, &noise, seed, 0, 0.0, sigma)?.dispatch);
        plan.push(Elementwise::new(gpu, Op::Axpby, &noise, &yt, 1.0, 1.0)?.dispatch);
    }
    plan.run(gpu)?;
    Ok(yt.read(gpu)?)
}

/// Writes a measurement file that rebuilds the same operator later: `y`,
/// `sigma_y`, `in_shape` and what pins A down (`mask`, `kernel`, `matrix`).
pub fn save_measurement(
    path: &Path,
    y: &[f32],
    sigma: f32,
    resolved: &ResolvedTask,
    out_shape: [usize; 3],
) -> Result<(), IoError> {
    let [c, h, w] = out_shape;
    let y_host = HostTensor::new(vec![1, c, h, w], y.to_vec());
    let sigma = HostTensor::new(vec![1], vec![sigma]);
    let shape = HostTensor::new(vec![3], resolved.in_shape.iter().map(|&v| v as f32).collect());
    let extra = resolved.tensors();
    let mut tensors: Vec<(&str, &HostTensor)> = vec![("y", &y_host), ("sigma_y", &sigma), ("in_shape", &shape)];
    tensors.extend(extra.iter().map(|(k, t)| (k.as_str(), t)));
    write_tensors(path, &tensors)
}

/// What one restoration produced.
#[derive(Clone, Debug)]
pub struct Restoration {
    /// K samples, each [C, H, W] flattened.
    pub samples: Vec<Vec<f32>>,
    /// Per-pixel posterior mean and standard deviation over the samples.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Reverse steps per sample batch.
    pub steps: usize,
    /// Sampler batches run (K / batch, rounded up).
    pub batches: usize,
    pub seconds: f64,
    /// CG iteration counts, one entry per sampler batch (DMPS with CG, C-DPS).
    pub cg: Vec<CgStats>,
}

impl Restoration {
    /// Mean CG iterations per solve over all batches, samples and solves.
    pub fn cg_mean_per_solve(&self) -> Option<f64> {
        let (mut it, mut n) = (0f64, 0f64);
        for c in &self.cg {
            it += c.total.iter().map(|&t| t as f64).sum::<f64>();
            n += c.total.len() as f64 * c.solves as f64;
        }
        (n > 0.0).then(|| it / n)
    }
}

/// Progress of a run: (steps done, steps in all). Return `false` to cancel.
pub type StepCallback<'a> = dyn FnMut(usize, usize) -> bool + 'a;

/// Draws `samples` posterior samples in batches of `batch`: one planned
/// sampler per batch, K reverse steps each, one submission per step. The
/// callback sees every step and can cancel (then `Err(Cancelled)`).
#[allow(clippy::too_many_arguments)]
pub fn restore(
    gpu: &Gpu,
    model: &dyn ScoreModel,
    op: Option<&dyn Operator>,
    y: &[f32],
    sigma_y: f32,
    method: Method,
    opts: &SamplerOptions,
    samples: usize,
    batch: usize,
    on_step: &mut StepCallback<'_>,
) -> Result<Restoration, SamplerError> {
    if samples == 0 || batch == 0 {
        return Err(SamplerError::Invalid(
            "the number of samples and the batch size must be at least 1".into(),
        ));
    }
    let start = Instant::now();
    let per: usize = model.in_shape().iter().product();
    let nb = samples.div_ceil(batch);
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(samples);
    let mut cg: Vec<CgStats> = Vec::new();
    let mut done = 0;
    let mut steps = 0;
    for b in 0..nb {
        let n = batch.min(samples - b * batch);
        // Each batch its own seed: independent draws, reproducible per (seed, batch index).
        let o = SamplerOptions {
            seed: opts.seed.wrapping_add((b as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            ..opts.clone()
        };
        let meas = op.map(|op| Measurement { op, y, sigma_y });
        let s = Sampler::new(gpu, method, model, meas, n, &o)?;
        steps = s.steps();
        let total = nb * steps;
        s.init(gpu)?;
        for i in (0..steps).rev() {
            s.step(gpu, i)?;
            done += 1;
            if !on_step(done, total) {
                return Err(SamplerError::Invalid("cancelled".into()));
            }
        }
        let x = s.x().read(gpu)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(SamplerError::Invalid(format!(
                "sampling diverged: sample {} has a non-finite value (try a smaller --zeta or more --steps)",
                b * batch + i / per
            )));
        }
        cg.extend(s.stats(gpu)?.cg);
        out.extend(x.chunks(per).map(|c| c.to_vec()));
    }
    let (mean, std) = mean_std(&out);
    Ok(Restoration {
        samples: out,
        mean,
        std,
        steps,
        batches: nb,
        seconds: start.elapsed().as_secs_f64(),
        cg,
    })
}

/// N images restored at once, one sample each: `ys` holds one measurement
/// per image [N, out_shape]. Returns the N samples [N, in_shape] flattened.
#[allow(clippy::too_many_arguments)]
pub fn restore_batch(
    gpu: &Gpu,
    model: &dyn ScoreModel,
    op: &dyn Operator,
    ys: &[f32],
    sigma_y: f32,
    method: Method,
    opts: &SamplerOptions,
    on_step: &mut StepCallback<'_>,
) -> Result<Vec<f32>, SamplerError> {
    let m_per: usize = op.out_shape().iter().product();
    if m_per == 0 || ys.is_empty() || ys.len() % m_per != 0 {
        return Err(SamplerError::Invalid(format!(
            "{} measurement values do not split into images of {m_per}",
            ys.len()
        )));
    }
    let n = ys.len() / m_per;
    let meas = (method != Method::Ddpm).then_some(Measurement { op, y: ys, sigma_y });
    let s = Sampler::new(gpu, method, model, meas, n, opts)?;
    let steps = s.steps();
    s.init(gpu)?;
    for (done, i) in (0..steps).rev().enumerate() {
        s.step(gpu, i)?;
        if !on_step(done + 1, steps) {
            return Err(SamplerError::Invalid("cancelled".into()));
        }
    }
    let x = s.x().read(gpu)?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        let per = x.len() / n;
        return Err(SamplerError::Invalid(format!(
            "sampling diverged: image {} has a non-finite value (try a smaller --zeta or more --steps)",
            i / per
        )));
    }
    Ok(x)
}

/// The plain baseline: the pseudo-inverse A^+ y = V S^+ U^T y through the SVD
/// form (zero-filled inpainting, the least-squares upsampling for SR), or
/// A^T y for operators without one. `ys` is [N, out_shape].
pub fn pseudo_inverse(gpu: &Gpu, op: &dyn Operator, ys: &[f32]) -> Result<Vec<f32>, SamplerError> {
    let [oc, oh, ow] = op.out_shape();
    let [c, h, w] = op.in_shape();
    let n = ys.len() / (oc * oh * ow);
    let yt = Tensor::from_slice(gpu, "baseline y", &[n, oc, oh, ow], ys)?;
    let xt = Tensor::zeros(gpu, "baseline x", &[n, c, h, w])?;
    match op.svd() {
        Some(svd) => {
            let st = Tensor::zeros(gpu, "baseline spectrum", &[n, oc, oh, ow])?;
            svd.ut(gpu, &yt, &st)?.run(gpu)?;
            let sing = svd.singulars().read(gpu)?;
            let smax = sing.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut spec = st.read(gpu)?;
            for (i, v) in spec.iter_mut().enumerate() {
                let s = sing[i % sing.len()];
                *v = if s.abs() > 1e-6 * smax { *v / s } else { 0.0 };
            }
            st.write(gpu, &spec)?;
            svd.v(gpu, &st, &xt)?.run(gpu)?;
        }
        None => op.adjoint(gpu, &yt, &xt)?.run(gpu)?,
    }
    Ok(xt.read(gpu)?.into_iter().map(|v| v.clamp(-1.0, 1.0)).collect())
}

/// Per-pixel mean and (population) standard deviation over samples.
pub fn mean_std(samples: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let k = samples.len() as f64;
    let per = samples.first().map_or(0, |s| s.len());
    let mut mean = vec![0f32; per];
    let mut std = vec![0f32; per];
    for i in 0..per {
        let m = samples.iter().map(|s| s[i] as f64).sum::<f64>() / k;
        let v = samples.iter().map(|s| (s[i] as f64 - m).powi(2)).sum::<f64>() / k;
        mean[i] = m as f32;
        std[i] = v.sqrt() as f32;
    }
    (mean, std)
}

/// Restoration for an embedding application, entirely on the GPU: `y` [N,
/// out_shape] (one measurement per image) and `out` [N, in_shape] are tensors
/// on buffers the caller owns (`Tensor { buffer, shape }` wraps any storage
/// buffer with COPY_SRC/STORAGE usage). Nothing is read back; the callback
/// sees each step and can cancel.
#[allow(clippy::too_many_arguments)]
pub fn restore_gpu(
    gpu: &Gpu,
    model: &dyn ScoreModel,
    op: &dyn Operator,
    y: &Tensor,
    sigma_y: f32,
    method: Method,
    opts: &SamplerOptions,
    out: &Tensor,
    on_step: &mut StepCallback<'_>,
) -> Result<(), SamplerError> {
    let per: usize = model.in_shape().iter().product();
    let m_per: usize = op.out_shape().iter().product();
    if per == 0 || out.numel() % per != 0 || out.numel() == 0 {
        return Err(SamplerError::Invalid(format!(
            "out has {} values, not a whole number of images of {per}",
            out.numel()
        )));
    }
    let n = out.numel() / per;
    if y.numel() != n * m_per {
        return Err(SamplerError::Invalid(format!(
            "y has {} values, expected {n} measurements of {m_per}",
            y.numel()
        )));
    }
    if method == Method::Ddpm {
        return Err(SamplerError::Invalid(
            "restore_gpu needs a posterior method (dps, dmps, cdps)".into(),
        ));
    }
    // The host-side y only sizes the plan; the caller's tensor replaces it on the GPU.
    let placeholder = vec![0f32; n * m_per];
    let s = Sampler::new(
        gpu,
        method,
        model,
        Some(Measurement {
            op,
            y: &placeholder,
            sigma_y,
        }),
        n,
        opts,
    )?;
    s.load_measurement(gpu, y)?;
    let steps = s.steps();
    s.init(gpu)?;
    for (done, i) in (0..steps).rev().enumerate() {
        s.step(gpu, i)?;
        if !on_step(done + 1, steps) {
            return Err(SamplerError::Invalid("cancelled".into()));
        }
    }
    let copy = Elementwise::new(gpu, Op::Affine, s.x(), out, 1.0, 0.0)?;
    Plan {
        steps: vec![copy.dispatch],
    }
    .run(gpu)?;
    Ok(())
}
