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

//!include conv_common

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
// accumulators (RM * RN, held as `Acc`'s 16 vec4s) at most.
const MAX_LD: u32 = 8u;
const MAX_ACC: u32 = 64u;

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

// The register block: output row R of the thread's block (0 <= R < RM) and
// column block cb (its columns 4 cb .. 4 cb + 3) live in acc[2 R + cb]. Every
// index into it is a constant: the rows are written out by hand, and the
// second half of a block (RM or RN of 8) sits behind tests of the overrides,
// which the pipeline's constants fold away. A function array indexed through
// loops is kept in local memory where a driver does not unroll those loops;
// on an H200 the earlier `array<f32, 64>` form ran at 0.2-0.7 TFLOP/s.
alias Acc = array<vec4<f32>, 16>;

// acc[2 R + cb] += a b, for rows R0 .. R0 + 3 from `a`'s lanes.
fn rank1_rows(acc: ptr<function, Acc>, upper: bool, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    if (!upper) {
        (*acc)[0] = fma(vec4<f32>(a.x), b0, (*acc)[0]);
        (*acc)[2] = fma(vec4<f32>(a.y), b0, (*acc)[2]);
        (*acc)[4] = fma(vec4<f32>(a.z), b0, (*acc)[4]);
        (*acc)[6] = fma(vec4<f32>(a.w), b0, (*acc)[6]);
        if (RN > 4u) {
            (*acc)[1] = fma(vec4<f32>(a.x), b1, (*acc)[1]);
            (*acc)[3] = fma(vec4<f32>(a.y), b1, (*acc)[3]);
            (*acc)[5] = fma(vec4<f32>(a.z), b1, (*acc)[5]);
            (*acc)[7] = fma(vec4<f32>(a.w), b1, (*acc)[7]);
        }
    } else {
        (*acc)[8] = fma(vec4<f32>(a.x), b0, (*acc)[8]);
        (*acc)[10] = fma(vec4<f32>(a.y), b0, (*acc)[10]);
        (*acc)[12] = fma(vec4<f32>(a.z), b0, (*acc)[12]);
        (*acc)[14] = fma(vec4<f32>(a.w), b0, (*acc)[14]);
        if (RN > 4u) {
            (*acc)[9] = fma(vec4<f32>(a.x), b1, (*acc)[9]);
            (*acc)[11] = fma(vec4<f32>(a.y), b1, (*acc)[11]);
            (*acc)[13] = fma(vec4<f32>(a.z), b1, (*acc)[13]);
            (*acc)[15] = fma(vec4<f32>(a.w), b1, (*acc)[15]);
        }
    }
}

// The register-block product of one TK slice.
fn multiply_slice(lid: vec3<u32>, acc: ptr<function, Acc>) {
    let sa = WG_M * RM / 4u + 1u;
    let sb = WG_N * RN / 4u + 1u;
    for (var kl = 0u; kl < TK; kl++) {
        let b0 = b_tile[kl * sb + lid.x];
        var b1 = vec4<f32>(0.0);
        if (RN > 4u) {
            b1 = b_tile[kl * sb + WG_N + lid.x];
        }
        rank1_rows(acc, false, a_tile[kl * sa + lid.y], b0, b1);
        if (RM > 4u) {
            rank1_rows(acc, true, a_tile[kl * sa + WG_M + lid.y], b0, b1);
        }
    }
}

// Where one accumulator row goes: the GEMM row `m` (a tile row of the
// thread's strip) and the row's two column blocks.
struct AccRow {
    m: u32,
    v0: vec4<f32>,
    v1: vec4<f32>,
}

// Row R of the register block of the thread at `lid` in the tile at row m0.
fn acc_row(lid: vec3<u32>, m0: u32, R: u32, v0: vec4<f32>, v1: vec4<f32>) -> AccRow {
    return AccRow(m0 + tile_row(lid.y, WG_M, R / 4u, R % 4u), v0, v1);
}

// The block's rows, in order, read with constant indices (the epilogue then
// walks this copy, once per tile, so the block itself is never indexed
// through a loop).
fn acc_rows(acc: ptr<function, Acc>, lid: vec3<u32>, m0: u32) -> array<AccRow, 8> {
    var rows: array<AccRow, 8>;
    rows[0] = acc_row(lid, m0, 0u, (*acc)[0], (*acc)[1]);
    rows[1] = acc_row(lid, m0, 1u, (*acc)[2], (*acc)[3]);
    rows[2] = acc_row(lid, m0, 2u, (*acc)[4], (*acc)[5]);
    rows[3] = acc_row(lid, m0, 3u, (*acc)[6], (*acc)[7]);
    rows[4] = acc_row(lid, m0, 4u, (*acc)[8], (*acc)[9]);
    rows[5] = acc_row(lid, m0, 5u, (*acc)[10], (*acc)[11]);
    rows[6] = acc_row(lid, m0, 6u, (*acc)[12], (*acc)[13]);
    rows[7] = acc_row(lid, m0, 7u, (*acc)[14], (*acc)[15]);
    return rows;
}

// Which tile elements thread `tid` loads each slice, in both passes: the A
// operand at k lane `a_kl` of rows tid / TK + i a_step (i < a_ld), the B
// operand (the gather) in column `b_col` of k rows b_row0 + j b_step (j < b_ld).
struct SimtLoads {
    a_kl: u32,
    a_step: u32,
    a_ld: u32,
    b_col: u32,
    b_row0: u32,
    b_step: u32,
    b_ld: u32,
}

fn simt_loads(tid: u32) -> SimtLoads {
    let nthreads = WG_M * WG_N;
    let tn = WG_N * RN;
    let a_step = nthreads / TK;
    let b_step = nthreads / tn;
    return SimtLoads(tid % TK, a_step, WG_M * RM / a_step, tid % tn, tid / tn, b_step, TK / b_step);
}

// Stores the slice the registers hold into workgroup memory, then waits for
// the whole tile.
fn stage_slice(
    l: SimtLoads,
    tid: u32,
    a_reg: ptr<function, array<f32, MAX_LD>>,
    b_reg: ptr<function, array<f32, MAX_LD>>,
) {
    for (var i = 0u; i < l.a_ld; i++) {
        store_a(l.a_kl, tid / TK + i * l.a_step, (*a_reg)[i]);
    }
    for (var j = 0u; j < l.b_ld; j++) {
        store_b(l.b_row0 + j * l.b_step, l.b_col, (*b_reg)[j]);
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG_N, WG_M)
fn conv2d(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let kdim = p.cin * p.ks * p.ks;
    let pdim = p.n * p.ho * p.wo;
    let m0 = wid.y * WG_M * RM;
    let p0 = wid.x * WG_N * RN;
    let k_begin = wid.z * p.k_split;
    let k_end = min(kdim, k_begin + p.k_split);
    let tid = lid.y * WG_N + lid.x;
    let l = simt_loads(tid);

    // Function variables start at zero: the accumulators too.
    var acc: Acc;
    // W loads are contiguous along k in [Cout, Cin, KS, KS]; the gather rows
    // are fixed per thread and stepped by TK per slice.
    let col = x_column(p0 + l.b_col);
    let step = x_gather_step(TK);
    var g: array<Gather, MAX_LD>;
    for (var j = 0u; j < l.b_ld; j++) {
        g[j] = x_gather_at(k_begin + l.b_row0 + j * l.b_step);
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
            stage_slice(l, tid, &a_reg, &b_reg);
        }
        if (k0 < k_end) {
            let ka = k0 + l.a_kl;
            for (var i = 0u; i < l.a_ld; i++) {
                let m = m0 + tid / TK + i * l.a_step;
                var v = 0.0;
                if (m < p.cout && ka < k_end) {
                    v = f32(wt[p.w_off + m * kdim + ka]);
                }
                a_reg[i] = v;
            }
            for (var j = 0u; j < l.b_ld; j++) {
                if (have) {
                    g[j] = gather_advance(g[j], step);
                }
                b_reg[j] = x_tap(col, g[j], k_end);
            }
        }
        if (have) {
            multiply_slice(lid, &acc);
            workgroupBarrier();
        }
    }

    var rows = acc_rows(&acc, lid, m0);
    for (var r = 0u; r < RM; r++) {
        let row = rows[r];
        if (row.m >= p.cout) {
            continue;
        }
        for (var c = 0u; c < RN / 4u; c++) {
            let v = select(row.v0, row.v1, c == 1u);
            for (var j = 0u; j < 4u; j++) {
                let pix = p0 + tile_row(lid.x, WG_N, c, j);
                if (pix < pdim) {
                    conv_store(wid.z, row.m, pix, v[j]);
                }
            }
        }
    }
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

// A thread's fixed k lane of the transposed weights: k = (co, kr), and the
// element offset co * cin * kk + kr.
struct WLane {
    k: u32,
    kr: u32,
    off: u32,
}

@compute @workgroup_size(WG_N, WG_M)
fn conv2d_bwd_data(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let kk = pb.ks * pb.ks;
    let kdim = pb.cout * kk;
    let qdim = pb.n * pb.h * pb.w;
    let m0 = wid.y * WG_M * RM;
    let q0 = wid.x * WG_N * RN;
    let k_begin = wid.z * pb.k_split;
    let k_end = min(kdim, k_begin + pb.k_split);
    let tid = lid.y * WG_N + lid.x;
    let l = simt_loads(tid);

    var acc: Acc;
    let col = dy_column(q0 + l.b_col);
    let step = dy_gather_step(TK);
    // TK = dco output channels + dkr taps.
    let dco = TK / kk;
    let dkr = TK % kk;

    // The weight lane (k = k_begin + a_kl and onwards).
    var wl: WLane;
    {
        let k = k_begin + l.a_kl;
        let co = k / kk;
        let kr = k - co * kk;
        wl = WLane(k, kr, co * pb.cin * kk + kr);
    }
    var g: array<Gather, MAX_LD>;
    for (var j = 0u; j < l.b_ld; j++) {
        g[j] = dy_gather_at(col, k_begin + l.b_row0 + j * l.b_step);
    }

    var a_reg: array<f32, MAX_LD>;
    var b_reg: array<f32, MAX_LD>;
    // The forward kernel's one-load-site pipeline.
    for (var k0 = k_begin; k0 < k_end + TK; k0 += TK) {
        let have = k0 > k_begin;
        if (have) {
            stage_slice(l, tid, &a_reg, &b_reg);
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
            for (var i = 0u; i < l.a_ld; i++) {
                let ci = m0 + tid / TK + i * l.a_step;
                var v = 0.0;
                if (ci < pb.cin && wl.k < k_end) {
                    v = f32(wtb[pb.w_off + wl.off + ci * kk]);
                }
                a_reg[i] = v;
            }
            for (var j = 0u; j < l.b_ld; j++) {
                if (have) {
                    g[j] = gather_advance(g[j], step);
                }
                b_reg[j] = dy_tap(col, g[j], k_end);
            }
        }
        if (have) {
            multiply_slice(lid, &acc);
            workgroupBarrier();
        }
    }
    var rows = acc_rows(&acc, lid, m0);
    for (var r = 0u; r < RM; r++) {
        let row = rows[r];
        if (row.m >= pb.cin) {
            continue;
        }
        for (var c = 0u; c < RN / 4u; c++) {
            let v = select(row.v0, row.v1, c == 1u);
            for (var j = 0u; j < 4u; j++) {
                let q = q0 + tile_row(lid.x, WG_N, c, j);
                if (q < qdim) {
                    dx_store(wid.z, row.m, q, v[j]);
                }
            }
        }
    }
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
