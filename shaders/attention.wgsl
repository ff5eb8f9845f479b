// Fused self-attention over T = H*W tokens, per sample and head:
//   y[n, h*ch + c, t] = sum_s softmax_s( (sq q[:, t]) . (sk k[:, s]) ) v[c, s]
// from the fused projection qkv [N, 3C, T] (C = heads * ch). Head layout:
//   order 0 (guided-diffusion QKVAttentionLegacy): head h owns channels
//           [3 h ch, 3 (h+1) ch) = [q; k; v];
//   order 1 (QKVAttention, diffusers): q = [0, C), k = [C, 2C), v = [2C, 3C),
//           head h at [h ch, (h+1) ch) inside each.
// One thread per (query, block of BLOCK output channels) with an online
// (flash-style) softmax, so the T x T weights never exist in memory. Heads
// wider than BLOCK (diffusers' single 256/512-channel heads) take several
// blocks, each recomputing the scores; heads of up to BLOCK channels (ADM's 64)
// take one. lse[n, h, t] = max + log(sum) is kept for the backward pass.

// Tensor storage type: f32 as written; `Shader::typed` makes the f16 instance.
// Scores, softmax statistics (lse, D: f32 buffers) and sums run in f32.
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

override WG: u32 = 64u;
const BLOCK: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

// Thread -> (n, h, channel block, token); the token varies fastest so a
// workgroup shares its k / v reads.
struct Work {
    n: u32,
    h: u32,
    nh: u32,
    c0: u32,
    c1: u32,
    t: u32,
}

fn work_item(i: u32, ch: u32, heads: u32, t_len: u32) -> Work {
    let blocks = (ch + BLOCK - 1u) / BLOCK;
    var w: Work;
    w.t = i % t_len;
    let r = i / t_len;
    let cb = r % blocks;
    w.nh = r / blocks;
    w.h = w.nh % heads;
    w.n = w.nh / heads;
    w.c0 = cb * BLOCK;
    w.c1 = min(w.c0 + BLOCK, ch);
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

@compute @workgroup_size(WG)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let blocks = (p.ch + BLOCK - 1u) / BLOCK;
    if (i >= p.n * p.heads * blocks * p.t) {
        return;
    }
    let w = work_item(i, p.ch, p.heads, p.t);
    let b = bases(p.order, p.heads, p.ch, w.n, w.h);
    let sc = p.scale_q * p.scale_k;
    var acc: array<f32, BLOCK>;
    for (var c = 0u; c < BLOCK; c++) {
        acc[c] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var s = 0u; s < p.t; s++) {
        var score = 0.0;
        for (var c = 0u; c < p.ch; c++) {
            score = fma(f32(qkv[(b.x + c) * p.t + w.t]), f32(qkv[(b.y + c) * p.t + s]), score);
        }
        score *= sc;
        let m_new = max(m, score);
        let corr = exp(m - m_new);
        let e = exp(score - m_new);
        l = l * corr + e;
        for (var c = w.c0; c < w.c1; c++) {
            acc[c - w.c0] = fma(acc[c - w.c0], corr, e * f32(qkv[(b.z + c) * p.t + s]));
        }
        m = m_new;
    }
    let out = (w.n * p.heads * p.ch + w.h * p.ch) * p.t + w.t;
    for (var c = w.c0; c < w.c1; c++) {
        y[out + c * p.t] = T(acc[c - w.c0] / l);
    }
    if (w.c0 == 0u) {
        lse[w.nh * p.t + w.t] = m + log(l);
    }
}

// ---------------------------------------------------------------------------
// Backward: from dy [N, C, T] (and the saved y, lse) to dqkv [N, 3C, T].
// With P[t, s] = exp(score[t, s] - lse[t]) and D[t] = dy[:, t] . y[:, t],
//   dS[t, s] = P[t, s] (dy[:, t] . v[:, s] - D[t])
//   attn_bwd_d  : D, one thread per query
//   attn_bwd_q  : dq[:, t] = sq sk sum_s dS[t, s] k[:, s]   (per query and channel block)
//   attn_bwd_kv : dk[:, s] = sq sk sum_t dS[t, s] q[:, t],
//                 dv[:, s] = sum_t P[t, s] dy[:, t]         (per key and channel block)
// `accumulate` = 1 adds into dqkv instead of overwriting.

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

// (scaled score, dy[:, t] . v[:, s]) of query t and key s.
fn score_and_dp(b: vec3<u32>, ob: u32, t: u32, s: u32) -> vec2<f32> {
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < pb.ch; c++) {
        score = fma(f32(qkv_b[(b.x + c) * pb.t + t]), f32(qkv_b[(b.y + c) * pb.t + s]), score);
        dp = fma(f32(dy[ob + c * pb.t + t]), f32(qkv_b[(b.z + c) * pb.t + s]), dp);
    }
    return vec2<f32>(score * pb.scale_q * pb.scale_k, dp);
}

@compute @workgroup_size(WG)
fn attn_bwd_d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
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

@compute @workgroup_size(WG)
fn attn_bwd_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let blocks = (pb.ch + BLOCK - 1u) / BLOCK;
    if (i >= pb.n * pb.heads * blocks * pb.t) {
        return;
    }
    let w = work_item(i, pb.ch, pb.heads, pb.t);
    let b = bases(pb.order, pb.heads, pb.ch, w.n, w.h);
    let ob = w.nh * pb.ch * pb.t;
    let l = lse_b[w.nh * pb.t + w.t];
    let d = dsum_r[w.nh * pb.t + w.t];
    var acc: array<f32, BLOCK>;
    for (var c = 0u; c < BLOCK; c++) {
        acc[c] = 0.0;
    }
    for (var s = 0u; s < pb.t; s++) {
        let sd = score_and_dp(b, ob, w.t, s);
        let ds = exp(sd.x - l) * (sd.y - d);
        for (var c = w.c0; c < w.c1; c++) {
            acc[c - w.c0] = fma(ds, f32(qkv_b[(b.y + c) * pb.t + s]), acc[c - w.c0]);
        }
    }
    let sc = pb.scale_q * pb.scale_k;
    for (var c = w.c0; c < w.c1; c++) {
        store_grad((b.x + c) * pb.t + w.t, acc[c - w.c0] * sc);
    }
}

@compute @workgroup_size(WG)
fn attn_bwd_kv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let blocks = (pb.ch + BLOCK - 1u) / BLOCK;
    if (i >= pb.n * pb.heads * blocks * pb.t) {
        return;
    }
    let w = work_item(i, pb.ch, pb.heads, pb.t);
    let s = w.t; // this thread's key
    let b = bases(pb.order, pb.heads, pb.ch, w.n, w.h);
    let ob = w.nh * pb.ch * pb.t;
    var dk: array<f32, BLOCK>;
    var dv: array<f32, BLOCK>;
    for (var c = 0u; c < BLOCK; c++) {
        dk[c] = 0.0;
        dv[c] = 0.0;
    }
    for (var t = 0u; t < pb.t; t++) {
        let sd = score_and_dp(b, ob, t, s);
        let pr = exp(sd.x - lse_b[w.nh * pb.t + t]);
        let ds = pr * (sd.y - dsum_r[w.nh * pb.t + t]);
        for (var c = w.c0; c < w.c1; c++) {
            dv[c - w.c0] = fma(pr, f32(dy[ob + c * pb.t + t]), dv[c - w.c0]);
            dk[c - w.c0] = fma(ds, f32(qkv_b[(b.x + c) * pb.t + t]), dk[c - w.c0]);
        }
    }
    let sc = pb.scale_q * pb.scale_k;
    for (var c = w.c0; c < w.c1; c++) {
        store_grad((b.y + c) * pb.t + s, dk[c - w.c0] * sc);
        store_grad((b.z + c) * pb.t + s, dv[c - w.c0]);
    }
}
