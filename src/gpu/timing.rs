use std::time::Duration;

use super::{Gpu, GpuError, Plan};

/// Wall time of `iters` replays of `plan`, one submission each, with the wait
/// for the GPU inside the timer (one warm-up replay first: pipelines compile
/// lazily on some drivers). See [`Plan::run_timed`].
pub fn time_plan(gpu: &Gpu, plan: &Plan, iters: u64) -> Result<Duration, GpuError> {
    plan.run_timed(gpu, "plan", iters)
}
