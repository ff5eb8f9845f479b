enable f16;
//!variant tensor_cores: coop_common
//!variant emulated: coop_common_emulated

// 2-D convolution (forward and backward-data) on tensor cores, through
// wgpu's experimental cooperative matrices: the same implicit GEMM as
// conv2d.wgsl, Y[M, P] = W[M, K] X_col[K, P], with f16 operands and f32
// accumulation in 16x16x16 fragments.
//
// A workgroup of 128 invocations (four subgroups of 32) owns a 64 x 64
// output tile; subgroup s owns the 32 x 32 quadrant (s / 2, s % 2) as 2 x 2
// accumulator fragments. Each 16-deep K slice is staged by all invocations
// into workgroup memory as f16 (W rows [64][16], the im2col gather [16][64],
// rows padded by 8 halves), then each subgroup loads two A and two B
// fragments and does four multiply-adds. The gathers advance their
// (channel, ky, kx) decomposition by 16 per slice without division, as the
// SIMT kernel does (conv_common.wgsl). After the K loop the fragments go to
// workgroup memory (f32) and every invocation runs the SIMT kernel's
// epilogue on its share. Split-K writes raw f32 partials instead, and
// conv2d.wgsl's fix-up passes finish them.
//
// Chosen only when the adapter reports a 16x16x16 f16 x f16 -> f32
// configuration, subgroups of exactly 32 and the workgroup memory below
// (21.25 KiB); the SIMT kernel's ROUND_F16 instance emulates these numerics
// (operands rounded to f16, f32 sums) on every adapter.
//
// Variants: `tensor_cores` (coop_common.wgsl) is the kernel; `emulated`
// (coop_common_emulated.wgsl) turns the fragment types and operations into
// plain loops over the same workgroup arrays, so that this file's indexing
// runs and is tested on adapters without cooperative matrices.

alias T = f32;

//!include conv_common

const WG: u32 = 128u;
const SUBGROUP: u32 = 32u;
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
const LDA: u32 = 24u;   // halves per staged W row (16 + 8 padding)
const LDB: u32 = 72u;   // halves per staged gather row (64 + 8 padding)
const LDC: u32 = 64u;   // floats per output row
const LOADS: u32 = 8u;  // TM * TK / WG = TK * TN / WG

var<workgroup> a_sh: array<f16, 1536>;  // [TM][LDA]
var<workgroup> b_sh: array<f16, 1152>;  // [TK][LDB]
var<workgroup> c_sh: array<f32, 4096>;  // [TM][LDC]

// Each subgroup's 2 x 2 accumulator fragments are four local variables,
// loaded, multiplied and stored inline in each entry point (no structs or
// function parameters of cooperative-matrix type, which not every driver
// accepts).

// The quadrant of subgroup `sg` (< 4), from the subgroup's own id: (row, column).
fn quadrant(sg: vec2<u32>) -> vec2<u32> {
    let s = min(sg.x, WG / SUBGROUP - 1u);
    return vec2(s / 2u, s % 2u);
}

// The output of tile element (r, col) of a workgroup: NaN unless the
// workgroup ran as the WG / SUBGROUP subgroups the quadrants assume (the
// host checks the subgroup size; this keeps a mismatch from passing as a
// plausible result).
fn tile_out(sg: vec2<u32>, r: u32, col: u32) -> f32 {
    if (sg.y != WG / SUBGROUP) {
        return bitcast<f32>(0x7fc00000u | sg.y);
    }
    return c_sh[r * LDC + col];
}

// W staging: row tid / 2, 8 consecutive k from (tid % 2) * 8.
fn a_row(tid: u32) -> u32 {
    return tid / 2u;
}

fn a_k(tid: u32) -> u32 {
    return (tid % 2u) * 8u;
}

// Gather staging: pixel column tid % 64, k rows tid / 64 + 2 j.
fn b_row(tid: u32, j: u32) -> u32 {
    return tid / TN + 2u * j;
}

@compute @workgroup_size(128)
fn conv2d_coop(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    ids: SubgroupIds,
) {
    let sg = subgroup_of(ids, tid);
    let quad = quadrant(sg);
    let kdim = p.cin * p.ks * p.ks;
    let m0 = wid.y * TM;
    let p0 = wid.x * TN;
    let k_begin = wid.z * p.k_split;
    let k_end = min(kdim, k_begin + p.k_split);

    let col = x_column(p0 + tid % TN);
    let step = x_gather_step(TK);
    var g: array<Gather, LOADS>;
    for (var j = 0u; j < LOADS; j++) {
        g[j] = x_gather_at(k_begin + b_row(tid, j));
    }

    var c00 = FragC();
    var c01 = FragC();
    var c10 = FragC();
    var c11 = FragC();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var e = 0u; e < 8u; e++) {
            let m = m0 + a_row(tid);
            let k = k0 + a_k(tid) + e;
            var v = 0.0;
            if (m < p.cout && k < k_end) {
                v = f32(wt[p.w_off + m * kdim + k]);
            }
            a_sh[a_row(tid) * LDA + a_k(tid) + e] = f16(v);
        }
        for (var j = 0u; j < LOADS; j++) {
            b_sh[b_row(tid, j) * LDB + tid % TN] = f16(x_tap(col, g[j], k_end));
            g[j] = gather_advance(g[j], step);
        }
        workgroupBarrier();
        {
            let a0 = coopLoadT<FragA>(&a_sh[(quad.x * 32u) * LDA], LDA);
            let a1 = coopLoadT<FragA>(&a_sh[(quad.x * 32u + 16u) * LDA], LDA);
            let b0 = coopLoadT<FragB>(&b_sh[quad.y * 32u], LDB);
            let b1 = coopLoadT<FragB>(&b_sh[quad.y * 32u + 16u], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    {
        let base = quad.x * 32u * LDC + quad.y * 32u;
        coopStoreT(c00, &c_sh[base], LDC);
        coopStoreT(c01, &c_sh[base + 16u], LDC);
        coopStoreT(c10, &c_sh[base + 16u * LDC], LDC);
        coopStoreT(c11, &c_sh[base + 16u * LDC + 16u], LDC);
    }
    workgroupBarrier();

    // Epilogue: invocation tid writes columns tid % 64 of rows tid / 64 + 2 r.
    let pix = p0 + tid % TN;
    if (pix >= p.n * p.ho * p.wo) {
        return;
    }
    for (var r = tid / TN; r < TM && m0 + r < p.cout; r += 2u) {
        conv_store(wid.z, m0 + r, pix, tile_out(sg, r, tid % TN));
    }
}

// ---------------------------------------------------------------------------
// Backward w.r.t. the input: dX[Cin, Q] = W^T[Cin, K'] dY_col[K', Q] with
// K' = (co, ky, kx), as conv2d_bwd_data in conv2d.wgsl.

@compute @workgroup_size(128)
fn conv2d_coop_bwd_data(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    ids: SubgroupIds,
) {
    let sg = subgroup_of(ids, tid);
    let quad = quadrant(sg);
    let kk = pb.ks * pb.ks;
    let kdim = pb.cout * kk;
    let m0 = wid.y * TM;
    let q0 = wid.x * TN;
    let k_begin = wid.z * pb.k_split;
    let k_end = min(kdim, k_begin + pb.k_split);

    let col = dy_column(q0 + tid % TN);
    let step = dy_gather_step(TK);
    var g: array<Gather, LOADS>;
    for (var j = 0u; j < LOADS; j++) {
        g[j] = dy_gather_at(col, k_begin + b_row(tid, j));
    }

    var c00 = FragC();
    var c01 = FragC();
    var c10 = FragC();
    var c11 = FragC();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        // W^T staging: input channel row a_row, 8 consecutive k' from a_k;
        // (co, kr) of the first k', stepped without division.
        let ka = k0 + a_k(tid);
        var co = ka / kk;
        var kr = ka - co * kk;
        for (var e = 0u; e < 8u; e++) {
            let ci = m0 + a_row(tid);
            var v = 0.0;
            if (ci < pb.cin && ka + e < k_end) {
                v = f32(wtb[pb.w_off + (co * pb.cin + ci) * kk + kr]);
            }
            a_sh[a_row(tid) * LDA + a_k(tid) + e] = f16(v);
            kr += 1u;
            if (kr == kk) {
                kr = 0u;
                co += 1u;
            }
        }
        for (var j = 0u; j < LOADS; j++) {
            b_sh[b_row(tid, j) * LDB + tid % TN] = f16(dy_tap(col, g[j], k_end));
            g[j] = gather_advance(g[j], step);
        }
        workgroupBarrier();
        {
            let a0 = coopLoadT<FragA>(&a_sh[(quad.x * 32u) * LDA], LDA);
            let a1 = coopLoadT<FragA>(&a_sh[(quad.x * 32u + 16u) * LDA], LDA);
            let b0 = coopLoadT<FragB>(&b_sh[quad.y * 32u], LDB);
            let b1 = coopLoadT<FragB>(&b_sh[quad.y * 32u + 16u], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    {
        let base = quad.x * 32u * LDC + quad.y * 32u;
        coopStoreT(c00, &c_sh[base], LDC);
        coopStoreT(c01, &c_sh[base + 16u], LDC);
        coopStoreT(c10, &c_sh[base + 16u * LDC], LDC);
        coopStoreT(c11, &c_sh[base + 16u * LDC + 16u], LDC);
    }
    workgroupBarrier();

    let q = q0 + tid % TN;
    if (q >= pb.n * pb.h * pb.w) {
        return;
    }
    for (var r = tid / TN; r < TM && m0 + r < pb.cin; r += 2u) {
        dx_store(wid.z, m0 + r, q, tile_out(sg, r, tid % TN));
    }
}
