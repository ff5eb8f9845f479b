//! C-DPS (Hamidi, Liang, Yang): a measurement chain
//! y_t = sqrt(1 - beta_t) y_{t-1} + sqrt(beta_t) z with y_0 = y, and at every
//! step an exact Gaussian draw of
//! x_{t-1} from  (x-factor) x p(y_{t-1} | x_{t-1}),  where
//! p(y_{t-1} | x_{t-1}) = N(A x_{t-1} + b, Sigma_{y|x} I),
//! Sigma_{y|x} = abar_{t-1} sigma_y^2 + (1 - abar_{t-1}),  b = (1 - abar_{t-1}) A s(x_t).
//! The posterior precision is Lambda = diag(D) + A^T A / Sigma_{y|x}; its mean
//! comes from one CG solve and its noise from perturb-and-solve (PW-CG,
//! v = Lambda^{-1} (sqrt(D) e1 + A^T e2 / sqrt(Sigma_{y|x}))). Both systems share
//! Lambda and the draw is linear in the right-hand side, so mean + noise is ONE
//! CG solve of the summed right-hand side (the same draw, half the work).
//!
//! The chain is drawn with the same law as "forward once per run" without
//! storing it: y_T ~ N(sqrt(abar_T) y, (1 - abar_T) I) at the start, then at each
//! step y_{t-1} ~ q(y_{t-1} | y_t, y_0), the Gaussian bridge (the DDPM posterior
//! coefficients of the same schedule). The joint law of (y_T, ..., y_0) is that
//! of the forward chain, and memory stays one measurement per sample.
//!
//! The x-factor, two readings ([`CdpsVariant`]):
//! - `Forward` (the seed slides read literally): the forward kernel
//!   p(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) as a function of
//!   x_{t-1}: D = (1 - beta_t) / beta_t, D m = sqrt(1 - beta_t) / beta_t x_t (the
//!   slide's "c_t x_t" drops this square root). Nothing in it involves the
//!   prior score except through b, so on the null space of A the step is an
//!   inverted forward process: x_{t-1} ~ x_t / sqrt(1 - beta_t) plus noise,
//!   whose variance grows instead of contracting to the data.
//! - `Reverse` (the default): the learned reverse kernel
//!   p_theta(x_{t-1} | x_t) = N(m_theta, sigma_t^2 I): D = 1 / sigma_t^2,
//!   D m = m_theta / sigma_t^2. Off the range of A this is exactly a DDPM step.
//!
//! Measured against the exact posterior of the Gaussian-mixture fixtures
//! (tests/samplers.rs, sliced W2 to `reference`; exact samples score 0.085 /
//! 0.082, the prior 7.07 / 1.99 on d8_m2 (1000 steps) / d80_m4 (250 steps)):
//! the reverse reading scores 4.38 / 1.83 with the chain on y (2.11 / 1.72 in
//! the spectral basis below), closer than the prior; the forward
//! reading scores 204 / 217, i.e. it diverges: the null-space component is
//! multiplied by prod 1 / sqrt(1 - beta_t) = 1 / sqrt(abar_T) (~150) over the
//! run, exactly the inverted forward process predicted above. Hence the
//! default is `Reverse`.
//!
//! The measurement basis ([`CdpsBasis`]). The chain noise sqrt(1 - abar) z is
//! isotropic while A x_t carries noise sqrt(1 - abar) A eps, so the two share a
//! law only when A has orthonormal rows; otherwise Sigma_{y|x} mis-states the
//! measurement noise (x2 bicubic SR: rows of norm 0.40, a 6x variance
//! mismatch, and its samples drift to other images). Where the operator has an
//! SVD form A = U diag(s) V^T, the default runs the chain on
//! y~ = diag(s)^+ U^T y = V^T x_0 + n~, n~_k ~ N(0, sigma_y^2 / s_k^2): the
//! same information, measured by V^T (orthonormal rows), with a per-component
//! Sigma_k = abar_{t-1} sigma_y^2 / s_k^2 + (1 - abar_{t-1}) and components
//! with s_k = 0 dropped. The precision becomes diag(D) + V diag(1 / Sigma) V^T
//! (CG with a diagonal weight, [`CgSystem::weight`]); everything else is the
//! paper's step with A -> V^T, y -> y~. `Measurement` keeps the paper's chain
//! on y for every operator (and is the only choice without an SVD form).
//!
//! Sliced W2 on the mixture fixtures (as above): spectral 2.11 / 1.72, the
//! measurement basis 4.38 / 1.83, DMPS 2.05 / 1.73, DPS (zeta 1) 0.89 / 0.46.
//! The spectral chain is level with DMPS; both stay far from the 0.08 floor,
//! as every Gaussian-approximation step does on a prior whose modes are 8
//! apart. The solver is not the limit (CG converges in <= m + 1 iterations).
//!
//! **No flow form (nor a DDIM one): refused.** The step is an exact Gaussian
//! draw from (x-factor) x p(y_{t-1} | x_{t-1}), and both readings of the
//! x-factor are Gaussian kernels with a variance: the forward kernel's beta_t,
//! the reverse kernel's sigma_t^2. A flow's sampler is the ODE: its step
//! x_{t-dt} = x_t - dt u(x_t) is a point mass (sigma = 0, D = 1 / sigma^2
//! infinite), so the product with the measurement factor is that same point
//! mass and y never enters; DDIM with eta = 0 is the same. The flow has no
//! forward kernel between grid times either (x_t = (1 - t) x0 + t eps is
//! defined by its marginals, not a Markov chain). What would run is C-DPS on
//! the VP diffusion the flow is a rescaling of (x_t / ((1 - t)^2 + t^2)^{1/2}
//! has abar = (1 - t)^2 / ((1 - t)^2 + t^2)), i.e. C-DPS on a diffusion model,
//! not a flow form of it; `plan` refuses flows and DDIM with this reason.

use super::cg::{self, Cg, CgStop, CgSystem, Space};
use super::kernels::{CdpsMeasure, CdpsMeasureSpectral, CdpsRhs, EpsEstimate, MeasureSlots};
use super::options::{self as opt, choice_enum, Kind, OptionSpec};
use super::{need_linear, Core, MethodBlock, MethodStep, Planned, Posterior, Role, SamplerError, Stat, StepParams};
use crate::gpu::Plan;
use crate::kernels::random::Noise;
use crate::operators::{LinearOperator, SpectralRows};

choice_enum! {
    /// Where C-DPS takes the factor in x_{t-1} from.
    pub enum CdpsVariant {
        Reverse => "reverse", "The learned reverse kernel p_theta(x_{t-1} | x_t) = N(m_theta, sigma_t^2 I): the default",
        Forward => "forward", "The seed slides read literally: the forward kernel p(x_t | x_{t-1})",
    }
}

choice_enum! {
    /// Which coordinates C-DPS runs its measurement chain in.
    pub enum CdpsBasis {
        Auto => "auto", "The spectral basis when the operator has an SVD form, the measurement otherwise",
        Measurement => "measurement", "y itself, as the paper writes it: right when A has orthonormal rows",
        Spectral => "spectral", "y~ = diag(s)^+ U^T y = V^T x + n~: orthonormal rows, noise sigma_y / s per component",
    }
}

/// `--cdps-variant`.
pub const VARIANT: OptionSpec = OptionSpec {
    name: "cdps-variant",
    help: "C-DPS x-factor: the learned reverse kernel (right) or the slides' forward kernel",
    kind: Kind::Choice(CdpsVariant::CHOICES),
    default: Some("reverse"),
    check: opt::any,
};

/// `--cdps-basis`.
pub const BASIS: OptionSpec = OptionSpec {
    name: "cdps-basis",
    help: "C-DPS measurement chain: in the operator's spectral basis (orthonormal rows, per-component \
           noise) when it has an SVD form (auto), or on y as given",
    kind: Kind::Choice(CdpsBasis::CHOICES),
    default: Some("auto"),
    check: opt::any,
};
use crate::process::Prediction;
use crate::tensor::Tensor;
use crate::Gpu;

/// C-DPS's block of the step uniform (the `cdps_*()` accessors in
/// shaders/sampler.wgsl), read by `cdps_measure`, `cdps_measure_spectral` and
/// `cdps_rhs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CdpsStep {
    /// the chain's bridge y_{t-1} = y_coef0 y_0 + y_coef1 y_t + y_std z
    pub y_coef0: f32,
    pub y_coef1: f32,
    pub y_std: f32,
    /// Sigma_{y|x} = noise_var + diffusion_var
    pub meas_var: f32,
    /// (1 - abar_{t-1}) / b_t, so b_meas = -tw_coef A eps
    pub tw_coef: f32,
    /// abar_{t-1} sigma_y^2, the measurement noise's share of Sigma_{y|x}
    /// (the spectral basis divides it by s_k^2 per component)
    pub noise_var: f32,
    /// 1 - abar_{t-1}, the diffusion's share of Sigma_{y|x}
    pub diffusion_var: f32,
    /// forward-kernel reading: D = (1 - beta_t) / beta_t
    pub prec: f32,
    /// forward-kernel reading: D m = h_coef x_t, h_coef = sqrt(1 - beta_t) / beta_t
    pub h_coef: f32,
    /// 0: the reverse kernel, 1: the forward kernel ([`CdpsVariant`])
    pub variant: u32,
}

/// C-DPS's buffers, solver and init noise. The chain and noise buffers are
/// read through [`Cdps::buffers`]; the rest are held for the plan's bind
/// groups.
#[allow(dead_code)]
pub struct Cdps {
    pub cg: Cg,
    zy_init: Noise,
    sigma_y2: f64,
    spectral: bool,
    /// the measurement y [N, m]
    y: Tensor,
    /// the chain's y_0 [N, m]: y itself, or y~ = U^T y / s in the spectral basis
    y0: Tensor,
    /// the chain's current y_t [N, m]
    y_t: Tensor,
    /// the chain noise [N, m]
    z_y: Tensor,
    /// the PW-CG noises: e2 [N, m], e1 [N, ...]
    e2: Tensor,
    e1: Tensor,
    /// A eps (V^T eps in the spectral basis) [N, m]
    aeps: Tensor,
    /// the noise estimate (the model's output for an eps-model) [N, ...]
    eps_hat: Tensor,
    /// the measurement side of the right-hand side, w [N, m]
    w: Tensor,
    /// the spectral basis's per-component precision pi [N, m] (the CG's weight)
    pi: Tensor,
    /// A^T w [N, ...]
    atw: Tensor,
    /// the CG's right-hand side D m + sqrt(D) e1 + A^T w [N, ...]
    rhs: Tensor,
    /// the precision's diagonal D [N, ...]
    diag: Tensor,
}
/// The C-DPS buffers a test needs to replay a step on the CPU.
pub struct CdpsBuffers<'a> {
    /// the chain's y_0 [N, m]: y, or y~ = U^T y / s in the spectral basis
    pub y0: &'a Tensor,
    /// the measurement chain's current y_t [N, m]
    pub y_t: &'a Tensor,
    /// the chain noise of the last step [N, m]
    pub z_y: &'a Tensor,
    /// the PW-CG noises of the last step: e1 [N, d], e2 [N, m]
    pub e1: &'a Tensor,
    pub e2: &'a Tensor,
    /// whether the chain runs in the spectral basis
    pub spectral: bool,
}

impl Cdps {
    pub fn buffers(&self) -> CdpsBuffers<'_> {
        CdpsBuffers {
            y0: &self.y0,
            y_t: &self.y_t,
            z_y: &self.z_y,
            e2: &self.e2,
            e1: &self.e1,
            spectral: self.spectral,
        }
    }
}

impl MethodStep for Cdps {
    fn name() -> &'static str {
        "cdps"
    }

    fn options() -> &'static [&'static OptionSpec] {
        &[&cg::TOL, &cg::ITERS, &VARIANT, &BASIS]
    }
    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let m = post.measurement("C-DPS")?;
        let op = need_linear(m, "C-DPS")?;
        core.require_ddpm(
            "C-DPS",
            "its x_{t-1} is an exact Gaussian draw from the reverse kernel N(m, sigma_t^2 I) times the \
             measurement factor, and an ODE or DDIM step has no such kernel (sigma_t = 0 leaves a point mass)",
        )?;
        if m.sigma_y <= 0.0 {
            // Sigma_{y|x} = sigma_y^2 at the last step: its precision would be infinite.
            return Err(SamplerError::Invalid(
                "C-DPS needs sigma_y > 0 (its last step conditions on y with variance sigma_y^2)".into(),
            ));
        }
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let xs = core.x.shape.clone();
        let ms = [n, m_per];
        let basis = CdpsBasis::from_choice(core.opts.method.choice(BASIS.name)).expect("a checked choice");
        let rows = match basis {
            CdpsBasis::Measurement => None,
            CdpsBasis::Auto => SpectralRows::new(op),
            CdpsBasis::Spectral => Some(SpectralRows::new(op).ok_or_else(|| {
                SamplerError::Invalid(format!(
                    "operator {} has no SVD form; use --cdps-basis measurement",
                    m.op.name()
                ))
            })?),
        };
        let spectral = rows.is_some();
        // The operator the chain measures x with: A, or V^T (orthonormal rows).
        let chain_op: &dyn LinearOperator = match &rows {
            Some(r) => r,
            None => op,
        };
        let y = Tensor::from_slice(gpu, "y", &ms, &m.per_sample(n, m_per))?;
        let y0 = if spectral {
            Tensor::zeros(gpu, "y~", &ms)?
        } else {
            y.clone()
        };
        let y_t = Tensor::zeros(gpu, "y_t", &ms)?;
        let z_y = Tensor::zeros(gpu, "chain noise", &ms)?;
        let e2 = Tensor::zeros(gpu, "pw e2", &ms)?;
        let aeps = Tensor::zeros(gpu, "A eps", &ms)?;
        let w = Tensor::zeros(gpu, "measurement rhs", &ms)?;
        let pi = Tensor::zeros(gpu, "measurement precision", &ms)?;
        let e1 = Tensor::zeros(gpu, "pw e1", &xs)?;
        let atw = Tensor::zeros(gpu, "A^T w", &xs)?;
        let rhs = Tensor::zeros(gpu, "cdps rhs", &xs)?;
        let diag = Tensor::zeros(gpu, "cdps precision diag", &xs)?;
        let sys = CgSystem {
            op: chain_op,
            space: Space::Input,
            b: &rhs,
            x: &core.x,
            diag: &diag,
            weight: spectral.then_some(&pi),
            gamma: 1.0,
        };
        let cg = Cg::new(gpu, sys, CgStop::from_options(&core.opts.method))?;

        let s = &core.step_uniform;
        let slots = MeasureSlots {
            s,
            y0: &y0,
            zy: &z_y,
            e2: &e2,
            aeps: &aeps,
            ycur: &y_t,
            w: &w,
        };
        let measure = match op.svd() {
            Some(svd) if spectral => {
                let b = CdpsMeasureSpectral::new(slots, svd.singulars(), &pi);
                core.launch(gpu, "cdps_measure_spectral", &b, n * m_per)?
            }
            _ => core.launch(gpu, "cdps_measure", &CdpsMeasure::new(slots), n * m_per)?,
        };
        let mut plan = core.eps_plan.clone();
        // b_meas needs the noise estimate itself: the model's output when it predicts eps.
        let eps_hat = if post.model.process().prediction == Prediction::Epsilon {
            core.eps.clone()
        } else {
            let e = Tensor::zeros(gpu, "eps estimate", &xs)?;
            let b = EpsEstimate {
                s: &core.step_uniform,
                x: &core.x,
                out: &core.eps,
                eps: &e,
            };
            plan.push(core.launch(gpu, "eps_estimate", &b, n * core.per)?);
            e
        };
        plan.extend(chain_op.forward(gpu, &eps_hat, &aeps)?);
        plan.push(core.noise(gpu, &z_y, Role::MeasChain)?);
        plan.push(core.noise(gpu, &e2, Role::E2)?);
        plan.push(core.noise(gpu, &e1, Role::E1)?);
        plan.push(measure.clone());
        plan.extend(chain_op.adjoint(gpu, &w, &atw)?);
        let b = CdpsRhs {
            s: &core.step_uniform,
            x: &core.x,
            eps: &core.eps,
            v: &core.v,
            e1: &e1,
            atw: &atw,
            rhs: &rhs,
            diag: &diag,
        };
        plan.push(core.launch(gpu, "cdps_rhs", &b, n * core.per)?);
        plan.extend(cg.plan.clone());

        // Init: y~ from y (spectral basis), then y_T from the chain's
        // marginal, through the same kernel.
        let mut init = Plan::new();
        if let Some(svd) = op.svd().filter(|_| spectral) {
            init.extend(core.spectral_y(gpu, svd, &y, &y0)?);
        }
        let zy_init = Noise::new(gpu, &z_y, super::role_seed(core.opts.seed, Role::MeasInit), 0, 0.0, 1.0)?;
        init.push(zy_init.dispatch.clone());
        init.push(measure);
        let sigma_y2 = (m.sigma_y as f64).powi(2);
        let cdps = Cdps {
            cg,
            zy_init,
            sigma_y2,
            spectral,
            y,
            y0,
            y_t,
            z_y,
            e2,
            e1,
            aeps,
            eps_hat,
            w,
            pi,
            atw,
            rhs,
            diag,
        };
        Ok(Planned::new(cdps, plan).with_init(init))
    }

    fn label(&self) -> &'static str {
        "C-DPS"
    }

    /// The chain's start y_T ~ N(sqrt(abar_T) y_0, (1 - abar_T) I), drawn by
    /// the init plan's `cdps_measure` with a bridge of y_coef1 = 0.
    fn prepare_init(&self, gpu: &Gpu, core: &Core) -> Result<(), SamplerError> {
        let last = core.steps() - 1;
        let abar = core.schedule().alphas_cumprod[last];
        let p = StepParams {
            m_per: core.m_per as u32,
            method: MethodBlock::of(&CdpsStep {
                y_coef0: abar.sqrt() as f32,
                y_coef1: 0.0,
                y_std: (1.0 - abar).sqrt() as f32,
                meas_var: 1.0,
                ..CdpsStep::default()
            }),
            ..StepParams::default()
        };
        gpu.queue.write_buffer(&core.step_uniform, 0, bytemuck::bytes_of(&p));
        self.zy_init.set_stream(gpu, 0);
        Ok(())
    }

    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let s = core.schedule();
        let abar_prev = s.alphas_cumprod_prev[i];
        let beta = s.betas[i];
        let b_t = (1.0 - s.alphas_cumprod[i]).sqrt();
        let meas_var = abar_prev * self.sigma_y2 + (1.0 - abar_prev);
        p.method = MethodBlock::of(&CdpsStep {
            y_coef0: s.posterior_mean_coef1[i] as f32,
            y_coef1: s.posterior_mean_coef2[i] as f32,
            y_std: s.posterior_variance[i].max(0.0).sqrt() as f32,
            meas_var: meas_var as f32,
            tw_coef: ((1.0 - abar_prev) / b_t) as f32,
            // Spectral basis: Sigma_k = noise_var / s_k^2 + diffusion_var (see cdps_measure_spectral).
            noise_var: (abar_prev * self.sigma_y2) as f32,
            diffusion_var: (1.0 - abar_prev) as f32,
            prec: ((1.0 - beta) / beta) as f32,
            h_coef: ((1.0 - beta).sqrt() / beta) as f32,
            variant: match CdpsVariant::from_choice(core.opts.method.choice(VARIANT.name)) {
                Some(CdpsVariant::Forward) => 1,
                _ => 0,
            },
        });
        // The spectral weights carry 1 / Sigma_k themselves.
        let gamma = if self.spectral { 1.0 } else { 1.0 / meas_var };
        self.cg.set_gamma(gpu, gamma as f32);
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }

    fn stats(&self, gpu: &Gpu, _steps: usize) -> Result<Vec<Stat>, SamplerError> {
        Ok(vec![Stat::Cg(self.cg.stats(gpu)?)])
    }
}
