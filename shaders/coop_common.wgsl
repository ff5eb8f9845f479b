enable wgpu_cooperative_matrix;
// ---- coop_common.wgsl: conv2d_coop.wgsl's `tensor_cores` variant, the
// kernel itself: 16x16 cooperative-matrix fragments (f16 operands, f32
// accumulators) and the subgroup a fragment belongs to.

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

// The subgroup ids the quadrant layout uses (the hardware's own subgroups:
// invocation order within a workgroup need not follow them).
struct SubgroupIds {
    @builtin(subgroup_id) id: u32,
    @builtin(num_subgroups) count: u32,
}

// (this invocation's subgroup, subgroups in the workgroup).
fn subgroup_of(ids: SubgroupIds, tid: u32) -> vec2<u32> {
    return vec2(ids.id, ids.count);
}
// ---- end of coop_common.wgsl
