// A small dense matrix applied along one axis of a tensor viewed as
// [outer, K, inner] (the H axis of [N*C, H, W]: outer = N*C, inner = W; the W
// axis: outer = N*C*H, inner = 1):
//
//   dst[o, q, i] = sum_k M(q, k) src[o, k, i]
//
// M(q, k) = m[q * K + k] (m stored [Q, K]), or with `transpose` set
// M(q, k) = m[k * Q + q] (m stored [K, Q], applied as its transpose). Used for
// SR's resampling matrices and every Kronecker SVD factor.

struct Params {
    outer: u32,
    k: u32,
    q: u32,
    inner: u32,
    transpose: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> m: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn axis_matmul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.outer * p.q * p.inner) { return; }
    let ii = idx % p.inner;
    let qq = (idx / p.inner) % p.q;
    let o = idx / (p.inner * p.q);
    let sbase = o * p.k * p.inner + ii;
    var acc = 0.0;
    if (p.transpose != 0u) {
        for (var kk = 0u; kk < p.k; kk++) {
            acc += m[kk * p.q + qq] * src[sbase + kk * p.inner];
        }
    } else {
        let mrow = qq * p.k;
        for (var kk = 0u; kk < p.k; kk++) {
            acc += m[mrow + kk] * src[sbase + kk * p.inner];
        }
    }
    dst[idx] = acc;
}
