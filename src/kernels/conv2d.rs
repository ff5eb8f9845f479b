//! `shaders/conv2d.wgsl`: 2-D convolution + bias (+ residual) as an implicit
//! GEMM with shared-memory tiles and register blocking.

use crate::gpu::{Dispatch, Gpu, GpuError, CONV2D};
use crate::tensor::DType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Conv2dParams {
    pub n: u32,
    pub cin: u32,
    pub h: u32,
    pub w: u32,
    pub cout: u32,
    pub ho: u32,
    pub wo: u32,
    pub ks: u32,
    pub stride: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub w_off: u32,
    pub b_off: u32,
    pub res_mode: u32,
    pub res_off: u32,
    pub res_stride: u32,
    pub out_scale: f32,
    pub _pad: [u32; 3],
}

impl Conv2dParams {
    /// The forward convolution of shape `s`: weights at `w_off`, bias at
    /// `b_off`, the residual's mode and offsets from `res`.
    pub fn forward(
        s: &Conv2dShape,
        w_off: usize,
        b_off: usize,
        res: &ConvResidual<'_>,
        out_scale: f32,
    ) -> Conv2dParams {
        let (ho, wo) = s.out_hw();
        let (res_mode, res_off, res_stride) = match *res {
            ConvResidual::None => (0, 0, 0),
            ConvResidual::Full(_, off) => (1, off, 0),
            ConvResidual::Channel(_, off, stride) => (2, off, stride),
        };
        let u = |v: usize| v as u32;
        Conv2dParams {
            n: u(s.n),
            cin: u(s.cin),
            h: u(s.h),
            w: u(s.w),
            cout: u(s.cout),
            ho: u(ho),
            wo: u(wo),
            ks: u(s.ks),
            stride: u(s.stride),
            pad_top: u(s.pad[0]),
            pad_left: u(s.pad[1]),
            w_off: u(w_off),
            b_off: u(b_off),
            res_mode,
            res_off: u(res_off),
            res_stride: u(res_stride),
            out_scale,
            _pad: [0; 3],
        }
    }
}

/// Mirrors `BwdDataParams` in shaders/conv2d.wgsl: the forward geometry and
/// the input-gradient epilogue dx (+)= scale * conv_transpose(dy, W).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Conv2dBwdDataParams {
    pub n: u32,
    pub cin: u32,
    pub h: u32,
    pub w: u32,
    pub cout: u32,
    pub ho: u32,
    pub wo: u32,
    pub ks: u32,
    pub stride: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub w_off: u32,
    /// 1: dx += scale * ..., 0: dx = scale * ...
    pub accumulate: u32,
    pub scale: f32,
    pub _pad: [u32; 2],
}

impl Conv2dBwdDataParams {
    /// The input gradient of the forward convolution of shape `s`.
    pub fn backward_data(s: &Conv2dShape, w_off: usize, scale: f32, accumulate: bool) -> Conv2dBwdDataParams {
        let (ho, wo) = s.out_hw();
        let u = |v: usize| v as u32;
        Conv2dBwdDataParams {
            n: u(s.n),
            cin: u(s.cin),
            h: u(s.h),
            w: u(s.w),
            cout: u(s.cout),
            ho: u(ho),
            wo: u(wo),
            ks: u(s.ks),
            stride: u(s.stride),
            pad_top: u(s.pad[0]),
            pad_left: u(s.pad[1]),
            w_off: u(w_off),
            accumulate: accumulate as u32,
            scale,
            _pad: [0; 2],
        }
    }
}

/// Register block per thread (mirrors `RM`, `RN` in the WGSL).
pub const RM: u32 = 4;
pub const RN: u32 = 4;
/// Capacity of each shared tile in floats (mirrors `MAX_TILE`).
pub const MAX_TILE: u32 = 2048;

/// Workgroup geometry: WG_M x WG_N threads, TK-deep tiles. The output tile
/// is (WG_M * RM) x (WG_N * RN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvTiles {
    pub wg_m: u32,
    pub wg_n: u32,
    pub tk: u32,
}

impl ConvTiles {
    /// 128 x 128 outputs: 32 x 32 threads, 16 deep (1024 invocations).
    pub const LARGE: ConvTiles = ConvTiles {
        wg_m: 32,
        wg_n: 32,
        tk: 16,
    };
    /// 64 x 64 outputs: 16 x 16 threads, 16 deep (the default).
    pub const MEDIUM: ConvTiles = ConvTiles {
        wg_m: 16,
        wg_n: 16,
        tk: 16,
    };
    /// 32 x 32 outputs: 8 x 8 threads, 16 deep (fits any adapter).
    pub const SMALL: ConvTiles = ConvTiles {
        wg_m: 8,
        wg_n: 8,
        tk: 16,
    };

    /// Whether the adapter's limits allow these tiles.
    pub fn fits(&self, gpu: &Gpu) -> bool {
        let l = &gpu.limits;
        l.max_compute_invocations_per_workgroup >= self.wg_m * self.wg_n
            && l.max_compute_workgroup_size_x >= self.wg_n
            && l.max_compute_workgroup_size_y >= self.wg_m
            && l.max_compute_workgroup_storage_size >= 2 * MAX_TILE * 4
    }

    /// The default tiles where the adapter's limits allow them.
    pub fn for_gpu(gpu: &Gpu) -> ConvTiles {
        if Self::MEDIUM.fits(gpu) {
            Self::MEDIUM
        } else {
            Self::SMALL
        }
    }

    /// Tiles for a GEMM of `rows` x `cols` outputs: the default, or 32 x 32
    /// where 64 x 64 would leave too few workgroups to fill a big GPU (the 8x8
    /// and 16x16 levels of a 256 px U-Net) or pad the GEMM by more than 30%
    /// (few output channels). LARGE is measured by benches/unet.rs but not
    /// chosen until hardware shows it pays. The thresholds are a first guess,
    /// not yet tuned on hardware.
    pub fn for_gemm(gpu: &Gpu, rows: usize, cols: usize) -> ConvTiles {
        let t = Self::for_gpu(gpu);
        let (gr, gc) = ((rows as u32).div_ceil(t.tm()), (cols as u32).div_ceil(t.tn()));
        let padded = (gr * t.tm()) as f64 * (gc * t.tn()) as f64;
        if gr * gc >= 128 && padded <= 1.3 * (rows * cols) as f64 {
            t
        } else {
            Self::SMALL
        }
    }

    /// The loaders assume every thread keeps fixed tile columns: the thread
    /// count must be a multiple of TK and of TN (so WG_M a multiple of RN).
    fn check(&self) {
        let threads = self.wg_m * self.wg_n;
        assert!(
            threads % self.tk == 0 && threads % self.tn() == 0,
            "conv tiles {self:?} do not fit the loaders"
        );
        assert!(
            self.tk * self.tm() <= MAX_TILE && self.tk * self.tn() <= MAX_TILE,
            "conv tiles {self:?} exceed MAX_TILE"
        );
    }

    pub fn tm(&self) -> u32 {
        self.wg_m * RM
    }

    pub fn tn(&self) -> u32 {
        self.wg_n * RN
    }

    fn overrides(&self) -> [(&'static str, f64); 3] {
        [
            ("WG_M", self.wg_m as f64),
            ("WG_N", self.wg_n as f64),
            ("TK", self.tk as f64),
        ]
    }
}

/// Shape of one convolution: x [n, cin, h, w] -> y [n, cout, ho, wo].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dShape {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub ks: usize,
    pub stride: usize,
    /// [top, left, bottom, right]
    pub pad: [usize; 4],
}

impl Conv2dShape {
    pub fn out_hw(&self) -> (usize, usize) {
        let ho = (self.h + self.pad[0] + self.pad[2] - self.ks) / self.stride + 1;
        let wo = (self.w + self.pad[1] + self.pad[3] - self.ks) / self.stride + 1;
        (ho, wo)
    }

    pub fn flops(&self) -> f64 {
        let (ho, wo) = self.out_hw();
        2.0 * (self.n * self.cout * ho * wo * self.cin * self.ks * self.ks) as f64
    }
}

/// What the epilogue adds before scaling.
pub enum ConvResidual<'a> {
    None,
    /// A tensor shaped like y: (buffer, element offset).
    Full(&'a wgpu::Buffer, usize),
    /// A per-(n, cout) vector: (buffer, element offset, per-sample stride).
    Channel(&'a wgpu::Buffer, usize, usize),
}

/// One planned convolution. `dummy` is bound where no residual is read.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    gpu: &Gpu,
    dtype: DType,
    tiles: &ConvTiles,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    w: (&wgpu::Buffer, usize),
    b: (&wgpu::Buffer, usize),
    res: ConvResidual<'_>,
    out_scale: f32,
    y: &wgpu::Buffer,
    dummy: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let (ho, wo) = s.out_hw();
    let params = Conv2dParams::forward(s, w.1, b.1, &res, out_scale);
    let res_buf = match res {
        ConvResidual::None => dummy,
        ConvResidual::Full(buf, _) | ConvResidual::Channel(buf, ..) => buf,
    };
    tiles.check();
    let pixels = (s.n * ho * wo) as u32;
    let groups = [pixels.div_ceil(tiles.tn()), (s.cout as u32).div_ceil(tiles.tm()), 1];
    let u = gpu.uniform("conv2d params", &params);
    Dispatch::new(
        gpu,
        &CONV2D.typed(dtype),
        "conv2d",
        &tiles.overrides(),
        &[&u, x, w.0, b.0, res_buf, y],
        groups,
    )
}

/// The input gradient of [`conv2d`]: dx (+)= scale * conv_transpose(dy, W).
/// `s` is the forward shape; dy is [n, cout, ho, wo], dx [n, cin, h, w].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bwd_data(
    gpu: &Gpu,
    dtype: DType,
    tiles: &ConvTiles,
    s: &Conv2dShape,
    dy: &wgpu::Buffer,
    w: (&wgpu::Buffer, usize),
    scale: f32,
    accumulate: bool,
    dx: &wgpu::Buffer,
) -> Result<Dispatch, GpuError> {
    let params = Conv2dBwdDataParams::backward_data(s, w.1, scale, accumulate);
    tiles.check();
    let pixels = (s.n * s.h * s.w) as u32;
    let groups = [pixels.div_ceil(tiles.tn()), (s.cin as u32).div_ceil(tiles.tm()), 1];
    let u = gpu.uniform("conv2d bwd params", &params);
    Dispatch::new(
        gpu,
        &CONV2D.typed(dtype),
        "conv2d_bwd_data",
        &tiles.overrides(),
        &[&u, dy, w.0, dx],
        groups,
    )
}
