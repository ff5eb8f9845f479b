// ---- grid.wgsl: the thread-grid conventions kernels share with
// src/gpu/mod.rs (through `//!include grid`). The including kernel declares
// `WG`, its workgroup width (a `const` or an `override`).

// One thread per sample (or per group): the small-grid kernels (mirrors `WG_SMALL` in src/gpu/mod.rs).
const WG_SMALL: u32 = 64u;

// The flat thread index of a 1-D launch whose grid spills into y past the
// 65,535-workgroup limit.
fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}
// ---- end of grid.wgsl
