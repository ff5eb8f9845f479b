//! One module per layer kind. Each kind is a struct (its graph description:
//! activations, weight names, options) implementing [`LayerKind`], which holds
//! everything every pass needs from it: its sizes, what the memory plan must
//! keep alive for its backward pass, its forward and backward dispatches, its
//! FLOPs, its profile label and its benchmark rows. The passes
//! (`memory.rs`, `forward.rs`, `backward.rs`, `profile.rs`, `crate::bench`)
//! walk the graph through [`Layer::kind`] and never match on kinds, so a kind
//! that leaves out a pass does not compile.
//!
//! Adding a kind: a new module here with its struct and `impl LayerKind`, and
//! its line in the `layers!` registry below (which declares the module too).

use serde_json::Value;

use super::backward::{GradCtx, GradState};
use super::forward::{ForwardCtx, ForwardError};
use super::graph::{ActId, Graph};
use super::memory::{OwnBuffer, PlanKind};
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::tensor::{DType, Tensor};

/// The sizes of one planned pass: the batch and every activation's shape,
/// from the graph at (N, H, W) when planning, from the plan's tensors when
/// reporting on a plan.
pub struct Sizes<'a> {
    pub n: usize,
    of: Source<'a>,
}

enum Source<'a> {
    Graph { g: &'a Graph, h: usize, w: usize },
    Tensors(&'a [Tensor]),
}

impl<'a> Sizes<'a> {
    /// `g`'s sizes for `n` images of `h` x `w`.
    pub fn of_graph(g: &'a Graph, n: usize, h: usize, w: usize) -> Sizes<'a> {
        Sizes {
            n,
            of: Source::Graph { g, h, w },
        }
    }

    /// The sizes of a plan's activation tensors, batch `n`.
    pub fn of_tensors(n: usize, acts: &'a [Tensor]) -> Sizes<'a> {
        Sizes {
            n,
            of: Source::Tensors(acts),
        }
    }

    /// Shape of activation `a`: [n, c, h, w] or [n, d].
    pub fn dims(&self, a: ActId) -> Vec<usize> {
        match self.of {
            Source::Graph { g, h, w } => g.act_shape(a, self.n, h, w),
            Source::Tensors(t) => t[a].shape.clone(),
        }
    }

    /// Pixels of image activation `a` over the batch (n for a vector).
    pub fn pixels(&self, a: ActId) -> f64 {
        let s = self.dims(a);
        s[2..].iter().product::<usize>() as f64 * s[0] as f64
    }

    /// "HxW" of activation `a`, for labels ("vector" for [n, d]).
    pub fn hw(&self, a: ActId) -> String {
        match self.dims(a)[..] {
            [_, _, h, w] => format!("{h}x{w}"),
            _ => "vector".into(),
        }
    }
}

/// A layer's profile label: its kind (the report's grouping) and a
/// description with its sizes.
pub struct Label {
    /// conv, groupnorm, attention, linear, timestep, resample, concat
    pub kind: &'static str,
    pub text: String,
}

/// One row of `tweedie bench --model`: a plan and its FLOPs or bytes moved.
pub struct BenchRow {
    pub name: String,
    pub kind: &'static str,
    pub plan: Plan,
    pub flops: f64,
    pub bytes: f64,
    /// How many layers of the model have this shape.
    pub count: usize,
    /// What `tools/bench_torch.py --shapes` runs in PyTorch.
    pub shape: Value,
    /// The convolution kernel the plan chose for this shape (conv rows).
    pub kernel: Option<String>,
}

impl BenchRow {
    /// A row of one layer of `kind`, its plan and shape, no FLOPs or bytes yet.
    pub(crate) fn layer(name: String, kind: &'static str, plan: &Plan, shape: Value) -> BenchRow {
        BenchRow {
            name,
            kind,
            plan: plan.clone(),
            flops: 0.0,
            bytes: 0.0,
            count: 1,
            shape,
            kernel: None,
        }
    }
}

/// Which activations a layer reads and writes, and which of them its
/// backward pass reads and sends gradients to: what the memory plan's
/// lifetimes come from. Every field is stated by every kind.
pub struct Dataflow {
    /// The activation it writes.
    pub output: ActId,
    /// The activations its forward reads.
    pub inputs: Vec<ActId>,
    /// The activations its input-gradient pass reads (beyond dy): kept
    /// alive until then.
    pub saved_for_backward: Vec<ActId>,
    /// The image activations its backward contributes gradients to.
    pub gradient_targets: Vec<ActId>,
    /// A residual whose gradient is dy itself (added with scale 1, not the
    /// layer's own input): the memory plan may give that gradient dy's
    /// buffer, and the backward pass then runs no dispatch for it.
    pub residual_passthrough: Option<ActId>,
}

/// What a layer allocates at planned sizes besides activations, gradients
/// and split-K scratch.
pub struct Buffers {
    /// The f32 tensor its forward keeps for the backward pass, (label,
    /// shape): GroupNorm's [mean, rstd], attention's log-sum-exps.
    pub saved: Option<(&'static str, Vec<usize>)>,
    /// Buffers of its own its forward plan makes (beyond `saved`).
    pub forward: Vec<OwnBuffer>,
    /// Buffers of its own its backward plan makes.
    pub backward: Vec<OwnBuffer>,
}

impl Buffers {
    pub const NONE: Buffers = Buffers {
        saved: None,
        forward: Vec::new(),
        backward: Vec::new(),
    };
}

/// Multiply-adds x 2 at planned sizes (0 for the memory-bound kinds).
#[derive(Clone, Copy)]
pub struct Flops {
    pub forward: f64,
    /// What the profiler counts for the input gradient (0 where it reads it as memory-bound).
    pub backward: f64,
}

impl Flops {
    pub const NONE: Flops = Flops {
        forward: 0.0,
        backward: 0.0,
    };
}

/// Every pass's view of one layer kind. No method has a default: a new kind
/// states, for each pass, what it does there (often nothing).
pub trait LayerKind: std::fmt::Debug {
    /// For the memory plan's lifetimes.
    fn dataflow(&self) -> Dataflow;

    /// Whether its sizes at `at` agree with the activations it reads and
    /// writes (a convolution's kernel output with its planned output): else
    /// the resolution is one this graph cannot run at.
    fn fits(&self, at: &Sizes) -> bool;

    fn flops(&self, at: &Sizes) -> Flops;

    /// For the memory plan, and allocated by the forward / backward plans.
    fn buffers(&self, at: &Sizes) -> Buffers;

    /// Bytes of split-K scratch its kernels need in a plan of `kind`.
    fn split_scratch_bytes(&self, gpu: &Gpu, at: &Sizes, kind: PlanKind, dt: DType) -> u64;

    /// Its forward dispatches (the tensor [`Buffers::saved`] asked for is
    /// `ctx.saved`); `keep` holds buffers the dispatches bind that nothing
    /// else owns.
    fn forward(
        &self,
        ctx: &ForwardCtx,
        at: &Sizes,
        keep: &mut Vec<wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, ForwardError>;

    /// Its input-gradient dispatches (what its forward saved is `ctx.saved`).
    fn backward(&self, ctx: &GradCtx, at: &Sizes, state: &mut GradState) -> Result<Vec<Dispatch>, ForwardError>;

    /// Its line in the profile report.
    fn label(&self, at: &Sizes) -> Label;

    /// Its rows in `tweedie bench --model` (none for the kinds not benchmarked
    /// on their own), from its forward plan and, where it has one, its backward plan.
    fn bench_rows(&self, gpu: &Gpu, dt: DType, at: &Sizes, fwd: &Plan, bwd: Option<&Plan>) -> Vec<BenchRow>;
}

/// The answers of a kind that has nothing to do in a pass, one line per kind
/// (`trivial!(split_scratch_bytes, bench_rows);`): the trait keeps no
/// defaults, so every kind still names each pass it skips.
/// - `fits`: its sizes follow from its input's, so every resolution fits;
/// - `flops`: memory-bound, no FLOPs counted;
/// - `buffers`: nothing saved, no buffers of its own;
/// - `split_scratch_bytes`: no split-K kernel;
/// - `backward`: no gradient flows through it (no dispatches);
/// - `bench_rows`: not benchmarked on its own.
macro_rules! trivial {
    ($($pass:ident),+ $(,)?) => {
        $(trivial!(@ $pass);)+
    };
    (@ fits) => {
        fn fits(&self, _: &$crate::unet::layers::Sizes) -> bool {
            true
        }
    };
    (@ flops) => {
        fn flops(&self, _: &$crate::unet::layers::Sizes) -> $crate::unet::layers::Flops {
            $crate::unet::layers::Flops::NONE
        }
    };
    (@ buffers) => {
        fn buffers(&self, _: &$crate::unet::layers::Sizes) -> $crate::unet::layers::Buffers {
            $crate::unet::layers::Buffers::NONE
        }
    };
    (@ split_scratch_bytes) => {
        fn split_scratch_bytes(
            &self,
            _: &$crate::gpu::Gpu,
            _: &$crate::unet::layers::Sizes,
            _: $crate::unet::memory::PlanKind,
            _: $crate::tensor::DType,
        ) -> u64 {
            0
        }
    };
    (@ backward) => {
        fn backward(
            &self,
            _: &$crate::unet::backward::GradCtx,
            _: &$crate::unet::layers::Sizes,
            _: &mut $crate::unet::backward::GradState,
        ) -> Result<Vec<$crate::gpu::Dispatch>, $crate::unet::forward::ForwardError> {
            Ok(vec![])
        }
    };
    (@ bench_rows) => {
        fn bench_rows(
            &self,
            _: &$crate::gpu::Gpu,
            _: $crate::tensor::DType,
            _: &$crate::unet::layers::Sizes,
            _: &$crate::gpu::Plan,
            _: Option<&$crate::gpu::Plan>,
        ) -> Vec<$crate::unet::layers::BenchRow> {
            vec![]
        }
    };
}

/// The registry: one line per module, `module::Kind` (or `module::{A, B}`
/// for a module of several kinds). Declares the modules and generates the
/// [`Layer`] enum over the kinds, [`Layer::kind`] (the one match over
/// kinds), `From<Kind> for Layer` and the kinds' re-exports.
macro_rules! layers {
    // Each entry normalised to `module [Kind ...]`, then emitted.
    (@norm [$($done:tt)*]) => {
        layers!(@emit $($done)*);
    };
    (@norm [$($done:tt)*] $module:ident::{$($kind:ident),+ $(,)?} $(, $($rest:tt)*)?) => {
        layers!(@norm [$($done)* $module [$($kind)+]] $($($rest)*)?);
    };
    (@norm [$($done:tt)*] $module:ident::$kind:ident $(, $($rest:tt)*)?) => {
        layers!(@norm [$($done)* $module [$kind]] $($($rest)*)?);
    };
    (@emit $($module:ident [$($kind:ident)+])*) => {
        $(mod $module;)*
        $($(pub use $module::$kind;)+)*

        /// One layer of the graph. Weight references are upstream key names;
        /// `w` of a fused group (diffusers' to_q/to_k/to_v) names its first
        /// member, the others follow it contiguously in the weight buffer.
        #[derive(Debug, Clone)]
        pub enum Layer {
            $($($kind($kind),)+)*
        }

        impl Layer {
            /// The layer as its kind, for every pass.
            pub fn kind(&self) -> &dyn LayerKind {
                match self {
                    $($(Layer::$kind(l) => l,)+)*
                }
            }
        }

        $($(impl From<$kind> for Layer {
            fn from(l: $kind) -> Layer {
                Layer::$kind(l)
            }
        })+)*
    };
    ($($entries:tt)+) => {
        layers!(@norm [] $($entries)+);
    };
}

layers! {
    timestep::Timestep,
    linear::Linear,
    conv::Conv,
    groupnorm::GroupNorm,
    attention::Attention,
    resample::{Upsample, AvgPool},
    concat::Concat,
}

pub use conv::conv_name;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::config::UnetConfig;

    /// Every layer's sizes agree with the activations it reads and writes at
    /// a resolution the graph runs at, and not at one it does not.
    #[test]
    fn ffhq_layers_fit_their_activations() {
        let g = Graph::build(&UnetConfig::dps_ffhq256(), false).unwrap();
        let at = Sizes::of_graph(&g, 2, 64, 96);
        for layer in &g.layers {
            let k = layer.kind();
            assert!(k.fits(&at), "{layer:?}");
            if let Some((_, dims)) = k.buffers(&at).saved {
                assert_eq!(dims[0], 2, "{layer:?} saves per sample");
            }
        }
        // Strided-convolution downsampling of 9 x 9 gives 5 x 5, not the 4 x 4 planned.
        let mut strided = UnetConfig::dps_ffhq256();
        if let UnetConfig::Adm(c) = &mut strided {
            c.resblock_updown = false;
        }
        let g = Graph::build(&strided, false).unwrap();
        let odd = Sizes::of_graph(&g, 1, 72, 72);
        assert!(g.layers.iter().any(|l| !l.kind().fits(&odd)));
        assert!(g.layers.iter().all(|l| l.kind().fits(&Sizes::of_graph(&g, 1, 64, 64))));
    }
}
