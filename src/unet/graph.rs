//! The layer IR: the U-Net as a flat list of typed layers over named
//! activations, built once from a config. Every architecture lowers to the
//! same few layer kinds (`adm.rs`, `diffusers.rs`, through the shared
//! `builder.rs`), so the forward plan (and the backward pass after it) walks
//! one list; `shapes.rs` sizes each layer once N, H and W are known.
//!
//! Activations are batch- and resolution-free here: an image activation has a
//! channel count and a downsample rate `ds` (its size is H/ds x W/ds); the
//! planner resolves sizes once H, W and N are known.

use super::config::UnetConfig;
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

/// One layer. Weight references are upstream key names; `w` of a fused group
/// (diffusers' to_q/to_k/to_v) names its first member, the others follow it
/// contiguously in the weight buffer.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Sinusoidal embedding of the timesteps t [N] -> y [N, dim]. `freqs`
    /// are computed on the host in f32 exactly as upstream does.
    Timestep {
        y: ActId,
        dim: usize,
        cos_first: bool,
        freqs: Vec<f32>,
    },
    /// y = act_out(W act_in(x) + b), W [dout, din].
    Linear {
        x: ActId,
        y: ActId,
        w: String,
        b: String,
        din: usize,
        dout: usize,
        silu_in: bool,
        silu_out: bool,
    },
    /// y = (conv(x, W) + b + residual) * out_scale; padding [top, left, bottom, right].
    Conv {
        x: ActId,
        y: ActId,
        w: String,
        b: String,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: [usize; 4],
        res: Residual,
        out_scale: f32,
    },
    /// y = silu?( GN(x) [* (1 + scale) + shift] ), scale/shift = halves of `scale_shift` [N, 2C].
    GroupNorm {
        x: ActId,
        y: ActId,
        gamma: String,
        beta: String,
        c: usize,
        groups: usize,
        eps: f32,
        silu: bool,
        scale_shift: Option<ActId>,
    },
    /// y [N, C, T] = softmax(scale_q q^T . scale_k k) v per head, from qkv [N, 3C, T].
    Attention {
        qkv: ActId,
        y: ActId,
        heads: usize,
        ch: usize,
        order: QkvOrder,
        scale_q: f32,
        scale_k: f32,
    },
    /// Nearest-neighbour x2.
    Upsample { x: ActId, y: ActId },
    /// 2x2 average pool, stride 2.
    AvgPool { x: ActId, y: ActId },
    /// y = cat([a, b], channels).
    Concat { a: ActId, b: ActId, y: ActId },
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

    /// Multiply-adds x 2 of one forward at batch 1 and h x w (convolutions,
    /// linear layers, attention products; the elementwise rest is left out).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        let px = |a: ActId| match self.acts[a] {
            Act::Image { ds, .. } => ((h / ds) * (w / ds)) as f64,
            Act::Vector { .. } => 1.0,
        };
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Linear { din, dout, .. } => 2.0 * (*din * *dout) as f64,
                Layer::Conv { y, cin, cout, k, .. } => 2.0 * (*cin * *cout * k * k) as f64 * px(*y),
                Layer::Attention { y, heads, ch, .. } => {
                    let t = px(*y);
                    4.0 * t * t * (*heads * *ch) as f64
                }
                _ => 0.0,
            })
            .sum()
    }

    /// Bytes of activations one image keeps at h x w (every activation has
    /// its own buffer, for the backward pass); the VJP adds about as much again
    /// for the gradients.
    pub fn activation_bytes(&self, h: usize, w: usize) -> usize {
        self.acts
            .iter()
            .map(|a| match *a {
                Act::Image { c, ds } => c * (h / ds) * (w / ds),
                Act::Vector { d } => d,
            })
            .sum::<usize>()
            * 4
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
            g.activation_bytes(256, 256) >> 20
        );
        assert!((p - 93.6).abs() < 0.05, "{p} M parameters");
        assert!((f - 388.0).abs() < 5.0, "{f} GFLOP");
        assert_eq!(g.max_ds, 32);
    }
}
