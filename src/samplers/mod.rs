//! Diffusion samplers (DDPM, DPS, DMPS, C-DPS) over any [`ScoreModel`] and
//! [`Operator`](crate::operators::Operator), sharing one step kernel family
//! (`shaders/sampler.wgsl`) and the batched CG solver.

pub mod cg;
pub mod problem;
pub mod score;

pub use score::{GmmPrior, ScoreError, ScoreModel};
