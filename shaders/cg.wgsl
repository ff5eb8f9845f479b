// Batched, matrix-free conjugate gradients for M = diag(D) + gamma G, G = A^T A
// (or A A^T), one independent system per sample. The Gram product G p is the
// operator's own forward + adjoint plans; everything else is fused into three
// kernels per iteration, with alpha and beta computed on the GPU:
//   cg_apply     : Mp = D p + gamma w (w = G p);        partA[n, c] = sum p.Mp
//   cg_update    : alpha = rr / pMp; x += alpha p; r -= alpha Mp;  partB = sum r.r
//                  (the chunk-0 workgroup also snapshots {rr, live} into `prev`)
//   cg_direction : beta = rr' / rr; p = r + beta p; the chunk-0 workgroup writes
//                  the new state (rr, converged, iteration count)
// A sample whose relative residual |r| <= tol |b| is converged: its alpha is 0
// and p is left alone, so the remaining recorded iterations are no-ops for it.
// Early exit: every dispatch of an iteration (the Gram product's included) is
// indirect, its grid read from that iteration's slot of an args buffer;
// cg_gate_start (after init) zeroes all slots and opens iteration 0, and the
// cg_gate closing each iteration opens the next only while some sample of the
// batch is still active and the cap is not reached. Once all samples have
// converged the remaining iterations dispatch zero workgroups.
// Each kernel reads per-sample scalars only from buffers no workgroup of the
// same dispatch writes (state -> prev -> state), so there are no races.
//
// Grid: (chunks, batch); a workgroup covers CHUNK = WG * PER_THREAD elements of
// one sample and reduces its dot product in shared memory (fixed order).

struct Params {
    per: u32,      // elements per sample
    chunks: u32,   // workgroups per sample
    batch: u32,
    _pad0: u32,
    tol2: f32,     // tol^2
    gamma: f32,
    _pad1: f32,
    _pad2: f32,
}

// state[n * 8 + ...]
const S_RR: u32 = 0u;
const S_BB: u32 = 1u;
const S_ACTIVE: u32 = 2u;
const S_ITERS: u32 = 3u;   // iterations of the current solve
const S_TOTAL: u32 = 4u;   // iterations over all solves since creation
const S_SOLVES: u32 = 5u;  // solves since creation
const STATE: u32 = 8u;

const WG: u32 = 256u;
//!include grid
const PER_THREAD: u32 = 4u;
const CHUNK: u32 = 1024u;

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> red: array<f32, 256>;
var<workgroup> shared_sum: f32;
//!include block_sum

// The elements of sample wid.y that thread lid of chunk wid.x covers:
// first, first + WG, ... below end (flat indices, PER_THREAD at most).
fn span_of(wid: vec3<u32>, lid: u32) -> vec2<u32> {
    let base = wid.y * p.per;
    let start = wid.x * CHUNK;
    return vec2<u32>(base + start + lid, base + min(start + CHUNK, p.per));
}

// ---- cg_init: x = 0, r = p = b, partA = |b|^2 ----
@group(0) @binding(1) var<storage, read> i_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> i_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> i_r: array<f32>;
@group(0) @binding(4) var<storage, read_write> i_p: array<f32>;
@group(0) @binding(5) var<storage, read_write> i_part: array<f32>;

@compute @workgroup_size(WG)
fn cg_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let span = span_of(wid, lid);
    var s = 0.0;
    for (var i = span.x; i < span.y; i += WG) {
        let b = i_b[i];
        i_x[i] = 0.0;
        i_r[i] = b;
        i_p[i] = b;
        s += b * b;
    }
    let total = block_sum(lid, s);
    if (lid == 0u) {
        i_part[wid.y * p.chunks + wid.x] = total;
    }
}

// ---- cg_init_finish: one thread per sample ----
@group(0) @binding(1) var<storage, read> f_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_state: array<f32>;

@compute @workgroup_size(WG_SMALL)
fn cg_init_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= p.batch) { return; }
    var bb = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        bb += f_part[n * p.chunks + c];
    }
    let o = n * STATE;
    f_state[o + S_RR] = bb;
    f_state[o + S_BB] = bb;
    f_state[o + S_ACTIVE] = select(0.0, 1.0, bb > 0.0);
    f_state[o + S_ITERS] = 0.0;
    f_state[o + S_SOLVES] = f_state[o + S_SOLVES] + 1.0;
}

// ---- cg_apply: Mp = D p + gamma w; partA = p.Mp ----
@group(0) @binding(1) var<storage, read> a_p: array<f32>;
@group(0) @binding(2) var<storage, read> a_diag: array<f32>;
@group(0) @binding(3) var<storage, read> a_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> a_mp: array<f32>;
@group(0) @binding(5) var<storage, read_write> a_part: array<f32>;

@compute @workgroup_size(WG)
fn cg_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let span = span_of(wid, lid);
    var s = 0.0;
    for (var i = span.x; i < span.y; i += WG) {
        let pv = a_p[i];
        let mp = a_diag[i] * pv + p.gamma * a_w[i];
        a_mp[i] = mp;
        s += pv * mp;
    }
    let total = block_sum(lid, s);
    if (lid == 0u) {
        a_part[wid.y * p.chunks + wid.x] = total;
    }
}

// ---- cg_update ----
@group(0) @binding(1) var<storage, read> u_state: array<f32>;
@group(0) @binding(2) var<storage, read> u_part_a: array<f32>;
@group(0) @binding(3) var<storage, read> u_p: array<f32>;
@group(0) @binding(4) var<storage, read> u_mp: array<f32>;
@group(0) @binding(5) var<storage, read_write> u_x: array<f32>;
@group(0) @binding(6) var<storage, read_write> u_r: array<f32>;
@group(0) @binding(7) var<storage, read_write> u_part_b: array<f32>;
@group(0) @binding(8) var<storage, read_write> u_prev: array<f32>;

@compute @workgroup_size(WG)
fn cg_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wid.y;
    if (lid == 0u) {
        var pmp = 0.0;
        for (var c = 0u; c < p.chunks; c++) {
            pmp += u_part_a[n * p.chunks + c];
        }
        shared_sum = pmp;
    }
    workgroupBarrier();
    let pmp = shared_sum;
    let rr = u_state[n * STATE + S_RR];
    // A non-positive curvature (breakdown, or an all-zero p) stops this sample.
    let live = u_state[n * STATE + S_ACTIVE] > 0.5 && pmp > 0.0;
    let alpha = select(0.0, rr / pmp, live);
    let span = span_of(wid, lid);
    var s = 0.0;
    for (var i = span.x; i < span.y; i += WG) {
        u_x[i] += alpha * u_p[i];
        let r = u_r[i] - alpha * u_mp[i];
        u_r[i] = r;
        s += r * r;
    }
    let total = block_sum(lid, s);
    if (lid == 0u) {
        u_part_b[n * p.chunks + wid.x] = total;
        if (wid.x == 0u) {
            u_prev[n * 2u] = rr;
            u_prev[n * 2u + 1u] = select(0.0, 1.0, live);
        }
    }
}

// ---- cg_direction ----
@group(0) @binding(1) var<storage, read> d_prev: array<f32>;
@group(0) @binding(2) var<storage, read> d_part_b: array<f32>;
@group(0) @binding(3) var<storage, read> d_r: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_p: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_state: array<f32>;

@compute @workgroup_size(WG)
fn cg_direction(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wid.y;
    if (lid == 0u) {
        var rr = 0.0;
        for (var c = 0u; c < p.chunks; c++) {
            rr += d_part_b[n * p.chunks + c];
        }
        shared_sum = rr;
    }
    workgroupBarrier();
    let rr_new = shared_sum;
    let rr_old = d_prev[n * 2u];
    let live = d_prev[n * 2u + 1u] > 0.5;
    if (live) {
        let beta = rr_new / rr_old;
        let span = span_of(wid, lid);
        for (var i = span.x; i < span.y; i += WG) {
            d_p[i] = d_r[i] + beta * d_p[i];
        }
    }
    if (lid == 0u && wid.x == 0u) {
        let o = n * STATE;
        if (live) {
            d_state[o + S_RR] = rr_new;
            d_state[o + S_ITERS] += 1.0;
            d_state[o + S_TOTAL] += 1.0;
        }
        let converged = rr_new <= p.tol2 * d_state[o + S_BB];
        d_state[o + S_ACTIVE] = select(0.0, 1.0, live && !converged);
    }
}

// ---- pw_rhs: b = sqrt(D) e1 + c w (w = A^T e2, c = sqrt(gamma)): the
// right-hand side whose solution Lambda^{-1} b is a draw from N(0, Lambda^{-1}) ----
@group(0) @binding(1) var<storage, read> w_diag: array<f32>;
@group(0) @binding(2) var<storage, read> w_e1: array<f32>;
@group(0) @binding(3) var<storage, read> w_at: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_b: array<f32>;

@compute @workgroup_size(WG)
fn pw_rhs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.per * p.batch) { return; }
    w_b[i] = sqrt(w_diag[i]) * w_e1[i] + sqrt(p.gamma) * w_at[i];
}

// ---- Small systems (per <= CHUNK): one thread owns a whole sample, so a CG
// iteration is one dispatch with no shared memory or barriers (on lavapipe a
// 256-thread workgroup per 80-element sample would cost far more than the math).
@group(0) @binding(1) var<storage, read> s_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> s_r: array<f32>;
@group(0) @binding(4) var<storage, read_write> s_p: array<f32>;
@group(0) @binding(5) var<storage, read_write> s_state: array<f32>;

@compute @workgroup_size(WG_SMALL)
fn cg_small_init(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= p.batch) { return; }
    let base = n * p.per;
    var bb = 0.0;
    for (var j = 0u; j < p.per; j++) {
        let b = s_b[base + j];
        s_x[base + j] = 0.0;
        s_r[base + j] = b;
        s_p[base + j] = b;
        bb += b * b;
    }
    let o = n * STATE;
    s_state[o + S_RR] = bb;
    s_state[o + S_BB] = bb;
    s_state[o + S_ACTIVE] = select(0.0, 1.0, bb > 0.0);
    s_state[o + S_ITERS] = 0.0;
    s_state[o + S_SOLVES] = s_state[o + S_SOLVES] + 1.0;
}

@group(0) @binding(1) var<storage, read> t_diag: array<f32>;
@group(0) @binding(2) var<storage, read> t_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> t_x: array<f32>;
@group(0) @binding(4) var<storage, read_write> t_r: array<f32>;
@group(0) @binding(5) var<storage, read_write> t_p: array<f32>;
@group(0) @binding(6) var<storage, read_write> t_state: array<f32>;

@compute @workgroup_size(WG_SMALL)
fn cg_small_iter(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= p.batch) { return; }
    let o = n * STATE;
    if (t_state[o + S_ACTIVE] < 0.5) { return; }
    let base = n * p.per;
    var pmp = 0.0;
    for (var j = 0u; j < p.per; j++) {
        let pv = t_p[base + j];
        pmp += pv * (t_diag[base + j] * pv + p.gamma * t_w[base + j]);
    }
    if (!(pmp > 0.0)) {
        t_state[o + S_ACTIVE] = 0.0;
        return;
    }
    let alpha = t_state[o + S_RR] / pmp;
    var rr = 0.0;
    for (var j = 0u; j < p.per; j++) {
        let pv = t_p[base + j];
        t_x[base + j] += alpha * pv;
        let r = t_r[base + j] - alpha * (t_diag[base + j] * pv + p.gamma * t_w[base + j]);
        t_r[base + j] = r;
        rr += r * r;
    }
    let beta = rr / t_state[o + S_RR];
    for (var j = 0u; j < p.per; j++) {
        t_p[base + j] = t_r[base + j] + beta * t_p[base + j];
    }
    t_state[o + S_RR] = rr;
    t_state[o + S_ITERS] += 1.0;
    t_state[o + S_TOTAL] += 1.0;
    t_state[o + S_ACTIVE] = select(1.0, 0.0, rr <= p.tol2 * t_state[o + S_BB]);
}

// ---- Early exit: the iteration gates ----
// ctl (u32): [G_K] dispatches per iteration (the gate included), [G_ITERS] the
// iteration cap, [G_RUN] iterations run in the current solve, [G_RUN_TOTAL]
// iterations run since creation, then from G_TEMPLATE the full grids of one
// iteration's dispatches (K x {x, y, z}). Iteration i's slot, K grids, lives in
// the even args buffer for even i and the odd one for odd i, at (i / 2) * K * 3
// words: the gate closing iteration i reads its own grid from one buffer and
// writes the other (a dispatch cannot bind its own args buffer as storage).
const G_K: u32 = 0u;
const G_ITERS: u32 = 1u;
const G_RUN: u32 = 2u;
const G_RUN_TOTAL: u32 = 3u;
const G_TEMPLATE: u32 = 4u;

@group(0) @binding(1) var<storage, read> gs_state: array<f32>;
@group(0) @binding(2) var<storage, read_write> gs_ctl: array<u32>;
@group(0) @binding(3) var<storage, read_write> gs_even: array<u32>;
@group(0) @binding(4) var<storage, read_write> gs_odd: array<u32>;

// After init: every iteration's slot zeroed, iteration 0's opened when some
// sample is active (its b is nonzero), the solve's run count reset.
@compute @workgroup_size(WG_SMALL)
fn cg_gate_start(@builtin(local_invocation_index) lid: u32) {
    let words = gs_ctl[G_K] * 3u;
    let iters = gs_ctl[G_ITERS];
    var go = false;
    for (var n = 0u; n < p.batch && iters > 0u; n++) {
        go = go || gs_state[n * STATE + S_ACTIVE] > 0.5;
    }
    let n_even = ((iters + 1u) / 2u) * words;
    let n_odd = (iters / 2u) * words;
    for (var w = lid; w < n_even; w += WG_SMALL) {
        var v = 0u;
        if (w < words && go) {
            v = gs_ctl[G_TEMPLATE + w];
        }
        gs_even[w] = v;
    }
    for (var w = lid; w < n_odd; w += WG_SMALL) {
        gs_odd[w] = 0u;
    }
    storageBarrier();
    if (lid == 0u) {
        gs_ctl[G_RUN] = 0u;
    }
}

@group(0) @binding(1) var<storage, read> g_state: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_ctl: array<u32>;
@group(0) @binding(3) var<storage, read_write> g_next: array<u32>;

// Closes an iteration (it runs only when the iteration did): counts it, and
// opens the next one (the other parity's buffer) while some sample is active
// and the cap is not reached; otherwise the next slot stays zero, and so do
// all later ones (their gates never run).
@compute @workgroup_size(WG_SMALL)
fn cg_gate(@builtin(local_invocation_index) lid: u32) {
    let run = g_ctl[G_RUN] + 1u;
    let total = g_ctl[G_RUN_TOTAL] + 1u;
    let words = g_ctl[G_K] * 3u;
    var go = false;
    for (var n = 0u; n < p.batch && run < g_ctl[G_ITERS]; n++) {
        go = go || g_state[n * STATE + S_ACTIVE] > 0.5;
    }
    storageBarrier();
    if (lid == 0u) {
        g_ctl[G_RUN] = run;
        g_ctl[G_RUN_TOTAL] = total;
    }
    if (go) {
        let base = (run / 2u) * words;
        for (var w = lid; w < words; w += WG_SMALL) {
            g_next[base + w] = g_ctl[G_TEMPLATE + w];
        }
    }
}
