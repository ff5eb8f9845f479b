//! The score-model interface every sampler goes through, and the exact
//! Gaussian-mixture prior that stands in for the U-Net in the exactness checks.
//!
//! A model predicts the noise eps(x_t, t) (and, with learned sigma, the
//! variance interpolation v) for a batch, and offers the vector-Jacobian
//! product of eps with respect to x (DPS). Both are [`Plan`]s over buffers the
//! caller owns, built once and replayed every step; the per-sample timesteps
//! live in a GPU buffer (original, un-respaced indices as f32) that the
//! sampler rewrites before each submission.

use thiserror::Error;

use super::kernels::with_leading_slots;
use crate::gpu::{dispatch_groups, small_groups, Bindings, Dispatch, GpuError, KernelSig, Plan, GMM, WG1D};
use crate::operators::OperatorError;
use crate::process::{Kind, Prediction, Process};
use crate::tensor::{DType, Tensor};
use crate::Gpu;

with_leading_slots! {
    for GMM, GmmSlots { p: uniform, prior: read f32, abar: read f32, tsteps: read f32, x: read f32, logits: read_write f32 }

    /// `gmm_logits`: each component's log-responsibility at (x_t, t).
    GmmLogits: "gmm_logits" {}

    /// `gmm_eps`: the exact noise prediction from the logits.
    GmmEps: "gmm_eps" {
        eps: read_write f32,
    }

    /// `gmm_vjp_dots`: per-component dots of the cotangent, the VJP's first pass.
    GmmVjpDots: "gmm_vjp_dots" {
        cot: read f32,
        dots: read_write f32,
    }

    /// `gmm_vjp`: J_eps(x)^T cot from the dots.
    GmmVjp: "gmm_vjp" {
        cot: read f32,
        dots_in: read f32,
        dx: read_write f32,
    }
}

/// The binding signatures of `shaders/gmm.wgsl` (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[GmmLogits::SIG, GmmEps::SIG, GmmVjpDots::SIG, GmmVjp::SIG];

/// Bytes of `n` f32 values.
fn f32_bytes(n: usize) -> u64 {
    (n * DType::F32.size_bytes()) as u64
}

#[derive(Debug, Error)]
pub enum ScoreError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{model}: {what} has shape {got:?}, expected {expected:?}")]
    Shape {
        model: String,
        what: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{model}: {message}")]
    Invalid { model: String, message: String },
}

impl From<ScoreError> for OperatorError {
    fn from(e: ScoreError) -> Self {
        OperatorError::Invalid {
            task: "score model".into(),
            message: e.to_string(),
        }
    }
}

/// What [`ScoreModel::plan_eps`] reads and writes: x, eps, v are
/// [N, C, H, W], t is [N] (f32 original timesteps), v is given when the model
/// learns sigma. `vjp`: a VJP will be planned after this forward (a model
/// that saves state for it keeps it).
#[derive(Clone, Copy)]
pub struct EpsArgs<'a> {
    pub x: &'a Tensor,
    pub t: &'a Tensor,
    pub eps: &'a Tensor,
    pub v: Option<&'a Tensor>,
    pub vjp: bool,
}

/// A denoising model out_theta(x_t, t): the noise eps, or x0, v or a flow's
/// velocity as [`ScoreModel::process`] says.
pub trait ScoreModel: Send + Sync {
    /// Short name for messages.
    fn name(&self) -> &str;
    /// Per-sample input shape [C, H, W].
    fn in_shape(&self) -> [usize; 3];
    /// Whether the model also outputs the variance interpolation v
    /// (guided-diffusion's learned-range sigma).
    fn learned_sigma(&self) -> bool;
    /// The process the model was trained on and what it predicts (its output
    /// is called `eps` below whatever it is; the samplers map it through
    /// [`Process::coefficients`]). Default: DDPM, eps-prediction.
    fn process(&self) -> Process {
        Process::default()
    }
    /// Plans eps = eps_theta(x, t) (and v when `learned_sigma`) on the
    /// buffers of `args` ([`EpsArgs`]).
    fn plan_eps(&self, gpu: &Gpu, args: &EpsArgs<'_>) -> Result<Plan, ScoreError>;
    /// Plans dx = (d eps / d x)^T cotangent for the same x and t. A model may
    /// reuse state its `plan_eps` plan left behind for the same x: callers
    /// replay this plan after that plan, in the same or a later submission.
    fn plan_vjp(&self, gpu: &Gpu, x: &Tensor, t: &Tensor, cotangent: &Tensor, dx: &Tensor) -> Result<Plan, ScoreError>;
    /// The variance of x0 per coordinate under the prior, averaged over the
    /// coordinates, where the model knows it (a mixture prior does); the
    /// spectral SMC's potentials assume it. Default: unknown.
    fn data_variance(&self) -> Option<f64> {
        None
    }
}

/// Mirrors `Params` in shaders/gmm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmmParams {
    pub batch: u32,
    pub d: u32,
    pub k: u32,
    pub steps: u32,
    /// 1: flow process (velocity output, t in [0, 1]); 0: VP (eps, t a timestep index)
    pub flow: u32,
    pub _pad: [u32; 3],
}

/// A Gaussian mixture sum_k w_k N(mu_k, diag(Sigma_k)) as a diffusion or flow
/// prior: its noise prediction (VP) or velocity (flow) is exact at every t,
/// computed on the GPU.
pub struct GmmPrior {
    d: usize,
    k: usize,
    steps: usize,
    process: Process,
    /// [log w (K) | means (K*d) | vars (K*d)]
    prior: wgpu::Buffer,
    /// abar_t of the base (un-respaced) schedule, indexed by timestep.
    abar: wgpu::Buffer,
    /// The mixture's variance per coordinate, averaged over the coordinates.
    variance: f64,
}

impl GmmPrior {
    /// `weights` [K] (positive; normalised here), `means` and `vars` [K*d]
    /// (vars positive), under `process`: a VP diffusion with eps-prediction
    /// (the timesteps index its training schedule) or a flow with velocity
    /// prediction (data at t = 0, network time t).
    pub fn new(
        gpu: &Gpu,
        weights: &[f32],
        means: &[f32],
        vars: &[f32],
        d: usize,
        process: &Process,
    ) -> Result<GmmPrior, ScoreError> {
        let k = weights.len();
        let invalid = |message: String| ScoreError::Invalid {
            model: "gmm".into(),
            message,
        };
        let abar = match process.kind {
            Kind::Vp { .. } if process.prediction == Prediction::Epsilon => {
                process.train_alphas_cumprod().unwrap_or_default()
            }
            Kind::Flow {
                data_at_one: false,
                time_scale: 1.0,
            } => vec![1.0],
            _ => {
                return Err(invalid(format!(
                    "the mixture prior runs as a VP diffusion predicting eps or a flow (data at t = 0, time t) \
                     predicting the velocity, not {}",
                    process.describe()
                )))
            }
        };
        if k == 0 || d == 0 || means.len() != k * d || vars.len() != k * d || abar.is_empty() {
            return Err(invalid(format!(
                "inconsistent mixture: {k} weights, {} means, {} variances for d = {d}",
                means.len(),
                vars.len()
            )));
        }
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut packed = Vec::with_capacity(k + 2 * k * d);
        packed.extend(weights.iter().map(|&w| ((w as f64) / total).ln() as f32));
        packed.extend_from_slice(means);
        packed.extend_from_slice(vars);
        let abar32: Vec<f32> = abar.iter().map(|&a| a as f32).collect();
        // Var x_j = sum_k w_k (v_kj + mu_kj^2) - (sum_k w_k mu_kj)^2, averaged over j.
        let variance = (0..d)
            .map(|j| {
                let (mut m1, mut m2) = (0.0, 0.0);
                for c in 0..k {
                    let w = weights[c] as f64 / total;
                    let mu = means[c * d + j] as f64;
                    m1 += w * mu;
                    m2 += w * (vars[c * d + j] as f64 + mu * mu);
                }
                m2 - m1 * m1
            })
            .sum::<f64>()
            / d as f64;
        Ok(GmmPrior {
            variance,
            d,
            k,
            steps: abar.len(),
            process: *process,
            prior: gpu.upload("gmm prior", &packed)?,
            abar: gpu.upload("gmm abar", &abar32)?,
        })
    }

    pub fn components(&self) -> usize {
        self.k
    }

    fn params(&self, gpu: &Gpu, batch: usize) -> wgpu::Buffer {
        gpu.uniform(
            "gmm params",
            &GmmParams {
                batch: batch as u32,
                d: self.d as u32,
                k: self.k as u32,
                steps: self.steps as u32,
                flow: u32::from(self.process.is_flow()),
                _pad: [0; 3],
            },
        )
    }

    fn check(&self, what: &str, t: &Tensor, batch: usize, per: usize) -> Result<(), ScoreError> {
        if t.numel() != batch * per {
            return Err(ScoreError::Shape {
                model: "gmm".into(),
                what: what.into(),
                got: t.shape.clone(),
                expected: vec![batch, per],
            });
        }
        Ok(())
    }

    fn batch(&self, x: &Tensor) -> Result<usize, ScoreError> {
        if x.numel() == 0 || x.numel() % self.d != 0 {
            return Err(ScoreError::Shape {
                model: "gmm".into(),
                what: "x".into(),
                got: x.shape.clone(),
                expected: vec![0, self.d],
            });
        }
        Ok(x.numel() / self.d)
    }

    /// The slots every pass binds first; `logits` [N, K] is written by the
    /// first pass and read by the others.
    fn slots<'a>(
        &'a self,
        params: &'a wgpu::Buffer,
        x: &'a Tensor,
        t: &'a Tensor,
        logits: &'a wgpu::Buffer,
    ) -> GmmSlots<'a> {
        GmmSlots {
            p: params,
            prior: &self.prior,
            abar: &self.abar,
            tsteps: t,
            x,
            logits,
        }
    }

    /// The first pass: the logits from (x_t, t).
    fn logits_pass(&self, gpu: &Gpu, slots: GmmSlots<'_>, n: usize) -> Result<Dispatch, GpuError> {
        Dispatch::typed(gpu, "gmm_logits", &[], &GmmLogits::new(slots), small_groups(n))
    }
}

/// One pass over `threads` elements, one thread each.
fn launch(gpu: &Gpu, entry: &str, b: &impl Bindings, threads: usize) -> Result<Dispatch, GpuError> {
    Dispatch::typed(gpu, entry, &[], b, dispatch_groups(threads, WG1D))
}

impl ScoreModel for GmmPrior {
    fn name(&self) -> &str {
        "gmm"
    }
    fn data_variance(&self) -> Option<f64> {
        Some(self.variance)
    }
    fn in_shape(&self) -> [usize; 3] {
        [self.d, 1, 1]
    }
    fn learned_sigma(&self) -> bool {
        false
    }
    fn process(&self) -> Process {
        self.process
    }

    fn plan_eps(&self, gpu: &Gpu, args: &EpsArgs<'_>) -> Result<Plan, ScoreError> {
        let EpsArgs { x, t, eps, v, .. } = *args;
        let n = self.batch(x)?;
        self.check("t", t, n, 1)?;
        self.check("eps", eps, n, self.d)?;
        if v.is_some() {
            return Err(ScoreError::Invalid {
                model: "gmm".into(),
                message: "has no learned variance output".into(),
            });
        }
        let params = self.params(gpu, n);
        let logits = gpu.storage_buffer("gmm logits", f32_bytes(n * self.k))?;
        let slots = self.slots(&params, x, t, &logits);
        let mut plan = Plan::new();
        plan.push(self.logits_pass(gpu, slots, n)?);
        plan.push(launch(gpu, "gmm_eps", &GmmEps::new(slots, eps), n * self.d)?);
        Ok(plan)
    }

    fn plan_vjp(&self, gpu: &Gpu, x: &Tensor, t: &Tensor, cotangent: &Tensor, dx: &Tensor) -> Result<Plan, ScoreError> {
        let n = self.batch(x)?;
        self.check("t", t, n, 1)?;
        self.check("cotangent", cotangent, n, self.d)?;
        self.check("dx", dx, n, self.d)?;
        let params = self.params(gpu, n);
        // Own logits (cheap to recompute), so this plan stands alone.
        let logits = gpu.storage_buffer("gmm vjp logits", f32_bytes(n * self.k))?;
        let dots = gpu.storage_buffer("gmm vjp dots", f32_bytes(n * self.k))?;
        let slots = self.slots(&params, x, t, &logits);
        let mut plan = Plan::new();
        plan.push(self.logits_pass(gpu, slots, n)?);
        let b = GmmVjpDots::new(slots, cotangent, &dots);
        plan.push(launch(gpu, "gmm_vjp_dots", &b, n * self.k)?);
        plan.push(launch(
            gpu,
            "gmm_vjp",
            &GmmVjp::new(slots, cotangent, &dots, dx),
            n * self.d,
        )?);
        Ok(plan)
    }
}
