//! The layer IR: the U-Net as a flat list of typed layers over named
//! activations, built once from a config. Every architecture lowers to the
//! same few layer kinds (`adm.rs`, `diffusers.rs`, through the shared
//! `builder.rs`; each kind is a module of `layers/`), so the forward plan
//! (and the backward pass after it) walks one list.
//!
//! Activations are batch- and resolution-free here: an image activation has a
//! channel count and a downsample rate `ds` (its size is H/ds x W/ds); the
//! planner resolves sizes once H, W and N are known.

use super::config::UnetConfig;
pub use super::layers::Layer;
use super::layers::Sizes;
use crate::tensor::DType;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GraphError {
    #[error("{0}")]
    Unsupported(String),
}

/// Index of an activation in [`Graph::acts`].
pub type ActId = usize;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// [N, c, H/ds, W/ds]
    Image { c: usize, ds: usize },
    /// [N, d]
    Vector { d: usize },
}

impl Act {
    pub fn channels(&self) -> usize {
        match *self {
            Act::Image { c, .. } => c,
            Act::Vector { d } => d,
        }
    }
}

/// What a convolution adds to its output before `out_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Residual {
    None,
    /// A tensor of the output's shape (ResBlock skip, attention input).
    Full(ActId),
    /// A per-(sample, channel) vector broadcast over pixels (the additive
    /// time embedding of a ResBlock without scale-shift).
    Channel(ActId),
}

/// Head layout of the fused qkv tensor [N, 3C, T].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvOrder {
    /// guided-diffusion `QKVAttentionLegacy`: per head [q; k; v] blocks of ch channels.
    Legacy,
    /// `QKVAttention` (and diffusers): [all q; all k; all v], heads inside each.
    Split,
}

/// A named weight of the checkpoint and the shape it must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The lowered model: activations, layers in execution order, and the
/// parameters grouped so that members of a group sit contiguously.
#[derive(Debug, Clone)]
pub struct Graph {
    pub acts: Vec<Act>,
    pub layers: Vec<Layer>,
    pub param_groups: Vec<Vec<Param>>,
    /// x [N, in_channels, H, W]
    pub input: ActId,
    pub output: ActId,
    /// H and W must be multiples of this.
    pub max_ds: usize,
}

impl Graph {
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        self.param_groups.iter().flatten()
    }

    pub fn num_params(&self) -> usize {
        self.params().map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Shape of activation `a` for `n` images of `h` x `w`:
    /// [n, c, h/ds, w/ds] or [n, d].
    pub fn act_shape(&self, a: ActId, n: usize, h: usize, w: usize) -> Vec<usize> {
        match self.acts[a] {
            Act::Image { c, ds } => vec![n, c, h / ds, w / ds],
            Act::Vector { d } => vec![n, d],
        }
    }

    /// Multiply-adds x 2 of one forward at batch 1 and h x w (convolutions,
    /// linear layers, attention products; the elementwise rest is left out).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        let at = Sizes::of_graph(self, 1, h, w);
        self.layers.iter().map(|l| l.kind().flops(&at).forward).sum()
    }

    /// Bytes of activations one image keeps at h x w in `dtype` (every
    /// activation has its own buffer, for the backward pass); the VJP adds
    /// about as much again for the gradients.
    pub fn activation_bytes(&self, h: usize, w: usize, dtype: DType) -> usize {
        self.acts
            .iter()
            .map(|a| match *a {
                Act::Image { c, ds } => c * (h / ds) * (w / ds),
                Act::Vector { d } => d,
            })
            .sum::<usize>()
            * dtype.size_bytes()
    }

    /// Builds the graph of a config. `old_attention_names` selects diffusers'
    /// pre-0.14 attention keys (query/key/value/proj_attn).
    pub fn build(config: &UnetConfig, old_attention_names: bool) -> Result<Graph, GraphError> {
        // One line per architecture: its lowering lives in its own module.
        match config {
            UnetConfig::Adm(c) => super::adm::build(c),
            UnetConfig::Diffusers(c) => super::diffusers::build(c, old_attention_names),
        }
    }
}

/// Host-side sinusoid frequencies, f32 as torch computes them:
/// exp(f32(f32(-ln 10000) * i) / f32(denominator)).
pub fn timestep_freqs(half: usize, denominator: f64) -> Vec<f32> {
    let c = -(10000f64.ln()) as f32;
    (0..half)
        .map(|i| ((c * i as f32) / denominator as f32) as f64)
        .map(|e| e.exp() as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DPS / DMPS FFHQ prior: 93.6 M parameters, ~388 GFLOP per forward.
    #[test]
    fn dps_ffhq_size_and_cost() {
        let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
        let p = g.num_params() as f64 / 1e6;
        let f = g.flops(256, 256) / 1e9;
        eprintln!(
            "ffhq: {} params, {f:.1} GFLOP, {} MiB activations",
            g.num_params(),
            g.activation_bytes(256, 256, DType::F32) >> 20
        );
        assert!((p - 93.6).abs() < 0.05, "{p} M parameters");
        assert!((f - 388.0).abs() < 5.0, "{f} GFLOP");
        assert_eq!(g.max_ds, 32);
    }
}
