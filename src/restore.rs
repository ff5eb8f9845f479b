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
use crate::operators::{Classical, LinearOperator, Operator};
use crate::samplers::{Measurement, Method, RunStats, Sampler, SamplerError, SamplerOptions, ScoreModel, Stat};
use crate::tensor::{HostTensor, Tensor};
use crate::Gpu;

mod stepwise;
mod texture;

use stepwise::Rows;
pub use stepwise::{Progress, State, Stepper};
pub use texture::{Panel, TextureWriter, SIGNED};

/// How a measurement is corrupted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoiseModel {
    /// y = A x + sigma n, n ~ N(0, I).
    Gaussian { sigma: f32 },
    /// DPS's shot noise at rate R: y = 2 Poisson(255 R (A x + 1) / 2) /
    /// (255 R) - 1, clamped to [-1, 1] (A x on the [-1, 1] scale, clamped to
    /// it first so the Poisson mean is not negative).
    Poisson { rate: f32 },
}

impl NoiseModel {
    /// A one-line refusal of a noise level no measurement can have.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            NoiseModel::Gaussian { sigma } if !(sigma.is_finite() && sigma >= 0.0) => {
                Err(format!("--sigma {sigma} must be a finite value >= 0"))
            }
            NoiseModel::Poisson { rate } if !(rate.is_finite() && rate > 0.0) => {
                Err(format!("--poisson-rate {rate} must be a positive number"))
            }
            _ => Ok(()),
        }
    }

    /// The sigma_y of the Gaussian likelihood the samplers use. For Poisson
    /// noise, a Gaussian approximation: Var y_i = 2 (A x + 1)_i / (255 R)
    /// runs from 0 (black) to 4 / (255 R) (white); the samplers take the
    /// mid-grey level, sigma_y^2 = 2 / (255 R) (0.089 at DPS's R = 1), one
    /// value for every pixel and image, so it does not depend on y or on how
    /// images are batched. DPS's own step is unchanged (its |y - A x0hat| has
    /// no sigma_y).
    pub fn sigma_y(&self) -> f32 {
        match *self {
            NoiseModel::Gaussian { sigma } => sigma,
            NoiseModel::Poisson { rate } => (2.0 / (255.0 * rate as f64)).sqrt() as f32,
        }
    }

    /// The noise model in a line, for reports.
    pub fn describe(&self) -> String {
        match *self {
            NoiseModel::Gaussian { sigma } => format!("gaussian, sigma_y {sigma}"),
            NoiseModel::Poisson { rate } => format!(
                "poisson, rate {rate} (DPS's: Poisson(255 R (A x + 1) / 2) / (255 R) * 2 - 1, clamped); the samplers' Gaussian sigma_y {:.4}",
                self.sigma_y()
            ),
        }
    }
}

/// y = A x corrupted by `noise` for one image x [1, C, H, W], seeded: the
/// Gaussian from the GPU RNG, the Poisson counts drawn on the host.
pub fn measure(
    gpu: &Gpu,
    op: &dyn Operator,
    x: &HostTensor,
    noise: NoiseModel,
    seed: u64,
) -> Result<Vec<f32>, SamplerError> {
    noise.validate().map_err(SamplerError::Invalid)?;
    let xt = Tensor::from_host(gpu, "clean image", x)?;
    let sigma = match noise {
        NoiseModel::Gaussian { sigma } => sigma,
        NoiseModel::Poisson { .. } => 0.0,
    };
    let y = measure_on_gpu(gpu, op, &xt, sigma, seed)?.read(gpu)?;
    Ok(match noise {
        NoiseModel::Gaussian { .. } => y,
        NoiseModel::Poisson { rate } => poisson_counts(&y, rate, seed),
    })
}

/// y = A x + sigma n, n ~ N(0, I) from the GPU RNG (seeded), for images x
/// [N, in_shape] already on the GPU: submitted, not read back (an
/// application makes the measurement a [`Stepper`] starts from this way).
pub fn measure_on_gpu(gpu: &Gpu, op: &dyn Operator, x: &Tensor, sigma: f32, seed: u64) -> Result<Tensor, SamplerError> {
    let [c, h, w] = op.out_shape();
    let n = x.shape.first().copied().unwrap_or(1);
    let yt = Tensor::zeros(gpu, "measurement", &[n, c, h, w])?;
    let mut plan: Plan = op.forward(gpu, x, &yt)?;
    if sigma > 0.0 {
        let draw = Tensor::zeros(gpu, "measurement noise", &[n, c, h, w])?;
        plan.push(Noise::new(gpu, &draw, seed, 0, 0.0, sigma)?.dispatch);
        plan.push(Elementwise::new(gpu, Op::Axpby, &draw, &yt, 1.0, 1.0)?.dispatch);
    }
    plan.run(gpu)?;
    Ok(yt)
}

/// DPS's Poisson corruption of clean values `ax` on the [-1, 1] scale.
pub fn poisson_counts(ax: &[f32], rate: f32, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Poisson};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scale = 255.0 * rate as f64;
    ax.iter()
        .map(|&v| {
            let mean = scale * (v.clamp(-1.0, 1.0) as f64 + 1.0) / 2.0;
            let count = if mean > 0.0 {
                Poisson::new(mean).map_or(mean, |p| p.sample(&mut rng))
            } else {
                0.0
            };
            ((count / scale * 2.0 - 1.0) as f32).clamp(-1.0, 1.0)
        })
        .collect()
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
    /// What the method reported, each sampler batch's in turn (CG
    /// iterations, SMC populations; see [`Stat`]).
    pub stats: Vec<Stat>,
}

impl Restoration {
    /// Mean CG iterations per solve over all batches, samples and solves.
    pub fn cg_mean_per_solve(&self) -> Option<f64> {
        let (mut it, mut n) = (0f64, 0f64);
        for s in &self.stats {
            let Stat::Cg(c) = s else { continue };
            it += c.total.iter().map(|&t| t as f64).sum::<f64>();
            n += c.total.len() as f64 * c.solves as f64;
        }
        (n > 0.0).then(|| it / n)
    }

    /// SMC: resampling events per population and the mean ESS / P over all
    /// populations and weighings (null for the other methods).
    pub fn smc_json(&self) -> serde_json::Value {
        let pops: Vec<_> = self
            .stats
            .iter()
            .filter_map(|s| match s {
                Stat::Populations(p) => Some(p),
                _ => None,
            })
            .collect();
        if pops.is_empty() {
            return serde_json::Value::Null;
        }
        let events: Vec<u32> = pops.iter().flat_map(|s| s.events.iter().copied()).collect();
        let ess: Vec<f64> = pops.iter().flat_map(|s| s.mean_ess.iter().copied()).collect();
        let distinct: Vec<u32> = pops.iter().flat_map(|s| s.distinct.iter().copied()).collect();
        let steps = pops[0].timeline(21);
        let history: Vec<Vec<f32>> = pops
            .iter()
            .flat_map(|s| s.ess_history.iter())
            .map(|h| steps.iter().map(|&i| h[i]).collect())
            .collect();
        serde_json::json!({
            "populations": events.len(),
            "resampling_events": events,
            "mean_ess_fraction": ess.iter().sum::<f64>() / ess.len().max(1) as f64,
            "distinct_at_end": distinct,
            "ess_over_time": { "steps": steps, "ess_fraction": history },
        })
    }
}

/// Progress of a run: (steps done, steps in all). Return `false` to cancel.
pub type StepCallback<'a> = dyn FnMut(usize, usize) -> bool + 'a;

/// One restoration problem: the prior, the method and its options, and (for
/// every method but DDPM) the operator and the measurement noise. Every
/// entry point is a [`Stepper`]: [`Restore::stepwise`] hands it to the
/// application; [`Restore::samples`], [`Restore::images`] and
/// [`Restore::on_gpu`] drive one to the end (x_T, K reverse steps with the
/// callback after each, `false` ending the run with
/// [`SamplerError::Cancelled`], then its check: non-finite samples fail
/// every run; samples past [`EXPLODED`] fail the GPU entry points' runs).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tweedie::operators::task::{build, Task, TaskSpec};
/// use tweedie::restore::Restore;
/// use tweedie::samplers::{Method, SamplerOptions, UnetScore};
/// let gpu = tweedie::Gpu::new()?;
/// let model = UnetScore::new(Arc::new(tweedie::unet::Unet::load_embedded(&gpu)?), 32, 32);
/// let op = build(&gpu, &TaskSpec::new(Task::Denoise), [1, 32, 32], 0)?;
/// let y = vec![0f32; 32 * 32];
/// let opts = SamplerOptions { steps: 20, ..SamplerOptions::default() };
/// let dmps = Method::from_name("dmps").expect("a registered method");
/// let r = Restore::new(&model, dmps, &opts)
///     .measured(op.as_ref(), 0.05)
///     .samples(&gpu, &y, 4, 4, &mut |_, _| true)?;
/// println!("{} samples, mean of {} pixels", r.samples.len(), r.mean.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct Restore<'a> {
    pub model: &'a dyn ScoreModel,
    pub method: Method,
    pub opts: &'a SamplerOptions,
    /// The measurement operator (None for unconditional DDPM).
    pub op: Option<&'a dyn Operator>,
    pub sigma_y: f32,
}

/// Steps done and steps in all, across the sampler batches of one call.
struct Ticks {
    done: usize,
    total: usize,
    /// Sampler batches the call runs, each of the same steps.
    batches: usize,
}

impl<'a> Restore<'a> {
    /// Unconditional until [`Restore::measured`] gives it an operator.
    pub fn new(model: &'a dyn ScoreModel, method: Method, opts: &'a SamplerOptions) -> Restore<'a> {
        Restore {
            model,
            method,
            opts,
            op: None,
            sigma_y: 0.0,
        }
    }

    /// Conditions on y = A x + n, n ~ N(0, sigma_y^2 I).
    pub fn measured(self, op: &'a dyn Operator, sigma_y: f32) -> Restore<'a> {
        Restore {
            op: Some(op),
            sigma_y,
            ..self
        }
    }

    /// Plans a sampler for `n` samples with options `opts` on measurement `y`.
    fn plan(&self, gpu: &Gpu, y: &[f32], n: usize, opts: &SamplerOptions) -> Result<Sampler, SamplerError> {
        let meas = self.measurement_op().map(|op| Measurement {
            op,
            y,
            sigma_y: self.sigma_y,
        });
        Sampler::new(gpu, self.method, self.model, meas, n, opts)
    }

    /// The operator the method conditions on (None for an unconditional
    /// method, or without one).
    fn measurement_op(&self) -> Option<&'a dyn Operator> {
        self.op.filter(|_| self.method.takes_measurement())
    }

    /// The one loop of every entry point but [`Restore::stepwise`]: a started
    /// [`Stepper`] driven one step at a time to the end, the callback after
    /// each, then its finite check.
    fn drive(
        gpu: &Gpu,
        s: &mut Stepper,
        ticks: &mut Ticks,
        on_step: &mut StepCallback<'_>,
    ) -> Result<(), SamplerError> {
        loop {
            let p = s.step(gpu, 1)?;
            ticks.done += 1;
            if !on_step(ticks.done, ticks.total) {
                return Err(SamplerError::Cancelled);
            }
            if p.finished() {
                return s.wait(gpu);
            }
        }
    }

    /// A host entry point's run: the sampler planned on `y` for `n` rows,
    /// driven to the end; returns its samples and what the method reported.
    fn run_host(
        &self,
        gpu: &Gpu,
        (y, n, opts): (&[f32], usize, &SamplerOptions),
        names: Rows,
        ticks: &mut Ticks,
        on_step: &mut StepCallback<'_>,
    ) -> Result<(Vec<f32>, RunStats), SamplerError> {
        let mut s = Stepper::host(gpu, self.plan(gpu, y, n, opts)?, n, names)?;
        ticks.total = ticks.batches * s.progress().total;
        s.restart(gpu)?;
        Self::drive(gpu, &mut s, ticks, on_step)?;
        Ok((s.x_t().read(gpu)?, s.sampler().stats(gpu)?))
    }

    /// Draws `samples` posterior samples of one image in batches of `batch`:
    /// one planned sampler per batch (each its own seed, reproducible per
    /// (seed, batch index)), K reverse steps each, one submission per step.
    pub fn samples(
        &self,
        gpu: &Gpu,
        y: &[f32],
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
        let per: usize = self.model.in_shape().iter().product();
        let nb = samples.div_ceil(batch);
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(samples);
        let mut stats: Vec<Stat> = Vec::new();
        let mut ticks = Ticks {
            done: 0,
            total: 0,
            batches: nb,
        };
        let mut steps = 0;
        for b in 0..nb {
            let n = batch.min(samples - b * batch);
            let o = SamplerOptions {
                seed: self
                    .opts
                    .seed
                    .wrapping_add((b as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
                ..self.opts.clone()
            };
            let (x, run) = self.run_host(gpu, (y, n, &o), Rows::Samples { first: b * batch }, &mut ticks, on_step)?;
            steps = run.steps;
            stats.extend(run.method);
            out.extend(x.chunks(per).take(n).map(|c| c.to_vec()));
        }
        let (mean, std) = mean_std(&out);
        Ok(Restoration {
            samples: out,
            mean,
            std,
            steps,
            batches: nb,
            seconds: start.elapsed().as_secs_f64(),
            stats,
        })
    }

    /// N images restored at once, one sample each: `ys` holds one
    /// measurement per image [N, out_shape]. Returns the N samples [N,
    /// in_shape] flattened.
    pub fn images(&self, gpu: &Gpu, ys: &[f32], on_step: &mut StepCallback<'_>) -> Result<Vec<f32>, SamplerError> {
        let op = self
            .op
            .ok_or_else(|| SamplerError::Invalid("restoring images needs an operator".into()))?;
        let m_per: usize = op.out_shape().iter().product();
        if m_per == 0 || ys.is_empty() || ys.len() % m_per != 0 {
            return Err(SamplerError::Invalid(format!(
                "{} measurement values do not split into images of {m_per}",
                ys.len()
            )));
        }
        let mut ticks = Ticks {
            done: 0,
            total: 0,
            batches: 1,
        };
        let n = ys.len() / m_per;
        let (x, _) = self.run_host(gpu, (ys, n, self.opts), Rows::Images, &mut ticks, on_step)?;
        Ok(x)
    }

    /// The operator of a GPU restoration, which conditions on the caller's measurement.
    fn gpu_op(&self) -> Result<&'a dyn Operator, SamplerError> {
        self.measurement_op().ok_or_else(|| {
            SamplerError::Invalid(
                "restoring on the GPU needs a method that takes a measurement (any but ddpm) and an operator".into(),
            )
        })
    }

    /// Plans a step-wise restoration of `images` measurements, `samples`
    /// posterior samples each ([`Stepper`]): the application drives it a few
    /// steps at a time and re-runs it on new measurements without planning
    /// again. Seeded as [`Restore::samples`]' first batch (one image) and
    /// [`Restore::images`] (one sample each), with whose results it agrees.
    pub fn stepwise(&self, gpu: &Gpu, images: usize, samples: usize) -> Result<Stepper, SamplerError> {
        let op = self.gpu_op()?;
        if images == 0 || samples == 0 {
            return Err(SamplerError::Invalid(
                "the number of images and of samples must be at least 1".into(),
            ));
        }
        let m_per: usize = op.out_shape().iter().product();
        let rows = images * samples;
        // The host-side y only sizes the plan; the caller's tensor replaces it on the GPU.
        let s = self.plan(gpu, &vec![0f32; rows * m_per], rows, self.opts)?;
        Stepper::new(gpu, s, images, samples, op.out_shape())
    }

    /// Restoration for an embedding application, entirely on the GPU: `y`
    /// [N, out_shape] (one measurement per image) and `out` [N, in_shape] are
    /// tensors on buffers the caller owns (`Tensor::wrap(buffer, shape)`):
    /// y's buffer needs COPY_SRC usage, out's COPY_DST; both are checked
    /// (shape, size, usage) before any work. A [`Stepper`] driven one step
    /// at a time to the end, the callback after each; its finite check
    /// refuses a run that went non-finite or past [`EXPLODED`] before the
    /// result is copied into `out`.
    pub fn on_gpu(
        &self,
        gpu: &Gpu,
        y: &Tensor,
        out: &Tensor,
        on_step: &mut StepCallback<'_>,
    ) -> Result<(), SamplerError> {
        let op = self.gpu_op()?;
        let n = check_caller_tensor("out", out, self.model.in_shape(), wgpu::BufferUsages::COPY_DST, None)?;
        check_caller_tensor("y", y, op.out_shape(), wgpu::BufferUsages::COPY_SRC, Some(n))?;
        let mut s = self.stepwise(gpu, n, 1)?;
        s.start(gpu, y)?;
        let mut ticks = Ticks {
            done: 0,
            total: s.progress().total,
            batches: 1,
        };
        Self::drive(gpu, &mut s, &mut ticks, on_step)?;
        gpu.copy_buffer(&s.x_t().buffer, &out.buffer, out.size_bytes() as u64)?;
        Ok(())
    }
}

/// A restored image's values past this magnitude mean the run diverged
/// (images live in [-1, 1]; DMPS's uncapped lambda at 10 steps reached 132).
pub const EXPLODED: f32 = 10.0;

/// Checks a caller's tensor before any work: shaped [N, shape...] (N =
/// `n` when given), its buffer large enough and holding `usage`. Returns N.
fn check_caller_tensor(
    what: &str,
    t: &Tensor,
    shape: [usize; 3],
    usage: wgpu::BufferUsages,
    n: Option<usize>,
) -> Result<usize, SamplerError> {
    let want = |n: &str| format!("[{n}, {}, {}, {}]", shape[0], shape[1], shape[2]);
    let rows = t.shape.first().copied().unwrap_or(0);
    if t.shape.len() != 4 || t.shape[1..] != shape || rows == 0 || n.is_some_and(|n| n != rows) {
        let n = n.map_or("N".to_string(), |n| n.to_string());
        return Err(SamplerError::Invalid(format!(
            "{what} has shape {:?}, expected {}",
            t.shape,
            want(&n)
        )));
    }
    if t.buffer.size() < t.size_bytes() as u64 {
        return Err(SamplerError::Invalid(format!(
            "{what}'s buffer holds {} bytes, its shape {:?} needs {}",
            t.buffer.size(),
            t.shape,
            t.size_bytes()
        )));
    }
    if !t.buffer.usage().contains(usage) {
        return Err(SamplerError::Invalid(format!(
            "{what}'s buffer needs usage {usage:?} (it has {:?})",
            t.buffer.usage()
        )));
    }
    Ok(rows)
}

/// The message for a sample `what` ("image 3") that went non-finite
/// (`reached` None) or reached a value past [`EXPLODED`].
fn diverged(what: &str, reached: Option<f32>) -> String {
    match reached {
        None => format!("sampling diverged: {what} has a non-finite value (try a smaller --zeta or more --steps)"),
        Some(v) => format!(
            "sampling diverged: {what} reached {v} (images live in [-1, 1]; try a smaller step size or more --steps)"
        ),
    }
}

/// ||y - A(x)|| for each sample of `xs` [N, in_shape] against `ys`: one
/// measurement shared by all, or one per sample [N, out_shape]. `--best-of K`
/// keeps the sample with the smallest (as DPS does for phase retrieval).
pub fn misfits(gpu: &Gpu, op: &dyn Operator, xs: &[f32], ys: &[f32]) -> Result<Vec<f64>, SamplerError> {
    let [c, h, w] = op.in_shape();
    let [oc, oh, ow] = op.out_shape();
    let (per, m_per) = (c * h * w, oc * oh * ow);
    let n = xs.len() / per;
    if n == 0 || xs.len() != n * per || (ys.len() != m_per && ys.len() != n * m_per) {
        return Err(SamplerError::Invalid(format!(
            "misfits: {} sample values and {} measured values do not fit {} ({:?} -> {:?})",
            xs.len(),
            ys.len(),
            op.name(),
            op.in_shape(),
            op.out_shape()
        )));
    }
    let xt = Tensor::from_slice(gpu, "misfit x", &[n, c, h, w], xs)?;
    let at = Tensor::zeros(gpu, "misfit A(x)", &[n, oc, oh, ow])?;
    op.forward(gpu, &xt, &at)?.run(gpu)?;
    let ax = at.read(gpu)?;
    Ok(ax
        .chunks(m_per)
        .enumerate()
        .map(|(k, a)| {
            let y = if ys.len() == m_per {
                ys
            } else {
                &ys[k * m_per..(k + 1) * m_per]
            };
            a.iter()
                .zip(y)
                .map(|(a, y)| ((y - a) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect())
}

/// The index of the smallest value (the first of equals).
pub fn argmin(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |(bi, bv), (i, &x)| if x < bv { (i, x) } else { (bi, bv) },
        )
        .0
}

/// What [`baseline`] is for a linear operator.
pub const PSEUDO_INVERSE: &str = "pseudo-inverse A^+ y (A^T y without an SVD form), clipped to [-1, 1]";

/// The plain baseline a restoration is set beside, for `ys` [N, out_shape]:
/// A^+ y ([`pseudo_inverse`]) for a linear operator, the operator's own
/// classical estimate otherwise (phase retrieval: HIO).
pub fn baseline(gpu: &Gpu, op: &dyn Operator, ys: &[f32]) -> Result<Classical, SamplerError> {
    if let Some(lin) = op.linear() {
        return Ok(Classical {
            x: pseudo_inverse(gpu, lin, ys)?,
            label: PSEUDO_INVERSE.into(),
        });
    }
    op.classical(gpu, ys)?
        .ok_or_else(|| SamplerError::Invalid(format!("{} has no classical estimate to compare against", op.name())))
}

/// The plain baseline: the pseudo-inverse A^+ y = V S^+ U^T y through the SVD
/// form (zero-filled inpainting, the least-squares upsampling for SR), or
/// A^T y for operators without one. `ys` is [N, out_shape].
pub fn pseudo_inverse(gpu: &Gpu, op: &dyn LinearOperator, ys: &[f32]) -> Result<Vec<f32>, SamplerError> {
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
