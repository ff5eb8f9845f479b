// y = mask (.) x with one [H, W] mask shared by every sample and channel
// (inpainting). Diagonal, so it is its own adjoint.

struct Params {
    n: u32,     // elements of x
    per: u32,   // mask elements (H * W)
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn mask_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    y[i] = mask[i % p.per] * x[i];
}
