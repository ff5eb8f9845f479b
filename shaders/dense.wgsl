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

@compute @workgroup_size(WG)
fn dense_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.rows * p.batch) { return; }
    let n = idx / p.rows;
    let i = idx % p.rows;
    let xo = n * p.cols;
    let mo = i * p.cols;
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += mat[mo + j] * src[xo + j];
    }
    dst[idx] = s;
}

@compute @workgroup_size(WG)
fn dense_adj(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.cols * p.batch) { return; }
    let n = idx / p.cols;
    let j = idx % p.cols;
    let yo = n * p.rows;
    var s = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        s += mat[i * p.cols + j] * src[yo + i];
    }
    dst[idx] = s;
}
