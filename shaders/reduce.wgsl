// Batched dot products in two levels, so the result never leaves the GPU:
//   dot_partial : grid (chunks, N); each workgroup reduces CHUNK elements of one
//                 sample in shared memory (fixed tree order) -> partial[n, chunk]
//   dot_finish  : one workgroup per sample sums its partials -> out[n]
// (optionally the square root, for norms).

struct Params {
    per: u32,     // elements per sample
    chunks: u32,  // partials per sample
    take_sqrt: u32,
    _pad: u32,
}

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;
const CHUNK: u32 = 1024u; // WG * PER_THREAD

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

var<workgroup> red: array<f32, 256>;
//!include block_sum

@compute @workgroup_size(WG)
fn dot_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wid.y;
    let base = n * p.per;
    let start = wid.x * CHUNK;
    var s = 0.0;
    for (var k = 0u; k < PER_THREAD; k++) {
        let j = start + k * WG + lid;
        if (j < p.per) {
            s += x[base + j] * y[base + j];
        }
    }
    let total = block_sum(lid, s);
    if (lid == 0u) {
        partial[n * p.chunks + wid.x] = total;
    }
}

@group(0) @binding(0) var<uniform> q: Params;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn dot_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wid.x;
    var s = 0.0;
    for (var j = lid; j < q.chunks; j += WG) {
        s += parts[n * q.chunks + j];
    }
    let total = block_sum(lid, s);
    if (lid == 0u) {
        if (q.take_sqrt != 0u) {
            out[n] = sqrt(max(total, 0.0));
        } else {
            out[n] = total;
        }
    }
}
