// Elementwise updates over flat buffers of the element type T (f32 as written;
// `Shader::typed` instantiates it for f16). One thread per element; the grid
// may spill into y (65,535-group limit): i = gid.x + gid.y * nwg.x * WG.

alias T = f32;

struct Params {
    n: u32,
    per: u32,   // elements per sample, for kernels that read a per-sample coefficient
    a: f32,
    b: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

//!include grid

// y = a x + b y
@compute @workgroup_size(WG)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = T(p.a) * x[i] + T(p.b) * y[i];
}

// y = a x + b (x and y may not alias; copy-and-affine)
@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = T(p.a) * x[i] + T(p.b);
}

// y = clamp(x, a, b)
@compute @workgroup_size(WG)
fn clamp_range(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = clamp(x[i], T(p.a), T(p.b));
}

// y = x * y (elementwise product, e.g. a mask)
@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = x[i] * y[i];
}

// y = |x|
@compute @workgroup_size(WG)
fn abs_value(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = abs(x[i]);
}

// y = sign(x) * y (0 where x = 0): a cotangent pulled back through |x|
@compute @workgroup_size(WG)
fn sign_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = sign(x[i]) * y[i];
}

// ---------------------------------------------------------------------------
// Casts between f32 and T at a half-precision plan's edges (identity copies in
// the f32 instance): from_f32 y[i] = T(xf[i]); to_f32 yf[i] = f32(x[i]).
@group(0) @binding(1) var<storage, read> xf: array<f32>;
@group(0) @binding(2) var<storage, read_write> yf: array<f32>;

@compute @workgroup_size(WG)
fn from_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = T(xf[i]);
}

@compute @workgroup_size(WG)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    yf[i] = f32(x[i]);
}
