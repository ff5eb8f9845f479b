// Dense matrix times a batch of vectors, no shared memory (lavapipe pays dearly
// for workgroup barriers, and the matrices here are small):
//   dense_fwd: y[n, i] = sum_j M[i, j] x[n, j]    one thread per (n, i)
//   dense_adj: x[n, j] = sum_i M[i, j] y[n, i]    one thread per (n, j)
// M is [rows, cols] row-major. The same two entries serve A / A^T and the
// SVD factors V^T / V and U^T / U (src/operators/dense.rs).

struct Params {
    rows: u32,
    cols: u32,
    batch: u32,
    _pad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mat: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

//!include grid

// Output idx = (n, o) of M applied to sample n of src: sum_k M[o ostride +
// k istride] src[n, k] over k < ins. Both entries are this one product, M
// read by rows (dense_fwd) or by columns (dense_adj).
fn apply(idx: u32, outs: u32, ins: u32, ostride: u32, istride: u32) -> f32 {
    let n = idx / outs;
    let o = idx % outs;
    var s = 0.0;
    for (var k = 0u; k < ins; k++) {
        s += mat[o * ostride + k * istride] * src[n * ins + k];
    }
    return s;
}

@compute @workgroup_size(WG)
fn dense_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.rows * p.batch) { return; }
    dst[idx] = apply(idx, p.rows, p.cols, p.cols, 1u);
}

@compute @workgroup_size(WG)
fn dense_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = index(gid, nwg);
    if (idx >= p.cols * p.batch) { return; }
    dst[idx] = apply(idx, p.cols, p.rows, 1u, p.cols);
}
