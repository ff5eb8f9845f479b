//! Which convolution kernel a layer runs, chosen once when a plan is built
//! (never in the replay loop): the SIMT tile family, the split-K factor, or
//! the cooperative-matrix (tensor-core) kernel.
//!
//! The choice comes from an autotune cache when one has an entry for this
//! adapter and layer (`tweedie bench --tune` fills it by timing every
//! candidate on the GPU), and otherwise from the adapter's limits and size:
//! - CPU adapters (lavapipe) take 64 x 64 tiles where they do not pad the
//!   GEMM by more than 30%, else 32 x 32; no split-K (a CPU has few cores
//!   to fill, and fewer, larger workgroups run faster there).
//! - GPUs: the largest family that gives at least two waves of workgroups
//!   over the GPU's multiprocessors (the [`crate::gpu::PEAKS`] table, or 64
//!   for an unknown discrete GPU) without that padding; else 32 x 32 tiles,
//!   split along K until the layer fills the GPU (at least 4 slices of K per
//!   split, at most 16 splits).
//! - f16 models on adapters with a 16x16x16 f16 -> f32 cooperative-matrix
//!   configuration run the tensor-core kernel on every layer, those with
//!   fewer channels than a tile too; f32 models stay on SIMT (the
//!   tensor-core kernel rounds operands to f16).
//!
//! The cache is a JSON file: `$TWEEDIE_TUNE_CACHE` when set (empty or `off`
//! disables it), else `$XDG_CACHE_HOME/tweedie/tune.json`, else
//! `~/.cache/tweedie/tune.json`. It is keyed by adapter (name, driver) and
//! by layer (pass, precision, batch, channels, resolution, kernel size,
//! stride). An entry the adapter cannot run is ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use crate::gpu::multiprocessors;
use crate::gpu::Gpu;
use crate::kernels::conv2d::{Conv2dShape, ConvKernel, ConvTiles};
use crate::kernels::conv_coop;
use crate::tensor::DType;

/// Which GEMM of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    /// y = conv(x, W): M = Cout, P = N Ho Wo, K = Cin KS KS.
    Forward,
    /// dx = conv_transpose(dy, W): M = Cin, P = N H W, K = Cout KS KS.
    BwdData,
}

impl ConvPass {
    /// (M, P, K) of the GEMM.
    pub fn gemm(&self, s: &Conv2dShape) -> (usize, usize, usize) {
        let kk = s.ks * s.ks;
        match self {
            ConvPass::Forward => {
                let (ho, wo) = s.out_hw();
                (s.cout, s.n * ho * wo, s.cin * kk)
            }
            ConvPass::BwdData => (s.cin, s.n * s.h * s.w, s.cout * kk),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ConvPass::Forward => "fwd",
            ConvPass::BwdData => "bwd_data",
        }
    }
}

/// The kernel for one convolution on this adapter.
pub fn choose(gpu: &Gpu, pass: ConvPass, s: &Conv2dShape, dtype: DType) -> ConvKernel {
    if let Some(k) = cached(gpu, pass, s, dtype) {
        return k;
    }
    heuristic(gpu, pass, s, dtype)
}

/// What the heuristic needs to know of an adapter.
#[derive(Clone, Copy, Debug)]
pub struct AdapterTraits {
    /// Multiprocessors to fill; `None` for a CPU adapter.
    pub multiprocessors: Option<u32>,
    /// Whether the cooperative-matrix kernel runs ([`conv_coop::supported`]).
    pub coop: bool,
    /// Whether each of [`ConvTiles::FAMILIES`] fits the adapter's limits.
    pub fits: [bool; 4],
}

impl AdapterTraits {
    pub fn of(gpu: &Gpu) -> AdapterTraits {
        AdapterTraits {
            multiprocessors: multiprocessors(gpu),
            coop: conv_coop::supported(gpu),
            fits: ConvTiles::FAMILIES.map(|(_, t)| t.fits(gpu)),
        }
    }

    fn fits(&self, t: &ConvTiles) -> bool {
        ConvTiles::FAMILIES
            .iter()
            .zip(self.fits)
            .any(|((_, f), ok)| f == t && ok)
    }
}

/// The choice without a cache entry (see the module docs).
pub fn heuristic(gpu: &Gpu, pass: ConvPass, s: &Conv2dShape, dtype: DType) -> ConvKernel {
    heuristic_for(&AdapterTraits::of(gpu), pass, s, dtype)
}

/// [`heuristic`] for an adapter described by `a` (testable without that adapter).
pub fn heuristic_for(a: &AdapterTraits, pass: ConvPass, s: &Conv2dShape, dtype: DType) -> ConvKernel {
    let (m, p, k) = pass.gemm(s);
    let padded_ok = |tm: u32, tn: u32| {
        let padded = (m as u64).div_ceil(tm as u64) * tm as u64 * (p as u64).div_ceil(tn as u64) * tn as u64;
        padded as f64 <= 1.3 * (m * p) as f64
    };
    let groups = |tm: u32, tn: u32| (m as u64).div_ceil(tm as u64) * (p as u64).div_ceil(tn as u64);
    let Some(sms) = a.multiprocessors else {
        // A CPU has a few cores: larger tiles, fewer workgroups (64 x 64 ran
        // about 20% faster than 32 x 32 on lavapipe in `bench --tune`).
        let t = if a.fits(&ConvTiles::MEDIUM) && padded_ok(64, 64) {
            ConvTiles::MEDIUM
        } else {
            ConvTiles::SMALL
        };
        return ConvKernel::simt(t);
    };
    // Every f16 layer on the tensor cores, thin ones too: on an H200 the SIMT
    // `small` kernel ran the 3 -> 128 and 128 -> 6 convolutions at 256x256 in
    // 18 ms each (0.03-0.05 TFLOP/s), where the cooperative kernel's 64 x 64
    // tiles, a tenth of them used, take about 1 ms (its measured time per tile
    // on the full layers); docs/performance.md, "On an NVIDIA H200".
    let base = if dtype == DType::F16 && a.coop {
        ConvKernel {
            coop: true,
            ..ConvKernel::simt(ConvTiles::MEDIUM)
        }
    } else {
        let family = [ConvTiles::WIDE, ConvTiles::MEDIUM]
            .into_iter()
            .find(|t| a.fits(t) && groups(t.tm(), t.tn()) >= 2 * sms as u64 && padded_ok(t.tm(), t.tn()));
        ConvKernel::simt(family.unwrap_or(ConvTiles::SMALL))
    };
    let g = base.workgroups(m, p, k);
    let slices = (k as u64).div_ceil(16);
    if g >= sms as u64 || slices < 8 {
        return base;
    }
    // The power of two (the candidates the tuner times) that reaches a wave,
    // at most 16, halved while a split would get fewer than 4 slices of K or
    // none at all.
    let mut splits = ((sms as u64).div_ceil(g).next_power_of_two().min(16)) as u32;
    while splits > 1 && (4 * splits as u64 > slices || base.split(splits).split_plan(k).1 != splits) {
        splits /= 2;
    }
    base.split(splits)
}

/// Every kernel that can run this convolution on this adapter: each tile
/// family that fits, split 1, 2, 4, 8 and 16 ways where K has at least
/// 4 slices per split, and the cooperative kernel for f16 where supported.
pub fn candidates(gpu: &Gpu, pass: ConvPass, s: &Conv2dShape, dtype: DType) -> Vec<ConvKernel> {
    let (_, _, k) = pass.gemm(s);
    let mut bases: Vec<ConvKernel> = ConvTiles::FAMILIES
        .iter()
        .filter(|(_, t)| t.fits(gpu))
        .map(|(_, t)| ConvKernel::simt(*t))
        .collect();
    if dtype == DType::F16 && conv_coop::supported(gpu) {
        bases.push(ConvKernel {
            coop: true,
            ..ConvKernel::simt(ConvTiles::MEDIUM)
        });
    }
    let mut out = Vec::new();
    for b in bases {
        for splits in [1u32, 2, 4, 8, 16] {
            let c = b.split(splits);
            if splits == 1 || ((k as u32).div_ceil(16) >= 4 * splits && c.split_plan(k).1 == splits) {
                out.push(c);
            }
        }
    }
    out
}

/// The cache key of a layer: pass, precision and shape.
pub fn layer_key(pass: ConvPass, s: &Conv2dShape, dtype: DType) -> String {
    format!(
        "{} {:?} n{} {}->{} {}x{} k{} s{} p{:?}",
        pass.name(),
        dtype,
        s.n,
        s.cin,
        s.cout,
        s.h,
        s.w,
        s.ks,
        s.stride,
        s.pad
    )
}

/// The cache key of an adapter: its name and driver.
pub fn adapter_key(gpu: &Gpu) -> String {
    format!("{} | {} | {}", gpu.info.name, gpu.info.driver, gpu.info.driver_info)
}

/// A kernel as the cache writes it: "medium", "wide/split4", "coop/split2".
pub fn spec(k: &ConvKernel) -> String {
    let base = if k.coop { "coop" } else { k.tiles.name() };
    if k.splits > 1 {
        format!("{base}/split{}", k.splits)
    } else {
        base.to_string()
    }
}

/// The kernel a cache spec names, or `None` for one this build does not know.
pub fn parse_spec(spec: &str) -> Option<ConvKernel> {
    let (base, splits) = match spec.split_once("/split") {
        Some((b, n)) => (b, n.parse::<u32>().ok().filter(|&n| (1..=64).contains(&n))?),
        None => (spec, 1),
    };
    let k = if base == "coop" {
        ConvKernel {
            coop: true,
            ..ConvKernel::simt(ConvTiles::MEDIUM)
        }
    } else {
        ConvKernel::simt(ConvTiles::FAMILIES.iter().find(|(n, _)| *n == base)?.1)
    };
    Some(k.split(splits))
}

/// The cache file: adapter key -> layer key -> kernel spec.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TuneCache {
    pub version: u32,
    pub adapters: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where the cache lives, or `None` when disabled or no home is known.
pub fn cache_path() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("TWEEDIE_TUNE_CACHE") {
        return (!v.is_empty() && v != "off").then(|| PathBuf::from(v));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tweedie").join("tune.json"))
}

/// The cache as loaded once per process (per path).
static LOADED: Mutex<Option<(PathBuf, TuneCache)>> = Mutex::new(None);

impl TuneCache {
    /// Reads `path`; a missing file is an empty cache, an unreadable one an error.
    pub fn read(path: &std::path::Path) -> Result<TuneCache, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TuneCache {
                version: 1,
                ..TuneCache::default()
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes `path` whole (through a temporary file, so a reader never sees
    /// half of it) and makes it the process's cache.
    pub fn write(&self, path: &std::path::Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        *LOADED.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), self.clone()));
        Ok(())
    }
}

/// The cached kernel for this layer, when the cache has one this adapter can run.
fn cached(gpu: &Gpu, pass: ConvPass, s: &Conv2dShape, dtype: DType) -> Option<ConvKernel> {
    let path = cache_path()?;
    let mut guard = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|(p, _)| *p != path) {
        // An unreadable cache is ignored here (`bench --tune` reports it).
        let cache = TuneCache::read(&path).unwrap_or_default();
        *guard = Some((path, cache));
    }
    let (_, cache) = guard.as_ref()?;
    let spec = cache.adapters.get(&adapter_key(gpu))?.get(&layer_key(pass, s, dtype))?;
    let k = parse_spec(spec)?;
    let runs = if k.coop {
        dtype == DType::F16 && conv_coop::supported(gpu)
    } else {
        k.tiles.fits(gpu)
    };
    runs.then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        for (_, t) in ConvTiles::FAMILIES {
            for splits in [1, 2, 8] {
                let k = ConvKernel::simt(t).split(splits);
                assert_eq!(parse_spec(&spec(&k)), Some(k));
            }
        }
        let coop = parse_spec("coop/split4").unwrap();
        assert!(coop.coop && coop.splits == 4);
        assert_eq!(parse_spec("huge"), None);
        assert_eq!(parse_spec("medium/split0"), None);
        assert_eq!(parse_spec("medium/splitx"), None);
    }
}
