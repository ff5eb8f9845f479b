// The pieces of phase retrieval's measurement y = |fftshift(F pad(x))| around
// the FFT (src/kernels/fft.rs), per [H, W] plane of an [N, C, H, W] image:
// zero-padding into a complex [PH, PW] plane, the modulus, the phase-weighted
// cotangent v z / |z| of the VJP, and the real part of the crop (pad^T).
// Complex values are interleaved (re, im) f32.

struct Params {
    n: u32,     // threads: output elements of the entry point
    h: u32,     // image plane H
    w: u32,     // image plane W
    ph: u32,    // padded plane H + 2 pad_h
    pw: u32,    // padded plane W + 2 pad_w
    pad_h: u32,
    pad_w: u32,
    keep: f32,  // hio_update: g <- keep g - beta g' where g' breaks the constraints
    beta: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// dst [planes, PH, PW, 2] = pad(src [planes, H, W]) with zero imaginary parts.
@compute @workgroup_size(WG)
fn embed_pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let plane = i / (p.ph * p.pw);
    let r = (i / p.pw) % p.ph;
    let c = i % p.pw;
    var v = 0.0;
    if (r >= p.pad_h && r < p.pad_h + p.h && c >= p.pad_w && c < p.pad_w + p.w) {
        v = src[(plane * p.h + r - p.pad_h) * p.w + c - p.pad_w];
    }
    dst[2u * i] = v;
    dst[2u * i + 1u] = 0.0;
}

// dst [planes, PH, PW] = |src| for src complex.
@compute @workgroup_size(WG)
fn modulus(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] = length(vec2<f32>(src[2u * i], src[2u * i + 1u]));
}

// dst [planes, H, W] = Re(src) on the image's window of the padded plane (pad^T Re).
@compute @workgroup_size(WG)
fn crop_real(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let plane = i / (p.h * p.w);
    let r = (i / p.w) % p.h;
    let c = i % p.w;
    dst[i] = src[2u * ((plane * p.ph + r + p.pad_h) * p.pw + c + p.pad_w)];
}

// Fienup's hybrid input-output update on a real padded plane (the baseline's
// iteration): dst = g, src = g' = the plane after the measured magnitudes were
// imposed. Where g' meets the constraints (inside the image's window and in
// [-1, 1]) g <- g'; elsewhere HIO (keep 1) takes g <- g - beta g', and error
// reduction (keep 0) projects onto the constraints: g' clamped to [-1, 1]
// inside the window, 0 outside.
@compute @workgroup_size(WG)
fn hio_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let r = (i / p.pw) % p.ph;
    let c = i % p.pw;
    let inside = r >= p.pad_h && r < p.pad_h + p.h && c >= p.pad_w && c < p.pad_w + p.w;
    let gp = src[i];
    if (inside && abs(gp) <= 1.0) {
        dst[i] = gp;
    } else if (inside && p.keep == 0.0) {
        dst[i] = clamp(gp, -1.0, 1.0);
    } else {
        dst[i] = p.keep * dst[i] - p.beta * gp;
    }
}

@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> wout: array<f32>;

// wout = v z / |z| (complex, v real): the cotangent of |z| pulled back to z;
// 0 where z = 0 (the modulus' subgradient there), so the VJP stays finite.
@compute @workgroup_size(WG)
fn phase_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let zi = vec2<f32>(z[2u * i], z[2u * i + 1u]);
    let m = length(zi);
    var out = vec2<f32>(0.0, 0.0);
    if (m > 0.0) {
        out = zi * (v[i] / m);
    }
    wout[2u * i] = out.x;
    wout[2u * i + 1u] = out.y;
}
