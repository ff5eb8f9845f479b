// Sequential Monte Carlo on particle populations (src/samplers/smc.rs).
// Particles are a batch laid out [G, P]: G independent populations of P
// particles each. Everything stays on the GPU between steps:
//   smc_normalize : one workgroup per population: log-sum-exp of the
//                   log-weights, normalised weights, ESS = 1 / sum w^2, the
//                   resampling decision (ESS < threshold P, or forced), stats
//   smc_cumsum    : one workgroup per population: inclusive prefix sum of w
//   smc_ancestors : one thread per particle: systematic resampling
//                   (u_j = (j + u) / P, the first k with cdf_k > u_j), or the
//                   identity where the population was not resampled
//   smc_gather    : one thread per element: dst[k] = src[ancestor[k]]
//   smc_rows      : one thread per particle: row sums for short rows
// The twisted diffusion sampler's own step (tds_weigh, tds_step) reads the
// shared step uniform and lives in shaders/sampler.wgsl.

struct Smc {
    particles: u32,    // P
    populations: u32,  // G
    force: u32,        // 1: resample whatever the ESS (the final draw), not counted in the stats
    weighing: u32,     // the row of the ESS history this weighing writes (the step index)
    threshold: f32,    // resample when ESS < threshold * P
    u: f32,            // systematic offset in [0, 1), drawn on the host each step
    _pad1: u32,
    _pad2: u32,
}

// Per-population statistics, STATS floats each (see src/kernels/smc.rs).
const STATS: u32 = 4u;
const STAT_ESS: u32 = 0u;       // ESS / P of the last weighing
const STAT_RESAMPLED: u32 = 1u; // 1 when the last weighing resampled
const STAT_ESS_SUM: u32 = 2u;   // sum of ESS / P over the counted weighings
const STAT_EVENTS: u32 = 3u;    // resampling events (forced ones not counted)

const WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> c: Smc;
@group(0) @binding(1) var<storage, read_write> n_logw: array<f32>;
@group(0) @binding(2) var<storage, read_write> n_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> n_stats: array<f32>;
// ESS / P per weighing and population, [weighings, G] (rows past its end not written).
@group(0) @binding(4) var<storage, read_write> n_hist: array<f32>;

var<workgroup> red: array<f32, 256>;

// The tree max over red[0..WG), block_sum's counterpart: every thread calls it
// (uniform control flow).
fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red[lid] = max(red[lid], red[lid + stride]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

//!include block_sum

@compute @workgroup_size(256)
fn smc_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let np = c.particles;
    let base = g * np;
    var m = -3.4e38;
    for (var i = lid; i < np; i += WG) {
        m = max(m, n_logw[base + i]);
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var i = lid; i < np; i += WG) {
        s += exp(n_logw[base + i] - m);
    }
    let total = block_sum(lid, s);
    var q = 0.0;
    for (var i = lid; i < np; i += WG) {
        let w = exp(n_logw[base + i] - m) / total;
        n_w[base + i] = w;
        q += w * w;
    }
    let sumsq = block_sum(lid, q);
    let ess = 1.0 / (sumsq * f32(np));
    let resample = c.force != 0u || ess < c.threshold;
    if (lid == 0u) {
        let o = g * STATS;
        n_stats[o + STAT_ESS] = ess;
        n_stats[o + STAT_RESAMPLED] = select(0.0, 1.0, resample);
        if (c.force == 0u) {
            n_stats[o + STAT_ESS_SUM] += ess;
            n_stats[o + STAT_EVENTS] += select(0.0, 1.0, resample);
        }
        let h = c.weighing * c.populations + g;
        if (h < arrayLength(&n_hist)) {
            n_hist[h] = ess;
        }
    }
    // Log-weights kept normalised (bounded in f32), or equal after resampling.
    let lz = m + log(total);
    for (var i = lid; i < np; i += WG) {
        n_logw[base + i] = select(n_logw[base + i] - lz, 0.0, resample);
    }
}

// ---- inclusive prefix sum of the normalised weights, per population ----
@group(0) @binding(1) var<storage, read_write> s_w: array<f32>;

@compute @workgroup_size(256)
fn smc_cumsum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let np = c.particles;
    let base = wid.x * np;
    var carry = 0.0;
    for (var start = 0u; start < np; start += WG) {
        let i = start + lid;
        var v = 0.0;
        if (i < np) {
            v = s_w[base + i];
        }
        red[lid] = v;
        workgroupBarrier();
        // Hillis-Steele inclusive scan over the chunk.
        for (var off = 1u; off < WG; off = off * 2u) {
            var add = 0.0;
            if (lid >= off) {
                add = red[lid - off];
            }
            workgroupBarrier();
            red[lid] += add;
            workgroupBarrier();
        }
        if (i < np) {
            s_w[base + i] = carry + red[lid];
        }
        carry += red[WG - 1u];
        workgroupBarrier();
    }
}

// ---- systematic resampling: one thread per particle ----
@group(0) @binding(1) var<storage, read> a_cdf: array<f32>;
@group(0) @binding(2) var<storage, read> a_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_anc: array<u32>;

@compute @workgroup_size(256)
fn smc_ancestors(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    let np = c.particles;
    if (k >= np * c.populations) { return; }
    let g = k / np;
    let j = k % np;
    if (a_stats[g * STATS + STAT_RESAMPLED] < 0.5) {
        a_anc[k] = k;
        return;
    }
    let base = g * np;
    // The cdf's last entry is 1 up to rounding: compare against a target
    // scaled by it, so the last particle is always reachable.
    // Each population its own offset (the golden-ratio sequence from the host's u).
    let u = fract(c.u + f32(g) * 0.6180339887);
    let target_u = (f32(j) + u) / f32(np) * a_cdf[base + np - 1u];
    var lo = 0u;
    var hi = np - 1u;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (a_cdf[base + mid] > target_u) {
            hi = mid;
        } else {
            lo = mid + 1u;
        }
    }
    a_anc[k] = base + lo;
}

// ---- gather of per-particle state: dst[k, e] = src[ancestor[k], e] ----
struct Gather {
    per: u32,    // elements per particle
    total: u32,  // particles * per
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> gp: Gather;
@group(0) @binding(1) var<storage, read> g_anc: array<u32>;
@group(0) @binding(2) var<storage, read> g_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_dst: array<f32>;

@compute @workgroup_size(256)
fn smc_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= gp.total) { return; }
    let k = i / gp.per;
    g_dst[i] = g_src[g_anc[k] * gp.per + i % gp.per];
}

// ---- per-particle row reductions for short rows (one thread per row) ----
// out[k] = sum_j a[k, j]^2 (square = 1) or sum_j a[k, j] (square = 0). For rows
// up to ROWS_MAX elements: a workgroup per row would leave most of its threads
// idle (src/kernels/smc.rs picks the two-level reduction above that).
struct Rows {
    rows: u32,
    per: u32,
    square: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> rp: Rows;
@group(0) @binding(1) var<storage, read> ro_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> ro_out: array<f32>;

@compute @workgroup_size(256)
fn smc_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    if (k >= rp.rows) { return; }
    let base = k * rp.per;
    var s = 0.0;
    for (var j = 0u; j < rp.per; j++) {
        let v = ro_a[base + j];
        s += select(v, v * v, rp.square != 0u);
    }
    ro_out[k] = s;
}
