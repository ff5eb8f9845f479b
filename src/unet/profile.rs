//! Per-layer timing of a planned forward / VJP, for tuning kernels on new
//! hardware. Where the adapter has timestamp queries, each layer's GPU time
//! is read from timestamps around its own compute pass (the whole graph in one
//! submission per replay; the median of `iters` replays). Elsewhere each
//! layer's dispatches are submitted on their own `iters` times with the GPU
//! wait inside a wall-clock timer, which adds a submission per layer: read
//! that for where the time goes, not for the total.

use super::backward::UnetVjp;
use super::forward::UnetForward;
use super::layers::Sizes;
use crate::gpu::{gpu_times, Gpu, GpuError, Plan};

/// One layer's share.
#[derive(Debug, Clone)]
pub struct LayerTime {
    /// conv, groupnorm, attention, linear, timestep, resample, concat
    pub kind: &'static str,
    /// "forward" or "backward".
    pub pass: &'static str,
    pub label: String,
    pub seconds: f64,
    /// Multiply-adds x 2 (0 for the memory-bound layers).
    pub flops: f64,
}

/// Seconds per replay of one layer's plan, submitted on its own `iters` times.
fn time_layer(gpu: &Gpu, plan: &Plan, iters: usize) -> Result<f64, GpuError> {
    let elapsed = plan.run_timed(gpu, "profile", iters as u64)?;
    Ok(elapsed.as_secs_f64() / iters.max(1) as f64)
}

/// Times every layer of the forward plan (and of the VJP when given).
pub fn profile(gpu: &Gpu, fwd: &UnetForward, vjp: Option<&UnetVjp>, iters: usize) -> Result<Vec<LayerTime>, GpuError> {
    let mut out = Vec::new();
    let mut plans: Vec<&Plan> = Vec::new();
    let at = Sizes::of_tensors(fwd.batch, &fwd.acts);
    let forward = fwd.records.iter().map(|r| ("forward", r, &r.dispatches));
    let backward = vjp.into_iter().flat_map(|v| &v.records);
    let backward = backward
        .filter(|r| !r.dispatches.is_empty())
        .map(|r| ("backward", &fwd.records[r.layer], &r.dispatches));
    for (pass, rec, plan) in forward.chain(backward) {
        let layer = rec.layer.kind();
        let (label, flops) = (layer.label(&at), layer.flops(&at));
        plans.push(plan);
        out.push(LayerTime {
            kind: label.kind,
            pass,
            label: label.text,
            seconds: 0.0,
            flops: if pass == "forward" {
                flops.forward
            } else {
                flops.backward
            },
        });
    }
    match gpu_times(gpu, &plans, iters)? {
        Some(times) => {
            for (o, t) in out.iter_mut().zip(times) {
                o.seconds = t.as_secs_f64();
            }
        }
        None => {
            for (o, p) in out.iter_mut().zip(&plans) {
                o.seconds = time_layer(gpu, p, iters)?;
            }
        }
    }
    Ok(out)
}

/// A printable summary: totals per (pass, kind), then the slowest layers.
pub fn report(times: &[LayerTime], top: usize) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut by_kind: BTreeMap<(&str, &str), (f64, f64, usize)> = BTreeMap::new();
    for t in times {
        let e = by_kind.entry((t.pass, t.kind)).or_default();
        e.0 += t.seconds;
        e.1 += t.flops;
        e.2 += 1;
    }
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<10} {:>6} {:>10} {:>6} {:>9}",
        "pass", "kind", "layers", "ms", "share", "GFLOP/s"
    );
    for ((pass, kind), (sec, flops, n)) in &by_kind {
        let rate = if *flops > 0.0 {
            format!("{:.1}", flops / sec / 1e9)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "{pass:<9} {kind:<10} {n:>6} {:>10.3} {:>5.1}% {rate:>9}",
            sec * 1e3,
            100.0 * sec / total
        );
    }
    let mut sorted: Vec<&LayerTime> = times.iter().collect();
    sorted.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let _ = writeln!(s, "slowest layers:");
    for t in sorted.iter().take(top) {
        let rate = if t.flops > 0.0 {
            format!("{:.1} GFLOP/s", t.flops / t.seconds / 1e9)
        } else {
            String::new()
        };
        let _ = writeln!(s, "  {:>9.3} ms  {:<8} {}  {rate}", t.seconds * 1e3, t.pass, t.label);
    }
    s
}
