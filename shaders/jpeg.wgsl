// The JPEG round trip y = decode(encode(x)) as libjpeg does it (src/operators/jpeg.rs),
// on [N, C, H, W] images in [-1, 1] (levels v = (x + 1) 127.5), C = 1 (grey,
// one luma plane) or 3 (RGB as JFIF YCbCr, chroma 4:2:0). Per image the
// component planes lie one after another: luma [h8, w8], then for colour Cb
// and Cr [hc8, wc8] each, every side a whole number of 8x8 blocks; a plane
// sample holds a level-shifted component value (encode), a DCT coefficient
// divided by its quantiser (fdct) or a decoded component value (idct).
// Entries ending in _t are the transposes the VJP chains, in reverse order.
//
// With `exact` set the forward rounds wherever libjpeg holds integers: RGB
// levels, YCbCr samples, chroma means (its alternating bias), DCT outputs to
// 1/8 (islow's scaled integers), quotients, decoded samples, upsampled
// chroma (bias 8 or 7 in 16) and the chroma terms of the colour conversion,
// with libjpeg's 16-bit fixed-point colour constants. Integer-valued f32
// arithmetic is exact here (every product stays below 2^24), so only the
// DCTs carry rounding error. Unset, the same map with every rounding but the
// quotients' dropped and theirs through the cubic stand-in: the function
// whose derivative the VJP takes.

struct Params {
    n: u32,    // threads
    c: u32,    // image channels: 1 or 3
    h: u32,
    w: u32,
    h8: u32,   // luma plane: the image padded to whole blocks
    w8: u32,
    hc: u32,   // chroma samples that carry the image: ceil(h / 2) x ceil(w / 2)
    wc: u32,
    hc8: u32,  // chroma plane: hc, wc padded to whole blocks
    wc8: u32,
    per: u32,  // plane samples per image
    exact: u32, // 1: libjpeg's integer steps; 0: the VJP's stand-in
}

override WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// JFIF's RGB -> YCbCr rows (BT.601, full range) as libjpeg's FIX(x) / 2^16;
// Cb and Cr without their +128, which the level shift takes off again.
const TO_Y = vec3<f32>(19595.0, 38470.0, 7471.0) / 65536.0;
const TO_CB = vec3<f32>(-11059.0, -21709.0, 32768.0) / 65536.0;
const TO_CR = vec3<f32>(32768.0, -27439.0, -5329.0) / 65536.0;
// YCbCr -> RGB: Cr in R, Cb and Cr in G, Cb in B.
const CR_R = 91881.0 / 65536.0;
const CB_G = -22554.0 / 65536.0;
const CR_G = -46802.0 / 65536.0;
const CB_B = 116130.0 / 65536.0;
const PI_16 = 0.19634954084936207;
// Quotients within this of a half round away from zero: exact ties (common:
// libjpeg divides whole numbers, 8 x the coefficient by 8 x the quantiser)
// go the way its integer division takes them, whatever the f32 error.
const TIE = 1e-3;

fn to_component(comp: u32) -> vec3<f32> {
    if (comp == 0u) { return TO_Y; }
    if (comp == 1u) { return TO_CB; }
    return TO_CR;
}

// Round half away from zero, ties settled as above.
fn jround(q: f32) -> f32 {
    return sign(q) * floor(abs(q) + 0.5 + TIE);
}

// Round half up where libjpeg holds an integer (a right shift with its half added).
fn exact_round(v: f32) -> f32 {
    return select(v, floor(v + 0.5), p.exact == 1u);
}

// One plane sample: its image, component (0 Y, 1 Cb, 2 Cr), row and column
// in the plane, the plane's width and the index of its first sample.
struct Site {
    img: u32,
    comp: u32,
    r: u32,
    c: u32,
    pw: u32,
    base: u32,
}

fn site(i: u32) -> Site {
    var s: Site;
    s.img = i / p.per;
    var k = i % p.per;
    let luma = p.h8 * p.w8;
    s.base = s.img * p.per;
    s.pw = p.w8;
    s.comp = 0u;
    if (k >= luma) {
        let cs = p.hc8 * p.wc8;
        k -= luma;
        s.comp = 1u + k / cs;
        k = k % cs;
        s.pw = p.wc8;
        s.base += luma + (s.comp - 1u) * cs;
    }
    s.r = k / s.pw;
    s.c = k % s.pw;
    return s;
}

// The orthonormal 8-point DCT-II basis: frequency k at position x.
fn basis(k: u32, x: u32) -> f32 {
    let scale = select(0.5, 0.35355339059327373, k == 0u);
    return scale * cos(f32((2u * x + 1u) * k) * PI_16);
}

// The index of the sample at (r, c) of image img's channel ch.
fn pixel(img: u32, ch: u32, r: u32, c: u32) -> u32 {
    return ((img * p.c + ch) * p.h + r) * p.w + c;
}

// The image, channel, row and column of sample i ([N, C, H, W]; with
// `channels` 1, of pixel i of [N, H, W]).
fn unflatten(i: u32, channels: u32) -> vec4<u32> {
    return vec4<u32>(i / (p.w * p.h * channels), (i / (p.w * p.h)) % channels, (i / p.w) % p.h, i % p.w);
}

// Image level -> level-shifted planes: luma edge-replicated to whole blocks;
// chroma the 2x2 mean, the image's columns replicated past its right edge and
// chroma rows past ceil(h / 2) replicating the last (libjpeg's padding).
@compute @workgroup_size(WG)
fn encode(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let s = site(i);
    if (p.c == 1u) {
        dst[i] = level(s.img, 0u, min(s.r, p.h - 1u), min(s.c, p.w - 1u)) - 128.0;
        return;
    }
    if (s.comp == 0u) {
        dst[i] = exact_round(dot(TO_Y, rgb_levels(s.img, min(s.r, p.h - 1u), min(s.c, p.w - 1u)))) - 128.0;
        return;
    }
    let r0 = 2u * min(s.r, p.hc - 1u);
    let row = to_component(s.comp);
    var acc = 0.0;
    for (var dy = 0u; dy < 2u; dy++) {
        for (var dx = 0u; dx < 2u; dx++) {
            let v = dot(row, rgb_levels(s.img, min(r0 + dy, p.h - 1u), min(2u * s.c + dx, p.w - 1u)));
            // libjpeg: (x + 32767) >> 16 on the fixed-point sum.
            acc += select(v, floor(v + 32767.0 / 65536.0), p.exact == 1u);
        }
    }
    // libjpeg's mean: (sum + bias) >> 2, bias 1 and 2 by turns along the row.
    let bias = f32(1u + (s.c & 1u));
    dst[i] = select(acc / 4.0, floor((acc + bias) / 4.0), p.exact == 1u);
}

// An image sample's level, whole where libjpeg reads bytes.
fn level(img: u32, ch: u32, r: u32, c: u32) -> f32 {
    return exact_round((src[pixel(img, ch, r, c)] + 1.0) * 127.5);
}

fn rgb_levels(img: u32, r: u32, c: u32) -> vec3<f32> {
    return vec3<f32>(level(img, 0u, r, c), level(img, 1u, r, c), level(img, 2u, r, c));
}

// Levels back to [-1, 1].
fn to_unit(level: f32) -> f32 {
    return level / 127.5 - 1.0;
}

// A decoded component value, clamped to [0, 255] as libjpeg's IDCT range-limits.
fn component(img: u32, comp: u32, r: u32, c: u32) -> f32 {
    var base = img * p.per;
    var pw = p.w8;
    if (comp > 0u) {
        base += p.h8 * p.w8 + (comp - 1u) * p.hc8 * p.wc8;
        pw = p.wc8;
    }
    return clamp(src[base + r * pw + c], 0.0, 255.0);
}

// The chroma sample below or above (even r: above) an output row or column,
// replicating the edge.
fn neighbour(r: u32, n: u32) -> u32 {
    let r0 = i32(r / 2u);
    let r1 = select(r0 + 1, r0 - 1, r % 2u == 0u);
    return u32(clamp(r1, 0, i32(n) - 1));
}

// libjpeg's "fancy" upsampling: 9/16 the nearest chroma sample, 3/16 each of
// the next nearest across and along, 1/16 the diagonal.
fn upsampled(img: u32, comp: u32, r: u32, c: u32) -> f32 {
    let r0 = r / 2u;
    let c0 = c / 2u;
    let r1 = neighbour(r, p.hc);
    let c1 = neighbour(c, p.wc);
    let sum = 9.0 * component(img, comp, r0, c0) + 3.0 * component(img, comp, r0, c1)
        + 3.0 * component(img, comp, r1, c0) + component(img, comp, r1, c1);
    // libjpeg: (sum + 8) >> 4 for even output columns, (sum + 7) >> 4 for odd.
    let bias = select(7.0, 8.0, c % 2u == 0u);
    return select(sum / 16.0, floor((sum + bias) / 16.0), p.exact == 1u);
}

// The decoded RGB levels at (r, c) before their clamp.
fn decoded_rgb(img: u32, r: u32, c: u32) -> vec3<f32> {
    let y = component(img, 0u, r, c);
    let cb = upsampled(img, 1u, r, c) - 128.0;
    let cr = upsampled(img, 2u, r, c) - 128.0;
    return y + vec3<f32>(exact_round(CR_R * cr), exact_round(CB_G * cb + CR_G * cr), exact_round(CB_B * cb));
}

// Decoded planes (src) -> y [N, C, H, W]: clamped, rounded to whole levels, in [-1, 1].
@compute @workgroup_size(WG)
fn decode(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    // (image, channel, row, column)
    let at = unflatten(i, p.c);
    var v: f32;
    if (p.c == 1u) {
        v = component(at.x, 0u, at.z, at.w);
    } else {
        let rgb = decoded_rgb(at.x, at.z, at.w);
        v = clamp(rgb[at.y], 0.0, 255.0);
    }
    dst[i] = to_unit(floor(v + 0.5));
}

// The transpose of `encode`, from plane cotangents (src) to the image's.
@compute @workgroup_size(WG)
fn encode_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let at = unflatten(i, p.c);
    let img = at.x;
    let ch = at.y;
    let r = at.z;
    let c = at.w;
    // Luma: every padded sample that replicates this pixel.
    let r_end = select(r + 1u, p.h8, r == p.h - 1u);
    let c_end = select(c + 1u, p.w8, c == p.w - 1u);
    var g = vec3<f32>(0.0);
    for (var pr = r; pr < r_end; pr++) {
        for (var pc = c; pc < c_end; pc++) {
            g.x += src[img * p.per + pr * p.w8 + pc];
        }
    }
    if (p.c == 1u) {
        dst[i] = 127.5 * g.x;
        return;
    }
    // Chroma: every sample among whose four taps this pixel is, once per tap.
    let cr_end = select(r / 2u + 1u, p.hc8, r / 2u == p.hc - 1u);
    let cc_end = select(c / 2u + 1u, p.wc8, c == p.w - 1u);
    let cs = p.hc8 * p.wc8;
    let chroma = img * p.per + p.h8 * p.w8;
    for (var cr = r / 2u; cr < cr_end; cr++) {
        let rr = 2u * min(cr, p.hc - 1u);
        let nr = f32(u32(rr == r) + u32(min(rr + 1u, p.h - 1u) == r));
        for (var cc = c / 2u; cc < cc_end; cc++) {
            let nc = f32(u32(min(2u * cc, p.w - 1u) == c) + u32(min(2u * cc + 1u, p.w - 1u) == c));
            let k = chroma + cr * p.wc8 + cc;
            g.y += 0.25 * nr * nc * src[k];
            g.z += 0.25 * nr * nc * src[k + cs];
        }
    }
    let rgb = 127.5 * (mat3x3<f32>(TO_Y, TO_CB, TO_CR) * g);
    dst[i] = rgb[ch];
}

@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The 8x8 block transform of src at plane sample s: forward (DCT-II) sums the
// block's samples against the basis at frequency (r, c) mod 8; inverse sums
// its coefficients against the basis at position (r, c) mod 8, dequantised
// for `dequant` ROUNDED or STAND_IN (aux the tables: the quotient rounded, or
// through the cubic stand-in, times its quantiser). Orthonormal: each is the
// other's transpose.
const RAW = 0u;
const ROUNDED = 1u;
const STAND_IN = 2u;

fn block(s: Site, inverse: bool, dequant: u32) -> f32 {
    let o = s.base + (s.r & ~7u) * s.pw + (s.c & ~7u);
    let a = s.r & 7u;
    let b = s.c & 7u;
    let table = min(s.comp, 1u) * 64u;
    var acc = 0.0;
    for (var y = 0u; y < 8u; y++) {
        for (var x = 0u; x < 8u; x++) {
            var v = src[o + y * s.pw + x];
            var wgt: f32;
            if (inverse) {
                wgt = basis(y, a) * basis(x, b);
            } else {
                wgt = basis(a, y) * basis(b, x);
            }
            if (dequant != RAW) {
                let k = jround(v);
                let f = v - k;
                v = select(k, k + f * f * f, dequant == STAND_IN) * aux[table + y * 8u + x];
            }
            acc += wgt * v;
        }
    }
    return acc;
}

// Level-shifted planes (src) -> DCT coefficients over their quantisers (aux: tables).
@compute @workgroup_size(WG)
fn fdct(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let s = site(i);
    // islow's outputs are 8 x the coefficient, rounded.
    let d = block(s, false, RAW);
    out[i] = select(d, floor(8.0 * d + 0.5) / 8.0, p.exact == 1u) / aux[min(s.comp, 1u) * 64u + (s.r & 7u) * 8u + (s.c & 7u)];
}

// Quotients (src) -> decoded component values: rounded (exact) or through
// the stand-in, dequantised (aux: tables), inverse-transformed and shifted
// back; the clamp is the reader's.
@compute @workgroup_size(WG)
fn idct(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = exact_round(block(site(i), true, select(STAND_IN, ROUNDED, p.exact == 1u)) + 128.0);
}

fn passes(v: f32) -> f32 {
    return select(0.0, 1.0, v >= 0.0 && v <= 255.0);
}

// The transpose of `decode` up to the upsampling: src the decoded planes, aux
// the cotangent v of y [N, C, H, W]; out [N, C, H, W] the cotangents of the
// component values at each pixel (Y, and for colour the upsampled Cb, Cr).
// One thread per pixel. The whole-level rounding passes v straight through.
@compute @workgroup_size(WG)
fn decode_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let at = unflatten(i, 1u);
    let img = at.x;
    let r = at.z;
    let c = at.w;
    if (p.c == 1u) {
        out[i] = aux[i] / 127.5;
        return;
    }
    let rgb = decoded_rgb(img, r, c);
    let g = vec3<f32>(
        aux[pixel(img, 0u, r, c)] * passes(rgb.x),
        aux[pixel(img, 1u, r, c)] * passes(rgb.y),
        aux[pixel(img, 2u, r, c)] * passes(rgb.z),
    ) / 127.5;
    out[pixel(img, 0u, r, c)] = g.x + g.y + g.z;
    out[pixel(img, 1u, r, c)] = CB_G * g.y + CB_B * g.z;
    out[pixel(img, 2u, r, c)] = CR_R * g.x + CR_G * g.y;
}

// The weight of chroma sample k in output row (or column) r's upsampling.
fn tap_weight(r: u32, k: u32, n: u32) -> f32 {
    return 0.75 * f32(r / 2u == k) + 0.25 * f32(neighbour(r, n) == k);
}

// Pixel cotangents (aux, from `decode_t`) -> decoded-plane cotangents, through
// the upsampling's transpose and the components' clamp (src: decoded planes).
@compute @workgroup_size(WG)
fn gather_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let s = site(i);
    var g = 0.0;
    if (s.comp == 0u) {
        if (s.r < p.h && s.c < p.w) {
            g = aux[pixel(s.img, 0u, s.r, s.c)];
        }
    } else if (s.r < p.hc && s.c < p.wc) {
        // Output pixels reach chroma samples at most one away from their nearest.
        let r_lo = u32(max(2 * i32(s.r) - 2, 0));
        let c_lo = u32(max(2 * i32(s.c) - 2, 0));
        for (var r = r_lo; r < min(2u * s.r + 4u, p.h); r++) {
            let wr = tap_weight(r, s.r, p.hc);
            for (var c = c_lo; c < min(2u * s.c + 4u, p.w); c++) {
                g += wr * tap_weight(c, s.c, p.wc) * aux[pixel(s.img, s.comp, r, c)];
            }
        }
    }
    out[i] = g * passes(src[i]);
}

// Decoded-plane cotangents (src) -> quotient cotangents: the forward DCT (the
// inverse's transpose) times the rounding stand-in's slope at the quotient
// (aux): d/dq [round(q) + (q - round(q))^3] = 3 (q - round(q))^2.
@compute @workgroup_size(WG)
fn fdct_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let q = aux[i];
    let f = q - jround(q);
    out[i] = block(site(i), false, RAW) * 3.0 * f * f;
}

// Quotient cotangents (src) -> level-shifted plane cotangents: the inverse
// DCT (the forward's transpose; the quantiser divides in and multiplies out).
@compute @workgroup_size(WG)
fn idct_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = block(site(i), true, RAW);
}
