//! `shaders/smc.wgsl`: the particle machinery of sequential Monte Carlo, all
//! on the GPU. A [`Population`] holds G independent populations of P particles
//! ([G, P] in a batch): their log-weights, the weighing plan (log-sum-exp
//! normalisation, effective sample size, the resampling decision, the prefix
//! sum of the weights, systematic ancestors) and [`Population::gather`], which
//! moves any per-particle tensor to its ancestors. Nothing is read back
//! between steps; [`Population::stats`] reads the counters once at the end.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, Plan, SMC, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// `smc_normalize`: log-sum-exp normalisation of each population's
    /// weights, its ESS and the resampling decision.
    pub struct SmcNormalize for SMC: ["smc_normalize"] {
        c: uniform,
        logw: read_write f32,
        w: read_write f32,
        stats: read_write f32,
        hist: read_write f32,
    }

    /// `smc_cumsum`: the inclusive prefix sum of each population's weights.
    pub struct SmcCumsum for SMC: ["smc_cumsum"] {
        c: uniform,
        w: read_write f32,
    }

    /// `smc_ancestors`: systematic resampling's ancestor of each particle.
    pub struct SmcAncestors for SMC: ["smc_ancestors"] {
        c: uniform,
        cdf: read f32,
        stats: read f32,
        anc: read_write u32,
    }

    /// `smc_gather`: dst[k, :] = src[ancestor[k], :].
    pub struct SmcGather for SMC: ["smc_gather"] {
        gp: uniform,
        anc: read u32,
        src: read f32,
        dst: read_write f32,
    }

    /// `smc_rows`: one sum (or sum of squares) per row.
    pub struct SmcRows for SMC: ["smc_rows"] {
        rp: uniform,
        a: read f32,
        out: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[
    SmcNormalize::SIG,
    SmcCumsum::SIG,
    SmcAncestors::SIG,
    SmcGather::SIG,
    SmcRows::SIG,
];

/// Mirrors `Smc` in shaders/smc.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SmcParams {
    pub particles: u32,
    pub populations: u32,
    pub force: u32,
    /// The ESS history's row this weighing writes.
    pub weighing: u32,
    pub threshold: f32,
    pub u: f32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Mirrors `Gather` in shaders/smc.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatherParams {
    pub per: u32,
    pub total: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl GatherParams {
    pub fn new(particles: usize, per: usize) -> GatherParams {
        GatherParams {
            per: per as u32,
            total: (particles * per) as u32,
            ..GatherParams::default()
        }
    }
}

/// Mirrors `Rows` in shaders/smc.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowsParams {
    pub rows: u32,
    pub per: u32,
    pub square: u32,
    pub _pad: u32,
}

/// Rows up to this length are reduced one thread per row ([`RowReduce`]).
pub const ROWS_MAX: usize = 1024;

/// out[k] = sum_j a[k, j]^2 or sum_j a[k, j] over the rows of `a` [rows, per]:
/// one thread per row up to [`ROWS_MAX`] elements, the two-level reduction
/// (`kernels::reduce`) above it.
pub struct RowReduce {
    pub out: Tensor,
    pub plan: Plan,
    _keep: Vec<wgpu::Buffer>,
    _dot: Option<crate::kernels::reduce::BatchedDot>,
}

impl RowReduce {
    pub fn new(gpu: &Gpu, a: &Tensor, rows: usize, square: bool) -> Result<RowReduce, GpuError> {
        if rows == 0 || a.numel() % rows != 0 {
            return Err(GpuError::Shape {
                what: "smc row reduction".into(),
                expected: vec![rows],
                got: a.shape.clone(),
            });
        }
        let per = a.numel() / rows;
        if per > ROWS_MAX {
            let ones;
            let b = if square {
                a
            } else {
                ones = Tensor::from_slice(gpu, "ones", &a.shape, &vec![1.0; a.numel()])?;
                &ones
            };
            let dot = crate::kernels::reduce::BatchedDot::new(gpu, a, b, rows, false)?;
            return Ok(RowReduce {
                out: Tensor::wrap(dot.out.buffer.clone(), &[rows]),
                plan: dot.plan.clone(),
                _keep: if square { Vec::new() } else { vec![b.buffer.clone()] },
                _dot: Some(dot),
            });
        }
        let out = Tensor::zeros(gpu, "row sums", &[rows])?;
        let params = gpu.uniform(
            "smc rows",
            &RowsParams {
                rows: rows as u32,
                per: per as u32,
                square: square as u32,
                _pad: 0,
            },
        );
        let mut plan = Plan::new();
        let b = SmcRows {
            rp: &params,
            a,
            out: &out,
        };
        plan.push(Dispatch::typed(gpu, "smc_rows", &[], &b, dispatch_groups(rows, WG1D))?);
        Ok(RowReduce {
            out,
            plan,
            _keep: vec![params],
            _dot: None,
        })
    }
}

/// Floats of statistics per population (mirrors `STATS` in the WGSL), and
/// their slots.
pub const STATS: usize = 4;
pub const STAT_ESS: usize = 0;
pub const STAT_RESAMPLED: usize = 1;
pub const STAT_ESS_SUM: usize = 2;
pub const STAT_EVENTS: usize = 3;

/// Workgroup size of the per-population kernels (mirrors `WG`).
pub const WG: usize = 256;

/// What the populations did over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct PopulationStats {
    /// ESS / P after the last weighing, per population.
    pub last_ess: Vec<f32>,
    /// Mean ESS / P over the counted weighings, per population.
    pub mean_ess: Vec<f64>,
    /// Resampling events (the final forced draw not counted), per population.
    pub events: Vec<u32>,
    /// ESS / P over time, per population: entry i is step i's weighing
    /// (steps run from the last index down to 0; entry K is the final draw's).
    pub ess_history: Vec<Vec<f32>>,
    /// Distinct ancestors of the last resampling, per population: after a
    /// finished run, the distinct particles of the population returned.
    pub distinct: Vec<u32>,
}

impl PopulationStats {
    /// At most `points` step indices, evenly spread from the first step
    /// (index K - 1) to the last (0), for a summary of the ESS history.
    pub fn timeline(&self, points: usize) -> Vec<usize> {
        let k = self.ess_history.first().map_or(0, |h| h.len().saturating_sub(1));
        if k <= 1 || points < 2 {
            return if k == 0 { Vec::new() } else { vec![k - 1] };
        }
        let n = points.min(k);
        let mut out: Vec<usize> = (0..n).map(|j| (k - 1) - j * (k - 1) / (n - 1)).collect();
        out.dedup();
        out
    }
}

/// G populations of P particles: log-weights, normalised weights / their
/// prefix sums, ancestors and statistics, and the weighing plan.
pub struct Population {
    pub particles: usize,
    pub populations: usize,
    /// log w [G * P]; kept normalised, zero after a resampling.
    pub logw: Tensor,
    /// Normalised weights, then their inclusive prefix sum per population [G * P].
    pub cdf: Tensor,
    /// Ancestor of each particle (global index) [G * P], u32.
    pub ancestors: wgpu::Buffer,
    /// [G, STATS] floats.
    pub stats: Tensor,
    /// ESS / P per weighing, [weighings, G].
    pub history: Tensor,
    pub uniform: wgpu::Buffer,
    /// normalise + prefix sum + ancestors.
    pub weigh: Plan,
    threshold: f32,
}

impl Population {
    /// `threshold`: resample when ESS < threshold * P (0 never, 1 always but for
    /// equal weights); `weighings`: rows of the ESS history kept (a run of K
    /// steps weighs K + 1 times).
    pub fn new(
        gpu: &Gpu,
        particles: usize,
        populations: usize,
        threshold: f32,
        weighings: usize,
    ) -> Result<Population, GpuError> {
        if particles == 0 || populations == 0 {
            return Err(GpuError::Other("a population needs at least one particle".into()));
        }
        let n = particles * populations;
        let logw = Tensor::zeros(gpu, "smc log-weights", &[n])?;
        let cdf = Tensor::zeros(gpu, "smc weights / cdf", &[n])?;
        let ancestors = gpu.storage_buffer("smc ancestors", (n * 4) as u64)?;
        let stats = Tensor::zeros(gpu, "smc stats", &[populations, STATS])?;
        let history = Tensor::zeros(gpu, "smc ess history", &[weighings.max(1), populations])?;
        let params = SmcParams {
            particles: particles as u32,
            populations: populations as u32,
            threshold,
            ..SmcParams::default()
        };
        let uniform = gpu.uniform("smc params", &params);
        let g = [populations as u32, 1, 1];
        let mut weigh = Plan::new();
        let b = SmcNormalize {
            c: &uniform,
            logw: &logw,
            w: &cdf,
            stats: &stats,
            hist: &history,
        };
        weigh.push(Dispatch::typed(gpu, "smc_normalize", &[], &b, g)?);
        let b = SmcCumsum { c: &uniform, w: &cdf };
        weigh.push(Dispatch::typed(gpu, "smc_cumsum", &[], &b, g)?);
        let b = SmcAncestors {
            c: &uniform,
            cdf: &cdf,
            stats: &stats,
            anc: &ancestors,
        };
        weigh.push(Dispatch::typed(
            gpu,
            "smc_ancestors",
            &[],
            &b,
            dispatch_groups(n, WG1D),
        )?);
        Ok(Population {
            particles,
            populations,
            logw,
            cdf,
            ancestors,
            stats,
            history,
            uniform,
            weigh,
            threshold,
        })
    }

    /// Queues the next weighing: its row of the ESS history, its systematic
    /// offset `u` in [0, 1) and whether resampling is forced (the final draw).
    pub fn set(&self, gpu: &Gpu, weighing: usize, u: f32, force: bool) {
        let params = SmcParams {
            particles: self.particles as u32,
            populations: self.populations as u32,
            force: force as u32,
            weighing: weighing as u32,
            threshold: self.threshold,
            u,
            ..SmcParams::default()
        };
        gpu.queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
    }

    /// Resets log-weights and statistics (a new run).
    pub fn reset(&self, gpu: &Gpu) -> Result<(), GpuError> {
        self.logw.write(gpu, &vec![0.0; self.logw.numel()])?;
        self.stats.write(gpu, &vec![0.0; self.stats.numel()])?;
        self.history.write(gpu, &vec![0.0; self.history.numel()])?;
        Ok(())
    }

    /// dst[k, :] = src[ancestor[k], :] for a per-particle tensor `src`
    /// ([G * P, ...]); `dst` is a scratch tensor of the same size. Keep the
    /// returned uniform alive with the dispatch.
    pub fn gather(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor) -> Result<(Dispatch, wgpu::Buffer), GpuError> {
        let n = self.particles * self.populations;
        if src.numel() != dst.numel() || src.numel() % n != 0 {
            return Err(GpuError::Shape {
                what: "smc gather".into(),
                expected: src.shape.clone(),
                got: dst.shape.clone(),
            });
        }
        let params = gpu.uniform("smc gather", &GatherParams::new(n, src.numel() / n));
        let b = SmcGather {
            gp: &params,
            anc: &self.ancestors,
            src,
            dst,
        };
        let d = Dispatch::typed(gpu, "smc_gather", &[], &b, dispatch_groups(src.numel(), WG1D))?;
        Ok((d, params))
    }

    /// The counters so far (a read-back), after `weighings` counted weighings.
    pub fn stats(&self, gpu: &Gpu, weighings: usize) -> Result<PopulationStats, GpuError> {
        let s = self.stats.read(gpu)?;
        let rows: Vec<&[f32]> = s.chunks(STATS).collect();
        Ok(PopulationStats {
            last_ess: rows.iter().map(|r| r[STAT_ESS]).collect(),
            mean_ess: rows
                .iter()
                .map(|r| r[STAT_ESS_SUM] as f64 / weighings.max(1) as f64)
                .collect(),
            events: rows.iter().map(|r| r[STAT_EVENTS] as u32).collect(),
            ess_history: self.ess_history(gpu)?,
            distinct: self.distinct(gpu)?,
        })
    }

    fn ess_history(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        let h = self.history.read(gpu)?;
        let g = self.populations;
        Ok((0..g).map(|k| h.iter().skip(k).step_by(g).copied().collect()).collect())
    }

    fn distinct(&self, gpu: &Gpu) -> Result<Vec<u32>, GpuError> {
        let anc: Vec<u32> = gpu.read(&self.ancestors, 0, self.particles * self.populations)?;
        Ok(anc
            .chunks(self.particles)
            .map(|c| c.iter().collect::<std::collections::BTreeSet<_>>().len() as u32)
            .collect())
    }
}
