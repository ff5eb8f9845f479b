//! `tweedie eval`: a folder of clean images -> restore each under one task and
//! method -> PSNR/SSIM per image and the mean, beside the plain baseline
//! (the pseudo-inverse A^+ y), as the papers' tables. `--shard i/n` takes every
//! n-th batch from the i-th, so a scheduler can spread an evaluation over
//! processes or machines; `tweedie eval-merge DIR` combines the shard files
//! into the table one process gives.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use serde_json::json;

use super::common::{list_images, load_clean, prepare_out, progress, ImageRef, Prior};
use super::devices::{open_workers, spread, DevicesArg, Worker};
use super::sampling::{default_zeta, linear_gain, settings_json, with_settings, NoiseArgs, ProblemArgs, SamplingArgs};
use crate::io::write_atomic;
use crate::metrics::{psnr, ssim};
use crate::operators::task::{resolve, TaskSpec};
use crate::operators::Operator;
use crate::restore::{argmin, baseline, measure, misfits, NoiseModel, Restore, StepCallback};
use crate::samplers::{smc, Measurement, Method, Sampler, SamplerOptions};
use crate::schedule::VarianceType;
use crate::tensor::HostTensor;
use crate::Gpu;

#[derive(Args)]
pub struct EvalArgs {
    /// Directory of clean PNG/JPEG images (or one image).
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub problem: ProblemArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Images restored at once (each with its own measurement; K samples each).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Posterior samples per image, K. `psnr`/`ssim` score their mean (the MMSE
    /// estimate); `sample_psnr`/`sample_ssim` average the single samples' scores
    /// (the number DPS-style papers report). K = 1: both are the one sample.
    /// SMC's K samples are its particles: one population per image, or K / P
    /// independent populations with `--particles P`.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Draw K samples per image and score the one whose measurement fits y
    /// best (smallest ||y - A(x)||), as DPS reports phase retrieval; psnr/ssim
    /// are then that sample's.
    #[arg(long, value_name = "K", conflicts_with = "samples")]
    pub best_of: Option<usize>,
    /// Use only the first N images (after sorting by name).
    #[arg(long)]
    pub limit: Option<usize>,
    /// This process's share: batches i, i+n, i+2n, ... (0-based i) of the
    /// --batch images each, so that the merged shards equal one process's run.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Output directory. Running the same command into it again resumes: the
    /// batches a killed run finished (recorded in <results|shard-..>.progress.jsonl)
    /// are read back, not recomputed.
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

fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard {s}: expected I/N, e.g. 0/4"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .with_context(|| format!("--shard {s}: I is not a number"))?,
        n.trim()
            .parse()
            .with_context(|| format!("--shard {s}: N is not a number"))?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= I < N");
    }
    Ok((i, n))
}

/// One evaluation row. `psnr`/`ssim` score the mean of the image's K
/// posterior samples; `sample_psnr`/`sample_ssim` the average over the single samples.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub image: String,
    pub psnr: f64,
    pub ssim: f64,
    pub sample_psnr: f64,
    pub sample_ssim: f64,
    pub baseline_psnr: f64,
    pub baseline_ssim: f64,
}

/// What [`evaluate`] runs: one task and method with its settings, the
/// measurement noise, images per sampler batch and samples per image.
#[derive(Clone)]
pub struct EvalRun<'a> {
    pub spec: &'a TaskSpec,
    pub method: Method,
    pub sampling: &'a SamplingArgs,
    pub noise: NoiseModel,
    pub batch: usize,
    pub samples: usize,
    /// Score the best-fitting of the samples instead of their mean.
    pub best_of: bool,
    pub quiet: bool,
    /// Where finished batches are recorded and read back (resuming a run).
    pub journal: Option<&'a Journal>,
    /// Only batches i, i+n, ... of the images (`--shard i/n`).
    pub shard: Option<(usize, usize)>,
    /// ||A||_2 of the task's operator where it is linear: DPS's default step
    /// size's cap ([`default_zeta`]); [`EvalRun::measure_gain`] sets it.
    pub gain: Option<f32>,
}

/// The batches an eval run has finished, one JSON line each after a first
/// line naming the run (`<stem>.progress.jsonl` in --out). Rerunning the same
/// command reads them back instead of recomputing; a batch's results depend
/// only on the run and its index (its images, their noise from the seed and
/// the file name, its sampler seed from the seed and the index), so a resumed
/// run's rows equal an uninterrupted one's.
pub struct Journal {
    path: PathBuf,
    done: std::collections::HashMap<usize, Batch>,
    /// Workers append from their threads: one line at a time.
    append: std::sync::Mutex<()>,
    /// Also keep each batch's pictures (`compare`'s grid needs them on resume),
    /// in `<stem>.batch-NNNNN.safetensors` beside the journal.
    keep_pictures: bool,
}

/// One finished batch as the journal holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Batch {
    batch: usize,
    rows: Vec<Row>,
    seconds: f64,
    baseline: String,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the run `run`: refuses one
    /// that belongs to another run unless `overwrite`, which starts afresh.
    pub fn open(path: PathBuf, run: &serde_json::Value, overwrite: bool) -> anyhow::Result<Journal> {
        let head = serde_json::to_string(&json!({ "run": run }))?;
        let mut done = std::collections::HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) if !overwrite => {
                let mut lines = text.lines();
                if lines.next() != Some(head.as_str()) {
                    bail!(
                        "--out holds another run's results ({} is from a different command); give another --out, or --overwrite",
                        path.display()
                    );
                }
                // A line cut short by a kill is the batch that did not finish.
                for b in lines.filter_map(|l| serde_json::from_str::<Batch>(l).ok()) {
                    done.insert(b.batch, b);
                }
            }
            _ => write_atomic(&path, format!("{head}\n").as_bytes())?,
        }
        Ok(Journal {
            path,
            done,
            append: std::sync::Mutex::new(()),
            keep_pictures: false,
        })
    }

    /// Keeps each batch's pictures too, for a run whose output draws them.
    pub fn with_pictures(self) -> Journal {
        Journal {
            keep_pictures: true,
            ..self
        }
    }

    /// Where batch `batch`'s pictures are kept.
    fn pictures_path(&self, batch: usize) -> PathBuf {
        let stem = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("journal");
        let stem = stem.strip_suffix(".progress.jsonl").unwrap_or(stem);
        self.path.with_file_name(format!("{stem}.batch-{batch:05}.safetensors"))
    }

    /// The pictures of a batch of `images` images read back (estimate,
    /// baseline, measurement per image), or None when this journal does not
    /// keep them. A file that does not hold `images` rows of each is an
    /// error naming it, not a panic later.
    fn pictures(&self, batch: usize, images: usize) -> anyhow::Result<Option<Vec<Picture>>> {
        if !self.keep_pictures {
            return Ok(None);
        }
        let path = self.pictures_path(batch);
        let file = crate::io::TensorFile::open(&path)?;
        let rows = |key: &str| -> anyhow::Result<Vec<Vec<f32>>> {
            let t = file.get(key)?;
            let width = match t.shape[..] {
                [n, d] if n == images && d > 0 && n * d == t.data.len() => d,
                _ => bail!(
                    "{}: {key} has shape {:?}, expected [{images}, d > 0] (delete it and its batch's journal line to recompute the batch)",
                    path.display(),
                    t.shape
                ),
            };
            Ok(t.data.chunks(width).map(<[f32]>::to_vec).collect())
        };
        let (e, b, y) = (rows("estimate")?, rows("baseline")?, rows("y")?);
        Ok(Some(e.into_iter().zip(b).zip(y).map(|((e, b), y)| (e, b, y)).collect()))
    }

    /// Writes a batch's pictures (before its journal line, so a line always
    /// has its pictures).
    fn keep(&self, batch: usize, pictures: &[Picture]) -> anyhow::Result<()> {
        if !self.keep_pictures {
            return Ok(());
        }
        let stack = |pick: fn(&Picture) -> &Vec<f32>| {
            let d = pictures.first().map_or(0, |p| pick(p).len());
            HostTensor::new(
                vec![pictures.len(), d],
                pictures.iter().flat_map(|p| pick(p).iter().copied()).collect(),
            )
        };
        let (e, b, y) = (stack(|p| &p.0), stack(|p| &p.1), stack(|p| &p.2));
        crate::io::write_tensors(
            self.pictures_path(batch),
            &[("estimate", &e), ("baseline", &b), ("y", &y)],
        )?;
        Ok(())
    }

    /// Batches read back from an earlier run.
    pub fn resumed(&self) -> usize {
        self.done.len()
    }

    fn get(&self, batch: usize, names: &[String]) -> Option<&Batch> {
        self.done
            .get(&batch)
            .filter(|b| b.rows.iter().map(|r| &r.image).eq(names.iter()))
    }

    fn record(&self, batch: &Batch) -> anyhow::Result<()> {
        use std::io::Write;
        let line = format!("{}\n", serde_json::to_string(batch)?);
        let _one_writer = self
            .append
            .lock()
            .map_err(|_| anyhow::anyhow!("a worker failed while appending"))?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("appending to {}", self.path.display()))?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(())
    }
}

impl EvalRun<'_> {
    /// The indices of the batches this run restores out of `images` images:
    /// all, or the shard's. A batch is the same images, noise and sampler
    /// seed in every shard, so shards merge into one process's results.
    pub(super) fn batches(&self, images: usize) -> Vec<usize> {
        let (i, n) = self.shard.unwrap_or((0, 1));
        (i..images.div_ceil(self.batch.max(1))).step_by(n).collect()
    }

    /// Measures [`EvalRun::gain`] on `gpu` for images of `prior`'s shape.
    pub(super) fn measure_gain(&mut self, gpu: &Gpu, prior: &Prior) -> anyhow::Result<()> {
        let op = resolve(self.spec, [prior.channels, prior.size, prior.size], self.sampling.seed)?.build(gpu)?;
        self.gain = linear_gain(gpu, op.as_ref())?;
        Ok(())
    }

    /// The sampler options on `prior`: DPS's step size by the task, and for a
    /// method with particle populations its populations inside each image's
    /// K samples: one of K particles, or K / P of `--particles P` (their
    /// mean then averages independent populations).
    pub(super) fn options(&self, prior: &Prior) -> anyhow::Result<SamplerOptions> {
        let (method, samples) = (self.method, self.samples);
        let variance = prior.score.unet().process.variance.unwrap_or(VarianceType::FixedLarge);
        let mut opts = self
            .sampling
            .options(default_zeta(self.spec.task, self.gain), true, variance)?;
        if method.takes(smc::PARTICLES.name) {
            anyhow::ensure!(
                samples >= 2,
                "eval --method {} needs --samples 2 or more (the particles of each image)",
                method.name()
            );
            let particles = opts.method.count(smc::PARTICLES.name).unwrap_or(samples);
            anyhow::ensure!(
                samples % particles == 0,
                "eval --method {}: --particles {particles} must divide --samples {samples} (each image's samples are \
                 its populations' particles)",
                method.name()
            );
            opts.method.set(smc::PARTICLES.name, &particles.to_string())?;
        }
        Ok(opts)
    }
}

/// An image's scored estimate, baseline and measurement.
pub type Picture = (Vec<f32>, Vec<f32>, Vec<f32>);

/// What [`evaluate`] returns.
pub struct Evaluated {
    /// One row per image.
    pub rows: Vec<Row>,
    /// Per image computed in this call, and those a journal that keeps
    /// pictures ([`Journal::with_pictures`]) gave back.
    pub pictures: Vec<Picture>,
    /// Seconds spent sampling.
    pub seconds: f64,
    /// What the baseline is, in a line.
    pub baseline: String,
}

/// Plans `run`'s sampler once on a zero measurement of its task: a task
/// option out of range or a method that refuses the task (DDNM+ on phase
/// retrieval) stops the run in one line before --out is touched.
/// Returns whether the task's operator has an SVD form.
pub(super) fn check_plan(gpu: &Gpu, prior: &Prior, run: &EvalRun<'_>) -> anyhow::Result<bool> {
    let in_shape = [prior.channels, prior.size, prior.size];
    let op = resolve(run.spec, in_shape, run.sampling.seed)?.build(gpu)?;
    let y = vec![0f32; op.out_shape().iter().product()];
    let opts: SamplerOptions = run.options(prior)?;
    let meas = Measurement {
        op: op.as_ref(),
        y: &y,
        sigma_y: run.noise.sigma_y(),
    };
    Sampler::new(gpu, run.method, &prior.score, Some(meas), run.samples, &opts)?;
    Ok(op.linear().and_then(|l| l.svd()).is_some())
}

/// Restores `images` in batches under one operator (drawn once from the
/// seed), `run.samples` posterior samples per image, and scores method and
/// baseline; the batches are spread over `workers` ([`spread`]). Also returns
/// the restorations for pictures.
pub fn evaluate(workers: &[Worker], images: &[ImageRef], run: &EvalRun<'_>) -> anyhow::Result<Evaluated> {
    anyhow::ensure!(run.samples > 0, "--samples must be at least 1");
    let first = &workers.first().context("no workers")?.prior;
    let resolved = resolve(run.spec, [first.channels, first.size, first.size], run.sampling.seed)?;
    let chunks: Vec<&[ImageRef]> = images.chunks(run.batch.max(1)).collect();
    let mine = run.batches(images.len());
    let names = |bi: usize| -> Vec<String> { chunks[bi].iter().map(|p| p.file_name()).collect() };
    let resumed = |bi: usize| run.journal.and_then(|j| j.get(bi, &names(bi)));
    let todo: Vec<usize> = mine.iter().copied().filter(|&bi| resumed(bi).is_none()).collect();
    let pb = progress(run.quiet, &format!("{} {}", run.method.name(), resolved.task));
    let setup = |w: &Worker| -> anyhow::Result<(Box<dyn Operator>, SamplerOptions)> {
        Ok((resolved.build(&w.gpu)?, run.options(&w.prior)?))
    };
    let computed = spread(workers, todo.len(), setup, |w, (op, opts), j| {
        let bi = todo[j];
        let mut last = 0;
        let mut cb = |done: usize, total: usize| {
            pb.set_length((todo.len() * total) as u64);
            pb.inc(done.saturating_sub(last) as u64);
            last = done;
            true
        };
        let (batch, pictures) = restore_batch(w, op.as_ref(), opts, run, bi, chunks[bi], &mut cb)?;
        if let Some(journal) = run.journal {
            journal.keep(bi, &pictures)?;
            journal.record(&batch)?;
        }
        Ok((batch, pictures))
    })?;
    pb.finish_and_clear();
    let mut computed = computed.into_iter();
    let mut out = Evaluated {
        rows: Vec::new(),
        pictures: Vec::new(),
        seconds: 0.0,
        baseline: String::new(),
    };
    for bi in mine {
        let ran;
        let batch = match resumed(bi) {
            Some(done) => {
                let kept = run.journal.map(|j| j.pictures(bi, done.rows.len()));
                if let Some(kept) = kept.transpose()?.flatten() {
                    out.pictures.extend(kept);
                }
                done
            }
            None => {
                let (batch, pictures) = computed.next().expect("a result per batch not resumed");
                out.pictures.extend(pictures);
                ran = batch;
                &ran
            }
        };
        out.rows.extend(batch.rows.iter().cloned());
        out.seconds += batch.seconds;
        out.baseline.clone_from(&batch.baseline);
    }
    Ok(out)
}

/// One batch's restorations and scores on worker `w`; the pictures per image
/// are the scored estimate, the baseline and the measurement.
fn restore_batch(
    worker: &Worker,
    op: &dyn Operator,
    opts: &SamplerOptions,
    run: &EvalRun<'_>,
    bi: usize,
    chunk: &[ImageRef],
    cb: &mut StepCallback<'_>,
) -> anyhow::Result<(Batch, Vec<Picture>)> {
    let (gpu, prior) = (&worker.gpu, &worker.prior);
    let (noise, samples) = (run.noise, run.samples);
    let (c, h, w) = (prior.channels, prior.size, prior.size);
    let per = c * h * w;
    let m_per: usize = op.out_shape().iter().product();
    let mut cleans = Vec::new();
    let mut ys = Vec::new();
    for p in chunk {
        let x = load_clean(p, prior, run.quiet)?;
        // Each image its own noise draw, from the seed and the file name:
        // the same measurement whatever the sharding, batching or worker.
        let noise_seed = run.sampling.seed ^ name_hash(p);
        ys.extend(measure(gpu, op, &x, noise, noise_seed)?);
        cleans.push(x.data);
    }
    let start = Instant::now();
    let o = SamplerOptions {
        seed: opts.seed.wrapping_add(bi as u64 * 7919),
        ..opts.clone()
    };
    // Each image's measurement repeated K times: samples of one image are adjacent.
    let ys_k: Vec<f32> = ys
        .chunks(m_per)
        .flat_map(|y| std::iter::repeat_n(y, samples).flatten().copied())
        .collect();
    let xs = Restore::new(&prior.score, run.method, &o)
        .measured(op, noise.sigma_y())
        .images(gpu, &ys_k, cb)?;
    let seconds = start.elapsed().as_secs_f64();
    let fits = if run.best_of {
        Some(misfits(gpu, op, &xs, &ys_k)?)
    } else {
        None
    };
    let base = baseline(gpu, op, &ys)?;
    let mut rows = Vec::new();
    let mut pictures = Vec::new();
    for (k, p) in chunk.iter().enumerate() {
        let (b, clean) = (&base.x[k * per..(k + 1) * per], &cleans[k]);
        let mine = &xs[k * samples * per..(k + 1) * samples * per];
        let mut mean = vec![0f32; per];
        let (mut sample_psnr, mut sample_ssim) = (0.0, 0.0);
        for x in mine.chunks(per) {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / samples as f32;
            }
            sample_psnr += psnr(x, clean) / samples as f64;
            sample_ssim += ssim(x, clean, c, h, w) / samples as f64;
        }
        // The estimate scored: the samples' mean, or the best-fitting one.
        let estimate = match &fits {
            Some(f) => {
                let j = argmin(&f[k * samples..(k + 1) * samples]);
                mine[j * per..(j + 1) * per].to_vec()
            }
            None => mean,
        };
        rows.push(Row {
            image: p.file_name(),
            psnr: psnr(&estimate, clean),
            ssim: ssim(&estimate, clean, c, h, w),
            sample_psnr,
            sample_ssim,
            baseline_psnr: psnr(b, clean),
            baseline_ssim: ssim(b, clean, c, h, w),
        });
        pictures.push((estimate, b.to_vec(), ys[k * m_per..(k + 1) * m_per].to_vec()));
    }
    let batch = Batch {
        batch: bi,
        rows,
        seconds,
        baseline: base.label,
    };
    Ok((batch, pictures))
}

/// FNV-1a of the file name.
fn name_hash(p: &ImageRef) -> u64 {
    let name = p.file_name();
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn mean_of(rows: &[Row]) -> Row {
    let n = rows.len().max(1) as f64;
    Row {
        image: "mean".into(),
        psnr: rows.iter().map(|r| r.psnr).sum::<f64>() / n,
        ssim: rows.iter().map(|r| r.ssim).sum::<f64>() / n,
        sample_psnr: rows.iter().map(|r| r.sample_psnr).sum::<f64>() / n,
        sample_ssim: rows.iter().map(|r| r.sample_ssim).sum::<f64>() / n,
        baseline_psnr: rows.iter().map(|r| r.baseline_psnr).sum::<f64>() / n,
        baseline_ssim: rows.iter().map(|r| r.baseline_ssim).sum::<f64>() / n,
    }
}

fn write_table(out: &Path, stem: &str, header: serde_json::Value, rows: &[Row]) -> anyhow::Result<()> {
    let mean = mean_of(rows);
    let mut csv = String::from("image,psnr,ssim,sample_psnr,sample_ssim,baseline_psnr,baseline_ssim\n");
    for r in rows.iter().chain(std::iter::once(&mean)) {
        csv += &format!(
            "{},{:.4},{:.5},{:.4},{:.5},{:.4},{:.5}\n",
            r.image, r.psnr, r.ssim, r.sample_psnr, r.sample_ssim, r.baseline_psnr, r.baseline_ssim
        );
    }
    let mut doc = header;
    doc["images"] = serde_json::to_value(rows)?;
    doc["mean"] = serde_json::to_value(&mean)?;
    write_atomic(&out.join(format!("{stem}.csv")), csv.as_bytes())?;
    write_atomic(
        &out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    Ok(())
}

/// `tweedie eval-merge DIR`: combines the shard files of `tweedie eval --shard`.
#[derive(Args)]
pub struct MergeArgs {
    /// The --out directory the shards wrote to; results.json and results.csv go there too.
    pub dir: PathBuf,
}

pub fn run_merge(args: MergeArgs, _verbose: bool) -> anyhow::Result<()> {
    merge(&args.dir)
}

fn merge(out: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("--out {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("shard-") && f.ends_with(".json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no shard-*.json files to merge", out.display());
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut header = serde_json::Value::Null;
    let mut seconds = 0.0;
    for f in &files {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f)?).with_context(|| format!("{}", f.display()))?;
        let r: Vec<Row> =
            serde_json::from_value(doc["images"].clone()).with_context(|| format!("{}: no image rows", f.display()))?;
        rows.extend(r);
        seconds += doc["seconds_sampling"].as_f64().unwrap_or(0.0);
        if header.is_null() {
            header = doc.clone();
        }
    }
    rows.sort_by(|a, b| a.image.cmp(&b.image));
    header["shard"] = json!(null);
    header["shards_merged"] = json!(files.len());
    header["seconds_sampling"] = json!(seconds);
    header["seconds_per_image"] = json!(seconds / rows.len().max(1) as f64);
    write_table(out, "results", header, &rows)?;
    let m = mean_of(&rows);
    println!(
        "{} images: PSNR {:.2} dB (baseline {:.2}), SSIM {:.4} (baseline {:.4})",
        rows.len(),
        m.psnr,
        m.baseline_psnr,
        m.ssim,
        m.baseline_ssim
    );
    Ok(())
}

pub fn run(args: EvalArgs, verbose: bool) -> anyhow::Result<()> {
    args.sampling.validate(args.problem.method)?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let samples = args.best_of.unwrap_or(args.samples);
    if args.best_of == Some(0) {
        bail!("--best-of must be at least 1");
    }
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let method = args.problem.method;
    let input = &args.input;
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let mut images = list_images(input)?;
    if let Some(l) = args.limit {
        images.truncate(l);
    }
    let mut run = EvalRun {
        spec: &args.problem.spec,
        method,
        sampling: &args.sampling,
        noise: args.noise.model()?,
        batch: args.batch,
        samples,
        best_of: args.best_of.is_some(),
        quiet: args.quiet,
        journal: None,
        shard,
        gain: None,
    };
    let chunks: Vec<&[ImageRef]> = images.chunks(args.batch).collect();
    let mine: Vec<String> = run
        .batches(images.len())
        .into_iter()
        .flat_map(|bi| chunks[bi])
        .map(|p| p.file_name())
        .collect();
    if mine.is_empty() {
        bail!(
            "no images for this shard: {} images make {} batches of --batch {} (give fewer shards or a smaller --batch)",
            images.len(),
            images.len().div_ceil(args.batch),
            args.batch
        );
    }
    let devices = args.devices.resolve()?;
    let workers = open_workers(devices.as_deref(), &args.problem.prior, verbose)?;
    let Worker { gpu, prior } = &workers[0];
    run.measure_gain(gpu, prior)?;
    check_plan(gpu, prior, &run)?;
    prepare_out(&args.out)?;
    let stem = match shard {
        Some((i, n)) => format!("shard-{i:04}-of-{n:04}"),
        None => "results".to_string(),
    };
    // What makes a batch's results: resuming needs all of it to match.
    let noise = run.noise;
    let run_id = json!({
        "model": prior.name, "precision": prior.precision.name(), "task": args.problem.spec.task,
        "task_options": args.problem.spec.options_json(), "method": method.name(),
        "settings": settings_json(
            &args.sampling.options(default_zeta(args.problem.spec.task, run.gain), true, VarianceType::FixedLarge)?,
            &prior.score.unet().process,
        ),
        "noise": noise.describe(), "batch": args.batch, "samples": samples, "best_of": args.best_of,
        "images": mine,
    });
    let journal = Journal::open(args.out.join(format!("{stem}.progress.jsonl")), &run_id, args.overwrite)?;
    run.journal = Some(&journal);
    let Evaluated {
        rows,
        seconds,
        baseline,
        ..
    } = evaluate(&workers, &images, &run)?;
    let settings = settings_json(&run.options(prior)?, &prior.score.unet().process);
    let header = json!({
        "model": prior.name,
        "process": prior.score.unet().process.describe(),
        "task": args.problem.spec.task,
        "task_options": args.problem.spec.options_json(),
        "method": method.name(),
        "precision": prior.precision.name(),
        "steps": args.sampling.steps,
        "samples_per_image": samples,
        "scores": if args.best_of.is_some() {
            "psnr/ssim: the sample with the smallest ||y - A(x)|| of each image's best_of; sample_psnr/sample_ssim: averaged over single samples"
        } else {
            "psnr/ssim: the mean of the samples; sample_psnr/sample_ssim: averaged over single samples"
        },
        "best_of": args.best_of,
        "seed": args.sampling.seed,
        "sigma_y": run.noise.sigma_y(),
        "noise": run.noise.describe(),
        "batch": args.batch,
        "baseline": baseline,
        "adapter": gpu.report(),
        "devices": devices,
        "shard": args.shard,
        "seconds_sampling": seconds,
        "seconds_per_image": seconds / rows.len() as f64,
        "resumed_batches": journal.resumed(),
    });
    let header = with_settings(header, settings);
    write_table(&args.out, &stem, header, &rows)?;
    let m = mean_of(&rows);
    let single = if args.best_of.is_some() {
        format!(
            " (the best-fitting of {samples} samples; single samples {:.2} dB, SSIM {:.4})",
            m.sample_psnr, m.sample_ssim
        )
    } else if samples > 1 {
        format!(
            " (mean of {samples} samples; single samples {:.2} dB, SSIM {:.4})",
            m.sample_psnr, m.sample_ssim
        )
    } else {
        String::new()
    };
    println!(
        "{} {} on {} images: PSNR {:.2} dB (baseline {:.2}), SSIM {:.4} (baseline {:.4}){single}, {:.2} s/image",
        method.name(),
        args.problem.spec.task,
        rows.len(),
        m.psnr,
        m.baseline_psnr,
        m.ssim,
        m.baseline_ssim,
        seconds / rows.len() as f64
    );
    Ok(())
}
