// 2-D convolution with bias as an implicit GEMM:
//   Y[co, p] = sum_k W[co, k] * X_col[k, p],  k = (ci, ky, kx),  p = (n, oy, ox)
// M = Cout rows, P = N*Ho*Wo columns, K = Cin*KS*KS. A workgroup of WG_M x WG_N
// threads computes a TM x TN tile (TM = WG_M*RM, TN = WG_N*RN) through TK-deep
// shared-memory tiles of W and of the gathered input (im2col on the fly, zero
// padding by bounds checks); each thread keeps an RM x RN register block. The
// inner product over one TK slice is the part a tensor-core tile product
// (coopMultiplyAdd) would replace.
//
// Epilogue: y = (acc + b[co] + residual) * out_scale, residual either a tensor of
// y's shape (res_mode 1) or a per-(n, co) vector broadcast over pixels (res_mode 2).

// Tensor and weight storage type: f32 as written; `Shader::typed` makes the f16
// instance. Every sum, statistic and softmax runs in f32.
alias T = f32;

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    ks: u32,          // kernel size (square)
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    w_off: u32,       // element offsets into the weight arenas
    b_off: u32,
    res_mode: u32,    // 0 none, 1 full tensor, 2 per-(n, co) vector
    res_off: u32,     // element offset into res
    res_stride: u32,  // per-sample stride of the res vector (mode 2)
    out_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The backward-data pass's parameters: the forward geometry, then its own epilogue.
struct BwdDataParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    ks: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    w_off: u32,
    accumulate: u32,  // 1: dx += scale * ..., 0: dx = scale * ...
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TK: u32 = 16u;
const RM: u32 = 4u;
const RN: u32 = 4u;
// Shared tiles are sized for the largest configuration; overrides only shrink them.
const MAX_TILE: u32 = 2048u; // >= TK * WG_M * RM and >= TK * WG_N * RN

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

// Tiles are stored as vec4 along M and N: a thread's RM = 4 rows (RN = 4
// columns) are one 16-byte shared-memory load per k step.
var<workgroup> a_tile: array<vec4<f32>, MAX_TILE / 4u>; // [TK][TM / 4]
var<workgroup> b_tile: array<vec4<f32>, MAX_TILE / 4u>; // [TK][TN / 4]

@compute @workgroup_size(WG_N, WG_M)
fn conv2d(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tm = WG_M * RM;
    let tn = WG_N * RN;
    let kk = p.ks * p.ks;
    let kdim = p.cin * kk;
    let hwo = p.ho * p.wo;
    let pdim = p.n * hwo;
    let m0 = wid.y * tm;
    let p0 = wid.x * tn;
    let nthreads = WG_M * WG_N;
    let tid = lid.y * WG_N + lid.x;

    var acc: array<f32, 16>; // RM * RN
    for (var i = 0u; i < RM * RN; i++) {
        acc[i] = 0.0;
    }

    // Each thread loads fixed tile columns (the Rust side keeps WG_M * WG_N a
    // multiple of TN and TK), so its pixel is decoded once, outside the k loop.
    let a_kl = tid % TK;
    let a_step = nthreads / TK;
    let b_pl = tid % tn;
    let b_step = nthreads / tn;
    let pix = p0 + b_pl;
    let pix_ok = pix < pdim;
    let pb_ = pix / hwo;
    let pr = pix - pb_ * hwo;
    let oy = pr / p.wo;
    let ox = pr - oy * p.wo;
    let iy0 = i32(oy * p.stride) - i32(p.pad_top);
    let ix0 = i32(ox * p.stride) - i32(p.pad_left);
    let x_base = pb_ * p.cin * p.h * p.w;

    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        // W tile, read along k (contiguous in [Cout, Cin, KS, KS]).
        let ka = k0 + a_kl;
        for (var ml = tid / TK; ml < tm; ml += a_step) {
            let m = m0 + ml;
            var v = 0.0;
            if (m < p.cout && ka < kdim) {
                v = f32(wt[p.w_off + m * kdim + ka]);
            }
            a_tile[(a_kl * tm + ml) / 4u][ml % 4u] = v;
        }
        // Gathered input tile (im2col on the fly), read along pixels.
        for (var kl = tid / tn; kl < TK; kl += b_step) {
            let k = k0 + kl;
            var v = 0.0;
            if (pix_ok && k < kdim) {
                let ci = k / kk;
                let kr = k - ci * kk;
                let ky = kr / p.ks;
                let kx = kr - ky * p.ks;
                let iy = iy0 + i32(ky);
                let ix = ix0 + i32(kx);
                if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    v = f32(x[x_base + (ci * p.h + u32(iy)) * p.w + u32(ix)]);
                }
            }
            b_tile[(kl * tn + b_pl) / 4u][b_pl % 4u] = v;
        }
        workgroupBarrier();
        // Tile product: the register block accumulates a TK-deep outer-product sum.
        for (var kl = 0u; kl < TK; kl++) {
            let a = a_tile[kl * WG_M + lid.y];
            let bv = b_tile[kl * WG_N + lid.x];
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = fma(a[i], bv[j], acc[i * RN + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let m = m0 + lid.y * RM + i;
        if (m >= p.cout) {
            continue;
        }
        for (var j = 0u; j < RN; j++) {
            let pix = p0 + lid.x * RN + j;
            if (pix >= pdim) {
                continue;
            }
            let b = pix / hwo;
            let r = pix - b * hwo;
            let o = (b * p.cout + m) * hwo + r;
            var v = acc[i * RN + j] + f32(bias[p.b_off + m]);
            if (p.res_mode == 1u) {
                v += f32(res[p.res_off + o]);
            } else if (p.res_mode == 2u) {
                v += f32(res[p.res_off + b * p.res_stride + m]);
            }
            y[o] = T(v * p.out_scale);
        }
    }
}

// ---------------------------------------------------------------------------
// Backward w.r.t. the input (the VJP needs only dx): the transposed
// convolution as the same tiled GEMM,
//   dX[ci, q] = scale * sum_k W[co, ci, ky, kx] * dY[co, (q + pad - (ky, kx)) / stride],
// k = (co, ky, kx), q = (n, iy, ix); taps whose output position is not on the
// stride grid or out of range contribute zero. `accumulate` 1: dx += ...,
// 0: dx = ....

@group(0) @binding(0) var<uniform> pb: BwdDataParams;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> wtb: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;

@compute @workgroup_size(WG_N, WG_M)
fn conv2d_bwd_data(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tm = WG_M * RM;
    let tn = WG_N * RN;
    let kk = pb.ks * pb.ks;
    let kdim = pb.cout * kk;
    let hw = pb.h * pb.w;
    let hwo = pb.ho * pb.wo;
    let qdim = pb.n * hw;
    let m0 = wid.y * tm;
    let q0 = wid.x * tn;
    let nthreads = WG_M * WG_N;
    let tid = lid.y * WG_N + lid.x;

    var acc: array<f32, 16>;
    for (var i = 0u; i < RM * RN; i++) {
        acc[i] = 0.0;
    }
    let a_kl = tid % TK;
    let a_step = nthreads / TK;
    let b_ql = tid % tn;
    let b_step = nthreads / tn;
    let q = q0 + b_ql;
    let q_ok = q < qdim;
    let qb = q / hw;
    let qr = q - qb * hw;
    let iy = qr / pb.w;
    let ix = qr - iy * pb.w;
    let dy_base = qb * pb.cout * hwo;

    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        let ka = k0 + a_kl;
        let co_a = ka / kk;
        let kr_a = ka - co_a * kk;
        for (var ml = tid / TK; ml < tm; ml += a_step) {
            let ci = m0 + ml;
            var v = 0.0;
            if (ci < pb.cin && ka < kdim) {
                v = f32(wtb[pb.w_off + (co_a * pb.cin + ci) * kk + kr_a]);
            }
            a_tile[(a_kl * tm + ml) / 4u][ml % 4u] = v;
        }
        for (var kl = tid / tn; kl < TK; kl += b_step) {
            let k = k0 + kl;
            var v = 0.0;
            if (q_ok && k < kdim) {
                let co = k / kk;
                let kr = k - co * kk;
                let ky = kr / pb.ks;
                let kx = kr - ky * pb.ks;
                let sy = i32(iy + pb.pad_top) - i32(ky);
                let sx = i32(ix + pb.pad_left) - i32(kx);
                if (sy >= 0 && sx >= 0) {
                    let oy = u32(sy) / pb.stride;
                    let ox = u32(sx) / pb.stride;
                    if (oy * pb.stride == u32(sy) && ox * pb.stride == u32(sx) && oy < pb.ho && ox < pb.wo) {
                        v = f32(dy[dy_base + co * hwo + oy * pb.wo + ox]);
                    }
                }
            }
            b_tile[(kl * tn + b_ql) / 4u][b_ql % 4u] = v;
        }
        workgroupBarrier();
        for (var kl = 0u; kl < TK; kl++) {
            let a = a_tile[kl * WG_M + lid.y];
            let bv = b_tile[kl * WG_N + lid.x];
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = fma(a[i], bv[j], acc[i * RN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < RM; i++) {
        let ci = m0 + lid.y * RM + i;
        if (ci >= pb.cin) {
            continue;
        }
        for (var j = 0u; j < RN; j++) {
            let q = q0 + lid.x * RN + j;
            if (q >= qdim) {
                continue;
            }
            let b = q / hw;
            let r = q - b * hw;
            let o = (b * pb.cin + ci) * hw + r;
            var v = acc[i * RN + j] * pb.scale;
            if (pb.accumulate == 1u) {
                v += f32(dx[o]);
            }
            dx[o] = T(v);
        }
    }
}
