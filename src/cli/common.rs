//! The CLI's shared toolkit: the prior (a `--model` directory or the built-in
//! one), clean input images (files or the built-in test images), the output
//! directory check and the progress bar. Used by `restore`, `demo`, `eval` and
//! `sample`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::io::read_image;
use crate::process::Process;
use crate::samplers::UnetScore;
use crate::tensor::{DType, HostTensor};
use crate::unet::{Unet, UnetConfig};
use crate::Gpu;

/// Storage precision of a model's weights and activations (`--precision`).
/// Every sum, statistic and softmax runs in f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// 4 bytes per weight and activation: the default (on lavapipe f16 is no
    /// faster; see docs/models.md, "Precision").
    #[default]
    F32,
    /// 2 bytes per weight and activation; needs the adapter's shader-f16.
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// `--precision`, as every command that plans a model takes it.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct PrecisionArg {
    /// Storage precision of the model's weights and activations (f16 needs the adapter's shader-f16).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// `--model` (a directory, or the built-in prior without one) and
/// `--precision`: the prior of `restore`, `demo`, `eval` and `sample`.
#[derive(clap::Args, Clone, Debug)]
pub struct PriorArgs {
    /// Model directory (model.safetensors + config.json) or a PyTorch checkpoint (.pt/.pth/.ckpt/.bin); default: the built-in Fashion-MNIST prior.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A torch checkpoint's config when no config.json sits beside it: config.json or a model YAML (DPS's model_config.yaml).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl PriorArgs {
    /// Loads the prior ([`load_prior`]).
    pub fn load(&self, gpu: &Gpu) -> anyhow::Result<Prior> {
        load_prior(
            gpu,
            self.model.as_deref(),
            self.model_config.as_deref(),
            self.precision.precision,
        )
    }
}

/// A loaded model and its planned resolution.
pub struct Prior {
    /// The model directory, or the built-in prior's name.
    pub name: String,
    pub score: UnetScore,
    pub channels: usize,
    pub size: usize,
    pub precision: Precision,
    pub load_seconds: f64,
}

/// Loads `--model`, or the built-in prior ([`crate::embedded`]) without one.
pub fn load_prior(
    gpu: &Gpu,
    model: Option<&Path>,
    model_config: Option<&Path>,
    precision: Precision,
) -> anyhow::Result<Prior> {
    let start = Instant::now();
    gpu.require_dtype(precision.dtype())?;
    let (unet, name) = match model {
        Some(path) => (
            Unet::load_with_config(gpu, path, model_config, precision.dtype())
                .with_context(|| format!("loading model {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            Unet::load_embedded_as(gpu, precision.dtype()).context("loading the built-in prior")?,
            crate::embedded::MODEL_NAME.to_string(),
        ),
    };
    let (channels, size) = (unet.config.in_channels(), unet.config.image_size());
    Ok(Prior {
        name,
        score: UnetScore::new(Arc::new(unet), size, size),
        channels,
        size,
        precision,
        load_seconds: start.elapsed().as_secs_f64(),
    })
}

/// A model's weights on the GPU: the checkpoint, or random weights where the
/// directory has a config alone. Returns the model and whether it is random.
pub fn load_for_plans(gpu: &Gpu, path: &Path, precision: Precision) -> anyhow::Result<(Unet, bool)> {
    let dtype = precision.dtype();
    gpu.require_dtype(dtype)?;
    let config = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let has_weights = crate::unet::weights::ModelFiles::resolve(path).is_ok();
    if has_weights {
        let unet = Unet::load_as(gpu, path, dtype).with_context(|| format!("loading model {}", path.display()))?;
        return Ok((unet, false));
    }
    if !config.is_file() || config.extension().is_some_and(|e| e == "safetensors") {
        // Resolve again for its error: the missing file, named.
        crate::unet::weights::ModelFiles::resolve(path)?;
    }
    let cfg = UnetConfig::from_file(&config)?;
    let mut unet = Unet::random_as(gpu, &cfg, 0, dtype)?;
    unet.process = Process::for_model(&config)?;
    Ok((unet, true))
}

/// A clean input image: a file, or one of the built-in test images.
#[derive(Clone, Debug)]
pub enum ImageRef {
    File(PathBuf),
    Embedded { name: &'static str, png: &'static [u8] },
}

impl ImageRef {
    /// The built-in held-out test images ([`crate::embedded::TEST_IMAGES`]), sorted by name.
    pub fn embedded_test_images() -> Vec<ImageRef> {
        crate::embedded::TEST_IMAGES
            .iter()
            .map(|&(name, png)| ImageRef::Embedded { name, png })
            .collect()
    }

    /// The file name (with extension).
    pub fn file_name(&self) -> String {
        match self {
            ImageRef::File(p) => p
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            ImageRef::Embedded { name, .. } => name.to_string(),
        }
    }

    /// The file name without its extension.
    pub fn stem(&self) -> String {
        let name = self.file_name();
        match name.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem.to_string(),
            _ => name,
        }
    }

    /// How the image is named in messages: its path, or "built-in NAME".
    pub fn display(&self) -> String {
        match self {
            ImageRef::File(p) => p.display().to_string(),
            ImageRef::Embedded { name, .. } => format!("built-in {name}"),
        }
    }

    /// Decodes it to [1, C, H, W] on [-1, 1].
    pub fn read(&self) -> anyhow::Result<HostTensor> {
        Ok(match self {
            ImageRef::File(p) => read_image(p)?,
            ImageRef::Embedded { name, png } => crate::io::read_image_bytes(name, png)?,
        })
    }
}

/// Reads a clean image and fits it to the model: channel conversion where it
/// is unambiguous (said on stderr), size must match.
pub fn load_clean(image: &ImageRef, prior: &Prior, quiet: bool) -> anyhow::Result<HostTensor> {
    let img = image.read()?;
    let path = image.display();
    let (c, h, w) = (img.shape[1], img.shape[2], img.shape[3]);
    if h != prior.size || w != prior.size {
        bail!(
            "{}: image is {w}x{h} but the model {} takes {}x{} images (resize or pad it first)",
            path,
            prior.name,
            prior.size,
            prior.size
        );
    }
    let x = match (c, prior.channels) {
        (a, b) if a == b => img,
        (3, 1) => {
            if !quiet {
                eprintln!(
                    "note: {}: RGB image converted to grayscale (mean of R, G, B) for a grayscale model",
                    path
                );
            }
            let hw = h * w;
            let data = (0..hw)
                .map(|i| (img.data[i] + img.data[hw + i] + img.data[2 * hw + i]) / 3.0)
                .collect();
            HostTensor::new(vec![1, 1, h, w], data)
        }
        (1, 3) => {
            if !quiet {
                eprintln!(
                    "note: {}: grayscale image replicated to 3 channels for an RGB model",
                    path
                );
            }
            let mut data = img.data.clone();
            data.extend_from_slice(&img.data);
            data.extend_from_slice(&img.data);
            HostTensor::new(vec![1, 3, h, w], data)
        }
        (a, b) => bail!("{}: image has {a} channels but the model takes {b}", path),
    };
    Ok(x)
}

/// Lists PNG/JPEG files: the file itself, or a directory's images sorted by name.
pub fn list_images(input: &Path) -> anyhow::Result<Vec<ImageRef>> {
    if input.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading directory {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        v.sort();
        if v.is_empty() {
            bail!("{}: no PNG or JPEG images in this directory", input.display());
        }
        Ok(v.into_iter().map(ImageRef::File).collect())
    } else if input.exists() {
        Ok(vec![ImageRef::File(input.to_path_buf())])
    } else {
        bail!("{}: no such file or directory", input.display())
    }
}

/// Creates `dir` and checks that it is writable (refused up front, before any work).
pub fn prepare_out(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create the directory", dir.display()))?;
    let probe = dir.join(".tweedie-write-test");
    std::fs::write(&probe, b"").with_context(|| format!("--out {}: directory is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A progress bar on stderr with steps/s and ETA (hidden with --quiet or off a terminal).
pub fn progress(quiet: bool, label: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}
