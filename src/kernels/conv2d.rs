//! `shaders/conv2d.wgsl`: 2-D convolution + bias (+ residual) as an implicit
//! GEMM with shared-memory tiles and register blocking.

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, CONV2D};
use crate::tensor::Tensor;

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
    /// K elements per split (a multiple of TK; K when not split).
    pub k_split: u32,
    /// 1: the epilogue in place; > 1: f32 partial sums for the fix-up pass.
    pub splits: u32,
    pub _pad: u32,
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
            k_split: u(s.cin * s.ks * s.ks),
            splits: 1,
            _pad: 0,
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
    pub k_split: u32,
    pub splits: u32,
    /// log2(stride) when the stride is a power of two, else 32.
    pub stride_shift: u32,
    pub _pad: [u32; 3],
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
            k_split: u(s.cout * s.ks * s.ks),
            splits: 1,
            stride_shift: if s.stride.is_power_of_two() {
                s.stride.trailing_zeros()
            } else {
                32
            },
            _pad: [0; 3],
        }
    }
}

/// Capacity of each workgroup tile in floats (mirrors `MAX_TILE`): a tile
/// uses TK * (TM + 4) of them (one vec4 of padding per k row).
pub const MAX_TILE: u32 = 2048;
/// Per-thread loads per slice and the register block, at most (mirror
/// `MAX_LD`, `MAX_ACC`).
pub const MAX_LD: u32 = 8;
pub const MAX_ACC: u32 = 64;
/// Threads per workgroup of the split-K fix-up (mirrors `WG1`).
pub const WG_FIXUP: u32 = 256;

/// Workgroup geometry of the SIMT kernels: WG_M x WG_N threads, each owning
/// an RM x RN register block, TK-deep tiles. The output tile is
/// (WG_M * RM) x (WG_N * RN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTiles {
    pub wg_m: u32,
    pub wg_n: u32,
    pub tk: u32,
    /// Rows and columns per thread: 4 or 8.
    pub rm: u32,
    pub rn: u32,
}

impl ConvTiles {
    /// 128 x 128 outputs: 16 x 16 threads with 8 x 8 blocks, 8 deep (the
    /// large-GEMM family: twice the arithmetic per shared-memory load).
    pub const WIDE: ConvTiles = ConvTiles {
        wg_m: 16,
        wg_n: 16,
        tk: 8,
        rm: 8,
        rn: 8,
    };
    /// 128 x 128 outputs: 32 x 32 threads with 4 x 4 blocks, 8 deep (1024
    /// invocations).
    pub const LARGE: ConvTiles = ConvTiles {
        wg_m: 32,
        wg_n: 32,
        tk: 8,
        rm: 4,
        rn: 4,
    };
    /// 64 x 64 outputs: 16 x 16 threads, 16 deep (the default).
    pub const MEDIUM: ConvTiles = ConvTiles {
        wg_m: 16,
        wg_n: 16,
        tk: 16,
        rm: 4,
        rn: 4,
    };
    /// 32 x 32 outputs: 8 x 8 threads, 16 deep (fits any adapter).
    pub const SMALL: ConvTiles = ConvTiles {
        wg_m: 8,
        wg_n: 8,
        tk: 16,
        rm: 4,
        rn: 4,
    };
    /// Every family, largest first.
    pub const FAMILIES: [(&'static str, ConvTiles); 4] = [
        ("wide", Self::WIDE),
        ("large", Self::LARGE),
        ("medium", Self::MEDIUM),
        ("small", Self::SMALL),
    ];

    /// The family's name in [`Self::FAMILIES`], or "custom".
    pub fn name(&self) -> &'static str {
        Self::FAMILIES
            .iter()
            .find(|(_, t)| t == self)
            .map_or("custom", |(n, _)| n)
    }

    /// Whether the adapter's limits allow these tiles.
    pub fn fits(&self, gpu: &Gpu) -> bool {
        let l = &gpu.limits;
        l.max_compute_invocations_per_workgroup >= self.wg_m * self.wg_n
            && l.max_compute_workgroup_size_x >= self.wg_n
            && l.max_compute_workgroup_size_y >= self.wg_m
            && l.max_compute_workgroup_storage_size >= 2 * MAX_TILE * 4
    }

    /// The loaders assume every thread keeps fixed tile columns: the thread
    /// count must be a multiple of TK and of TN, TM a multiple of the rows
    /// one pass of the W loader covers, and the loads and blocks fit their
    /// register arrays.
    pub fn valid(&self) -> Result<(), String> {
        let threads = self.wg_m * self.wg_n;
        let ok = matches!(self.rm, 4 | 8)
            && matches!(self.rn, 4 | 8)
            && self.tk > 0
            && threads % self.tk == 0
            && threads % self.tn() == 0
            && self.tm() % (threads / self.tk) == 0
            && self.tm() / (threads / self.tk) <= MAX_LD
            && self.tk / (threads / self.tn()) <= MAX_LD
            && self.tk * (self.tm() + 4) <= MAX_TILE
            && self.tk * (self.tn() + 4) <= MAX_TILE;
        if ok {
            Ok(())
        } else {
            Err(format!("conv tiles {self:?} do not fit the loaders"))
        }
    }

    pub fn tm(&self) -> u32 {
        self.wg_m * self.rm
    }

    pub fn tn(&self) -> u32 {
        self.wg_n * self.rn
    }

    fn overrides(&self, round_f16: bool) -> Vec<(&'static str, f64)> {
        vec![
            ("WG_M", self.wg_m as f64),
            ("WG_N", self.wg_n as f64),
            ("TK", self.tk as f64),
            ("RM", self.rm as f64),
            ("RN", self.rn as f64),
            ("ROUND_F16", round_f16 as u32 as f64),
        ]
    }
}

/// How one convolution runs: the SIMT kernel with a tile family and a
/// split-K factor, or the cooperative-matrix (tensor-core) kernel. Chosen
/// once when a plan is built ([`crate::kernels::conv_choice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvKernel {
    pub tiles: ConvTiles,
    /// Workgroups along K; 1 runs the epilogue in place.
    pub splits: u32,
    /// Round the operands to f16 in the SIMT kernel (the cooperative path's
    /// numerics, emulated).
    pub round_f16: bool,
    /// The cooperative-matrix kernel (`conv2d_coop.wgsl`) instead of SIMT.
    pub coop: bool,
}

impl ConvKernel {
    /// The SIMT kernel with `tiles`, unsplit.
    pub const fn simt(tiles: ConvTiles) -> ConvKernel {
        ConvKernel {
            tiles,
            splits: 1,
            round_f16: false,
            coop: false,
        }
    }

    pub const fn split(self, splits: u32) -> ConvKernel {
        ConvKernel { splits, ..self }
    }

    /// (K elements per split, splits actually used) for a reduction of
    /// `kdim`: each split covers whole TK slices and none is empty.
    pub fn split_plan(&self, kdim: usize) -> (u32, u32) {
        let tk = self.k_step();
        let slices = (kdim as u32).div_ceil(tk).max(1);
        let per = slices.div_ceil(self.splits.clamp(1, slices));
        let k_split = per * tk;
        (k_split, (kdim as u32).div_ceil(k_split).max(1))
    }

    /// The K step of a workgroup: TK for SIMT, the fragment depth for the
    /// cooperative kernel.
    fn k_step(&self) -> u32 {
        if self.coop {
            crate::kernels::conv_coop::TK
        } else {
            self.tiles.tk
        }
    }

    /// Bytes of f32 partial sums a split run of a `rows` x `cols` GEMM
    /// needs (0 unsplit).
    pub fn scratch_bytes(&self, rows: usize, cols: usize, kdim: usize) -> u64 {
        let (_, splits) = self.split_plan(kdim);
        if splits > 1 {
            (splits as usize * rows * cols * 4) as u64
        } else {
            0
        }
    }

    /// Dispatches per convolution: the GEMM, plus the fix-up when split.
    pub fn dispatches(&self, kdim: usize) -> usize {
        1 + (self.split_plan(kdim).1 > 1) as usize
    }

    /// Workgroups of the GEMM dispatch for a `rows` x `cols` output.
    pub fn workgroups(&self, rows: usize, cols: usize, kdim: usize) -> u64 {
        let (tm, tn) = self.tile_mn();
        let (_, splits) = self.split_plan(kdim);
        (rows as u64).div_ceil(tm as u64) * (cols as u64).div_ceil(tn as u64) * splits as u64
    }

    fn tile_mn(&self) -> (u32, u32) {
        if self.coop {
            (crate::kernels::conv_coop::TM, crate::kernels::conv_coop::TN)
        } else {
            (self.tiles.tm(), self.tiles.tn())
        }
    }

    /// A short description: "medium", "wide/split4", "coop".
    pub fn describe(&self) -> String {
        let mut s = if self.coop {
            "coop".to_string()
        } else {
            self.tiles.name().to_string()
        };
        if self.splits > 1 {
            s += &format!("/split{}", self.splits);
        }
        if self.round_f16 && !self.coop {
            s += "/f16-operands";
        }
        s
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

bindings! {
    /// `conv2d` (and the cooperative `conv2d_coop`): the GEMM with its epilogue;
    /// `part` takes the split-K partials (y's buffer when unsplit).
    pub struct ConvFwd for CONV2D: ["conv2d"] {
        p: uniform,
        x: read T,
        wt: read T,
        bias: read T,
        res: read T,
        y: read_write T,
        part: read_write f32,
    }
    /// `conv2d_splitk`: the forward fix-up over the split-K partials.
    pub struct ConvFixup for CONV2D: ["conv2d_splitk"] {
        p: uniform,
        part: read f32,
        bias: read T,
        res: read T,
        y: read_write T,
    }
    /// `conv2d_bwd_data` (and `conv2d_coop_bwd_data`).
    pub struct ConvBwdData for CONV2D: ["conv2d_bwd_data"] {
        pb: uniform,
        dy: read T,
        wtb: read T,
        dx: read_write T,
        bpart: read_write f32,
    }
    /// `conv2d_bwd_splitk`: the input-gradient fix-up.
    pub struct ConvBwdFixup for CONV2D: ["conv2d_bwd_splitk"] {
        pb: uniform,
        part: read f32,
        dx: read_write T,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[ConvFwd::SIG, ConvFixup::SIG, ConvBwdData::SIG, ConvBwdFixup::SIG];

/// The operands of one forward convolution,
/// y = out_scale (conv(x, W) + b + residual). Weights and bias are (buffer, element offset) into the
/// weight arena; `dummy` is bound where no residual is read; `scratch` holds
/// the split-K partials ([`ConvKernel::scratch_bytes`]) and may be `None`
/// when unsplit. The dtype is x's.
pub struct ConvForward<'a> {
    pub x: &'a Tensor,
    pub w: (&'a wgpu::Buffer, usize),
    pub b: (&'a wgpu::Buffer, usize),
    pub res: ConvResidual<'a>,
    pub out_scale: f32,
    pub y: &'a Tensor,
    pub dummy: &'a wgpu::Buffer,
    pub scratch: Option<&'a wgpu::Buffer>,
}

impl ConvForward<'_> {
    /// The buffer bound as the residual (the dummy when there is none).
    fn res_buffer(&self) -> &wgpu::Buffer {
        match self.res {
            ConvResidual::None => self.dummy,
            ConvResidual::Full(buf, _) | ConvResidual::Channel(buf, ..) => buf,
        }
    }
}

/// The operands of the input gradient of a convolution: dx (+)= scale *
/// conv_transpose(dy, W). The dtype is dy's.
pub struct ConvBackward<'a> {
    pub dy: &'a Tensor,
    pub w: (&'a wgpu::Buffer, usize),
    pub scale: f32,
    /// Add into dx instead of overwriting it.
    pub accumulate: bool,
    pub dx: &'a Tensor,
    pub scratch: Option<&'a wgpu::Buffer>,
}

/// The split-K fix-up dispatch `entry` over `outputs` elements; the SIMT and
/// cooperative GEMMs share it.
fn splitk_fixup<B: Bindings>(gpu: &Gpu, entry: &str, b: &B, outputs: usize) -> Result<Dispatch, GpuError> {
    Dispatch::typed(
        gpu,
        entry,
        &[("WG1", WG_FIXUP as f64)],
        b,
        dispatch_groups(outputs, WG_FIXUP),
    )
}

/// The split-K scratch a kernel needs, or an error naming the layer when the
/// caller gave none (or too little).
fn split_scratch<'a>(
    kernel: &ConvKernel,
    what: &str,
    rows: usize,
    cols: usize,
    kdim: usize,
    scratch: Option<&'a wgpu::Buffer>,
) -> Result<Option<&'a wgpu::Buffer>, GpuError> {
    let need = kernel.scratch_bytes(rows, cols, kdim);
    if need == 0 {
        return Ok(None);
    }
    match scratch {
        Some(b) if b.size() >= need => Ok(Some(b)),
        _ => Err(GpuError::Other(format!(
            "{what}: split-K over {} needs {need} bytes of scratch, got {}",
            kernel.splits,
            scratch.map_or(0, |b| b.size())
        ))),
    }
}

/// Checks that `t` holds the `numel` elements of a [`Conv2dShape`] side.
fn check_len(what: &str, t: &Tensor, numel: usize) -> Result<(), GpuError> {
    if t.numel() < numel {
        return Err(GpuError::Other(format!(
            "{what}: tensor {:?} holds {} elements, the convolution's shape needs {numel}",
            t.shape,
            t.numel()
        )));
    }
    Ok(())
}

/// The SIMT GEMM `entry` over a [rows, pixels] output in `splits` K-slices.
fn simt_gemm<B: Bindings>(
    gpu: &Gpu,
    kernel: &ConvKernel,
    entry: &str,
    [rows, pixels]: [usize; 2],
    splits: u32,
    b: &B,
) -> Result<Dispatch, GpuError> {
    kernel.tiles.valid().map_err(GpuError::Other)?;
    let t = &kernel.tiles;
    let groups = [(pixels as u32).div_ceil(t.tn()), (rows as u32).div_ceil(t.tm()), splits];
    Dispatch::typed(gpu, entry, &t.overrides(kernel.round_f16), b, groups)
}

/// One direction of the convolution's GEMM, forward ([`ConvForward`]) or
/// input gradient ([`ConvBackward`]): what [`launch`] needs to plan either.
trait GemmPass {
    type Gemm<'a>: Bindings
    where
        Self: 'a;
    /// The SIMT entry point (and the errors' label), and the index of the
    /// cooperative one's signature in [`crate::kernels::conv_coop::BINDINGS`].
    const ENTRY: &'static str;
    const COOP: usize;
    /// [output rows, pixels, K] of the GEMM at `s`, once the operands are
    /// checked against it.
    fn gemm_dims(&self, s: &Conv2dShape) -> Result<[usize; 3], GpuError>;
    /// The parameter uniform with K split as [`ConvKernel::split_plan`] says.
    fn params(&self, gpu: &Gpu, s: &Conv2dShape, split: (u32, u32)) -> wgpu::Buffer;
    /// The GEMM's bindings, with `part` (or the output's buffer when unsplit).
    fn gemm<'a>(&'a self, u: &'a wgpu::Buffer, part: Option<&'a wgpu::Buffer>) -> Self::Gemm<'a>;
    /// The split-K fix-up's dispatch over the `outputs` elements.
    fn fixup(&self, gpu: &Gpu, u: &wgpu::Buffer, part: &wgpu::Buffer, outputs: usize) -> Result<Dispatch, GpuError>;
}

impl GemmPass for ConvForward<'_> {
    type Gemm<'a>
        = ConvFwd<'a>
    where
        Self: 'a;
    const ENTRY: &'static str = "conv2d";
    const COOP: usize = 0;

    fn gemm_dims(&self, s: &Conv2dShape) -> Result<[usize; 3], GpuError> {
        let (ho, wo) = s.out_hw();
        let pixels = s.n * ho * wo;
        check_len("conv2d x", self.x, s.n * s.cin * s.h * s.w)?;
        check_len("conv2d y", self.y, s.cout * pixels)?;
        Ok([s.cout, pixels, s.cin * s.ks * s.ks])
    }

    fn params(&self, gpu: &Gpu, s: &Conv2dShape, split: (u32, u32)) -> wgpu::Buffer {
        let mut params = Conv2dParams::forward(s, self.w.1, self.b.1, &self.res, self.out_scale);
        (params.k_split, params.splits) = split;
        gpu.uniform("conv2d params", &params)
    }

    fn gemm<'a>(&'a self, u: &'a wgpu::Buffer, part: Option<&'a wgpu::Buffer>) -> ConvFwd<'a> {
        ConvFwd {
            p: u,
            x: self.x,
            wt: self.w.0,
            bias: self.b.0,
            res: self.res_buffer(),
            y: self.y,
            part: part.unwrap_or(&self.y.buffer),
        }
    }

    fn fixup(&self, gpu: &Gpu, u: &wgpu::Buffer, part: &wgpu::Buffer, outputs: usize) -> Result<Dispatch, GpuError> {
        let b = ConvFixup {
            p: u,
            part,
            bias: self.b.0,
            res: self.res_buffer(),
            y: self.y,
        };
        splitk_fixup(gpu, "conv2d_splitk", &b, outputs)
    }
}

impl GemmPass for ConvBackward<'_> {
    type Gemm<'a>
        = ConvBwdData<'a>
    where
        Self: 'a;
    const ENTRY: &'static str = "conv2d_bwd_data";
    const COOP: usize = 1;

    fn gemm_dims(&self, s: &Conv2dShape) -> Result<[usize; 3], GpuError> {
        let (ho, wo) = s.out_hw();
        let pixels = s.n * s.h * s.w;
        check_len("conv2d_bwd_data dy", self.dy, s.n * s.cout * ho * wo)?;
        check_len("conv2d_bwd_data dx", self.dx, s.cin * pixels)?;
        Ok([s.cin, pixels, s.cout * s.ks * s.ks])
    }

    fn params(&self, gpu: &Gpu, s: &Conv2dShape, split: (u32, u32)) -> wgpu::Buffer {
        let mut params = Conv2dBwdDataParams::backward_data(s, self.w.1, self.scale, self.accumulate);
        (params.k_split, params.splits) = split;
        gpu.uniform("conv2d bwd params", &params)
    }

    fn gemm<'a>(&'a self, u: &'a wgpu::Buffer, part: Option<&'a wgpu::Buffer>) -> ConvBwdData<'a> {
        ConvBwdData {
            pb: u,
            dy: self.dy,
            wtb: self.w.0,
            dx: self.dx,
            bpart: part.unwrap_or(&self.dx.buffer),
        }
    }

    fn fixup(&self, gpu: &Gpu, u: &wgpu::Buffer, part: &wgpu::Buffer, outputs: usize) -> Result<Dispatch, GpuError> {
        let b = ConvBwdFixup {
            pb: u,
            part,
            dx: self.dx,
        };
        splitk_fixup(gpu, "conv2d_bwd_splitk", &b, outputs)
    }
}

/// One GEMM dispatch (SIMT or cooperative), or two when split (the GEMM,
/// then the fix-up into the caller's `scratch`).
fn launch<P: GemmPass>(
    gpu: &Gpu,
    kernel: &ConvKernel,
    s: &Conv2dShape,
    op: &P,
    scratch: Option<&wgpu::Buffer>,
) -> Result<Vec<Dispatch>, GpuError> {
    let [rows, pixels, kdim] = op.gemm_dims(s)?;
    let split = kernel.split_plan(kdim);
    let part = split_scratch(kernel, P::ENTRY, rows, pixels, kdim, scratch)?;
    let u = op.params(gpu, s, split);
    let b = op.gemm(&u, part);
    let gemm = if kernel.coop {
        let sig = &crate::kernels::conv_coop::BINDINGS[P::COOP];
        crate::kernels::conv_coop::gemm(gpu, sig, &b.values(), [rows, pixels], split.1)?
    } else {
        simt_gemm(gpu, kernel, P::ENTRY, [rows, pixels], split.1, &b)?
    };
    let mut out = vec![gemm];
    if let Some(part) = part {
        out.push(op.fixup(gpu, &u, part, rows * pixels)?);
    }
    Ok(out)
}

/// One planned convolution ([`ConvForward`]): one dispatch, or two when
/// split (the GEMM, then the fix-up).
pub fn conv2d(
    gpu: &Gpu,
    kernel: &ConvKernel,
    s: &Conv2dShape,
    op: &ConvForward<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    launch(gpu, kernel, s, op, op.scratch)
}

/// The input gradient of [`conv2d`] ([`ConvBackward`]); `s` is the forward
/// shape, dy is [n, cout, ho, wo], dx [n, cin, h, w]. One dispatch, or two
/// when split.
pub fn conv2d_bwd_data(
    gpu: &Gpu,
    kernel: &ConvKernel,
    s: &Conv2dShape,
    op: &ConvBackward<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    launch(gpu, kernel, s, op, op.scratch)
}
