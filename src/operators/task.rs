//! The task factory: CLI options -> a concrete operator. Resolution is split
//! in two so a measurement file can rebuild exactly the same A: [`resolve`]
//! draws the random parts (masks, motion kernels) from the seed into a plain
//! [`ResolvedTask`], whose [`ResolvedTask::tensors`] are saved beside y and
//! read back by [`resolve_saved`].

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::io::{read_image, TensorFile};
use crate::operators::colorize::Colorize;
use crate::operators::deblur::Blur;
use crate::operators::diagonal::{Denoise, Inpaint};
use crate::operators::filters::{box_taps, gaussian_taps, motion_kernel};
use crate::operators::jpeg::{Jpeg, DEFAULT_QUALITY};
use crate::operators::phase::{PhaseRetrieval, DEFAULT_OVERSAMPLE};
use crate::operators::sr::{Sr, SrFilter};
use crate::operators::{LinearOperator, Operator, OperatorError};
use crate::tensor::HostTensor;
use crate::Gpu;

/// A measurement task, as `--task` spells it. Its options, defaults and
/// validation live here and in [`resolve`]; a new task is one variant, its
/// entries in [`Task::name`], [`Task::help`] and [`Task::options`], its arm
/// in [`resolve`] and its operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Denoise,
    InpaintRandom,
    InpaintBox,
    DeblurGaussian,
    DeblurUniform,
    DeblurMotion,
    Sr,
    Colorize,
    Dense,
    PhaseRetrieval,
    Jpeg,
}

/// A task option flag, as the CLI spells it.
pub type TaskOption = &'static str;

impl Task {
    /// Every task, in the order the CLI lists them.
    pub const ALL: [Task; 11] = [
        Task::Denoise,
        Task::InpaintRandom,
        Task::InpaintBox,
        Task::DeblurGaussian,
        Task::DeblurUniform,
        Task::DeblurMotion,
        Task::Sr,
        Task::Colorize,
        Task::Dense,
        Task::PhaseRetrieval,
        Task::Jpeg,
    ];

    /// The name `--task` takes (`inpaint-box`, `sr`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Task::Denoise => "denoise",
            Task::InpaintRandom => "inpaint-random",
            Task::InpaintBox => "inpaint-box",
            Task::DeblurGaussian => "deblur-gaussian",
            Task::DeblurUniform => "deblur-uniform",
            Task::DeblurMotion => "deblur-motion",
            Task::Sr => "sr",
            Task::Colorize => "colorize",
            Task::Dense => "dense",
            Task::PhaseRetrieval => "phase-retrieval",
            Task::Jpeg => "jpeg",
        }
    }

    /// What the task measures, in a line (the command line lists them).
    pub fn help(self) -> &'static str {
        match self {
            Task::Denoise => "y = x + noise",
            Task::InpaintRandom => "Random pixels dropped (`--ratio`, or `--mask`)",
            Task::InpaintBox => "A square dropped (`--box`, or `--mask`)",
            Task::DeblurGaussian => "DPS's 61x61 Gaussian blur, reflect boundary (`--kernel-size`, `--kernel-sigma`)",
            Task::DeblurUniform => "A uniform (box) blur (`--kernel-size`)",
            Task::DeblurMotion => "A random-trajectory motion blur (`--kernel-size`, `--intensity`, or `--kernel`)",
            Task::Sr => "Super-resolution (`--factor`, `--filter`)",
            Task::Colorize => "RGB to gray",
            Task::Dense => "A dense matrix from a file (`--matrix`)",
            Task::PhaseRetrieval => "Fourier magnitudes |F pad(x)|, non-linear (`--oversample`)",
            Task::Jpeg => "The JPEG round trip (YCbCr 4:2:0, IJG tables), non-linear (`--quality`)",
        }
    }

    /// The options this task takes.
    pub fn options(self) -> &'static [TaskOption] {
        match self {
            Task::InpaintRandom => &["--ratio", "--mask"],
            Task::InpaintBox => &["--box", "--mask"],
            Task::DeblurGaussian => &["--kernel-size", "--kernel-sigma"],
            Task::DeblurUniform => &["--kernel-size"],
            Task::DeblurMotion => &["--kernel-size", "--intensity", "--kernel"],
            Task::Sr => &["--factor", "--filter"],
            Task::Dense => &["--matrix"],
            Task::PhaseRetrieval => &["--oversample"],
            Task::Jpeg => &["--quality"],
            Task::Denoise | Task::Colorize => &[],
        }
    }

    /// Inpainting (a diagonal 0/1 operator): DPS's official zeta differs.
    pub fn is_inpainting(self) -> bool {
        matches!(self, Task::InpaintRandom | Task::InpaintBox)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Task, String> {
        Task::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            format!("unknown --task {s} (one of: {})", names.join(", "))
        })
    }
}

impl serde::Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A task and its options (`--task T [task options]` on every command that
/// builds an operator); None leaves an option to the task's default. The
/// command line's flags for it are `crate::cli`'s.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub task: Task,
    /// inpaint-box: side of the dropped square (default half the smaller image side: 128 at 256).
    pub box_side: Option<usize>,
    /// inpaint-random: fraction of pixels dropped (default: uniform in 0.3-0.7 from the seed).
    pub ratio: Option<f64>,
    /// Blur kernel side, odd (deblur-gaussian 61, deblur-uniform 9, deblur-motion 61).
    pub kernel_size: Option<usize>,
    /// deblur-gaussian: standard deviation in pixels (default 3).
    pub kernel_sigma: Option<f64>,
    /// deblur-motion: trajectory intensity in [0, 1) (default 0.5).
    pub intensity: Option<f64>,
    /// sr: downscale factor (default 4).
    pub factor: Option<usize>,
    /// sr: bicubic (antialiased, a = -0.5) or block (average pooling); default bicubic.
    pub filter: Option<SrFilter>,
    /// Inpainting: a mask image, white = kept (instead of a random one).
    pub mask: Option<PathBuf>,
    /// deblur-motion: a kernel image (PNG, normalised to sum 1) or a safetensors file with key `kernel`.
    pub kernel: Option<PathBuf>,
    /// dense: a safetensors file holding the matrix.
    pub matrix: Option<PathBuf>,
    /// phase-retrieval: the padding is floor(oversample / 8 x side) on every side (default 2).
    pub oversample: Option<f64>,
    /// jpeg: libjpeg's quality, 1 to 100 (default 10).
    pub quality: Option<u32>,
}

impl TaskSpec {
    /// The options as given (null where left to the default), for reports.
    pub fn options_json(&self) -> serde_json::Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        serde_json::json!({
            "box": self.box_side, "ratio": self.ratio, "kernel_size": self.kernel_size,
            "kernel_sigma": self.kernel_sigma, "intensity": self.intensity, "factor": self.factor,
            "filter": self.filter.map(SrFilter::name),
            "mask": path(&self.mask), "kernel": path(&self.kernel), "matrix": path(&self.matrix),
            "oversample": self.oversample, "quality": self.quality,
        })
    }

    /// A spec with just a task and default options.
    pub fn new(task: Task) -> TaskSpec {
        TaskSpec {
            task,
            box_side: None,
            ratio: None,
            kernel_size: None,
            kernel_sigma: None,
            intensity: None,
            factor: None,
            filter: None,
            mask: None,
            kernel: None,
            matrix: None,
            oversample: None,
            quality: None,
        }
    }
}

/// The concrete, fully drawn operator description (CPU side, no GPU).
#[derive(Clone, Debug)]
pub enum Resolved {
    Denoise,
    /// `mask` [H, W]: 1 kept, 0 dropped.
    Inpaint {
        mask: Vec<f32>,
    },
    /// 1-D taps along H and W (odd lengths).
    SeparableBlur {
        gh: Vec<f64>,
        gw: Vec<f64>,
    },
    /// [kh, kw] taps (odd sides).
    Blur2d {
        kernel: Vec<f64>,
        kh: usize,
        kw: usize,
    },
    Sr {
        factor: usize,
        filter: SrFilter,
    },
    Colorize,
    /// A [m, d] with d = C*H*W.
    Dense {
        matrix: HostTensor,
    },
    PhaseRetrieval {
        oversample: f64,
    },
    Jpeg {
        quality: u32,
    },
}

#[derive(Clone, Debug)]
pub struct ResolvedTask {
    pub task: Task,
    pub in_shape: [usize; 3],
    pub kind: Resolved,
}

fn invalid(task: impl std::fmt::Display, message: impl Into<String>) -> OperatorError {
    OperatorError::Invalid {
        task: task.to_string(),
        message: message.into(),
    }
}

fn check_options(spec: &TaskSpec) -> Result<(), OperatorError> {
    let task = spec.task;
    let given = [
        ("--box", spec.box_side.is_some()),
        ("--ratio", spec.ratio.is_some()),
        ("--kernel-size", spec.kernel_size.is_some()),
        ("--kernel-sigma", spec.kernel_sigma.is_some()),
        ("--intensity", spec.intensity.is_some()),
        ("--factor", spec.factor.is_some()),
        ("--filter", spec.filter.is_some()),
        ("--mask", spec.mask.is_some()),
        ("--kernel", spec.kernel.is_some()),
        ("--matrix", spec.matrix.is_some()),
        ("--oversample", spec.oversample.is_some()),
        ("--quality", spec.quality.is_some()),
    ];
    let allowed = task.options();
    for (name, present) in given {
        if present && !allowed.contains(&name) {
            let takes = if allowed.is_empty() {
                "no options".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(invalid(
                task,
                format!("{name} does not apply to this task (it takes {takes})"),
            ));
        }
    }
    if spec.mask.is_some() && (spec.ratio.is_some() || spec.box_side.is_some()) {
        return Err(invalid(task, "give --mask or --ratio/--box, not both"));
    }
    if spec.kernel.is_some() && (spec.kernel_size.is_some() || spec.intensity.is_some()) {
        return Err(invalid(task, "give --kernel or --kernel-size/--intensity, not both"));
    }
    Ok(())
}

fn odd_size(task: Task, size: usize) -> Result<usize, OperatorError> {
    if size == 0 || size % 2 == 0 {
        return Err(invalid(task, format!("--kernel-size {size} must be odd and positive")));
    }
    Ok(size)
}

fn mask_from_png(task: Task, path: &Path, h: usize, w: usize) -> Result<Vec<f32>, OperatorError> {
    let img = read_image(path).map_err(|e| invalid(task, format!("--mask: {e}")))?;
    let (c, mh, mw) = (img.shape[1], img.shape[2], img.shape[3]);
    if (mh, mw) != (h, w) {
        return Err(invalid(
            task,
            format!("--mask {} is {mh}x{mw}, the image is {h}x{w}", path.display()),
        ));
    }
    Ok((0..h * w)
        .map(|i| {
            let mean = (0..c).map(|ch| img.data[ch * h * w + i]).sum::<f32>() / c as f32;
            if mean > 0.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect())
}

/// DPS's random-pixel mask: exactly int(H W ratio) pixels dropped, drawn
/// without replacement.
fn random_mask(h: usize, w: usize, ratio: f64, rng: &mut StdRng) -> Vec<f32> {
    let total = h * w;
    let dropped = ((total as f64) * ratio) as usize;
    let mut idx: Vec<usize> = (0..total).collect();
    let mut mask = vec![1.0f32; total];
    for k in 0..dropped.min(total) {
        let j = rng.random_range(k..total);
        idx.swap(k, j);
        mask[idx[k]] = 0.0;
    }
    mask
}

/// DPS's box position: top-left uniform in [margin, side - margin - box), with
/// the 16-pixel margin of 256x256 scaled to the image; anywhere if that is empty.
fn box_start(side: usize, boxlen: usize, rng: &mut StdRng) -> usize {
    let margin = 16 * side / 256;
    if side > boxlen + 2 * margin {
        rng.random_range(margin..side - margin - boxlen)
    } else {
        rng.random_range(0..=side - boxlen)
    }
}

fn box_mask(task: Task, h: usize, w: usize, boxlen: usize, rng: &mut StdRng) -> Result<Vec<f32>, OperatorError> {
    if boxlen == 0 || boxlen > h || boxlen > w {
        return Err(invalid(
            task,
            format!("--box {boxlen} must be between 1 and the image side ({h}x{w})"),
        ));
    }
    let t = box_start(h, boxlen, rng);
    let l = box_start(w, boxlen, rng);
    let mut mask = vec![1.0f32; h * w];
    for i in t..t + boxlen {
        mask[i * w + l..i * w + l + boxlen].fill(0.0);
    }
    Ok(mask)
}

fn kernel_from_file(task: Task, path: &Path) -> Result<(Vec<f64>, usize, usize), OperatorError> {
    let is_st = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (raw, kh, kw): (Vec<f64>, usize, usize) = if is_st {
        let f = TensorFile::open(path).map_err(|e| invalid(task, format!("--kernel: {e}")))?;
        let t = f.get("kernel").map_err(|e| invalid(task, format!("--kernel: {e}")))?;
        let s = &t.shape;
        if s.len() < 2 || s[..s.len() - 2].iter().any(|&d| d != 1) {
            return Err(invalid(
                task,
                format!(
                    "--kernel {}: tensor kernel has shape {s:?}, expected [kh, kw]",
                    path.display()
                ),
            ));
        }
        (
            t.data.iter().map(|&v| v as f64).collect(),
            s[s.len() - 2],
            s[s.len() - 1],
        )
    } else {
        let img = read_image(path).map_err(|e| invalid(task, format!("--kernel: {e}")))?;
        let (c, kh, kw) = (img.shape[1], img.shape[2], img.shape[3]);
        // Back from [-1, 1] to intensities in [0, 1], channels averaged.
        let k = (0..kh * kw)
            .map(|i| {
                (0..c)
                    .map(|ch| (img.data[ch * kh * kw + i] as f64 + 1.0) / 2.0)
                    .sum::<f64>()
                    / c as f64
            })
            .collect();
        (k, kh, kw)
    };
    normalised_kernel(task, &format!("--kernel {}", path.display()), raw, kh, kw)
}

fn normalised_kernel(
    task: Task,
    what: &str,
    mut k: Vec<f64>,
    kh: usize,
    kw: usize,
) -> Result<(Vec<f64>, usize, usize), OperatorError> {
    if kh % 2 == 0 || kw % 2 == 0 {
        return Err(invalid(task, format!("{what} is {kh}x{kw}: kernel sides must be odd")));
    }
    if k.iter().any(|v| !v.is_finite()) {
        return Err(invalid(task, format!("{what} holds a non-finite value")));
    }
    let total: f64 = k.iter().sum();
    if total.abs() < 1e-12 {
        return Err(invalid(task, format!("{what} sums to zero and cannot be normalised")));
    }
    k.iter_mut().for_each(|v| *v /= total);
    Ok((k, kh, kw))
}

/// Draws everything random about the operator from `seed` and checks the
/// options against the task and the image shape [C, H, W].
pub fn resolve(spec: &TaskSpec, in_shape: [usize; 3], seed: u64) -> Result<ResolvedTask, OperatorError> {
    check_options(spec)?;
    let task = spec.task;
    let [c, h, w] = in_shape;
    if c == 0 || h == 0 || w == 0 {
        return Err(invalid(task, format!("image shape {in_shape:?} is empty")));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let kind = match task {
        Task::Denoise => Resolved::Denoise,
        Task::InpaintRandom => {
            let mask = match &spec.mask {
                Some(p) => mask_from_png(task, p, h, w)?,
                None => {
                    let ratio = match spec.ratio {
                        Some(r) if (0.0..=1.0).contains(&r) => r,
                        Some(r) => {
                            return Err(invalid(
                                task,
                                format!("--ratio {r} must be in [0, 1] (the fraction dropped)"),
                            ))
                        }
                        None => 0.3 + 0.4 * rng.random::<f64>(),
                    };
                    random_mask(h, w, ratio, &mut rng)
                }
            };
            Resolved::Inpaint { mask }
        }
        Task::InpaintBox => {
            let mask = match &spec.mask {
                Some(p) => mask_from_png(task, p, h, w)?,
                None => box_mask(task, h, w, spec.box_side.unwrap_or((h.min(w) / 2).max(1)), &mut rng)?,
            };
            Resolved::Inpaint { mask }
        }
        Task::DeblurGaussian => {
            let size = odd_size(task, spec.kernel_size.unwrap_or(61))?;
            let sigma = spec.kernel_sigma.unwrap_or(3.0);
            if !(sigma.is_finite() && sigma > 0.0) {
                return Err(invalid(task, format!("--kernel-sigma {sigma} must be positive")));
            }
            let g = gaussian_taps(size, sigma);
            Resolved::SeparableBlur { gh: g.clone(), gw: g }
        }
        Task::DeblurUniform => {
            let size = odd_size(task, spec.kernel_size.unwrap_or(9))?;
            Resolved::SeparableBlur {
                gh: box_taps(size),
                gw: box_taps(size),
            }
        }
        Task::DeblurMotion => {
            let (kernel, kh, kw) = match &spec.kernel {
                Some(p) => kernel_from_file(task, p)?,
                None => {
                    let size = odd_size(task, spec.kernel_size.unwrap_or(61))?;
                    let intensity = spec.intensity.unwrap_or(0.5);
                    if !(0.0..1.0).contains(&intensity) {
                        return Err(invalid(task, format!("--intensity {intensity} must be in [0, 1)")));
                    }
                    (motion_kernel(size, intensity, &mut rng), size, size)
                }
            };
            Resolved::Blur2d { kernel, kh, kw }
        }
        Task::Sr => Resolved::Sr {
            factor: spec.factor.unwrap_or(4),
            filter: spec.filter.unwrap_or(SrFilter::Bicubic),
        },
        Task::Colorize => Resolved::Colorize,
        Task::Dense => {
            let path = spec.matrix.as_ref().ok_or_else(|| {
                invalid(
                    task,
                    "--matrix FILE is required (a safetensors file with key `matrix` or `A`, shape [m, C*H*W])",
                )
            })?;
            let file = TensorFile::open(path).map_err(|e| invalid(task, format!("--matrix: {e}")))?;
            let key = if file.has("matrix") { "matrix" } else { "A" };
            let matrix = file.get(key).map_err(|e| invalid(task, format!("--matrix: {e}")))?;
            Resolved::Dense { matrix }
        }
        Task::PhaseRetrieval => {
            let oversample = spec.oversample.unwrap_or(DEFAULT_OVERSAMPLE);
            // Checked here so a bad value is refused before any GPU work.
            PhaseRetrieval::new(in_shape, oversample)?;
            Resolved::PhaseRetrieval { oversample }
        }
        Task::Jpeg => {
            let quality = spec.quality.unwrap_or(DEFAULT_QUALITY);
            Jpeg::check(in_shape, quality)?;
            Resolved::Jpeg { quality }
        }
    };
    Ok(ResolvedTask { task, in_shape, kind })
}

/// Like [`resolve`], but takes the drawn parts (the mask, the blur kernel)
/// from a measurement file written by `tweedie degrade`, so the operator is
/// exactly the one that made y.
pub fn resolve_saved(spec: &TaskSpec, in_shape: [usize; 3], file: &TensorFile) -> Result<ResolvedTask, OperatorError> {
    let mut r = resolve(spec, in_shape, 0)?;
    let task = r.task;
    let [_, h, w] = in_shape;
    let load = |key: &str| file.get(key).map_err(|e| invalid(task, e.to_string()));
    let wrong_shape = |what: String, got: Vec<usize>, expected: Vec<usize>| OperatorError::Shape {
        task: task.to_string(),
        what,
        got,
        expected,
    };
    // A blur's saved kernel: 2-D (`expected` names the sides the task drew
    // in the message), normalised to sum 1; with its sides.
    let load_kernel = |expected: Vec<usize>| {
        let k = load("kernel")?;
        if k.shape.len() != 2 {
            return Err(wrong_shape("kernel".into(), k.shape, expected));
        }
        let raw = k.data.iter().map(|&v| v as f64).collect();
        normalised_kernel(task, "kernel in the measurement file", raw, k.shape[0], k.shape[1])
    };
    match &mut r.kind {
        Resolved::Dense { matrix } => {
            if file.has("matrix") {
                *matrix = load("matrix")?;
            }
        }
        Resolved::Inpaint { mask } => {
            let m = load("mask")?;
            if m.numel() != h * w {
                return Err(wrong_shape(
                    format!("mask in {}", file.path.display()),
                    m.shape,
                    vec![h, w],
                ));
            }
            *mask = m.data.iter().map(|&v| if v > 0.5 { 1.0 } else { 0.0 }).collect();
        }
        Resolved::Blur2d { kernel, kh, kw } => {
            (*kernel, *kh, *kw) = load_kernel(vec![*kh, *kw])?;
        }
        Resolved::SeparableBlur { gh, gw } => {
            // The saved 2-D kernel is g_h g_w^T with sum 1: its row and column
            // sums give the factors back.
            let (kn, kh, kw) = load_kernel(vec![gh.len(), gw.len()])?;
            let rows: Vec<f64> = (0..kh).map(|i| (0..kw).map(|j| kn[i * kw + j]).sum()).collect();
            let cols: Vec<f64> = (0..kw).map(|j| (0..kh).map(|i| kn[i * kw + j]).sum()).collect();
            let peak = kn.iter().fold(0f64, |m, v| m.max(v.abs()));
            let separable = (0..kh * kw).all(|i| (kn[i] - rows[i / kw] * cols[i % kw]).abs() <= 1e-5 * peak);
            if !separable {
                return Err(invalid(task, "the kernel in the measurement file is not separable"));
            }
            (*gh, *gw) = (rows, cols);
        }
        Resolved::Denoise
        | Resolved::Sr { .. }
        | Resolved::Colorize
        | Resolved::PhaseRetrieval { .. }
        | Resolved::Jpeg { .. } => {}
    }
    Ok(r)
}

/// Builds the operator for task `spec` on images of shape [C, H, W], drawing
/// masks and kernels from `seed`.
pub fn build(gpu: &Gpu, spec: &TaskSpec, in_shape: [usize; 3], seed: u64) -> Result<Box<dyn Operator>, OperatorError> {
    resolve(spec, in_shape, seed)?.build(gpu)
}

/// As [`build`], for callers that need A^T or an SVD form: refuses a
/// non-linear task in one line.
pub fn build_linear(
    gpu: &Gpu,
    spec: &TaskSpec,
    in_shape: [usize; 3],
    seed: u64,
) -> Result<Box<dyn LinearOperator>, OperatorError> {
    resolve(spec, in_shape, seed)?.build_linear(gpu)
}

impl ResolvedTask {
    pub fn build(&self, gpu: &Gpu) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(match &self.kind {
            Resolved::PhaseRetrieval { oversample } => Box::new(PhaseRetrieval::new(self.in_shape, *oversample)?),
            Resolved::Jpeg { quality } => Box::new(Jpeg::new(gpu, self.in_shape, *quality)?),
            _ => self.build_linear(gpu)?,
        })
    }

    /// The operator as a linear one; a non-linear task is refused.
    pub fn build_linear(&self, gpu: &Gpu) -> Result<Box<dyn LinearOperator>, OperatorError> {
        let shape = self.in_shape;
        let task = self.task.name();
        Ok(match &self.kind {
            Resolved::Denoise => Box::new(Denoise::new(gpu, shape)?),
            Resolved::Inpaint { mask } => Box::new(Inpaint::new(gpu, task, shape, mask)?),
            Resolved::SeparableBlur { gh, gw } => Box::new(Blur::separable(gpu, task, shape, gh, gw)?),
            Resolved::Blur2d { kernel, kh, kw } => Box::new(Blur::full(gpu, task, shape, kernel, *kh, *kw)?),
            Resolved::Sr { factor, filter } => Box::new(Sr::new(gpu, shape, *factor, *filter)?),
            Resolved::Colorize => Box::new(Colorize::new(gpu, shape)?),
            Resolved::Dense { matrix } => Box::new(super::dense::Dense::new(gpu, matrix, shape)?),
            Resolved::PhaseRetrieval { .. } | Resolved::Jpeg { .. } => {
                return Err(invalid(task, "is not a linear measurement"))
            }
        })
    }

    /// The tensors that pin the operator down, saved beside a measurement:
    /// `mask` [H, W] for inpainting, `kernel` [kh, kw] for blurs.
    pub fn tensors(&self) -> Vec<(String, HostTensor)> {
        let [_, h, w] = self.in_shape;
        match &self.kind {
            Resolved::Inpaint { mask } => {
                vec![("mask".into(), HostTensor::new(vec![h, w], mask.clone()))]
            }
            Resolved::SeparableBlur { gh, gw } => {
                let k = gh
                    .iter()
                    .flat_map(|&a| gw.iter().map(move |&b| (a * b) as f32))
                    .collect();
                vec![("kernel".into(), HostTensor::new(vec![gh.len(), gw.len()], k))]
            }
            Resolved::Blur2d { kernel, kh, kw } => {
                vec![(
                    "kernel".into(),
                    HostTensor::new(vec![*kh, *kw], kernel.iter().map(|&v| v as f32).collect()),
                )]
            }
            Resolved::Dense { matrix } => vec![("matrix".into(), matrix.clone())],
            Resolved::Denoise
            | Resolved::Sr { .. }
            | Resolved::Colorize
            | Resolved::PhaseRetrieval { .. }
            | Resolved::Jpeg { .. } => Vec::new(),
        }
    }
}
