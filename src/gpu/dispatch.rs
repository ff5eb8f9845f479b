use std::time::{Duration, Instant};

use super::bindings::{Bindable, Bindings, KernelSig};
use super::{Gpu, GpuError, Shader};

/// One recorded kernel launch: pipeline, bind group and grid, built once and
/// replayed into as many passes as needed (nothing is rebuilt in a hot loop).
///
/// A dispatch is direct (its grid fixed at creation) or, through
/// [`Dispatch::indirect`], reads its grid at replay time from an args buffer
/// that kernels earlier in the same pass may rewrite (e.g. to zero, to skip it).
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// `Some((args, offset))`: the grid is read from `args` at `offset`
    /// (a `wgpu::util::DispatchIndirectArgs`: x, y, z as u32) at replay time.
    indirect: Option<(wgpu::Buffer, u64)>,
}

impl Dispatch {
    /// Records `entry` of the bindings' shader over `groups`, instantiated for
    /// the dtype of the tensors bound as `T` (see [`crate::gpu::bindings`]);
    /// the bind-group layout is made from the bindings' slots.
    pub fn typed<B: Bindings>(
        gpu: &Gpu,
        entry: &str,
        overrides: &[(&str, f64)],
        bindings: &B,
        groups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        Self::typed_on(gpu, B::SIG.shader, entry, overrides, bindings, groups)
    }

    /// [`Dispatch::typed`] on a variant of the bindings' shader (same name and
    /// declarations, e.g. an emulated instance); its dtype is still taken
    /// from the tensors.
    pub fn typed_on<B: Bindings>(
        gpu: &Gpu,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
        bindings: &B,
        groups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        Self::typed_sig(gpu, &B::SIG, shader, entry, overrides, &bindings.values(), groups)
    }

    /// [`Dispatch::typed_on`] with the signature given as a value: for a
    /// kernel that binds another kernel's struct (the cooperative-matrix
    /// convolution binds the SIMT one's) under a signature of its own.
    pub fn typed_sig(
        gpu: &Gpu,
        sig: &KernelSig,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
        values: &[&dyn Bindable],
        groups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        // An instance of the signature's shader: itself, a variant
        // (`conv2d_coop[emulated]`) or a specialisation (`attention_hd36_...`).
        if !shader.name.starts_with(sig.shader.name) {
            return Err(GpuError::Other(format!(
                "{entry}: bindings of {}.wgsl bound to {}.wgsl",
                sig.shader.name, shader.name
            )));
        }
        let dtype = sig.instance_dtype(entry, values)?;
        let shader = if dtype == shader.dtype {
            *shader
        } else {
            shader.typed(dtype)
        };
        let buffers: Vec<&wgpu::Buffer> = values.iter().map(|v| v.buffer()).collect();
        Self::build(gpu, &shader, entry, overrides, Some(sig), &buffers, groups)
    }

    /// Binds `buffers` to group 0, bindings 0, 1, 2, ... in order (the WGSL
    /// declares them in that order; uniforms and storage alike).
    pub fn new(
        gpu: &Gpu,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        Self::build(gpu, shader, entry, overrides, None, buffers, groups)
    }

    fn build(
        gpu: &Gpu,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
        sig: Option<&KernelSig>,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        let label = format!("{}::{}", shader.name, entry);
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max) {
            return Err(GpuError::TooManyGroups {
                what: label,
                groups: g as u64,
                limit: max,
            });
        }
        let pipeline = gpu.pipeline_for(shader, entry, overrides, sig)?;
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = gpu.scoped(&label, || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
                layout: &layout,
                entries: &entries,
            })
        })?;
        Ok(Dispatch {
            label,
            pipeline,
            bind_group,
            groups,
            indirect: None,
        })
    }

    /// The same kernel and bindings, its grid read at replay time from `args`
    /// at byte `offset` (three u32: x, y, z) instead of the fixed grid. `args`
    /// needs `INDIRECT` usage ([`Gpu::indirect_buffer`]), `offset` a multiple
    /// of 4. The caller keeps the args within [`Dispatch::groups`] (the grid
    /// this dispatch was made for, which its kernel's bounds checks assume) or
    /// zero; a kernel writing `args` must be a separate dispatch earlier in the
    /// pass (a dispatch cannot bind its own args buffer as writable storage).
    /// Nothing is rebuilt: pipeline and bind group are shared handles.
    pub fn indirect(&self, args: &wgpu::Buffer, offset: u64) -> Dispatch {
        Dispatch {
            indirect: Some((args.clone(), offset)),
            ..self.clone()
        }
    }

    /// The grid this dispatch was created with (for an indirect one, the most
    /// its args should ask for).
    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }

    /// Whether the grid is read from an args buffer at replay time.
    pub fn is_indirect(&self) -> bool {
        self.indirect.is_some()
    }

    /// A grid with no workgroups: recording it records nothing.
    pub fn is_empty(&self) -> bool {
        self.groups.contains(&0)
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.is_empty() {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        match &self.indirect {
            None => pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]),
            Some((args, offset)) => pass.dispatch_workgroups_indirect(args, *offset),
        }
    }
}

/// An ordered list of dispatches, planned once and replayed. The one way a
/// plan reaches the GPU: [`Plan::record`] into a caller's pass,
/// [`Plan::submit`] of several plans in one pass and one submission,
/// [`Plan::run`] of one, and [`Plan::run_timed`] to time replays.
#[derive(Clone, Default)]
pub struct Plan {
    pub steps: Vec<Dispatch>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }
    pub fn push(&mut self, d: Dispatch) {
        self.steps.push(d);
    }
    pub fn extend(&mut self, other: Plan) {
        self.steps.extend(other.steps);
    }
    /// `plans` one after the other in a new plan (dispatches are shared
    /// handles: nothing is rebuilt).
    pub fn concat<'a>(plans: impl IntoIterator<Item = &'a Plan>) -> Plan {
        Plan {
            steps: plans.into_iter().flat_map(|p| p.steps.iter().cloned()).collect(),
        }
    }
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Dispatch> {
        self.steps.iter()
    }
    /// Compute dispatches one execution records (those with an empty grid
    /// record nothing): what `tweedie info` and `bench` report per plan.
    pub fn dispatches(&self) -> usize {
        self.steps.iter().filter(|d| !d.is_empty()).count()
    }
    /// Records every dispatch into one compute pass (wgpu inserts the barriers
    /// between dispatches that touch the same buffers).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.steps {
            d.record(pass);
        }
    }
    /// Records `plans` in order into one compute pass.
    pub fn record_all<'a>(plans: impl IntoIterator<Item = &'a Plan>, pass: &mut wgpu::ComputePass<'_>) {
        for p in plans {
            p.record(pass);
        }
    }
    /// Records `plans` in order into one compute pass of a fresh encoder, both
    /// labelled `label`, and submits it (one submission).
    pub fn submit<'a>(gpu: &Gpu, label: &str, plans: impl IntoIterator<Item = &'a Plan>) -> Result<(), GpuError> {
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            Plan::record_all(plans, &mut pass);
        }
        gpu.submit_checked(label, enc)
    }
    /// Records into a fresh encoder and submits it (one submission).
    pub fn run(&self, gpu: &Gpu) -> Result<(), GpuError> {
        Plan::submit(gpu, "plan", [self])
    }
    /// Wall time of `iters` replays, one submission each (labelled `label`),
    /// with the wait for the GPU inside the timer; one warm-up replay first
    /// (pipelines compile lazily on some drivers).
    pub fn run_timed(&self, gpu: &Gpu, label: &str, iters: u64) -> Result<Duration, GpuError> {
        Plan::submit(gpu, label, [self])?;
        gpu.sync()?;
        let start = Instant::now();
        for _ in 0..iters {
            Plan::submit(gpu, label, [self])?;
        }
        gpu.sync()?;
        Ok(start.elapsed())
    }
}

impl<'a> IntoIterator for &'a Plan {
    type Item = &'a Dispatch;
    type IntoIter = std::slice::Iter<'a, Dispatch>;
    fn into_iter(self) -> Self::IntoIter {
        self.steps.iter()
    }
}

/// Grid for `n` threads in workgroups of `wg`: x up to 65,535 groups, the rest
/// in y. Kernels recover the linear index as `gid.x + gid.y * nwg.x * WG`.
pub fn dispatch_groups(n: usize, wg: u32) -> [u32; 3] {
    let groups = (n as u64).div_ceil(wg as u64);
    if groups <= 65_535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65_535);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::dispatch_groups;
    #[test]
    fn groups_cover_and_respect_limit() {
        for n in [0usize, 1, 255, 256, 257, 65_535 * 256, 65_535 * 256 + 1, 50_000_000] {
            let g = dispatch_groups(n, 256);
            assert!(g[0] <= 65_535 && g[1] <= 65_535);
            assert!((g[0] as u64) * (g[1] as u64) * 256 >= n as u64);
        }
    }
}
