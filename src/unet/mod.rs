//! The U-Net prior: config -> graph of typed layers -> weights on the GPU ->
//! a forward plan built once per (model, batch, resolution) and replayed, and
//! the VJP with respect to x through the same plan.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tweedie::unet::{memory::PlanKind, Unet, UnetForward, UnetVjp};
//! let gpu = tweedie::Gpu::new()?;
//! let unet = Unet::load(&gpu, std::path::Path::new("weights/ffhq256"))?;
//! let x_t = tweedie::Tensor::zeros(&gpu, "x_t", &[4, 3, 256, 256])?;
//! // Planned once: buffers, bind groups, dispatches (kept for a VJP to follow).
//! let fwd = UnetForward::with_input_kind(&gpu, &unet, &x_t, PlanKind::ForwardVjp)?;
//! let vjp = UnetVjp::new(&gpu, &unet, &fwd)?;
//! // Per step: write t (and the cotangent), record both into one pass, submit once.
//! fwd.t.write(&gpu, &[999.0; 4])?;
//! vjp.submit(&gpu, &fwd)?;
//! // fwd.output(): [eps, v]; vjp.dx(): (d out / d x)^T cotangent.
//! # Ok(()) }
//! ```
//!
//! # Where things go
//!
//! | file | holds |
//! |---|---|
//! | `config.rs` | `UnetConfig`, one variant and parser per architecture |
//! | `graph.rs` | the IR (`Act`, `Graph`, `Graph::act_shape`) and `Graph::build`'s one line per architecture |
//! | `layers/` | one module per layer kind, each a struct implementing [`LayerKind`]; `layers/mod.rs` holds the trait and the registry that makes the `Layer` enum |
//! | `builder.rs` | the shared `Builder`: layers, parameters, ResBlock and attention blocks |
//! | `adm.rs`, `diffusers.rs` | one lowering per architecture, config -> `Graph` |
//! | `memory.rs` | the memory plan: tensor lifetimes and the pooled buffers they share |
//! | `forward.rs` / `backward.rs` | the forward / VJP plans: buffers, then each layer's `LayerKind::forward` / `backward` |
//! | `profile.rs` | per-layer timing, labelled by `LayerKind::label` |
//!
//! All three passes hold one [`crate::gpu::Plan`] per layer and reach the
//! GPU only through `Plan`'s `record` / `submit` / `run` / `run_timed`.
//!
//! **A new layer kind:** one new module `layers/<kind>.rs` with the kind's
//! struct and its `impl LayerKind`: `dataflow` (what it reads and writes,
//! what the memory plan keeps alive for its backward), `fits` (its sizes
//! against its activations), `flops`, `buffers` (the tensor it saves for
//! the backward, its own buffers), `split_scratch_bytes`, `forward`,
//! `backward`, `label` (profile) and `bench_rows` (a pass it has nothing to
//! do in is one `trivial!(...)` line); and one registration line:
//! `<kind>::<Kind>` in the `layers!` list of `layers/mod.rs`, which also
//! declares the module. The trait has no default
//! methods, so a kind that leaves out a pass does not compile; the passes
//! (memory plan, forward, backward, profile, `tweedie bench`) need nothing
//! more. Then a builder method in `builder.rs` to emit it, and its kernels in
//! `src/kernels/`.
//!
//! **A new architecture:** its config variant and parser in `config.rs`, a
//! new `<arch>.rs` here with `pub(super) fn build(&Config) -> Result<Graph,
//! GraphError>` written against `builder.rs`, `mod <arch>;` below, and one
//! match arm in `Graph::build` (`graph.rs`). Forward, backward and profiling
//! need nothing more as long as it lowers to existing layer kinds.

mod adm;
pub mod backward;
mod builder;
pub mod config;
mod diffusers;
pub mod forward;
pub mod graph;
pub mod infer;
pub mod layers;
pub mod memory;
pub mod profile;
pub mod weights;

use std::path::Path;

pub use backward::UnetVjp;
pub use config::{AdmConfig, ConfigError, DiffusersConfig, UnetConfig};
pub use forward::{ForwardError, UnetForward};
pub use graph::{Graph, Layer};
pub use layers::{LayerKind, Sizes};
pub use weights::{Weights, WeightsError};

use crate::gpu::Gpu;
use crate::process::Process;
use crate::tensor::DType;

/// A U-Net with its weights resident on the GPU.
pub struct Unet {
    pub config: UnetConfig,
    /// The process the model was trained on (from `scheduler_config.json` or `config.json`).
    pub process: Process,
    pub graph: Graph,
    pub weights: Weights,
}

impl Unet {
    /// Loads `config.json` + `model.safetensors` (a directory, or the weights
    /// file with its config beside it); every key and shape is checked.
    pub fn load(gpu: &Gpu, path: &Path) -> Result<Unet, WeightsError> {
        Self::load_as(gpu, path, DType::F32)
    }

    /// As [`Unet::load`], the weights (and every plan of the model) in `dtype`.
    pub fn load_as(gpu: &Gpu, path: &Path, dtype: DType) -> Result<Unet, WeightsError> {
        Self::load_with_config(gpu, path, None, dtype)
    }

    /// As [`Unet::load_as`]; a torch checkpoint without config.json beside
    /// it takes its config from `model_config` ([`weights::open`]).
    pub fn load_with_config(
        gpu: &Gpu,
        path: &Path,
        model_config: Option<&Path>,
        dtype: DType,
    ) -> Result<Unet, WeightsError> {
        let opened = weights::open(path, model_config)?;
        let process = weights::process_for(&opened.files)?;
        let (config, graph, host) = weights::pack_checked(opened.check()?, weights::max_arena_elems(gpu))?;
        Self::upload(gpu, config, process, graph, &host, dtype)
    }

    /// As [`Unet::load`], packing the weights into arenas of at most
    /// `max_arena_elems` floats (the adapter's binding limit by default).
    pub fn load_with_arena_limit(gpu: &Gpu, path: &Path, max_arena_elems: usize) -> Result<Unet, WeightsError> {
        let files = weights::ModelFiles::resolve(path)?;
        let process = weights::process_for(&files)?;
        let (config, graph, host) = weights::load_host(path, max_arena_elems)?;
        Self::upload(gpu, config, process, graph, &host, DType::F32)
    }

    /// The model of `config`, `process` and `graph` with `host`'s weights
    /// uploaded in `dtype`.
    fn upload(
        gpu: &Gpu,
        config: UnetConfig,
        process: Process,
        graph: Graph,
        host: &weights::HostWeights,
        dtype: DType,
    ) -> Result<Unet, WeightsError> {
        let weights = Weights::upload_as(gpu, host, dtype)?;
        Ok(Unet {
            config,
            process,
            graph,
            weights,
        })
    }

    /// The built-in default prior ([`crate::embedded`]: the shipped
    /// Fashion-MNIST U-Net, compiled into the library).
    pub fn load_embedded(gpu: &Gpu) -> Result<Unet, WeightsError> {
        Self::load_embedded_as(gpu, DType::F32)
    }

    /// As [`Unet::load_embedded`], in `dtype`.
    pub fn load_embedded_as(gpu: &Gpu, dtype: DType) -> Result<Unet, WeightsError> {
        let checked = weights::inspect_embedded()?;
        let (config, graph, host) = weights::pack_checked(checked, weights::max_arena_elems(gpu))?;
        let process = Process::from_config_json(crate::embedded::CONFIG_JSON, Path::new(crate::embedded::MODEL_NAME))?;
        Self::upload(gpu, config, process, graph, &host, dtype)
    }

    /// A model of `config` with random weights drawn from `seed` (benchmarks).
    pub fn random(gpu: &Gpu, config: &UnetConfig, seed: u64) -> Result<Unet, WeightsError> {
        Self::random_as(gpu, config, seed, DType::F32)
    }

    /// As [`Unet::random`], in `dtype`.
    pub fn random_as(gpu: &Gpu, config: &UnetConfig, seed: u64, dtype: DType) -> Result<Unet, WeightsError> {
        let graph = Graph::build(config, false).map_err(|source| WeightsError::Graph {
            path: "<config>".into(),
            source,
        })?;
        let host = weights::random_host(&graph, seed, weights::max_arena_elems(gpu))?;
        Self::upload(gpu, config.clone(), Process::default(), graph, &host, dtype)
    }

    /// Storage type of the weights and of every plan of the model.
    pub fn dtype(&self) -> DType {
        self.weights.dtype
    }

    pub fn num_params(&self) -> usize {
        self.graph.num_params()
    }
}
