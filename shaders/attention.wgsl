// Fused self-attention over T = H*W tokens, per sample and head:
//   y[n, h*ch + c, t] = sum_s softmax_s( (sq q[:, t]) . (sk k[:, s]) ) v[c, s]
// from the fused projection qkv [N, 3C, T] (C = heads * ch). Head layout:
//   order 0 (guided-diffusion QKVAttentionLegacy): head h owns channels
//           [3 h ch, 3 (h+1) ch) = [q; k; v];
//   order 1 (QKVAttention, diffusers): q = [0, C), k = [C, 2C), v = [2C, 3C),
//           head h at [h ch, (h+1) ch) inside each.
//
// Tiling (flash-style; the T x T weights never exist in memory). A workgroup of
// WG = 64 threads owns one (sample, head, channel block, block of ROWS = 16
// rows): the rows are queries in the forward pass and in attn_bwd_q, keys in
// attn_bwd_kv. Thread tid is (row = tid % ROWS, lane = tid / ROWS), LANES = 4
// threads per row: neighbouring threads take neighbouring rows, so their
// global loads and stores and their reads of the own rows' tiles are
// contiguous, and a lane's reads of the streamed tiles are broadcasts. It
// streams the other side (keys, or queries for attn_bwd_kv) in tiles of BK
// (forward) or BS (backward) tokens staged in workgroup memory as f32,
// channel-major ([c][token], the stride padded where lanes read one token of
// consecutive channels), and
//   - computes the scores of its row against the tile's tokens
//     lane, lane + LANES, ... (BK / LANES or BS / LANES of them, in registers);
//   - owns the output channels lane, lane + LANES, ..., lane + HD - LANES of
//     its row: CPT = HD / LANES f32 accumulators in a private array indexed
//     only by loops with compile-time bounds, so they stay in registers.
//
// HD, the channel block, is a compile-time constant: `attention.rs` makes one
// instance per block width by rewriting the `const HD` line (and BK / BS where
// a device has less workgroup memory than they need), as `Shader::typed`
// rewrites `alias T`. A head of ch <= BLOCK channels is one block of HD = ch
// rounded up to a multiple of LANES (the padding channels are staged as zeros).
// A wider head (diffusers' single 256/512-channel heads) is split into
// ceil(ch / BLOCK) blocks of HD = BLOCK output channels on separate
// workgroups; each then computes its scores over all ch channels chunk by
// chunk (restaging its own rows' chunk too), so scores are recomputed once per
// block, as the per-thread kernel this replaced did.
//
// Workgroup memory at HD = 64 (f32 words x 4 bytes, all < 16 KiB):
//   forward     q 64x16 + k 64x16 + v 64x17 + scores 16x16        = 13,568 B
//   attn_bwd_q  q, dy 2x64x16 + k 64x9 + v 64x8 + dS 8x16          = 13,056 B
//   attn_bwd_kv k, v 2x64x16 + q, dy 2x64x9 + P, dS 2x8x16         = 13,824 B
// lse[n, h, t] = max + log(sum) is kept for the backward pass.

// Tensor storage type: f32 as written; `Shader::typed` makes the f16 instance.
// Scores, softmax statistics (lse, D: f32 buffers), tiles and sums run in f32.
alias T = f32;

struct Params {
    n: u32,
    heads: u32,
    ch: u32,
    t: u32,
    order: u32,
    scale_q: f32,
    scale_k: f32,
    accumulate: u32,  // backward: 1 adds into dqkv
}

// Threads per workgroup: ROWS rows x LANES lanes.
const WG: u32 = 64u;
//!include grid
const LANES: u32 = 4u;
const ROWS: u32 = WG / LANES;
// The widest channel block (an instance's HD is at most this).
const BLOCK: u32 = 64u;
// This instance's channel block; the line is rewritten per instance.
const HD: u32 = 64u;
// Forward: keys per K / V tile; the line is rewritten where memory is short.
const BK: u32 = 16u;
// Backward: streamed tokens per tile (keys in attn_bwd_q, queries in
// attn_bwd_kv); the line is rewritten where memory is short.
const BS: u32 = 8u;
// Output channels per thread.
const CPT: u32 = HD / LANES;
// Padded row strides of the tiles read lane-strided along channels.
const BK1: u32 = BK + 1u;
const BS1: u32 = BS + 1u;
// Score of a key past the end: exp(NEG - m) is 0.
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

// What one workgroup owns.
struct Tile {
    n: u32,
    h: u32,
    nh: u32,   // n * heads + h
    cb: u32,   // channel block: output channels [cb HD, cb HD + HD)
    nb: u32,   // channel blocks (and score chunks) of the head
    r0: u32,   // first row token
    valid: bool,
}

// Workgroup -> (n, h, channel block, row block); the row block varies fastest
// so neighbouring workgroups share their streamed tiles in cache.
fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, n: u32, heads: u32, ch: u32, t_len: u32) -> Tile {
    let wid = wg.x + wg.y * nwg.x;
    let nr = (t_len + ROWS - 1u) / ROWS;
    var w: Tile;
    w.nb = (ch + HD - 1u) / HD;
    w.r0 = (wid % nr) * ROWS;
    let r = wid / nr;
    w.cb = r % w.nb;
    w.nh = r / w.nb;
    w.h = w.nh % heads;
    w.n = w.nh / heads;
    w.valid = w.nh < n * heads;
    return w;
}

// Channel bases of q, k, v for (n, h) in qkv (or dqkv).
fn bases(order: u32, heads: u32, ch: u32, n: u32, h: u32) -> vec3<u32> {
    let c_all = heads * ch;
    let base = n * 3u * c_all;
    if (order == 0u) {
        let qc = base + 3u * h * ch;
        return vec3<u32>(qc, qc + ch, qc + 2u * ch);
    }
    let qc = base + h * ch;
    return vec3<u32>(qc, qc + c_all, qc + 2u * c_all);
}

// ---------------------------------------------------------------- forward

var<workgroup> f_q: array<f32, HD * ROWS>;   // own queries, [c][row]
var<workgroup> f_k: array<f32, HD * BK>;     // key tile, [c][key]
var<workgroup> f_v: array<f32, HD * BK1>;    // value tile, [c][key], stride BK1
var<workgroup> f_s: array<f32, BK * ROWS>;   // scaled scores, [key][row]

// qkv channel `c` (< ch, else 0) of head channel base `base` at token `tok`.
fn fwd_at(base: u32, c: u32, tok: u32) -> f32 {
    if (c < p.ch && tok < p.t) {
        return f32(qkv[(base + c) * p.t + tok]);
    }
    return 0.0;
}

// Own queries, channels [c0, c0 + HD), into f_q.
fn fwd_stage_q(base: u32, c0: u32, r0: u32, tid: u32) {
    for (var e = tid; e < HD * ROWS; e += WG) {
        f_q[e] = fwd_at(base, c0 + e / ROWS, r0 + e % ROWS);
    }
}

@compute @workgroup_size(WG)
fn attention(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = tile_of(wg, nwg, p.n, p.heads, p.ch, p.t);
    if (!w.valid) {
        return;
    }
    let b = bases(p.order, p.heads, p.ch, w.n, w.h);
    let row = tid % ROWS;
    let lane = tid / ROWS;
    let sc = p.scale_q * p.scale_k;
    let cv = w.cb * HD;
    if (w.nb == 1u) {
        fwd_stage_q(b.x, 0u, w.r0, tid);
    }
    var acc: array<f32, CPT>;
    for (var c = 0u; c < CPT; c++) {
        acc[c] = 0.0;
    }
    var m = NEG;
    var l = 0.0;
    for (var k0 = 0u; k0 < p.t; k0 += BK) {
        // Scores of this row against keys k0 + lane + j LANES, chunk by chunk
        // of HD channels (one chunk unless the head is wider than BLOCK).
        var s: array<f32, BK / LANES>;
        for (var j = 0u; j < BK / LANES; j++) {
            s[j] = 0.0;
        }
        for (var i = 0u; i < w.nb; i++) {
            let c0 = i * HD;
            if (w.nb > 1u) {
                fwd_stage_q(b.x, c0, w.r0, tid);
            }
            for (var e = tid; e < HD * BK; e += WG) {
                f_k[e] = fwd_at(b.y, c0 + e / BK, k0 + e % BK);
            }
            if (i == 0u) {
                for (var e = tid; e < HD * BK; e += WG) {
                    let c = e / BK;
                    let j = e % BK;
                    f_v[c * BK1 + j] = fwd_at(b.z, cv + c, k0 + j);
                }
            }
            workgroupBarrier();
            for (var c = 0u; c < HD; c++) {
                let qv = f_q[c * ROWS + row];
                for (var j = 0u; j < BK / LANES; j++) {
                    s[j] = fma(qv, f_k[c * BK + lane + j * LANES], s[j]);
                }
            }
            if (i + 1u < w.nb) {
                workgroupBarrier();
            }
        }
        for (var j = 0u; j < BK / LANES; j++) {
            let key = lane + j * LANES;
            f_s[key * ROWS + row] = select(NEG, s[j] * sc, k0 + key < p.t);
        }
        workgroupBarrier();
        // Online softmax over the tile's scores of this row (every lane of the
        // row computes the same m, l), then this thread's channels of P V.
        var mt = m;
        for (var j = 0u; j < BK; j++) {
            mt = max(mt, f_s[j * ROWS + row]);
        }
        let corr = exp(m - mt);
        l *= corr;
        for (var c = 0u; c < CPT; c++) {
            acc[c] *= corr;
        }
        for (var j = 0u; j < BK; j++) {
            let e = exp(f_s[j * ROWS + row] - mt);
            l += e;
            for (var c = 0u; c < CPT; c++) {
                acc[c] = fma(e, f_v[(lane + c * LANES) * BK1 + j], acc[c]);
            }
        }
        m = mt;
        workgroupBarrier();
    }
    let q = w.r0 + row;
    if (q < p.t) {
        let out = w.nh * p.ch * p.t + q;
        for (var c = 0u; c < CPT; c++) {
            let cc = cv + lane + c * LANES;
            if (cc < p.ch) {
                y[out + cc * p.t] = T(acc[c] / l);
            }
        }
        if (w.cb == 0u && lane == 0u) {
            lse[w.nh * p.t + q] = m + log(l);
        }
    }
}

// ---------------------------------------------------------------------------
// Backward: from dy [N, C, T] (and the saved y, lse) to dqkv [N, 3C, T].
// With P[t, s] = exp(score[t, s] - lse[t]) and D[t] = dy[:, t] . y[:, t],
//   dS[t, s] = P[t, s] (dy[:, t] . v[:, s] - D[t])
//   attn_bwd_d  : D, one thread per query
//   attn_bwd_q  : dq[:, t] = sq sk sum_s dS[t, s] k[:, s]
//                 (a workgroup per 16 queries and channel block, key tiles of BS)
//   attn_bwd_kv : dk[:, s] = sq sk sum_t dS[t, s] q[:, t],
//                 dv[:, s] = sum_t P[t, s] dy[:, t]
//                 (a workgroup per 16 keys and channel block, query tiles of BS)
// For a head wider than BLOCK the score chunks run in the order cb + 1, ...,
// cb (mod nb), so the last chunk staged is the workgroup's own block, which the
// accumulation reads. `accumulate` = 1 adds into dqkv instead of overwriting.

// attn_bwd_q and attn_bwd_kv bind (params, qkv, lse, dy, D, dqkv);
// attn_bwd_d binds (params, dy, y, D).
@group(0) @binding(0) var<uniform> pb: Params;
@group(0) @binding(1) var<storage, read> qkv_b: array<T>;
@group(0) @binding(2) var<storage, read> lse_b: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read> dsum_r: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<T>;

@group(0) @binding(1) var<storage, read> d_dy: array<T>;
@group(0) @binding(2) var<storage, read> d_y: array<T>;
@group(0) @binding(3) var<storage, read_write> d_out: array<f32>;

fn store_grad(i: u32, v: f32) {
    if (pb.accumulate == 1u) {
        dqkv[i] = T(f32(dqkv[i]) + v);
    } else {
        dqkv[i] = T(v);
    }
}

// qkv channel `c` (< ch, else 0) of head channel base `base` at token `tok`.
fn bwd_at(base: u32, c: u32, tok: u32) -> f32 {
    if (c < pb.ch && tok < pb.t) {
        return f32(qkv_b[(base + c) * pb.t + tok]);
    }
    return 0.0;
}

// dy channel `c` (< ch, else 0) of head output base `ob` at token `tok`.
fn dy_at(ob: u32, c: u32, tok: u32) -> f32 {
    if (c < pb.ch && tok < pb.t) {
        return f32(dy[ob + c * pb.t + tok]);
    }
    return 0.0;
}

@compute @workgroup_size(WG)
fn attn_bwd_d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= pb.n * pb.heads * pb.t) {
        return;
    }
    let t = i % pb.t;
    let nh = i / pb.t;
    let out = nh * pb.ch * pb.t + t;
    var d = 0.0;
    for (var c = 0u; c < pb.ch; c++) {
        d = fma(f32(d_dy[out + c * pb.t]), f32(d_y[out + c * pb.t]), d);
    }
    d_out[i] = d;
}

var<workgroup> bq_q: array<f32, HD * ROWS>;   // own queries, [c][row]
var<workgroup> bq_dy: array<f32, HD * ROWS>;  // own dy, [c][row]
var<workgroup> bq_k: array<f32, HD * BS1>;    // key tile, [c][key], stride BS1
var<workgroup> bq_v: array<f32, HD * BS>;     // value tile, [c][key]
var<workgroup> bq_ds: array<f32, BS * ROWS>;  // dS, [key][row]

fn bq_stage_own(b: vec3<u32>, ob: u32, c0: u32, r0: u32, tid: u32) {
    for (var e = tid; e < HD * ROWS; e += WG) {
        let c = c0 + e / ROWS;
        let t = r0 + e % ROWS;
        bq_q[e] = bwd_at(b.x, c, t);
        bq_dy[e] = dy_at(ob, c, t);
    }
}

@compute @workgroup_size(WG)
fn attn_bwd_q(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = tile_of(wg, nwg, pb.n, pb.heads, pb.ch, pb.t);
    if (!w.valid) {
        return;
    }
    let b = bases(pb.order, pb.heads, pb.ch, w.n, w.h);
    let ob = w.nh * pb.ch * pb.t;
    let row = tid % ROWS;
    let lane = tid / ROWS;
    let sc = pb.scale_q * pb.scale_k;
    let q = w.r0 + row;
    var lq = 0.0;
    var dq_d = 0.0;
    if (q < pb.t) {
        lq = lse_b[w.nh * pb.t + q];
        dq_d = dsum_r[w.nh * pb.t + q];
    }
    if (w.nb == 1u) {
        bq_stage_own(b, ob, 0u, w.r0, tid);
    }
    var acc: array<f32, CPT>;
    for (var c = 0u; c < CPT; c++) {
        acc[c] = 0.0;
    }
    for (var k0 = 0u; k0 < pb.t; k0 += BS) {
        // Scores and dy . v of this row against keys k0 + lane + j LANES.
        var s: array<f32, BS / LANES>;
        var dp: array<f32, BS / LANES>;
        for (var j = 0u; j < BS / LANES; j++) {
            s[j] = 0.0;
            dp[j] = 0.0;
        }
        for (var i = 0u; i < w.nb; i++) {
            let c0 = ((w.cb + 1u + i) % w.nb) * HD;
            if (w.nb > 1u) {
                bq_stage_own(b, ob, c0, w.r0, tid);
            }
            for (var e = tid; e < HD * BS; e += WG) {
                let c = e / BS;
                let j = e % BS;
                bq_k[c * BS1 + j] = bwd_at(b.y, c0 + c, k0 + j);
                bq_v[e] = bwd_at(b.z, c0 + c, k0 + j);
            }
            workgroupBarrier();
            for (var c = 0u; c < HD; c++) {
                let qv = bq_q[c * ROWS + row];
                let gv = bq_dy[c * ROWS + row];
                for (var j = 0u; j < BS / LANES; j++) {
                    let key = lane + j * LANES;
                    s[j] = fma(qv, bq_k[c * BS1 + key], s[j]);
                    dp[j] = fma(gv, bq_v[c * BS + key], dp[j]);
                }
            }
            if (i + 1u < w.nb) {
                workgroupBarrier();
            }
        }
        for (var j = 0u; j < BS / LANES; j++) {
            let key = lane + j * LANES;
            let ds = exp(s[j] * sc - lq) * (dp[j] - dq_d);
            bq_ds[key * ROWS + row] = select(0.0, ds, k0 + key < pb.t);
        }
        workgroupBarrier();
        // dq[c, row] += sum_key dS[row, key] k[c, key] over this thread's
        // channels (bq_k holds the own block: the last chunk staged).
        for (var j = 0u; j < BS; j++) {
            let ds = bq_ds[j * ROWS + row];
            for (var c = 0u; c < CPT; c++) {
                acc[c] = fma(ds, bq_k[(lane + c * LANES) * BS1 + j], acc[c]);
            }
        }
        workgroupBarrier();
    }
    if (q < pb.t) {
        for (var c = 0u; c < CPT; c++) {
            let cc = w.cb * HD + lane + c * LANES;
            if (cc < pb.ch) {
                store_grad((b.x + cc) * pb.t + q, acc[c] * sc);
            }
        }
    }
}

var<workgroup> bk_k: array<f32, HD * ROWS>;    // own keys, [c][row]
var<workgroup> bk_v: array<f32, HD * ROWS>;    // own values, [c][row]
var<workgroup> bk_q: array<f32, HD * BS1>;     // query tile, [c][query], stride BS1
var<workgroup> bk_dy: array<f32, HD * BS1>;    // dy tile, [c][query], stride BS1
var<workgroup> bk_p: array<f32, BS * ROWS>;    // P, [query][row]
var<workgroup> bk_ds: array<f32, BS * ROWS>;   // dS, [query][row]

fn bk_stage_own(b: vec3<u32>, c0: u32, r0: u32, tid: u32) {
    for (var e = tid; e < HD * ROWS; e += WG) {
        let c = c0 + e / ROWS;
        let s = r0 + e % ROWS;
        bk_k[e] = bwd_at(b.y, c, s);
        bk_v[e] = bwd_at(b.z, c, s);
    }
}

@compute @workgroup_size(WG)
fn attn_bwd_kv(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = tile_of(wg, nwg, pb.n, pb.heads, pb.ch, pb.t);
    if (!w.valid) {
        return;
    }
    let b = bases(pb.order, pb.heads, pb.ch, w.n, w.h);
    let ob = w.nh * pb.ch * pb.t;
    let row = tid % ROWS;
    let lane = tid / ROWS;
    let sc = pb.scale_q * pb.scale_k;
    let key = w.r0 + row;
    if (w.nb == 1u) {
        bk_stage_own(b, 0u, w.r0, tid);
    }
    var dk: array<f32, CPT>;
    var dv: array<f32, CPT>;
    for (var c = 0u; c < CPT; c++) {
        dk[c] = 0.0;
        dv[c] = 0.0;
    }
    for (var t0 = 0u; t0 < pb.t; t0 += BS) {
        // Scores and dy . v of queries t0 + lane + j LANES against this row.
        var s: array<f32, BS / LANES>;
        var dp: array<f32, BS / LANES>;
        for (var j = 0u; j < BS / LANES; j++) {
            s[j] = 0.0;
            dp[j] = 0.0;
        }
        for (var i = 0u; i < w.nb; i++) {
            let c0 = ((w.cb + 1u + i) % w.nb) * HD;
            if (w.nb > 1u) {
                bk_stage_own(b, c0, w.r0, tid);
            }
            for (var e = tid; e < HD * BS; e += WG) {
                let c = e / BS;
                let j = e % BS;
                bk_q[c * BS1 + j] = bwd_at(b.x, c0 + c, t0 + j);
                bk_dy[c * BS1 + j] = dy_at(ob, c0 + c, t0 + j);
            }
            workgroupBarrier();
            for (var c = 0u; c < HD; c++) {
                let kv = bk_k[c * ROWS + row];
                let vv = bk_v[c * ROWS + row];
                for (var j = 0u; j < BS / LANES; j++) {
                    let t = lane + j * LANES;
                    s[j] = fma(kv, bk_q[c * BS1 + t], s[j]);
                    dp[j] = fma(vv, bk_dy[c * BS1 + t], dp[j]);
                }
            }
            if (i + 1u < w.nb) {
                workgroupBarrier();
            }
        }
        for (var j = 0u; j < BS / LANES; j++) {
            let t = lane + j * LANES;
            let ok = t0 + t < pb.t && key < pb.t;
            var pr = 0.0;
            var ds = 0.0;
            if (ok) {
                let li = w.nh * pb.t + t0 + t;
                pr = exp(s[j] * sc - lse_b[li]);
                ds = pr * (dp[j] - dsum_r[li]);
            }
            bk_p[t * ROWS + row] = pr;
            bk_ds[t * ROWS + row] = ds;
        }
        workgroupBarrier();
        // dk[c, row] += sum_t dS[t, row] q[c, t], dv[c, row] += sum_t P[t, row]
        // dy[c, t] over this thread's channels (bk_q / bk_dy hold the own
        // block: the last chunk staged).
        for (var t = 0u; t < BS; t++) {
            let pr = bk_p[t * ROWS + row];
            let ds = bk_ds[t * ROWS + row];
            for (var c = 0u; c < CPT; c++) {
                let o = (lane + c * LANES) * BS1 + t;
                dk[c] = fma(ds, bk_q[o], dk[c]);
                dv[c] = fma(pr, bk_dy[o], dv[c]);
            }
        }
        workgroupBarrier();
    }
    if (key < pb.t) {
        for (var c = 0u; c < CPT; c++) {
            let cc = w.cb * HD + lane + c * LANES;
            if (cc < pb.ch) {
                store_grad((b.y + cc) * pb.t + key, dk[c] * sc);
                store_grad((b.z + cc) * pb.t + key, dv[c]);
            }
        }
    }
}
