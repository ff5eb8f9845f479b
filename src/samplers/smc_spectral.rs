//! Sequential Monte Carlo in the operator's SVD basis: MCGdiff's potentials
//! (Cardoso, Janati, Le Corff & Moulines, "Monte Carlo guided diffusion for
//! Bayesian linear inverse problems", ICLR 2024) with the fully adapted
//! (optimal) proposal on the measured components, for linear operators with
//! an SVD form A = U diag(s) V^T. `--method smc` takes it for those
//! operators; [`super::smc`] (TDS) for the others (`--smc-variant`).
//!
//! # Why this one
//! TDS twists with the network's x0hat, so its proposal moves all d
//! coordinates through the model's Jacobian and its weights carry a log p/q
//! over all d: the weights' variance grows with d, not with what is measured
//! (at d = 800 it sat at DPS's level). Here the potential at level t reads the
//! measured spectral components of x_t itself (no network), so the reverse
//! kernel times the next potential is Gaussian in those components and can
//! be drawn exactly: the unmeasured components move by the prior's reverse
//! kernel untouched, only the m measured ones are guided, and the weights
//! are sums over m terms. No VJP is taken. Of the two published forms,
//! MCGdiff's (a potential per level, its exact product with the reverse
//! kernel) fits the replayed step plan; FPS-SMC's (Dou & Song, ICLR 2024)
//! needs a backward-sampled sequence of measurements y_{1:K} per particle
//! population first.
//!
//! # The algorithm (per population of P particles, x_t = a_t x_0 + b_t eps)
//! With ybar = U^T y and, for a vector v, vbar = V^T v (the spectral space,
//! [`crate::operators::SvdForm`]), the potential at level (a, b) is
//!
//!   g(x) = prod_i N(ybar_i; s_i kappa xbar_i, s_i^2 rho + sigma_y^2)
//!
//! over the measured components (s_i > 0): y's likelihood given x_t if x0's
//! component had the prior N(0, v0), under which x0 | x_t ~ N(kappa c, rho)
//! with kappa = a v0 / (a^2 v0 + b^2), rho = v0 b^2 / (a^2 v0 + b^2)
//! ([`potential`]). At the data level (kappa = 1, rho = 0) it is the
//! likelihood N(y; A x_0, sigma_y^2 I) up to a constant, so the final weights
//! are exact whatever v0 is; v0 only decides how many particles are wasted.
//! MCGdiff's potential is the flat-prior limit (v0 -> infinity: y diffused
//! to level t, N(a ybar; s xbar_t, s^2 b^2 + a^2 sigma_y^2)); it already
//! weighs x_T's measured components against y at the first step, and on the
//! d = 800 mixtures its weights' noise drowned the evidence (it sat at the
//! prior's distance at 1000 steps, -8% of the gap; with the mixture's own
//! variance, 81%). v0 is `--smc-prior-var`, by default the prior's
//! variance per coordinate where the model knows it
//! ([`crate::samplers::ScoreModel::data_variance`]: a mixture's), else 1 (the
//! scale image models are trained at, at or above their pixels' variance:
//! too small a v0 costs more than too large a one).
//!
//! The reverse kernel is N(x_{t-1}; mu(x_t), var_t I), the DDPM mean from the
//! model's eps and the fixed variance (`--variance`; a learned sigma goes
//! unused: the exact product needs one variance for every component). Step t
//! (to level (a', b'), kappa', rho'):
//!
//! 1. mu = mu(x_t); per measured component, with D'_i = s_i^2 rho' + sigma_y^2
//!    and S_i = s_i^2 kappa'^2 var + D'_i, the predictive
//!    Z_i = N(ybar_i; s_i kappa' mubar_i, S_i): the reverse kernel times the
//!    next potential, integrated.
//! 2. Weigh: log w += sum_i log Z_i - log g_t(x_t) (the potential at x_t
//!    divided out; at the first step x_T ~ N(0, I) enters with weight
//!    g_T(x_T), which cancels it, so nothing is divided). Normalise, and
//!    below the ESS threshold resample systematically (the weights depend on
//!    x_t only, so this is an auxiliary particle filter's look-ahead); the
//!    mean and its spectral components are gathered to the ancestors.
//! 3. Propose from N(mu, var I) times the next potential: the unmeasured
//!    components as the reverse kernel draws them, each measured one from
//!    N(mubar_i + k_i (ybar_i - s_i kappa' mubar_i), var D'_i / S_i) with
//!    k_i = var s_i kappa' / S_i. In pixels, with z ~ N(0, I) and zeta = V^T z:
//!    x_{t-1} = mu + sqrt(var) z + V delta,
//!    delta_i = k_i (ybar_i - s_i kappa' mubar_i) + (sqrt(var D'_i / S_i) - sqrt(var)) zeta_i.
//!    The proposal is the twisted target's own conditional, so the
//!    incremental weight is the Z of step 1 (no log p/q term).
//! 4. The last step (var = 0, kappa' = 1, rho' = 0) is deterministic,
//!    x_0 = mu(x_1), and its Z is the likelihood at x_0.
//! - End: a forced systematic resampling; the population is returned
//!   equally weighted.
//!
//! The target of the weighted population is p_theta(x_{0:K}) p(y | x_0), the
//! chain's x_0 marginal times the exact likelihood (asymptotically exact in
//! the particles, as TDS). sigma_y must be positive.

use super::kernels::{SpectralMean, SpectralMove, SpectralPropose, SpectralWeigh};
use super::options::{Kind, OptionSpec, Value};
use super::smc::Smc;
use super::{need_svd, Core, Measurement, MethodBlock, MethodStep, Planned, Posterior, SamplerError, Stat};
use super::{StepParams, FLAG_LEARNED, FLAG_NOISE};
use crate::gpu::Plan;
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::smc::{Population, RowReduce};
use crate::tensor::Tensor;
use crate::Gpu;

/// The spectral SMC's block of the step uniform (`sp_kappa_next()` ... in
/// shaders/sampler.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SpectralStep {
    /// The potential's kappa and rho at the level stepped to.
    pub kappa_next: f32,
    pub rho_next: f32,
    /// The reverse kernel's variance (0 at the last step).
    pub var: f32,
    pub sigma_y2: f32,
    /// The potential's kappa and rho at x_t's level.
    pub kappa: f32,
    pub rho: f32,
    /// 1: divide by the potential at x_t; 0 at the first step.
    pub twist_on: f32,
    pub _pad: f32,
}

/// The potential's (kappa, rho) at level (a, b) for prior variance `v0`:
/// x0 | x_t ~ N(kappa c, rho) per component when x0 ~ N(0, v0), so
/// kappa = a v0 / (a^2 v0 + b^2), rho = v0 b^2 / (a^2 v0 + b^2); (1, 0) at the
/// data (b = 0), (0, v0) at pure noise (a = 0).
pub fn potential(a: f64, b: f64, v0: f64) -> (f64, f64) {
    let den = a * a * v0 + b * b;
    if den <= 0.0 {
        return (0.0, v0);
    }
    (a * v0 / den, v0 * b * b / den)
}

/// `--smc-prior-var`.
pub const PRIOR_VAR: OptionSpec = OptionSpec {
    name: "smc-prior-var",
    help: "SMC (spectral): the variance of x0 per measured component its potentials assume (default: the \
           prior's where the model knows it, as a mixture does, else 1); any positive value keeps the sampler \
           exact, one near the data's wastes fewer particles (a huge one is MCGdiff's flat potential)",
    kind: Kind::Number,
    default: None,
    check: |v| match v {
        Value::Number(x) if !(x > 0.0 && x.is_finite()) => Err(format!("--smc-prior-var {x} must be positive")),
        _ => Ok(()),
    },
};

/// Buffers only the plans read.
#[allow(dead_code)]
struct Held {
    /// U^T y [N, m]
    ybar: Tensor,
    /// mu and its spectral components [N, ...], [N, m]
    mu: Tensor,
    vmu: Tensor,
    /// V^T x_t, V^T z [N, m]
    vx: Tensor,
    zeta: Tensor,
    /// log-weight terms per component [N, m]
    lw: Tensor,
    /// the correction's components and V of them [N, m], [N, ...]
    delta: Tensor,
    g: Tensor,
    /// the spectral components of the gathered mean [N, m]
    gvmu: Tensor,
    lw_sum: RowReduce,
    add: Elementwise,
    gather_uniforms: Vec<wgpu::Buffer>,
}

/// The spectral SMC: its population, measurement and plans.
pub struct SpectralSmc {
    pub pop: Population,
    pub particles: usize,
    y: Tensor,
    sigma_y2: f32,
    /// The prior variance the potentials assume (`--smc-prior-var`).
    prior_var: f64,
    /// The mean gathered to the ancestors [N, ...]; the final population's scratch.
    gmu: Tensor,
    /// After step 0: the forced resampling, x gathered into `gmu`.
    final_plan: Plan,
    #[allow(dead_code)]
    held: Held,
}

impl SpectralSmc {
    /// Plans the spectral SMC for `post` (its operator must have an SVD form),
    /// whose measurement `m` and `particles` [`Smc::check`] has passed.
    pub(super) fn plan_checked(
        gpu: &Gpu,
        core: &mut Core,
        post: &Posterior<'_>,
        m: &Measurement<'_>,
        particles: usize,
    ) -> Result<Planned, SamplerError> {
        let svd = need_svd(m, "SMC's spectral variant (--smc-variant spectral)")?;
        let n = core.batch;
        let m_per: usize = m.op.out_shape().iter().product();
        let shape = core.x.shape.clone();
        let spectral = |name: &str| Tensor::zeros(gpu, name, &[n, m_per]);
        let y = Tensor::from_slice(gpu, "y", &[n, m_per], &m.per_sample(n, m_per))?;
        let ybar = spectral("U^T y")?;
        let mu = Tensor::zeros(gpu, "reverse mean", &shape)?;
        let gmu = Tensor::zeros(gpu, "resampled mean", &shape)?;
        let g = Tensor::zeros(gpu, "V delta", &shape)?;
        let (vmu, gvmu, vx) = (spectral("V^T mu")?, spectral("resampled V^T mu")?, spectral("V^T x_t")?);
        let (zeta, lw, delta) = (spectral("V^T z")?, spectral("log-weight terms")?, spectral("delta")?);
        let pop = Smc::population(gpu, core, particles)?;
        let lw_sum = RowReduce::new(gpu, &lw, n, false)?;
        let add = Elementwise::new(gpu, Op::Axpby, &lw_sum.out, &pop.logw, 1.0, 1.0)?;
        let init = svd.ut(gpu, &y, &ybar)?;
        let sing = svd.singulars();

        // 1-2. The mean, its predictive weight, the weighing.
        let mut plan = core.eps_plan.clone();
        let b = SpectralMean {
            s: &core.step_uniform,
            x: &core.x,
            eps: &core.eps,
            mu: &mu,
        };
        plan.push(core.launch(gpu, "spectral_mean", &b, n * core.per)?);
        plan.extend(svd.vt(gpu, &mu, &vmu)?);
        plan.extend(svd.vt(gpu, &core.x, &vx)?);
        let b = SpectralWeigh {
            s: &core.step_uniform,
            sing,
            ybar: &ybar,
            vmu: &vmu,
            vx: &vx,
            lw: &lw,
        };
        plan.push(core.launch(gpu, "spectral_weigh", &b, n * m_per)?);
        plan.extend(lw_sum.plan.clone());
        plan.push(add.dispatch.clone());
        plan.extend(pop.weigh.clone());
        let mut gather_uniforms = Vec::new();
        for (src, dst) in [(&mu, &gmu), (&vmu, &gvmu)] {
            let (d, u) = pop.gather(gpu, src, dst)?;
            plan.push(d);
            gather_uniforms.push(u);
        }
        // 3. The proposal: the reverse kernel's draw, the measured components corrected.
        plan.push(core.z_dispatch());
        plan.extend(svd.vt(gpu, &core.z, &zeta)?);
        let b = SpectralPropose {
            s: &core.step_uniform,
            sing,
            ybar: &ybar,
            vmu: &gvmu,
            zeta: &zeta,
            delta: &delta,
        };
        plan.push(core.launch(gpu, "spectral_propose", &b, n * m_per)?);
        plan.extend(svd.v(gpu, &delta, &g)?);
        let b = SpectralMove {
            s: &core.step_uniform,
            mu: &gmu,
            z: &core.z,
            g: &g,
            x: &core.x,
        };
        plan.push(core.launch(gpu, "spectral_move", &b, n * core.per)?);

        // The end: a forced resampling of x_0 into gmu.
        let mut final_plan = pop.weigh.clone();
        let (d, u) = pop.gather(gpu, &core.x, &gmu)?;
        final_plan.push(d);
        gather_uniforms.push(u);

        Ok(Planned::new(
            SpectralSmc {
                pop,
                particles,
                y,
                sigma_y2: m.sigma_y * m.sigma_y,
                prior_var: core
                    .opts
                    .method
                    .number(PRIOR_VAR.name)
                    .map(f64::from)
                    .or_else(|| post.model.data_variance())
                    .unwrap_or(1.0),
                gmu,
                final_plan,
                held: Held {
                    ybar,
                    mu,
                    vmu,
                    vx,
                    zeta,
                    lw,
                    delta,
                    g,
                    gvmu,
                    lw_sum,
                    add,
                    gather_uniforms,
                },
            },
            plan,
        )
        .with_init(init))
    }
}

impl MethodStep for SpectralSmc {
    /// The registry's `smc` ([`Smc`]) plans this variant, and its settings and
    /// batch rounding are [`Smc`]'s.
    fn plan(gpu: &Gpu, core: &mut Core, post: &Posterior<'_>) -> Result<Planned, SamplerError> {
        let (m, particles) = Smc::check(core, post)?;
        SpectralSmc::plan_checked(gpu, core, post, m, particles)
    }

    fn name() -> &'static str {
        "smc"
    }

    fn label(&self) -> &'static str {
        "SMC"
    }

    fn y(&self) -> Option<&Tensor> {
        Some(&self.y)
    }

    /// Step i's scalars: the potentials at both levels, the fixed variance
    /// (a learned sigma unused), the systematic offset.
    fn params(&self, gpu: &Gpu, core: &Core, i: usize, p: &mut StepParams) {
        let g = &core.grid;
        let var = if p.flags & FLAG_NOISE != 0 {
            (p.log_var_fixed as f64).exp()
        } else {
            0.0
        };
        p.flags &= !FLAG_LEARNED;
        let v0 = self.prior_var;
        let (kappa_next, rho_next) = potential(g.a_next[i], g.b_next[i], v0);
        let (kappa, rho) = potential(g.a[i], g.b[i], v0);
        p.method = MethodBlock::of(&SpectralStep {
            kappa_next: kappa_next as f32,
            rho_next: rho_next as f32,
            var: var as f32,
            sigma_y2: self.sigma_y2,
            kappa: kappa as f32,
            rho: rho as f32,
            twist_on: if i + 1 < core.steps() { 1.0 } else { 0.0 },
            _pad: 0.0,
        });
        self.pop.set(gpu, i, Smc::offset(core.opts.seed, i), false);
    }

    fn prepare_init(&self, gpu: &Gpu, _core: &Core) -> Result<(), SamplerError> {
        self.pop.reset(gpu)?;
        Ok(())
    }

    /// After step 0 (whose weighing held the likelihood at x_0): the forced
    /// final resampling, copied into x.
    fn finish(&self, gpu: &Gpu, core: &Core, _p: &StepParams) -> Result<(), SamplerError> {
        self.pop
            .set(gpu, core.steps(), Smc::offset(core.opts.seed, core.steps()), true);
        self.final_plan.run(gpu)?;
        gpu.copy_buffer(&self.gmu.buffer, &core.x.buffer, core.x.size_bytes() as u64)?;
        Ok(())
    }

    fn stats(&self, gpu: &Gpu, steps: usize) -> Result<Vec<Stat>, SamplerError> {
        Ok(vec![Stat::Populations(self.pop.stats(gpu, steps)?)])
    }
}
