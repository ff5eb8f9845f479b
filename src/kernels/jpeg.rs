//! `shaders/jpeg.wgsl`: the stages of the JPEG round trip (colour conversion
//! and chroma subsampling into padded component planes, the blockwise DCT
//! over the quantisers, rounding, dequantisation and IDCT, upsampling and
//! colour conversion back) and the transposes its VJP chains. The operator
//! (`crate::operators::jpeg`) strings them into plans.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, JPEG, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// `encode`, `decode`, `encode_t`: dst = f(src).
    pub struct JpegMap for JPEG: ["encode", "decode", "encode_t"] {
        p: uniform,
        src: read f32,
        dst: read_write f32,
    }
    /// `fdct`, `idct`, `decode_t`, `gather_t`, `fdct_t`, `idct_t`: out = f(src, aux).
    pub struct JpegPair for JPEG: ["fdct", "idct", "decode_t", "gather_t", "fdct_t", "idct_t"] {
        p: uniform,
        src: read f32,
        aux: read f32,
        out: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[JpegMap::SIG, JpegPair::SIG];

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct JpegParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub h8: u32,
    pub w8: u32,
    pub hc: u32,
    pub wc: u32,
    pub hc8: u32,
    pub wc8: u32,
    pub per: u32,
    pub exact: u32,
}

/// What a stage's tensor holds, per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    /// [C, H, W]
    Image,
    /// The component planes, [`JpegLayout::per_image`] samples.
    Planes,
    /// The two quantisation tables [2, 64] (once, not per image).
    Tables,
}

/// One kernel of the round trip or its VJP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// image -> level-shifted planes (colour conversion, 4:2:0, edge padding)
    Encode,
    /// planes, tables -> DCT coefficients over their quantisers
    Fdct,
    /// quotients, tables -> decoded component values (rounded or through the stand-in, dequantised, IDCT, unclamped)
    Idct,
    /// decoded planes -> y (clamps, upsampling, colour conversion, whole levels)
    Decode,
    /// decoded planes, v -> per-pixel component cotangents
    DecodeT,
    /// decoded planes, pixel cotangents -> plane cotangents
    GatherT,
    /// plane cotangents, quotients -> quotient cotangents (the stand-in's slope)
    FdctT,
    /// quotient cotangents, tables -> level-shifted plane cotangents
    IdctT,
    /// plane cotangents -> image cotangents
    EncodeT,
}

impl Stage {
    /// The entry point, and what src, aux (None: no aux) and dst hold.
    fn signature(self) -> (&'static str, Holds, Option<Holds>, Holds) {
        use Holds::*;
        match self {
            Stage::Encode => ("encode", Image, None, Planes),
            Stage::Fdct => ("fdct", Planes, Some(Tables), Planes),
            Stage::Idct => ("idct", Planes, Some(Tables), Planes),
            Stage::Decode => ("decode", Planes, None, Image),
            Stage::DecodeT => ("decode_t", Planes, Some(Image), Image),
            Stage::GatherT => ("gather_t", Planes, Some(Image), Planes),
            Stage::FdctT => ("fdct_t", Planes, Some(Planes), Planes),
            Stage::IdctT => ("idct_t", Planes, Some(Tables), Planes),
            Stage::EncodeT => ("encode_t", Planes, None, Image),
        }
    }
}

/// An image's shape and its component planes (luma padded to whole 8x8
/// blocks, for colour two chroma planes of ceil(H / 2) x ceil(W / 2)
/// samples padded likewise), and which map the stages compute: `exact`
/// rounds wherever libjpeg holds integers; otherwise nothing is rounded but
/// the quotients, through the cubic stand-in (the map the VJP differentiates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegLayout {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub exact: bool,
}

fn blocks(side: usize) -> usize {
    side.div_ceil(8) * 8
}

impl JpegLayout {
    /// Plane samples per image.
    pub fn per_image(&self) -> usize {
        let luma = blocks(self.h) * blocks(self.w);
        match self.c {
            1 => luma,
            _ => luma + 2 * blocks(self.h.div_ceil(2)) * blocks(self.w.div_ceil(2)),
        }
    }

    fn values(&self, holds: Holds, n: usize) -> usize {
        match holds {
            Holds::Image => n * self.c * self.h * self.w,
            Holds::Planes => n * self.per_image(),
            Holds::Tables => 128,
        }
    }

    /// `stage` on a batch of `n` images: src and aux (where the stage reads
    /// one) in, dst out; each checked to hold what the stage expects.
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        stage: Stage,
        n: usize,
        src: &Tensor,
        aux: Option<&Tensor>,
        dst: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let (entry, src_holds, aux_holds, dst_holds) = stage.signature();
        let check = |what: &str, t: &Tensor, holds: Holds| {
            let len = self.values(holds, n);
            if t.numel() == len {
                Ok(())
            } else {
                Err(GpuError::Other(format!(
                    "jpeg {entry}: {what} of shape {:?} should hold {len} values",
                    t.shape
                )))
            }
        };
        check("src", src, src_holds)?;
        check("dst", dst, dst_holds)?;
        // decode_t runs a thread per pixel, writing all its channels.
        let threads = match stage {
            Stage::DecodeT => n * self.h * self.w,
            _ => self.values(dst_holds, n),
        };
        let (hc, wc) = (self.h.div_ceil(2), self.w.div_ceil(2));
        let params = JpegParams {
            n: threads as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            h8: blocks(self.h) as u32,
            w8: blocks(self.w) as u32,
            hc: hc as u32,
            wc: wc as u32,
            hc8: blocks(hc) as u32,
            wc8: blocks(wc) as u32,
            per: self.per_image() as u32,
            exact: self.exact as u32,
        };
        let p = gpu.uniform("jpeg params", &params);
        let groups = dispatch_groups(threads, WG1D);
        match (aux_holds, aux) {
            (None, None) => Dispatch::typed(gpu, entry, &[], &JpegMap { p: &p, src, dst }, groups),
            (Some(holds), Some(aux)) => {
                check("aux", aux, holds)?;
                Dispatch::typed(
                    gpu,
                    entry,
                    &[],
                    &JpegPair {
                        p: &p,
                        src,
                        aux,
                        out: dst,
                    },
                    groups,
                )
            }
            _ => Err(GpuError::Other(format!(
                "jpeg {entry}: {} an aux tensor",
                if aux_holds.is_some() { "needs" } else { "takes no" }
            ))),
        }
    }
}
