// The step-wise restoration's read-outs (src/kernels/embed.rs):
//   sample_stats: per image j and pixel p, the mean and (population) standard
//                 deviation over its `samples` rows of x0 [images * samples, per]
//   finite_check: per row of x [rows, per], how many values are not finite and
//                 the finite value of largest magnitude (out [rows, 2])

struct Params {
    images: u32,
    samples: u32,
    per: u32,
    rows: u32,
}

const WG: u32 = 256u;
//!include grid

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> st_x0: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_sd: array<f32>;

@compute @workgroup_size(WG)
fn sample_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.images * p.per) { return; }
    let first = (i / p.per) * p.samples * p.per + i % p.per;
    let k = f32(p.samples);
    var sum = 0.0;
    for (var s = 0u; s < p.samples; s++) {
        sum += st_x0[first + s * p.per];
    }
    let mean = sum / k;
    var sq = 0.0;
    for (var s = 0u; s < p.samples; s++) {
        let d = st_x0[first + s * p.per] - mean;
        sq += d * d;
    }
    st_mean[i] = mean;
    st_sd[i] = sqrt(sq / k);
}

@group(0) @binding(1) var<storage, read> fc_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> fc_out: array<f32>;

var<workgroup> bad: array<u32, WG>;
var<workgroup> ext: array<f32, WG>;

// Inf and NaN by their exponent bits: a comparison such as v != v may be
// folded away by a compiler that assumes finite floats.
fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// One workgroup per row (workgroup id x).
@compute @workgroup_size(WG)
fn finite_check(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    var count = 0u;
    var big = 0.0;
    for (var q = lid; q < p.per; q += WG) {
        let v = fc_x[row * p.per + q];
        if (!finite(v)) {
            count += 1u;
        } else if (abs(v) > abs(big)) {
            big = v;
        }
    }
    bad[lid] = count;
    ext[lid] = big;
    workgroupBarrier();
    for (var span = WG / 2u; span > 0u; span /= 2u) {
        if (lid < span) {
            bad[lid] += bad[lid + span];
            if (abs(ext[lid + span]) > abs(ext[lid])) {
                ext[lid] = ext[lid + span];
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        fc_out[row * 2u] = f32(bad[0]);
        fc_out[row * 2u + 1u] = ext[0];
    }
}
