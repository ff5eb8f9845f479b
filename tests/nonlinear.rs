//! A non-linear measurement y = (A x)^2 (elementwise; A the mixture problem's
//! dense matrix), implemented here against the public `Operator` trait: its
//! VJP against a CPU reference, the methods that need A^T or an SVD form
//! refusing it in one line when planned, and DPS and SMC (which need only
//! the VJP) sampling with it and fitting the measurement better than the
//! prior does.

mod common;
use common::gmm::*;

use tweedie::gpu::Plan;
use tweedie::kernels::elementwise::{Elementwise, Op};
use tweedie::operators::dense::Dense;
use tweedie::operators::{batch_of, LinearOperator, Operator, OperatorError};
use tweedie::process::Process;
use tweedie::samplers::{GmmPrior, Measurement, Method, MethodOptions, Sampler, SamplerOptions};
use tweedie::{Gpu, Tensor};

/// y = (A x)^2 elementwise.
struct Squared {
    a: Dense,
    m: usize,
}

impl Squared {
    /// A x into a fresh [N, m] tensor, and the plan that fills it.
    fn ax(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, Plan), OperatorError> {
        let n = batch_of(self.name(), "x", x, self.in_shape())?;
        let ax = Tensor::zeros(gpu, "A x", &[n, self.m])?;
        let plan = self.a.forward(gpu, x, &ax)?;
        Ok((ax, plan))
    }
}

impl Operator for Squared {
    fn name(&self) -> &str {
        "squared-dense"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.a.in_shape()
    }
    fn out_shape(&self) -> [usize; 3] {
        self.a.out_shape()
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let (ax, mut plan) = self.ax(gpu, x)?;
        // y = A x, then y = (A x) * y.
        plan.push(Elementwise::new(gpu, Op::Affine, &ax, y, 1.0, 0.0)?.dispatch);
        plan.push(Elementwise::new(gpu, Op::Mul, &ax, y, 0.0, 0.0)?.dispatch);
        Ok(plan)
    }
    /// J^T v = A^T (2 (A x) * v).
    fn vjp(&self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        let (ax, mut plan) = self.ax(gpu, x)?;
        let w = Tensor::zeros(gpu, "2 (A x) v", &ax.shape)?;
        plan.push(Elementwise::new(gpu, Op::Affine, &ax, &w, 2.0, 0.0)?.dispatch);
        plan.push(Elementwise::new(gpu, Op::Mul, v, &w, 0.0, 0.0)?.dispatch);
        plan.extend(self.a.adjoint(gpu, &w, out)?);
        Ok(plan)
    }
}

struct Setup {
    gpu: std::sync::Arc<Gpu>,
    case: Case,
    model: GmmPrior,
    op: Squared,
    /// the measurement y = (A x)^2 of the problem's y = A x0 + n: y_lin^2
    y: Vec<f32>,
}

fn setup() -> Setup {
    let gpu = common::gpu();
    let case = load("d8_m2");
    let p = &case.problem;
    let model = GmmPrior::new(&gpu, &p.weights, &p.means, &p.vars, p.d, &Process::default()).unwrap();
    let op = Squared {
        a: Dense::new(&gpu, &p.a, [p.d, 1, 1]).unwrap(),
        m: p.m,
    };
    let y = p.y.iter().map(|v| v * v).collect();
    Setup {
        gpu,
        case,
        model,
        op,
        y,
    }
}

fn opts(steps: usize, method: MethodOptions) -> SamplerOptions {
    SamplerOptions {
        method,
        ..mixture_opts(steps, 3)
    }
}

/// Mean over samples of |y - (A x)^2|, on the CPU.
fn misfit(s: &Setup, xs: &[f32]) -> f64 {
    let p = &s.case.problem;
    let a = &p.a.data;
    let per_sample: Vec<f64> = xs
        .chunks(p.d)
        .map(|x| {
            (0..p.m)
                .map(|k| {
                    let ax: f64 = (0..p.d).map(|j| a[k * p.d + j] as f64 * x[j] as f64).sum();
                    (s.y[k] as f64 - ax * ax).powi(2)
                })
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    per_sample.iter().sum::<f64>() / per_sample.len() as f64
}

#[test]
fn vjp_matches_the_cpu_jacobian() {
    let s = setup();
    let p = &s.case.problem;
    let gpu = &s.gpu;
    let n = 3;
    let mut r = common::rng(7);
    let x = common::randn(&mut r, n * p.d);
    let v = common::randn(&mut r, n * p.m);
    let xt = Tensor::from_slice(gpu, "x", &[n, p.d, 1, 1], &x).unwrap();
    let vt = Tensor::from_slice(gpu, "v", &[n, p.m, 1, 1], &v).unwrap();
    let out = Tensor::zeros(gpu, "J^T v", &[n, p.d, 1, 1]).unwrap();
    s.op.vjp(gpu, &xt, &vt, &out).unwrap().run(gpu).unwrap();
    let got = out.read(gpu).unwrap();
    let a = &p.a.data;
    let mut want = vec![0f32; n * p.d];
    for i in 0..n {
        for k in 0..p.m {
            let ax: f64 = (0..p.d).map(|j| a[k * p.d + j] as f64 * x[i * p.d + j] as f64).sum();
            let w = 2.0 * ax * v[i * p.m + k] as f64;
            for j in 0..p.d {
                want[i * p.d + j] += (a[k * p.d + j] as f64 * w) as f32;
            }
        }
    }
    common::assert_close("J^T v", &got, &want, 1e-4, 1e-4);
}

#[test]
fn methods_that_need_a_linear_measurement_refuse_it() {
    let s = setup();
    assert!(s.op.linear().is_none());
    for (name, label) in [("dmps", "DMPS"), ("cdps", "C-DPS")] {
        let method = Method::from_name(name).unwrap();
        let meas = Measurement {
            op: &s.op,
            y: &s.y,
            sigma_y: s.case.problem.sigma_y,
        };
        let err = Sampler::new(
            &s.gpu,
            method,
            &s.model,
            Some(meas),
            4,
            &opts(10, MethodOptions::default()),
        )
        .err()
        .unwrap_or_else(|| panic!("{name} planned on a non-linear measurement"))
        .to_string();
        assert_eq!(
            err,
            format!("{label} needs a linear measurement; squared-dense is not"),
            "{name}"
        );
        assert_eq!(err.lines().count(), 1);
    }
}

#[test]
fn dps_and_smc_sample_with_a_nonlinear_measurement() {
    let s = setup();
    let n = 256;
    let p = &s.case.problem;
    let run = |method: Method, o: &SamplerOptions| {
        let meas = Measurement {
            op: &s.op,
            y: &s.y,
            sigma_y: p.sigma_y,
        };
        let smp = Sampler::new(&s.gpu, method, &s.model, Some(meas), n, o).unwrap();
        smp.run(&s.gpu).unwrap();
        let x = smp.x().read(&s.gpu).unwrap();
        assert!(x.iter().all(|v| v.is_finite()), "{method:?} diverged");
        x
    };
    let prior = misfit(&s, &prior_samples(p, n, 1));
    let dps = misfit(
        &s,
        &run(Method::from_name("dps").unwrap(), &opts(200, MethodOptions::default())),
    );
    let particles = MethodOptions::default().with("particles", 16).unwrap();
    let smc = misfit(&s, &run(Method::from_name("smc").unwrap(), &opts(200, particles)));
    println!("misfit |y - (A x)^2|: prior {prior:.4}, DPS {dps:.4}, SMC {smc:.4}");
    assert!(dps < 0.7 * prior, "DPS misfit {dps} vs the prior's {prior}");
    assert!(smc < 0.7 * prior, "SMC misfit {smc} vs the prior's {prior}");
}
