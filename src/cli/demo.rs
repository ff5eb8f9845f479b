//! `tweedie demo`: the shipped prior on shipped held-out Fashion-MNIST test
//! images, under box inpainting and x2 super-resolution with DMPS, beside the
//! plain baseline (pseudo-inverse A^+ y); prints PSNR/SSIM, writes a
//! side-by-side picture per task and report.json.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::common::PriorArgs;
use serde_json::json;

use super::common::{prepare_out, ImageRef};
use super::eval::{evaluate, mean_of, EvalRun, Evaluated};
use super::sampling::{MethodArgs, SamplingArgs};
use crate::io::{write_atomic, write_image};
use crate::operators::task::{Task, TaskSpec};
use crate::restore::NoiseModel;
use crate::samplers::{dmps, Method};

/// The demo's method (the figures in docs/accuracy.md are DMPS's).
const DEMO_METHOD: &str = "dmps";

/// DMPS lambda for the demo's few respaced steps.
const DEMO_LAMBDA: f32 = 1.0;

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Reverse steps (respaced from 1000); chosen so the demo takes a few minutes on a software GPU.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// How many of the shipped test images.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub prior: PriorArgs,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: DemoArgs, verbose: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let mut images = ImageRef::embedded_test_images();
    images.truncate(args.count);
    prepare_out(&args.out)?;
    let gpu = super::open_gpu(verbose)?;
    let prior = args.prior.load(&gpu)?;
    let method = Method::from_name(DEMO_METHOD).expect("the demo's method is registered");
    let sampling = SamplingArgs {
        steps: args.steps,
        seed: args.seed,
        sampler: None,
        eta: None,
        // The paper's 1.75 is made for 1000 steps; on this few it overshoots and
        // leaves speckle noise (docs/accuracy.md, "Step sizes at 20 steps").
        method: MethodArgs::given(&[(dmps::LAMBDA.name, DEMO_LAMBDA.to_string())]),
    };
    sampling.validate(method)?;
    let tasks = [
        (
            "inpaint-box",
            TaskSpec {
                box_side: Some(12),
                ..TaskSpec::new(Task::InpaintBox)
            },
            "12x12 box inpainting",
        ),
        (
            "sr",
            TaskSpec {
                factor: Some(2),
                ..TaskSpec::new(Task::Sr)
            },
            "x2 super-resolution (bicubic)",
        ),
    ];
    println!(
        "tweedie demo: {} held-out Fashion-MNIST test images, DMPS with {} steps (lambda {DEMO_LAMBDA}), sigma_y 0.05, on {}",
        images.len(),
        args.steps,
        gpu.describe()
    );
    println!(
        "{:<32} {:>12} {:>8} {:>14} {:>8} {:>9}",
        "task", "DMPS PSNR", "SSIM", "baseline PSNR", "SSIM", "s/image"
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, spec, label) in &tasks {
        let run = EvalRun {
            spec,
            method,
            sampling: &sampling,
            noise: NoiseModel::Gaussian { sigma: 0.05 },
            batch: images.len().min(16),
            samples: 1,
            best_of: false,
            quiet: args.quiet,
            journal: None,
        };
        let Evaluated {
            rows,
            pictures,
            seconds,
            ..
        } = evaluate(&gpu, &prior, &images, &run)?;
        let m = mean_of(&rows);
        println!(
            "{:<32} {:>9.2} dB {:>8.4} {:>11.2} dB {:>8.4} {:>9.2}",
            label,
            m.psnr,
            m.ssim,
            m.baseline_psnr,
            m.baseline_ssim,
            seconds / rows.len() as f64
        );
        let picture = args.out.join(format!("{name}.png"));
        side_by_side(&picture, &images, &pictures, prior.channels, prior.size, spec)?;
        results.push(json!({"task": name, "label": label, "images": rows, "mean": m, "seconds_sampling": seconds, "picture": picture.display().to_string()}));
    }
    let report = json!({
        "model": prior.name,
        "method": DEMO_METHOD,
        "lambda": DEMO_LAMBDA,
        "steps": args.steps,
        "seed": args.seed,
        "sigma_y": 0.05,
        "baseline": "pseudo-inverse A^+ y, clipped to [-1, 1]",
        "adapter": gpu.report(),
        "seconds_total": started.elapsed().as_secs_f64(),
        "results": results,
    });
    write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!(
        "wrote {} (columns: clean, measurement, baseline, DMPS)",
        args.out.display()
    );
    Ok(())
}

/// One row per image: clean | measurement (nearest-upsampled to the image
/// size) | baseline | DMPS, 2-pixel gaps, everything scaled x3 for viewing.
fn side_by_side(
    path: &std::path::Path,
    images: &[ImageRef],
    pictures: &[(Vec<f32>, Vec<f32>, Vec<f32>)],
    c: usize,
    size: usize,
    spec: &TaskSpec,
) -> anyhow::Result<()> {
    let (zoom, gap, cols) = (3usize, 2usize, 4usize);
    let tile = size * zoom;
    let (w, h) = (
        cols * tile + (cols + 1) * gap,
        images.len() * tile + (images.len() + 1) * gap,
    );
    let mut canvas = vec![1.0f32; c * h * w];
    let factor = if spec.task == Task::Sr {
        spec.factor.unwrap_or(4)
    } else {
        1
    };
    let ms = size.div_ceil(factor);
    for (r, (p, (x, base, y))) in images.iter().zip(pictures).enumerate() {
        let clean = p.read().with_context(|| p.display())?;
        let clean = if clean.shape[1] == c {
            clean.data
        } else {
            vec![0.0; c * size * size]
        };
        let meas: Vec<f32> = (0..c * size * size)
            .map(|i| {
                let (ch, yy, xx) = (i / (size * size), (i / size) % size, i % size);
                y.get(ch * ms * ms + (yy / factor) * ms + xx / factor)
                    .copied()
                    .unwrap_or(-1.0)
            })
            .collect();
        for (col, img) in [&clean, &meas, base, x].into_iter().enumerate() {
            let (oy, ox) = (gap + r * (tile + gap), gap + col * (tile + gap));
            for ch in 0..c {
                for yy in 0..tile {
                    for xx in 0..tile {
                        canvas[ch * h * w + (oy + yy) * w + ox + xx] =
                            img[ch * size * size + (yy / zoom) * size + xx / zoom];
                    }
                }
            }
        }
    }
    write_image(path, c, h, w, &canvas)?;
    Ok(())
}
