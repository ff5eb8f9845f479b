//! The U-Net prior: config -> graph of typed layers -> weights on the GPU ->
//! a forward plan built once per (model, batch, resolution) and replayed.

pub mod backward;
pub mod config;
pub mod forward;
pub mod graph;
pub mod profile;
pub mod weights;

use std::path::Path;

pub use backward::UnetVjp;
pub use config::{AdmConfig, ConfigError, DiffusersConfig, UnetConfig};
pub use forward::{ForwardError, UnetForward};
pub use graph::{Graph, Layer};
pub use weights::{Weights, WeightsError};

use crate::gpu::Gpu;

/// A U-Net with its weights resident on the GPU.
pub struct Unet {
    pub config: UnetConfig,
    pub graph: Graph,
    pub weights: Weights,
}

impl Unet {
    /// Loads `config.json` + `model.safetensors` (a directory, or the weights
    /// file with its config beside it); every key and shape is checked.
    pub fn load(gpu: &Gpu, path: &Path) -> Result<Unet, WeightsError> {
        Self::load_with_arena_limit(gpu, path, weights::max_arena_elems(gpu))
    }

    /// As [`Unet::load`], packing the weights into arenas of at most
    /// `max_arena_elems` floats (the adapter's binding limit by default).
    pub fn load_with_arena_limit(gpu: &Gpu, path: &Path, max_arena_elems: usize) -> Result<Unet, WeightsError> {
        let (config, graph, host) = weights::load_host(path, max_arena_elems)?;
        let weights = Weights::upload(gpu, &host)?;
        Ok(Unet { config, graph, weights })
    }

    /// A model of `config` with random weights drawn from `seed` (benchmarks).
    pub fn random(gpu: &Gpu, config: &UnetConfig, seed: u64) -> Result<Unet, WeightsError> {
        let graph = Graph::build(config, false).map_err(|source| WeightsError::Graph {
            path: "<config>".into(),
            source,
        })?;
        let host = weights::random_host(&graph, seed, weights::max_arena_elems(gpu))?;
        let weights = Weights::upload(gpu, &host)?;
        Ok(Unet {
            config: config.clone(),
            graph,
            weights,
        })
    }

    pub fn num_params(&self) -> usize {
        self.graph.num_params()
    }
}
