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

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

//!include grid

// Element i of an [N, C, h, w] tensor: (plane n C + c, row, column).
fn pixel_of(i: u32, h: u32, w: u32) -> vec3<u32> {
    return vec3<u32>(i / (w * h), (i / w) % h, i % w);
}

// Element i of an [N, channels, hw] tensor: (sample, channel, offset in the plane).
fn channel_of(i: u32, channels: u32, hw: u32) -> vec3<u32> {
    let nc = i / hw;
    return vec3<u32>(nc / channels, nc % channels, i % hw);
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
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.ho * p.wo) {
        return;
    }
    let o = pixel_of(i, p.ho, p.wo);
    y[i] = x[(o.x * p.h + o.y / 2u) * p.w + o.z / 2u];
}

@compute @workgroup_size(WG)
fn avg_pool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.ho * p.wo) {
        return;
    }
    let o = pixel_of(i, p.ho, p.wo);
    let b = (o.x * p.h + 2u * o.y) * p.w + 2u * o.z;
    y[i] = T(0.25 * ((f32(x[b]) + f32(x[b + 1u])) + (f32(x[b + p.w]) + f32(x[b + p.w + 1u]))));
}

@compute @workgroup_size(WG)
fn copy_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * p.c * hw) {
        return;
    }
    let e = channel_of(i, p.c, hw);
    y[(e.x * p.c_total + p.c_off + e.y) * hw + e.z] = x[i];
}

// ---------------------------------------------------------------------------
// Backward (adjoints) of the above; `accumulate` 1: dx += ..., 0: dx = ...:
//   upsample_nearest2x_bwd : dx[n, c, y, x] = sum of the 2x2 dy block it was copied to
//   avg_pool2x2_bwd        : dx = dy / 4 of the block it falls in (0 in a cut-off odd row/column)
//   slice_channels         : dx[n, c, :] (+)= dy[n, c_off + c, :]  (concat adjoint)

@compute @workgroup_size(WG)
fn upsample_nearest2x_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let o = pixel_of(i, p.h, p.w);
    let b = (o.x * p.ho + 2u * o.y) * p.wo + 2u * o.z;
    store_y(i, (f32(x[b]) + f32(x[b + 1u])) + (f32(x[b + p.wo]) + f32(x[b + p.wo + 1u])), p.accumulate == 1u);
}

@compute @workgroup_size(WG)
fn avg_pool2x2_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let o = pixel_of(i, p.h, p.w);
    var v = 0.0;
    if (o.y / 2u < p.ho && o.z / 2u < p.wo) {
        v = 0.25 * f32(x[(o.x * p.ho + o.y / 2u) * p.wo + o.z / 2u]);
    }
    store_y(i, v, p.accumulate == 1u);
}

@compute @workgroup_size(WG)
fn slice_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * p.c * hw) {
        return;
    }
    let e = channel_of(i, p.c, hw);
    store_y(i, f32(x[(e.x * p.c_total + p.c_off + e.y) * hw + e.z]), p.accumulate == 1u);
}

// ---------------------------------------------------------------------------
// The skip-connection concat in one dispatch, and its adjoint in one:
//   concat_channels : y [n, c_total, hw] = [x [n, c_off, hw]; x2 [n, c_total - c_off, hw]]
//   split_channels  : y (+)= dy[:, :c_off], y3 (+)= dy[:, c_off:] (dy in x); accumulate bit 0
//                     for the first part, bit 1 for the second
// p.h holds hw (p.w = 1); one thread per element of the concatenated tensor.

@group(0) @binding(2) var<storage, read> x2: array<T>;
@group(0) @binding(3) var<storage, read_write> y3: array<T>;

// Element i of the concatenation: whether it is in the first part, and its
// element in that part.
fn concat_source(i: u32) -> vec2<u32> {
    let hw = p.h;
    let e = channel_of(i, p.c_total, hw);
    if (e.y < p.c_off) {
        return vec2<u32>(1u, (e.x * p.c_off + e.y) * hw + e.z);
    }
    return vec2<u32>(0u, (e.x * (p.c_total - p.c_off) + e.y - p.c_off) * hw + e.z);
}

@compute @workgroup_size(WG)
fn concat_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c_total * p.h) {
        return;
    }
    let src = concat_source(i);
    if (src.x == 1u) {
        y3[i] = x[src.y];
    } else {
        y3[i] = x2[src.y];
    }
}

@compute @workgroup_size(WG)
fn split_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c_total * p.h) {
        return;
    }
    let dst = concat_source(i);
    let j = dst.y;
    var v = f32(x[i]);
    if (dst.x == 1u) {
        store_y(j, v, (p.accumulate & 1u) != 0u);
    } else {
        if ((p.accumulate & 2u) != 0u) {
            v += f32(y3[j]);
        }
        y3[j] = T(v);
    }
}
