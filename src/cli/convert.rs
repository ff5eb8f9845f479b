//! `tweedie convert IN --out DIR [--model-config F] [--precision f16]`: a
//! model as tweedie reads it (a torch checkpoint above all) written once as
//! `model.safetensors` + `config.json`, which load without parsing a pickle.
//! Everything is read and checked before the first byte is written; the two
//! files are written atomically, and a failure part-way removes what it wrote.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use safetensors::Dtype;

use super::common::Precision;
use crate::io::{safetensors_bytes, write_atomic, TensorFile};
use crate::unet::weights::{self, ConfigSource};

#[derive(Args)]
pub struct ConvertArgs {
    /// The model: a .pt/.pth/.ckpt/.bin torch checkpoint, or a directory holding one (or model.safetensors).
    pub input: PathBuf,
    /// Directory to write model.safetensors and config.json into (created).
    #[arg(long)]
    pub out: PathBuf,
    /// The config when no config.json sits beside the checkpoint: our config.json, or guided-diffusion's flags as a model YAML (DPS's configs/model_config.yaml).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Stored weight type of model.safetensors.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn run(args: ConvertArgs, verbose: bool) -> anyhow::Result<()> {
    let opened = weights::open(&args.input, args.model_config.as_deref())?;
    if verbose {
        match &opened.nested {
            Some(key) => eprintln!("state dict: under {key:?} in {}", opened.files.weights.display()),
            None => eprintln!("state dict: the top level of {}", opened.files.weights.display()),
        }
    }
    let config_json = match &opened.source {
        // A JSON config is kept as written (its process fields, diffusers' names).
        ConfigSource::File(p) if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        _ => {
            let crate::unet::UnetConfig::Adm(adm) = &opened.config else {
                anyhow::bail!("{}: a diffusers model needs its config.json", args.input.display());
            };
            serde_json::to_string_pretty(&crate::unet::infer::adm_json(adm))? + "\n"
        }
    };
    let assumed = match &opened.source {
        ConfigSource::Inferred(a) => a.iter().map(|(k, v)| format!("{k} {v}")).collect(),
        ConfigSource::File(_) => Vec::new(),
    };
    let (_, _, file) = opened.check()?;
    if !assumed.is_empty() {
        eprintln!(
            "config read from the state dict; assumed (not in the file): {}",
            assumed.join(", ")
        );
    }
    let model = model_bytes(&file, args.precision, &args.out.join("model.safetensors"))?;
    write_pair(&args.out, &model, config_json.as_bytes())?;
    println!(
        "wrote {} tensors ({}) and config.json to {}",
        file.keys().len(),
        args.precision.name(),
        args.out.display()
    );
    Ok(())
}

/// Every tensor of `file` in `precision`, as safetensors bytes.
fn model_bytes(file: &TensorFile, precision: Precision, path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for key in file.keys() {
        let t = file.get(&key)?;
        let (dtype, bytes) = match precision {
            Precision::F32 => (Dtype::F32, bytemuck::cast_slice(&t.data).to_vec()),
            Precision::F16 => (
                Dtype::F16,
                t.data
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        };
        tensors.push((key, dtype, t.shape, bytes));
    }
    Ok(safetensors_bytes(path, &tensors)?)
}

/// Writes both files into `dir`; on failure removes what it wrote (and `dir` if it made it).
fn write_pair(dir: &Path, model: &[u8], config: &[u8]) -> anyhow::Result<()> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (m, c) = (dir.join("model.safetensors"), dir.join("config.json"));
    let written = write_atomic(&m, model).and_then(|()| write_atomic(&c, config));
    if let Err(e) = written {
        if created {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let _ = std::fs::remove_file(&m);
        }
        return Err(e.into());
    }
    Ok(())
}
