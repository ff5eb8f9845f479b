// Writes one image of a planar f32 tensor [rows, C, H, W] into a region of an
// RGBA8 storage texture (src/restore/texture.rs): value v maps to
// (v - lo) / (hi - lo), clamped to [0, 1]; one channel is grey, three or more
// are RGB (the first three); each source pixel covers scale x scale texels.

struct Params {
    width: u32,
    height: u32,
    channels: u32,
    row: u32,
    dst_x: u32,
    dst_y: u32,
    scale: u32,
    _pad: u32,
    lo: f32,
    hi: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba8unorm, write>;

@compute @workgroup_size(8, 8)
fn to_texture(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.width * p.scale || gid.y >= p.height * p.scale) { return; }
    let plane = p.width * p.height;
    let at = p.row * p.channels * plane + (gid.y / p.scale) * p.width + gid.x / p.scale;
    var v = vec3<f32>(src[at]);
    if (p.channels >= 3u) {
        v = vec3<f32>(src[at], src[at + plane], src[at + 2u * plane]);
    }
    let unit = clamp((v - vec3<f32>(p.lo)) / (p.hi - p.lo), vec3<f32>(0.0), vec3<f32>(1.0));
    textureStore(dst, vec2<u32>(p.dst_x + gid.x, p.dst_y + gid.y), vec4<f32>(unit, 1.0));
}
