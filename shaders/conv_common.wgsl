// ---- conv_common.wgsl: shared by conv2d.wgsl and conv2d_coop.wgsl (through
// `//!include conv_common`): the parameter blocks and bindings of both
// passes, the im2col gathers with their division-free stepping, and the
// epilogues. The including kernel declares `alias T` and its tiles.

// The forward pass's parameters (mirrored by `Conv2dParams`).
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

// The backward-data pass's parameters: the forward geometry, then its own
// epilogue (mirrored by `Conv2dBwdDataParams`).
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

// Forward bindings.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
// Split-K partial sums [splits, M, P] (f32 whatever T is). Unsplit passes
// bind the output here; it is not touched.
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

// Backward-data bindings.
@group(0) @binding(0) var<uniform> pb: BwdDataParams;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> wtb: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;
// Split-K partial sums [splits, Cin, Q]; unsplit passes bind dx here.
@group(0) @binding(4) var<storage, read_write> bpart: array<f32>;

// A gather row of the implicit GEMM's B operand: im2col row k = (channel,
// ky, kx) and `off`, the element offset of its tap relative to the column's
// origin. Advanced by a whole K slice at a time without division.
struct Gather {
    k: u32,
    ky: i32,
    kx: i32,
    off: i32,
}

// One K slice's advance of a gather row: the slice's decomposition into
// (channels, rows, columns) and the offset changes, plain and on each carry.
struct GatherStep {
    dk: u32,
    dky: i32,
    dkx: i32,
    ks: i32,
    d_off: i32,
    carry_x: i32,
    carry_y: i32,
}

fn gather_advance(g: Gather, s: GatherStep) -> Gather {
    var r = g;
    r.k += s.dk;
    r.kx += s.dkx;
    r.ky += s.dky;
    r.off += s.d_off;
    if (r.kx >= s.ks) {
        r.kx -= s.ks;
        r.ky += 1;
        r.off += s.carry_x;
    }
    if (r.ky >= s.ks) {
        r.ky -= s.ks;
        r.off += s.carry_y;
    }
    return r;
}

// A GEMM column's place in the operand it gathers from: whether the column
// exists, a position (y, x) and an element offset `base`. Forward: the
// top-left tap of the output pixel's window in x, and that tap's offset.
// Backward: the input pixel itself, and its sample's offset in dy.
struct Column {
    ok: bool,
    y: i32,
    x: i32,
    base: i32,
}

// im2col row k = (channel, ky, kx) of a kernel ks wide.
fn tap_of(k: u32, ks: u32) -> vec3<u32> {
    let kk = ks * ks;
    let c = k / kk;
    let kr = k - c * kk;
    let ky = kr / ks;
    return vec3(c, ky, kr - ky * ks);
}

// Column i of a GEMM over images `w` wide with `plane` pixels each:
// (image, row, column).
fn column_pos(i: u32, plane: u32, w: u32) -> vec3<u32> {
    let b = i / plane;
    let r = i - b * plane;
    let row = r / w;
    return vec3(b, row, r - row * w);
}

// The NCHW element of channel c at column i (image, pixel) of a tensor of
// `channels` channels with `plane` pixels each.
fn nchw_index(c: u32, channels: u32, i: u32, plane: u32) -> u32 {
    let b = i / plane;
    return (b * channels + c) * plane + (i - b * plane);
}

// ---- forward: the input's im2col, X_col[k, pix]

fn x_column(pix: u32) -> Column {
    let hwo = p.ho * p.wo;
    let o = column_pos(pix, hwo, p.wo);
    let iy0 = i32(o.y * p.stride) - i32(p.pad_top);
    let ix0 = i32(o.z * p.stride) - i32(p.pad_left);
    return Column(pix < p.n * hwo, iy0, ix0, i32(o.x * p.cin * p.h * p.w) + iy0 * i32(p.w) + ix0);
}

fn x_gather_at(k: u32) -> Gather {
    let t = tap_of(k, p.ks);
    return Gather(k, i32(t.y), i32(t.z), i32(t.x * p.h * p.w) + i32(t.y) * i32(p.w) + i32(t.z));
}

fn x_gather_step(tk: u32) -> GatherStep {
    let kk = p.ks * p.ks;
    let hw = i32(p.h * p.w);
    let ks = i32(p.ks);
    let w = i32(p.w);
    let dky = i32((tk % kk) / p.ks);
    let dkx = i32(tk % p.ks);
    return GatherStep(tk, dky, dkx, ks, i32(tk / kk) * hw + dky * w + dkx, w - ks, hw - ks * w);
}

// x at gather row g of column c, 0 in the padding and past K.
fn x_tap(c: Column, g: Gather, k_end: u32) -> f32 {
    let iy = c.y + g.ky;
    let ix = c.x + g.kx;
    if (c.ok && g.k < k_end && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
        return f32(x[u32(c.base + g.off)]);
    }
    return 0.0;
}

// Output element of GEMM row m (channel), column pix (n, oy, ox).
fn conv_out_index(m: u32, pix: u32) -> u32 {
    return nchw_index(m, p.cout, pix, p.ho * p.wo);
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

// The sum over split z's K range for output (m, pix): a partial sum, or the
// finished output when K is not split.
fn conv_store(z: u32, m: u32, pix: u32, acc: f32) {
    if (p.splits > 1u) {
        part[(z * p.cout + m) * (p.n * p.ho * p.wo) + pix] = acc;
    } else {
        y[conv_out_index(m, pix)] = T(conv_epilogue(m, pix, acc));
    }
}

// ---- backward w.r.t. the input: dy's transposed im2col, dY_col[k', q],
// k' = (co, ky, kx), q = (n, iy, ix)

fn dy_column(q: u32) -> Column {
    let hw = pb.h * pb.w;
    let i = column_pos(q, hw, pb.w);
    return Column(q < pb.n * hw, i32(i.y), i32(i.z), i32(i.x * pb.cout * pb.ho * pb.wo));
}

// The gather row k' of column c: `off` is its output channel's offset in dy.
fn dy_gather_at(c: Column, k: u32) -> Gather {
    let t = tap_of(k, pb.ks);
    return Gather(k, i32(t.y), i32(t.z), c.base + i32(t.x * pb.ho * pb.wo));
}

fn dy_gather_step(tk: u32) -> GatherStep {
    let kk = pb.ks * pb.ks;
    let hwo = i32(pb.ho * pb.wo);
    let dkr = tk % kk;
    return GatherStep(tk, i32(dkr / pb.ks), i32(dkr % pb.ks), i32(pb.ks), i32(tk / kk) * hwo, 0, hwo);
}

// dy's element for tap (ky, kx) of input position (iy, ix) relative to
// channel base `cbase`, or 0 when the tap is off the stride grid or outside.
fn dy_at(cbase: u32, iy: u32, ix: u32, ky: i32, kx: i32) -> f32 {
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

// dy at gather row g of column c, 0 past K.
fn dy_tap(c: Column, g: Gather, k_end: u32) -> f32 {
    if (c.ok && g.k < k_end) {
        return dy_at(u32(g.off), u32(c.y), u32(c.x), g.ky, g.kx);
    }
    return 0.0;
}

// dx's element for input channel ci, column q = (n, iy, ix).
fn dx_index(ci: u32, q: u32) -> u32 {
    return nchw_index(ci, pb.cin, q, pb.h * pb.w);
}

fn store_dx(ci: u32, q: u32, acc: f32) {
    let o = dx_index(ci, q);
    var v = acc * pb.scale;
    if (pb.accumulate == 1u) {
        v += f32(dx[o]);
    }
    dx[o] = T(v);
}

// The backward counterpart of `conv_store`.
fn dx_store(z: u32, ci: u32, q: u32, acc: f32) {
    if (pb.splits > 1u) {
        bpart[(z * pb.cin + ci) * (pb.n * pb.h * pb.w) + q] = acc;
    } else {
        store_dx(ci, q, acc);
    }
}
// ---- end of conv_common.wgsl
