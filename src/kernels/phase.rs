//! `shaders/phase.wgsl`: the elementwise pieces of phase retrieval around the
//! FFT: zero-padding a real image into complex planes, the modulus, the VJP's
//! phase-weighted cotangent v z / |z|, and the real part of the crop.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, PHASE, WG1D};
use crate::tensor::Tensor;

bindings! {
    /// `embed_pad`, `modulus`, `crop_real`, `hio_update`: dst = f(src) (and dst).
    pub struct PhaseMap for PHASE: ["embed_pad", "modulus", "crop_real", "hio_update"] {
        p: uniform,
        src: read f32,
        dst: read_write f32,
    }
    /// `phase_weight`: wout = v z / |z|.
    pub struct PhaseWeight for PHASE: ["phase_weight"] {
        p: uniform,
        z: read f32,
        v: read f32,
        wout: read_write f32,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[PhaseMap::SIG, PhaseWeight::SIG];

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PhaseParams {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub ph: u32,
    pub pw: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub keep: f32,
    pub beta: f32,
    pub _pad: [u32; 3],
}

/// One image plane [H, W] and its zero-padded plane [H + 2 pad_h, W + 2 pad_w].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    pub h: usize,
    pub w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl Padding {
    /// The padded plane's sides.
    pub fn padded(&self) -> [usize; 2] {
        [self.h + 2 * self.pad_h, self.w + 2 * self.pad_w]
    }

    fn params(&self, threads: usize) -> PhaseParams {
        let [ph, pw] = self.padded();
        PhaseParams {
            n: threads as u32,
            h: self.h as u32,
            w: self.w as u32,
            ph: ph as u32,
            pw: pw as u32,
            pad_h: self.pad_h as u32,
            pad_w: self.pad_w as u32,
            keep: 0.0,
            beta: 0.0,
            _pad: [0; 3],
        }
    }

    /// One `entry` over `threads` outputs, after checking `src` and `dst` hold
    /// `src_len` and `dst_len` values.
    fn map(
        &self,
        gpu: &Gpu,
        entry: &str,
        src: &Tensor,
        dst: &Tensor,
        (src_len, dst_len): (usize, usize),
        params: PhaseParams,
    ) -> Result<Dispatch, GpuError> {
        check(entry, src, src_len)?;
        check(entry, dst, dst_len)?;
        let p = gpu.uniform("phase params", &params);
        let threads = params.n as usize;
        Dispatch::typed(
            gpu,
            entry,
            &[],
            &PhaseMap { p: &p, src, dst },
            dispatch_groups(threads, WG1D),
        )
    }

    fn planes_of(&self, x: &Tensor) -> usize {
        x.numel() / (self.h * self.w).max(1)
    }

    /// z [planes, PH, PW, 2] = pad(x) for x [planes, H, W] (any leading dims).
    pub fn embed(&self, gpu: &Gpu, x: &Tensor, z: &Tensor) -> Result<Dispatch, GpuError> {
        let planes = self.planes_of(x);
        let [ph, pw] = self.padded();
        let m = planes * ph * pw;
        self.map(
            gpu,
            "embed_pad",
            x,
            z,
            (planes * self.h * self.w, 2 * m),
            self.params(m),
        )
    }

    /// y [planes, PH, PW] = |z|.
    pub fn modulus(&self, gpu: &Gpu, z: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
        let m = y.numel();
        self.map(gpu, "modulus", z, y, (2 * m, m), self.params(m))
    }

    /// out [planes, H, W] = Re(u) on the image's window of u [planes, PH, PW, 2].
    pub fn crop_real(&self, gpu: &Gpu, u: &Tensor, out: &Tensor) -> Result<Dispatch, GpuError> {
        let planes = self.planes_of(out);
        let [ph, pw] = self.padded();
        let n = planes * self.h * self.w;
        self.map(gpu, "crop_real", u, out, (2 * planes * ph * pw, n), self.params(n))
    }

    /// One hybrid input-output update of g [planes, PH, PW] from g' (same
    /// shape): g <- g' where g' is inside the image's window and in [-1, 1],
    /// else keep g - beta g'; with keep = 0, error reduction: g' projected
    /// onto the constraints (clamped inside the window, 0 outside).
    pub fn hio_update(
        &self,
        gpu: &Gpu,
        g_prime: &Tensor,
        g: &Tensor,
        keep: f32,
        beta: f32,
    ) -> Result<Dispatch, GpuError> {
        let m = g.numel();
        let params = PhaseParams {
            keep,
            beta,
            ..self.params(m)
        };
        self.map(gpu, "hio_update", g_prime, g, (m, m), params)
    }

    /// wout = v z / |z| (0 where z = 0), v [planes, PH, PW] real, z and wout complex.
    pub fn phase_weight(&self, gpu: &Gpu, z: &Tensor, v: &Tensor, wout: &Tensor) -> Result<Dispatch, GpuError> {
        let m = v.numel();
        check("phase_weight", z, 2 * m)?;
        check("phase_weight", wout, 2 * m)?;
        let p = gpu.uniform("phase params", &self.params(m));
        Dispatch::typed(
            gpu,
            "phase_weight",
            &[],
            &PhaseWeight { p: &p, z, v, wout },
            dispatch_groups(m, WG1D),
        )
    }
}

fn check(what: &str, t: &Tensor, len: usize) -> Result<(), GpuError> {
    if t.numel() != len {
        return Err(GpuError::Other(format!(
            "{what}: tensor of shape {:?} should hold {len} values",
            t.shape
        )));
    }
    Ok(())
}
