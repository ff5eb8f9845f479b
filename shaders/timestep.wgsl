// Sinusoidal timestep embedding, y[n, :] = [cos(t f), sin(t f)] (or sin first),
// f = freqs[0..half) computed on the host in f32 exactly as upstream does; an
// odd dim leaves the last column zero. The arguments t f reach ~1000 rad, where
// a GPU's native sin/cos are allowed errors near 1e-3; so the range reduction is
// done here (Cody-Waite, pi/2 split in three, exact products for |k| < 2^13)
// followed by minimax polynomials on [-pi/4, pi/4]: about 1 ulp, like torch's f32.

// Output storage type: f32 as written; `Shader::typed` makes the f16 instance
// (t and the frequencies stay f32).
alias T = f32;

struct Params {
    n: u32,
    dim: u32,
    half: u32,
    cos_first: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

// (sin a, cos a) for |a| up to ~1e4.
fn sincos(a: f32) -> vec2<f32> {
    let k = round(a * 0.636619772367581343);
    var r = fma(-k, 1.5703125, a);
    r = fma(-k, 4.837512969970703125e-4, r);
    r = fma(-k, 7.54978995489188216e-8, r);
    let z = r * r;
    let s = fma(r * z, fma(z, fma(z, -1.9515295891e-4, 8.3321608736e-3), -1.6666654611e-1), r);
    let c = fma(z * z, fma(z, fma(z, 2.443315711809948e-5, -1.388731625493765e-3), 4.166664568298827e-2), fma(-0.5, z, 1.0));
    let q = i32(k) & 3;
    if (q == 0) {
        return vec2<f32>(s, c);
    } else if (q == 1) {
        return vec2<f32>(c, -s);
    } else if (q == 2) {
        return vec2<f32>(-s, -c);
    }
    return vec2<f32>(-c, s);
}

@compute @workgroup_size(WG)
fn timestep_embedding(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n * p.dim) {
        return;
    }
    let n = i / p.dim;
    let j = i - n * p.dim;
    var v = 0.0;
    if (j < 2u * p.half) {
        let f = j % p.half;
        let arg = t[n] * freqs[f];
        let sc = sincos(arg);
        let first = j < p.half;
        // first half: cos when cos_first, else sin; second half the other one.
        if (first == (p.cos_first == 1u)) {
            v = sc.y;
        } else {
            v = sc.x;
        }
    }
    y[i] = T(v);
}
