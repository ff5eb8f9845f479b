//! Per-layer timing of a planned forward / VJP, for tuning kernels on new
//! hardware. Where the adapter has timestamp queries, each layer's GPU time
//! is read from timestamps around its own compute pass (the whole graph in one
//! submission per replay; the median of `iters` replays). Elsewhere each
//! layer's dispatches are submitted on their own `iters` times with the GPU
//! wait inside a wall-clock timer, which adds a submission per layer: read
//! that for where the time goes, not for the total.

use super::backward::UnetVjp;
use super::forward::UnetForward;
use super::graph::Layer;
use crate::gpu::{gpu_times, Gpu, GpuError, Plan};
use crate::tensor::Tensor;

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

fn describe(layer: &Layer, acts: &[Tensor]) -> (&'static str, String, f64) {
    let hw = |a: usize| {
        let s = &acts[a].shape;
        if s.len() == 4 {
            format!("{}x{}", s[2], s[3])
        } else {
            "vector".into()
        }
    };
    let px = |a: usize| acts[a].shape[2..].iter().product::<usize>() as f64 * acts[a].shape[0] as f64;
    match layer {
        Layer::Timestep { dim, .. } => ("timestep", format!("timestep embedding {dim}"), 0.0),
        Layer::Linear { din, dout, .. } => (
            "linear",
            format!("linear {din}->{dout}"),
            2.0 * (*din * *dout * acts[0].shape[0]) as f64,
        ),
        Layer::Conv {
            x,
            y,
            w,
            cin,
            cout,
            k,
            stride,
            ..
        } => (
            "conv",
            format!("conv {k}x{k}/{stride} {cin}->{cout} at {} ({w})", hw(*x)),
            2.0 * (*cin * *cout * k * k) as f64 * px(*y),
        ),
        Layer::GroupNorm {
            x,
            c,
            silu,
            scale_shift,
            ..
        } => (
            "groupnorm",
            format!(
                "groupnorm {c} at {}{}{}",
                hw(*x),
                if scale_shift.is_some() { " +scale-shift" } else { "" },
                if *silu { " +silu" } else { "" }
            ),
            0.0,
        ),
        Layer::Attention { y, heads, ch, .. } => {
            let t = acts[*y].shape[2..].iter().product::<usize>() as f64;
            let n = acts[*y].shape[0] as f64;
            (
                "attention",
                format!("attention {heads}x{ch} at {}", hw(*y)),
                4.0 * n * t * t * (*heads * *ch) as f64,
            )
        }
        Layer::Upsample { x, .. } => ("resample", format!("upsample at {}", hw(*x)), 0.0),
        Layer::AvgPool { x, .. } => ("resample", format!("avgpool at {}", hw(*x)), 0.0),
        Layer::Concat { y, .. } => ("concat", format!("concat at {}", hw(*y)), 0.0),
    }
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
    for r in &fwd.records {
        let (kind, label, flops) = describe(&r.layer, &fwd.acts);
        plans.push(&r.dispatches);
        out.push(LayerTime {
            kind,
            pass: "forward",
            label,
            seconds: 0.0,
            flops,
        });
    }
    if let Some(v) = vjp {
        for r in &v.records {
            if r.dispatches.is_empty() {
                continue;
            }
            let (kind, label, flops) = describe(&fwd.records[r.layer].layer, &fwd.acts);
            // The input gradient of a convolution costs what its forward does;
            // the other backward layers are counted as memory-bound.
            let flops = if kind == "conv" { flops } else { 0.0 };
            plans.push(&r.dispatches);
            out.push(LayerTime {
                kind,
                pass: "backward",
                label,
                seconds: 0.0,
                flops,
            });
        }
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
