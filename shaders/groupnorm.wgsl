// GroupNorm over [N, C, HW], fused with the optional scale-shift of the time
// embedding and SiLU:
//   gn_stats_partial : grid (chunks, n * groups); a group is one contiguous run of
//              C/G * HW values in NCHW, cut into chunks so that large images still
//              fill the GPU. Two passes per chunk (mean, then centred sum of squares)
//              for accuracy -> partial[3j..] = (count, mean, M2).
//   gn_stats_finish : one thread per group merges its chunks (Chan et al.) and
//              writes stats[2i] = mean, stats[2i+1] = rstd (kept for the backward pass).
//   gn_apply : one thread per element:
//              y = silu?( ((x - mean) rstd gamma + beta) (1 + scale) + shift )
//   gn_onepass : all three in one dispatch, one workgroup per (sample, group):
//              fewer dispatches, fewer workgroups (the U-Net plans use it).

// Tensor and weight storage type: f32 as written; `Shader::typed` makes the f16
// instance. Statistics (kept in f32 buffers) and every sum run in f32.
alias T = f32;

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    silu: u32,         // 1: SiLU after the affine
    scale_shift: u32,  // 1: ss holds [N, 2C] = [scale | shift] per sample
    gamma_off: u32,
    beta_off: u32,
    ss_off: u32,
    chunk_len: u32,   // elements per chunk of a group
    chunks: u32,      // chunks per group
    accumulate: u32,  // backward: 1 adds into dx, 0 overwrites
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;
const MAX_WG: u32 = 1024u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

var<workgroup> red: array<f32, MAX_WG>;

//!include block_sum

// Group gi = n * groups + g of a [N, C, HW] tensor: its sample, first
// channel, first element and length (one contiguous run in NCHW).
struct Group {
    n: u32,
    c0: u32,
    base: u32,
    len: u32,
}

fn group_of(gi: u32, prm: Params) -> Group {
    let cpg = prm.c / prm.groups;
    let len = cpg * prm.hw;
    return Group(gi / prm.groups, (gi % prm.groups) * cpg, gi * len, len);
}

// Element i's (sample, channel, group index n * groups + g).
fn elem_of(i: u32, prm: Params) -> vec3<u32> {
    let nc = i / prm.hw;
    let c = nc % prm.c;
    let n = nc / prm.c;
    return vec3<u32>(n, c, n * prm.groups + c / (prm.c / prm.groups));
}

@compute @workgroup_size(WG)
fn gn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let gi = wid.y; // n * groups + g
    let g = group_of(gi, p);
    let start = wid.x * p.chunk_len;
    let end = min(start + p.chunk_len, g.len);
    let base = g.base;
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        s += f32(x[base + i]);
    }
    let count = f32(end - start);
    let mean = block_sum(lid, s) / count;
    var q = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let d = f32(x[base + i]) - mean;
        q += d * d;
    }
    let m2 = block_sum(lid, q);
    if (lid == 0u) {
        let j = 3u * (gi * p.chunks + wid.x);
        stats[j] = count;
        stats[j + 1u] = mean;
        stats[j + 2u] = m2;
    }
}

@group(0) @binding(1) var<storage, read> part_in: array<f32>;

@compute @workgroup_size(WG_SMALL)
fn gn_stats_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
    let gi = gid.x;
    if (gi >= p.n * p.groups) {
        return;
    }
    var na = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        let j = 3u * (gi * p.chunks + c);
        let nb = part_in[j];
        let delta = part_in[j + 1u] - mean;
        let n = na + nb;
        mean += delta * nb / n;
        m2 += part_in[j + 2u] + delta * delta * na * nb / n;
        na = n;
    }
    stats[2u * gi] = mean;
    stats[2u * gi + 1u] = inverseSqrt(m2 / na + p.eps);
}

// Backward helper: sums the per-chunk pairs of gn_bwd_stats into one pair per group.
@compute @workgroup_size(WG_SMALL)
fn gn_sum_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
    let gi = gid.x;
    if (gi >= p.n * p.groups) {
        return;
    }
    var a = 0.0;
    var b = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        let j = 2u * (gi * p.chunks + c);
        a += part_in[j];
        b += part_in[j + 1u];
    }
    stats[2u * gi] = a;
    stats[2u * gi + 1u] = b;
}

@group(0) @binding(0) var<uniform> q: Params;
@group(0) @binding(1) var<storage, read> xa: array<T>;
@group(0) @binding(2) var<storage, read> st: array<f32>;
@group(0) @binding(3) var<storage, read> wts: array<T>;
@group(0) @binding(4) var<storage, read> ss: array<T>;
@group(0) @binding(5) var<storage, read_write> ya: array<T>;

// The normalised, scale-shifted and SiLU'd value of x = v at sample n, channel c.
fn gn_out(v: f32, mean: f32, rstd: f32, n: u32, c: u32) -> f32 {
    var u = (v - mean) * rstd * f32(wts[q.gamma_off + c]) + f32(wts[q.beta_off + c]);
    if (q.scale_shift == 1u) {
        let e = q.ss_off + n * 2u * q.c;
        u = u * (1.0 + f32(ss[e + c])) + f32(ss[e + q.c + c]);
    }
    if (q.silu == 1u) {
        u = u / (1.0 + exp(-u));
    }
    return u;
}

@compute @workgroup_size(WG)
fn gn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let total = q.n * q.c * q.hw;
    if (i >= total) {
        return;
    }
    let e = elem_of(i, q);
    ya[i] = T(gn_out(f32(xa[i]), st[2u * e.z], st[2u * e.z + 1u], e.x, e.y));
}

// One workgroup per (sample, group), grid (n * groups): the statistics (mean,
// then the centred sum of squares), kept in `stats` for the backward pass, and
// the normalisation, in one dispatch.
@compute @workgroup_size(WG)
fn gn_onepass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let gi = wid.x;
    let g = group_of(gi, q);
    let len = g.len;
    let base = g.base;
    var s = 0.0;
    for (var i = lid; i < len; i += WG) {
        s += f32(xa[base + i]);
    }
    let mean = block_sum(lid, s) / f32(len);
    var m2 = 0.0;
    for (var i = lid; i < len; i += WG) {
        let d = f32(xa[base + i]) - mean;
        m2 += d * d;
    }
    let rstd = inverseSqrt(block_sum(lid, m2) / f32(len) + q.eps);
    if (lid == 0u) {
        stats[2u * gi] = mean;
        stats[2u * gi + 1u] = rstd;
    }
    for (var i = lid; i < len; i += WG) {
        ya[base + i] = T(gn_out(f32(xa[base + i]), mean, rstd, g.n, g.c0 + i / q.hw));
    }
}

// ---------------------------------------------------------------------------
// Backward w.r.t. x. With xhat = (x - mean) rstd, u = (xhat gamma + beta)(1 + scale) + shift,
// y = silu(u) or u:  dxhat = dy silu'(u) gamma (1 + scale), and per group
//   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
//   gn_bwd_stats : grid (chunks, n * groups) -> per chunk (sum dxhat, sum dxhat xhat),
//                  summed per group by gn_sum_finish into gst[2i], gst[2i+1]
//   gn_bwd_apply : one thread per element; `accumulate` 1 adds into dx.

@group(0) @binding(0) var<uniform> r: Params;
@group(0) @binding(1) var<storage, read> xb: array<T>;
@group(0) @binding(2) var<storage, read> stb: array<f32>;
@group(0) @binding(3) var<storage, read> wtb: array<T>;
@group(0) @binding(4) var<storage, read> ssb: array<T>;
@group(0) @binding(5) var<storage, read> dyb: array<T>;
@group(0) @binding(6) var<storage, read_write> gstats: array<f32>;

@group(0) @binding(6) var<storage, read> gst: array<f32>;
@group(0) @binding(7) var<storage, read_write> dxb: array<T>;
// gn_bwd_onepass's dx (it has no sums buffer, so dx takes binding 6).
@group(0) @binding(6) var<storage, read_write> dxo: array<T>;

// (xhat, dxhat) of element i of sample n, channel c, group gi.
fn gn_bwd_elem(i: u32, n: u32, c: u32, gi: u32) -> vec2<f32> {
    let xhat = (f32(xb[i]) - stb[2u * gi]) * stb[2u * gi + 1u];
    var g = f32(wtb[r.gamma_off + c]);
    var u = xhat * g + f32(wtb[r.beta_off + c]);
    if (r.scale_shift == 1u) {
        let e = r.ss_off + n * 2u * r.c;
        let s1 = 1.0 + f32(ssb[e + c]);
        u = u * s1 + f32(ssb[e + r.c + c]);
        g = g * s1;
    }
    var d = f32(dyb[i]);
    if (r.silu == 1u) {
        let sg = 1.0 / (1.0 + exp(-u));
        d = d * sg * (1.0 + u * (1.0 - sg));
    }
    return vec2<f32>(xhat, d * g);
}

// (sum dxhat, sum dxhat xhat) over elements j = first, first + WG, ... below
// end of group g (index gi): one thread's share of a chunk or a whole group.
fn gn_bwd_sums(g: Group, gi: u32, first: u32, end: u32) -> vec2<f32> {
    var sa = 0.0;
    var sb = 0.0;
    for (var j = first; j < end; j += WG) {
        let v = gn_bwd_elem(g.base + j, g.n, g.c0 + j / r.hw, gi);
        sa += v.y;
        sb += v.x * v.y;
    }
    return vec2<f32>(sa, sb);
}

@compute @workgroup_size(WG)
fn gn_bwd_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let gi = wid.y;
    let g = group_of(gi, r);
    let start = wid.x * r.chunk_len;
    let sums = gn_bwd_sums(g, gi, start + lid, min(start + r.chunk_len, g.len));
    let ta = block_sum(lid, sums.x);
    let tb = block_sum(lid, sums.y);
    if (lid == 0u) {
        let k = 2u * (gi * r.chunks + wid.x);
        gstats[k] = ta;
        gstats[k + 1u] = tb;
    }
}

@compute @workgroup_size(WG)
fn gn_bwd_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= r.n * r.c * r.hw) {
        return;
    }
    let e = elem_of(i, r);
    let gi = e.z;
    let len = f32((r.c / r.groups) * r.hw);
    let v = gn_bwd_elem(i, e.x, e.y, gi);
    var d = stb[2u * gi + 1u] * (v.y - gst[2u * gi] / len - v.x * gst[2u * gi + 1u] / len);
    if (r.accumulate == 1u) {
        d += f32(dxb[i]);
    }
    dxb[i] = T(d);
}

// One workgroup per (sample, group), grid (n * groups): both sums of the
// group, then its gradient, in one dispatch (no sums buffer).
@compute @workgroup_size(WG)
fn gn_bwd_onepass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let gi = wid.x;
    let g = group_of(gi, r);
    let sums = gn_bwd_sums(g, gi, lid, g.len);
    let lf = f32(g.len);
    let ma = block_sum(lid, sums.x) / lf;
    let mb = block_sum(lid, sums.y) / lf;
    let rstd = stb[2u * gi + 1u];
    for (var j = lid; j < g.len; j += WG) {
        let v = gn_bwd_elem(g.base + j, g.n, g.c0 + j / r.hw, gi);
        var d = rstd * (v.y - ma - v.x * mb);
        if (r.accumulate == 1u) {
            d += f32(dxo[g.base + j]);
        }
        dxo[g.base + j] = T(d);
    }
}
