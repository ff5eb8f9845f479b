// One Stockham autosort pass of a batched complex FFT along one axis of an
// [N, H, W] complex buffer (interleaved re, im f32). The launcher
// (src/kernels/fft.rs) factors the length n into primes (2s paired into 4s)
// and runs one pass per factor R, ping-ponging between buffers; a pass does
// n / R radix-R butterflies per line, each a direct R-point DFT. So a prime R
// of any size is a valid radix and every n is handled, at n * (sum of
// factors) complex multiply-adds per line.
//
// Twiddles come from a table of exp(2 pi i t / n), t = 0..n-1, computed in
// f64 on the host, indexed by an exact integer t reduced mod n: no angle is
// ever formed in f32, so accuracy does not degrade with n or with the pass.
//
// Pass (Bainville's Stockham formulation), for j in 0..n/R, k = j mod ns:
//   out[(j / ns) * ns * R + k + q * ns]
//     = sum_r in[j + r * n / R] * w^(r * (k * n / (ns R) + q * n / R))
// with w = exp(-+2 pi i / n) and ns the product of the radices already done.
//
// The first pass of an axis may read with an index shift (ifftshift on the
// input) and the last may write with one (fftshift on the output) and scale.

struct Params {
    n: u32,         // transform length along this axis
    radix: u32,     // R of this pass
    ns: u32,        // product of the radices of the earlier passes on this axis
    inner: u32,     // element stride of a line (1 along W, W along H)
    total: u32,     // butterflies in the batch: lines * n / R
    inverse: u32,   // 1: conjugate twiddles (exp(+2 pi i t / n))
    shift_in: u32,  // read element (e + shift_in) mod n
    shift_out: u32, // write element e to (e + shift_out) mod n
    scale: f32,     // multiplies every output
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tw: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn fft_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.total) { return; }
    let n = p.n;
    let m = n / p.radix;
    let line = i / m;
    let j = i % m;
    let base = (line / p.inner) * n * p.inner + line % p.inner;
    let k = j % p.ns;
    let step = m / p.ns;
    let out0 = (j / p.ns) * p.ns * p.radix + k;
    let sign = select(-1.0, 1.0, p.inverse == 1u);
    for (var q = 0u; q < p.radix; q++) {
        let e = k * step + q * m;
        var acc = vec2<f32>(0.0, 0.0);
        for (var r = 0u; r < p.radix; r++) {
            let t = (r * e) % n;
            let w = vec2<f32>(tw[2u * t], sign * tw[2u * t + 1u]);
            let src = 2u * (base + ((j + r * m + p.shift_in) % n) * p.inner);
            let v = vec2<f32>(x[src], x[src + 1u]);
            acc += vec2<f32>(v.x * w.x - v.y * w.y, v.x * w.y + v.y * w.x);
        }
        let dst = 2u * (base + ((out0 + q * p.ns + p.shift_out) % n) * p.inner);
        y[dst] = acc.x * p.scale;
        y[dst + 1u] = acc.y * p.scale;
    }
}
