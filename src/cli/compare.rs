//! `tweedie compare`: several methods on the same images, measurements and
//! seeds, beside the plain baseline, in one run: results.json, a markdown
//! table, a picture grid and a PSNR-against-time plot, the comparison people
//! choose a sampler by. Each method runs through `eval`'s [`evaluate`], so its
//! numbers are the ones `tweedie eval --method` gives.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::common::{list_images, prepare_out, ImageRef, Prior, PriorArgs};
use super::demo::{clean_tile, measurement_tile, tile_grid};
use super::devices::{open_workers, DevicesArg, Worker};
use super::eval::{check_plan, evaluate, mean_of, EvalRun, Evaluated, Journal, Row};
use super::sampling::{method_parser, NoiseArgs, SamplingArgs};
use crate::io::{write_atomic, write_image};
use crate::operators::task::TaskSpec;
use crate::process::Process;
use crate::samplers::options::Kind;
use crate::samplers::{dmps, Method, MethodOptions, SamplerOptions};
use crate::Gpu;

#[derive(Args)]
pub struct CompareArgs {
    /// Directory of clean PNG/JPEG images (or one image).
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub prior: PriorArgs,
    #[command(flatten)]
    pub spec: TaskSpec,
    /// The methods to compare, comma-separated (e.g. dps,dmps,ddnm). A method
    /// setting (--zeta, --lambda, ...) goes to the methods that read it.
    #[arg(long, value_delimiter = ',', value_parser = method_parser())]
    pub methods: Vec<Method>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Images restored at once (each with its own measurement; K samples each).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Posterior samples per image, K; psnr/ssim score their mean. SMC's K
    /// samples are its particles: one population per image, or K / P with
    /// `--particles P`.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Use only the first N images (after sorting by name).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output directory. Each method's finished batches are recorded there
    /// (<method>.progress.jsonl and its pictures); rerunning the same command
    /// after a kill reads them back instead of recomputing.
    #[arg(long)]
    pub out: PathBuf,
    /// Start afresh in an --out that holds another run's progress.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub devices: DevicesArg,
    #[arg(long)]
    pub quiet: bool,
}

/// One method's outcome.
struct Outcome {
    method: Method,
    rows: Vec<Row>,
    pictures: Vec<Vec<f32>>,
    seconds_per_image: f64,
    settings: serde_json::Value,
    /// The method's settings, for its per-step cost.
    options: MethodOptions,
    /// Batches read back from an earlier, killed run of the same command.
    resumed: usize,
}

/// Each method's sampling flags: the settings given that it reads, checked
/// as `eval` checks them; refuses a setting no listed method reads.
fn per_method(args: &CompareArgs) -> anyhow::Result<Vec<(Method, SamplingArgs)>> {
    let methods = &args.methods;
    if methods.is_empty() {
        bail!("--methods: give at least one method, e.g. --methods dps,dmps");
    }
    if let Some((_, m)) = methods.iter().enumerate().find(|(i, m)| methods[..*i].contains(m)) {
        bail!("--methods lists {} twice", m.name());
    }
    if let Some(name) = args
        .sampling
        .method
        .names()
        .find(|n| !methods.iter().any(|m| m.takes(n)))
    {
        let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        bail!("--{name} applies to none of --methods {}", names.join(","));
    }
    methods
        .iter()
        .map(|&m| {
            let sampling = SamplingArgs {
                method: args.sampling.method.only_for(m),
                ..args.sampling.clone()
            };
            sampling.validate(m)?;
            Ok((m, sampling))
        })
        .collect()
}

/// Plans every method once on one image's measurement, so a method that
/// refuses the task (DMPS on phase retrieval) stops the run before any
/// sampling, with its own reason.
/// Returns whether the task's operator has an SVD form.
fn check_plans(gpu: &Gpu, prior: &Prior, runs: &[EvalRun<'_>]) -> anyhow::Result<bool> {
    let mut svd = false;
    for run in runs {
        svd = check_plan(gpu, prior, run).map_err(|e| anyhow::anyhow!("--methods {}: {e}", run.method.name()))?;
    }
    Ok(svd)
}

/// The settings `opts` gives `method` on a model of `process`: each it
/// reads, as given or its default (null: chosen by the method from the run),
/// and the base step.
fn settings(method: Method, opts: &SamplerOptions, process: &Process) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for spec in method.options() {
        let m = &opts.method;
        let v = match spec.kind {
            // DMPS's lambda defaults by the process.
            Kind::Number if spec.name == dmps::LAMBDA.name => json!(dmps::lambda(m, process)),
            Kind::Number => json!(m.number(spec.name)),
            Kind::Count => json!(m.count(spec.name)),
            Kind::Choice(_) => json!(m.choice(spec.name)),
        };
        out.insert(spec.name.to_string(), v);
    }
    out.insert("sampler".into(), json!(opts.sampler.map(|s| s.name())));
    out.insert("eta".into(), json!(opts.eta));
    serde_json::Value::Object(out)
}

/// Mean and its standard error over the images (None for the error with one image).
fn mean_sem(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    if v.len() < 2 {
        return (mean, None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some((var / n).sqrt()))
}

pub fn run(args: CompareArgs, verbose: bool) -> anyhow::Result<()> {
    let sampling = per_method(&args)?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let noise = args.noise.model()?;
    let mut images = list_images(&args.input)?;
    if let Some(l) = args.limit {
        images.truncate(l);
    }
    if images.is_empty() {
        bail!("{}: no images", args.input.display());
    }
    let devices = args.devices.resolve()?;
    let workers = open_workers(devices.as_deref(), &args.prior, verbose)?;
    let Worker { gpu, prior } = &workers[0];
    let mut runs: Vec<EvalRun> = sampling
        .iter()
        .map(|(method, sampling)| EvalRun {
            spec: &args.spec,
            method: *method,
            sampling,
            noise,
            batch: args.batch,
            samples: args.samples,
            best_of: false,
            quiet: args.quiet,
            journal: None,
            shard: None,
            gain: None,
        })
        .collect();
    // One operator for every method: its gain measured once.
    if let Some((first, rest)) = runs.split_first_mut() {
        first.measure_gain(gpu, prior)?;
        rest.iter_mut().for_each(|r| r.gain = first.gain);
    }
    let svd = check_plans(gpu, prior, &runs)?;
    prepare_out(&args.out)?;

    let mut outcomes = Vec::new();
    let mut first: Option<Evaluated> = None;
    let names: Vec<String> = images.iter().map(|p| p.file_name()).collect();
    for (i, run) in runs.iter().enumerate() {
        let options = run.options(prior)?;
        let settings = settings(run.method, &options, &prior.score.unet().process);
        // What makes a batch's results: resuming needs all of it to match.
        let run_id = json!({
            "model": prior.name, "precision": prior.precision.name(), "task": args.spec.task,
            "task_options": args.spec.options_json(), "method": run.method.name(), "settings": settings,
            "steps": run.sampling.steps, "seed": run.sampling.seed, "noise": noise.describe(),
            "batch": args.batch, "samples": args.samples, "images": names,
        });
        let path = args.out.join(format!("{}.progress.jsonl", run.method.name()));
        let journal = Journal::open(path, &run_id, args.overwrite)?.with_pictures();
        let resumed = journal.resumed();
        if !args.quiet {
            let note = if resumed > 0 {
                format!(" ({resumed} batches read back)")
            } else {
                String::new()
            };
            eprintln!("[{}/{}] {}{note}", i + 1, runs.len(), run.method.name());
        }
        let journaled = EvalRun {
            journal: Some(&journal),
            ..run.clone()
        };
        let ev = evaluate(&workers, &images, &journaled)?;
        outcomes.push(Outcome {
            method: run.method,
            rows: ev.rows.clone(),
            pictures: ev.pictures.iter().map(|(x, _, _)| x.clone()).collect(),
            seconds_per_image: ev.seconds / ev.rows.len().max(1) as f64,
            settings,
            options: options.method,
            resumed,
        });
        first.get_or_insert(ev);
    }
    let first = first.expect("at least one method ran");
    let base = mean_of(&first.rows);

    let steps = args.sampling.steps;
    let mut methods = serde_json::Map::new();
    for o in &outcomes {
        let (psnr, sem) = mean_sem(&o.rows.iter().map(|r| r.psnr).collect::<Vec<_>>());
        methods.insert(
            o.method.name().to_string(),
            json!({
                "psnr": psnr,
                "psnr_sem": sem,
                "ssim": mean_of(&o.rows).ssim,
                "nfe": steps * o.method.model_passes(&o.options, svd),
                "vjps": if o.method.uses_vjp(&o.options, svd) { steps } else { 0 },
                "seconds_per_image": o.seconds_per_image,
                "steps": steps,
                "samples_per_image": args.samples,
                "settings": o.settings,
                "resumed_batches": o.resumed,
                "images": o.rows,
            }),
        );
    }
    let doc = json!({
        "baseline": {"psnr": base.baseline_psnr, "ssim": base.baseline_ssim, "label": first.baseline},
        "methods": methods,
        "task": args.spec.task,
        "task_options": args.spec.options_json(),
        "images": images.len(),
        "model": prior.name,
        "seed": args.sampling.seed,
        "sigma_y": noise.sigma_y(),
        "noise": noise.describe(),
        "adapter": gpu.report(),
    });
    write_atomic(
        &args.out.join("results.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    let table = markdown(&doc, &outcomes);
    write_atomic(&args.out.join("results.md"), table.as_bytes())?;
    grid(&args.out.join("grid.png"), &images, &first, &outcomes, prior)?;
    let points: Vec<(String, f64, f64)> = outcomes
        .iter()
        .map(|o| (o.method.name().to_string(), o.seconds_per_image, mean_of(&o.rows).psnr))
        .collect();
    plot::tradeoff(&args.out.join("tradeoff.png"), &points, base.baseline_psnr)?;
    print!("{table}");
    println!("wrote {}", args.out.display());
    Ok(())
}

/// results.md: one row per method under the baseline's.
fn markdown(doc: &serde_json::Value, outcomes: &[Outcome]) -> String {
    let b = &doc["baseline"];
    let mut s = format!(
        "{} on {} images, {}\n\n| method | PSNR (dB) | SSIM | NFE | VJPs | s/image |\n|---|---|---|---|---|---|\n",
        doc["task"].as_str().unwrap_or("?"),
        doc["images"],
        doc["noise"].as_str().unwrap_or("?"),
    );
    s += &format!(
        "| baseline | {:.2} | {:.4} | 0 | 0 | - |\n",
        b["psnr"].as_f64().unwrap_or(f64::NAN),
        b["ssim"].as_f64().unwrap_or(f64::NAN)
    );
    for o in outcomes {
        let m = &doc["methods"][o.method.name()];
        let sem = m["psnr_sem"].as_f64().map(|e| format!(" ± {e:.2}")).unwrap_or_default();
        s += &format!(
            "| {} | {:.2}{sem} | {:.4} | {} | {} | {:.3} |\n",
            o.method.name(),
            m["psnr"].as_f64().unwrap_or(f64::NAN),
            m["ssim"].as_f64().unwrap_or(f64::NAN),
            m["nfe"],
            m["vjps"],
            o.seconds_per_image
        );
    }
    s
}

/// grid.png: per image, clean | measurement (blank when not image-like) |
/// baseline | each method.
fn grid(
    path: &Path,
    images: &[ImageRef],
    first: &Evaluated,
    outcomes: &[Outcome],
    prior: &Prior,
) -> anyhow::Result<()> {
    let (c, size) = (prior.channels, prior.size);
    let mut rows = Vec::new();
    for (k, p) in images.iter().enumerate() {
        let (_, base, y) = &first.pictures[k];
        let mut row = vec![
            Some(clean_tile(p, c, size)?),
            measurement_tile(y, c, size),
            Some(base.clone()),
        ];
        row.extend(outcomes.iter().map(|o| Some(o.pictures[k].clone())));
        rows.push(row);
    }
    tile_grid(path, c, size, &rows)?;
    Ok(())
}

/// The PSNR-against-time picture, drawn by hand: axes, one labelled point
/// per method, the baseline as a dashed line; text in a built-in 3x5 font.
mod plot {
    use super::*;

    const W: usize = 640;
    const H: usize = 400;
    const LEFT: usize = 70;
    const RIGHT: usize = 30;
    const TOP: usize = 40;
    const BOTTOM: usize = 60;
    /// Pixels per font cell.
    const SCALE: usize = 2;
    const PALETTE: [[f32; 3]; 6] = [
        [0.12, 0.47, 0.71],
        [1.0, 0.5, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.4, 0.74],
        [0.55, 0.34, 0.29],
    ];

    /// 3x5 glyphs, one row of three bits per entry (top row first); the
    /// letters are capitals whatever case is asked.
    const FONT: [(char, [u8; 5]); 45] = [
        ('a', [0b010, 0b101, 0b111, 0b101, 0b101]),
        ('b', [0b110, 0b101, 0b110, 0b101, 0b110]),
        ('c', [0b011, 0b100, 0b100, 0b100, 0b011]),
        ('d', [0b110, 0b101, 0b101, 0b101, 0b110]),
        ('e', [0b111, 0b100, 0b110, 0b100, 0b111]),
        ('f', [0b111, 0b100, 0b110, 0b100, 0b100]),
        ('g', [0b011, 0b100, 0b101, 0b101, 0b011]),
        ('h', [0b101, 0b101, 0b111, 0b101, 0b101]),
        ('i', [0b111, 0b010, 0b010, 0b010, 0b111]),
        ('j', [0b001, 0b001, 0b001, 0b101, 0b010]),
        ('k', [0b101, 0b101, 0b110, 0b101, 0b101]),
        ('l', [0b100, 0b100, 0b100, 0b100, 0b111]),
        ('m', [0b101, 0b111, 0b111, 0b101, 0b101]),
        ('n', [0b110, 0b101, 0b101, 0b101, 0b101]),
        ('o', [0b010, 0b101, 0b101, 0b101, 0b010]),
        ('p', [0b110, 0b101, 0b110, 0b100, 0b100]),
        ('q', [0b010, 0b101, 0b101, 0b110, 0b011]),
        ('r', [0b110, 0b101, 0b110, 0b101, 0b101]),
        ('s', [0b011, 0b100, 0b010, 0b001, 0b110]),
        ('t', [0b111, 0b010, 0b010, 0b010, 0b010]),
        ('u', [0b101, 0b101, 0b101, 0b101, 0b111]),
        ('v', [0b101, 0b101, 0b101, 0b101, 0b010]),
        ('w', [0b101, 0b101, 0b111, 0b111, 0b101]),
        ('x', [0b101, 0b101, 0b010, 0b101, 0b101]),
        ('y', [0b101, 0b101, 0b010, 0b010, 0b010]),
        ('z', [0b111, 0b001, 0b010, 0b100, 0b111]),
        ('0', [0b111, 0b101, 0b101, 0b101, 0b111]),
        ('1', [0b010, 0b110, 0b010, 0b010, 0b111]),
        ('2', [0b110, 0b001, 0b010, 0b100, 0b111]),
        ('3', [0b110, 0b001, 0b010, 0b001, 0b110]),
        ('4', [0b101, 0b101, 0b111, 0b001, 0b001]),
        ('5', [0b111, 0b100, 0b110, 0b001, 0b110]),
        ('6', [0b011, 0b100, 0b111, 0b101, 0b111]),
        ('7', [0b111, 0b001, 0b010, 0b010, 0b010]),
        ('8', [0b111, 0b101, 0b111, 0b101, 0b111]),
        ('9', [0b111, 0b101, 0b111, 0b001, 0b110]),
        ('-', [0b000, 0b000, 0b111, 0b000, 0b000]),
        ('+', [0b000, 0b010, 0b111, 0b010, 0b000]),
        ('.', [0b000, 0b000, 0b000, 0b000, 0b010]),
        ('/', [0b001, 0b001, 0b010, 0b100, 0b100]),
        ('_', [0b000, 0b000, 0b000, 0b000, 0b111]),
        (':', [0b000, 0b010, 0b000, 0b010, 0b000]),
        ('(', [0b010, 0b100, 0b100, 0b100, 0b010]),
        (')', [0b010, 0b001, 0b001, 0b001, 0b010]),
        (' ', [0; 5]),
    ];

    /// An RGB picture [3, H, W] on [-1, 1], white to start.
    struct Canvas(Vec<f32>);

    impl Canvas {
        fn dot(&mut self, x: usize, y: usize, rgb: [f32; 3]) {
            if x < W && y < H {
                for (ch, v) in rgb.iter().enumerate() {
                    self.0[ch * H * W + y * W + x] = v * 2.0 - 1.0;
                }
            }
        }

        fn rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, rgb: [f32; 3]) {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    self.dot(x, y, rgb);
                }
            }
        }

        /// `text` with its top-left corner at (x, y); a character not in the
        /// font is left blank.
        fn text(&mut self, x: usize, y: usize, text: &str, rgb: [f32; 3]) {
            for (i, ch) in text.chars().enumerate() {
                let Some((_, rows)) = FONT.iter().find(|(c, _)| *c == ch.to_ascii_lowercase()) else {
                    continue;
                };
                let ox = x + i * 4 * SCALE;
                for (r, bits) in rows.iter().enumerate() {
                    for b in 0..3 {
                        if bits >> (2 - b) & 1 == 1 {
                            self.rect(ox + b * SCALE, y + r * SCALE, SCALE, SCALE, rgb);
                        }
                    }
                }
            }
        }
    }

    /// Width of `text` in pixels.
    fn text_width(text: &str) -> usize {
        (text.chars().count() * 4).saturating_sub(1) * SCALE
    }

    /// Writes the plot of `points` (label, seconds per image, PSNR) with
    /// seconds on a log axis, and `baseline` PSNR as a dashed line.
    pub fn tradeoff(path: &Path, points: &[(String, f64, f64)], baseline: f64) -> anyhow::Result<()> {
        let black = [0.0; 3];
        let gray = [0.5; 3];
        let mut cv = Canvas(vec![1.0; 3 * H * W]);
        let secs: Vec<f64> = points.iter().map(|p| p.1.max(1e-6).log10()).collect();
        let (mut x0, mut x1) = secs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
        let (mut y0, mut y1) = points
            .iter()
            .map(|p| p.2)
            .chain([baseline])
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if !(x0.is_finite() && y0.is_finite()) {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        // A margin around the points (a decade at least on the time axis).
        let xpad = ((x1 - x0) * 0.15).max(0.25);
        let ypad = ((y1 - y0) * 0.15).max(0.5);
        let (x0, x1, y0, y1) = (x0 - xpad, x1 + xpad, y0 - ypad, y1 + ypad);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |v: f64| LEFT + (((v - x0) / (x1 - x0)) * pw as f64).round().clamp(0.0, pw as f64) as usize;
        let py = |v: f64| TOP + (((y1 - v) / (y1 - y0)) * ph as f64).round().clamp(0.0, ph as f64) as usize;

        // Axes, with the ends of each labelled.
        cv.rect(LEFT, TOP, 1, ph + 1, black);
        cv.rect(LEFT, TOP + ph, pw + 1, 1, black);
        for v in [y0, (y0 + y1) / 2.0, y1] {
            let (y, t) = (py(v), format!("{v:.1}"));
            cv.rect(LEFT - 4, y, 4, 1, black);
            cv.text(LEFT - 8 - text_width(&t), y.saturating_sub(5 * SCALE / 2), &t, black);
        }
        for v in [x0, (x0 + x1) / 2.0, x1] {
            let (x, t) = (px(v), seconds_label(10f64.powf(v)));
            cv.rect(x, TOP + ph, 1, 4, black);
            cv.text(x.saturating_sub(text_width(&t) / 2), TOP + ph + 8, &t, black);
        }
        let xlabel = "seconds per image (log)";
        cv.text(LEFT + (pw - text_width(xlabel)) / 2, H - 20, xlabel, black);
        cv.text(8, 12, "psnr db against seconds per image", black);

        if baseline.is_finite() {
            let y = py(baseline);
            for x in (LEFT + 1..LEFT + pw).step_by(8) {
                cv.rect(x, y, 4, 1, gray);
            }
            let t = format!("baseline {baseline:.2}");
            cv.text(LEFT + pw - text_width(&t) - 4, y.saturating_sub(6 * SCALE), &t, gray);
        }
        for (i, ((label, _, psnr), s)) in points.iter().zip(&secs).enumerate() {
            if !psnr.is_finite() {
                continue;
            }
            let rgb = PALETTE[i % PALETTE.len()];
            let (x, y) = (px(*s), py(*psnr));
            cv.rect(x.saturating_sub(3), y.saturating_sub(3), 7, 7, rgb);
            let t = format!("{label} {psnr:.2}");
            // Right of the point, or left of it near the right edge.
            let tx = if x + 8 + text_width(&t) < W {
                x + 8
            } else {
                x.saturating_sub(8 + text_width(&t))
            };
            cv.text(tx, y.saturating_sub(5 * SCALE / 2), &t, rgb);
        }
        write_image(path, 3, H, W, &cv.0)?;
        Ok(())
    }

    /// Seconds in a few characters (0.012, 1.5, 240).
    fn seconds_label(s: f64) -> String {
        if s >= 100.0 {
            format!("{s:.0}")
        } else if s >= 1.0 {
            format!("{s:.1}")
        } else {
            format!("{s:.3}")
        }
    }
}
