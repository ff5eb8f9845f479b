//! guided-diffusion / ADM `UNetModel` (DPS, DMPS and the OpenAI checkpoints)
//! lowered to the layer IR: `input_blocks.*`, `middle_block.*`,
//! `output_blocks.*` keys, legacy or split qkv order, scale-shift norm.

use super::builder::{AttnNames, AttnOpts, Builder, ConvSpec, ResNames, ResOpts, UpDown};
use super::config::AdmConfig;
use super::graph::{timestep_freqs, Act, Graph, GraphError, QkvOrder};

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
pub(super) fn build(c: &AdmConfig) -> Result<Graph, GraphError> {
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
    // guided-diffusion's attention blocks: GroupNorm(32, 1e-5) first, q and k scaled by ch^-1/4.
    let ao = |heads| AttnOpts {
        heads,
        order,
        legacy_scale: true,
        groups: 32,
        eps: 1e-5,
        out_scale: 1.0,
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
    let half = mc / 2;
    let temb = b.timestep(mc, true, timestep_freqs(half, half as f64));
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
                h = b.attention(h, &adm_attn_names(&format!("{p}.1")), &ao(heads_for(ch, c.num_heads)?))?;
            }
            hs.push(h);
            idx += 1;
        }
        if level != c.channel_mult.len() - 1 {
            let p = format!("input_blocks.{idx}.0");
            h = if c.resblock_updown {
                b.resblock(h, emb, &adm_res_names(&p), ch, &ro(UpDown::Down))?
            } else if c.conv_resample {
                b.conv(h, &format!("{p}.op"), ConvSpec::new(ch, 3, 2, [1; 4]))
            } else {
                b.resample(h, false)
            };
            hs.push(h);
            ds *= 2;
            idx += 1;
        }
    }
    h = b.resblock(h, emb, &adm_res_names("middle_block.0"), ch, &ro(UpDown::None))?;
    h = b.attention(h, &adm_attn_names("middle_block.1"), &ao(heads_for(ch, c.num_heads)?))?;
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
                h = b.attention(h, &adm_attn_names(&format!("{p}.1")), &ao(heads_for(ch, heads_up)?))?;
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
