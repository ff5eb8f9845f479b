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

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn upsample_nearest2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.ho * p.wo) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let nc = i / (p.wo * p.ho);
    y[i] = x[(nc * p.h + oy / 2u) * p.w + ox / 2u];
}

@compute @workgroup_size(WG)
fn avg_pool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.ho * p.wo) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let nc = i / (p.wo * p.ho);
    let b = (nc * p.h + 2u * oy) * p.w + 2u * ox;
    y[i] = T(0.25 * ((f32(x[b]) + f32(x[b + 1u])) + (f32(x[b + p.w]) + f32(x[b + p.w + 1u]))));
}

@compute @workgroup_size(WG)
fn copy_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * p.c * hw) {
        return;
    }
    let r = i % hw;
    let nc = i / hw;
    let c = nc % p.c;
    let n = nc / p.c;
    y[(n * p.c_total + p.c_off + c) * hw + r] = x[i];
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
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let nc = i / (p.w * p.h);
    let b = (nc * p.ho + 2u * iy) * p.wo + 2u * ix;
    var v = (f32(x[b]) + f32(x[b + 1u])) + (f32(x[b + p.wo]) + f32(x[b + p.wo + 1u]));
    if (p.accumulate == 1u) {
        v += f32(y[i]);
    }
    y[i] = T(v);
}

@compute @workgroup_size(WG)
fn avg_pool2x2_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let nc = i / (p.w * p.h);
    var v = 0.0;
    if (iy / 2u < p.ho && ix / 2u < p.wo) {
        v = 0.25 * f32(x[(nc * p.ho + iy / 2u) * p.wo + ix / 2u]);
    }
    if (p.accumulate == 1u) {
        v += f32(y[i]);
    }
    y[i] = T(v);
}

@compute @workgroup_size(WG)
fn slice_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * p.c * hw) {
        return;
    }
    let r = i % hw;
    let nc = i / hw;
    let c = nc % p.c;
    let n = nc / p.c;
    var v = f32(x[(n * p.c_total + p.c_off + c) * hw + r]);
    if (p.accumulate == 1u) {
        v += f32(y[i]);
    }
    y[i] = T(v);
}

// ---------------------------------------------------------------------------
// The skip-connection concat in one dispatch, and its adjoint in one:
//   concat_channels : y [n, c_total, hw] = [x [n, c_off, hw]; x2 [n, c_total - c_off, hw]]
//   split_channels  : y (+)= dy[:, :c_off], y3 (+)= dy[:, c_off:] (dy in x); accumulate bit 0
//                     for the first part, bit 1 for the second
// p.h holds hw (p.w = 1); one thread per element of the concatenated tensor.

@group(0) @binding(2) var<storage, read> x2: array<T>;
@group(0) @binding(3) var<storage, read_write> y3: array<T>;

@compute @workgroup_size(WG)
fn concat_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h;
    if (i >= p.n * p.c_total * hw) {
        return;
    }
    let r = i % hw;
    let nc = i / hw;
    let c = nc % p.c_total;
    let n = nc / p.c_total;
    let cb = p.c_total - p.c_off;
    if (c < p.c_off) {
        y3[i] = x[(n * p.c_off + c) * hw + r];
    } else {
        y3[i] = x2[(n * cb + c - p.c_off) * hw + r];
    }
}

@compute @workgroup_size(WG)
fn split_channels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h;
    if (i >= p.n * p.c_total * hw) {
        return;
    }
    let r = i % hw;
    let nc = i / hw;
    let c = nc % p.c_total;
    let n = nc / p.c_total;
    let cb = p.c_total - p.c_off;
    var v = f32(x[i]);
    if (c < p.c_off) {
        let j = (n * p.c_off + c) * hw + r;
        if ((p.accumulate & 1u) != 0u) {
            v += f32(y[j]);
        }
        y[j] = T(v);
    } else {
        let j = (n * cb + c - p.c_off) * hw + r;
        if ((p.accumulate & 2u) != 0u) {
            v += f32(y3[j]);
        }
        y3[j] = T(v);
    }
}
