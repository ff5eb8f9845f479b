//! One reverse step of each sampler against an f64 CPU replay of the same
//! step (same x_t, same noise read back from the GPU), with the Gaussian-
//! mixture prior, a dense operator, respaced steps and x0hat clipping on and
//! off. The DPS gradient is checked by central finite differences of
//! |y - A clip(x0hat(x))| on the CPU.

mod common;
use common::gmm::solve;
use common::*;

use rand::Rng;
use tweedie::gpu::Plan;
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::operators::dense::Dense;
use tweedie::samplers::{
    CdpsBasis, CdpsVariant, GmmPrior, Measurement, Method, MethodOptions, Sampler, SamplerOptions,
};
use tweedie::samplers::{EpsArgs, ScoreError, ScoreModel};
use tweedie::schedule::{Schedule, VarianceType};
use tweedie::{Gpu, HostTensor, Tensor};

const K: usize = 3;
const D: usize = 6;
const M: usize = 3;
const N: usize = 5;
const STEPS: usize = 50;

struct Setup {
    w: Vec<f64>,
    mu: Vec<f64>,
    var: Vec<f64>,
    a: Vec<f64>,
    y: Vec<f64>,
    sigma_y: f64,
    w32: Vec<f32>,
    mu32: Vec<f32>,
    var32: Vec<f32>,
    a32: Vec<f32>,
    y32: Vec<f32>,
}

fn setup() -> Setup {
    let mut r = rng(41);
    let w32: Vec<f32> = (0..K).map(|_| 0.3 + r.random::<f32>()).collect();
    let mu32: Vec<f32> = randn(&mut r, K * D).iter().map(|v| 0.7 * v).collect();
    let var32: Vec<f32> = (0..K * D).map(|_| 0.1 + 0.4 * r.random::<f32>()).collect();
    let a32: Vec<f32> = randn(&mut r, M * D).iter().map(|v| 0.6 * v).collect();
    let y32: Vec<f32> = randn(&mut r, M);
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let tot: f64 = w32.iter().map(|&v| v as f64).sum();
    Setup {
        w: w32.iter().map(|&v| v as f64 / tot).collect(),
        mu: f(&mu32),
        var: f(&var32),
        a: f(&a32),
        y: f(&y32),
        sigma_y: 0.1,
        w32,
        mu32,
        var32,
        a32,
        y32,
    }
}

impl Setup {
    /// The components' posterior weights p(k | x_t) at x_t = a x0 + b eps:
    /// the softmax over k of log w_k + log N(x; a mu_k, a^2 Sigma_k + b^2).
    #[allow(clippy::needless_range_loop)] // component c, coordinate j index three arrays
    fn responsibilities(&self, x: &[f64], a: f64, b: f64) -> [f64; K] {
        let mut logits = [0f64; K];
        for c in 0..K {
            let mut q = 0.0;
            for j in 0..D {
                let v = a * a * self.var[c * D + j] + b * b;
                let r = x[j] - a * self.mu[c * D + j];
                q += r * r / v + v.ln();
            }
            logits[c] = self.w[c].ln() - 0.5 * q;
        }
        let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
        let tot: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        logits.map(|l| (l - mx).exp() / tot)
    }

    fn eps(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        let resp = self.responsibilities(x, a, b);
        (0..D)
            .map(|j| {
                -b * (0..K)
                    .map(|c| {
                        let v = a * a * self.var[c * D + j] + b * b;
                        resp[c] * (-(x[j] - a * self.mu[c * D + j]) / v)
                    })
                    .sum::<f64>()
            })
            .collect()
    }
    fn ax(&self, x: &[f64]) -> Vec<f64> {
        (0..M).map(|i| (0..D).map(|j| self.a[i * D + j] * x[j]).sum()).collect()
    }
    fn atv(&self, v: &[f64]) -> Vec<f64> {
        (0..D).map(|j| (0..M).map(|i| self.a[i * D + j] * v[i]).sum()).collect()
    }

    /// A GPU sampler of `method` on this measurement through `op`,
    /// initialised, with x_t set to `x_in`: ready for the step under test.
    fn sampler(
        &self,
        gpu: &Gpu,
        method: Method,
        model: &dyn ScoreModel,
        op: &Dense,
        opts: &SamplerOptions,
        x_in: &[f32],
    ) -> Sampler {
        let meas = Measurement {
            op,
            y: &self.y32,
            sigma_y: self.sigma_y as f32,
        };
        let smp = Sampler::new(gpu, method, model, Some(meas), N, opts).unwrap();
        smp.init(gpu).unwrap();
        smp.x().write(gpu, x_in).unwrap();
        smp
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn one_step_of_each_sampler_matches_cpu_replay() {
    let gpu = gpu();
    let s = setup();
    let base = Schedule::linear(1000, 1000).unwrap();
    let sched = Schedule::linear(1000, STEPS).unwrap();
    let model = GmmPrior::new(
        &gpu,
        &s.w32,
        &s.mu32,
        &s.var32,
        D,
        &tweedie::process::Process::default(),
    )
    .unwrap();
    let op = Dense::new(&gpu, &HostTensor::new(vec![M, D], s.a32.clone()), [D, 1, 1]).unwrap();
    let mut r = rng(42);
    let zeta = 0.5f32;
    let lambda = 1.75f32;
    use CdpsBasis::{Measurement as Meas, Spectral};
    use CdpsVariant::{Forward, Reverse};
    let cases = [
        (Method::Ddpm, Reverse, Meas, false),
        (Method::Ddpm, Reverse, Meas, true),
        (Method::Dps, Reverse, Meas, false),
        (Method::Dps, Reverse, Meas, true),
        (Method::Dmps, Reverse, Meas, false),
        (Method::Dmps, Reverse, Meas, true),
        (Method::Cdps, Reverse, Meas, false),
        (Method::Cdps, Forward, Meas, false),
        (Method::Cdps, Reverse, Spectral, false),
        (Method::Cdps, Reverse, Spectral, true),
    ];
    let (rows_v, y_spec, sing) = spectral_form(&gpu, &op, &s);
    for (method, variant, basis, clip) in cases {
        for i in [0usize, 3, 27, STEPS - 1] {
            let what = format!("{method:?} {variant:?} {basis:?} clip={clip} step {i}");
            let opts = SamplerOptions {
                steps: STEPS,
                seed: 9,
                clip,
                variance: VarianceType::FixedLarge,
                method: MethodOptions::default()
                    .with("zeta", zeta)
                    .and_then(|o| o.with("lambda", lambda))
                    .and_then(|o| o.with("cg-iters", 12))
                    .and_then(|o| o.with("cg-tol", 1e-6))
                    .and_then(|o| o.with("cdps-variant", variant.name()))
                    .and_then(|o| o.with("cdps-basis", basis.name()))
                    .unwrap(),
                ..Default::default()
            };
            let x_in: Vec<f32> = randn(&mut r, N * D).iter().map(|v| 1.3 * v).collect();
            let smp = s.sampler(&gpu, method, &model, &op, &opts, &x_in);
            let y_before = smp.cdps_buffers().map(|b| b.y_t.read(&gpu).unwrap());
            smp.step(&gpu, i).unwrap();
            let got = smp.x().read(&gpu).unwrap();
            let z = f64s(&smp.core.z.read(&gpu).unwrap());

            let abar = sched.alphas_cumprod[i];
            close_abar(&base, &sched, i);
            let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
            let beta = sched.betas[i];
            let logvar = sched.fixed_log_variance(VarianceType::FixedLarge, i);
            let noise = if i > 0 { 1.0 } else { 0.0 };
            let clipf = |v: f64| if clip { v.clamp(-1.0, 1.0) } else { v };
            let mut want = Vec::with_capacity(N * D);
            let cd = smp.cdps_buffers().map(|bf| {
                (
                    f64s(&bf.y_t.read(&gpu).unwrap()),
                    f64s(&bf.z_y.read(&gpu).unwrap()),
                    f64s(&bf.e1.read(&gpu).unwrap()),
                    f64s(&bf.e2.read(&gpu).unwrap()),
                    f64s(&bf.y0.read(&gpu).unwrap()),
                )
            });
            for n in 0..N {
                let x = f64s(&x_in[n * D..(n + 1) * D]);
                let eps = s.eps(&x, a, b);
                let x0: Vec<f64> = (0..D).map(|j| clipf((x[j] - b * eps[j]) / a)).collect();
                let mean: Vec<f64> = (0..D)
                    .map(|j| sched.posterior_mean_coef1[i] * x0[j] + sched.posterior_mean_coef2[i] * x[j])
                    .collect();
                let ddpm: Vec<f64> = (0..D)
                    .map(|j| mean[j] + noise * (0.5 * logvar).exp() * z[n * D + j])
                    .collect();
                let out: Vec<f64> = match method {
                    Method::Smc => unreachable!("SMC's kernels are replayed in tests/smc_kernels.rs"),
                    Method::Ald
                    | Method::RedDiff
                    | Method::Ddnm
                    | Method::Diffpir
                    | Method::Daps
                    | Method::Ddrm
                    | Method::Pigdm => {
                        unreachable!("replayed in tests/methods.rs")
                    }
                    Method::Ddpm => ddpm,
                    Method::Dps => {
                        let grad = s.dps_grad(&x, |x| {
                            let e = s.eps(x, a, b);
                            (0..D).map(|j| clipf((x[j] - b * e[j]) / a)).collect()
                        });
                        (0..D).map(|j| ddpm[j] - zeta as f64 * grad[j]).collect()
                    }
                    Method::Dmps => {
                        let g = s.dmps_direction(&x, a, b);
                        let coef = lambda as f64 * beta / (1.0 - beta).sqrt() / a;
                        (0..D).map(|j| ddpm[j] + coef * g[j]).collect()
                    }
                    Method::Cdps => {
                        let (y_after, zy, e1, e2, y0) = cd.as_ref().unwrap();
                        let yb = f64s(&y_before.as_ref().unwrap()[n * M..(n + 1) * M]);
                        let prev = sched.alphas_cumprod_prev[i];
                        // The chain's rows R, its y_0 and the per-component precision pi.
                        let (rows, chain_y0, pi): (&[f64], &[f64], Vec<f64>) = match basis {
                            Meas => (&s.a, &s.y, vec![1.0 / (prev * s.sigma_y * s.sigma_y + 1.0 - prev); M]),
                            _ => (
                                &rows_v,
                                &y_spec,
                                sing.iter()
                                    .map(|sv| sv * sv / (prev * s.sigma_y * s.sigma_y + (1.0 - prev) * sv * sv))
                                    .collect(),
                            ),
                        };
                        let check_m = |name: &str, got: &[f64], want: &[f64]| {
                            for k in 0..M {
                                let g = got[n * M + k];
                                assert!(
                                    (g - want[k]).abs() <= 1e-4 * (1.0 + want[k].abs()),
                                    "{what}: {name} {g} vs {}",
                                    want[k]
                                );
                            }
                        };
                        check_m("chain y_0", y0, chain_y0);
                        let yp: Vec<f64> = (0..M)
                            .map(|k| {
                                sched.posterior_mean_coef1[i] * chain_y0[k]
                                    + sched.posterior_mean_coef2[i] * yb[k]
                                    + sched.posterior_variance[i].sqrt() * zy[n * M + k]
                            })
                            .collect();
                        check_m("y chain", y_after, &yp);
                        let tw = (1.0 - prev) / b;
                        let reps = matvec(rows, &eps);
                        let w: Vec<f64> = (0..M)
                            .map(|k| pi[k] * (yp[k] + tw * reps[k]) + noise * pi[k].sqrt() * e2[n * M + k])
                            .collect();
                        let atw = matvec_t(rows, &w);
                        let (dg, dm): (f64, Vec<f64>) = match variant {
                            CdpsVariant::Reverse => {
                                let dg = (-logvar).exp();
                                (dg, mean.iter().map(|m| dg * m).collect())
                            }
                            CdpsVariant::Forward => (
                                (1.0 - beta) / beta,
                                x.iter().map(|v| (1.0 - beta).sqrt() / beta * v).collect(),
                            ),
                        };
                        let rhs: Vec<f64> = (0..D)
                            .map(|j| dm[j] + noise * dg.sqrt() * e1[n * D + j] + atw[j])
                            .collect();
                        let mut lam = vec![0f64; D * D];
                        for p in 0..D {
                            for q in 0..D {
                                let g: f64 = (0..M).map(|k| pi[k] * rows[k * D + p] * rows[k * D + q]).sum();
                                lam[p * D + q] = g + if p == q { dg } else { 0.0 };
                            }
                        }
                        solve(lam, D, rhs)
                    }
                };
                want.extend(out.iter().map(|&v| v as f32));
            }
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
        }
    }
}

fn matvec(rows: &[f64], x: &[f64]) -> Vec<f64> {
    (0..M).map(|k| (0..D).map(|j| rows[k * D + j] * x[j]).sum()).collect()
}

fn matvec_t(rows: &[f64], v: &[f64]) -> Vec<f64> {
    (0..D).map(|j| (0..M).map(|k| rows[k * D + j] * v[k]).sum()).collect()
}

/// The dense operator's SVD form read back through its GPU plans: V^T as an
/// [M, D] row matrix, y~ = U^T y / s, and s. Checks U diag(s) V^T = A first,
/// so the replay's spectral basis is the operator's.
fn spectral_form(gpu: &Gpu, op: &Dense, s: &Setup) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    use tweedie::operators::LinearOperator;
    let svd = op.svd().expect("dense has an SVD form");
    let sing = f64s(&svd.singulars().read(gpu).unwrap());
    let columns = |n: usize, plan: &dyn Fn(&Tensor, &Tensor) -> Plan| {
        let mut eye = vec![0f32; n * n];
        for j in 0..n {
            eye[j * n + j] = 1.0;
        }
        let inp = Tensor::from_slice(gpu, "eye", &[n, n], &eye).unwrap();
        let out = Tensor::zeros(gpu, "columns", &[n, M]).unwrap();
        plan(&inp, &out).run(gpu).unwrap();
        f64s(&out.read(gpu).unwrap()) // row j = (matrix) e_j
    };
    let vt_cols = columns(D, &|i, o| svd.vt(gpu, i, o).unwrap());
    let ut_cols = columns(M, &|i, o| svd.ut(gpu, i, o).unwrap());
    let vt: Vec<f64> = (0..M * D).map(|idx| vt_cols[(idx % D) * M + idx / D]).collect();
    // U^T's columns e_j -> U^T e_j; U[j][k] = (U^T e_j)_k.
    for p in 0..M {
        for q in 0..D {
            let a: f64 = (0..M).map(|k| ut_cols[p * M + k] * sing[k] * vt[k * D + q]).sum();
            assert!(
                (a - s.a[p * D + q]).abs() < 1e-4,
                "U S V^T [{p},{q}] = {a} vs A {}",
                s.a[p * D + q]
            );
        }
    }
    let y_spec = (0..M)
        .map(|k| {
            let c: f64 = (0..M).map(|j| ut_cols[j * M + k] * s.y[j]).sum();
            if sing[k] > 0.0 {
                c / sing[k]
            } else {
                0.0
            }
        })
        .collect();
    (vt, y_spec, sing)
}

fn close_abar(base: &Schedule, sched: &Schedule, i: usize) {
    let t = sched.timestep_map[i];
    assert!((base.alphas_cumprod[t] - sched.alphas_cumprod[i]).abs() < 1e-12);
}

/// The mixture prior dressed as a learned-sigma model: v = V everywhere, so the
/// learned-range variance path (log var = f log beta + (1 - f) log beta~) is
/// exercised the way the ADM U-Net will use it.
struct LearnedSigma {
    inner: GmmPrior,
}

const V: f32 = 0.3;

impl ScoreModel for LearnedSigma {
    fn name(&self) -> &str {
        "gmm+v"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.inner.in_shape()
    }
    fn learned_sigma(&self) -> bool {
        true
    }
    fn plan_eps(&self, gpu: &Gpu, args: &EpsArgs<'_>) -> Result<Plan, ScoreError> {
        let mut plan = self.inner.plan_eps(gpu, &EpsArgs { v: None, ..*args })?;
        let v = args.v.expect("learned sigma gets a v buffer");
        // v = 0 * x + V
        plan.push(Elementwise::new(gpu, Op::Affine, args.x, v, 0.0, V)?.dispatch);
        Ok(plan)
    }
    fn plan_vjp(&self, gpu: &Gpu, x: &Tensor, t: &Tensor, cot: &Tensor, dx: &Tensor) -> Result<Plan, ScoreError> {
        self.inner.plan_vjp(gpu, x, t, cot, dx)
    }
}

#[test]
fn learned_sigma_variance_is_used() {
    let gpu = gpu();
    let s = setup();
    let sched = Schedule::linear(1000, STEPS).unwrap();
    let model = LearnedSigma {
        inner: GmmPrior::new(
            &gpu,
            &s.w32,
            &s.mu32,
            &s.var32,
            D,
            &tweedie::process::Process::default(),
        )
        .unwrap(),
    };
    let op = Dense::new(&gpu, &HostTensor::new(vec![M, D], s.a32.clone()), [D, 1, 1]).unwrap();
    let mut r = rng(43);
    // early, where beta and beta~ differ most
    let i = 2;
    let opts = SamplerOptions {
        steps: STEPS,
        seed: 4,
        clip: false,
        ..Default::default()
    };
    let x_in = randn(&mut r, N * D);
    let smp = s.sampler(&gpu, Method::Ddpm, &model, &op, &opts, &x_in);
    smp.step(&gpu, i).unwrap();
    let got = smp.x().read(&gpu).unwrap();
    let z = f64s(&smp.core.z.read(&gpu).unwrap());
    let abar = sched.alphas_cumprod[i];
    let (a, b) = (abar.sqrt(), (1.0 - abar).sqrt());
    let sigma = (0.5 * sched.learned_log_variance(i, V as f64)).exp();
    // differs from both fixed choices, so a wrong branch cannot pass
    for kind in [VarianceType::FixedLarge, VarianceType::FixedSmall] {
        let fixed = (0.5 * sched.fixed_log_variance(kind, i)).exp();
        assert!(
            (sigma - fixed).abs() > 0.05 * sigma,
            "{kind:?}: {fixed} vs learned {sigma}"
        );
    }
    let mut want = Vec::new();
    for n in 0..N {
        let x = f64s(&x_in[n * D..(n + 1) * D]);
        let eps = s.eps(&x, a, b);
        for j in 0..D {
            let x0 = (x[j] - b * eps[j]) / a;
            let mean = sched.posterior_mean_coef1[i] * x0 + sched.posterior_mean_coef2[i] * x[j];
            want.push((mean + sigma * z[n * D + j]) as f32);
        }
    }
    assert_close("learned-sigma DDPM step", &got, &want, 1e-4, 1e-3);
}

impl Setup {
    /// The mixture's flow velocity u = E[eps - x0 | x_t] at a = 1 - t, b = t,
    /// from the per-component posteriors: E[x0 | x, k] = mu + a Sigma (x - a mu) / var,
    /// E[eps | x, k] = b (x - a mu) / var, var = a^2 Sigma + b^2.
    fn velocity(&self, x: &[f64], t: f64) -> Vec<f64> {
        let (a, b) = (1.0 - t, t);
        let resp = self.responsibilities(x, a, b);
        (0..D)
            .map(|j| {
                (0..K)
                    .map(|c| {
                        let (mu, sg) = (self.mu[c * D + j], self.var[c * D + j]);
                        let v = a * a * sg + b * b;
                        let r = x[j] - a * mu;
                        let e_x0 = mu + a * sg * r / v;
                        let e_eps = b * r / v;
                        resp[c] * (e_eps - e_x0)
                    })
                    .sum::<f64>()
            })
            .collect()
    }

    /// grad_x |y - A x0hat(x)| by central finite differences.
    fn dps_grad(&self, x: &[f64], x0hat: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
        let loss = |x: &[f64]| {
            let ax = self.ax(&x0hat(x));
            (0..M).map(|k| (self.y[k] - ax[k]).powi(2)).sum::<f64>().sqrt()
        };
        let h = 1e-6;
        (0..D)
            .map(|j| {
                let mut xp = x.to_vec();
                let mut xm = x.to_vec();
                xp[j] += h;
                xm[j] -= h;
                (loss(&xp) - loss(&xm)) / (2.0 * h)
            })
            .collect()
    }

    /// DMPS's direction A^T (sigma_y^2 I + c A A^T)^{-1} (y - A x / a).
    fn dmps_direction(&self, x: &[f64], a: f64, b: f64) -> Vec<f64> {
        let c = (b / a).powi(2);
        let mut sys = vec![0f64; M * M];
        for p in 0..M {
            for q in 0..M {
                let g: f64 = (0..D).map(|k| self.a[p * D + k] * self.a[q * D + k]).sum();
                sys[p * M + q] = c * g + if p == q { self.sigma_y * self.sigma_y } else { 0.0 };
            }
        }
        let ax = self.ax(x);
        let res: Vec<f64> = (0..M).map(|k| self.y[k] - ax[k] / a).collect();
        self.atv(&solve(sys, M, res))
    }
}

/// One step of DDPM (Euler), DPS and DMPS (Algorithm 2) on the flow mixture,
/// and of DDIM (eta 0.5) under DDPM and DMPS on the VP mixture, against f64
/// CPU replays written from the formulas (the flow's velocity from the
/// per-component posteriors; DDIM from Song et al.), at the noise end (t = 1,
/// a = 0), inside, and the last step.
#[test]
fn one_flow_and_ddim_step_matches_cpu_replay() {
    use tweedie::process::Process;
    use tweedie::samplers::BaseSampler;
    let gpu = gpu();
    let s = setup();
    let op = Dense::new(&gpu, &HostTensor::new(vec![M, D], s.a32.clone()), [D, 1, 1]).unwrap();
    let mut r = rng(43);
    let (zeta, lambda, eta) = (0.5f32, 2.0f32, 0.5f64);
    let sched = Schedule::linear(1000, STEPS).unwrap();
    for flow in [true, false] {
        let process = if flow { Process::flow(1.0) } else { Process::default() };
        let model = GmmPrior::new(&gpu, &s.w32, &s.mu32, &s.var32, D, &process).unwrap();
        let methods: &[Method] = if flow {
            &[Method::Ddpm, Method::Dps, Method::Dmps]
        } else {
            &[Method::Ddpm, Method::Dmps]
        };
        for &method in methods {
            for clip in [false, true] {
                for i in [0usize, 7, STEPS - 1] {
                    let what = format!("flow={flow} {method:?} clip={clip} step {i}");
                    let opts = SamplerOptions {
                        steps: STEPS,
                        seed: 11,
                        clip,
                        method: MethodOptions::default()
                            .with("zeta", zeta)
                            .and_then(|o| o.with("lambda", lambda))
                            .unwrap(),
                        sampler: (!flow).then_some(BaseSampler::Ddim),
                        eta: (!flow).then_some(eta as f32),
                        ..Default::default()
                    };
                    let x_in: Vec<f32> = randn(&mut r, N * D);
                    let smp = s.sampler(&gpu, method, &model, &op, &opts, &x_in);
                    smp.step(&gpu, i).unwrap();
                    let got = smp.x().read(&gpu).unwrap();
                    let z = f64s(&smp.core.z.read(&gpu).unwrap());
                    let clipf = |v: f64| if clip { v.clamp(-1.0, 1.0) } else { v };
                    // (a, b) now and next, epshat's coefficient ce and the noise sigma.
                    let (a, b, an, ce, sigma) = if flow {
                        let (t, tn) = ((i + 1) as f64 / STEPS as f64, i as f64 / STEPS as f64);
                        (1.0 - t, t, 1.0 - tn, tn, 0.0)
                    } else {
                        let (ab, abn) = (sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]);
                        let sg = eta * ((1.0 - abn) / (1.0 - ab) * (1.0 - ab / abn)).sqrt();
                        let sg = if i > 0 { sg } else { 0.0 };
                        let ce = (1.0 - abn - sg * sg).max(0.0).sqrt();
                        (ab.sqrt(), (1.0 - ab).sqrt(), abn.sqrt(), ce, sg)
                    };
                    // x0hat (clipped) of the model at x.
                    let x0_at = |x: &[f64]| -> Vec<f64> {
                        if flow {
                            let u = s.velocity(x, b);
                            (0..D).map(|j| clipf(x[j] - b * u[j])).collect()
                        } else {
                            let e = s.eps(x, a, b);
                            (0..D).map(|j| clipf((x[j] - b * e[j]) / a)).collect()
                        }
                    };
                    let mut want = Vec::with_capacity(N * D);
                    for n in 0..N {
                        let x = f64s(&x_in[n * D..(n + 1) * D]);
                        let x0 = x0_at(&x);
                        let base: Vec<f64> = (0..D)
                            .map(|j| {
                                let eh = (x[j] - a * x0[j]) / b;
                                an * x0[j] + ce * eh + sigma * z[n * D + j]
                            })
                            .collect();
                        if flow && !clip {
                            // Without clipping the step is plain Euler: x - dt u.
                            let u = s.velocity(&x, b);
                            for j in 0..D {
                                let euler = x[j] - (b - ce) * u[j];
                                assert!((euler - base[j]).abs() < 1e-9 * (1.0 + euler.abs()), "{what}: Euler");
                            }
                        }
                        let out: Vec<f64> = match method {
                            Method::Ddpm => base,
                            Method::Dps => {
                                let grad = s.dps_grad(&x, x0_at);
                                (0..D).map(|j| base[j] - zeta as f64 * grad[j]).collect()
                            }
                            Method::Dmps if a == 0.0 => base,
                            Method::Dmps => {
                                // grad log p(y | x_t) = g / a. Flow: the paper's
                                // -b (a'_t b - a b'_t) / a lambda grad dt with a'_t = -1,
                                // b'_t = 1, dt = 1 / K; DDIM: lambda b (a' b / a - c) grad.
                                let g = s.dmps_direction(&x, a, b);
                                let coef = if flow {
                                    let dt = 1.0 / STEPS as f64;
                                    -b * (-b - a * 1.0) / a * lambda as f64 * dt / a
                                } else {
                                    lambda as f64 * b * (an * b / a - ce) / a
                                };
                                (0..D).map(|j| base[j] + coef * g[j]).collect()
                            }
                            _ => unreachable!(),
                        };
                        want.extend(out.iter().map(|&v| v as f32));
                    }
                    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                    assert_close(&what, &got, &want, 2e-3 * scale, 2e-3);
                }
            }
        }
    }
}

/// `eps_estimate` (C-DPS's noise estimate for models that predict x0, v or a
/// velocity) against the CPU on an odd size that is not a multiple of the
/// workgroup, with the v-prediction maps of one step.
#[test]
fn eps_estimate_kernel_matches_cpu() {
    use tweedie::gpu::{dispatch_groups, Dispatch, SAMPLER, WG1D};
    use tweedie::process::Process;
    let gpu = gpu();
    let n = 3 * 347;
    let mut r = rng(44);
    let x = randn(&mut r, n);
    let o = randn(&mut r, n);
    let v = Process {
        prediction: tweedie::process::Prediction::V,
        ..Process::default()
    };
    let c = v.coefficients(0.6, 0.8);
    let params = tweedie::samplers::StepParams {
        n: n as u32,
        eps_x: c.eps_x as f32,
        eps_out: c.eps_out as f32,
        ..Default::default()
    };
    let u = gpu.uniform("eps estimate", &params);
    let tx = Tensor::from_slice(&gpu, "x", &[n], &x).unwrap();
    let to = Tensor::from_slice(&gpu, "o", &[n], &o).unwrap();
    let te = Tensor::zeros(&gpu, "eps", &[n]).unwrap();
    let d = Dispatch::new(
        &gpu,
        &SAMPLER,
        "eps_estimate",
        &[],
        &[&u, &tx.buffer, &to.buffer, &te.buffer],
        dispatch_groups(n, WG1D),
    )
    .unwrap();
    Plan { steps: vec![d] }.run(&gpu).unwrap();
    // v = a eps - b x0 and x = a x0 + b eps give eps = b x + a v.
    let want: Vec<f32> = (0..n).map(|i| (0.8 * x[i] as f64 + 0.6 * o[i] as f64) as f32).collect();
    assert_close("eps_estimate", &te.read(&gpu).unwrap(), &want, 1e-6, 1e-6);
}

/// DPS's default zeta by task follows the step count as `--zeta`'s help
/// says: the paper's at 1000 steps, times 1000 / steps below, at most 4 / s
/// for the operator's measured ||A|| = s (x2 SR's 1/2: 8; x4's 1/4: 16); the
/// non-linear tasks' and `gmm`'s stay fixed.
#[test]
fn dps_default_zeta_follows_the_step_count() {
    use tweedie::operators::task::Task;
    use tweedie::samplers::dps::{default_zeta, ZetaRule, PAPER_STEPS, ZETA};

    for (task, paper) in [
        (Task::InpaintBox, 0.5),
        (Task::InpaintRandom, 0.5),
        (Task::Sr, 0.3),
        (Task::DeblurGaussian, 0.3),
        (Task::PhaseRetrieval, 0.4),
        (Task::Jpeg, 1.2),
    ] {
        for gain in [None, Some(0.25), Some(1.0), Some(6.0)] {
            assert_eq!(default_zeta(task, gain).at(PAPER_STEPS), paper, "{task} at 1000 steps");
        }
    }
    // The values the help quotes (inpainting / x2 SR at 20 and 50 steps),
    // and the gain's cap on other operators.
    for (task, gain, steps, zeta) in [
        (Task::InpaintBox, 1.0, 20, 4.0),
        (Task::Sr, 0.5, 20, 8.0),
        (Task::InpaintBox, 1.0, 50, 4.0),
        (Task::Sr, 0.5, 50, 6.0),
        (Task::Sr, 0.5, 100, 3.0),
        (Task::InpaintBox, 1.0, 200, 2.5),
        (Task::Sr, 0.5, 10, 8.0),
        (Task::Sr, 0.5, 40, 7.5),
        (Task::Sr, 0.25, 20, 15.0),
        (Task::Sr, 0.25, 10, 16.0),
        (Task::DeblurGaussian, 1.0, 10, 4.0),
        (Task::Colorize, 0.5, 10, 8.0),
        (Task::Dense, 8.0, 20, 0.5),
        (Task::Dense, 8.0, 1000, 0.3),
        (Task::Jpeg, 1.0, 5, 1.2),
        (Task::PhaseRetrieval, 1.0, 20, 0.4),
    ] {
        assert_eq!(
            default_zeta(task, Some(gain)).at(steps),
            zeta,
            "{task} (gain {gain}) at {steps} steps"
        );
    }
    // Without a measured gain the cap is gain 1's.
    assert_eq!(default_zeta(Task::Sr, None).at(20), 4.0);
    for phrase in [
        "1000 / steps",
        "at most 4 / s ",
        "largest singular value",
        "4 / 8 at 20 steps",
        "4 / 6 at",
    ] {
        assert!(ZETA.help.contains(phrase), "--zeta's help lacks {phrase:?}");
    }
    // Fewer steps never take a smaller step, and none passes its cap.
    for task in Task::ALL {
        for gain in [Some(0.25), Some(1.0), Some(3.0)] {
            let rule = default_zeta(task, gain);
            let cap = rule.at(1);
            let z: Vec<f32> = (1..=2000).map(|k| rule.at(k)).collect();
            assert!(z.iter().all(|v| v.is_finite() && *v > 0.0 && *v <= cap), "{task}");
            assert!(
                z.windows(2).all(|w| w[1] <= w[0]),
                "{task}: not non-increasing in the steps"
            );
        }
    }
    assert_eq!(ZetaRule::from(1.0).at(10), 1.0, "gmm's plain 1.0");
}
