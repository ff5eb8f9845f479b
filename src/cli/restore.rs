//! `tweedie restore`: image(s) or a ready measurement in, posterior samples,
//! their mean and per-pixel standard deviation, and report.json out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use serde_json::json;

use super::common::{list_images, load_clean, prepare_out, progress, Prior};
use super::sampling::{default_zeta, linear_gain, settings_json, with_settings, NoiseArgs, ProblemArgs, SamplingArgs};
use crate::io::{write_atomic, write_image, write_tensors, TensorFile};
use crate::metrics::{psnr, ssim};
use crate::operators::task::{resolve, resolve_saved, ResolvedTask};
use crate::restore::{argmin, measure, misfits, save_measurement, Restoration, Restore};
use crate::samplers::SamplerOptions;
use crate::schedule::VarianceType;
use crate::tensor::HostTensor;
use crate::Gpu;

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    /// Clean image(s): a PNG/JPEG file or a directory of them; the measurement is made from each.
    #[arg(long, conflicts_with = "measurement", required_unless_present = "measurement")]
    pub input: Option<PathBuf>,
    /// A ready measurement from `tweedie degrade` (its .png or .safetensors).
    #[arg(long)]
    pub measurement: Option<PathBuf>,
    /// The noise of the measurement made from --input.
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Posterior samples per image.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Draw K samples per image and also keep the one whose measurement fits
    /// y best (smallest ||y - A(x)||) as best.png, as DPS does for phase
    /// retrieval; report.json says which was kept.
    #[arg(long, value_name = "K", conflicts_with = "samples")]
    pub best_of: Option<usize>,
    /// Samples drawn at once (default: all of them, at most 16).
    #[arg(long)]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Output directory (created); one sub-directory per image for a directory input.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One image's restoration inputs.
pub struct Job {
    pub name: String,
    pub clean: Option<HostTensor>,
    pub resolved: ResolvedTask,
    pub y: Vec<f32>,
    pub sigma_y: f32,
    /// ||A||_2 where the measurement is linear ([`linear_gain`]).
    pub gain: Option<f32>,
}

/// Runs one job (`args`' method, sampling options and sample count, `batch`
/// samples at a time) with the progress bar; returns the restoration, the
/// planning seconds and the operator's output shape.
impl RestoreArgs {
    /// Samples drawn per image: `--best-of K` or `--samples`.
    pub fn count(&self) -> usize {
        self.best_of.unwrap_or(self.samples)
    }
}

pub fn run_job(
    gpu: &Gpu,
    prior: &Prior,
    job: &Job,
    args: &RestoreArgs,
    batch: usize,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(Restoration, f64, [usize; 3])> {
    let (method, samples) = (args.problem.method, args.count());
    let t0 = Instant::now();
    let op = job.resolved.build(gpu)?;
    let opts = job_options(args, prior, job)?;
    let plan_s = t0.elapsed().as_secs_f64();
    pb.set_position(0);
    let mut cb = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        true
    };
    let r = Restore::new(&prior.score, method, &opts)
        .measured(op.as_ref(), job.sigma_y)
        .samples(gpu, &job.y, samples, batch, &mut cb)?;
    Ok((r, plan_s, op.out_shape()))
}

/// The sampler options of one job: `args`' settings, DPS's step size by the job's task.
fn job_options(args: &RestoreArgs, prior: &Prior, job: &Job) -> anyhow::Result<SamplerOptions> {
    let variance = prior.score.unet().process.variance.unwrap_or(VarianceType::FixedLarge);
    args.sampling
        .options(default_zeta(job.resolved.task, job.gain), true, variance)
}

/// Quality of the mean and of each sample against the clean image.
pub fn quality(r: &Restoration, clean: &HostTensor) -> serde_json::Value {
    let (c, h, w) = (clean.shape[1], clean.shape[2], clean.shape[3]);
    let per_sample: Vec<_> = r
        .samples
        .iter()
        .map(|s| json!({"psnr": psnr(s, &clean.data), "ssim": ssim(s, &clean.data, c, h, w)}))
        .collect();
    json!({
        "mean": {"psnr": psnr(&r.mean, &clean.data), "ssim": ssim(&r.mean, &clean.data, c, h, w)},
        "samples": per_sample,
    })
}

pub fn run(args: RestoreArgs, verbose: bool) -> anyhow::Result<()> {
    args.sampling.validate(args.problem.method)?;
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if args.best_of == Some(0) {
        bail!("--best-of must be at least 1");
    }
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    let noise = args.noise.model()?;
    let inputs = match &args.input {
        Some(p) => list_images(p)?,
        None => Vec::new(),
    };
    prepare_out(&args.out)?;
    let started = Instant::now();
    let gpu = super::open_gpu(verbose)?;
    let prior = args.problem.prior.load(&gpu)?;
    let batch = args.batch.unwrap_or(args.count().min(16));
    let in_shape = [prior.channels, prior.size, prior.size];

    let mut jobs = Vec::new();
    if let Some(m) = &args.measurement {
        let st = m.with_extension("safetensors");
        let file = TensorFile::open(&st)?;
        let shape = file.get("in_shape")?;
        let file_shape: Vec<usize> = shape.data.iter().map(|&v| v as usize).collect();
        if file_shape != in_shape {
            bail!(
                "{}: the measurement was made from images of shape {file_shape:?} but the model takes {in_shape:?}",
                st.display()
            );
        }
        let resolved = resolve_saved(&args.problem.spec, in_shape, &file)?;
        let gain = linear_gain(&gpu, resolved.build(&gpu)?.as_ref())?;
        let y = file.get("y")?.data;
        let sigma_y = file.get("sigma_y")?.data.first().copied().unwrap_or(0.0);
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            bail!("{}: y has a non-finite value at index {i}", st.display());
        }
        jobs.push(Job {
            name: String::new(),
            clean: None,
            resolved,
            y,
            sigma_y,
            gain,
        });
    } else {
        for (i, p) in inputs.iter().enumerate() {
            let clean = load_clean(p, &prior, args.quiet)?;
            let seed = args.sampling.seed.wrapping_add(i as u64);
            let resolved = resolve(&args.problem.spec, in_shape, seed)?;
            let op = resolved.build(&gpu)?;
            let y = measure(&gpu, op.as_ref(), &clean, noise, seed)?;
            let gain = linear_gain(&gpu, op.as_ref())?;
            let name = if inputs.len() > 1 { p.stem() } else { String::new() };
            jobs.push(Job {
                name,
                clean: Some(clean),
                resolved,
                y,
                sigma_y: noise.sigma_y(),
                gain,
            });
        }
    }

    let pb = progress(args.quiet, args.problem.method.name());
    let mut summary = Vec::new();
    for job in &jobs {
        let dir = if job.name.is_empty() {
            args.out.clone()
        } else {
            args.out.join(&job.name)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        pb.set_message(format!("{} {}", args.problem.method.name(), job.name));
        let (r, plan_s, op_out) = run_job(&gpu, &prior, job, &args, batch, &pb)?;
        let t_write = Instant::now();
        write_outputs(&dir, job, &r, in_shape, op_out)?;
        let best = match args.best_of {
            Some(k) => {
                let op = job.resolved.build(&gpu)?;
                let all: Vec<f32> = r.samples.iter().flatten().copied().collect();
                let fits = misfits(&gpu, op.as_ref(), &all, &job.y)?;
                let kept = argmin(&fits);
                let [c, h, w] = in_shape;
                write_image(dir.join("best.png"), c, h, w, &r.samples[kept])?;
                let mut b = json!({"k": k, "kept": kept, "misfits": fits, "image": "best.png"});
                if let Some(clean) = &job.clean {
                    let x = &r.samples[kept];
                    b["psnr"] = json!(psnr(x, &clean.data));
                    b["ssim"] = json!(ssim(x, &clean.data, c, h, w));
                }
                Some(b)
            }
            None => None,
        };
        let write_s = t_write.elapsed().as_secs_f64();
        let q = job.clean.as_ref().map(|c| quality(&r, c));
        let settings = settings_json(&job_options(&args, &prior, job)?, &prior.score.unet().process);
        let report = json!({
            "tweedie": env!("CARGO_PKG_VERSION"),
            "model": prior.name,
            "process": prior.score.unet().process.describe(),
            "task": job.resolved.task,
            "task_options": args.problem.spec.options_json(),
            "method": args.problem.method.name(),
            "precision": prior.precision.name(),
            "steps": r.steps,
            "samples": args.count(),
            "best_of": best,
            "batch": batch,
            "seed": args.sampling.seed,
            "sigma_y": job.sigma_y,
            "cg": {"mean_iters_per_solve": r.cg_mean_per_solve()},
            "smc": r.smc_json(),
            "adapter": gpu.report(),
            "seconds": {"load_model": prior.load_seconds, "plan": plan_s, "sampling": r.seconds, "write": write_s},
            "steps_per_second": (r.steps * r.batches) as f64 / r.seconds,
            "quality": q,
            "std_image_scale": "std.png maps a per-pixel std of 0..0.5 (on the [-1, 1] scale) to black..white",
        });
        let report = with_settings(report, settings);
        write_atomic(
            &dir.join("report.json"),
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
        summary.push((dir, q));
    }
    pb.finish_and_clear();
    if !args.quiet {
        for (dir, q) in &summary {
            match q {
                Some(q) => eprintln!(
                    "{}: PSNR of the mean {:.2} dB, SSIM {:.4}",
                    dir.display(),
                    q["mean"]["psnr"].as_f64().unwrap_or(f64::NAN),
                    q["mean"]["ssim"].as_f64().unwrap_or(f64::NAN)
                ),
                None => eprintln!("{}: done", dir.display()),
            }
        }
        eprintln!("{} image(s) in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Measurement, samples, mean and std images, and the tensors.
pub fn write_outputs(
    dir: &Path,
    job: &Job,
    r: &Restoration,
    in_shape: [usize; 3],
    out_shape: [usize; 3],
) -> anyhow::Result<()> {
    let [c, h, w] = in_shape;
    let [oc, oh, ow] = out_shape;
    save_measurement(
        &dir.join("y.safetensors"),
        &job.y,
        job.sigma_y,
        &job.resolved,
        out_shape,
    )?;
    if oc == 1 || oc == 3 {
        write_image(dir.join("measurement.png"), oc, oh, ow, &job.y)?;
    }
    if let Some(clean) = &job.clean {
        write_image(dir.join("clean.png"), c, h, w, &clean.data)?;
    }
    for (k, s) in r.samples.iter().enumerate() {
        write_image(dir.join(format!("sample_{k:03}.png")), c, h, w, s)?;
    }
    write_image(dir.join("mean.png"), c, h, w, &r.mean)?;
    let std_img: Vec<f32> = r.std.iter().map(|&s| (s / 0.5).min(1.0) * 2.0 - 1.0).collect();
    write_image(dir.join("std.png"), c, h, w, &std_img)?;
    let k = r.samples.len();
    let all: Vec<f32> = r.samples.iter().flatten().copied().collect();
    write_tensors(
        dir.join("samples.safetensors"),
        &[
            ("samples", &HostTensor::new(vec![k, c, h, w], all)),
            ("mean", &HostTensor::new(vec![1, c, h, w], r.mean.clone())),
            ("std", &HostTensor::new(vec![1, c, h, w], r.std.clone())),
        ],
    )?;
    Ok(())
}
