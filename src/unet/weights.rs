//! Weights: checked against the graph's parameter list (every missing key,
//! unexpected key and shape mismatch reported at once), converted to f32 and
//! packed into one GPU buffer with a name -> (offset, shape) table (llm.c's
//! single parameter block). Where the model exceeds what one binding may
//! span, the block is split into as few arenas as the limit allows; a
//! parameter group (diffusers' to_q/to_k/to_v) never straddles two.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::config::{ConfigError, UnetConfig};
use super::graph::{Graph, GraphError, Param};
use crate::gpu::{Gpu, GpuError};
use crate::io::torch::is_torch_path;
use crate::io::{IoError, TensorFile};
use crate::tensor::DType;

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error("{path}: {source}")]
    Graph { path: PathBuf, source: GraphError },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{path}: model not found (expected a directory with model.safetensors and config.json, a .safetensors file with config.json beside it, or a torch checkpoint: .pt, .pth, .ckpt, .bin)")]
    NotFound { path: PathBuf },
    #[error("{path}: holds several torch checkpoints ({names}); name the one to load")]
    Ambiguous { path: PathBuf, names: String },
    #[error("{path}: {message}")]
    Infer { path: PathBuf, message: String },
    #[error("{path}: weights do not match the config: {}", describe_mismatch(.missing, .unexpected, .shapes))]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        shapes: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    #[error("{path}: tensor {name:?}: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

fn describe_mismatch(missing: &[String], unexpected: &[String], shapes: &[(String, Vec<usize>, Vec<usize>)]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} missing key(s): {}", missing.len(), missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected key(s): {}",
            unexpected.len(),
            unexpected.join(", ")
        ));
    }
    if !shapes.is_empty() {
        let s: Vec<String> = shapes
            .iter()
            .map(|(n, want, got)| format!("{n} expected {want:?}, got {got:?}"))
            .collect();
        parts.push(format!("{} shape mismatch(es): {}", shapes.len(), s.join(", ")));
    }
    parts.join("; ")
}

/// Where a model's two files are.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl ModelFiles {
    /// A directory (model.safetensors, or diffusers' diffusion_pytorch_model.safetensors, + config.json)
    /// or a .safetensors file with config.json beside it. In place of the
    /// safetensors, a torch checkpoint ([`crate::io::torch`]; the one in the
    /// directory), whose config.json may be absent.
    pub fn resolve(path: &Path) -> Result<ModelFiles, WeightsError> {
        let (config, weights) = if path.is_dir() {
            // diffusers saves its weights as diffusion_pytorch_model.safetensors.
            let ours = path.join("model.safetensors");
            let diffusers = path.join("diffusion_pytorch_model.safetensors");
            let weights = if !ours.is_file() && diffusers.is_file() {
                diffusers
            } else if !ours.is_file() {
                torch_in_dir(path)?.unwrap_or(ours)
            } else {
                ours
            };
            (path.join("config.json"), weights)
        } else {
            let dir = path.parent().unwrap_or(Path::new("."));
            (dir.join("config.json"), path.to_path_buf())
        };
        if !config.is_file() && !is_torch_path(&weights) {
            return Err(WeightsError::NotFound { path: config });
        }
        if !weights.is_file() {
            return Err(WeightsError::NotFound { path: weights });
        }
        Ok(ModelFiles { config, weights })
    }
}

/// The one torch checkpoint in `dir`, if any.
fn torch_in_dir(dir: &Path) -> Result<Option<PathBuf>, WeightsError> {
    let read = std::fs::read_dir(dir).map_err(|err| IoError::Read {
        path: dir.to_path_buf(),
        err,
    })?;
    let mut found: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_torch_path(p))
        .collect();
    found.sort();
    if found.len() > 1 {
        let names: Vec<String> = found
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        return Err(WeightsError::Ambiguous {
            path: dir.to_path_buf(),
            names: names.join(", "),
        });
    }
    Ok(found.pop())
}

/// Where a model's config came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// A config.json (beside the weights, or given) or a model YAML.
    File(PathBuf),
    /// Read from the state dict; the fields it had to assume, with their values.
    Inferred(Vec<(&'static str, String)>),
}

/// A model's config and its weights, read but not yet checked against each other.
pub struct OpenedModel {
    pub files: ModelFiles,
    pub config: UnetConfig,
    pub source: ConfigSource,
    pub file: TensorFile,
    /// Where in a torch checkpoint the state dict was (`ema`, `state_dict`...).
    pub nested: Option<String>,
}

/// Reads a model's config and weights. A torch checkpoint's config is, in
/// order: config.json beside it, `model_config` (config.json or a model
/// YAML, [`super::infer::read_model_config`]), or read from its state dict.
pub fn open(path: &Path, model_config: Option<&Path>) -> Result<OpenedModel, WeightsError> {
    let files = ModelFiles::resolve(path)?;
    if !is_torch_path(&files.weights) {
        let config = UnetConfig::from_file(&files.config)?;
        let file = TensorFile::open(&files.weights)?;
        let source = ConfigSource::File(files.config.clone());
        return Ok(OpenedModel {
            files,
            config,
            source,
            file,
            nested: None,
        });
    }
    let checkpoint = crate::io::torch::read(&files.weights)?;
    let (config, source) = match model_config {
        _ if files.config.is_file() => (
            UnetConfig::from_file(&files.config)?,
            ConfigSource::File(files.config.clone()),
        ),
        Some(given) => (
            super::infer::read_model_config(given)?,
            ConfigSource::File(given.to_path_buf()),
        ),
        None => {
            let inferred = super::infer::infer_adm(&checkpoint.file).map_err(|message| WeightsError::Infer {
                path: files.weights.clone(),
                message,
            })?;
            (
                UnetConfig::Adm(inferred.config),
                ConfigSource::Inferred(inferred.assumed),
            )
        }
    };
    Ok(OpenedModel {
        files,
        config,
        source,
        file: checkpoint.file,
        nested: checkpoint.nested,
    })
}

impl OpenedModel {
    /// Checks config and weights against each other; an inferred config's
    /// failure names what was assumed.
    pub fn check(self) -> Result<(UnetConfig, Graph, TensorFile), WeightsError> {
        let label = match &self.source {
            ConfigSource::File(p) => p.clone(),
            ConfigSource::Inferred(_) => self.files.weights.clone(),
        };
        let checked = check_model(self.config, &label, self.file);
        match (checked, &self.source) {
            (Err(e), ConfigSource::Inferred(assumed)) => {
                let assumed: Vec<String> = assumed.iter().map(|(k, v)| format!("{k} {v}")).collect();
                // The message already names the file: only what it says about it.
                let e = e.to_string();
                let e = e
                    .strip_prefix(&format!("{}: ", self.files.weights.display()))
                    .unwrap_or(&e);
                Err(WeightsError::Infer {
                    message: format!(
                        "{e} (config read from the state dict, assuming {}; give --model-config or a config.json beside it)",
                        assumed.join(", ")
                    ),
                    path: self.files.weights,
                })
            }
            (checked, _) => checked,
        }
    }
}

/// The process of a model: its config.json or scheduler_config.json, or
/// the default (VP, linear betas, 1000 steps) for a bare torch checkpoint.
pub fn process_for(files: &ModelFiles) -> Result<crate::process::Process, WeightsError> {
    let sched = files.config.with_file_name("scheduler_config.json");
    if files.config.is_file() || sched.is_file() {
        return Ok(crate::process::Process::for_model(&files.config)?);
    }
    Ok(crate::process::Process::default())
}

/// One parameter's place in the weight block.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightEntry {
    pub arena: usize,
    /// In f32 elements from the start of the arena.
    pub offset: usize,
    pub shape: Vec<usize>,
}

/// Weights packed on the host, ready to upload.
#[derive(Debug, Clone)]
pub struct HostWeights {
    pub arenas: Vec<Vec<f32>>,
    pub table: HashMap<String, WeightEntry>,
}

impl HostWeights {
    /// Packs parameter groups, fetching each tensor with `fetch` (already
    /// validated in shape). Groups start 16-byte aligned (vector loads).
    pub fn pack(
        graph: &Graph,
        max_arena_elems: usize,
        mut fetch: impl FnMut(&Param) -> Result<Vec<f32>, WeightsError>,
    ) -> Result<HostWeights, WeightsError> {
        let mut arenas: Vec<Vec<f32>> = vec![Vec::new()];
        let mut table = HashMap::new();
        for group in &graph.param_groups {
            let size: usize = group.iter().map(|p| p.shape.iter().product::<usize>()).sum();
            let mut cur = arenas.len() - 1;
            let start = arenas[cur].len().div_ceil(4) * 4;
            if start + size > max_arena_elems && !arenas[cur].is_empty() {
                arenas.push(Vec::new());
                cur += 1;
            }
            let arena = &mut arenas[cur];
            arena.resize(arena.len().div_ceil(4) * 4, 0.0);
            for p in group {
                let data = fetch(p)?;
                assert_eq!(
                    data.len(),
                    p.shape.iter().product::<usize>(),
                    "fetched tensor size for {}",
                    p.name
                );
                table.insert(
                    p.name.clone(),
                    WeightEntry {
                        arena: cur,
                        offset: arena.len(),
                        shape: p.shape.clone(),
                    },
                );
                arena.extend_from_slice(&data);
            }
        }
        Ok(HostWeights { arenas, table })
    }
}

/// The weight block on the GPU.
pub struct Weights {
    pub arenas: Vec<wgpu::Buffer>,
    pub table: HashMap<String, WeightEntry>,
    /// Element type of the arenas (and of the plans that read them).
    pub dtype: DType,
}

impl Weights {
    /// Uploads in f32.
    pub fn upload(gpu: &Gpu, host: &HostWeights) -> Result<Weights, GpuError> {
        Self::upload_as(gpu, host, DType::F32)
    }

    /// Uploads in `dtype` (f16: 2 bytes per weight on the GPU, rounded to
    /// nearest; the element offsets are the same).
    pub fn upload_as(gpu: &Gpu, host: &HostWeights, dtype: DType) -> Result<Weights, GpuError> {
        gpu.require_dtype(dtype)?;
        let arenas = host
            .arenas
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let label = format!("unet weights {i}");
                match dtype {
                    DType::F32 => gpu.upload(&label, a),
                    DType::F16 => {
                        let h: Vec<half::f16> = a.iter().map(|&v| half::f16::from_f32(v)).collect();
                        gpu.upload(&label, &h)
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Weights {
            arenas,
            table: host.table.clone(),
            dtype,
        })
    }

    /// The buffer and element offset of a parameter (names come from the graph,
    /// which the table was built from).
    pub fn get(&self, name: &str) -> (&wgpu::Buffer, usize) {
        let e = self
            .table
            .get(name)
            .unwrap_or_else(|| panic!("weight {name} is in the graph but not in the table"));
        (&self.arenas[e.arena], e.offset)
    }

    /// Bytes of the weight buffers on the GPU.
    pub fn bytes(&self) -> u64 {
        self.arenas.iter().map(|b| b.size()).sum()
    }

    pub fn total_elems(&self) -> usize {
        self.table.values().map(|e| e.shape.iter().product::<usize>()).sum()
    }
}

/// The largest arena the adapter can bind, in f32 elements.
pub fn max_arena_elems(gpu: &Gpu) -> usize {
    let bytes = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    (bytes / 4) as usize
}

/// Compares a file's keys and shapes with the graph's parameters; every problem at once.
pub fn check_against(graph: &Graph, file: &TensorFile) -> Result<(), WeightsError> {
    let keys: HashSet<String> = file.keys().into_iter().collect();
    let mut expected = HashSet::new();
    let mut missing = Vec::new();
    let mut shapes = Vec::new();
    for p in graph.params() {
        expected.insert(p.name.clone());
        if !keys.contains(&p.name) {
            missing.push(p.name.clone());
            continue;
        }
        let got = file.shape(&p.name)?;
        if got != p.shape {
            shapes.push((p.name.clone(), p.shape.clone(), got));
        }
    }
    let mut unexpected: Vec<String> = keys.iter().filter(|k| !expected.contains(*k)).cloned().collect();
    unexpected.sort();
    if missing.is_empty() && unexpected.is_empty() && shapes.is_empty() {
        return Ok(());
    }
    Err(WeightsError::Mismatch {
        path: file.path.clone(),
        missing,
        unexpected,
        shapes,
    })
}

/// Reads config + checkpoint and checks them against each other, without
/// converting any weights (`tweedie info`).
pub fn inspect(path: &Path) -> Result<(UnetConfig, Graph, TensorFile), WeightsError> {
    open(path, None)?.check()
}

/// As [`inspect`], on a config and a checkpoint already read (`config_path`
/// names the config in messages).
pub fn check_model(
    config: UnetConfig,
    config_path: &Path,
    file: TensorFile,
) -> Result<(UnetConfig, Graph, TensorFile), WeightsError> {
    let old_names = file.keys().iter().any(|k| k.ends_with(".query.weight"));
    let graph = Graph::build(&config, old_names).map_err(|source| WeightsError::Graph {
        path: config_path.to_path_buf(),
        source,
    })?;
    check_against(&graph, &file)?;
    Ok((config, graph, file))
}

/// The built-in default prior ([`crate::embedded`]), checked like a file.
pub fn inspect_embedded() -> Result<(UnetConfig, Graph, TensorFile), WeightsError> {
    use crate::embedded::{CONFIG_JSON, MODEL_NAME, MODEL_SAFETENSORS};
    let label = Path::new(MODEL_NAME);
    let config = UnetConfig::from_json_str(CONFIG_JSON, label)?;
    let file = TensorFile::from_bytes(label, MODEL_SAFETENSORS.to_vec())?;
    check_model(config, label, file)
}

/// Loads config + checkpoint, checks them against each other and packs the weights.
pub fn load_host(path: &Path, max_arena: usize) -> Result<(UnetConfig, Graph, HostWeights), WeightsError> {
    pack_checked(inspect(path)?, max_arena)
}

/// Packs a checked model's weights.
pub fn pack_checked(
    (config, graph, file): (UnetConfig, Graph, TensorFile),
    max_arena: usize,
) -> Result<(UnetConfig, Graph, HostWeights), WeightsError> {
    let host = HostWeights::pack(&graph, max_arena, |p| Ok(file.get(&p.name)?.data))?;
    Ok((config, graph, host))
}

/// Random weights for a graph (benchmarks, tests): N(0, 1/fan_in) for
/// matrices, GroupNorm gains near 1, small biases. Deterministic in `seed`.
pub fn random_host(graph: &Graph, seed: u64, max_arena: usize) -> Result<HostWeights, WeightsError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    HostWeights::pack(graph, max_arena, |p| {
        let n: usize = p.shape.iter().product();
        let normal = |rng: &mut rand::rngs::StdRng| {
            let u1: f32 = rng.random::<f32>().max(1e-7);
            let u2: f32 = rng.random::<f32>();
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        };
        Ok(if p.shape.len() >= 2 {
            let fan_in: usize = p.shape[1..].iter().product();
            let s = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| normal(&mut rng) * s).collect()
        } else if p.name.ends_with(".weight") {
            (0..n).map(|_| 1.0 + 0.1 * normal(&mut rng)).collect()
        } else {
            (0..n).map(|_| 0.05 * normal(&mut rng)).collect()
        })
    })
}
