//! The model benchmark behind `tweedie bench --model`: every distinct layer
//! shape of a U-Net (convolutions forward and backward-data by resolution and
//! channels, GroupNorm, attention, linear), then one forward, one forward +
//! VJP and one reverse step of each sampler. Each record has the median GPU
//! time (timestamp queries where the adapter has them, wall time otherwise),
//! the achieved TFLOP/s or GB/s, and the fraction of the adapter's peak from
//! [`peak_for`] (or the caller's figures).
//!
//! Records are JSON objects with the same fields `tools/bench_torch.py`
//! prints, so `tools/bench_compare.py` can put the two side by side; a layer
//! record carries its `shape`, which is what `bench_torch.py --shapes` runs
//! in PyTorch.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::gpu::{gpu_times, peak_for, Gpu, Plan};
use crate::kernels::conv2d::{
    conv2d, conv2d_bwd_data, Conv2dShape, ConvBackward, ConvForward, ConvKernel, ConvResidual,
};
use crate::kernels::conv_choice::{self, ConvPass, TuneCache};
use crate::samplers::{Method, MethodOptions, SamplerError, UnetScore};
use crate::tensor::Tensor;
use crate::unet::layers::{conv_name, BenchRow as Row};
use crate::unet::memory::PlanKind;
use crate::unet::{Sizes, Unet, UnetForward, UnetVjp};

/// What the fractions are taken of.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakOverride {
    pub tflops: Option<f64>,
    pub gbps: Option<f64>,
}

/// The distinct layer shapes of a planned forward (and VJP), one row each.
fn layer_rows(gpu: &Gpu, fwd: &UnetForward, vjp: &UnetVjp) -> Vec<Row> {
    let at = Sizes::of_tensors(fwd.batch, &fwd.acts);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let bwd: BTreeMap<usize, &Plan> = vjp.records.iter().map(|r| (r.layer, &r.dispatches)).collect();
    for (li, rec) in fwd.records.iter().enumerate() {
        let bwd = bwd.get(&li).copied();
        for row in rec.layer.kind().bench_rows(gpu, fwd.dtype, &at, &rec.dispatches, bwd) {
            rows.entry(row.name.clone()).and_modify(|r| r.count += 1).or_insert(row);
        }
    }
    rows.into_values().collect()
}

/// Benchmarks `unet` at `size` x `size`, `batch` images: the layer rows, the
/// whole passes, and one step of each sampler (box inpainting). `iters`
/// replays per row (median). Each group of rows goes to `emit` as soon as it
/// is timed (a run cut short still leaves what it measured), then all of
/// them are returned.
pub fn bench_model(
    gpu: &Gpu,
    unet: Arc<Unet>,
    size: usize,
    batch: usize,
    iters: usize,
    peak: PeakOverride,
    emit: &mut dyn FnMut(&[Value]),
) -> Result<Vec<Value>, SamplerError> {
    let plan_err = |e: crate::unet::ForwardError| SamplerError::Invalid(e.to_string());
    let dtype = unet.dtype();
    let fwd = UnetForward::new_kind(gpu, &unet, batch, size, size, PlanKind::ForwardVjp).map_err(plan_err)?;
    let vjp = UnetVjp::new(gpu, &unet, &fwd).map_err(plan_err)?;
    let flops = unet.graph.flops(size, size) * batch as f64;
    let mut rows = layer_rows(gpu, &fwd, &vjp);
    rows.push(Row {
        name: "forward".into(),
        kind: "model",
        plan: fwd.plan(),
        flops,
        bytes: 0.0,
        count: 1,
        shape: Value::Null,
        kernel: None,
    });
    rows.push(Row {
        name: "forward_vjp".into(),
        kind: "model",
        plan: crate::gpu::Plan::concat([&fwd.plan(), &vjp.plan()]),
        flops: 2.0 * flops,
        bytes: 0.0,
        count: 1,
        shape: Value::Null,
        kernel: None,
    });
    let mut out = time_rows(gpu, &rows, iters, dtype, size, batch, peak)?;
    emit(&out);
    drop((rows, vjp, fwd));

    // One reverse step of each sampler, in its own plan (each sampler holds
    // its own U-Net plan; one at a time keeps the memory down).
    let score = UnetScore::new(unet.clone(), size, size);
    for &method in Method::all() {
        let model_flops = method.model_passes(&MethodOptions::default(), true) as f64 * flops;
        let Some(s) = crate::figures::box_inpainting_sampler(gpu, &unet, &score, method, batch)? else {
            continue;
        };
        s.init(gpu)?;
        // A mid-run step's scalars, then its plan replayed.
        s.step(gpu, s.steps() / 2)?;
        let row = Row {
            name: format!("step {}", method.name()),
            kind: "step",
            plan: s.step_plan().clone(),
            flops: model_flops,
            bytes: 0.0,
            count: 1,
            shape: Value::Null,
            kernel: None,
        };
        let timed = time_rows(gpu, &[row], iters, dtype, size, batch, peak)?;
        emit(&timed);
        out.extend(timed);
        gpu.sync()?;
    }
    Ok(out)
}

fn time_rows(
    gpu: &Gpu,
    rows: &[Row],
    iters: usize,
    dtype: crate::tensor::DType,
    size: usize,
    batch: usize,
    peak: PeakOverride,
) -> Result<Vec<Value>, SamplerError> {
    let plans: Vec<&Plan> = rows.iter().map(|r| &r.plan).collect();
    let (times, timer) = match gpu_times(gpu, &plans, iters)? {
        Some(t) => (t.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(), "gpu timestamps"),
        None => {
            let mut t = Vec::new();
            for p in &plans {
                // run_timed's own clock: the warm-up replay is outside it.
                let elapsed = p.run_timed(gpu, "bench", iters.max(1) as u64)?;
                t.push(elapsed.as_secs_f64() / iters.max(1) as f64);
            }
            (t, "wall clock")
        }
    };
    let table = peak_for(&gpu.info.name);
    let peak_tflops = peak.tflops.or(table.map(|p| p.fp32_tflops));
    let peak_gbps = peak.gbps.or(table.map(|p| p.gbps));
    Ok(rows
        .iter()
        .zip(times)
        .map(|(r, s)| {
            let tflops = (r.flops > 0.0).then(|| r.flops / s / 1e12);
            let gbps = (r.bytes > 0.0).then(|| r.bytes / s / 1e9);
            let fraction = match (tflops, gbps) {
                (Some(t), _) => peak_tflops.map(|p| t / p),
                (None, Some(g)) => peak_gbps.map(|p| g / p),
                _ => None,
            };
            // f16 rows are also put against the dense FP16 tensor peak (the
            // cooperative-matrix path's ceiling).
            let tensor_fraction = match (dtype, tflops, table) {
                (crate::tensor::DType::F16, Some(t), Some(p)) => Some(t / p.fp16_tensor_tflops),
                _ => None,
            };
            json!({
                "engine": concat!("tweedie ", env!("CARGO_PKG_VERSION")),
                "device": gpu.describe(),
                "name": r.name,
                "kind": r.kind,
                "image_size": size,
                "batch": batch,
                "precision": dtype.wgsl(),
                "median_ms": s * 1e3,
                "timer": timer,
                "layers": r.count,
                "dispatches": r.plan.dispatches(),
                "flops": r.flops,
                "bytes_moved": r.bytes,
                "tflops": tflops,
                "gbps": gbps,
                "peak_fraction": fraction,
                "tensor_peak_fraction": tensor_fraction,
                "shape": r.shape,
                "kernel": r.kernel,
            })
        })
        .collect())
}

/// `tweedie bench --tune`: times every candidate kernel
/// ([`conv_choice::candidates`]) on each distinct convolution of `unet` at
/// this size, batch and precision, forward and backward-data, and records
/// the fastest in the autotune cache ([`conv_choice::cache_path`]) under
/// this adapter. Returns one record per layer shape and pass: the
/// heuristic's kernel and time, the best kernel and time, and every
/// candidate's time. Needs timestamp queries (wall-clock timing of single
/// dispatches is too coarse to rank kernels).
pub fn tune_model(gpu: &Gpu, unet: &Unet, size: usize, batch: usize, iters: usize) -> Result<Vec<Value>, SamplerError> {
    let gerr = |e: crate::gpu::GpuError| SamplerError::Invalid(e.to_string());
    if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Err(SamplerError::Invalid(format!(
            "--tune needs GPU timestamp queries, which {} does not offer",
            gpu.describe()
        )));
    }
    let path = conv_choice::cache_path().ok_or_else(|| {
        SamplerError::Invalid("--tune: no cache location (TWEEDIE_TUNE_CACHE is off and no HOME)".into())
    })?;
    let mut cache = TuneCache::read(&path).map_err(SamplerError::Invalid)?;
    cache.version = 1;
    let dtype = unet.dtype();
    let mut shapes: Vec<Conv2dShape> = Vec::new();
    for shape in unet.graph.conv_shapes(batch, size, size) {
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    let elem = dtype.size_bytes() as u64;
    let mut out = Vec::new();
    let entries = cache.adapters.entry(conv_choice::adapter_key(gpu)).or_default();
    for s in &shapes {
        let (ho, wo) = s.out_hw();
        let x = Tensor::zeros_typed(gpu, "tune x", &[s.n, s.cin, s.h, s.w], dtype).map_err(gerr)?;
        let y = Tensor::zeros_typed(gpu, "tune y", &[s.n, s.cout, ho, wo], dtype).map_err(gerr)?;
        let w = gpu
            .storage_buffer("tune w", (s.cout * s.cin * s.ks * s.ks + s.cout) as u64 * elem)
            .map_err(gerr)?;
        let dummy = gpu.storage_buffer("tune dummy", 16).map_err(gerr)?;
        for pass in [ConvPass::Forward, ConvPass::BwdData] {
            let (m, p, k) = pass.gemm(s);
            let cands = conv_choice::candidates(gpu, pass, s, dtype);
            let heuristic = conv_choice::heuristic(gpu, pass, s, dtype);
            let scratch_bytes = cands.iter().map(|c| c.scratch_bytes(m, p, k)).max().unwrap_or(0);
            let scratch = gpu
                .storage_buffer("tune split-K scratch", scratch_bytes.max(16))
                .map_err(gerr)?;
            let plan_of = |c: &ConvKernel| -> Result<Plan, crate::gpu::GpuError> {
                let steps = match pass {
                    ConvPass::Forward => conv2d(
                        gpu,
                        c,
                        s,
                        &ConvForward {
                            x: &x,
                            w: (&w, 0),
                            b: (&w, s.cout * s.cin * s.ks * s.ks),
                            res: ConvResidual::None,
                            out_scale: 1.0,
                            y: &y,
                            dummy: &dummy,
                            scratch: Some(&scratch),
                        },
                    )?,
                    ConvPass::BwdData => conv2d_bwd_data(
                        gpu,
                        c,
                        s,
                        &ConvBackward {
                            dy: &y,
                            w: (&w, 0),
                            scale: 1.0,
                            accumulate: false,
                            dx: &x,
                            scratch: Some(&scratch),
                        },
                    )?,
                };
                Ok(Plan { steps })
            };
            let plans = cands.iter().map(plan_of).collect::<Result<Vec<_>, _>>().map_err(gerr)?;
            let refs: Vec<&Plan> = plans.iter().collect();
            let times = gpu_times(gpu, &refs, iters).map_err(gerr)?.unwrap_or_default();
            gpu.sync().map_err(gerr)?;
            let timed: Vec<(ConvKernel, f64)> = cands
                .iter()
                .copied()
                .zip(times.iter().map(|d| d.as_secs_f64()))
                .collect();
            let Some(&(best, best_s)) = timed.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
                continue;
            };
            let heur_s = timed.iter().find(|(c, _)| *c == heuristic).map(|t| t.1);
            entries.insert(conv_choice::layer_key(pass, s, dtype), conv_choice::spec(&best));
            let flops = s.flops();
            out.push(json!({
                "kind": "tune",
                "device": gpu.describe(),
                "name": conv_name(if pass == ConvPass::Forward { "conv" } else { "conv_bwd" }, s),
                "precision": dtype.wgsl(),
                "heuristic": heuristic.describe(),
                "heuristic_ms": heur_s.map(|t| t * 1e3),
                "best": best.describe(),
                "best_ms": best_s * 1e3,
                "best_tflops": flops / best_s / 1e12,
                "candidates": timed.iter().map(|(c, t)| json!({"kernel": c.describe(), "ms": t * 1e3})).collect::<Vec<_>>(),
            }));
        }
    }
    cache.write(&path).map_err(SamplerError::Invalid)?;
    Ok(out)
}

/// The tuning records as a text table.
pub fn tune_table(records: &[Value]) -> String {
    let mut out = format!(
        "{:<44} {:>18} {:>10} {:>18} {:>10} {:>8}\n",
        "layer", "heuristic", "ms", "best", "ms", "speedup"
    );
    for r in records {
        let h = r["heuristic_ms"].as_f64();
        let b = r["best_ms"].as_f64().unwrap_or(f64::NAN);
        out += &format!(
            "{:<44} {:>18} {:>10} {:>18} {:>10.3} {:>8}\n",
            r["name"].as_str().unwrap_or("?"),
            r["heuristic"].as_str().unwrap_or("?"),
            h.map_or("-".into(), |h| format!("{h:.3}")),
            r["best"].as_str().unwrap_or("?"),
            b,
            h.map_or("-".into(), |h| format!("{:.2}x", h / b)),
        );
    }
    out
}

/// The records as a text table: name, layers of that shape, median time,
/// achieved rate and fraction of peak.
pub fn table(records: &[Value]) -> String {
    let mut out = format!(
        "{:<44} {:>6} {:>11} {:>14} {:>8}\n",
        "row", "layers", "median", "rate", "of peak"
    );
    for r in records {
        let rate = match (r["tflops"].as_f64(), r["gbps"].as_f64()) {
            (Some(t), _) => format!("{:.3} TFLOP/s", t),
            (None, Some(g)) => format!("{:.1} GB/s", g),
            _ => "-".into(),
        };
        let frac = r["peak_fraction"]
            .as_f64()
            .map_or("-".into(), |f| format!("{:.1}%", 100.0 * f));
        out += &format!(
            "{:<44} {:>6} {:>8.3} ms {:>14} {:>8}\n",
            r["name"].as_str().unwrap_or("?"),
            r["layers"].as_u64().unwrap_or(1),
            r["median_ms"].as_f64().unwrap_or(f64::NAN),
            rate,
            frac
        );
    }
    out
}
