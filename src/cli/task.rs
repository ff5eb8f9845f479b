//! `--task T` and its options as the command line reads them, adapted to the
//! library's [`TaskSpec`] (which knows nothing of clap): a command flattens a
//! `TaskSpec` field and gets these flags; the task and filter names and their
//! help come from the library's own tables.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{ArgMatches, Args, FromArgMatches, ValueEnum};

use crate::operators::sr::SrFilter;
use crate::operators::task::{Task, TaskSpec};

/// The flags, as clap derives them (the help is the field docs).
#[derive(Args, Clone, Debug)]
#[group(id = "TaskSpec")]
struct TaskArgs {
    /// The measurement task.
    #[arg(long, value_enum)]
    task: Task,
    /// inpaint-box: side of the dropped square (default half the smaller image side: 128 at 256).
    #[arg(long = "box", value_name = "SIDE")]
    box_side: Option<usize>,
    /// inpaint-random: fraction of pixels dropped (default: uniform in 0.3-0.7 from the seed).
    #[arg(long)]
    ratio: Option<f64>,
    /// Blur kernel side, odd (deblur-gaussian 61, deblur-uniform 9, deblur-motion 61).
    #[arg(long)]
    kernel_size: Option<usize>,
    /// deblur-gaussian: standard deviation in pixels (default 3).
    #[arg(long)]
    kernel_sigma: Option<f64>,
    /// deblur-motion: trajectory intensity in [0, 1) (default 0.5).
    #[arg(long)]
    intensity: Option<f64>,
    /// sr: downscale factor (default 4).
    #[arg(long)]
    factor: Option<usize>,
    /// sr: bicubic (antialiased, a = -0.5) or block (average pooling); default bicubic.
    #[arg(long, value_enum)]
    filter: Option<SrFilter>,
    /// Inpainting: a mask image, white = kept (instead of a random one).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// deblur-motion: a kernel image (PNG, normalised to sum 1) or a safetensors file with key `kernel`.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// dense: a safetensors file holding the matrix.
    #[arg(long)]
    matrix: Option<PathBuf>,
    /// phase-retrieval: zero-pad by floor(oversample / 8 x side) on every side before the DFT (default 2).
    #[arg(long)]
    oversample: Option<f64>,
    /// jpeg: libjpeg's quality, 1 to 100 (default 10); the VJP rounds through Shin and Song's cubic stand-in.
    #[arg(long, value_name = "Q")]
    quality: Option<u32>,
}

impl From<TaskArgs> for TaskSpec {
    fn from(a: TaskArgs) -> TaskSpec {
        TaskSpec {
            task: a.task,
            box_side: a.box_side,
            ratio: a.ratio,
            kernel_size: a.kernel_size,
            kernel_sigma: a.kernel_sigma,
            intensity: a.intensity,
            factor: a.factor,
            filter: a.filter,
            mask: a.mask,
            kernel: a.kernel,
            matrix: a.matrix,
            oversample: a.oversample,
            quality: a.quality,
        }
    }
}

impl FromArgMatches for TaskSpec {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        TaskArgs::from_arg_matches(m).map(TaskSpec::from)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = TaskSpec::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for TaskSpec {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        TaskArgs::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        TaskArgs::augment_args_for_update(cmd)
    }
}

/// `--task` and `--filter` values: the library's `ALL` table, each value's
/// `name` and `help`.
macro_rules! named_values {
    ($($ty:ty),+) => {$(
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &<$ty>::ALL
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()).help(self.help()))
            }
        }
    )+};
}

named_values!(Task, SrFilter);
