// Fused self-attention over T = H*W tokens, per sample and head:
//   y[n, h*ch + c, t] = sum_s softmax_s( (sq q[:, t]) . (sk k[:, s]) ) v[c, s]
// from the fused projection qkv [N, 3C, T] (C = heads * ch). Head layout:
//   order 0 (guided-diffusion QKVAttentionLegacy): head h owns channels
//           [3 h ch, 3 (h+1) ch) = [q; k; v];
//   order 1 (QKVAttention, diffusers): q = [0, C), k = [C, 2C), v = [2C, 3C),
//           head h at [h ch, (h+1) ch) inside each.
// One thread per query with an online (flash-style) softmax, so the T x T
// weights never exist in memory; lse[n, h, t] = max + log(sum) is kept for the
// backward pass.

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
const MAX_CH: u32 = 128u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WG)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.heads * p.t) {
        return;
    }
    let t = i % p.t;
    let nh = i / p.t;
    let h = nh % p.heads;
    let n = nh / p.heads;
    let c_all = p.heads * p.ch;
    let base = n * 3u * c_all;
    var qc: u32;
    var kc: u32;
    var vc: u32;
    if (p.order == 0u) {
        qc = base + 3u * h * p.ch;
        kc = qc + p.ch;
        vc = kc + p.ch;
    } else {
        qc = base + h * p.ch;
        kc = qc + c_all;
        vc = kc + c_all;
    }
    var q: array<f32, MAX_CH>;
    var acc: array<f32, MAX_CH>;
    for (var c = 0u; c < p.ch; c++) {
        q[c] = qkv[(qc + c) * p.t + t] * p.scale_q;
        acc[c] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var s = 0u; s < p.t; s++) {
        var score = 0.0;
        for (var c = 0u; c < p.ch; c++) {
            score = fma(q[c], qkv[(kc + c) * p.t + s] * p.scale_k, score);
        }
        let m_new = max(m, score);
        let corr = exp(m - m_new);
        let e = exp(score - m_new);
        l = l * corr + e;
        for (var c = 0u; c < p.ch; c++) {
            acc[c] = fma(acc[c], corr, e * qkv[(vc + c) * p.t + s]);
        }
        m = m_new;
    }
    let out = (n * c_all + h * p.ch) * p.t + t;
    for (var c = 0u; c < p.ch; c++) {
        y[out + c * p.t] = acc[c] / l;
    }
    lse[nh * p.t + t] = m + log(l);
}

// ---------------------------------------------------------------------------
// Backward: from dy [N, C, T] (and the saved y, lse) to dqkv [N, 3C, T].
// With P[t, s] = exp(score[t, s] - lse[t]) and D[t] = dy[:, t] . y[:, t],
//   dS[t, s] = P[t, s] (dy[:, t] . v[:, s] - D[t])
//   dq[:, t] = sq sk sum_s dS[t, s] k[:, s]     (attn_bwd_q: one thread per query, writes D)
//   dk[:, s] = sq sk sum_t dS[t, s] q[:, t]     (attn_bwd_kv: one thread per key)
//   dv[:, s] = sum_t P[t, s] dy[:, t]
// `accumulate` = 1 adds into dqkv instead of overwriting.

// Bindings 0-5 are shared by both entry points; only attn_bwd_q reads y (6).
@group(0) @binding(0) var<uniform> pb: Params;
@group(0) @binding(1) var<storage, read> qkv_b: array<f32>;
@group(0) @binding(2) var<storage, read> lse_b: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dsum: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(6) var<storage, read> yb: array<f32>;

@group(0) @binding(4) var<storage, read> dsum_r: array<f32>;

// Channel bases of q, k, v for (n, h) in qkv / dqkv.
fn qkv_bases(n: u32, h: u32) -> vec3<u32> {
    let c_all = pb.heads * pb.ch;
    let base = n * 3u * c_all;
    if (pb.order == 0u) {
        let qc = base + 3u * h * pb.ch;
        return vec3<u32>(qc, qc + pb.ch, qc + 2u * pb.ch);
    }
    let qc = base + h * pb.ch;
    return vec3<u32>(qc, qc + c_all, qc + 2u * c_all);
}

fn store_grad(i: u32, v: f32) {
    if (pb.accumulate == 1u) {
        dqkv[i] += v;
    } else {
        dqkv[i] = v;
    }
}

@compute @workgroup_size(WG)
fn attn_bwd_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= pb.n * pb.heads * pb.t) {
        return;
    }
    let t = i % pb.t;
    let nh = i / pb.t;
    let h = nh % pb.heads;
    let n = nh / pb.heads;
    let bases = qkv_bases(n, h);
    let out = (n * pb.heads * pb.ch + h * pb.ch) * pb.t + t;
    var q: array<f32, MAX_CH>;
    var g: array<f32, MAX_CH>;
    var acc: array<f32, MAX_CH>;
    var d = 0.0;
    for (var c = 0u; c < pb.ch; c++) {
        q[c] = qkv_b[(bases.x + c) * pb.t + t] * pb.scale_q;
        g[c] = dy[out + c * pb.t];
        d = fma(g[c], yb[out + c * pb.t], d);
        acc[c] = 0.0;
    }
    let l = lse_b[i];
    for (var s = 0u; s < pb.t; s++) {
        var score = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < pb.ch; c++) {
            score = fma(q[c], qkv_b[(bases.y + c) * pb.t + s] * pb.scale_k, score);
            dp = fma(g[c], qkv_b[(bases.z + c) * pb.t + s], dp);
        }
        let ds = exp(score - l) * (dp - d);
        for (var c = 0u; c < pb.ch; c++) {
            acc[c] = fma(ds, qkv_b[(bases.y + c) * pb.t + s], acc[c]);
        }
    }
    let sc = pb.scale_q * pb.scale_k;
    for (var c = 0u; c < pb.ch; c++) {
        store_grad((bases.x + c) * pb.t + t, acc[c] * sc);
    }
    dsum[i] = d;
}

@compute @workgroup_size(WG)
fn attn_bwd_kv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= pb.n * pb.heads * pb.t) {
        return;
    }
    let s = i % pb.t;
    let nh = i / pb.t;
    let h = nh % pb.heads;
    let n = nh / pb.heads;
    let bases = qkv_bases(n, h);
    let outb = (n * pb.heads * pb.ch + h * pb.ch) * pb.t;
    var k: array<f32, MAX_CH>;
    var v: array<f32, MAX_CH>;
    var dk: array<f32, MAX_CH>;
    var dv: array<f32, MAX_CH>;
    for (var c = 0u; c < pb.ch; c++) {
        k[c] = qkv_b[(bases.y + c) * pb.t + s] * pb.scale_k;
        v[c] = qkv_b[(bases.z + c) * pb.t + s];
        dk[c] = 0.0;
        dv[c] = 0.0;
    }
    for (var t = 0u; t < pb.t; t++) {
        var score = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < pb.ch; c++) {
            score = fma(qkv_b[(bases.x + c) * pb.t + t] * pb.scale_q, k[c], score);
            dp = fma(dy[outb + c * pb.t + t], v[c], dp);
        }
        let p = exp(score - lse_b[nh * pb.t + t]);
        let ds = p * (dp - dsum_r[nh * pb.t + t]);
        for (var c = 0u; c < pb.ch; c++) {
            dv[c] = fma(p, dy[outb + c * pb.t + t], dv[c]);
            dk[c] = fma(ds, qkv_b[(bases.x + c) * pb.t + t], dk[c]);
        }
    }
    let sc = pb.scale_q * pb.scale_k;
    for (var c = 0u; c < pb.ch; c++) {
        store_grad((bases.y + c) * pb.t + s, dk[c] * sc);
        store_grad((bases.z + c) * pb.t + s, dv[c]);
    }
}
