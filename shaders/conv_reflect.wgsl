// Depthwise 2-D correlation with a reflect boundary (torch ReflectionPad2d:
// index -1 -> 1, no edge repeat), the same kh x kw taps on every plane. The
// separable blurs run it twice with kh = 1 or kw = 1.
//
//   y[p, i, j] = sum_{a, b} k[a, b] x[p, refl(i + a - rh), refl(j + b - rw)]
//
// The reach (rh, kh - 1 - rh, and the same along w) is below the image side, so
// one reflection suffices (the Rust side refuses larger kernels).
//
// Sparse variants (`conv_sparse_*`) take only the nonzero taps as triples
// (dy, dx, weight) with dy = a - rh, dx = b - rw: a motion-blur path covers a
// few percent of its 61 x 61 box.
//
// The adjoint is a gather, exact and free of atomics: element t of an axis of
// length n is hit by the padded positions m in {t, -t (t > 0), 2(n-1) - t
// (t < n-1)}; padded position m was read by output i = m - a + r for tap a.

struct Params {
    planes: u32,   // N * C
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    rh: u32,       // tap index that sits on the output pixel, along h
    rw: u32,
    ntaps: u32,    // sparse entries: number of (dy, dx, weight) triples in k
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn refl(m: i32, n: i32) -> i32 {
    var r = m;
    if (r < 0) { r = -r; }
    if (r > n - 1) { r = 2 * (n - 1) - r; }
    return r;
}

// The q-th padded position that reflects onto t (q = 0, 1, 2), or a sentinel
// below -n when that preimage does not exist.
fn preimage(t: i32, n: i32, q: u32) -> i32 {
    if (q == 0u) { return t; }
    if (q == 1u) {
        if (t > 0) { return -t; }
        return -2 * n - 1;
    }
    if (t < n - 1) { return 2 * (n - 1) - t; }
    return -2 * n - 1;
}

//!include grid

// The pixel a thread owns: flat index `idx` (an output pixel, or an input
// pixel for the adjoints), its plane's first element, row and column.
struct Pixel {
    ok: bool,
    idx: u32,
    base: u32,
    i: i32,
    j: i32,
}

fn pixel_of(gid: vec3<u32>, nwg: vec3<u32>) -> Pixel {
    let idx = index(gid, nwg);
    let hw = p.h * p.w;
    return Pixel(idx < p.planes * hw, idx, idx - idx % hw, i32((idx / p.w) % p.h), i32(idx % p.w));
}

// Sparse entry t: (dy, dx) and its weight.
struct Tap {
    dy: i32,
    dx: i32,
    wt: f32,
}

fn sparse_tap(t: u32) -> Tap {
    return Tap(i32(k[3u * t]), i32(k[3u * t + 1u]), k[3u * t + 2u]);
}

@compute @workgroup_size(WG)
fn conv_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let px = pixel_of(gid, nwg);
    if (!px.ok) { return; }
    let h = i32(p.h);
    let w = i32(p.w);
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let row = px.base + u32(refl(px.i + i32(a) - i32(p.rh), h)) * p.w;
        for (var b = 0u; b < p.kw; b++) {
            acc += k[a * p.kw + b] * src[row + u32(refl(px.j + i32(b) - i32(p.rw), w))];
        }
    }
    dst[px.idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let px = pixel_of(gid, nwg);
    if (!px.ok) { return; }
    let h = i32(p.h);
    let w = i32(p.w);
    let rh = i32(p.rh);
    let rw = i32(p.rw);
    var acc = 0.0;
    for (var qi = 0u; qi < 3u; qi++) {
        let mi = preimage(px.i, h, qi);
        if (mi < -h) { continue; }
        // taps a with source row si = mi - a + rh inside [0, h)
        let a_lo = max(0, mi + rh - (h - 1));
        let a_hi = min(i32(p.kh) - 1, mi + rh);
        for (var a = a_lo; a <= a_hi; a++) {
            let row = px.base + u32(mi - a + rh) * p.w;
            for (var qj = 0u; qj < 3u; qj++) {
                let mj = preimage(px.j, w, qj);
                if (mj < -w) { continue; }
                let b_lo = max(0, mj + rw - (w - 1));
                let b_hi = min(i32(p.kw) - 1, mj + rw);
                for (var b = b_lo; b <= b_hi; b++) {
                    acc += k[u32(a) * p.kw + u32(b)] * src[row + u32(mj - b + rw)];
                }
            }
        }
    }
    dst[px.idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_sparse_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let px = pixel_of(gid, nwg);
    if (!px.ok) { return; }
    var acc = 0.0;
    for (var t = 0u; t < p.ntaps; t++) {
        let tap = sparse_tap(t);
        acc += tap.wt * src[px.base + u32(refl(px.i + tap.dy, i32(p.h))) * p.w + u32(refl(px.j + tap.dx, i32(p.w)))];
    }
    dst[px.idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_sparse_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let px = pixel_of(gid, nwg);
    if (!px.ok) { return; }
    let h = i32(p.h);
    let w = i32(p.w);
    var acc = 0.0;
    for (var t = 0u; t < p.ntaps; t++) {
        let tap = sparse_tap(t);
        for (var qi = 0u; qi < 3u; qi++) {
            // output row si read padded row mi = si + dy
            let si = preimage(px.i, h, qi) - tap.dy;
            if (si < 0 || si >= h) { continue; }
            for (var qj = 0u; qj < 3u; qj++) {
                let sj = preimage(px.j, w, qj) - tap.dx;
                if (sj < 0 || sj >= w) { continue; }
                acc += tap.wt * src[px.base + u32(si) * p.w + u32(sj)];
            }
        }
    }
    dst[px.idx] = acc;
}
