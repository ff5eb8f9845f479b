//! `jpeg`: the JPEG round trip y = decode(encode(x)) at `--quality` Q, as
//! libjpeg (and Pillow's `Image.save(quality=Q)`) does it: RGB as JFIF YCbCr
//! (BT.601, full range) with 4:2:0 chroma (2x2 means), grey as one luma plane;
//! planes padded to whole 8x8 blocks by edge replication (for chroma: the
//! image's columns replicated, then the last chroma row), level shift by 128,
//! the 8x8 DCT, the IJG tables scaled by libjpeg's quality formula, rounding
//! of the quotients (half away from zero), dequantisation, IDCT, the
//! components clamped to [0, 255], libjpeg's "fancy" triangle upsampling of
//! chroma (weights 3/4 and 1/4 per axis), YCbCr back to RGB, clamped again,
//! and the crop to the image.
//!
//! Rounding: the forward rounds wherever libjpeg holds integers, so that on
//! 8-bit images it matches libjpeg itself (Pillow's JPEGs: tests/jpeg.rs,
//! mean gaps of 0.01 to 0.45 levels where a float codec is off by 0.25 to
//! 1.8): the input to whole levels (a no-op on images read from 8-bit
//! files), YCbCr samples and chroma means with libjpeg's fixed-point
//! constants and biases, the DCT's outputs to 1/8 (its integer DCT's scaled
//! output), the quotients, the decoded samples, the upsampled chroma and the
//! chroma terms of the colour conversion; y is whole levels. What is left is
//! libjpeg's integer DCTs tipping the odd quotient the other way.
//!
//! Non-linear: the VJP replaces the quotients' rounding by Shin and Song's
//! cubic stand-in, round(q) + (q - round(q))^3 ("JPEG-resistant adversarial
//! images", 2017), whose slope 3 (q - round(q))^2 weights each coefficient's
//! cotangent: coefficients far from a rounding step carry none, ones on the
//! step the most. The whole-level roundings pass the cotangent straight
//! through: the VJP is that of the same map with only the quotients rounded,
//! by the stand-in (each of the others moves a value by at most half a level,
//! and the cubic's slope, zero at whole levels, would cut off values that sit
//! near one); the clamps pass it where the stand-in's value lies in [0, 255].

use crate::gpu::Plan;
use crate::kernels::jpeg::{JpegLayout, Stage};
use crate::operators::{check_pair, Classical, Operator, OperatorError};
use crate::tensor::Tensor;
use crate::Gpu;

/// The quality when `--quality` is not given: heavy compression, blocky and
/// smeared, where a prior has the most to restore.
pub const DEFAULT_QUALITY: u32 = 10;

/// The IJG standard luminance quantisation table (ITU T.81 Annex K), row-major.
pub const LUMINANCE: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The IJG standard chrominance quantisation table, row-major.
pub const CHROMINANCE: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

/// A table scaled to `quality` as libjpeg's `jpeg_set_quality` (baseline)
/// does: 5000 / Q below 50, 200 - 2 Q from there, in percent, rounded, and
/// clamped to [1, 255].
pub fn scaled_table(table: &[u16; 64], quality: u32) -> [f32; 64] {
    let scale = if quality < 50 {
        5000 / quality
    } else {
        200 - 2 * quality
    };
    table.map(|t| ((t as u32 * scale + 50) / 100).clamp(1, 255) as f32)
}

fn invalid(message: String) -> OperatorError {
    OperatorError::Invalid {
        task: "jpeg".into(),
        message,
    }
}

pub struct Jpeg {
    shape: [usize; 3],
    layout: JpegLayout,
    /// Luminance then chrominance quantisers [2, 64].
    tables: Tensor,
}

impl Jpeg {
    /// Refuses a quality outside 1..=100 and images that are neither grey nor RGB.
    pub fn check(shape: [usize; 3], quality: u32) -> Result<(), OperatorError> {
        if !(1..=100).contains(&quality) {
            return Err(invalid(format!("--quality {quality} must be between 1 and 100")));
        }
        if shape[0] != 1 && shape[0] != 3 {
            return Err(invalid(format!(
                "images must be grey (1 channel) or RGB (3), not {} channels",
                shape[0]
            )));
        }
        Ok(())
    }

    /// The round trip at `quality` on images of `shape` [C, H, W].
    pub fn new(gpu: &Gpu, shape: [usize; 3], quality: u32) -> Result<Jpeg, OperatorError> {
        Jpeg::check(shape, quality)?;
        let tables = [scaled_table(&LUMINANCE, quality), scaled_table(&CHROMINANCE, quality)].concat();
        let [c, h, w] = shape;
        Ok(Jpeg {
            shape,
            layout: JpegLayout { c, h, w, exact: true },
            tables: Tensor::from_slice(gpu, "jpeg quantisers", &[2, 64], &tables)?,
        })
    }

    /// The encode -> quotients -> decoded planes chain for `n` images of x,
    /// libjpeg's (`exact`) or the stand-in's: (quotients, decoded planes,
    /// the plan filling both).
    fn decoded(&self, gpu: &Gpu, x: &Tensor, n: usize, exact: bool) -> Result<(Tensor, Tensor, Plan), OperatorError> {
        let per = [n, self.layout.per_image()];
        let planes = Tensor::zeros(gpu, "jpeg planes", &per)?;
        let quot = Tensor::zeros(gpu, "jpeg quotients", &per)?;
        let decoded = Tensor::zeros(gpu, "jpeg decoded planes", &per)?;
        let l = &JpegLayout { exact, ..self.layout };
        let mut plan = Plan::new();
        plan.push(l.dispatch(gpu, Stage::Encode, n, x, None, &planes)?);
        plan.push(l.dispatch(gpu, Stage::Fdct, n, &planes, Some(&self.tables), &quot)?);
        plan.push(l.dispatch(gpu, Stage::Idct, n, &quot, Some(&self.tables), &decoded)?);
        Ok((quot, decoded, plan))
    }
}

impl Operator for Jpeg {
    fn name(&self) -> &str {
        "jpeg"
    }
    fn in_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn out_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn forward(&self, gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(self.name(), x, self.shape, y, self.shape)?;
        let (_, decoded, mut plan) = self.decoded(gpu, x, n, true)?;
        plan.push(self.layout.dispatch(gpu, Stage::Decode, n, &decoded, None, y)?);
        Ok(plan)
    }
    fn vjp(&self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<Plan, OperatorError> {
        let n = check_pair(self.name(), x, self.shape, out, self.shape)?;
        check_pair(self.name(), v, self.shape, out, self.shape)?;
        // Linearised at the stand-in's decoding, so the clamps' masks are its own.
        let (quot, decoded, mut plan) = self.decoded(gpu, x, n, false)?;
        let l = &JpegLayout {
            exact: false,
            ..self.layout
        };
        let pixels = Tensor::zeros(gpu, "jpeg pixel cotangents", &x.shape)?;
        let per = [n, l.per_image()];
        let (g_planes, g_quot) = (
            Tensor::zeros(gpu, "jpeg plane cotangents", &per)?,
            Tensor::zeros(gpu, "jpeg quotient cotangents", &per)?,
        );
        plan.push(l.dispatch(gpu, Stage::DecodeT, n, &decoded, Some(v), &pixels)?);
        plan.push(l.dispatch(gpu, Stage::GatherT, n, &decoded, Some(&pixels), &g_planes)?);
        plan.push(l.dispatch(gpu, Stage::FdctT, n, &g_planes, Some(&quot), &g_quot)?);
        // The level-shifted planes' cotangents reuse the decoded ones' buffer.
        plan.push(l.dispatch(gpu, Stage::IdctT, n, &g_quot, Some(&self.tables), &g_planes)?);
        plan.push(l.dispatch(gpu, Stage::EncodeT, n, &g_planes, None, out)?);
        Ok(plan)
    }
    fn classical(&self, _gpu: &Gpu, ys: &[f32]) -> Result<Option<Classical>, OperatorError> {
        Ok(Some(Classical {
            x: ys.to_vec(),
            label: "the decoded JPEG itself (y)".into(),
        }))
    }
}
