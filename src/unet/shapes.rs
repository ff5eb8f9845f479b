//! Concrete sizes of the graph at one batch size N and resolution H x W: the
//! one place the forward plan, the backward plan and the profiler read
//! activation and per-layer kernel shapes from.

use super::graph::{Act, ActId, Graph, Layer, QkvOrder};
use crate::kernels::attention::AttentionShape;
use crate::kernels::conv2d::Conv2dShape;
use crate::kernels::groupnorm::GroupNormShape;

/// One layer's sizes at a planned (N, H, W), in the form its kernels take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerShape {
    /// t [n] -> y [n, dim].
    Timestep {
        n: usize,
        dim: usize,
    },
    /// x [n, din] -> y [n, dout].
    Linear {
        n: usize,
        din: usize,
        dout: usize,
    },
    /// x [n, cin, h, w] -> y [n, cout, ho, wo]; `out` is y's planned (ho, wo),
    /// which the kernel's own `out_hw()` must match.
    Conv {
        shape: Conv2dShape,
        out: (usize, usize),
    },
    GroupNorm(GroupNormShape),
    Attention(AttentionShape),
    /// Upsample / AvgPool of x [n, c, h, w].
    Resample {
        n: usize,
        c: usize,
        h: usize,
        w: usize,
    },
    /// a [n, ca, hw] and b [n, cb, hw] -> y [n, ca + cb, hw].
    Concat {
        n: usize,
        ca: usize,
        cb: usize,
        hw: usize,
    },
}

impl LayerShape {
    /// What the forward pass keeps for the backward one, (label, shape):
    /// GroupNorm's per-(sample, group) [mean, rstd], attention's log-sum-exps.
    pub fn saved(&self) -> Option<(&'static str, Vec<usize>)> {
        match *self {
            LayerShape::GroupNorm(s) => Some(("groupnorm stats", vec![s.n, s.groups, 2])),
            LayerShape::Attention(s) => Some(("attention lse", vec![s.n, s.heads, s.t])),
            _ => None,
        }
    }
}

impl Graph {
    /// Shape of activation `a` for `n` images of `h` x `w`:
    /// [n, c, h/ds, w/ds] or [n, d].
    pub fn act_shape(&self, a: ActId, n: usize, h: usize, w: usize) -> Vec<usize> {
        match self.acts[a] {
            Act::Image { c, ds } => vec![n, c, h / ds, w / ds],
            Act::Vector { d } => vec![n, d],
        }
    }

    /// Sizes of `layer` (one of this graph's) for `n` images of `h` x `w`.
    pub fn layer_shape(&self, layer: &Layer, n: usize, h: usize, w: usize) -> LayerShape {
        let dims = |a: ActId| self.act_shape(a, n, h, w);
        match layer {
            Layer::Timestep { dim, .. } => LayerShape::Timestep { n, dim: *dim },
            Layer::Linear { din, dout, .. } => LayerShape::Linear {
                n,
                din: *din,
                dout: *dout,
            },
            Layer::Conv {
                x,
                y,
                cin,
                cout,
                k,
                stride,
                pad,
                ..
            } => {
                let (xs, ys) = (dims(*x), dims(*y));
                LayerShape::Conv {
                    shape: Conv2dShape {
                        n,
                        cin: *cin,
                        h: xs[2],
                        w: xs[3],
                        cout: *cout,
                        ks: *k,
                        stride: *stride,
                        pad: *pad,
                    },
                    out: (ys[2], ys[3]),
                }
            }
            Layer::GroupNorm { x, c, groups, eps, .. } => {
                let xs = dims(*x);
                LayerShape::GroupNorm(GroupNormShape {
                    n,
                    c: *c,
                    hw: xs[2] * xs[3],
                    groups: *groups,
                    eps: *eps,
                })
            }
            Layer::Attention {
                qkv,
                heads,
                ch,
                order,
                scale_q,
                scale_k,
                ..
            } => {
                let qs = dims(*qkv);
                LayerShape::Attention(AttentionShape {
                    n,
                    heads: *heads,
                    ch: *ch,
                    t: qs[2] * qs[3],
                    split_order: *order == QkvOrder::Split,
                    scale_q: *scale_q,
                    scale_k: *scale_k,
                })
            }
            Layer::Upsample { x, .. } | Layer::AvgPool { x, .. } => {
                let s = dims(*x);
                LayerShape::Resample {
                    n,
                    c: s[1],
                    h: s[2],
                    w: s[3],
                }
            }
            Layer::Concat { a, b, .. } => {
                let (sa, sb) = (dims(*a), dims(*b));
                LayerShape::Concat {
                    n,
                    ca: sa[1],
                    cb: sb[1],
                    hw: sa[2] * sa[3],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::config::UnetConfig;

    /// Every convolution's planned output matches what its kernel computes,
    /// and the layer shapes agree with the activations they read and write.
    #[test]
    fn ffhq_layer_shapes_are_consistent() {
        let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
        let (n, h, w) = (2, 64, 96);
        for layer in &g.layers {
            match (layer, g.layer_shape(layer, n, h, w)) {
                (Layer::Conv { y, .. }, LayerShape::Conv { shape, out }) => {
                    assert_eq!(shape.out_hw(), out);
                    assert_eq!(g.act_shape(*y, n, h, w), vec![n, shape.cout, out.0, out.1]);
                }
                (Layer::GroupNorm { y, .. }, s @ LayerShape::GroupNorm(gn)) => {
                    let ys = g.act_shape(*y, n, h, w);
                    assert_eq!(ys[1] * ys[2] * ys[3], gn.c * gn.hw);
                    assert_eq!(s.saved().unwrap().1, vec![n, gn.groups, 2]);
                }
                (Layer::Attention { y, .. }, LayerShape::Attention(a)) => {
                    let ys = g.act_shape(*y, n, h, w);
                    assert_eq!([ys[1], ys[2] * ys[3]], [a.heads * a.ch, a.t]);
                }
                (Layer::Concat { y, .. }, LayerShape::Concat { ca, cb, hw, .. }) => {
                    let ys = g.act_shape(*y, n, h, w);
                    assert_eq!([ys[1], ys[2] * ys[3]], [ca + cb, hw]);
                }
                (Layer::Timestep { .. }, LayerShape::Timestep { .. })
                | (Layer::Linear { .. }, LayerShape::Linear { .. })
                | (Layer::Upsample { .. }, LayerShape::Resample { .. })
                | (Layer::AvgPool { .. }, LayerShape::Resample { .. }) => {}
                (l, s) => panic!("{l:?} sized as {s:?}"),
            }
        }
    }
}
