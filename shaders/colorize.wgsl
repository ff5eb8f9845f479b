// Colour -> gray over [N, C, H*W] <-> [N, 1, H*W], scaled:
//   gray_fwd:  y[n, p]    = scale * sum_c x[n, c, p]   (A: scale = 1/C, V^T: 1/sqrt(C))
//   gray_adj:  x[n, c, p] = scale * y[n, p]            (A^T: 1/C, V: 1/sqrt(C))

struct Params {
    batch: u32,
    hw: u32,
    channels: u32,
    scale: f32,
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn gray_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.batch * p.hw) { return; }
    let n = i / p.hw;
    let px = i % p.hw;
    var acc = 0.0;
    for (var c = 0u; c < p.channels; c++) {
        acc += src[(n * p.channels + c) * p.hw + px];
    }
    dst[i] = p.scale * acc;
}

@compute @workgroup_size(WG)
fn gray_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.batch * p.channels * p.hw) { return; }
    let n = i / (p.channels * p.hw);
    let px = i % p.hw;
    dst[i] = p.scale * src[n * p.hw + px];
}
