//! `--devices LIST` of `eval` and `compare`: several workers in one process,
//! each with its own GPU context, model and sampler plans on one thread, the
//! batches spread over them and the results gathered in batch order. A
//! batch's results depend only on the run and the batch (its images, their
//! noise, its sampler seed), never on the worker that ran it, so any list
//! gives one worker's results (on identical adapters: two kinds of GPU may
//! round differently).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::Args;

use super::common::{Prior, PriorArgs};
use crate::Gpu;

/// `--devices`, as `eval` and `compare` take it.
#[derive(Args, Clone, Debug, Default)]
pub struct DevicesArg {
    /// Adapters to spread the images over, one worker each, numbered as
    /// `tweedie info` lists them: `0,1`; `all` for every GPU (where there is
    /// none, the software adapter `tweedie info` lists under `--devices all`);
    /// a number twice runs two workers on one GPU (`0,0`). Results equal one
    /// worker's. Default: one worker on the adapter `tweedie info` chooses.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<String>,
}

impl DevicesArg {
    /// Each worker's adapter index, or None for the default adapter; a bad
    /// list is refused in one line, before any work.
    pub fn resolve(&self) -> anyhow::Result<Option<Vec<usize>>> {
        let Some(list) = &self.devices else { return Ok(None) };
        let adapters = Gpu::list_adapters();
        let fail = |why: String| anyhow::anyhow!("--devices {list}: {why}");
        if list.trim() == "all" {
            let all = Gpu::default_adapters(&adapters);
            if all.is_empty() {
                return Err(fail("wgpu sees no adapter".into()));
            }
            return Ok(Some(all));
        }
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(fail(
                    "give adapter numbers separated by commas (e.g. 0,1), or all".into(),
                ));
            }
            let i: usize = part
                .parse()
                .map_err(|_| fail(format!("{part:?} is not an adapter number (e.g. 0,1, or all)")))?;
            if i >= adapters.len() {
                let count = adapters.len();
                return Err(fail(crate::gpu::GpuError::AdapterIndex { index: i, count }.to_string()));
            }
            out.push(i);
        }
        Ok(Some(out))
    }
}

/// One worker: its own GPU context and the prior loaded on it.
pub struct Worker {
    pub gpu: Gpu,
    pub prior: Prior,
}

/// Opens a worker per entry of `devices` (adapter indices; None: one on the
/// default adapter), each loading the prior.
pub fn open_workers(devices: Option<&[usize]>, prior: &PriorArgs, verbose: bool) -> anyhow::Result<Vec<Worker>> {
    let open = |gpu: Gpu| -> anyhow::Result<Worker> {
        let prior = prior.load(&gpu)?;
        Ok(Worker { gpu, prior })
    };
    let Some(devices) = devices else {
        return Ok(vec![open(super::open_gpu(verbose)?)?]);
    };
    devices
        .iter()
        .enumerate()
        .map(|(w, &i)| {
            let gpu = Gpu::with_adapter(i).with_context(|| format!("--devices: adapter {i}"))?;
            if verbose {
                eprintln!("worker {w}: adapter {i}, {}", gpu.describe());
            }
            open(gpu)
        })
        .collect()
}

/// Runs jobs `0..jobs` over `workers`, one thread each: a worker first makes
/// its own state with `setup` (operators, plans: whatever lives on its GPU),
/// then takes the next job whenever it is free. Returns the results in job
/// order, or the first error (after which no worker starts another job).
/// One worker runs on the calling thread.
pub fn spread<S, T: Send>(
    workers: &[Worker],
    jobs: usize,
    setup: impl Fn(&Worker) -> anyhow::Result<S> + Sync,
    job: impl Fn(&Worker, &mut S, usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..jobs).map(|_| None).collect());
    let work = |w: &Worker| -> anyhow::Result<()> {
        let mut state = None;
        loop {
            let j = next.fetch_add(1, Ordering::SeqCst);
            if j >= jobs || failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let state = match &mut state {
                Some(s) => s,
                None => state.insert(setup(w)?),
            };
            let t = job(w, state, j)?;
            results.lock().expect("no worker panics holding it")[j] = Some(t);
        }
    };
    let stop_on_error = |w: &Worker| {
        let r = work(w);
        if r.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        r
    };
    match workers {
        [] => bail!("no workers"),
        [one] => stop_on_error(one)?,
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter()
                .map(|w| {
                    // The main thread's stack size: a worker runs what it would.
                    std::thread::Builder::new()
                        .stack_size(8 << 20)
                        .spawn_scoped(s, || stop_on_error(w))
                })
                .collect::<Result<_, _>>()
                .context("starting a worker thread")?;
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<anyhow::Result<Vec<()>>>()
        })
        .map(drop)?,
    }
    let results = results.into_inner().expect("no worker panicked");
    Ok(results
        .into_iter()
        .map(|r| r.expect("every job ran when no worker failed"))
        .collect())
}
