//! One image of a tensor drawn into an RGBA8 texture the application owns,
//! by a compute kernel (`shaders/to_texture.wgsl`): no render pass, and no
//! buffer-to-texture copy with its 256-byte row alignment.

use crate::gpu::{DType, TO_TEXTURE};
use crate::samplers::SamplerError;
use crate::tensor::Tensor;
use crate::Gpu;

/// The value range of images: -1 maps to 0 (black), 1 to 1 (white).
pub const SIGNED: [f32; 2] = [-1.0, 1.0];

/// Where and how a [`TextureWriter`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Panel {
    /// Which image of the tensor (its first axis).
    pub row: usize,
    /// The texel of the image's top-left corner.
    pub origin: [u32; 2],
    /// Texels per pixel along each axis (nearest-neighbour, at least 1).
    pub scale: u32,
    /// The values drawn black and white ([`SIGNED`] for images; [0, s] for a
    /// standard deviation); outside it they are clamped.
    pub range: [f32; 2],
}

/// Mirrors `Params` in shaders/to_texture.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    image: [u32; 4],
    place: [u32; 4],
    range: [f32; 4],
}

/// Draws one image of a planar f32 tensor [N, C, H, W] (C = 1: grey; C = 3:
/// RGB) into a region of a texture: planned once (pipeline, bind group,
/// uniform), recorded into the application's encoder every frame.
pub struct TextureWriter {
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
    groups: [u32; 3],
}

fn invalid(msg: String) -> SamplerError {
    SamplerError::Invalid(msg)
}

impl TextureWriter {
    /// Checks everything before planning: `src`'s shape, dtype and buffer
    /// (STORAGE usage, large enough); the texture's format (`Rgba8Unorm`),
    /// usage (`STORAGE_BINDING`), dimension and the region's fit; the range
    /// and scale.
    pub fn new(gpu: &Gpu, src: &Tensor, texture: &wgpu::Texture, panel: Panel) -> Result<TextureWriter, SamplerError> {
        let &[rows, channels, height, width] = src.shape.as_slice() else {
            return Err(invalid(format!(
                "the tensor to draw has shape {:?}, expected [N, C, H, W]",
                src.shape
            )));
        };
        if src.dtype != DType::F32 || !(channels == 1 || channels == 3) || height == 0 || width == 0 {
            return Err(invalid(format!(
                "only f32 images of 1 or 3 channels can be drawn, got {:?} {:?}",
                src.dtype, src.shape
            )));
        }
        if panel.row >= rows {
            return Err(invalid(format!("row {} is past the tensor's {rows} images", panel.row)));
        }
        if src.buffer.size() < src.size_bytes() as u64 || !src.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(invalid(format!(
                "the tensor's buffer ({} bytes, {:?}) needs STORAGE usage and {} bytes",
                src.buffer.size(),
                src.buffer.usage(),
                src.size_bytes()
            )));
        }
        if texture.format() != wgpu::TextureFormat::Rgba8Unorm
            || !texture.usage().contains(wgpu::TextureUsages::STORAGE_BINDING)
            || texture.dimension() != wgpu::TextureDimension::D2
            || texture.sample_count() != 1
        {
            return Err(invalid(format!(
                "the texture must be a 2D Rgba8Unorm texture with STORAGE_BINDING usage, got a {:?} {:?} texture with {:?}",
                texture.dimension(),
                texture.format(),
                texture.usage()
            )));
        }
        let [lo, hi] = panel.range;
        if !(lo.is_finite() && hi.is_finite() && hi > lo) || panel.scale == 0 {
            return Err(invalid(format!(
                "the range {:?} must be finite and increasing and the scale {} at least 1",
                panel.range, panel.scale
            )));
        }
        let (w, h) = (width as u64 * panel.scale as u64, height as u64 * panel.scale as u64);
        let [x, y] = panel.origin;
        if x as u64 + w > texture.width() as u64 || y as u64 + h > texture.height() as u64 {
            return Err(invalid(format!(
                "a {w}x{h} region at ({x}, {y}) does not fit the {}x{} texture",
                texture.width(),
                texture.height()
            )));
        }
        let params = Params {
            image: [width as u32, height as u32, channels as u32, panel.row as u32],
            place: [x, y, panel.scale, 0],
            range: [lo, hi, 0.0, 0.0],
        };
        let uniform = gpu.uniform("to_texture params", &params);
        let pipeline = gpu.pipeline(&TO_TEXTURE, "to_texture", &[])?;
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            label: Some("to_texture target"),
            base_mip_level: 0,
            mip_level_count: Some(1),
            ..Default::default()
        });
        let layout = pipeline.get_bind_group_layout(0);
        let group = gpu.scoped("to_texture bind group", || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("to_texture"),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: src.buffer.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&view),
                    },
                ],
            })
        })?;
        let groups = [(w as u32).div_ceil(8), (h as u32).div_ceil(8), 1];
        Ok(TextureWriter {
            pipeline,
            group,
            groups,
        })
    }

    /// Records the draw into a compute pass of the application's.
    pub fn record_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// Records the draws of `writers` into one compute pass of `enc`.
    pub fn record(writers: &[&TextureWriter], enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("to_texture"),
            timestamp_writes: None,
        });
        for w in writers {
            w.record_pass(&mut pass);
        }
    }
}
