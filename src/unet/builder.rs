//! The builder both lowerings share: activations and parameters registered
//! as layers are appended, and the composite blocks every supported U-Net is
//! made of (residual block, self-attention block), parameterised by upstream
//! key names so each architecture only supplies its naming and block order.

use super::graph::{Act, ActId, Graph, GraphError, Layer, Param, QkvOrder, Residual};
use super::layers::{Attention, AvgPool, Concat, Conv, GroupNorm, Linear, Timestep, Upsample};

pub(super) struct Builder {
    g: Graph,
}

/// Key names of one residual block's pieces.
pub(super) struct ResNames {
    pub(super) in_norm: String,
    pub(super) in_conv: String,
    pub(super) emb: String,
    pub(super) out_norm: String,
    pub(super) out_conv: String,
    pub(super) skip: String,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum UpDown {
    None,
    Up,
    Down,
}

pub(super) struct ResOpts {
    pub(super) scale_shift: bool,
    pub(super) groups: usize,
    pub(super) eps: f32,
    pub(super) out_scale: f32,
    pub(super) updown: UpDown,
}

/// A convolution's output channels, k x k geometry and epilogue.
#[derive(Clone, Copy)]
pub(super) struct ConvSpec {
    pub(super) cout: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    /// [top, left, bottom, right]
    pub(super) pad: [usize; 4],
    pub(super) res: Residual,
    pub(super) out_scale: f32,
}

impl ConvSpec {
    /// No residual, output scale 1.
    pub(super) fn new(cout: usize, k: usize, stride: usize, pad: [usize; 4]) -> ConvSpec {
        ConvSpec {
            cout,
            k,
            stride,
            pad,
            res: Residual::None,
            out_scale: 1.0,
        }
    }
}

/// An attention block's heads, qkv layout and scaling, and its GroupNorm.
#[derive(Clone, Copy)]
pub(super) struct AttnOpts {
    pub(super) heads: usize,
    pub(super) order: QkvOrder,
    /// guided-diffusion's q and k each scaled by ch^-1/4 (else the scores by ch^-1/2).
    pub(super) legacy_scale: bool,
    pub(super) groups: usize,
    pub(super) eps: f32,
    /// The block's output is divided by this (diffusers' rescale_output_factor).
    pub(super) out_scale: f32,
}

pub(super) struct AttnNames {
    pub(super) norm: Option<String>,
    /// Members of the qkv projection (one fused conv, or q, k, v), weights then biases.
    pub(super) qkv_w: Vec<String>,
    pub(super) qkv_b: Vec<String>,
    pub(super) proj_w: String,
    pub(super) proj_b: String,
    /// Weight shapes are [out, in, 1] (conv1d) or [out, in] (linear).
    pub(super) conv1d: bool,
}

impl Builder {
    pub(super) fn new() -> Builder {
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

    fn push(&mut self, layer: impl Into<Layer>) {
        self.g.layers.push(layer.into());
    }

    pub(super) fn act(&mut self, a: Act) -> ActId {
        if let Act::Image { ds, .. } = a {
            self.g.max_ds = self.g.max_ds.max(ds);
        }
        self.g.acts.push(a);
        self.g.acts.len() - 1
    }

    /// The sinusoidal embedding of t, a new [N, dim] activation.
    pub(super) fn timestep(&mut self, dim: usize, cos_first: bool, freqs: Vec<f32>) -> ActId {
        let y = self.act(Act::Vector { d: dim });
        self.push(Timestep {
            y,
            dim,
            cos_first,
            freqs,
        });
        y
    }

    pub(super) fn image(&self, a: ActId) -> (usize, usize) {
        match self.g.acts[a] {
            Act::Image { c, ds } => (c, ds),
            Act::Vector { .. } => unreachable!("image activation expected"),
        }
    }

    pub(super) fn params(&mut self, group: Vec<(String, Vec<usize>)>) {
        self.g
            .param_groups
            .push(group.into_iter().map(|(name, shape)| Param { name, shape }).collect());
    }

    pub(super) fn linear(&mut self, x: ActId, prefix: &str, dout: usize, silu_in: bool, silu_out: bool) -> ActId {
        let din = self.g.acts[x].channels();
        self.params(vec![
            (format!("{prefix}.weight"), vec![dout, din]),
            (format!("{prefix}.bias"), vec![dout]),
        ]);
        let y = self.act(Act::Vector { d: dout });
        self.push(Linear {
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
    pub(super) fn conv(&mut self, x: ActId, prefix: &str, spec: ConvSpec) -> ActId {
        let ConvSpec {
            cout,
            k,
            stride,
            pad,
            res,
            out_scale,
        } = spec;
        let (cin, ds) = self.image(x);
        self.params(vec![
            (format!("{prefix}.weight"), vec![cout, cin, k, k]),
            (format!("{prefix}.bias"), vec![cout]),
        ]);
        let y = self.act(Act::Image {
            c: cout,
            ds: ds * stride,
        });
        self.push(Conv {
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

    pub(super) fn conv3(&mut self, x: ActId, prefix: &str, cout: usize) -> ActId {
        self.conv(x, prefix, ConvSpec::new(cout, 3, 1, [1; 4]))
    }

    pub(super) fn group_norm(
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
        self.push(GroupNorm {
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

    pub(super) fn resample(&mut self, x: ActId, up: bool) -> ActId {
        let (c, ds) = self.image(x);
        if up {
            let y = self.act(Act::Image { c, ds: ds / 2 });
            self.push(Upsample { x, y });
            y
        } else {
            let y = self.act(Act::Image { c, ds: ds * 2 });
            self.push(AvgPool { x, y });
            y
        }
    }

    pub(super) fn concat(&mut self, a: ActId, b: ActId) -> ActId {
        let (ca, ds) = self.image(a);
        let (cb, dsb) = self.image(b);
        assert_eq!(ds, dsb, "concat of different resolutions");
        let y = self.act(Act::Image { c: ca + cb, ds });
        self.push(Concat { a, b, y });
        y
    }

    /// guided-diffusion `ResBlock` / diffusers `ResnetBlock2D` (same dataflow).
    pub(super) fn resblock(
        &mut self,
        x: ActId,
        emb: ActId,
        n: &ResNames,
        cout: usize,
        o: &ResOpts,
    ) -> Result<ActId, GraphError> {
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
            let spec = ConvSpec {
                res: Residual::Channel(e),
                ..ConvSpec::new(cout, 3, 1, [1; 4])
            };
            let h = self.conv(h, &n.in_conv, spec);
            self.group_norm(h, &n.out_norm, o.groups, o.eps, true, None)?
        };
        let skip = if cin != cout {
            self.conv(xs, &n.skip, ConvSpec::new(cout, 1, 1, [0; 4]))
        } else {
            xs
        };
        let spec = ConvSpec {
            res: Residual::Full(skip),
            out_scale: 1.0 / o.out_scale,
            ..ConvSpec::new(cout, 3, 1, [1; 4])
        };
        Ok(self.conv(h, &n.out_conv, spec))
    }

    pub(super) fn attention(&mut self, x: ActId, n: &AttnNames, o: &AttnOpts) -> Result<ActId, GraphError> {
        let AttnOpts {
            heads,
            order,
            legacy_scale,
            groups,
            eps,
            out_scale,
        } = *o;
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
        self.push(Conv {
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
        self.push(Attention {
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
        self.push(Conv {
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

    pub(super) fn finish(mut self, input: ActId, output: ActId) -> Graph {
        self.g.input = input;
        self.g.output = output;
        self.g
    }
}
