//! `shaders/attention.wgsl`: fused multi-head self-attention from a qkv tensor.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::bindings;
use crate::gpu::{dispatch_groups, Bindings, Dispatch, Gpu, GpuError, KernelSig, Shader, ATTENTION};
use crate::tensor::{DType, Tensor};

bindings! {
    /// The forward pass: y and the log-sum-exps from qkv.
    pub struct Forward for ATTENTION: ["attention"] {
        p: uniform,
        qkv: read T,
        y: read_write T,
        lse: read_write f32,
    }
    /// Backward, 1/3: D = rowsum(dy (.) y) per query.
    pub struct BwdD for ATTENTION: ["attn_bwd_d"] {
        pb: uniform,
        dy: read T,
        y: read T,
        out: read_write f32,
    }
    /// Backward, 2/3 and 3/3: the query, then the key and value gradients.
    pub struct BwdTiled for ATTENTION: ["attn_bwd_q", "attn_bwd_kv"] {
        pb: uniform,
        qkv_b: read T,
        lse_b: read f32,
        dy: read T,
        dsum_r: read f32,
        dqkv: read_write T,
    }
}

/// The binding signatures of this module's kernels (checked by `tests/bindings.rs`).
pub const BINDINGS: &[KernelSig] = &[Forward::SIG, BwdD::SIG, BwdTiled::SIG];

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub n: u32,
    pub heads: u32,
    pub ch: u32,
    pub t: u32,
    pub order: u32,
    pub scale_q: f32,
    pub scale_k: f32,
    pub accumulate: u32,
}

impl AttentionParams {
    /// The attention of shape `s`; `accumulate` (backward only) adds into dqkv.
    pub fn new(s: &AttentionShape, accumulate: bool) -> AttentionParams {
        AttentionParams {
            n: s.n as u32,
            heads: s.heads as u32,
            ch: s.ch as u32,
            t: s.t as u32,
            order: s.split_order as u32,
            scale_q: s.scale_q,
            scale_k: s.scale_k,
            accumulate: accumulate as u32,
        }
    }
}

/// The widest channel block one workgroup owns (mirrors `BLOCK`): a head of up
/// to `BLOCK` channels is one block of its width rounded up to [`LANES`]; a
/// wider one is split into `ceil(ch / BLOCK)` blocks of `BLOCK` channels on
/// separate workgroups, each recomputing the scores over all channels.
pub const BLOCK: usize = 64;
/// Threads per workgroup (mirrors `WG`): [`ROWS`] rows x [`LANES`] lanes.
pub const WG: u32 = 64;
/// Threads sharing one row (query or key) of a tile (mirrors `LANES`).
pub const LANES: usize = 4;
/// Rows (queries in the forward pass and `attn_bwd_q`, keys in `attn_bwd_kv`)
/// one workgroup owns (mirrors `ROWS`).
pub const ROWS: usize = WG as usize / LANES;
/// Keys per K / V tile of the forward pass as written (mirrors `BK`).
pub const BK: usize = 16;
/// Streamed tokens per tile of the backward kernels as written (mirrors `BS`).
pub const BS: usize = 8;

/// The `const` lines of `attention.wgsl` an instance rewrites.
const HD_LINE: &str = "const HD: u32 = 64u;";
const BK_LINE: &str = "const BK: u32 = 16u;";
const BS_LINE: &str = "const BS: u32 = 8u;";

/// The compile-time tiling of one `attention.wgsl` instance: the channel block
/// `hd` (a multiple of [`LANES`], at most [`BLOCK`]), the forward key tile `bk`
/// and the backward streamed tile `bs` (multiples of [`LANES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionTiles {
    pub hd: usize,
    pub bk: usize,
    pub bs: usize,
}

impl AttentionTiles {
    /// The tiles for heads of `ch` channels on a device with `limit` bytes of
    /// workgroup memory: the channel block from `ch`, and the largest key /
    /// token tiles (16, 8 or 4; as written 16 and 8) whose kernels fit.
    /// `None` if not even tiles of 4 fit.
    pub fn for_heads(ch: usize, limit: u32) -> Option<AttentionTiles> {
        let hd = ch.clamp(1, BLOCK).next_multiple_of(LANES);
        let fits = |t: AttentionTiles| t.bytes() <= limit as usize;
        // The forward tile first (with the smallest backward one), then the
        // backward tile with it.
        let bk = [BK, 8, 4].into_iter().find(|&bk| fits(Self { hd, bk, bs: 4 }))?;
        let bs = [BS, 4].into_iter().find(|&bs| fits(Self { hd, bk, bs }))?;
        Some(AttentionTiles { hd, bk, bs })
    }

    /// Workgroup memory of the neediest of the three tiled kernels.
    pub fn bytes(&self) -> usize {
        self.forward_bytes().max(self.bwd_q_bytes()).max(self.bwd_kv_bytes())
    }

    /// Workgroup memory of the forward kernel: own queries, key tile, value
    /// tile (padded stride), scores; f32.
    pub fn forward_bytes(&self) -> usize {
        4 * (self.hd * ROWS + self.hd * self.bk + self.hd * (self.bk + 1) + self.bk * ROWS)
    }

    /// Workgroup memory of `attn_bwd_q`: own q and dy, key tile (padded),
    /// value tile, dS; f32.
    pub fn bwd_q_bytes(&self) -> usize {
        4 * (2 * self.hd * ROWS + self.hd * (self.bs + 1) + self.hd * self.bs + self.bs * ROWS)
    }

    /// Workgroup memory of `attn_bwd_kv`: own k and v, q and dy tiles
    /// (padded), P and dS; f32.
    pub fn bwd_kv_bytes(&self) -> usize {
        4 * (2 * self.hd * ROWS + 2 * self.hd * (self.bs + 1) + 2 * self.bs * ROWS)
    }

    /// `attention.wgsl` with this tiling (f32; `.typed` for another dtype):
    /// the source itself for the tiles it is written with, otherwise the
    /// `const HD` / `BK` / `BS` lines rewritten, as `Shader::typed` rewrites
    /// `alias T`. Each instance is built once per process (its name and text
    /// are leaked: at most a few dozen tilings exist) and named after its
    /// tiles, so the GPU's module and pipeline caches keep them apart.
    pub fn shader(&self) -> Shader {
        let written = AttentionTiles {
            hd: BLOCK,
            bk: BK,
            bs: BS,
        };
        if *self == written {
            return ATTENTION;
        }
        static INSTANCES: OnceLock<Mutex<HashMap<AttentionTiles, Shader>>> = OnceLock::new();
        let mut map = INSTANCES.get_or_init(Mutex::default).lock().unwrap();
        *map.entry(*self).or_insert_with(|| {
            let mut source = ATTENTION.source.to_string();
            for (line, value) in [(HD_LINE, self.hd), (BK_LINE, self.bk), (BS_LINE, self.bs)] {
                assert!(source.contains(line), "attention.wgsl lost its `{line}` line");
                let name = &line[6..8];
                source = source.replacen(line, &format!("const {name}: u32 = {value}u;"), 1);
            }
            Shader {
                name: Box::leak(format!("attention_hd{}_bk{}_bs{}", self.hd, self.bk, self.bs).into_boxed_str()),
                source: Box::leak(source.into_boxed_str()),
                dtype: DType::F32,
            }
        })
    }
}

/// Shape of one attention: qkv [n, 3 heads ch, t] -> y [n, heads ch, t], lse [n, heads, t].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub n: usize,
    pub heads: usize,
    pub ch: usize,
    pub t: usize,
    /// false: legacy per-head [q; k; v]; true: [q | k | v] split.
    pub split_order: bool,
    pub scale_q: f32,
    pub scale_k: f32,
}

impl AttentionShape {
    /// Workgroups of the forward, `attn_bwd_q` and `attn_bwd_kv` kernels: one
    /// per (sample, head, channel block, block of [`ROWS`] tokens).
    pub fn workgroups(&self) -> usize {
        self.n * self.heads * self.ch.div_ceil(BLOCK) * self.t.div_ceil(ROWS)
    }

    /// Threads of the forward, `attn_bwd_q` and `attn_bwd_kv` kernels.
    pub fn threads(&self) -> usize {
        self.workgroups() * WG as usize
    }

    /// The tiling of this shape's kernels on `gpu`, or an error when its
    /// workgroup memory cannot hold even the smallest tiles.
    pub fn tiles(&self, gpu: &Gpu) -> Result<AttentionTiles, GpuError> {
        let limit = gpu.limits.max_compute_workgroup_storage_size;
        AttentionTiles::for_heads(self.ch, limit).ok_or_else(|| {
            GpuError::Other(format!(
                "attention over {}-channel heads needs more than this GPU's {limit} bytes of workgroup memory",
                self.ch
            ))
        })
    }
}

/// y [n, heads ch, t] and lse [n, heads, t] from qkv [n, 3 heads ch, t]: one
/// dispatch of [`AttentionShape::workgroups`] workgroups (see `attention.wgsl`
/// for the tiling), with the tiles [`AttentionShape::tiles`] picks. The dtype
/// is qkv's and y's (lse is f32).
pub fn attention(gpu: &Gpu, s: &AttentionShape, qkv: &Tensor, y: &Tensor, lse: &Tensor) -> Result<Dispatch, GpuError> {
    attention_tiled(gpu, s, &s.tiles(gpu)?, qkv, y, lse)
}

/// [`attention`] with an explicit tiling (the tests run the smaller tiles a
/// device with less workgroup memory would get).
pub fn attention_tiled(
    gpu: &Gpu,
    s: &AttentionShape,
    tiles: &AttentionTiles,
    qkv: &Tensor,
    y: &Tensor,
    lse: &Tensor,
) -> Result<Dispatch, GpuError> {
    let shader = checked_shader(gpu, s, tiles)?;
    let params = AttentionParams::new(s, false);
    let u = gpu.uniform("attention params", &params);
    Dispatch::typed_on(
        gpu,
        &shader,
        "attention",
        &[],
        &Forward { p: &u, qkv, y, lse },
        dispatch_groups(s.workgroups(), 1),
    )
}

/// The tensors of [`attention_bwd`]: the forward's input and saved outputs,
/// the output gradient, scratch, and the input gradient it writes.
#[derive(Clone, Copy)]
pub struct AttentionGrads<'a> {
    /// The forward's input, [n, 3 heads ch, t].
    pub qkv: &'a Tensor,
    /// The forward's output y and log-sum-exps (f32) as it left them.
    pub y: &'a Tensor,
    pub lse: &'a Tensor,
    /// The gradient of y.
    pub dy: &'a Tensor,
    /// Scratch of [n, heads, t] f32: the per-query D = rowsum(dy (.) y).
    pub dsum: &'a Tensor,
    /// The gradient of qkv.
    pub dqkv: &'a Tensor,
    /// Add into dqkv (else overwrite it).
    pub accumulate: bool,
}

/// The backward pass of [`attention`]: dqkv from dy, with the saved output y
/// and lse. Three dispatches (D, queries, keys).
pub fn attention_bwd(gpu: &Gpu, s: &AttentionShape, g: &AttentionGrads) -> Result<[Dispatch; 3], GpuError> {
    attention_bwd_tiled(gpu, s, &s.tiles(gpu)?, g)
}

/// [`attention_bwd`] with an explicit tiling.
pub fn attention_bwd_tiled(
    gpu: &Gpu,
    s: &AttentionShape,
    tiles: &AttentionTiles,
    g: &AttentionGrads,
) -> Result<[Dispatch; 3], GpuError> {
    let shader = checked_shader(gpu, s, tiles)?;
    let params = AttentionParams::new(s, g.accumulate);
    let u = gpu.uniform("attention bwd params", &params);
    let d = Dispatch::typed_on(
        gpu,
        &shader,
        "attn_bwd_d",
        &[],
        &BwdD {
            pb: &u,
            dy: g.dy,
            y: g.y,
            out: g.dsum,
        },
        dispatch_groups(s.n * s.heads * s.t, WG),
    )?;
    let groups = dispatch_groups(s.workgroups(), 1);
    let tiled = BwdTiled {
        pb: &u,
        qkv_b: g.qkv,
        lse_b: g.lse,
        dy: g.dy,
        dsum_r: g.dsum,
        dqkv: g.dqkv,
    };
    let dq = Dispatch::typed_on(gpu, &shader, "attn_bwd_q", &[], &tiled, groups)?;
    let dkv = Dispatch::typed_on(gpu, &shader, "attn_bwd_kv", &[], &tiled, groups)?;
    Ok([d, dq, dkv])
}

/// The instance for `tiles`, refused unless they suit the shape's heads and
/// fit the device's workgroup memory.
/// The instance is f32; the dispatches retype it to their tensors' dtype.
fn checked_shader(gpu: &Gpu, s: &AttentionShape, tiles: &AttentionTiles) -> Result<Shader, GpuError> {
    let limit = gpu.limits.max_compute_workgroup_storage_size as usize;
    let hd = s.ch.clamp(1, BLOCK).next_multiple_of(LANES);
    let tile_ok = |b: usize| b > 0 && b <= 16 && b % LANES == 0;
    if tiles.hd != hd || !tile_ok(tiles.bk) || !tile_ok(tiles.bs) || tiles.bytes() > limit {
        return Err(GpuError::Other(format!(
            "attention tiles {tiles:?} do not suit {}-channel heads (channel block {hd}, tiles multiples of \
             {LANES} up to 16) within {limit} bytes of workgroup memory",
            s.ch
        )));
    }
    Ok(tiles.shader())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_the_webgpu_minimum_and_shrink_below_it() {
        // Every head width gets the tiles as written within WebGPU's (and
        // lavapipe's) 16 KiB and wgpu's downlevel 16,352 bytes.
        for ch in [1, 3, 4, 8, 33, 63, 64, 65, 80, 160, 256, 512] {
            let t = AttentionTiles::for_heads(ch, 16_352).unwrap();
            assert_eq!((t.bk, t.bs), (BK, BS), "ch {ch}");
            assert_eq!(t.hd, ch.min(BLOCK).next_multiple_of(LANES), "ch {ch}");
            assert!(t.bytes() <= 16_352, "ch {ch}: {} bytes", t.bytes());
        }
        let full = AttentionTiles::for_heads(64, 16_384).unwrap();
        assert_eq!(full.forward_bytes(), 13_568);
        assert_eq!(full.bwd_q_bytes(), 13_056);
        assert_eq!(full.bwd_kv_bytes(), 13_824);
        // Less memory: smaller tiles, then none.
        let small = AttentionTiles::for_heads(64, 12_000).unwrap();
        assert!(small.bk < BK && small.bs < BS, "{small:?}");
        assert!(small.bytes() <= 12_000);
        assert_eq!(AttentionTiles::for_heads(64, 4_000), None);
    }

    /// The value of the WGSL `const` `name` (a literal) in `source`.
    fn wgsl_const(source: &str, name: &str) -> Option<f64> {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        let (_, c) = module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name))?;
        match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => Some(v as f64),
            naga::Expression::Literal(naga::Literal::AbstractInt(v)) => Some(v as f64),
            _ => None,
        }
    }

    #[test]
    fn wgsl_tile_constants_match_rust() {
        // `tests/layout.rs` checks WG and BLOCK; these are the rest, and the
        // source as written is the instance of the widest block.
        let src = ATTENTION.source;
        for (name, want) in [
            ("LANES", LANES),
            ("HD", BLOCK),
            ("BK", BK),
            ("BS", BS),
            ("BLOCK", BLOCK),
        ] {
            assert_eq!(wgsl_const(src, name), Some(want as f64), "{name}");
        }
        assert_eq!(WG as usize, ROWS * LANES);
        for line in [HD_LINE, BK_LINE, BS_LINE] {
            assert_eq!(src.matches(line).count(), 1, "{line}");
        }
    }

    #[test]
    fn instances_rewrite_the_tile_constants() {
        assert_eq!(
            AttentionTiles {
                hd: BLOCK,
                bk: BK,
                bs: BS
            }
            .shader()
            .name,
            "attention"
        );
        let t = AttentionTiles { hd: 36, bk: 8, bs: 4 };
        let sh = t.shader();
        assert_eq!(sh.name, "attention_hd36_bk8_bs4");
        for line in ["const HD: u32 = 36u;", "const BK: u32 = 8u;", "const BS: u32 = 4u;"] {
            assert!(sh.source.contains(line), "{line}");
        }
        assert!(sh.is_generic());
        // Built once: the same leaked text on the second call.
        assert!(std::ptr::eq(sh.source, t.shader().source));
    }

    #[test]
    fn every_instance_validates() {
        // Device-free: each channel block with the tiles as written and the
        // smallest, in f32 and f16, parses and validates with naga.
        for hd in (LANES..=BLOCK).step_by(LANES) {
            for (bk, bs) in [(BK, BS), (4, 4)] {
                for dtype in [DType::F32, DType::F16] {
                    let sh = AttentionTiles { hd, bk, bs }.shader().typed(dtype);
                    let src = sh.wgsl();
                    let module = naga::front::wgsl::parse_str(&src)
                        .unwrap_or_else(|e| panic!("{} {dtype:?}: {}", sh.name, e.emit_to_string(&src)));
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                        .validate(&module)
                        .unwrap_or_else(|e| panic!("{} {dtype:?}: {e:?}", sh.name));
                }
            }
        }
    }
}
