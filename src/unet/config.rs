//! Model configuration: guided-diffusion `UNetModel` constructor arguments
//! (`"architecture": "guided-diffusion"`) or diffusers' own `config.json` for
//! `UNet2DModel`. Every option is either understood or refused by name; nothing
//! unknown is silently ignored.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid JSON ({message})")]
    Json { path: PathBuf, message: String },
    #[error("{path}: unknown architecture: expected \"architecture\": \"guided-diffusion\" or \"_class_name\": \"UNet2DModel\"")]
    UnknownArchitecture { path: PathBuf },
    #[error("{path}: option {option:?} = {value} is not supported ({why})")]
    Unsupported {
        path: PathBuf,
        option: String,
        value: String,
        why: String,
    },
    #[error("{path}: unknown option(s) {options:?} for {arch}")]
    UnknownOptions {
        path: PathBuf,
        arch: String,
        options: Vec<String>,
    },
    #[error("{path}: option {option:?} is missing or has the wrong type (expected {expected})")]
    BadOption {
        path: PathBuf,
        option: String,
        expected: String,
    },
}

/// guided-diffusion `UNetModel` (ADM) constructor arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmConfig {
    pub image_size: usize,
    pub in_channels: usize,
    pub model_channels: usize,
    pub out_channels: usize,
    pub num_res_blocks: usize,
    /// Downsample rates (ds) at which attention blocks sit, as `UNetModel` takes them.
    pub attention_resolutions: Vec<usize>,
    pub channel_mult: Vec<f64>,
    pub conv_resample: bool,
    pub num_heads: usize,
    /// -1 when heads are given by count.
    pub num_head_channels: i64,
    /// -1 means "same as num_heads".
    pub num_heads_upsample: i64,
    pub use_scale_shift_norm: bool,
    pub resblock_updown: bool,
    pub use_new_attention_order: bool,
}

/// diffusers `UNet2DModel` configuration (the subset of values we support).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub mid_block: bool,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f32,
    pub downsample_padding: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub norm_eps: f32,
    pub norm_num_groups: usize,
    pub attn_norm_num_groups: Option<usize>,
    pub attention_head_dim: Option<usize>,
    pub add_attention: bool,
    /// false: "default" (additive time embedding); true: "scale_shift".
    pub scale_shift: bool,
    pub time_embedding_dim: Option<usize>,
}

/// A U-Net configuration of either supported family.
#[derive(Debug, Clone, PartialEq)]
pub enum UnetConfig {
    Adm(AdmConfig),
    Diffusers(DiffusersConfig),
}

impl UnetConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<UnetConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses a config from JSON text; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<UnetConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let obj = v.as_object().ok_or_else(|| ConfigError::Json {
            path: path.to_path_buf(),
            message: "top level is not an object".into(),
        })?;
        let r = Reader { path, obj };
        if obj.get("_class_name").and_then(Value::as_str) == Some("UNet2DModel") {
            return Ok(UnetConfig::Diffusers(parse_diffusers(&r)?));
        }
        if obj.get("architecture").and_then(Value::as_str) == Some("guided-diffusion") {
            return Ok(UnetConfig::Adm(parse_adm(&r)?));
        }
        Err(ConfigError::UnknownArchitecture {
            path: path.to_path_buf(),
        })
    }

    pub fn architecture(&self) -> &'static str {
        match self {
            UnetConfig::Adm(_) => "guided-diffusion UNetModel",
            UnetConfig::Diffusers(_) => "diffusers UNet2DModel",
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            UnetConfig::Adm(c) => c.in_channels,
            UnetConfig::Diffusers(c) => c.in_channels,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            UnetConfig::Adm(c) => c.out_channels,
            UnetConfig::Diffusers(c) => c.out_channels,
        }
    }

    /// The resolution the model was trained at.
    pub fn image_size(&self) -> usize {
        match self {
            UnetConfig::Adm(c) => c.image_size,
            UnetConfig::Diffusers(c) => c.sample_size,
        }
    }

    /// True when the output is [eps, v] (learned-range variance).
    pub fn learned_sigma(&self) -> bool {
        self.out_channels() == 2 * self.in_channels()
    }

    /// The DPS / DMPS FFHQ 256 prior (`ffhq_10m`): 93.6 M parameters.
    pub fn dps_ffhq256() -> UnetConfig {
        UnetConfig::Adm(AdmConfig {
            image_size: 256,
            in_channels: 3,
            model_channels: 128,
            out_channels: 6,
            num_res_blocks: 1,
            attention_resolutions: vec![16],
            channel_mult: vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            conv_resample: true,
            num_heads: 4,
            num_head_channels: 64,
            num_heads_upsample: -1,
            use_scale_shift_norm: true,
            resblock_updown: true,
            use_new_attention_order: false,
        })
    }
}

struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn bad(&self, option: &str, expected: &str) -> ConfigError {
        ConfigError::BadOption {
            path: self.path.to_path_buf(),
            option: option.into(),
            expected: expected.into(),
        }
    }
    fn unsupported(&self, option: &str, why: &str) -> ConfigError {
        let value = self
            .obj
            .get(option)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "(absent)".into());
        ConfigError::Unsupported {
            path: self.path.to_path_buf(),
            option: option.into(),
            value,
            why: why.into(),
        }
    }
    fn get(&self, k: &str) -> Option<&Value> {
        self.obj.get(k).filter(|v| !v.is_null())
    }
    fn usize(&self, k: &str) -> Result<usize, ConfigError> {
        self.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.bad(k, "a non-negative integer"))
    }
    fn usize_or(&self, k: &str, d: usize) -> Result<usize, ConfigError> {
        if self.get(k).is_none() {
            return Ok(d);
        }
        self.usize(k)
    }
    fn i64_or(&self, k: &str, d: i64) -> Result<i64, ConfigError> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.as_i64().ok_or_else(|| self.bad(k, "an integer")),
        }
    }
    fn f64_or(&self, k: &str, d: f64) -> Result<f64, ConfigError> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.as_f64().ok_or_else(|| self.bad(k, "a number")),
        }
    }
    fn bool_or(&self, k: &str, d: bool) -> Result<bool, ConfigError> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(k, "true or false")),
        }
    }
    fn str_or<'s>(&'s self, k: &str, d: &'s str) -> Result<&'s str, ConfigError> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.as_str().ok_or_else(|| self.bad(k, "a string")),
        }
    }
    fn strings(&self, k: &str) -> Result<Vec<String>, ConfigError> {
        let arr = self
            .get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad(k, "a list of strings"))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.bad(k, "a list of strings"))
            })
            .collect()
    }
    fn check_known(&self, arch: &str, known: &[&str]) -> Result<(), ConfigError> {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| {
                !k.starts_with('_')
                    && !known.contains(&k.as_str())
                    && !crate::process::CONFIG_KEYS.contains(&k.as_str())
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownOptions {
                path: self.path.to_path_buf(),
                arch: arch.into(),
                options: unknown,
            });
        }
        Ok(())
    }
}

/// Numbers given either as a JSON list or as guided-diffusion's comma string ("16,8").
fn number_list(r: &Reader<'_>, k: &str) -> Result<Option<Vec<f64>>, ConfigError> {
    match r.get(k) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| r.bad(k, "a list of numbers")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<f64>()
                    .map_err(|_| r.bad(k, "a list of numbers or a comma-separated string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::Number(n)) => Ok(Some(vec![n.as_f64().unwrap_or(0.0)])),
        Some(_) => Err(r.bad(k, "a list of numbers")),
    }
}

fn parse_adm(r: &Reader<'_>) -> Result<AdmConfig, ConfigError> {
    const KNOWN: &[&str] = &[
        "architecture",
        "image_size",
        "in_channels",
        "model_channels",
        "out_channels",
        "num_res_blocks",
        "attention_resolutions",
        "dropout",
        "channel_mult",
        "conv_resample",
        "dims",
        "num_classes",
        "use_checkpoint",
        "use_fp16",
        "num_heads",
        "num_head_channels",
        "num_heads_upsample",
        "use_scale_shift_norm",
        "resblock_updown",
        "use_new_attention_order",
        "learn_sigma",
        "class_cond",
        "num_channels",
    ];
    r.check_known("guided-diffusion", KNOWN)?;
    if r.usize_or("dims", 2)? != 2 {
        return Err(r.unsupported("dims", "only 2-D U-Nets"));
    }
    if r.get("num_classes").is_some() {
        return Err(r.unsupported("num_classes", "class-conditional models are not supported"));
    }
    if r.bool_or("class_cond", false)? {
        return Err(r.unsupported("class_cond", "class-conditional models are not supported"));
    }
    let image_size = r.usize("image_size")?;
    let in_channels = r.usize_or("in_channels", 3)?;
    // Both the constructor name and the script flag name (`num_channels`) are accepted.
    let model_channels = match r.get("model_channels") {
        Some(_) => r.usize("model_channels")?,
        None => r.usize("num_channels")?,
    };
    let learn_sigma = r.bool_or("learn_sigma", false)?;
    let out_channels = match r.get("out_channels") {
        Some(_) => r.usize("out_channels")?,
        None => in_channels * if learn_sigma { 2 } else { 1 },
    };
    if r.get("learn_sigma").is_some() && out_channels != in_channels * if learn_sigma { 2 } else { 1 } {
        return Err(r.unsupported("learn_sigma", "contradicts out_channels"));
    }
    let channel_mult = match number_list(r, "channel_mult")? {
        Some(m) => m,
        // create_model's defaults when channel_mult is "".
        None => match image_size {
            512 => vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            256 => vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            128 => vec![1.0, 1.0, 2.0, 3.0, 4.0],
            64 => vec![1.0, 2.0, 3.0, 4.0],
            _ => return Err(r.unsupported("channel_mult", "empty, and image_size has no guided-diffusion default")),
        },
    };
    if channel_mult.is_empty() || channel_mult.iter().any(|&m| m <= 0.0) {
        return Err(r.unsupported("channel_mult", "needs positive multipliers"));
    }
    // A list holds downsample rates (ds), as UNetModel takes them; a string is
    // the script flag, in pixels, turned into ds = image_size / res as create_model does.
    let attention_resolutions = match (r.get("attention_resolutions"), number_list(r, "attention_resolutions")?) {
        (Some(Value::String(_)), Some(v)) => {
            let mut ds = Vec::new();
            for res in v {
                let res = res as usize;
                if res == 0 || image_size % res != 0 {
                    return Err(r.unsupported("attention_resolutions", "each resolution must divide image_size"));
                }
                ds.push(image_size / res);
            }
            ds
        }
        (_, Some(v)) => v.iter().map(|&x| x as usize).collect(),
        (_, None) => Vec::new(),
    };
    let num_heads = r.usize_or("num_heads", 1)?;
    let num_head_channels = r.i64_or("num_head_channels", -1)?;
    let num_heads_upsample = r.i64_or("num_heads_upsample", -1)?;
    if num_head_channels == 0 || num_head_channels < -1 {
        return Err(r.unsupported("num_head_channels", "must be -1 or positive"));
    }
    if num_heads_upsample == 0 || num_heads_upsample < -1 {
        return Err(r.unsupported("num_heads_upsample", "must be -1 or positive"));
    }
    if num_head_channels == -1 && num_heads == 0 {
        return Err(r.unsupported("num_heads", "must be positive"));
    }
    let _ = r.f64_or("dropout", 0.0)?; // inference: dropout is the identity
    Ok(AdmConfig {
        image_size,
        in_channels,
        model_channels,
        out_channels,
        num_res_blocks: r.usize("num_res_blocks")?,
        attention_resolutions,
        channel_mult,
        conv_resample: r.bool_or("conv_resample", true)?,
        num_heads,
        num_head_channels,
        num_heads_upsample,
        use_scale_shift_norm: r.bool_or("use_scale_shift_norm", false)?,
        resblock_updown: r.bool_or("resblock_updown", false)?,
        use_new_attention_order: r.bool_or("use_new_attention_order", false)?,
    })
}

fn parse_diffusers(r: &Reader<'_>) -> Result<DiffusersConfig, ConfigError> {
    const KNOWN: &[&str] = &[
        "sample_size",
        "in_channels",
        "out_channels",
        "center_input_sample",
        "time_embedding_type",
        "time_embedding_dim",
        "freq_shift",
        "flip_sin_to_cos",
        "down_block_types",
        "mid_block_type",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "mid_block_scale_factor",
        "downsample_padding",
        "downsample_type",
        "upsample_type",
        "dropout",
        "act_fn",
        "attention_head_dim",
        "norm_num_groups",
        "attn_norm_num_groups",
        "norm_eps",
        "resnet_time_scale_shift",
        "add_attention",
        "class_embed_type",
        "num_class_embeds",
        "num_train_timesteps",
    ];
    r.check_known("diffusers UNet2DModel", KNOWN)?;
    if r.bool_or("center_input_sample", false)? {
        return Err(r.unsupported("center_input_sample", "only false"));
    }
    if r.str_or("time_embedding_type", "positional")? != "positional" {
        return Err(r.unsupported("time_embedding_type", "only \"positional\""));
    }
    if r.str_or("act_fn", "silu")? != "silu" {
        return Err(r.unsupported("act_fn", "only \"silu\""));
    }
    if r.get("class_embed_type").is_some() {
        return Err(r.unsupported("class_embed_type", "class conditioning is not supported"));
    }
    if r.get("num_class_embeds").is_some() {
        return Err(r.unsupported("num_class_embeds", "class conditioning is not supported"));
    }
    if r.str_or("downsample_type", "conv")? != "conv" {
        return Err(r.unsupported("downsample_type", "only \"conv\""));
    }
    if r.str_or("upsample_type", "conv")? != "conv" {
        return Err(r.unsupported("upsample_type", "only \"conv\""));
    }
    let scale_shift = match r.str_or("resnet_time_scale_shift", "default")? {
        "default" => false,
        "scale_shift" => true,
        _ => return Err(r.unsupported("resnet_time_scale_shift", "only \"default\" or \"scale_shift\"")),
    };
    let mid_block = match r.obj.get("mid_block_type") {
        None => true,
        Some(Value::Null) => false,
        Some(_) => match r.str_or("mid_block_type", "")? {
            "UNetMidBlock2D" => true,
            _ => return Err(r.unsupported("mid_block_type", "only \"UNetMidBlock2D\" or null")),
        },
    };
    let block_out_channels: Vec<usize> = match number_list(r, "block_out_channels")? {
        Some(v) if !v.is_empty() => v.iter().map(|&x| x as usize).collect(),
        _ => vec![224, 448, 672, 896],
    };
    let down_block_types = if r.get("down_block_types").is_some() {
        r.strings("down_block_types")?
    } else {
        ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
            .map(String::from)
            .to_vec()
    };
    let up_block_types = if r.get("up_block_types").is_some() {
        r.strings("up_block_types")?
    } else {
        ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
            .map(String::from)
            .to_vec()
    };
    for t in &down_block_types {
        if t != "DownBlock2D" && t != "AttnDownBlock2D" {
            return Err(r.unsupported(
                "down_block_types",
                &format!("{t} is not supported (DownBlock2D, AttnDownBlock2D)"),
            ));
        }
    }
    for t in &up_block_types {
        if t != "UpBlock2D" && t != "AttnUpBlock2D" {
            return Err(r.unsupported(
                "up_block_types",
                &format!("{t} is not supported (UpBlock2D, AttnUpBlock2D)"),
            ));
        }
    }
    if down_block_types.len() != block_out_channels.len() || up_block_types.len() != block_out_channels.len() {
        return Err(r.unsupported("block_out_channels", "needs one entry per down and up block"));
    }
    let attention_head_dim = match r.get("attention_head_dim") {
        None => None,
        Some(Value::Array(_)) => return Err(r.unsupported("attention_head_dim", "one integer or null")),
        Some(_) => Some(r.usize("attention_head_dim")?),
    };
    let attn_norm_num_groups = match r.get("attn_norm_num_groups") {
        None => None,
        Some(_) => Some(r.usize("attn_norm_num_groups")?),
    };
    let time_embedding_dim = match r.get("time_embedding_dim") {
        None => None,
        Some(_) => Some(r.usize("time_embedding_dim")?),
    };
    let _ = r.f64_or("dropout", 0.0)?;
    Ok(DiffusersConfig {
        sample_size: r.usize_or("sample_size", 64)?,
        in_channels: r.usize_or("in_channels", 3)?,
        out_channels: r.usize_or("out_channels", 3)?,
        block_out_channels,
        down_block_types,
        up_block_types,
        mid_block,
        layers_per_block: r.usize_or("layers_per_block", 2)?,
        mid_block_scale_factor: r.f64_or("mid_block_scale_factor", 1.0)? as f32,
        downsample_padding: r.usize_or("downsample_padding", 1)?,
        flip_sin_to_cos: r.bool_or("flip_sin_to_cos", true)?,
        freq_shift: r.f64_or("freq_shift", 0.0)?,
        norm_eps: r.f64_or("norm_eps", 1e-5)? as f32,
        norm_num_groups: r.usize_or("norm_num_groups", 32)?,
        attn_norm_num_groups,
        attention_head_dim,
        add_attention: r.bool_or("add_attention", true)?,
        scale_shift,
        time_embedding_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tools/convert_checkpoint.py writes for DPS's ffhq_10m.pt.
    const CONVERTED_FFHQ: &str = r#"{"architecture": "guided-diffusion", "image_size": 256, "in_channels": 3,
        "model_channels": 128, "out_channels": 6, "num_res_blocks": 1, "attention_resolutions": [16],
        "dropout": 0.0, "channel_mult": [1, 1, 2, 2, 4, 4], "num_classes": null, "use_checkpoint": false,
        "use_fp16": false, "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1,
        "use_scale_shift_norm": true, "resblock_updown": true, "use_new_attention_order": false}"#;

    #[test]
    fn converted_ffhq_config_is_the_dps_prior() {
        let c = UnetConfig::from_json_str(CONVERTED_FFHQ, Path::new("config.json")).unwrap();
        assert_eq!(c, UnetConfig::dps_ffhq256());
    }

    /// The script-flag form (DPS YAML values) means the same model.
    #[test]
    fn script_flags_follow_create_model() {
        let flags = r#"{"architecture": "guided-diffusion", "image_size": 256, "num_channels": 128,
            "num_res_blocks": 1, "channel_mult": "", "learn_sigma": true, "class_cond": false,
            "attention_resolutions": "16", "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1,
            "use_scale_shift_norm": true, "dropout": 0.0, "resblock_updown": true, "use_fp16": false,
            "use_new_attention_order": false, "use_checkpoint": false}"#;
        let c = UnetConfig::from_json_str(flags, Path::new("config.json")).unwrap();
        assert_eq!(c, UnetConfig::dps_ffhq256());
    }
}
