//! The vector-Jacobian product with respect to the input x, through the same
//! planned graph: the forward plan's layer records walked in reverse, each
//! layer's input gradient computed from the activations and statistics the
//! forward pass kept. Gradient buffers are allocated once; the first
//! contribution to a gradient overwrites it and later ones accumulate (an
//! activation feeding several layers: ResBlock input to its norm and its skip,
//! skip tensors to the next block and to the concat), so no clearing pass is
//! needed and forward + backward replay in one compute pass.
//!
//! The time embedding depends on t only, so no gradient flows into it.

use super::forward::{ForwardError, UnetForward};
use super::graph::{Act, Layer, QkvOrder, Residual};
use super::Unet;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::attention::{attention_bwd, AttentionShape};
use crate::kernels::conv2d::{conv2d_bwd_data, Conv2dShape, ConvTiles};
use crate::kernels::elementwise::{Elementwise, Op};
use crate::kernels::groupnorm::{group_norm_bwd, GroupNormShape};
use crate::kernels::resample::{avg_pool2x2_bwd, slice_channels, upsample_nearest2x_bwd};
use crate::tensor::Tensor;

/// The backward dispatches of one forward layer.
pub struct BackwardRecord {
    /// Index into the forward plan's `records`.
    pub layer: usize,
    pub dispatches: Vec<Dispatch>,
}

/// d out / d x transposed, applied to a cotangent, planned for one forward plan.
pub struct UnetVjp {
    /// The cotangent (shape of the output); also the gradient of the output activation.
    pub cotangent: Tensor,
    /// Gradient per activation (image activations only).
    pub grads: Vec<Option<Tensor>>,
    pub records: Vec<BackwardRecord>,
    input: usize,
    _scratch: Vec<wgpu::Buffer>,
}

impl UnetVjp {
    /// Plans the VJP of a planned forward pass; the cotangent lives in
    /// [`UnetVjp::cotangent`].
    pub fn new(gpu: &Gpu, unet: &Unet, fwd: &UnetForward) -> Result<UnetVjp, ForwardError> {
        let cotangent = Tensor::zeros(gpu, "unet cotangent", &fwd.output().shape)?;
        Self::with_cotangent(gpu, unet, fwd, &cotangent)
    }

    /// Plans the VJP reading the cotangent straight from the caller's tensor
    /// (shaped like the output), e.g. a sampler's d loss / d eps.
    pub fn with_cotangent(
        gpu: &Gpu,
        unet: &Unet,
        fwd: &UnetForward,
        cotangent: &Tensor,
    ) -> Result<UnetVjp, ForwardError> {
        if cotangent.shape != fwd.output().shape {
            return Err(ForwardError::Shape {
                what: "U-Net cotangent".into(),
                expected: fwd.output().shape.clone(),
                got: cotangent.shape.clone(),
            });
        }
        let cotangent = cotangent.clone();
        let g = &unet.graph;
        let n = fwd.batch;
        let acts = &fwd.acts;
        let mut grads: Vec<Option<Tensor>> = Vec::with_capacity(acts.len());
        for (i, a) in g.acts.iter().enumerate() {
            grads.push(match a {
                Act::Image { .. } if i == g.output => Some(cotangent.clone()),
                Act::Image { .. } => Some(Tensor::zeros(gpu, &format!("unet gradient {i}"), &acts[i].shape)?),
                Act::Vector { .. } => None,
            });
        }
        // written[a]: a gradient has been stored into grads[a] already (accumulate from then on).
        let mut written = vec![false; acts.len()];
        written[g.output] = true;
        let w = &unet.weights;
        let dummy = gpu.storage_buffer("unet bwd unused binding", 16)?;
        let mut scratch = Vec::new();
        let mut records = Vec::new();
        let gb = |a: usize| &grads[a].as_ref().expect("image activation has a gradient").buffer;
        for (li, rec) in fwd.records.iter().enumerate().rev() {
            let mut ds: Vec<Dispatch> = Vec::new();
            let mut take = |a: usize| {
                let acc = written[a];
                written[a] = true;
                acc
            };
            match &rec.layer {
                Layer::Timestep { .. } | Layer::Linear { .. } => {}
                Layer::Conv {
                    x,
                    y,
                    w: wn,
                    cin,
                    cout,
                    k,
                    stride,
                    pad,
                    res,
                    out_scale,
                    ..
                } => {
                    let xs = &acts[*x].shape;
                    let s = Conv2dShape {
                        n,
                        cin: *cin,
                        h: xs[2],
                        w: xs[3],
                        cout: *cout,
                        ks: *k,
                        stride: *stride,
                        pad: *pad,
                    };
                    let acc = take(*x);
                    let tiles = ConvTiles::for_gemm(gpu, *cin, n * xs[2] * xs[3]);
                    ds.push(conv2d_bwd_data(
                        gpu,
                        &tiles,
                        &s,
                        gb(*y),
                        w.get(wn),
                        *out_scale,
                        acc,
                        gb(*x),
                    )?);
                    if let Residual::Full(r) = res {
                        let (dy, dr) = (grads[*y].as_ref().unwrap(), grads[*r].as_ref().unwrap());
                        let e = if take(*r) {
                            Elementwise::new(gpu, Op::Axpby, dy, dr, *out_scale, 1.0)?
                        } else {
                            Elementwise::new(gpu, Op::Affine, dy, dr, *out_scale, 0.0)?
                        };
                        ds.push(e.dispatch);
                    }
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
                        n,
                        c: *c,
                        hw: xs[2] * xs[3],
                        groups: *groups,
                        eps: *eps,
                    };
                    let stats = rec.saved.as_ref().expect("GroupNorm keeps its statistics");
                    let (wb, goff) = w.get(gamma);
                    let (_, boff) = w.get(beta);
                    let ss = scale_shift.map(|e| (&acts[e].buffer, 0));
                    let acc = take(*x);
                    let d = group_norm_bwd(
                        gpu,
                        &s,
                        &acts[*x].buffer,
                        &stats.buffer,
                        wb,
                        goff,
                        boff,
                        ss,
                        *silu,
                        gb(*y),
                        gb(*x),
                        acc,
                        &dummy,
                    )?;
                    ds.extend(d);
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
                        n,
                        heads: *heads,
                        ch: *ch,
                        t: t_len,
                        split_order: *order == QkvOrder::Split,
                        scale_q: *scale_q,
                        scale_k: *scale_k,
                    };
                    let lse = rec.saved.as_ref().expect("attention keeps its log-sum-exps");
                    let dsum = gpu.storage_buffer("attention bwd D", (n * heads * t_len * 4) as u64)?;
                    let acc = take(*qkv);
                    let d = attention_bwd(
                        gpu,
                        &s,
                        &acts[*qkv].buffer,
                        &acts[*y].buffer,
                        &lse.buffer,
                        gb(*y),
                        &dsum,
                        gb(*qkv),
                        acc,
                    )?;
                    ds.extend(d);
                    scratch.push(dsum);
                }
                Layer::Upsample { x, y } => {
                    let s = &acts[*x].shape;
                    let acc = take(*x);
                    ds.push(upsample_nearest2x_bwd(gpu, n, s[1], s[2], s[3], gb(*y), gb(*x), acc)?);
                }
                Layer::AvgPool { x, y } => {
                    let s = &acts[*x].shape;
                    let acc = take(*x);
                    ds.push(avg_pool2x2_bwd(gpu, n, s[1], s[2], s[3], gb(*y), gb(*x), acc)?);
                }
                Layer::Concat { a, b, y } => {
                    let (sa, sb) = (&acts[*a].shape, &acts[*b].shape);
                    let hw = sa[2] * sa[3];
                    let ct = sa[1] + sb[1];
                    let acc = take(*a);
                    ds.push(slice_channels(gpu, n, sa[1], hw, ct, 0, gb(*y), gb(*a), acc)?);
                    let acc = take(*b);
                    ds.push(slice_channels(gpu, n, sb[1], hw, ct, sa[1], gb(*y), gb(*b), acc)?);
                }
            }
            records.push(BackwardRecord {
                layer: li,
                dispatches: ds,
            });
        }
        assert!(written[g.input], "the input receives a gradient");
        scratch.push(dummy);
        Ok(UnetVjp {
            cotangent,
            grads,
            records,
            input: g.input,
            _scratch: scratch,
        })
    }

    /// The VJP, (d out / d x)^T cotangent, shaped like x.
    pub fn dx(&self) -> &Tensor {
        self.grads[self.input].as_ref().expect("x is an image activation")
    }

    /// Records the backward dispatches (after the forward ones) into a pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for r in &self.records {
            for d in &r.dispatches {
                d.record(pass);
            }
        }
    }

    /// The backward pass as a [`Plan`] (to follow the forward plan in a larger one).
    pub fn plan(&self) -> crate::gpu::Plan {
        let mut p = crate::gpu::Plan::new();
        for r in &self.records {
            for d in &r.dispatches {
                p.push(d.clone());
            }
        }
        p
    }

    /// Forward then backward in one compute pass, one submission.
    pub fn submit(&self, gpu: &Gpu, fwd: &UnetForward) -> Result<(), GpuError> {
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("unet vjp"),
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("unet vjp"),
                timestamp_writes: None,
            });
            fwd.record(&mut pass);
            self.record(&mut pass);
        }
        gpu.submit_checked("unet vjp", enc)
    }

    /// Writes x, t and the cotangent; returns (out, vjp).
    pub fn run(
        &self,
        gpu: &Gpu,
        fwd: &UnetForward,
        x: &[f32],
        t: &[f32],
        cotangent: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), ForwardError> {
        if cotangent.len() != self.cotangent.numel() {
            return Err(ForwardError::Shape {
                what: "U-Net cotangent".into(),
                expected: self.cotangent.shape.clone(),
                got: vec![cotangent.len()],
            });
        }
        fwd.write_inputs(gpu, x, t)?;
        self.cotangent.write(gpu, cotangent)?;
        self.submit(gpu, fwd)?;
        Ok((fwd.output().read(gpu)?, self.dx().read(gpu)?))
    }
}
