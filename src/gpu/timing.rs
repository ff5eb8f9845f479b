use std::time::{Duration, Instant};

use super::{Gpu, GpuError, Plan};

/// Wall time of `iters` replays of `plan`, one submission each, with the wait
/// for the GPU inside the timer (one warm-up replay first: pipelines compile
/// lazily on some drivers).
pub fn time_plan(gpu: &Gpu, plan: &Plan, iters: u64) -> Result<Duration, GpuError> {
    plan.run(gpu)?;
    gpu.sync()?;
    let start = Instant::now();
    for _ in 0..iters {
        plan.run(gpu)?;
    }
    gpu.sync()?;
    Ok(start.elapsed())
}
