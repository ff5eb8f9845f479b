//! diffusers `UNet2DModel` (google/ddpm-*, converted checkpoints) lowered to
//! the layer IR: `down_blocks.*`, `mid_block.*`, `up_blocks.*` keys, separate
//! q/k/v projections (new or pre-0.14 names), split qkv order.

use super::builder::{AttnNames, AttnOpts, Builder, ConvSpec, ResNames, ResOpts, UpDown};
use super::config::DiffusersConfig;
use super::graph::{timestep_freqs, Act, Graph, GraphError, QkvOrder};

/// diffusers `UNet2DModel.__init__` / `forward`, block for block.
pub(super) fn build(c: &DiffusersConfig, old_names: bool) -> Result<Graph, GraphError> {
    let mut b = Builder::new();
    let boc = &c.block_out_channels;
    let ted = c.time_embedding_dim.unwrap_or(boc[0] * 4);
    let groups = c.norm_num_groups;
    let eps = c.norm_eps;
    // diffusers' attention blocks: split qkv order, scores scaled by ch^-1/2.
    let ao = |heads, groups, out_scale| AttnOpts {
        heads,
        order: QkvOrder::Split,
        legacy_scale: false,
        groups,
        eps,
        out_scale,
    };
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
    let half = boc[0] / 2;
    let temb = b.timestep(
        boc[0],
        c.flip_sin_to_cos,
        timestep_freqs(half, half as f64 - c.freq_shift),
    );
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
                    &ao(heads(cout)?, groups, 1.0),
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
                ConvSpec::new(cout, 3, 2, pad),
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
                &ao(heads(cm)?, attn_groups.unwrap_or(groups), f),
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
                    &ao(heads(cout)?, groups, 1.0),
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
