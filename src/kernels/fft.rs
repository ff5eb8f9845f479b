//! `shaders/fft.wgsl`: batched 2-D complex FFT (f32) of any side, forward or
//! inverse, with optional orthonormal scaling and fftshift / ifftshift folded
//! into the passes (phase retrieval measures |fftshift(F pad(x))| and its VJP
//! runs F^H after the ifftshift).
//!
//! Every length takes the same path: n is factored into primes (pairs of 2s
//! merged into radix 4) and each factor R is one Stockham pass of n / R
//! direct R-point DFTs per line, so a line costs n * (sum of the factors)
//! complex multiply-adds: 2/3/5/7-smooth sides (48 = 4*4*3: 11 per element)
//! are fast, and a prime side p costs p per element (the direct DFT; 127 per
//! element at 127). There is no Bluestein stage: the sides phase retrieval
//! pads to (side * 1.5: 48, 42, 96, 384) are 7-smooth, and for a prime up to
//! about 130 one direct pass costs about what a chirp-z convolution through
//! three padded power-of-two transforms would; Bluestein would pay only for
//! prime factors in the hundreds and up. Twiddles are read from an
//! f64-computed table at an exact index (k * j mod n), so the error stays at
//! the f32 rounding of the sums, for every n.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, Plan, FFT, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// `fft_pass`: one radix-R Stockham pass along one axis.
    pub struct FftPass for FFT: ["fft_pass"] {
        p: uniform,
        tw: read f32,
        x: read f32,
        y: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[FftPass::SIG];

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FftParams {
    pub n: u32,
    pub radix: u32,
    pub ns: u32,
    pub inner: u32,
    pub total: u32,
    pub inverse: u32,
    pub shift_in: u32,
    pub shift_out: u32,
    pub scale: f32,
    pub _pad: [u32; 3],
}

/// How the transform is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// numpy's default: forward unscaled, inverse by 1 / (H W).
    Backward,
    /// Both directions by 1 / sqrt(H W): unitary, so the inverse is the adjoint.
    Ortho,
}

/// Direction, scaling and the centring shifts of one transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FftOptions {
    pub inverse: bool,
    pub norm: Norm,
    /// Apply ifftshift to the input (both axes) before transforming.
    pub ishift_input: bool,
    /// Apply fftshift to the output (both axes) after transforming.
    pub shift_output: bool,
}

impl FftOptions {
    /// A plain transform: no shifts.
    pub fn new(inverse: bool, norm: Norm) -> FftOptions {
        FftOptions {
            inverse,
            norm,
            ishift_input: false,
            shift_output: false,
        }
    }
}

/// The radices of a length-n transform: its prime factors with pairs of 2s
/// merged into 4s (fewer passes, same work); [1] for n = 1.
pub fn radices(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = n;
    while rest % 4 == 0 {
        out.push(4);
        rest /= 4;
    }
    let mut f = 2;
    while f * f <= rest {
        while rest % f == 0 {
            out.push(f);
            rest /= f;
        }
        f += 1;
    }
    if rest > 1 {
        out.push(rest);
    }
    if out.is_empty() {
        out.push(1);
    }
    out
}

/// exp(2 pi i t / n) for t in 0..n as interleaved (cos, sin), computed in f64.
fn twiddles(n: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|t| {
            let a = std::f64::consts::TAU * t as f64 / n as f64;
            [a.cos() as f32, a.sin() as f32]
        })
        .collect()
}

/// out = FFT2(x) for x an [N, H, W, 2] f32 tensor (complex, re and im
/// interleaved), transforming the H and W axes of each of the N planes.
pub struct Fft2 {
    pub out: Tensor,
    pub plan: Plan,
    _buffers: Vec<wgpu::Buffer>,
}

impl Fft2 {
    pub fn new(gpu: &Gpu, x: &Tensor, opts: FftOptions) -> Result<Fft2, GpuError> {
        let [planes, h, w, two] = x.shape[..] else {
            return Err(GpuError::Other(format!(
                "fft2: input must be [N, H, W, 2] (complex), got {:?}",
                x.shape
            )));
        };
        if two != 2 || planes * h * w == 0 {
            return Err(GpuError::Other(format!(
                "fft2: input must be [N, H, W, 2] with N, H, W >= 1, got {:?}",
                x.shape
            )));
        }
        // (axis length, element stride); an axis of length 1 is the identity
        // unless both are, when one pass of radix 1 copies x to out.
        let axes: Vec<(usize, usize)> = [(w, 1), (h, w)].into_iter().filter(|&(n, _)| n > 1).collect();
        let axes = if axes.is_empty() { vec![(1, 1)] } else { axes };
        let mut passes = Vec::new();
        let mut buffers = Vec::new();
        for &(n, inner) in &axes {
            let tw = gpu.upload("fft twiddles", &twiddles(n))?;
            let rs = radices(n);
            let scale: f64 = match (opts.norm, opts.inverse) {
                (Norm::Ortho, _) => 1.0 / (n as f64).sqrt(),
                (Norm::Backward, true) => 1.0 / n as f64,
                (Norm::Backward, false) => 1.0,
            };
            let half = (n / 2) as u32;
            let mut ns = 1;
            for (i, &r) in rs.iter().enumerate() {
                let last = i + 1 == rs.len();
                let params = FftParams {
                    n: n as u32,
                    radix: r as u32,
                    ns: ns as u32,
                    inner: inner as u32,
                    total: (planes * h * w / r) as u32,
                    inverse: opts.inverse as u32,
                    shift_in: if i == 0 && opts.ishift_input { half } else { 0 },
                    shift_out: if last && opts.shift_output { half } else { 0 },
                    scale: if last { scale as f32 } else { 1.0 },
                    _pad: [0; 3],
                };
                passes.push((params, buffers.len()));
                ns *= r;
            }
            buffers.push(tw);
        }
        let out = Tensor::zeros(gpu, "fft out", &x.shape)?;
        let tmp = if passes.len() > 1 {
            Some(Tensor::zeros(gpu, "fft scratch", &x.shape)?)
        } else {
            None
        };
        // Pass i writes `out` when an even number of passes follow it, so the
        // last one lands there; reads alternate accordingly.
        let count = passes.len();
        let dst: Vec<&Tensor> = (0..count)
            .map(|i| match &tmp {
                Some(t) if (count - 1 - i) % 2 == 1 => t,
                _ => &out,
            })
            .collect();
        let mut plan = Plan::new();
        for (i, (params, tw)) in passes.iter().enumerate() {
            let ubuf = gpu.uniform("fft params", params);
            let src = if i == 0 { x } else { dst[i - 1] };
            plan.push(Dispatch::typed(
                gpu,
                "fft_pass",
                &[],
                &FftPass {
                    p: &ubuf,
                    tw: &buffers[*tw],
                    x: src,
                    y: dst[i],
                },
                dispatch_groups(params.total as usize, WG1D),
            )?);
        }
        if let Some(t) = tmp {
            buffers.push(t.buffer);
        }
        Ok(Fft2 {
            out,
            plan,
            _buffers: buffers,
        })
    }
}
