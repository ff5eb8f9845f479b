//! The forward plan: every activation buffer allocated once per (model, batch,
//! resolution), every bind group built once, the whole network recorded as one
//! list of dispatches and replayed into one encoder with one submission.
//!
//! Every activation of the graph keeps its own buffer (nothing is reused in
//! place), together with the GroupNorm statistics and attention log-sum-exps,
//! so the backward pass can walk `records` in reverse over the saved values.

use thiserror::Error;

use super::graph::{Act, Layer, QkvOrder, Residual};
use super::Unet;
use crate::gpu::{Dispatch, Gpu, GpuError, Plan};
use crate::kernels::attention::{attention, AttentionShape};
use crate::kernels::conv2d::{conv2d, Conv2dShape, ConvResidual, ConvTiles};
use crate::kernels::groupnorm::{group_norm, GroupNormShape};
use crate::kernels::linear::linear;
use crate::kernels::resample::{avg_pool2x2, copy_channels, upsample_nearest2x};
use crate::kernels::timestep::timestep_embedding;
use crate::tensor::Tensor;

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("input of {h}x{w} pixels: this U-Net needs height and width that are positive multiples of {multiple}")]
    Resolution { h: usize, w: usize, multiple: usize },
    #[error("{what}: expected {expected:?}, got {got:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

/// One planned layer: the graph's description, its dispatches, and what it
/// saved for the backward pass (GroupNorm mean/rstd, attention lse).
pub struct LayerRecord {
    pub layer: Layer,
    pub dispatches: Vec<Dispatch>,
    pub saved: Option<Tensor>,
}

/// A U-Net forward pass planned for one batch size and resolution.
pub struct UnetForward {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// One tensor per graph activation; `acts[graph.input]` is x.
    pub acts: Vec<Tensor>,
    /// Timesteps [N] (float, in the model's original 0..T-1 scale).
    pub t: Tensor,
    pub records: Vec<LayerRecord>,
    input: usize,
    output: usize,
    _freqs: Vec<wgpu::Buffer>,
    _dummy: wgpu::Buffer,
}

impl UnetForward {
    /// Plans a forward pass for `batch` images of `height` x `width`; x and t
    /// live in buffers of the plan ([`UnetForward::input`], [`UnetForward::t`]).
    pub fn new(gpu: &Gpu, unet: &Unet, batch: usize, height: usize, width: usize) -> Result<UnetForward, ForwardError> {
        Self::plan_with(gpu, unet, batch, height, width, None)
    }

    /// Plans a forward pass that reads x [N, C, H, W] straight from the
    /// caller's tensor (a sampler's x_t), so no copy precedes each call.
    pub fn with_input(gpu: &Gpu, unet: &Unet, x: &Tensor) -> Result<UnetForward, ForwardError> {
        let c = unet.config.in_channels();
        match x.shape[..] {
            [n, xc, h, w] if xc == c => Self::plan_with(gpu, unet, n, h, w, Some(x.clone())),
            _ => Err(ForwardError::Shape {
                what: "U-Net input x".into(),
                expected: vec![0, c, 0, 0],
                got: x.shape.clone(),
            }),
        }
    }

    fn plan_with(
        gpu: &Gpu,
        unet: &Unet,
        batch: usize,
        height: usize,
        width: usize,
        input: Option<Tensor>,
    ) -> Result<UnetForward, ForwardError> {
        let g = &unet.graph;
        let m = g.max_ds;
        if batch == 0 || height == 0 || width == 0 || height % m != 0 || width % m != 0 {
            return Err(ForwardError::Resolution {
                h: height,
                w: width,
                multiple: m,
            });
        }
        let dims = |a: usize| -> Vec<usize> {
            match g.acts[a] {
                Act::Image { c, ds } => vec![batch, c, height / ds, width / ds],
                Act::Vector { d } => vec![batch, d],
            }
        };
        let acts = (0..g.acts.len())
            .map(|i| match &input {
                Some(x) if i == g.input => Ok(x.clone()),
                _ => Tensor::zeros(gpu, &format!("unet activation {i} {:?}", dims(i)), &dims(i)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = Tensor::zeros(gpu, "unet timesteps", &[batch])?;
        let dummy = gpu.storage_buffer("unet unused binding", 16)?;
        let w = &unet.weights;
        let mut freqs = Vec::new();
        let mut records = Vec::new();
        for layer in &g.layers {
            let mut saved = None;
            let dispatches = match layer {
                Layer::Timestep {
                    y,
                    dim,
                    cos_first,
                    freqs: f,
                } => {
                    let fb = gpu.upload("timestep freqs", if f.is_empty() { &[0f32][..] } else { f })?;
                    let d = timestep_embedding(gpu, batch, *dim, *cos_first, &t.buffer, &fb, &acts[*y].buffer)?;
                    freqs.push(fb);
                    vec![d]
                }
                Layer::Linear {
                    x,
                    y,
                    w: wn,
                    b: bn,
                    din,
                    dout,
                    silu_in,
                    silu_out,
                } => {
                    vec![linear(
                        gpu,
                        batch,
                        *din,
                        *dout,
                        &acts[*x].buffer,
                        w.get(wn),
                        w.get(bn),
                        *silu_in,
                        *silu_out,
                        &acts[*y].buffer,
                    )?]
                }
                Layer::Conv {
                    x,
                    y,
                    w: wn,
                    b: bn,
                    cin,
                    cout,
                    k,
                    stride,
                    pad,
                    res,
                    out_scale,
                } => {
                    let xs = &acts[*x].shape;
                    let s = Conv2dShape {
                        n: batch,
                        cin: *cin,
                        h: xs[2],
                        w: xs[3],
                        cout: *cout,
                        ks: *k,
                        stride: *stride,
                        pad: *pad,
                    };
                    let (ho, wo) = s.out_hw();
                    let ys = &acts[*y].shape;
                    if [ho, wo] != [ys[2], ys[3]] {
                        return Err(ForwardError::Resolution {
                            h: height,
                            w: width,
                            multiple: m,
                        });
                    }
                    let tiles = ConvTiles::for_gemm(gpu, *cout, batch * ho * wo);
                    let r = match res {
                        Residual::None => ConvResidual::None,
                        Residual::Full(a) => ConvResidual::Full(&acts[*a].buffer, 0),
                        Residual::Channel(a) => ConvResidual::Channel(&acts[*a].buffer, 0, acts[*a].shape[1]),
                    };
                    vec![conv2d(
                        gpu,
                        &tiles,
                        &s,
                        &acts[*x].buffer,
                        w.get(wn),
                        w.get(bn),
                        r,
                        *out_scale,
                        &acts[*y].buffer,
                        &dummy,
                    )?]
                }
                Layer::GroupNorm {
                    x,
                    y,
                    gamma,
                    beta,
                    c,
                    groups,
                    eps,
                    silu,
                    scale_shift,
                } => {
                    let xs = &acts[*x].shape;
                    let s = GroupNormShape {
                        n: batch,
                        c: *c,
                        hw: xs[2] * xs[3],
                        groups: *groups,
                        eps: *eps,
                    };
                    let stats = Tensor::zeros(gpu, "groupnorm stats", &[batch, *groups, 2])?;
                    let (wb, goff) = w.get(gamma);
                    let (wb2, boff) = w.get(beta);
                    assert!(std::ptr::eq(wb, wb2), "gamma and beta share a parameter group");
                    let ss = scale_shift.map(|e| (&acts[e].buffer, 0));
                    let d = group_norm(
                        gpu,
                        &s,
                        &acts[*x].buffer,
                        &stats.buffer,
                        wb,
                        goff,
                        boff,
                        ss,
                        *silu,
                        &acts[*y].buffer,
                        &dummy,
                    )?;
                    saved = Some(stats);
                    d.into()
                }
                Layer::Attention {
                    qkv,
                    y,
                    heads,
                    ch,
                    order,
                    scale_q,
                    scale_k,
                } => {
                    let qs = &acts[*qkv].shape;
                    let t_len = qs[2] * qs[3];
                    let s = AttentionShape {
                        n: batch,
                        heads: *heads,
                        ch: *ch,
                        t: t_len,
                        split_order: *order == QkvOrder::Split,
                        scale_q: *scale_q,
                        scale_k: *scale_k,
                    };
                    let lse = Tensor::zeros(gpu, "attention lse", &[batch, *heads, t_len])?;
                    let d = attention(gpu, &s, &acts[*qkv].buffer, &acts[*y].buffer, &lse.buffer)?;
                    saved = Some(lse);
                    vec![d]
                }
                Layer::Upsample { x, y } => {
                    let s = &acts[*x].shape;
                    vec![upsample_nearest2x(
                        gpu,
                        batch,
                        s[1],
                        s[2],
                        s[3],
                        &acts[*x].buffer,
                        &acts[*y].buffer,
                    )?]
                }
                Layer::AvgPool { x, y } => {
                    let s = &acts[*x].shape;
                    vec![avg_pool2x2(
                        gpu,
                        batch,
                        s[1],
                        s[2],
                        s[3],
                        &acts[*x].buffer,
                        &acts[*y].buffer,
                    )?]
                }
                Layer::Concat { a, b, y } => {
                    let (sa, sb) = (&acts[*a].shape, &acts[*b].shape);
                    let hw = sa[2] * sa[3];
                    let ct = sa[1] + sb[1];
                    vec![
                        copy_channels(gpu, batch, sa[1], hw, ct, 0, &acts[*a].buffer, &acts[*y].buffer)?,
                        copy_channels(gpu, batch, sb[1], hw, ct, sa[1], &acts[*b].buffer, &acts[*y].buffer)?,
                    ]
                }
            };
            records.push(LayerRecord {
                layer: layer.clone(),
                dispatches,
                saved,
            });
        }
        Ok(UnetForward {
            batch,
            height,
            width,
            acts,
            t,
            records,
            input: g.input,
            output: g.output,
            _freqs: freqs,
            _dummy: dummy,
        })
    }

    /// x [N, C, H, W].
    pub fn input(&self) -> &Tensor {
        &self.acts[self.input]
    }

    /// The model output [N, out_channels, H, W] (eps, or [eps, v] with learned sigma).
    pub fn output(&self) -> &Tensor {
        &self.acts[self.output]
    }

    /// Records the whole forward pass into a compute pass (no submission).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for r in &self.records {
            for d in &r.dispatches {
                d.record(pass);
            }
        }
    }

    /// The forward pass as a [`Plan`] (for composing with other work).
    pub fn plan(&self) -> Plan {
        let mut p = Plan::new();
        for r in &self.records {
            for d in &r.dispatches {
                p.push(d.clone());
            }
        }
        p
    }

    /// Submits the forward pass once (inputs already in `input()` and `t`).
    pub fn submit(&self, gpu: &Gpu) -> Result<(), GpuError> {
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("unet forward"),
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("unet forward"),
                timestamp_writes: None,
            });
            self.record(&mut pass);
        }
        gpu.submit_checked("unet forward", enc)
    }

    /// Writes x and t (checked against the planned shapes).
    pub fn write_inputs(&self, gpu: &Gpu, x: &[f32], t: &[f32]) -> Result<(), ForwardError> {
        if x.len() != self.input().numel() {
            return Err(ForwardError::Shape {
                what: "U-Net input x".into(),
                expected: self.input().shape.clone(),
                got: vec![x.len()],
            });
        }
        if t.len() != self.batch {
            return Err(ForwardError::Shape {
                what: "U-Net timesteps t".into(),
                expected: vec![self.batch],
                got: vec![t.len()],
            });
        }
        self.input().write(gpu, x)?;
        self.t.write(gpu, t)?;
        Ok(())
    }

    /// Writes x and t, runs, reads the output back (a sync point).
    pub fn run(&self, gpu: &Gpu, x: &[f32], t: &[f32]) -> Result<Vec<f32>, ForwardError> {
        self.write_inputs(gpu, x, t)?;
        self.submit(gpu)?;
        Ok(self.output().read(gpu)?)
    }
}
