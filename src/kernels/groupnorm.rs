//! `shaders/groupnorm.wgsl`: GroupNorm statistics, then the normalisation
//! fused with the time-embedding scale-shift and SiLU. Two forms of each
//! direction: chunked (three dispatches; many workgroups per group, for large
//! images on large GPUs) and one-pass (one dispatch, one workgroup per group;
//! what the U-Net plans use).

use crate::bindings;
use crate::gpu::{dispatch_groups, small_groups, Bindable, Bindings, Dispatch, Gpu, GpuError, KernelSig, GROUPNORM};
use crate::tensor::Tensor;

bindings! {
    /// Chunked forward, 1/3: per-chunk (count, mean, M2) of each group.
    pub struct StatsPartial for GROUPNORM: ["gn_stats_partial"] {
        p: uniform,
        x: read T,
        stats: read_write f32,
    }
    /// Chunked, 2/3: the chunks merged per group (statistics or gradient sums).
    pub struct StatsFinish for GROUPNORM: ["gn_stats_finish", "gn_sum_finish"] {
        p: uniform,
        part_in: read f32,
        stats: read_write f32,
    }
    /// Chunked forward, 3/3: the normalisation from the merged statistics.
    pub struct Apply for GROUPNORM: ["gn_apply"] {
        q: uniform,
        xa: read T,
        st: read f32,
        wts: read T,
        ss: read T,
        ya: read_write T,
    }
    /// One-pass forward: statistics and normalisation, one workgroup per group.
    pub struct OnePass for GROUPNORM: ["gn_onepass"] {
        q: uniform,
        xa: read T,
        stats: read_write f32,
        wts: read T,
        ss: read T,
        ya: read_write T,
    }
    /// Chunked backward, 1/3: per-chunk sums of the gradient terms.
    pub struct BwdStats for GROUPNORM: ["gn_bwd_stats"] {
        r: uniform,
        xb: read T,
        stb: read f32,
        wtb: read T,
        ssb: read T,
        dyb: read T,
        gstats: read_write f32,
    }
    /// Chunked backward, 3/3: dx from the merged sums.
    pub struct BwdApply for GROUPNORM: ["gn_bwd_apply"] {
        r: uniform,
        xb: read T,
        stb: read f32,
        wtb: read T,
        ssb: read T,
        dyb: read T,
        gst: read f32,
        dxb: read_write T,
    }
    /// One-pass backward.
    pub struct BwdOnePass for GROUPNORM: ["gn_bwd_onepass"] {
        r: uniform,
        xb: read T,
        stb: read f32,
        wtb: read T,
        ssb: read T,
        dyb: read T,
        dxo: read_write T,
    }
}

/// A backward kernel's bindings: the six every one binds first (parameters
/// `u`, x, the forward's statistics, the weights of affine `a`, the
/// scale-shift `ss`, dy of grad `g`), then its own.
macro_rules! backward_bindings {
    ($kind:ident { $($own:ident: $v:expr),+ }, $u:expr, $x:expr, $stats:expr, $a:expr, $ss:expr, $g:expr) => {
        $kind {
            r: $u,
            xb: $x,
            stb: $stats,
            wtb: $a.weights,
            ssb: $ss,
            dyb: $g.dy,
            $($own: $v),+
        }
    };
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[
    StatsPartial::SIG,
    StatsFinish::SIG,
    Apply::SIG,
    OnePass::SIG,
    BwdStats::SIG,
    BwdApply::SIG,
    BwdOnePass::SIG,
];

/// What a GroupNorm applies after normalising: gamma and beta (in one weight
/// buffer of the activations' dtype), the time embedding's scale-shift
/// ([N, 2C] tensor and element offset) and SiLU.
#[derive(Clone, Copy)]
pub struct GroupNormAffine<'a> {
    pub weights: &'a wgpu::Buffer,
    pub gamma_off: usize,
    pub beta_off: usize,
    pub scale_shift: Option<(&'a Tensor, usize)>,
    pub silu: bool,
}

/// The input gradient's tensors: dx (+)= J^T dy.
#[derive(Clone, Copy)]
pub struct GroupNormGrad<'a> {
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    /// Add into dx (else overwrite it).
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupNormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub groups: u32,
    pub eps: f32,
    pub silu: u32,
    pub scale_shift: u32,
    pub gamma_off: u32,
    pub beta_off: u32,
    pub ss_off: u32,
    pub chunk_len: u32,
    pub chunks: u32,
    /// Backward: 1 adds into dx, 0 overwrites.
    pub accumulate: u32,
    pub _pad: [u32; 3],
}

impl GroupNormParams {
    /// The forward GroupNorm of shape `s`: gamma and beta at their element
    /// offsets, the scale-shift's offset where there is one.
    pub fn forward(s: &GroupNormShape, gamma_off: usize, beta_off: usize, ss_off: Option<usize>, silu: bool) -> Self {
        GroupNormParams {
            n: s.n as u32,
            c: s.c as u32,
            hw: s.hw as u32,
            groups: s.groups as u32,
            eps: s.eps,
            silu: silu as u32,
            scale_shift: ss_off.is_some() as u32,
            gamma_off: gamma_off as u32,
            beta_off: beta_off as u32,
            ss_off: ss_off.unwrap_or(0) as u32,
            chunk_len: CHUNK as u32,
            chunks: s.chunks() as u32,
            accumulate: 0,
            _pad: [0; 3],
        }
    }

    /// The input gradient of the same forward; `accumulate` adds into dx.
    pub fn backward(
        s: &GroupNormShape,
        gamma_off: usize,
        beta_off: usize,
        ss_off: Option<usize>,
        silu: bool,
        accumulate: bool,
    ) -> Self {
        GroupNormParams {
            accumulate: accumulate as u32,
            ..Self::forward(s, gamma_off, beta_off, ss_off, silu)
        }
    }
}

/// Elements of a group one statistics workgroup reduces: a 256 px image's
/// groups split into tens of chunks, so the reductions fill a large GPU.
pub const CHUNK: usize = 8192;

/// Threads per workgroup of both entry points (mirrors `WG`).
pub const WG: u32 = 256;

/// x [n, c, hw] -> y, with per-(n, group) [mean, rstd] left in `stats` [n * groups * 2].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNormShape {
    /// Statistics chunks per group.
    pub fn chunks(&self) -> usize {
        ((self.c / self.groups) * self.hw).div_ceil(CHUNK).max(1)
    }
}

/// The scale-shift binding (`dummy` without one) and the parameter uniform
/// of a GroupNorm, forward or input gradient, chunked or one-pass.
fn binds<'a>(
    gpu: &Gpu,
    s: &GroupNormShape,
    a: &GroupNormAffine<'a>,
    accumulate: Option<bool>,
    dummy: &'a wgpu::Buffer,
) -> (&'a dyn Bindable, wgpu::Buffer) {
    assert!(
        s.groups > 0 && s.c % s.groups == 0,
        "GroupNorm channels must split into groups"
    );
    let ss_off = a.scale_shift.map(|(_, o)| o);
    let (label, params) = match accumulate {
        None => (
            "groupnorm params",
            GroupNormParams::forward(s, a.gamma_off, a.beta_off, ss_off, a.silu),
        ),
        Some(acc) => (
            "groupnorm bwd params",
            GroupNormParams::backward(s, a.gamma_off, a.beta_off, ss_off, a.silu, acc),
        ),
    };
    let ss: &dyn Bindable = match a.scale_shift {
        Some((t, _)) => t,
        None => dummy,
    };
    (ss, gpu.uniform(label, &params))
}

/// The three dispatches of one GroupNorm (partial statistics, their merge,
/// the normalisation), leaving per-(n, group) [mean, rstd] in `stats`.
pub fn group_norm(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &Tensor,
    stats: &Tensor,
    a: &GroupNormAffine,
    y: &Tensor,
    dummy: &wgpu::Buffer,
) -> Result<[Dispatch; 3], GpuError> {
    let (ss, u) = binds(gpu, s, a, None, dummy);
    let partial = Tensor::zeros(gpu, "groupnorm partial stats", &[s.n * s.groups * s.chunks() * 3])?;
    let p = &u;
    let apply = Apply {
        q: p,
        xa: x,
        st: stats,
        wts: a.weights,
        ss,
        ya: y,
    };
    let finish = StatsFinish {
        p,
        part_in: &partial,
        stats,
    };
    let partials = StatsPartial { p, x, stats: &partial };
    chunked(
        gpu,
        s,
        ["gn_stats_partial", "gn_stats_finish", "gn_apply"],
        &partials,
        &finish,
        &apply,
    )
}

/// The chunked form's three dispatches, `entries`: per-chunk partial sums
/// (`partials`), their merge per group, then the elementwise pass (`apply`).
fn chunked(
    gpu: &Gpu,
    s: &GroupNormShape,
    [partial, merge, elementwise]: [&str; 3],
    partials: &impl Bindings,
    finish: &StatsFinish,
    apply: &impl Bindings,
) -> Result<[Dispatch; 3], GpuError> {
    let ov = [("WG", WG as f64)];
    let groups = (s.n * s.groups) as u32;
    Ok([
        Dispatch::typed(gpu, partial, &ov, partials, [s.chunks() as u32, groups, 1])?,
        Dispatch::typed(gpu, merge, &ov, finish, small_groups(groups as usize))?,
        Dispatch::typed(gpu, elementwise, &ov, apply, dispatch_groups(s.n * s.c * s.hw, WG))?,
    ])
}

/// [`group_norm`] in one dispatch (`gn_onepass`): one workgroup per (sample,
/// group) reduces its group and normalises it. Same arguments and results
/// (y, and `stats` for the backward pass); no partial-statistics buffer.
pub fn group_norm_onepass(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &Tensor,
    stats: &Tensor,
    a: &GroupNormAffine,
    y: &Tensor,
    dummy: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ss, u) = binds(gpu, s, a, None, dummy);
    Dispatch::typed(
        gpu,
        "gn_onepass",
        &[("WG", WG as f64)],
        &OnePass {
            q: &u,
            xa: x,
            stats,
            wts: a.weights,
            ss,
            ya: y,
        },
        [(s.n * s.groups) as u32, 1, 1],
    )
}

/// [`group_norm_bwd`] in one dispatch (`gn_bwd_onepass`): one workgroup per
/// (sample, group) sums its group and writes its gradient.
pub fn group_norm_bwd_onepass(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &Tensor,
    stats: &Tensor,
    a: &GroupNormAffine,
    g: &GroupNormGrad,
    dummy: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ss, u) = binds(gpu, s, a, Some(g.accumulate), dummy);
    Dispatch::typed(
        gpu,
        "gn_bwd_onepass",
        &[("WG", WG as f64)],
        &backward_bindings!(BwdOnePass { dxo: g.dx }, &u, x, stats, a, ss, g),
        [(s.n * s.groups) as u32, 1, 1],
    )
}

/// The input gradient of [`group_norm`] (same shape and affine part; `stats`
/// as the forward left them). Three dispatches (per-chunk sums, their
/// totals, the gradient).
pub fn group_norm_bwd(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &Tensor,
    stats: &Tensor,
    a: &GroupNormAffine,
    g: &GroupNormGrad,
    dummy: &wgpu::Buffer,
) -> Result<[Dispatch; 3], GpuError> {
    let (ss, u) = binds(gpu, s, a, Some(g.accumulate), dummy);
    let partial = Tensor::zeros(gpu, "groupnorm bwd partial sums", &[s.n * s.groups * s.chunks() * 2])?;
    let gstats = Tensor::zeros(gpu, "groupnorm bwd sums", &[s.n * s.groups * 2])?;
    let sums = backward_bindings!(BwdStats { gstats: &partial }, &u, x, stats, a, ss, g);
    let finish = StatsFinish {
        p: &u,
        part_in: &partial,
        stats: &gstats,
    };
    let apply = backward_bindings!(
        BwdApply {
            gst: &gstats,
            dxb: g.dx
        },
        &u,
        x,
        stats,
        a,
        ss,
        g
    );
    chunked(
        gpu,
        s,
        ["gn_bwd_stats", "gn_sum_finish", "gn_bwd_apply"],
        &sums,
        &finish,
        &apply,
    )
}
