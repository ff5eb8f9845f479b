//! The U-Net as a flat list of typed layers over named activations, built once
//! from a config. Both architectures lower to the same few layer kinds, so the
//! forward plan (and the backward pass after it) walks one list.
//!
//! Activations are batch- and resolution-free here: an image activation has a
//! channel count and a downsample rate `ds` (its size is H/ds x W/ds); the
//! planner resolves sizes once H, W and N are known.

use super::config::{AdmConfig, DiffusersConfig, UnetConfig};
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
        match config {
            UnetConfig::Adm(c) => build_adm(c),
            UnetConfig::Diffusers(c) => build_diffusers(c, old_attention_names),
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

struct Builder {
    g: Graph,
}

/// Key names of one residual block's pieces.
struct ResNames {
    in_norm: String,
    in_conv: String,
    emb: String,
    out_norm: String,
    out_conv: String,
    skip: String,
}

#[derive(Clone, Copy, PartialEq)]
enum UpDown {
    None,
    Up,
    Down,
}

struct ResOpts {
    scale_shift: bool,
    groups: usize,
    eps: f32,
    out_scale: f32,
    updown: UpDown,
}

struct AttnNames {
    norm: Option<String>,
    /// Members of the qkv projection (one fused conv, or q, k, v), weights then biases.
    qkv_w: Vec<String>,
    qkv_b: Vec<String>,
    proj_w: String,
    proj_b: String,
    /// Weight shapes are [out, in, 1] (conv1d) or [out, in] (linear).
    conv1d: bool,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            g: Graph {
                acts: Vec::new(),
                layers: Vec::new(),
                param_groups: Vec::new(),
                input: 0,
                output: 0,
                max_ds: 1,
            },
        }
    }

    fn act(&mut self, a: Act) -> ActId {
        if let Act::Image { ds, .. } = a {
            self.g.max_ds = self.g.max_ds.max(ds);
        }
        self.g.acts.push(a);
        self.g.acts.len() - 1
    }

    fn image(&self, a: ActId) -> (usize, usize) {
        match self.g.acts[a] {
            Act::Image { c, ds } => (c, ds),
            Act::Vector { .. } => unreachable!("image activation expected"),
        }
    }

    fn params(&mut self, group: Vec<(String, Vec<usize>)>) {
        self.g
            .param_groups
            .push(group.into_iter().map(|(name, shape)| Param { name, shape }).collect());
    }

    fn linear(&mut self, x: ActId, prefix: &str, dout: usize, silu_in: bool, silu_out: bool) -> ActId {
        let din = self.g.acts[x].channels();
        self.params(vec![
            (format!("{prefix}.weight"), vec![dout, din]),
            (format!("{prefix}.bias"), vec![dout]),
        ]);
        let y = self.act(Act::Vector { d: dout });
        self.g.layers.push(Layer::Linear {
            x,
            y,
            w: format!("{prefix}.weight"),
            b: format!("{prefix}.bias"),
            din,
            dout,
            silu_in,
            silu_out,
        });
        y
    }

    /// A k x k convolution (weights [cout, cin, k, k]) registered under `prefix`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: ActId,
        prefix: &str,
        cout: usize,
        k: usize,
        stride: usize,
        pad: [usize; 4],
        res: Residual,
        out_scale: f32,
    ) -> ActId {
        let (cin, ds) = self.image(x);
        self.params(vec![
            (format!("{prefix}.weight"), vec![cout, cin, k, k]),
            (format!("{prefix}.bias"), vec![cout]),
        ]);
        let y = self.act(Act::Image {
            c: cout,
            ds: ds * stride,
        });
        self.g.layers.push(Layer::Conv {
            x,
            y,
            w: format!("{prefix}.weight"),
            b: format!("{prefix}.bias"),
            cin,
            cout,
            k,
            stride,
            pad,
            res,
            out_scale,
        });
        y
    }

    fn conv3(&mut self, x: ActId, prefix: &str, cout: usize) -> ActId {
        self.conv(x, prefix, cout, 3, 1, [1; 4], Residual::None, 1.0)
    }

    fn group_norm(
        &mut self,
        x: ActId,
        prefix: &str,
        groups: usize,
        eps: f32,
        silu: bool,
        scale_shift: Option<ActId>,
    ) -> Result<ActId, GraphError> {
        let (c, ds) = self.image(x);
        if groups == 0 || c % groups != 0 {
            return Err(GraphError::Unsupported(format!(
                "{prefix}: GroupNorm of {c} channels in {groups} groups"
            )));
        }
        self.params(vec![
            (format!("{prefix}.weight"), vec![c]),
            (format!("{prefix}.bias"), vec![c]),
        ]);
        let y = self.act(Act::Image { c, ds });
        self.g.layers.push(Layer::GroupNorm {
            x,
            y,
            gamma: format!("{prefix}.weight"),
            beta: format!("{prefix}.bias"),
            c,
            groups,
            eps,
            silu,
            scale_shift,
        });
        Ok(y)
    }

    fn resample(&mut self, x: ActId, up: bool) -> ActId {
        let (c, ds) = self.image(x);
        if up {
            let y = self.act(Act::Image { c, ds: ds / 2 });
            self.g.layers.push(Layer::Upsample { x, y });
            y
        } else {
            let y = self.act(Act::Image { c, ds: ds * 2 });
            self.g.layers.push(Layer::AvgPool { x, y });
            y
        }
    }

    fn concat(&mut self, a: ActId, b: ActId) -> ActId {
        let (ca, ds) = self.image(a);
        let (cb, dsb) = self.image(b);
        assert_eq!(ds, dsb, "concat of different resolutions");
        let y = self.act(Act::Image { c: ca + cb, ds });
        self.g.layers.push(Layer::Concat { a, b, y });
        y
    }

    /// guided-diffusion `ResBlock` / diffusers `ResnetBlock2D` (same dataflow).
    fn resblock(&mut self, x: ActId, emb: ActId, n: &ResNames, cout: usize, o: &ResOpts) -> Result<ActId, GraphError> {
        let (cin, _) = self.image(x);
        let mut h = self.group_norm(x, &n.in_norm, o.groups, o.eps, true, None)?;
        let mut xs = x;
        if o.updown != UpDown::None {
            let up = o.updown == UpDown::Up;
            h = self.resample(h, up);
            xs = self.resample(x, up);
        }
        let e = self.linear(emb, &n.emb, if o.scale_shift { 2 * cout } else { cout }, true, false);
        let h = if o.scale_shift {
            let h = self.conv3(h, &n.in_conv, cout);
            self.group_norm(h, &n.out_norm, o.groups, o.eps, true, Some(e))?
        } else {
            let h = self.conv(h, &n.in_conv, cout, 3, 1, [1; 4], Residual::Channel(e), 1.0);
            self.group_norm(h, &n.out_norm, o.groups, o.eps, true, None)?
        };
        let skip = if cin != cout {
            self.conv(xs, &n.skip, cout, 1, 1, [0; 4], Residual::None, 1.0)
        } else {
            xs
        };
        Ok(self.conv(
            h,
            &n.out_conv,
            cout,
            3,
            1,
            [1; 4],
            Residual::Full(skip),
            1.0 / o.out_scale,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        x: ActId,
        n: &AttnNames,
        heads: usize,
        order: QkvOrder,
        legacy_scale: bool,
        groups: usize,
        eps: f32,
        out_scale: f32,
    ) -> Result<ActId, GraphError> {
        let (c, ds) = self.image(x);
        if heads == 0 || c % heads != 0 {
            return Err(GraphError::Unsupported(format!(
                "attention over {c} channels in {heads} heads"
            )));
        }
        let ch = c / heads;
        let h = match &n.norm {
            Some(p) => self.group_norm(x, p, groups, eps, false, None)?,
            None => x,
        };
        let shape = |o: usize| if n.conv1d { vec![o, c, 1] } else { vec![o, c] };
        let per = 3 * c / n.qkv_w.len();
        self.params(n.qkv_w.iter().map(|k| (k.clone(), shape(per))).collect());
        self.params(n.qkv_b.iter().map(|k| (k.clone(), vec![per])).collect());
        let qkv = self.act(Act::Image { c: 3 * c, ds });
        self.g.layers.push(Layer::Conv {
            x: h,
            y: qkv,
            w: n.qkv_w[0].clone(),
            b: n.qkv_b[0].clone(),
            cin: c,
            cout: 3 * c,
            k: 1,
            stride: 1,
            pad: [0; 4],
            res: Residual::None,
            out_scale: 1.0,
        });
        let a = self.act(Act::Image { c, ds });
        // guided-diffusion scales q and k each by ch^-1/4 (more stable in f16);
        // diffusers scales the scores by ch^-1/2.
        let (scale_q, scale_k) = if legacy_scale {
            let s = 1.0 / (ch as f64).sqrt().sqrt();
            (s as f32, s as f32)
        } else {
            ((1.0 / (ch as f64).sqrt()) as f32, 1.0)
        };
        self.g.layers.push(Layer::Attention {
            qkv,
            y: a,
            heads,
            ch,
            order,
            scale_q,
            scale_k,
        });
        self.params(vec![(n.proj_w.clone(), shape(c)), (n.proj_b.clone(), vec![c])]);
        let y = self.act(Act::Image { c, ds });
        self.g.layers.push(Layer::Conv {
            x: a,
            y,
            w: n.proj_w.clone(),
            b: n.proj_b.clone(),
            cin: c,
            cout: c,
            k: 1,
            stride: 1,
            pad: [0; 4],
            res: Residual::Full(x),
            out_scale: 1.0 / out_scale,
        });
        Ok(y)
    }

    fn finish(mut self, input: ActId, output: ActId) -> Graph {
        self.g.input = input;
        self.g.output = output;
        self.g
    }
}

fn adm_res_names(p: &str) -> ResNames {
    ResNames {
        in_norm: format!("{p}.in_layers.0"),
        in_conv: format!("{p}.in_layers.2"),
        emb: format!("{p}.emb_layers.1"),
        out_norm: format!("{p}.out_layers.0"),
        out_conv: format!("{p}.out_layers.3"),
        skip: format!("{p}.skip_connection"),
    }
}

fn adm_attn_names(p: &str) -> AttnNames {
    AttnNames {
        norm: Some(format!("{p}.norm")),
        qkv_w: vec![format!("{p}.qkv.weight")],
        qkv_b: vec![format!("{p}.qkv.bias")],
        proj_w: format!("{p}.proj_out.weight"),
        proj_b: format!("{p}.proj_out.bias"),
        conv1d: true,
    }
}

/// guided-diffusion `UNetModel.__init__` / `forward`, layer for layer.
fn build_adm(c: &AdmConfig) -> Result<Graph, GraphError> {
    let mut b = Builder::new();
    let mc = c.model_channels;
    let ted = mc * 4;
    let heads_for = |ch: usize, num_heads: usize| -> Result<usize, GraphError> {
        if c.num_head_channels == -1 {
            Ok(num_heads)
        } else {
            let hc = c.num_head_channels as usize;
            if ch % hc != 0 {
                return Err(GraphError::Unsupported(format!(
                    "{ch} channels are not a multiple of num_head_channels {hc}"
                )));
            }
            Ok(ch / hc)
        }
    };
    let heads_up = if c.num_heads_upsample == -1 {
        c.num_heads
    } else {
        c.num_heads_upsample as usize
    };
    let order = if c.use_new_attention_order {
        QkvOrder::Split
    } else {
        QkvOrder::Legacy
    };
    let ro = |updown| ResOpts {
        scale_shift: c.use_scale_shift_norm,
        groups: 32,
        eps: 1e-5,
        out_scale: 1.0,
        updown,
    };

    let x = b.act(Act::Image {
        c: c.in_channels,
        ds: 1,
    });
    let temb = b.act(Act::Vector { d: mc });
    let half = mc / 2;
    b.g.layers.push(Layer::Timestep {
        y: temb,
        dim: mc,
        cos_first: true,
        freqs: timestep_freqs(half, half as f64),
    });
    let emb = b.linear(temb, "time_embed.0", ted, false, true);
    let emb = b.linear(emb, "time_embed.2", ted, false, false);

    let mult = |m: f64| (m * mc as f64) as usize;
    let ch0 = mult(c.channel_mult[0]);
    let mut h = b.conv3(x, "input_blocks.0.0", ch0);
    let mut hs = vec![h];
    let mut ch = ch0;
    let mut ds = 1;
    let mut idx = 1;
    for (level, &m) in c.channel_mult.iter().enumerate() {
        for _ in 0..c.num_res_blocks {
            let p = format!("input_blocks.{idx}");
            h = b.resblock(h, emb, &adm_res_names(&format!("{p}.0")), mult(m), &ro(UpDown::None))?;
            ch = mult(m);
            if c.attention_resolutions.contains(&ds) {
                h = b.attention(
                    h,
                    &adm_attn_names(&format!("{p}.1")),
                    heads_for(ch, c.num_heads)?,
                    order,
                    true,
                    32,
                    1e-5,
                    1.0,
                )?;
            }
            hs.push(h);
            idx += 1;
        }
        if level != c.channel_mult.len() - 1 {
            let p = format!("input_blocks.{idx}.0");
            h = if c.resblock_updown {
                b.resblock(h, emb, &adm_res_names(&p), ch, &ro(UpDown::Down))?
            } else if c.conv_resample {
                b.conv(h, &format!("{p}.op"), ch, 3, 2, [1; 4], Residual::None, 1.0)
            } else {
                b.resample(h, false)
            };
            hs.push(h);
            ds *= 2;
            idx += 1;
        }
    }
    h = b.resblock(h, emb, &adm_res_names("middle_block.0"), ch, &ro(UpDown::None))?;
    h = b.attention(
        h,
        &adm_attn_names("middle_block.1"),
        heads_for(ch, c.num_heads)?,
        order,
        true,
        32,
        1e-5,
        1.0,
    )?;
    h = b.resblock(h, emb, &adm_res_names("middle_block.2"), ch, &ro(UpDown::None))?;

    let mut idx = 0;
    for (level, &m) in c.channel_mult.iter().enumerate().rev() {
        for i in 0..=c.num_res_blocks {
            let p = format!("output_blocks.{idx}");
            let skip = hs.pop().expect("one skip per output block");
            let cat = b.concat(h, skip);
            h = b.resblock(cat, emb, &adm_res_names(&format!("{p}.0")), mult(m), &ro(UpDown::None))?;
            ch = mult(m);
            let mut sub = 1;
            if c.attention_resolutions.contains(&ds) {
                h = b.attention(
                    h,
                    &adm_attn_names(&format!("{p}.1")),
                    heads_for(ch, heads_up)?,
                    order,
                    true,
                    32,
                    1e-5,
                    1.0,
                )?;
                sub += 1;
            }
            if level > 0 && i == c.num_res_blocks {
                let q = format!("{p}.{sub}");
                h = if c.resblock_updown {
                    b.resblock(h, emb, &adm_res_names(&q), ch, &ro(UpDown::Up))?
                } else {
                    let u = b.resample(h, true);
                    if c.conv_resample {
                        b.conv3(u, &format!("{q}.conv"), ch)
                    } else {
                        u
                    }
                };
                ds /= 2;
            }
            idx += 1;
        }
    }
    let h = b.group_norm(h, "out.0", 32, 1e-5, true, None)?;
    let out = b.conv3(h, "out.2", c.out_channels);
    Ok(b.finish(x, out))
}

/// diffusers `UNet2DModel.__init__` / `forward`, block for block.
fn build_diffusers(c: &DiffusersConfig, old_names: bool) -> Result<Graph, GraphError> {
    let mut b = Builder::new();
    let boc = &c.block_out_channels;
    let ted = c.time_embedding_dim.unwrap_or(boc[0] * 4);
    let groups = c.norm_num_groups;
    let eps = c.norm_eps;
    let ro = |out_scale: f32| ResOpts {
        scale_shift: c.scale_shift,
        groups,
        eps,
        out_scale,
        updown: UpDown::None,
    };
    let res_names = |p: &str| ResNames {
        in_norm: format!("{p}.norm1"),
        in_conv: format!("{p}.conv1"),
        emb: format!("{p}.time_emb_proj"),
        out_norm: format!("{p}.norm2"),
        out_conv: format!("{p}.conv2"),
        skip: format!("{p}.conv_shortcut"),
    };
    let attn_names = |p: &str, norm: bool| {
        let (q, k, v, o) = if old_names {
            ("query", "key", "value", "proj_attn")
        } else {
            ("to_q", "to_k", "to_v", "to_out.0")
        };
        AttnNames {
            norm: norm.then(|| format!("{p}.group_norm")),
            qkv_w: [q, k, v].iter().map(|n| format!("{p}.{n}.weight")).collect(),
            qkv_b: [q, k, v].iter().map(|n| format!("{p}.{n}.bias")).collect(),
            proj_w: format!("{p}.{o}.weight"),
            proj_b: format!("{p}.{o}.bias"),
            conv1d: false,
        }
    };
    let heads = |ch: usize| -> Result<usize, GraphError> {
        let hd = c.attention_head_dim.unwrap_or(ch);
        if hd == 0 || ch % hd != 0 {
            return Err(GraphError::Unsupported(format!(
                "{ch} channels are not a multiple of attention_head_dim {hd}"
            )));
        }
        Ok(ch / hd)
    };

    let x = b.act(Act::Image {
        c: c.in_channels,
        ds: 1,
    });
    let temb = b.act(Act::Vector { d: boc[0] });
    let half = boc[0] / 2;
    b.g.layers.push(Layer::Timestep {
        y: temb,
        dim: boc[0],
        cos_first: c.flip_sin_to_cos,
        freqs: timestep_freqs(half, half as f64 - c.freq_shift),
    });
    let emb = b.linear(temb, "time_embedding.linear_1", ted, false, true);
    let emb = b.linear(emb, "time_embedding.linear_2", ted, false, false);

    let mut h = b.conv3(x, "conv_in", boc[0]);
    let mut hs = vec![h];
    for (i, t) in c.down_block_types.iter().enumerate() {
        let cout = boc[i];
        let attn = t == "AttnDownBlock2D";
        for j in 0..c.layers_per_block {
            let p = format!("down_blocks.{i}");
            h = b.resblock(h, emb, &res_names(&format!("{p}.resnets.{j}")), cout, &ro(1.0))?;
            if attn {
                h = b.attention(
                    h,
                    &attn_names(&format!("{p}.attentions.{j}"), true),
                    heads(cout)?,
                    QkvOrder::Split,
                    false,
                    groups,
                    eps,
                    1.0,
                )?;
            }
            hs.push(h);
        }
        if i + 1 != boc.len() {
            let pd = c.downsample_padding;
            // Downsample2D with padding 0 pads (0, 1, 0, 1) itself before the conv.
            let pad = if pd == 0 { [0, 0, 1, 1] } else { [pd; 4] };
            h = b.conv(
                h,
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                cout,
                3,
                2,
                pad,
                Residual::None,
                1.0,
            );
            hs.push(h);
        }
    }
    if c.mid_block {
        let cm = *boc.last().expect("validated non-empty");
        let f = c.mid_block_scale_factor;
        h = b.resblock(h, emb, &res_names("mid_block.resnets.0"), cm, &ro(f))?;
        if c.add_attention {
            // UNetMidBlock2D: attention GroupNorm only when attn groups are known.
            let attn_groups = c
                .attn_norm_num_groups
                .or(if c.scale_shift { None } else { Some(groups) });
            h = b.attention(
                h,
                &attn_names("mid_block.attentions.0", attn_groups.is_some()),
                heads(cm)?,
                QkvOrder::Split,
                false,
                attn_groups.unwrap_or(groups),
                eps,
                f,
            )?;
        }
        h = b.resblock(h, emb, &res_names("mid_block.resnets.1"), cm, &ro(f))?;
    }
    let rev: Vec<usize> = boc.iter().rev().copied().collect();
    for (i, t) in c.up_block_types.iter().enumerate() {
        let cout = rev[i];
        let attn = t == "AttnUpBlock2D";
        for j in 0..=c.layers_per_block {
            let p = format!("up_blocks.{i}");
            let skip = hs
                .pop()
                .ok_or_else(|| GraphError::Unsupported("more up-block layers than skips".into()))?;
            let cat = b.concat(h, skip);
            h = b.resblock(cat, emb, &res_names(&format!("{p}.resnets.{j}")), cout, &ro(1.0))?;
            if attn {
                h = b.attention(
                    h,
                    &attn_names(&format!("{p}.attentions.{j}"), true),
                    heads(cout)?,
                    QkvOrder::Split,
                    false,
                    groups,
                    eps,
                    1.0,
                )?;
            }
        }
        if i + 1 != rev.len() {
            let u = b.resample(h, true);
            h = b.conv3(u, &format!("up_blocks.{i}.upsamplers.0.conv"), cout);
        }
    }
    let h = b.group_norm(h, "conv_norm_out", groups, eps, true, None)?;
    let out = b.conv3(h, "conv_out", c.out_channels);
    Ok(b.finish(x, out))
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
