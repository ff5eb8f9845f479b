// Resampling and channel plumbing over [N, C, H, W], one thread per output element:
//   upsample_nearest2x : y[n, c, oy, ox] = x[n, c, oy / 2, ox / 2]          (H, W -> 2H, 2W)
//   avg_pool2x2        : y = mean of the 2x2 block at (2 oy, 2 ox), stride 2 (floor sizes)
//   copy_channels      : y[n, c_off + c, :] = x[n, c, :], y having c_total channels
//                        (two of these make a channel concat of the skip connections)
//   concat_channels    : y = cat([a, b], channels) in one dispatch, a having c_off channels

// Tensor storage type: f32 as written; `Shader::typed` makes the f16 instance
// (sums run in f32).
alias T = f32;

struct Params {
    n: u32,
    c: u32,
    h: u32,        // input height
    w: u32,        // input width
    ho: u32,
    wo: u32,
    c_total: u32,  // copy_channels: channels of y
    c_off: u32,    // copy_channels: first channel written in y
    accumulate: u32, // backward: 1 adds into dx, 0 overwrites
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The element of an [N, channels, h, w] tensor a thread owns: its flat index
// i, plane n channels + c, sample n, channel c, offset r in the plane, and
// that offset's row y and column x.
struct At {
    i: u32,
    plane: u32,
    n: u32,
    c: u32,
    r: u32,
    y: u32,
    x: u32,
}

// A thread's element i of the concatenation: whether it exists, whether it
// is in the first part, and its element j in that part.
struct Part {
    ok: bool,
    first: bool,
    i: u32,
    j: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

//!include grid

fn at(gid: vec3<u32>, nwg: vec3<u32>, channels: u32, h: u32, w: u32) -> At {
    let i = index(gid, nwg);
    let nc = i / (h * w);
    let r = i % (h * w);
    return At(i, nc, nc / channels, nc % channels, r, r / w, r % w);
}

// The element of an [h, w] plane that element o of the plane twice its size
// copies (upsampling; o / 2 in both directions).
fn coarse(o: At, h: u32, w: u32) -> u32 {
    return (o.plane * h + o.y / 2u) * w + o.x / 2u;
}

// The sum of the 2x2 block of an [h, w] plane at (2 o.y, 2 o.x) (pooling).
fn quad_sum(o: At, h: u32, w: u32) -> f32 {
    let b = (o.plane * h + 2u * o.y) * w + 2u * o.x;
    return (f32(x[b]) + f32(x[b + 1u])) + (f32(x[b + w]) + f32(x[b + w + 1u]));
}

// y[i] = v, or y[i] += v where `add`.
fn store_y(i: u32, v: f32, add: bool) {
    var s = v;
    if (add) {
        s += f32(y[i]);
    }
    y[i] = T(s);
}

@compute @workgroup_size(WG)
fn upsample_nearest2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = at(gid, nwg, p.c, p.ho, p.wo);
    if (o.n >= p.n) {
        return;
    }
    y[o.i] = x[coarse(o, p.h, p.w)];
}

@compute @workgroup_size(WG)
fn avg_pool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = at(gid, nwg, p.c, p.ho, p.wo);
    if (o.n >= p.n) {
        return;
    }
    y[o.i] = T(0.25 * quad_sum(o, p.h, p.w));
}

@compute @workgroup_size(WG)
fn copy_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = at(gid, nwg, p.c, p.h, p.w);
    if (e.n >= p.n) {
        return;
    }
    y[(e.n * p.c_total + p.c_off + e.c) * p.h * p.w + e.r] = x[e.i];
}

// ---------------------------------------------------------------------------
// Backward (adjoints) of the above; `accumulate` 1: dx += ..., 0: dx = ...:
//   upsample_nearest2x_bwd : dx[n, c, y, x] = sum of the 2x2 dy block it was copied to
//   avg_pool2x2_bwd        : dx = dy / 4 of the block it falls in (0 in a cut-off odd row/column)
//   slice_channels         : dx[n, c, :] (+)= dy[n, c_off + c, :]  (concat adjoint)

@compute @workgroup_size(WG)
fn upsample_nearest2x_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = at(gid, nwg, p.c, p.h, p.w);
    if (o.n >= p.n) {
        return;
    }
    store_y(o.i, quad_sum(o, p.ho, p.wo), p.accumulate == 1u);
}

@compute @workgroup_size(WG)
fn avg_pool2x2_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = at(gid, nwg, p.c, p.h, p.w);
    if (o.n >= p.n) {
        return;
    }
    var v = 0.0;
    if (o.y / 2u < p.ho && o.x / 2u < p.wo) {
        v = 0.25 * f32(x[coarse(o, p.ho, p.wo)]);
    }
    store_y(o.i, v, p.accumulate == 1u);
}

@compute @workgroup_size(WG)
fn slice_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = at(gid, nwg, p.c, p.h, p.w);
    if (e.n >= p.n) {
        return;
    }
    store_y(e.i, f32(x[(e.n * p.c_total + p.c_off + e.c) * p.h * p.w + e.r]), p.accumulate == 1u);
}

// ---------------------------------------------------------------------------
// The skip-connection concat in one dispatch, and its adjoint in one:
//   concat_channels : y [n, c_total, hw] = [x [n, c_off, hw]; x2 [n, c_total - c_off, hw]]
//   split_channels  : y (+)= dy[:, :c_off], y3 (+)= dy[:, c_off:] (dy in x); accumulate bit 0
//                     for the first part, bit 1 for the second
// p.h holds hw (p.w = 1); one thread per element of the concatenated tensor.

@group(0) @binding(2) var<storage, read> x2: array<T>;
@group(0) @binding(3) var<storage, read_write> y3: array<T>;

fn part_at(gid: vec3<u32>, nwg: vec3<u32>) -> Part {
    let e = at(gid, nwg, p.c_total, p.h, 1u);
    let first = e.c < p.c_off;
    var j = (e.n * (p.c_total - p.c_off) + e.c - p.c_off) * p.h + e.r;
    if (first) {
        j = (e.n * p.c_off + e.c) * p.h + e.r;
    }
    return Part(e.n < p.n, first, e.i, j);
}

@compute @workgroup_size(WG)
fn concat_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = part_at(gid, nwg);
    if (!s.ok) {
        return;
    }
    if (s.first) {
        y3[s.i] = x[s.j];
    } else {
        y3[s.i] = x2[s.j];
    }
}

@compute @workgroup_size(WG)
fn split_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = part_at(gid, nwg);
    if (!d.ok) {
        return;
    }
    var v = f32(x[d.i]);
    if (d.first) {
        store_y(d.j, v, (p.accumulate & 1u) != 0u);
    } else {
        if ((p.accumulate & 2u) != 0u) {
            v += f32(y3[d.j]);
        }
        y3[d.j] = T(v);
    }
}
