//! Batched matrix-free conjugate gradients on the GPU (`shaders/cg.wgsl`):
//! solves (diag(D) + gamma G) x = b per sample, G = A^T A on the operator's
//! input space or A A^T on its output space (optionally A^T W A / A W A^T with
//! a diagonal weight W), with the operator's own forward
//! and adjoint plans for G p. Alpha and beta stay on the GPU; a fixed number of
//! iterations is recorded and a converged sample's updates become no-ops, so a
//! solve is one stretch of dispatches with no read-back. Iteration counts are
//! kept per sample on the GPU and read back on request.
//!
//! Early exit without read-back: every dispatch of an iteration, the operator's
//! Gram product included, is indirect ([`Dispatch::indirect`]), its grid read
//! from that iteration's slot of an args buffer. A gate kernel after init
//! (`cg_gate_start`, a direct dispatch inside the plan, so every replay starts
//! afresh) zeroes every slot and opens iteration 0; the gate closing each
//! iteration (`cg_gate`, itself indirect) opens the next one only while some
//! sample of the batch is active and the cap is not reached. After the whole
//! batch has converged, each remaining iteration still records its dispatches,
//! but they run zero workgroups. (Where wgpu validates indirect args, which
//! `Gpu::new` turns off except on Windows and an embedding application's
//! instance decides, each indirect dispatch also costs one one-thread
//! validation dispatch, run or skipped.) Results are those of the full-length
//! solve: the skipped iterations were no-ops for every sample.

use super::options::{Kind, MethodOptions, OptionSpec, Value};
use crate::bindings;
use crate::gpu::{dispatch_groups, small_groups, Bindings, Dispatch, KernelSig, Plan, CG, WG1D};
use crate::kernels::elementwise::{Elementwise, Op as ElementOp};
use crate::kernels::random::Noise;
use crate::operators::{LinearOperator, OperatorError};
use crate::tensor::DType;
use crate::tensor::Tensor;
use crate::Gpu;
use wgpu::util::DispatchIndirectArgs;

/// Elements one CG workgroup covers (mirrors `CHUNK` in the WGSL); samples no
/// larger than this take the one-thread-per-sample kernels.
pub const CHUNK: usize = 1024;

bindings! {
    /// `cg_small_init`: x = 0, r = p = b, the state's r.r and b.b (one thread per sample).
    pub struct CgSmallInit for CG: ["cg_small_init"] {
        p: uniform,
        b: read f32,
        x: read_write f32,
        r: read_write f32,
        s_p: read_write f32,
        state: read_write f32,
    }

    /// `cg_small_iter`: one whole iteration given w = G p (one thread per sample).
    pub struct CgSmallIter for CG: ["cg_small_iter"] {
        p: uniform,
        diag: read f32,
        w: read f32,
        x: read_write f32,
        r: read_write f32,
        t_p: read_write f32,
        state: read_write f32,
    }

    /// `cg_init`: x = 0, r = p = b, per-chunk partial sums of |b|^2.
    pub struct CgInit for CG: ["cg_init"] {
        p: uniform,
        b: read f32,
        x: read_write f32,
        r: read_write f32,
        i_p: read_write f32,
        part: read_write f32,
    }

    /// `cg_init_finish`: the partial sums into the state.
    pub struct CgInitFinish for CG: ["cg_init_finish"] {
        p: uniform,
        part: read f32,
        state: read_write f32,
    }

    /// `cg_apply`: Mp = D p + gamma w and the partial sums of p.Mp.
    pub struct CgApply for CG: ["cg_apply"] {
        p: uniform,
        a_p: read f32,
        diag: read f32,
        w: read f32,
        mp: read_write f32,
        part: read_write f32,
    }

    /// `cg_update`: x += alpha p, r -= alpha Mp, the partial sums of r.r.
    pub struct CgUpdate for CG: ["cg_update"] {
        p: uniform,
        state: read f32,
        part_a: read f32,
        u_p: read f32,
        mp: read f32,
        x: read_write f32,
        r: read_write f32,
        part_b: read_write f32,
        prev: read_write f32,
    }

    /// `cg_direction`: p = r + beta p and the state's convergence flags.
    pub struct CgDirection for CG: ["cg_direction"] {
        p: uniform,
        prev: read f32,
        part_b: read f32,
        r: read f32,
        d_p: read_write f32,
        state: read_write f32,
    }

    /// `pw_rhs`: the perturb-and-solve right-hand side sqrt(D) e1 + sqrt(gamma) A^T e2.
    pub struct PwRhs for CG: ["pw_rhs"] {
        p: uniform,
        diag: read f32,
        e1: read f32,
        at: read f32,
        b: read_write f32,
    }

    /// `cg_gate_start`: zeroes every iteration's indirect args, opens iteration 0.
    pub struct CgGateStart for CG: ["cg_gate_start"] {
        p: uniform,
        state: read f32,
        ctl: read_write u32,
        even: read_write u32,
        odd: read_write u32,
    }

    /// `cg_gate`: opens the next iteration while a sample is active.
    pub struct CgGate for CG: ["cg_gate"] {
        p: uniform,
        state: read f32,
        ctl: read_write u32,
        next: read_write u32,
    }
}

/// The binding signatures of the CG kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[
    CgSmallInit::SIG,
    CgSmallIter::SIG,
    CgInit::SIG,
    CgInitFinish::SIG,
    CgApply::SIG,
    CgUpdate::SIG,
    CgDirection::SIG,
    PwRhs::SIG,
    CgGateStart::SIG,
    CgGate::SIG,
];

/// Mirrors `Params` in shaders/cg.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CgParams {
    pub per: u32,
    pub chunks: u32,
    pub batch: u32,
    pub _pad0: u32,
    pub tol2: f32,
    pub gamma: f32,
    pub _pad1: [f32; 2],
}

impl CgParams {
    /// `batch` systems of `per` unknowns, stopping at relative residual `tol`.
    pub fn new(per: usize, batch: usize, tol: f32, gamma: f32) -> CgParams {
        CgParams {
            per: per as u32,
            chunks: per.div_ceil(CHUNK).max(1) as u32,
            batch: batch as u32,
            _pad0: 0,
            tol2: tol * tol,
            gamma,
            _pad1: [0.0; 2],
        }
    }
}

/// One sample's solver state: `state[n * STATE + S_*]` in shaders/cg.wgsl,
/// one f32 slot per field (`rr` is `S_RR`, `active` is `S_ACTIVE`, ...).
/// Counts are stored as f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CgState {
    /// r.r of the current iterate.
    pub rr: f32,
    /// b.b, the scale of the relative tolerance.
    pub bb: f32,
    /// 1 while the sample is above tolerance, 0 once converged.
    pub active: f32,
    /// Iterations of the current solve.
    pub iters: f32,
    /// Iterations over all solves since creation.
    pub total: f32,
    /// Solves since creation (kept in sample 0's slot).
    pub solves: f32,
    pub _pad: [f32; 2],
}

/// f32 slots per sample in the state buffer (mirrors `STATE` in the WGSL).
pub const STATE: usize = std::mem::size_of::<CgState>() / DType::F32.size_bytes();

/// Which Gram matrix the system uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// G = A^T A, vectors shaped like the operator's input.
    Input,
    /// G = A A^T, vectors shaped like the operator's output.
    Output,
}

/// Iteration counts of the solves so far.
#[derive(Clone, Debug, PartialEq)]
pub struct CgStats {
    /// Iterations of the latest solve, per sample.
    pub last: Vec<u32>,
    /// Iterations summed over all solves, per sample.
    pub total: Vec<u32>,
    /// Solves run so far.
    pub solves: u32,
    /// Samples of the latest solve still above tolerance when the cap was hit.
    pub unconverged: usize,
    /// Iterations whose dispatches ran in the latest solve (the batch's
    /// largest count: the rest, up to the cap, were skipped).
    pub executed_last: u32,
    /// Iterations whose dispatches ran, summed over all solves.
    pub executed_total: u32,
}

impl CgStats {
    /// Mean iterations per solve over all samples and solves.
    pub fn mean_per_solve(&self) -> f64 {
        if self.solves == 0 || self.total.is_empty() {
            return 0.0;
        }
        self.total.iter().map(|&t| t as f64).sum::<f64>() / (self.total.len() as f64 * self.solves as f64)
    }
}

/// A planned CG solve of (diag(D) + gamma G) x = b, replayable.
pub struct Cg {
    /// The whole solve: init + `iters` iterations.
    pub plan: Plan,
    params: wgpu::Buffer,
    base: CgParams,
    state: wgpu::Buffer,
    /// The gates' control words (`ctl` in shaders/cg.wgsl: `G_*`).
    ctl: wgpu::Buffer,
    batch: usize,
    pub iters: usize,
}

/// Word of the gates' control buffer holding the iterations run in the
/// current solve (mirrors `G_RUN` in shaders/cg.wgsl).
pub const G_RUN: usize = 2;
/// Word holding the iterations run since creation (mirrors `G_RUN_TOTAL`).
pub const G_RUN_TOTAL: usize = 3;

/// The early-exit gating of `iters` recorded iterations of `body`: every
/// dispatch of iteration i reads its grid from i's slot of the args buffers,
/// which the gates open (full grids) or leave closed (zero). Returns the plan
/// of the iterations (the start gate first) and the control buffer.
fn gated_iterations(
    gpu: &Gpu,
    params: &wgpu::Buffer,
    state: &wgpu::Buffer,
    body: &[Dispatch],
    iters: usize,
) -> Result<(Plan, wgpu::Buffer), OperatorError> {
    // A dispatch with an empty grid records nothing and one already indirect
    // keeps its own args: neither is gated.
    let gated: Vec<bool> = body.iter().map(|d| !d.is_empty() && !d.is_indirect()).collect();
    let k = gated.iter().filter(|&&g| g).count() + 1; // + the closing gate
    let mut ctl: Vec<u32> = vec![k as u32, iters as u32, 0, 0];
    for d in body.iter().zip(&gated).filter(|(_, &g)| g).map(|(d, _)| d) {
        ctl.extend(d.groups());
    }
    ctl.extend([1, 1, 1]);
    let ctl = gpu.upload("cg gate control", &ctl)?;
    let slot = (k * std::mem::size_of::<DispatchIndirectArgs>()) as u64;
    let even = gpu.indirect_buffer("cg args (even iterations)", iters.div_ceil(2) as u64 * slot)?;
    let odd = gpu.indirect_buffer("cg args (odd iterations)", (iters / 2) as u64 * slot)?;
    let mut plan = Plan::new();
    if iters == 0 {
        return Ok((plan, ctl));
    }
    let start = CgGateStart {
        p: params,
        state,
        ctl: &ctl,
        even: &even,
        odd: &odd,
    };
    plan.push(Dispatch::typed(gpu, "cg_gate_start", &[], &start, [1, 1, 1])?);
    // The gate closing an even iteration opens the next (odd) one, and back.
    let gate = |next: &wgpu::Buffer| {
        let b = CgGate {
            p: params,
            state,
            ctl: &ctl,
            next,
        };
        Dispatch::typed(gpu, "cg_gate", &[], &b, [1, 1, 1])
    };
    let (to_odd, to_even) = (gate(&odd)?, gate(&even)?);
    let args_size = std::mem::size_of::<DispatchIndirectArgs>() as u64;
    for i in 0..iters {
        let (args, gate) = if i % 2 == 0 { (&even, &to_odd) } else { (&odd, &to_even) };
        let base = (i / 2) as u64 * slot;
        let mut e = 0u64;
        for (d, &g) in body.iter().zip(&gated) {
            if g {
                plan.push(d.indirect(args, base + e * args_size));
                e += 1;
            } else {
                plan.push(d.clone());
            }
        }
        plan.push(gate.indirect(args, base + e * args_size));
    }
    Ok((plan, ctl))
}

impl Cg {
    /// Plans the solve of `sys`, stopping each sample at relative residual
    /// |r| / |b| <= `stop.tol` or after `stop.iters` iterations.
    pub fn new(gpu: &Gpu, sys: CgSystem<'_>, stop: CgStop) -> Result<Cg, OperatorError> {
        let CgSystem {
            op,
            space,
            b,
            x,
            diag,
            weight,
            gamma,
        } = sys;
        let CgStop { tol, iters } = stop;
        let in_per: usize = op.in_shape().iter().product();
        let out_per: usize = op.out_shape().iter().product();
        let (per, other) = match space {
            Space::Input => (in_per, out_per),
            Space::Output => (out_per, in_per),
        };
        let batch = b.numel() / per.max(1);
        for (what, t) in [("b", b), ("x", x), ("diag", diag)] {
            if t.numel() != batch * per || batch == 0 {
                return Err(OperatorError::Shape {
                    task: format!("cg ({})", op.name()),
                    what: what.into(),
                    got: t.shape.clone(),
                    expected: vec![batch.max(1), per],
                });
            }
        }
        if let Some(wt) = weight {
            if wt.numel() != batch * other {
                return Err(OperatorError::Shape {
                    task: format!("cg ({})", op.name()),
                    what: "weight".into(),
                    got: wt.shape.clone(),
                    expected: vec![batch, other],
                });
            }
        }
        let base = CgParams::new(per, batch, tol, gamma);
        let chunks = base.chunks as usize;
        let params = gpu.uniform("cg params", &base);
        let shape = vec![batch, per];
        let p = Tensor::zeros(gpu, "cg p", &shape)?;
        let r = Tensor::zeros(gpu, "cg r", &shape)?;
        let w = Tensor::zeros(gpu, "cg w", &shape)?;
        let mp = Tensor::zeros(gpu, "cg Mp", &shape)?;
        let tmp = Tensor::zeros(gpu, "cg tmp", &[batch, other])?;
        let f32s = |n: usize| (n * DType::F32.size_bytes()) as u64;
        let part_a = gpu.storage_buffer("cg partials A", f32s(batch * chunks))?;
        let part_b = gpu.storage_buffer("cg partials B", f32s(batch * chunks))?;
        let prev = gpu.storage_buffer("cg prev", f32s(batch * 2))?;
        let state = gpu.storage_buffer("cg state", f32s(batch * STATE))?;

        let (first, second) = match space {
            Space::Input => (op.forward(gpu, &p, &tmp)?, op.adjoint(gpu, &tmp, &w)?),
            Space::Output => (op.adjoint(gpu, &p, &tmp)?, op.forward(gpu, &tmp, &w)?),
        };
        let mut gram = first;
        if let Some(wt) = weight {
            gram.push(Elementwise::new(gpu, ElementOp::Mul, wt, &tmp, 0.0, 0.0)?.dispatch);
        }
        gram.extend(second);
        let mut plan = Plan::new();
        let (gated, ctl) = if per <= CHUNK {
            // One thread per sample: one fused dispatch per iteration.
            let groups = small_groups(batch);
            let init = CgSmallInit {
                p: &params,
                b,
                x,
                r: &r,
                s_p: &p,
                state: &state,
            };
            plan.push(Dispatch::typed(gpu, "cg_small_init", &[], &init, groups)?);
            let iter = CgSmallIter {
                p: &params,
                diag,
                w: &w,
                x,
                r: &r,
                t_p: &p,
                state: &state,
            };
            let iter = Dispatch::typed(gpu, "cg_small_iter", &[], &iter, groups)?;
            let mut body = gram.steps.clone();
            body.push(iter);
            gated_iterations(gpu, &params, &state, &body, iters)?
        } else {
            let grid = [chunks as u32, batch as u32, 1];
            let init = CgInit {
                p: &params,
                b,
                x,
                r: &r,
                i_p: &p,
                part: &part_a,
            };
            plan.push(Dispatch::typed(gpu, "cg_init", &[], &init, grid)?);
            let finish = CgInitFinish {
                p: &params,
                part: &part_a,
                state: &state,
            };
            plan.push(Dispatch::typed(
                gpu,
                "cg_init_finish",
                &[],
                &finish,
                small_groups(batch),
            )?);
            let apply = CgApply {
                p: &params,
                a_p: &p,
                diag,
                w: &w,
                mp: &mp,
                part: &part_a,
            };
            let apply = Dispatch::typed(gpu, "cg_apply", &[], &apply, grid)?;
            let update = CgUpdate {
                p: &params,
                state: &state,
                part_a: &part_a,
                u_p: &p,
                mp: &mp,
                x,
                r: &r,
                part_b: &part_b,
                prev: &prev,
            };
            let update = Dispatch::typed(gpu, "cg_update", &[], &update, grid)?;
            let direction = CgDirection {
                p: &params,
                prev: &prev,
                part_b: &part_b,
                r: &r,
                d_p: &p,
                state: &state,
            };
            let direction = Dispatch::typed(gpu, "cg_direction", &[], &direction, grid)?;
            let mut body = gram.steps.clone();
            body.extend([apply, update, direction]);
            gated_iterations(gpu, &params, &state, &body, iters)?
        };
        plan.extend(gated);
        Ok(Cg {
            plan,
            params,
            base,
            state,
            ctl,
            batch,
            iters,
        })
    }

    /// Changes gamma for the next replay (queued before the next submission).
    pub fn set_gamma(&self, gpu: &Gpu, gamma: f32) {
        let p = CgParams { gamma, ..self.base };
        gpu.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }

    /// Reads the iteration counts back (a sync point; call after a run).
    pub fn stats(&self, gpu: &Gpu) -> Result<CgStats, OperatorError> {
        let s = gpu.read::<CgState>(&self.state, 0, self.batch)?;
        let last: Vec<u32> = s.iter().map(|st| st.iters as u32).collect();
        let total = s.iter().map(|st| st.total as u32).collect();
        let solves = s.first().map_or(0.0, |st| st.solves) as u32;
        let unconverged = s.iter().filter(|st| st.active > 0.5).count();
        let ctl = gpu.read::<u32>(&self.ctl, 0, G_RUN_TOTAL + 1)?;
        Ok(CgStats {
            last,
            total,
            solves,
            unconverged,
            executed_last: ctl[G_RUN],
            executed_total: ctl[G_RUN_TOTAL],
        })
    }
}

/// One batch of systems (diag(D) + gamma G) x = b for [`Cg::new`]: `b`, `x`
/// and `diag` are [N, per] in the chosen space.
#[derive(Clone, Copy)]
pub struct CgSystem<'a> {
    pub op: &'a dyn LinearOperator,
    pub space: Space,
    pub b: &'a Tensor,
    pub x: &'a Tensor,
    pub diag: &'a Tensor,
    /// A diagonal weight W between the two halves of the Gram matrix: G =
    /// A^T W A (input space) or A W A^T (output space), [N, other] (the
    /// space G passes through); the caller may rewrite it between replays.
    /// None: G = A^T A or A A^T.
    pub weight: Option<&'a Tensor>,
    pub gamma: f32,
}

/// When a solve stops: relative residual |r| / |b| <= `tol`, or after `iters`
/// iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgStop {
    pub tol: f32,
    pub iters: usize,
}

impl CgStop {
    /// `--cg-tol` and `--cg-iters` of a run.
    pub fn from_options(opts: &MethodOptions) -> CgStop {
        CgStop {
            tol: opts.number(TOL.name).expect("--cg-tol has a default"),
            iters: opts.count(ITERS.name).expect("--cg-iters has a default"),
        }
    }
}

/// The check `--cg-tol` and `--cg-iters` share.
fn positive(v: Value) -> Result<(), String> {
    let ok = match v {
        Value::Number(x) => x > 0.0,
        Value::Count(n) => n > 0,
        Value::Choice(_) => true,
    };
    if ok {
        Ok(())
    } else {
        Err("--cg-tol must be positive and --cg-iters at least 1".into())
    }
}

/// `--cg-tol`, for every method that solves with CG.
pub const TOL: OptionSpec = OptionSpec {
    name: "cg-tol",
    help: "CG relative-residual tolerance",
    kind: Kind::Number,
    default: Some("0.00001"),
    check: positive,
};

/// `--cg-iters`, for every method that solves with CG.
pub const ITERS: OptionSpec = OptionSpec {
    name: "cg-iters",
    help: "CG iteration cap",
    kind: Kind::Count,
    default: Some("30"),
    check: positive,
};

/// A perturb-and-solve draw v ~ N(0, Lambda^{-1}), Lambda = diag(D) + gamma A^T A:
/// v = Lambda^{-1} (sqrt(D) e1 + sqrt(gamma) A^T e2) with e1, e2 standard
/// normal (its covariance is Lambda^{-1} Lambda Lambda^{-1}).
pub struct PwCgDraw {
    pub plan: Plan,
    pub cg: Cg,
    e1: Noise,
    e2: Noise,
}

impl PwCgDraw {
    pub fn new(
        gpu: &Gpu,
        op: &dyn LinearOperator,
        diag: &Tensor,
        gamma: f32,
        out: &Tensor,
        seed: u64,
        stop: CgStop,
    ) -> Result<PwCgDraw, OperatorError> {
        let in_per: usize = op.in_shape().iter().product();
        let out_per: usize = op.out_shape().iter().product();
        let batch = out.numel() / in_per;
        let e1t = Tensor::zeros(gpu, "pw e1", &[batch, in_per])?;
        let e2t = Tensor::zeros(gpu, "pw e2", &[batch, out_per])?;
        let at = Tensor::zeros(gpu, "pw A^T e2", &[batch, in_per])?;
        let b = Tensor::zeros(gpu, "pw rhs", &[batch, in_per])?;
        let e1 = Noise::new(gpu, &e1t, seed, 0, 0.0, 1.0)?;
        let e2 = Noise::new(gpu, &e2t, seed ^ 0x9e37_79b9_7f4a_7c15, 0, 0.0, 1.0)?;
        let sys = CgSystem {
            op,
            space: Space::Input,
            b: &b,
            x: out,
            diag,
            weight: None,
            gamma,
        };
        let cg = Cg::new(gpu, sys, stop)?;
        let mut plan = Plan::new();
        plan.push(e1.dispatch.clone());
        plan.push(e2.dispatch.clone());
        plan.extend(op.adjoint(gpu, &e2t, &at)?);
        let rhs = PwRhs {
            p: &cg.params,
            diag,
            e1: &e1t,
            at: &at,
            b: &b,
        };
        plan.push(Dispatch::typed(
            gpu,
            "pw_rhs",
            &[],
            &rhs,
            dispatch_groups(batch * in_per, WG1D),
        )?);
        plan.extend(cg.plan.clone());
        Ok(PwCgDraw { plan, cg, e1, e2 })
    }

    /// Selects fresh noise for the next replay.
    pub fn set_stream(&self, gpu: &Gpu, stream: u32) {
        self.e1.set_stream(gpu, stream);
        self.e2.set_stream(gpu, stream);
    }
}
