enable f16;
enable wgpu_cooperative_matrix;

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
// SIMT kernel does. After the K loop the fragments go to workgroup memory
// (f32) and every invocation runs the SIMT kernel's epilogue on its share.
// Split-K writes raw f32 partials instead, and conv2d.wgsl's fix-up passes
// finish them.
//
// Chosen only when the adapter reports a 16x16x16 f16 x f16 -> f32
// configuration, subgroups of exactly 32 and the workgroup memory below
// (21.25 KiB); the SIMT kernel's ROUND_F16 instance emulates these numerics
// (operands rounded to f16, f32 sums) on every adapter.

alias T = f32;

// Mirrors conv2d.wgsl's Params and BwdDataParams.
struct Params {
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
    b_off: u32,
    res_mode: u32,
    res_off: u32,
    res_stride: u32,
    out_scale: f32,
    k_split: u32,
    splits: u32,
    _pad0: u32,
}

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
    accumulate: u32,
    scale: f32,
    k_split: u32,
    splits: u32,
    stride_shift: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 128u;
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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

@compute @workgroup_size(128)
fn conv2d_coop(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let kk = p.ks * p.ks;
    let kdim = p.cin * kk;
    let hw = p.h * p.w;
    let hwo = p.ho * p.wo;
    let pdim = p.n * hwo;
    let m0 = wid.y * TM;
    let p0 = wid.x * TN;
    let k_begin = wid.z * p.k_split;
    let k_end = min(kdim, k_begin + p.k_split);
    let sg = tid / 32u;
    let qm = sg / 2u;
    let qn = sg % 2u;

    // W staging: row tid / 2, 8 consecutive k from (tid % 2) * 8.
    let a_row = tid / 2u;
    let a_k = (tid % 2u) * 8u;
    // Gather staging: pixel column tid % 64, k rows tid / 64 + 2 j.
    let b_col = tid % TN;
    let pix = p0 + b_col;
    let pix_ok = pix < pdim;
    let pb_ = pix / hwo;
    let pr = pix - pb_ * hwo;
    let oy = pr / p.wo;
    let ox = pr - oy * p.wo;
    let iy0 = i32(oy * p.stride) - i32(p.pad_top);
    let ix0 = i32(ox * p.stride) - i32(p.pad_left);
    let x_org = i32(pb_ * p.cin * hw) + iy0 * i32(p.w) + ix0;
    let ks = i32(p.ks);
    let w_i = i32(p.w);
    let dky = (TK % kk) / p.ks;
    let dkx = TK % p.ks;
    let d_off = i32((TK / kk) * hw) + i32(dky) * w_i + i32(dkx);
    var gk: array<u32, LOADS>;
    var gky: array<i32, LOADS>;
    var gkx: array<i32, LOADS>;
    var goff: array<i32, LOADS>;
    for (var j = 0u; j < LOADS; j++) {
        let k = k_begin + tid / TN + 2u * j;
        let ci = k / kk;
        let kr = k - ci * kk;
        let ky = kr / p.ks;
        let kx = kr - ky * p.ks;
        gk[j] = k;
        gky[j] = i32(ky);
        gkx[j] = i32(kx);
        goff[j] = i32(ci * hw) + i32(ky) * w_i + i32(kx);
    }

    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var e = 0u; e < 8u; e++) {
            let m = m0 + a_row;
            let k = k0 + a_k + e;
            var v = 0.0;
            if (m < p.cout && k < k_end) {
                v = f32(wt[p.w_off + m * kdim + k]);
            }
            a_sh[a_row * LDA + a_k + e] = f16(v);
        }
        for (var j = 0u; j < LOADS; j++) {
            var v = 0.0;
            let iy = iy0 + gky[j];
            let ix = ix0 + gkx[j];
            if (pix_ok && gk[j] < k_end && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < w_i) {
                v = f32(x[u32(x_org + goff[j])]);
            }
            b_sh[(tid / TN + 2u * j) * LDB + b_col] = f16(v);
            // Advance this row by TK.
            gk[j] += TK;
            gkx[j] += i32(dkx);
            gky[j] += i32(dky);
            goff[j] += d_off;
            if (gkx[j] >= ks) {
                gkx[j] -= ks;
                gky[j] += 1;
                goff[j] += w_i - ks;
            }
            if (gky[j] >= ks) {
                gky[j] -= ks;
                goff[j] += i32(hw) - ks * w_i;
            }
        }
        workgroupBarrier();
        {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[(qm * 32u) * LDA], LDA);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[(qm * 32u + 16u) * LDA], LDA);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[qn * 32u], LDB);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[qn * 32u + 16u], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    {
        let base = qm * 32u * LDC + qn * 32u;
        coopStoreT(c00, &c_sh[base], LDC);
        coopStoreT(c01, &c_sh[base + 16u], LDC);
        coopStoreT(c10, &c_sh[base + 16u * LDC], LDC);
        coopStoreT(c11, &c_sh[base + 16u * LDC + 16u], LDC);
    }
    workgroupBarrier();

    // Epilogue: invocation tid writes columns tid % 64 of rows tid / 64 + 2 r.
    let col = tid % TN;
    let pixo = p0 + col;
    if (pixo >= pdim) {
        return;
    }
    let b = pixo / hwo;
    let rr = pixo - b * hwo;
    for (var r = tid / TN; r < TM; r += 2u) {
        let m = m0 + r;
        if (m >= p.cout) {
            break;
        }
        let a = c_sh[r * LDC + col];
        if (p.splits > 1u) {
            part[(wid.z * p.cout + m) * pdim + pixo] = a;
            continue;
        }
        let o = (b * p.cout + m) * hwo + rr;
        var v = a + f32(bias[p.b_off + m]);
        if (p.res_mode == 1u) {
            v += f32(res[p.res_off + o]);
        } else if (p.res_mode == 2u) {
            v += f32(res[p.res_off + b * p.res_stride + m]);
        }
        y[o] = T(v * p.out_scale);
    }
}

// ---------------------------------------------------------------------------
// Backward w.r.t. the input: dX[Cin, Q] = W^T[Cin, K'] dY_col[K', Q] with
// K' = (co, ky, kx), as conv2d_bwd_data in conv2d.wgsl.

@group(0) @binding(0) var<uniform> pb: BwdDataParams;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> wtb: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;
@group(0) @binding(4) var<storage, read_write> bpart: array<f32>;

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

@compute @workgroup_size(128)
fn conv2d_coop_bwd_data(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let kk = pb.ks * pb.ks;
    let kdim = pb.cout * kk;
    let hw = pb.h * pb.w;
    let hwo = pb.ho * pb.wo;
    let qdim = pb.n * hw;
    let m0 = wid.y * TM;
    let q0 = wid.x * TN;
    let k_begin = wid.z * pb.k_split;
    let k_end = min(kdim, k_begin + pb.k_split);
    let sg = tid / 32u;
    let qm = sg / 2u;
    let qn = sg % 2u;

    // W^T staging: input channel row tid / 2, 8 consecutive k' from (tid % 2) * 8.
    let a_row = tid / 2u;
    let a_k = (tid % 2u) * 8u;
    let b_col = tid % TN;
    let qq = q0 + b_col;
    let q_ok = qq < qdim;
    let qb = qq / hw;
    let qr = qq - qb * hw;
    let iy = qr / pb.w;
    let ix = qr - iy * pb.w;
    let dy_base = qb * pb.cout * hwo;
    let ks = i32(pb.ks);
    let dco = TK / kk;
    let dkr = TK % kk;
    let dky = dkr / pb.ks;
    let dkx = dkr % pb.ks;
    var gk: array<u32, LOADS>;
    var gky: array<i32, LOADS>;
    var gkx: array<i32, LOADS>;
    var goff: array<u32, LOADS>;
    for (var j = 0u; j < LOADS; j++) {
        let k = k_begin + tid / TN + 2u * j;
        let co = k / kk;
        let kr = k - co * kk;
        let ky = kr / pb.ks;
        gk[j] = k;
        gky[j] = i32(ky);
        gkx[j] = i32(kr - ky * pb.ks);
        goff[j] = dy_base + co * hwo;
    }

    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        // (co, kr) of this invocation's first k', stepped without division.
        let ka = k0 + a_k;
        var co = ka / kk;
        var kr = ka - co * kk;
        for (var e = 0u; e < 8u; e++) {
            let ci = m0 + a_row;
            var v = 0.0;
            if (ci < pb.cin && ka + e < k_end) {
                v = f32(wtb[pb.w_off + (co * pb.cin + ci) * kk + kr]);
            }
            a_sh[a_row * LDA + a_k + e] = f16(v);
            kr += 1u;
            if (kr == kk) {
                kr = 0u;
                co += 1u;
            }
        }
        for (var j = 0u; j < LOADS; j++) {
            var v = 0.0;
            if (q_ok && gk[j] < k_end) {
                v = dy_tap(goff[j], iy, ix, gky[j], gkx[j]);
            }
            b_sh[(tid / TN + 2u * j) * LDB + b_col] = f16(v);
            gk[j] += TK;
            gkx[j] += i32(dkx);
            gky[j] += i32(dky);
            goff[j] += dco * hwo;
            if (gkx[j] >= ks) {
                gkx[j] -= ks;
                gky[j] += 1;
            }
            if (gky[j] >= ks) {
                gky[j] -= ks;
                goff[j] += hwo;
            }
        }
        workgroupBarrier();
        {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[(qm * 32u) * LDA], LDA);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[(qm * 32u + 16u) * LDA], LDA);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[qn * 32u], LDB);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[qn * 32u + 16u], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    {
        let base = qm * 32u * LDC + qn * 32u;
        coopStoreT(c00, &c_sh[base], LDC);
        coopStoreT(c01, &c_sh[base + 16u], LDC);
        coopStoreT(c10, &c_sh[base + 16u * LDC], LDC);
        coopStoreT(c11, &c_sh[base + 16u * LDC + 16u], LDC);
    }
    workgroupBarrier();

    let col = tid % TN;
    let qo = q0 + col;
    if (qo >= qdim) {
        return;
    }
    let b = qo / hw;
    let rr = qo - b * hw;
    for (var r = tid / TN; r < TM; r += 2u) {
        let ci = m0 + r;
        if (ci >= pb.cin) {
            break;
        }
        let a = c_sh[r * LDC + col];
        if (pb.splits > 1u) {
            bpart[(wid.z * pb.cin + ci) * qdim + qo] = a;
            continue;
        }
        let o = (b * pb.cin + ci) * hw + rr;
        var v = a * pb.scale;
        if (pb.accumulate == 1u) {
            v += f32(dx[o]);
        }
        dx[o] = T(v);
    }
}
