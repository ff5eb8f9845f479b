//! A guided-diffusion `UNetModel`'s constructor arguments read from its state
//! dict alone (a checkpoint downloaded without its flags), and the flags a
//! model YAML (DPS's `configs/model_config.yaml`) gives.
//!
//! The tensors fix the channels, the level structure, where attention sits,
//! the learned variance and the ResBlock flavour. The head layout
//! (`num_heads`, `num_head_channels`, the QKV order) and the training
//! resolution leave no trace in any shape: they come from a config, or are
//! assumed (DPS's FFHQ values) and named as such.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use super::config::{AdmConfig, ConfigError, UnetConfig};
use crate::io::TensorFile;

/// A config read from tensors, and the fields it had to assume.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub config: AdmConfig,
    /// (field, assumed value) for every field no tensor determines.
    pub assumed: Vec<(&'static str, String)>,
}

/// The fields no shape determines (assumed without a config).
pub const ASSUMED: &[&str] = &[
    "image_size",
    "num_heads",
    "num_head_channels",
    "num_heads_upsample",
    "use_new_attention_order",
];

/// The [`ASSUMED`] fields of `c` with their values.
fn assumed_values(c: &AdmConfig) -> Vec<(&'static str, String)> {
    let values = [
        c.image_size.to_string(),
        c.num_heads.to_string(),
        c.num_head_channels.to_string(),
        c.num_heads_upsample.to_string(),
        c.use_new_attention_order.to_string(),
    ];
    ASSUMED.iter().copied().zip(values).collect()
}

/// create_model's default channel_mult per image size, read backwards (256 otherwise).
fn default_image_size(mult: &[f64]) -> usize {
    let defaults: [(usize, &[f64]); 4] = [
        (512, &[0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]),
        (256, &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0]),
        (128, &[1.0, 1.0, 2.0, 3.0, 4.0]),
        (64, &[1.0, 2.0, 3.0, 4.0]),
    ];
    defaults.iter().find(|(_, m)| *m == mult).map_or(256, |d| d.0)
}

/// `tweedie info --json`'s `config` (guided-diffusion's constructor names, or
/// diffusers' own config.json) and `assumed` (the fields read from neither
/// the checkpoint nor a config) for the model at `path`.
pub fn describe(path: &Path, config: &UnetConfig) -> (Value, Value) {
    let files = super::weights::ModelFiles::resolve(path).ok();
    let inferred = files
        .as_ref()
        .is_some_and(|f| crate::io::torch::is_torch_path(&f.weights) && !f.config.is_file());
    let assumed: Vec<&str> = if inferred { ASSUMED.to_vec() } else { Vec::new() };
    let json = match config {
        UnetConfig::Adm(c) => adm_json(c),
        UnetConfig::Diffusers(_) => files
            .and_then(|f| std::fs::read_to_string(f.config).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null),
    };
    (json, assumed.into())
}

/// Reads a guided-diffusion config from the keys and shapes of `file`.
pub fn infer_adm(file: &TensorFile) -> Result<Inferred, String> {
    let keys = file.keys();
    let shape = |k: &str| file.shape(k).ok();
    let need = |k: &str| shape(k).ok_or_else(|| format!("the state dict has no {k}"));
    let conv_in = shape("input_blocks.0.0.weight").ok_or(
        "no input_blocks.0.0.weight: not a guided-diffusion U-Net (a diffusers checkpoint needs its config.json)",
    )?;
    if keys.iter().any(|k| k.starts_with("label_emb.")) {
        return Err("label_emb: class-conditional models are not supported".into());
    }
    let (mc, in_channels) = (conv_in[0], conv_in[1]);
    let out_channels = need("out.2.weight")?[0];
    // Output blocks and their sub-module indices.
    let blocks: BTreeSet<(usize, usize)> = keys
        .iter()
        .filter_map(|k| {
            let mut p = k.strip_prefix("output_blocks.")?.split('.');
            Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
        })
        .collect();
    let count = blocks
        .iter()
        .map(|b| b.0 + 1)
        .max()
        .ok_or("the state dict has no output_blocks")?;
    if count > keys.len() {
        return Err(format!("output block {} without the blocks before it", count - 1));
    }
    let has = |i: usize, j: usize, tail: &str| file.has(&format!("output_blocks.{i}.{j}.{tail}"));
    // A level's last output block ends in an upsampler: Upsample's conv or
    // (resblock_updown) a ResBlock after the first sub-module.
    let up = blocks
        .iter()
        .find(|&&(i, j)| has(i, j, "conv.weight") || (j > 0 && has(i, j, "in_layers.0.weight")));
    let per_level = up.map_or(count, |&(i, _)| i + 1);
    if count % per_level != 0 {
        return Err(format!("{count} output blocks do not split into levels of {per_level}"));
    }
    let levels = count / per_level;
    let resblock_updown = up.is_some_and(|&(i, j)| has(i, j, "in_layers.0.weight"));
    let mut channel_mult = vec![0.0; levels];
    let mut attention_resolutions = BTreeSet::new();
    for i in 0..count {
        let level = levels - 1 - i / per_level;
        let ch = need(&format!("output_blocks.{i}.0.out_layers.3.weight"))?[0];
        channel_mult[level] = ch as f64 / mc as f64;
        if has(i, 1, "qkv.weight") {
            let ds = 1usize
                .checked_shl(level as u32)
                .ok_or("more levels than any U-Net has")?;
            attention_resolutions.insert(ds);
        }
    }
    let emb = need("output_blocks.0.0.emb_layers.1.weight")?[0];
    let top = need("output_blocks.0.0.out_layers.3.weight")?[0];
    let config = AdmConfig {
        image_size: default_image_size(&channel_mult),
        in_channels,
        model_channels: mc,
        out_channels,
        num_res_blocks: per_level - 1,
        attention_resolutions: attention_resolutions.into_iter().collect(),
        channel_mult,
        conv_resample: true,
        num_heads: 4,
        num_head_channels: 64,
        num_heads_upsample: -1,
        use_scale_shift_norm: emb == 2 * top,
        resblock_updown,
        use_new_attention_order: false,
    };
    Ok(Inferred {
        assumed: assumed_values(&config),
        config,
    })
}

/// The constructor arguments as `config.json` holds them (guided-diffusion's
/// names, `attention_resolutions` as downsample rates).
pub fn adm_json(c: &AdmConfig) -> Value {
    let mult: Vec<Value> = c
        .channel_mult
        .iter()
        .map(|&m| {
            if m.fract() == 0.0 {
                Value::from(m as u64)
            } else {
                Value::from(m)
            }
        })
        .collect();
    serde_json::json!({
        "architecture": "guided-diffusion",
        "image_size": c.image_size,
        "in_channels": c.in_channels,
        "model_channels": c.model_channels,
        "out_channels": c.out_channels,
        "num_res_blocks": c.num_res_blocks,
        "attention_resolutions": c.attention_resolutions,
        "dropout": 0.0,
        "channel_mult": mult,
        "conv_resample": c.conv_resample,
        "num_classes": null,
        "use_checkpoint": false,
        "use_fp16": false,
        "num_heads": c.num_heads,
        "num_head_channels": c.num_head_channels,
        "num_heads_upsample": c.num_heads_upsample,
        "use_scale_shift_norm": c.use_scale_shift_norm,
        "resblock_updown": c.resblock_updown,
        "use_new_attention_order": c.use_new_attention_order,
    })
}

/// Reads `--model-config`: our `config.json`, or guided-diffusion's flags as
/// a flat YAML file (DPS / DMPS `model_config.yaml`) with the script's
/// meanings: `attention_resolutions` in pixels, `channel_mult: ""` for the
/// image size's default, `learn_sigma`.
pub fn read_model_config(path: &Path) -> Result<UnetConfig, ConfigError> {
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if !yaml {
        return UnetConfig::from_file(path);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut obj = Map::new();
    obj.insert("architecture".into(), "guided-diffusion".into());
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().trim_matches(|c| c == '"' || c == '\''));
        // Where the script found its weights: not a model option.
        if k == "model_path" {
            continue;
        }
        let value = if k == "attention_resolutions" || k == "channel_mult" {
            Value::from(v) // comma strings, as the script parses them
        } else if let Ok(b) = v.to_ascii_lowercase().parse::<bool>() {
            Value::from(b)
        } else if let Ok(i) = v.parse::<i64>() {
            Value::from(i)
        } else if let Ok(f) = v.parse::<f64>() {
            Value::from(f)
        } else {
            Value::from(v)
        };
        obj.insert(k.to_string(), value);
    }
    UnetConfig::from_json_str(&Value::Object(obj).to_string(), path)
}
