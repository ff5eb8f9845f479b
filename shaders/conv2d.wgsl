// 2-D convolution with bias as an implicit GEMM:
//   Y[co, p] = sum_k W[co, k] * X_col[k, p],  k = (ci, ky, kx),  p = (n, oy, ox)
// M = Cout rows, P = N*Ho*Wo columns, K = Cin*KS*KS. A workgroup of WG_M x WG_N
// threads computes a TM x TN tile (TM = WG_M*RM, TN = WG_N*RN) through TK-deep
// workgroup-memory tiles of W and of the gathered input (im2col on the fly,
// zero padding by bounds checks); each thread keeps an RM x RN register block
// (4x4, or 8x8 for large GEMMs). The inner product over one TK slice is the
// part the cooperative-matrix kernel (conv2d_coop.wgsl) does on tensor cores.
//
// Shaped for real GPUs:
// - Tiles are stored as vec4 along M (N) with one vec4 of padding per k row,
//   so a warp's transposing stores of the W tile hit distinct banks (at most
//   2-way) and its reads of a thread's 4 rows are one 16-byte load.
// - A thread's 8x8 block is two 4-row (4-column) strips WG_M (WG_N) vec4s
//   apart, so the strips of neighbouring threads are adjacent in memory.
// - The gathers do no per-element integer division: each thread loads fixed
//   tile rows, whose (channel, ky, kx) decomposition is advanced by TK per
//   slice with at most two carries (stride-2 backward taps use shifts).
// - The next K slice is loaded into registers while the current one is
//   multiplied (one load site, one workgroup barrier pair per slice).
// - Split-K: workgroup z covers K range [z k_split, (z+1) k_split) and writes
//   raw f32 partial sums; `conv2d_splitk` then adds the splits and applies
//   the epilogue. A layer whose output tiles do not fill the GPU uses it.
// - ROUND_F16 rounds both operands to f16 as they enter workgroup memory: the
//   cooperative-matrix path's operand rounding, emulated so its numerics can
//   be tested on any adapter.
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
    k_split: u32,     // K elements per split (a multiple of TK; K when not split)
    splits: u32,      // 1: epilogue in place; > 1: f32 partial sums to `part`
    _pad0: u32,
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
    k_split: u32,
    splits: u32,
    stride_shift: u32, // log2(stride) when stride is a power of two, else 32
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TK: u32 = 16u;
override RM: u32 = 4u;   // 4 or 8 rows per thread
override RN: u32 = 4u;   // 4 or 8 columns per thread
override ROUND_F16: bool = false;
// Workgroup tiles are sized for the largest configuration; overrides only
// shrink the part in use: TK * (TM + 4) and TK * (TN + 4) floats.
const MAX_TILE: u32 = 2048u;
// Per-thread loads per slice (TM * TK / threads, TN * TK / threads) and
// accumulators (RM * RN) at most.
const MAX_LD: u32 = 8u;
const MAX_ACC: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
// Split-K partial sums [splits, M, P] (f32 whatever T is). Unsplit passes
// bind the output here; it is not touched.
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, MAX_TILE / 4u>; // [TK][TM / 4 + 1]
var<workgroup> b_tile: array<vec4<f32>, MAX_TILE / 4u>; // [TK][TN / 4 + 1]

// v rounded to the nearest f16 value, ties to even (bit arithmetic, so it
// does not depend on the adapter's pack2x16float rounding): 10 mantissa bits
// for f16-normal magnitudes, multiples of 2^-24 below them. Magnitudes past
// f16's range are not clamped (activations and weights stay far inside it).
fn operand(v: f32) -> f32 {
    if (ROUND_F16) {
        if (abs(v) < 6.103515625e-05) {
            return round(v * 16777216.0) / 16777216.0;
        }
        let b = bitcast<u32>(v);
        return bitcast<f32>((b + 0x0fffu + ((b >> 13u) & 1u)) & 0xffffe000u);
    }
    return v;
}

fn store_a(kl: u32, ml: u32, v: f32) {
    let sa = WG_M * RM / 4u + 1u;
    a_tile[kl * sa + ml / 4u][ml % 4u] = operand(v);
}

fn store_b(kl: u32, nl: u32, v: f32) {
    let sb = WG_N * RN / 4u + 1u;
    b_tile[kl * sb + nl / 4u][nl % 4u] = operand(v);
}

// Row (column) of the tile held in a thread's strip r, lane i.
fn tile_row(lid: u32, wg: u32, r: u32, i: u32) -> u32 {
    return (r * wg + lid) * 4u + i;
}

// The register-block product of one TK slice.
fn multiply_slice(lid: vec3<u32>, acc: ptr<function, array<f32, MAX_ACC>>) {
    let sa = WG_M * RM / 4u + 1u;
    let sb = WG_N * RN / 4u + 1u;
    for (var kl = 0u; kl < TK; kl++) {
        var av: array<vec4<f32>, 2>;
        var bv: array<vec4<f32>, 2>;
        for (var r = 0u; r < RM / 4u; r++) {
            av[r] = a_tile[kl * sa + r * WG_M + lid.y];
        }
        for (var c = 0u; c < RN / 4u; c++) {
            bv[c] = b_tile[kl * sb + c * WG_N + lid.x];
        }
        for (var r = 0u; r < RM / 4u; r++) {
            for (var i = 0u; i < 4u; i++) {
                for (var c = 0u; c < RN / 4u; c++) {
                    for (var j = 0u; j < 4u; j++) {
                        let e = (r * 4u + i) * RN + c * 4u + j;
                        (*acc)[e] = fma(av[r][i], bv[c][j], (*acc)[e]);
                    }
                }
            }
        }
    }
}

// A thread's fixed gather rows: the im2col row k and its decomposition,
// advanced by TK per slice without division. `off` is the element offset of
// tap (ci, ky, kx) relative to the thread's pixel origin.
struct Gather {
    k: u32,
    ky: i32,
    kx: i32,
    off: i32,
}

@compute @workgroup_size(WG_N, WG_M)
fn conv2d(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tm = WG_M * RM;
    let tn = WG_N * RN;
    let kk = p.ks * p.ks;
    let kdim = p.cin * kk;
    let hw = p.h * p.w;
    let hwo = p.ho * p.wo;
    let pdim = p.n * hwo;
    let m0 = wid.y * tm;
    let p0 = wid.x * tn;
    let k_begin = wid.z * p.k_split;
    let k_end = min(kdim, k_begin + p.k_split);
    let nthreads = WG_M * WG_N;
    let tid = lid.y * WG_N + lid.x;

    var acc: array<f32, MAX_ACC>;
    for (var i = 0u; i < RM * RN; i++) {
        acc[i] = 0.0;
    }

    // W loads: k lane a_kl (contiguous in [Cout, Cin, KS, KS]), rows
    // tid / TK + i a_step.
    let a_kl = tid % TK;
    let a_step = nthreads / TK;
    let a_ld = tm / a_step;
    // Gather loads: pixel column b_pl, k rows tid / tn + j b_step.
    let b_pl = tid % tn;
    let b_step = nthreads / tn;
    let b_ld = TK / b_step;
    let pix = p0 + b_pl;
    let pix_ok = pix < pdim;
    let pb_ = pix / hwo;
    let pr = pix - pb_ * hwo;
    let oy = pr / p.wo;
    let ox = pr - oy * p.wo;
    let iy0 = i32(oy * p.stride) - i32(p.pad_top);
    let ix0 = i32(ox * p.stride) - i32(p.pad_left);
    let x_org = i32(pb_ * p.cin * hw) + iy0 * i32(p.w) + ix0;
    // The decomposition of TK: dci channels, dky rows, dkx columns.
    let dci = TK / kk;
    let dky = (TK % kk) / p.ks;
    let dkx = TK % p.ks;
    let ks = i32(p.ks);
    let w_i = i32(p.w);
    let d_off = i32(dci * hw) + i32(dky) * w_i + i32(dkx);

    var g: array<Gather, MAX_LD>;
    for (var j = 0u; j < b_ld; j++) {
        let k = k_begin + tid / tn + j * b_step;
        let ci = k / kk;
        let kr = k - ci * kk;
        let ky = kr / p.ks;
        let kx = kr - ky * p.ks;
        g[j] = Gather(k, i32(ky), i32(kx), i32(ci * hw) + i32(ky) * w_i + i32(kx));
    }

    var a_reg: array<f32, MAX_LD>;
    var b_reg: array<f32, MAX_LD>;
    // A software pipeline with one load site: iteration k0 stores the slice
    // the registers hold (k0 - TK) into workgroup memory, loads slice k0 into
    // the registers, then multiplies slice k0 - TK while those loads are in
    // flight. The first iteration only loads; the last only multiplies.
    for (var k0 = k_begin; k0 < k_end + TK; k0 += TK) {
        let have = k0 > k_begin;
        if (have) {
            for (var i = 0u; i < a_ld; i++) {
                store_a(a_kl, tid / TK + i * a_step, a_reg[i]);
            }
            for (var j = 0u; j < b_ld; j++) {
                store_b(tid / tn + j * b_step, b_pl, b_reg[j]);
            }
            workgroupBarrier();
        }
        if (k0 < k_end) {
            let ka = k0 + a_kl;
            for (var i = 0u; i < a_ld; i++) {
                let m = m0 + tid / TK + i * a_step;
                var v = 0.0;
                if (m < p.cout && ka < k_end) {
                    v = f32(wt[p.w_off + m * kdim + ka]);
                }
                a_reg[i] = v;
            }
            for (var j = 0u; j < b_ld; j++) {
                var gj = g[j];
                if (have) {
                    // Advance this gather row by TK: (dci, dky, dkx) and carries.
                    gj.k += TK;
                    gj.kx += i32(dkx);
                    gj.ky += i32(dky);
                    gj.off += d_off;
                    if (gj.kx >= ks) {
                        gj.kx -= ks;
                        gj.ky += 1;
                        gj.off += w_i - ks;
                    }
                    if (gj.ky >= ks) {
                        gj.ky -= ks;
                        gj.off += i32(hw) - ks * w_i;
                    }
                    g[j] = gj;
                }
                var v = 0.0;
                let iy = iy0 + gj.ky;
                let ix = ix0 + gj.kx;
                if (pix_ok && gj.k < k_end && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < w_i) {
                    v = f32(x[u32(x_org + gj.off)]);
                }
                b_reg[j] = v;
            }
        }
        if (have) {
            multiply_slice(lid, &acc);
            workgroupBarrier();
        }
    }

    for (var r = 0u; r < RM / 4u; r++) {
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + tile_row(lid.y, WG_M, r, i);
            if (m >= p.cout) {
                continue;
            }
            for (var c = 0u; c < RN / 4u; c++) {
                for (var j = 0u; j < 4u; j++) {
                    let pix = p0 + tile_row(lid.x, WG_N, c, j);
                    if (pix >= pdim) {
                        continue;
                    }
                    let a = acc[(r * 4u + i) * RN + c * 4u + j];
                    if (p.splits > 1u) {
                        part[(wid.z * p.cout + m) * pdim + pix] = a;
                    } else {
                        y[conv_out_index(m, pix)] = T(conv_epilogue(m, pix, a));
                    }
                }
            }
        }
    }
}

// Output element of GEMM row m (channel), column pix (n, oy, ox).
fn conv_out_index(m: u32, pix: u32) -> u32 {
    let hwo = p.ho * p.wo;
    let b = pix / hwo;
    return (b * p.cout + m) * hwo + (pix - b * hwo);
}

// Element of the residual binding added to output (m, pix), or none.
fn res_index(m: u32, pix: u32) -> u32 {
    if (p.res_mode == 1u) {
        return p.res_off + conv_out_index(m, pix);
    }
    return p.res_off + (pix / (p.ho * p.wo)) * p.res_stride + m;
}

fn conv_epilogue(m: u32, pix: u32, acc: f32) -> f32 {
    var v = acc + f32(bias[p.b_off + m]);
    if (p.res_mode != 0u) {
        v += f32(res[res_index(m, pix)]);
    }
    return v * p.out_scale;
}

// Split-K fix-up: one thread per output, the sum of the splits' partials,
// then the epilogue. Binds (params, partials, bias, res, y).
@group(0) @binding(1) var<storage, read> fx_part: array<f32>;
@group(0) @binding(2) var<storage, read> fx_bias: array<T>;
@group(0) @binding(3) var<storage, read> fx_res: array<T>;
@group(0) @binding(4) var<storage, read_write> fx_y: array<T>;

override WG1: u32 = 256u;

@compute @workgroup_size(WG1)
fn conv2d_splitk(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG1;
    let pdim = p.n * p.ho * p.wo;
    if (i >= p.cout * pdim) {
        return;
    }
    // i runs over the partials' [M, P] layout: m = i / P, pix = i % P.
    let m = i / pdim;
    let pix = i - m * pdim;
    var v = f32(fx_bias[p.b_off + m]);
    for (var z = 0u; z < p.splits; z++) {
        v += fx_part[z * p.cout * pdim + i];
    }
    if (p.res_mode != 0u) {
        v += f32(fx_res[res_index(m, pix)]);
    }
    fx_y[conv_out_index(m, pix)] = T(v * p.out_scale);
}

// ---------------------------------------------------------------------------
// Backward w.r.t. the input (the VJP needs only dx): the transposed
// convolution as the same tiled GEMM,
//   dX[ci, q] = scale * sum_k W[co, ci, ky, kx] * dY[co, (q + pad - (ky, kx)) / stride],
// k = (co, ky, kx), q = (n, iy, ix); taps whose output position is not on the
// stride grid or out of range contribute zero. `accumulate` 1: dx += ...,
// 0: dx = .... The loaders advance (co, ky, kx) by TK per slice as the
// forward gather does; a stride that is a power of two is undone by shifts.

@group(0) @binding(0) var<uniform> pb: BwdDataParams;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> wtb: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;
// Split-K partial sums [splits, Cin, Q]; unsplit passes bind dx here.
@group(0) @binding(4) var<storage, read_write> bpart: array<f32>;

// dy's element for tap (ky, kx) of input position (iy, ix) relative to
// channel base `cbase`, or 0 when the tap is off the stride grid or outside.
fn dy_tap(cbase: u32, iy: u32, ix: u32, ky: i32, kx: i32) -> f32 {
    let sy = i32(iy + pb.pad_top) - ky;
    let sx = i32(ix + pb.pad_left) - kx;
    if (sy < 0 || sx < 0) {
        return 0.0;
    }
    var oy: u32;
    var ox: u32;
    if (pb.stride == 1u) {
        oy = u32(sy);
        ox = u32(sx);
    } else if (pb.stride_shift < 32u) {
        let mask = pb.stride - 1u;
        if ((u32(sy) & mask) != 0u || (u32(sx) & mask) != 0u) {
            return 0.0;
        }
        oy = u32(sy) >> pb.stride_shift;
        ox = u32(sx) >> pb.stride_shift;
    } else {
        oy = u32(sy) / pb.stride;
        ox = u32(sx) / pb.stride;
        if (oy * pb.stride != u32(sy) || ox * pb.stride != u32(sx)) {
            return 0.0;
        }
    }
    if (oy >= pb.ho || ox >= pb.wo) {
        return 0.0;
    }
    return f32(dy[cbase + oy * pb.wo + ox]);
}

// A thread's fixed k lane of the transposed weights: k = (co, kr), and the
// element offset co * cin * kk + kr.
struct WLane {
    k: u32,
    kr: u32,
    off: u32,
}

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
    let k_begin = wid.z * pb.k_split;
    let k_end = min(kdim, k_begin + pb.k_split);
    let nthreads = WG_M * WG_N;
    let tid = lid.y * WG_N + lid.x;

    var acc: array<f32, MAX_ACC>;
    for (var i = 0u; i < RM * RN; i++) {
        acc[i] = 0.0;
    }
    let a_kl = tid % TK;
    let a_step = nthreads / TK;
    let a_ld = tm / a_step;
    let b_ql = tid % tn;
    let b_step = nthreads / tn;
    let b_ld = TK / b_step;
    let q = q0 + b_ql;
    let q_ok = q < qdim;
    let qb = q / hw;
    let qr = q - qb * hw;
    let iy = qr / pb.w;
    let ix = qr - iy * pb.w;
    let dy_base = qb * pb.cout * hwo;
    let ks = i32(pb.ks);
    // TK = dco output channels + dkr taps.
    let dco = TK / kk;
    let dkr = TK % kk;
    let dky = dkr / pb.ks;
    let dkx = dkr % pb.ks;

    // The weight lane (k = k_begin + a_kl and onwards).
    var wl: WLane;
    {
        let k = k_begin + a_kl;
        let co = k / kk;
        let kr = k - co * kk;
        wl = WLane(k, kr, co * pb.cin * kk + kr);
    }
    // The gather rows: (co base of dy, ky, kx) per j.
    var g: array<Gather, MAX_LD>;
    for (var j = 0u; j < b_ld; j++) {
        let k = k_begin + tid / tn + j * b_step;
        let co = k / kk;
        let kr = k - co * kk;
        let ky = kr / pb.ks;
        g[j] = Gather(k, i32(ky), i32(kr - ky * pb.ks), i32(dy_base + co * hwo));
    }

    var a_reg: array<f32, MAX_LD>;
    var b_reg: array<f32, MAX_LD>;
    // The forward kernel's one-load-site pipeline.
    for (var k0 = k_begin; k0 < k_end + TK; k0 += TK) {
        let have = k0 > k_begin;
        if (have) {
            for (var i = 0u; i < a_ld; i++) {
                store_a(a_kl, tid / TK + i * a_step, a_reg[i]);
            }
            for (var j = 0u; j < b_ld; j++) {
                store_b(tid / tn + j * b_step, b_ql, b_reg[j]);
            }
            workgroupBarrier();
        }
        if (k0 < k_end) {
            if (have) {
                // Advance the weight lane by TK: dco channels and dkr taps.
                wl.k += TK;
                wl.kr += dkr;
                wl.off += dco * pb.cin * kk + dkr;
                if (wl.kr >= kk) {
                    wl.kr -= kk;
                    wl.off += pb.cin * kk - kk;
                }
            }
            for (var i = 0u; i < a_ld; i++) {
                let ci = m0 + tid / TK + i * a_step;
                var v = 0.0;
                if (ci < pb.cin && wl.k < k_end) {
                    v = f32(wtb[pb.w_off + wl.off + ci * kk]);
                }
                a_reg[i] = v;
            }
            for (var j = 0u; j < b_ld; j++) {
                var gj = g[j];
                if (have) {
                    gj.k += TK;
                    gj.kx += i32(dkx);
                    gj.ky += i32(dky);
                    gj.off += i32(dco * hwo);
                    if (gj.kx >= ks) {
                        gj.kx -= ks;
                        gj.ky += 1;
                    }
                    if (gj.ky >= ks) {
                        gj.ky -= ks;
                        gj.off += i32(hwo);
                    }
                    g[j] = gj;
                }
                var v = 0.0;
                if (q_ok && gj.k < k_end) {
                    v = dy_tap(u32(gj.off), iy, ix, gj.ky, gj.kx);
                }
                b_reg[j] = v;
            }
        }
        if (have) {
            multiply_slice(lid, &acc);
            workgroupBarrier();
        }
    }
    for (var r = 0u; r < RM / 4u; r++) {
        for (var i = 0u; i < 4u; i++) {
            let ci = m0 + tile_row(lid.y, WG_M, r, i);
            if (ci >= pb.cin) {
                continue;
            }
            for (var c = 0u; c < RN / 4u; c++) {
                for (var j = 0u; j < 4u; j++) {
                    let q = q0 + tile_row(lid.x, WG_N, c, j);
                    if (q >= qdim) {
                        continue;
                    }
                    let a = acc[(r * 4u + i) * RN + c * 4u + j];
                    if (pb.splits > 1u) {
                        bpart[(wid.z * pb.cin + ci) * qdim + q] = a;
                    } else {
                        store_dx(ci, q, a);
                    }
                }
            }
        }
    }
}

// dx's element for input channel ci, column q = (n, iy, ix).
fn dx_index(ci: u32, q: u32) -> u32 {
    let hw = pb.h * pb.w;
    let b = q / hw;
    return (b * pb.cin + ci) * hw + (q - b * hw);
}

fn store_dx(ci: u32, q: u32, acc: f32) {
    let o = dx_index(ci, q);
    var v = acc * pb.scale;
    if (pb.accumulate == 1u) {
        v += f32(dx[o]);
    }
    dx[o] = T(v);
}

// Split-K fix-up of the backward pass: binds (params, partials, dx).
@group(0) @binding(2) var<storage, read_write> fx_dx: array<T>;

@compute @workgroup_size(WG1)
fn conv2d_bwd_splitk(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG1;
    let qdim = pb.n * pb.h * pb.w;
    if (i >= pb.cin * qdim) {
        return;
    }
    let ci = i / qdim;
    var s = 0.0;
    for (var z = 0u; z < pb.splits; z++) {
        s += fx_part[z * pb.cin * qdim + i];
    }
    let o = dx_index(ci, i - ci * qdim);
    var v = s * pb.scale;
    if (pb.accumulate == 1u) {
        v += f32(fx_dx[o]);
    }
    fx_dx[o] = T(v);
}
