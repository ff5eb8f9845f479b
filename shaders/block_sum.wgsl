// ---- block_sum.wgsl: the workgroup tree sum (through `//!include
// block_sum`). The including kernel declares `WG`, its workgroup width (a
// power of two), and `var<workgroup> red: array<f32, N>` with N >= WG.

// The sum of every thread's v in a fixed tree order (so a run is
// reproducible); every thread calls it (uniform control flow) and gets the sum.
fn block_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
// ---- end of block_sum.wgsl
