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

@compute @workgroup_size(WG)
fn conv_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    let hw = p.h * p.w;
    if (idx >= p.planes * hw) { return; }
    let j = i32(idx % p.w);
    let i = i32((idx / p.w) % p.h);
    let base = idx - idx % hw;
    let h = i32(p.h);
    let w = i32(p.w);
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let row = base + u32(refl(i + i32(a) - i32(p.rh), h)) * p.w;
        for (var b = 0u; b < p.kw; b++) {
            acc += k[a * p.kw + b] * src[row + u32(refl(j + i32(b) - i32(p.rw), w))];
        }
    }
    dst[idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    let hw = p.h * p.w;
    if (idx >= p.planes * hw) { return; }
    let tj = i32(idx % p.w);
    let ti = i32((idx / p.w) % p.h);
    let base = idx - idx % hw;
    let h = i32(p.h);
    let w = i32(p.w);
    let rh = i32(p.rh);
    let rw = i32(p.rw);
    var acc = 0.0;
    for (var qi = 0u; qi < 3u; qi++) {
        let mi = preimage(ti, h, qi);
        if (mi < -h) { continue; }
        // taps a with source row si = mi - a + rh inside [0, h)
        let a_lo = max(0, mi + rh - (h - 1));
        let a_hi = min(i32(p.kh) - 1, mi + rh);
        for (var a = a_lo; a <= a_hi; a++) {
            let row = base + u32(mi - a + rh) * p.w;
            for (var qj = 0u; qj < 3u; qj++) {
                let mj = preimage(tj, w, qj);
                if (mj < -w) { continue; }
                let b_lo = max(0, mj + rw - (w - 1));
                let b_hi = min(i32(p.kw) - 1, mj + rw);
                for (var b = b_lo; b <= b_hi; b++) {
                    acc += k[u32(a) * p.kw + u32(b)] * src[row + u32(mj - b + rw)];
                }
            }
        }
    }
    dst[idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_sparse_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    let hw = p.h * p.w;
    if (idx >= p.planes * hw) { return; }
    let j = i32(idx % p.w);
    let i = i32((idx / p.w) % p.h);
    let base = idx - idx % hw;
    let h = i32(p.h);
    let w = i32(p.w);
    var acc = 0.0;
    for (var t = 0u; t < p.ntaps; t++) {
        let dy = i32(k[3u * t]);
        let dx = i32(k[3u * t + 1u]);
        acc += k[3u * t + 2u] * src[base + u32(refl(i + dy, h)) * p.w + u32(refl(j + dx, w))];
    }
    dst[idx] = acc;
}

@compute @workgroup_size(WG)
fn conv_sparse_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    let hw = p.h * p.w;
    if (idx >= p.planes * hw) { return; }
    let tj = i32(idx % p.w);
    let ti = i32((idx / p.w) % p.h);
    let base = idx - idx % hw;
    let h = i32(p.h);
    let w = i32(p.w);
    var acc = 0.0;
    for (var t = 0u; t < p.ntaps; t++) {
        let dy = i32(k[3u * t]);
        let dx = i32(k[3u * t + 1u]);
        let wt = k[3u * t + 2u];
        for (var qi = 0u; qi < 3u; qi++) {
            // output row si read padded row mi = si + dy
            let si = preimage(ti, h, qi) - dy;
            if (si < 0 || si >= h) { continue; }
            for (var qj = 0u; qj < 3u; qj++) {
                let sj = preimage(tj, w, qj) - dx;
                if (sj < 0 || sj >= w) { continue; }
                acc += wt * src[base + u32(si) * p.w + u32(sj)];
            }
        }
    }
    dst[idx] = acc;
}
