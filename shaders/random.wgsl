// Gaussian noise from a counter-based RNG (Philox4x32-10), so a run is
// reproducible for a given seed whatever the grid or the device:
// element 4k+j of stream s is normal j of philox(key = seed, ctr = (k, s, 0, 0)).
// Box-Muller turns each pair of uniforms into two normals.

struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,   // bumped per draw (e.g. per sampler step) for fresh noise
    mean: f32,
    sigma: f32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

// 32x32 -> 64-bit product as (hi, lo); WGSL has no mulhi.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    let lo = a * b;
    return vec2<u32>(hi, lo);
}

fn philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var ctr = ctr_in;
    var key = key_in;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mul_wide(0xD2511F53u, ctr.x);
        let p1 = mul_wide(0xCD9E8D57u, ctr.z);
        ctr = vec4<u32>(p1.x ^ ctr.y ^ key.x, p1.y, p0.x ^ ctr.w ^ key.y, p0.y);
        key = key + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return ctr;
}

// (0, 1]: never 0, so log() is finite.
fn to_unit(u: u32) -> f32 {
    return (f32(u >> 8u) + 1.0) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn normal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let base = k * 4u;
    if (base >= p.n) { return; }
    let r = philox(vec4<u32>(k, p.stream, 0u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    let tau = 6.283185307179586;
    let r1 = sqrt(-2.0 * log(to_unit(r.x)));
    let r2 = sqrt(-2.0 * log(to_unit(r.z)));
    let t1 = tau * to_unit(r.y);
    let t2 = tau * to_unit(r.w);
    let z = vec4<f32>(r1 * cos(t1), r1 * sin(t1), r2 * cos(t2), r2 * sin(t2));
    for (var j = 0u; j < 4u; j++) {
        if (base + j < p.n) {
            out[base + j] = p.mean + p.sigma * z[j];
        }
    }
}
