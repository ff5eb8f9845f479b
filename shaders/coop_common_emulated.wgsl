// ---- coop_common_emulated.wgsl: conv2d_coop.wgsl's `emulated` variant.
// The cooperative-matrix fragments and operations as plain loops over the
// same workgroup arrays, offsets and strides, with naga 30's semantics:
// coopLoadT / coopStoreT address element (row, col) of a fragment at
// row * stride + col (row-major; coopLoad / coopStore would be column-major),
// strides in elements of the array, coopMultiplyAdd(a, b, c) = a * b + c.
// A subgroup is the 32 consecutive invocations tid / 32 (no subgroup
// builtins, so it runs on any adapter); an accumulator is spread over them,
// one invocation per fragment element as a real subgroup spreads it:
// lane l holds elements l + 32 e (e < 8), row (l + 32 e) / 16, column l % 16.
// The kernel's calls are rewritten into the functions below. naga passes no
// workgroup pointers into functions, so the rules name the arrays the kernel
// uses (a_sh, b_sh: a load from anywhere else is left unrewritten and fails
// validation) and pass on the offset and stride:
//!rewrite coopLoadT<FragA>(&a_sh[$1], $2) => coop_load_t(true, $1, $2)
//!rewrite coopLoadT<FragB>(&b_sh[$1], $2) => coop_load_t(false, $1, $2)
//!rewrite coopMultiplyAdd($1, $2, $3) => coop_multiply_add($1, $2, $3)
//!rewrite coopStoreT($1, &c_sh[$2], $3) => coop_store_t_c_sh($1, $2, $3)

const FRAG: u32 = 16u;
const LANE_ELEMS: u32 = FRAG * FRAG / SUBGROUP;

// An operand fragment: the 16 x 16 values every lane reads, row-major.
struct FragA {
    v: array<f16, FRAG * FRAG>,
}

alias FragB = FragA;

// An accumulator fragment: this lane's LANE_ELEMS elements.
struct FragC {
    v: array<f32, LANE_ELEMS>,
}

// Row and column of element e of this lane's share.
fn frag_row(e: u32) -> u32 {
    return (emu_lane + SUBGROUP * e) / FRAG;
}

fn frag_col() -> u32 {
    return emu_lane % FRAG;
}

// The lane within the emulated subgroup, set by `subgroup_of` as each entry
// point starts.
var<private> emu_lane: u32;

// The emulation reads no subgroup builtins; an entry-point struct needs one
// input, and this is one the kernel does not otherwise take.
struct SubgroupIds {
    @builtin(local_invocation_id) unused: vec3<u32>,
}

fn subgroup_of(ids: SubgroupIds, tid: u32) -> vec2<u32> {
    emu_lane = tid % SUBGROUP;
    return vec2(tid / SUBGROUP, WG / SUBGROUP);
}

// An operand fragment from a_sh (`from_a`) or b_sh.
fn coop_load_t(from_a: bool, off: u32, stride: u32) -> FragA {
    var f: FragA;
    for (var r = 0u; r < FRAG; r++) {
        for (var c = 0u; c < FRAG; c++) {
            let i = off + r * stride + c;
            if (from_a) {
                f.v[r * FRAG + c] = a_sh[i];
            } else {
                f.v[r * FRAG + c] = b_sh[i];
            }
        }
    }
    return f;
}

// f16 products are exact in f32: the sums are the tensor cores' (in order).
fn coop_multiply_add(a: FragA, b: FragA, c: FragC) -> FragC {
    var d = c;
    for (var e = 0u; e < LANE_ELEMS; e++) {
        let r = frag_row(e);
        for (var k = 0u; k < FRAG; k++) {
            d.v[e] += f32(a.v[r * FRAG + k]) * f32(b.v[k * FRAG + frag_col()]);
        }
    }
    return d;
}

fn coop_store_t_c_sh(c: FragC, off: u32, stride: u32) {
    for (var e = 0u; e < LANE_ELEMS; e++) {
        c_sh[off + frag_row(e) * stride + frag_col()] = c.v[e];
    }
}
// ---- end of coop_common_emulated.wgsl
