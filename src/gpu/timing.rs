use std::time::Duration;

use super::{Gpu, GpuError, Plan};

/// Wall time of `iters` replays of `plan`, one submission each, with the wait
/// for the GPU inside the timer (one warm-up replay first: pipelines compile
/// lazily on some drivers). See [`Plan::run_timed`].
pub fn time_plan(gpu: &Gpu, plan: &Plan, iters: u64) -> Result<Duration, GpuError> {
    plan.run_timed(gpu, "plan", iters)
}

/// Most plans one query set times at once (two timestamps each, within
/// wgpu's 4096 queries per set).
const PLANS_PER_QUERY_SET: usize = 1024;

/// The median GPU time of each of `plans` over `iters` replays (after one
/// warm-up), from timestamp queries written at the start and end of one
/// compute pass per plan; all plans go into one submission per replay, so a
/// plan's time is its own work, without submission or wait overhead. `None`
/// where the adapter has no timestamp queries (callers fall back to wall time,
/// [`Plan::run_timed`]).
pub fn gpu_times(gpu: &Gpu, plans: &[&Plan], iters: usize) -> Result<Option<Vec<Duration>>, GpuError> {
    if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) || plans.is_empty() {
        return Ok(None);
    }
    let period_ns = gpu.queue.get_timestamp_period() as f64;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    for (c, chunk) in plans.chunks(PLANS_PER_QUERY_SET).enumerate() {
        let count = 2 * chunk.len() as u32;
        let query_set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("tweedie timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tweedie timestamps resolved"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        for replay in 0..=iters.max(1) {
            let mut enc = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timed") });
            for (i, plan) in chunk.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("timed plan"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                plan.record(&mut pass);
            }
            enc.resolve_query_set(&query_set, 0..count, &resolved, 0);
            gpu.submit_checked("timed plans", enc)?;
            let ticks: Vec<u64> = gpu.read(&resolved, 0, count as usize)?;
            if replay == 0 {
                continue; // warm-up: pipelines compile lazily on some drivers
            }
            for i in 0..chunk.len() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns;
                samples[c * PLANS_PER_QUERY_SET + i].push(dt);
            }
        }
    }
    Ok(Some(
        samples
            .into_iter()
            .map(|mut s| {
                s.sort_by(f64::total_cmp);
                Duration::from_nanos(s[s.len() / 2].round() as u64)
            })
            .collect(),
    ))
}
