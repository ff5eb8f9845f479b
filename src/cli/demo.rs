//! `tweedie demo`: the shipped prior on shipped held-out Fashion-MNIST test
//! images, under box inpainting and x2 super-resolution with DDNM+, beside the
//! plain baseline (pseudo-inverse A^+ y); prints PSNR/SSIM, writes a
//! side-by-side picture per task and report.json.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::common::PriorArgs;
use serde_json::json;

use super::common::{prepare_out, ImageRef};
use super::devices::{open_workers, Worker};
use super::eval::{evaluate, mean_of, EvalRun, Evaluated};
use super::sampling::{MethodArgs, SamplingArgs};
use crate::io::{write_atomic, write_image};
use crate::operators::task::{Task, TaskSpec};
use crate::restore::NoiseModel;
use crate::samplers::Method;

/// The demo's method, at its defaults: DDNM+ (its range-null-space step
/// holds at any step count; at 30 steps on the demo's images it scores
/// 3.1 dB (box) and 2.6 dB (x2 SR) above DMPS with lambda 1, the demo's
/// method before: docs/accuracy.md, "tweedie demo").
const DEMO_METHOD: &str = "ddnm";
const DEMO_LABEL: &str = "DDNM+";

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
    let workers = open_workers(None, &args.prior, verbose)?;
    let Worker { gpu, prior } = &workers[0];
    let method = Method::from_name(DEMO_METHOD).expect("the demo's method is registered");
    let sampling = SamplingArgs {
        steps: args.steps,
        seed: args.seed,
        sampler: None,
        eta: None,
        method: MethodArgs::given(&[]),
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
        "tweedie demo: {} held-out Fashion-MNIST test images, {DEMO_LABEL} with {} steps, sigma_y 0.05, on {}",
        images.len(),
        args.steps,
        gpu.describe()
    );
    println!(
        "{:<32} {:>12} {:>8} {:>14} {:>8} {:>9}",
        "task",
        format!("{DEMO_LABEL} PSNR"),
        "SSIM",
        "baseline PSNR",
        "SSIM",
        "s/image"
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, spec, label) in &tasks {
        let mut run = EvalRun {
            spec,
            method,
            sampling: &sampling,
            noise: NoiseModel::Gaussian { sigma: 0.05 },
            batch: images.len().min(16),
            samples: 1,
            best_of: false,
            quiet: args.quiet,
            journal: None,
            shard: None,
            gain: None,
        };
        run.measure_gain(&workers[0].gpu, &workers[0].prior)?;
        let Evaluated {
            rows,
            pictures,
            seconds,
            ..
        } = evaluate(&workers, &images, &run)?;
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
        side_by_side(&picture, &images, &pictures, prior.channels, prior.size)?;
        results.push(json!({"task": name, "label": label, "images": rows, "mean": m, "seconds_sampling": seconds, "picture": picture.display().to_string()}));
    }
    let report = json!({
        "model": prior.name,
        "method": DEMO_METHOD,
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
        "wrote {} (columns: clean, measurement, baseline, {DEMO_LABEL})",
        args.out.display()
    );
    Ok(())
}

/// One row per image: clean | measurement | baseline | the demo's method.
fn side_by_side(
    path: &std::path::Path,
    images: &[ImageRef],
    pictures: &[(Vec<f32>, Vec<f32>, Vec<f32>)],
    c: usize,
    size: usize,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (p, (x, base, y)) in images.iter().zip(pictures) {
        rows.push(vec![
            Some(clean_tile(p, c, size)?),
            Some(measurement_tile(y, c, size).unwrap_or_else(|| vec![-1.0; c * size * size])),
            Some(base.clone()),
            Some(x.clone()),
        ]);
    }
    tile_grid(path, c, size, &rows)?;
    Ok(())
}

/// The clean image of `p` as a tile [c, size, size] (black where its
/// channels differ from the model's).
pub(super) fn clean_tile(p: &ImageRef, c: usize, size: usize) -> anyhow::Result<Vec<f32>> {
    let clean = p.read().with_context(|| p.display())?;
    Ok(if clean.shape[1] == c {
        clean.data
    } else {
        vec![0.0; c * size * size]
    })
}

/// A measurement shown as an image [c, size, size]: itself when it has the
/// image's shape, nearest-upsampled when it is a smaller square image (super-
/// resolution); None when it is not image-like (phase retrieval's magnitudes).
pub(super) fn measurement_tile(y: &[f32], c: usize, size: usize) -> Option<Vec<f32>> {
    let ms = (1..=size).find(|ms| c * ms * ms == y.len())?;
    Some(
        (0..c * size * size)
            .map(|i| {
                let (ch, yy, xx) = (i / (size * size), (i / size) % size, i % size);
                y[ch * ms * ms + (yy * ms / size) * ms + xx * ms / size]
            })
            .collect(),
    )
}

/// Zoom and gap of [`tile_grid`]'s pictures.
pub(super) const TILE_ZOOM: usize = 3;
pub(super) const TILE_GAP: usize = 2;

/// Writes `rows` of tiles [c, size, size] (None: left blank) as one picture,
/// each tile scaled x[`TILE_ZOOM`] for viewing, [`TILE_GAP`]-pixel white gaps.
/// Returns its (height, width).
pub(super) fn tile_grid(
    path: &std::path::Path,
    c: usize,
    size: usize,
    rows: &[Vec<Option<Vec<f32>>>],
) -> anyhow::Result<(usize, usize)> {
    let (zoom, gap) = (TILE_ZOOM, TILE_GAP);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let tile = size * zoom;
    let (w, h) = (
        cols * tile + (cols + 1) * gap,
        rows.len() * tile + (rows.len() + 1) * gap,
    );
    let mut canvas = vec![1.0f32; c * h * w];
    for (r, row) in rows.iter().enumerate() {
        for (col, img) in row.iter().enumerate() {
            let Some(img) = img else { continue };
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
    Ok((h, w))
}
