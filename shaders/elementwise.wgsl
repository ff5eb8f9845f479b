// Elementwise updates over flat f32 buffers. One thread per element; the grid
// may spill into y (65,535-group limit): i = gid.x + gid.y * nwg.x * WG.

struct Params {
    n: u32,
    per: u32,   // elements per sample, for kernels that read a per-sample coefficient
    a: f32,
    b: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// y = a x + b y
@compute @workgroup_size(WG)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = p.a * x[i] + p.b * y[i];
}

// y = a x + b (x and y may not alias; copy-and-affine)
@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = p.a * x[i] + p.b;
}

// y = clamp(x, a, b)
@compute @workgroup_size(WG)
fn clamp_range(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = clamp(x[i], p.a, p.b);
}

// y = x * y (elementwise product, e.g. a mask)
@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = x[i] * y[i];
}
