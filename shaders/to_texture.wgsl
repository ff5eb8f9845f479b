// Writes one image of a planar f32 tensor [rows, C, H, W] into a region of an
// RGBA8 storage texture (src/restore/texture.rs): value v maps to
// (v - lo) / (hi - lo), clamped to [0, 1]; one channel is grey, three or more
// are RGB (the first three); each source pixel covers scale x scale texels.

struct Params {
    // width, height, channels, row of the source image
    image: vec4<u32>,
    // the region's top-left texel (x, y) and the texels per pixel
    place: vec4<u32>,
    // lo, hi: the values drawn black and white
    range: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba8unorm, write>;

@compute @workgroup_size(8, 8)
fn to_texture(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = p.image.x;
    let scale = p.place.z;
    if (gid.x >= w * scale || gid.y >= p.image.y * scale) { return; }
    let plane = w * p.image.y;
    let at = p.image.w * p.image.z * plane + (gid.y / scale) * w + gid.x / scale;
    var v = vec3<f32>(src[at]);
    if (p.image.z >= 3u) {
        v = vec3<f32>(src[at], src[at + plane], src[at + 2u * plane]);
    }
    let lo = vec3<f32>(p.range.x);
    let unit = clamp((v - lo) / (p.range.y - p.range.x), vec3<f32>(0.0), vec3<f32>(1.0));
    textureStore(dst, p.place.xy + gid.xy, vec4<f32>(unit, 1.0));
}
