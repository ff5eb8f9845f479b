use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::bindings::{KernelSig, Slot};
use super::shaders::Shader;
use super::DType;
use super::GpuError;

/// Key of the pipeline cache: one compiled pipeline per (shader, entry point,
/// override constants). Override values are keyed by their bit patterns.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    dtype: DType,
    entry: String,
    overrides: Vec<(String, u64)>,
    /// The explicit bind-group layout's slots (typed bindings), or None for
    /// the layout derived from the shader.
    layout: Option<Vec<Slot>>,
}

/// Shader modules by (instance name, dtype), each with its source's length.
type ModuleCache = HashMap<(&'static str, DType), (usize, wgpu::ShaderModule)>;

/// A GPU context: adapter facts, device, queue, and the caches every kernel
/// launch goes through. Cheap to share behind an `Arc`.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The cooperative-matrix configurations the adapter reports (empty
    /// without the experimental feature).
    pub cooperative_matrix: Vec<wgpu::CooperativeMatrixProperties>,
    /// One module per instance: its name (a variant's names the variant,
    /// `conv2d_coop[emulated]`) and dtype; the value keeps the length of the
    /// source it was built from, so that two sources under one name are an
    /// error rather than a silently shared module.
    modules: Mutex<ModuleCache>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Errors no scope caught (they would abort the process with wgpu's default
    /// handler); surfaced as `Err` at the next [`Gpu::sync`].
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Bytes of every storage and uniform buffer made so far ([`Gpu::allocated`]).
    storage_bytes: AtomicU64,
    uniform_bytes: AtomicU64,
}

/// Bytes of the buffers a [`Gpu`] has made (never decreases: dropping a buffer
/// does not subtract it). The difference across a planning call is what that
/// plan allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocated {
    /// Storage buffers (tensors, weights, scratch).
    pub storage: u64,
    /// Uniform parameter blocks.
    pub uniform: u64,
}

impl std::ops::Sub for Allocated {
    type Output = Allocated;
    fn sub(self, o: Allocated) -> Allocated {
        Allocated {
            storage: self.storage - o.storage,
            uniform: self.uniform - o.uniform,
        }
    }
}

/// What `tweedie info` prints about an adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    /// Whether the device multiplies 16x16x16 f16 tiles into f32 with
    /// cooperative matrices (tensor cores), and if not, why.
    pub cooperative_matrix: String,
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The default adapter's order: discrete before integrated before software,
/// Vulkan before other backends.
fn rank(i: &wgpu::AdapterInfo) -> (u32, bool) {
    (type_rank(i.device_type), i.backend != wgpu::Backend::Vulkan)
}

/// Which adapter [`Gpu::open`] takes.
enum Pick<'a> {
    /// The first by [`rank`].
    Best,
    /// The first whose name contains this (case-insensitive).
    Named(&'a str),
    /// This index of [`Gpu::list_adapters`].
    Index(usize),
}

impl Gpu {
    /// Opens the best adapter: `TWEEDIE_ADAPTER=<substring>` picks one by name
    /// (case-insensitive), otherwise discrete before integrated before software.
    pub fn new() -> Result<Gpu, GpuError> {
        let wanted = std::env::var("TWEEDIE_ADAPTER").ok().filter(|s| !s.is_empty());
        pollster::block_on(Self::open(match &wanted {
            Some(w) => Pick::Named(w),
            None => Pick::Best,
        }))
    }

    /// Opens adapter `index` of [`Gpu::list_adapters`] (the numbers `tweedie
    /// info` prints), whatever `TWEEDIE_ADAPTER` says: `--devices` names
    /// adapters by these indices.
    pub fn with_adapter(index: usize) -> Result<Gpu, GpuError> {
        pollster::block_on(Self::open(Pick::Index(index)))
    }

    /// Lists the adapters wgpu can see (name, backend, type), in the order
    /// [`Gpu::with_adapter`] indexes them.
    pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
        let instance = instance();
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| a.get_info())
            .collect()
    }

    /// The indices of [`Gpu::list_adapters`] that `--devices all` runs on:
    /// every adapter of the backend and class (GPU, or CPU where there is no
    /// GPU) that [`Gpu::new`] opens by default. One backend, so that a GPU
    /// seen through both Vulkan and GL is not taken twice; a software
    /// adapter only where there is nothing else, so that lavapipe does not
    /// slow a GPU run down.
    pub fn default_adapters(adapters: &[wgpu::AdapterInfo]) -> Vec<usize> {
        let cpu = |a: &wgpu::AdapterInfo| a.device_type == wgpu::DeviceType::Cpu;
        let Some(best) = adapters.iter().min_by_key(|a| rank(a)) else {
            return Vec::new();
        };
        (0..adapters.len())
            .filter(|&i| adapters[i].backend == best.backend && cpu(&adapters[i]) == cpu(best))
            .collect()
    }

    async fn open(pick: Pick<'_>) -> Result<Gpu, GpuError> {
        let instance = instance();
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if adapters.is_empty() {
            // request_adapter carries the loader's own reason (e.g. no Vulkan library).
            let why = match instance.request_adapter(&wgpu::RequestAdapterOptions::default()).await {
                Err(e) => e.to_string(),
                Ok(_) => "no adapters enumerated".to_string(),
            };
            return Err(GpuError::NoAdapter(why));
        }
        let adapter = match pick {
            Pick::Index(i) if i < adapters.len() => adapters.swap_remove(i),
            Pick::Index(index) => {
                return Err(GpuError::AdapterIndex {
                    index,
                    count: adapters.len(),
                })
            }
            Pick::Named(w) => {
                let lw = w.to_lowercase();
                let pos = adapters
                    .iter()
                    .position(|a| a.get_info().name.to_lowercase().contains(&lw));
                match pos {
                    Some(p) => adapters.swap_remove(p),
                    None => {
                        let available = adapters
                            .iter()
                            .map(|a| format!("{:?}", a.get_info().name))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(GpuError::AdapterNotFound {
                            wanted: w.to_string(),
                            available,
                        });
                    }
                }
            }
            Pick::Best => {
                adapters.sort_by_key(|a| rank(&a.get_info()));
                adapters.swap_remove(0)
            }
        };
        let info = adapter.get_info();
        let optional = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let features = adapter.features() & optional;
        // Cooperative matrices (wgpu experimental) unless TWEEDIE_COOPERATIVE_MATRIX=off.
        let coop_off = std::env::var("TWEEDIE_COOPERATIVE_MATRIX").is_ok_and(|v| v == "off" || v == "0");
        let mut cooperative_matrix = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) && !coop_off
        {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        // The adapter's real limits, not wgpu's conservative defaults (NVIDIA
        // offers 48 KiB of workgroup memory where the default is 16 KiB).
        let limits = adapter.limits();
        let request = |coop: bool| {
            let mut f = features;
            if !coop {
                f.remove(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
            }
            adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("tweedie"),
                required_features: f,
                required_limits: limits.clone(),
                // Experimental features are enabled only for cooperative
                // matrices, which need them; the kernels that use them are
                // chosen per adapter and tested where they run.
                experimental_features: if coop {
                    // SAFETY: only the cooperative-matrix feature is requested
                    // through this token; its shaders are validated by naga.
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
        };
        let (device, queue) = match request(!cooperative_matrix.is_empty()).await {
            Ok(dq) => dq,
            // An experimental feature must never cost the device: without it.
            Err(_) if !cooperative_matrix.is_empty() => {
                cooperative_matrix.clear();
                request(false)
                    .await
                    .map_err(|e| GpuError::RequestDevice(e.to_string()))?
            }
            Err(e) => return Err(GpuError::RequestDevice(e.to_string())),
        };
        let mut gpu = Self::from_device(device, queue, Some(info));
        // Our own device: errors no scope caught are collected and reported
        // by the next `sync` or read-back.
        let sink = gpu.uncaptured.clone();
        gpu.device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        gpu.cooperative_matrix = cooperative_matrix;
        Ok(gpu)
    }

    /// Builds a context on a device the caller already owns (a graphics
    /// application embedding the engine). Limits and features are read from the
    /// device; nothing is requested. The device's uncaptured-error handler
    /// stays the application's: the handler is device-wide, so installing
    /// ours would silence the application's own errors (and report them as
    /// ours). Our work is checked by error scopes instead (`scoped`,
    /// `submit_checked`).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: Option<wgpu::AdapterInfo>) -> Gpu {
        let uncaptured: Arc<Mutex<Vec<String>>> = Arc::default();
        let info = info.unwrap_or_else(|| wgpu::AdapterInfo {
            name: "caller-provided device".into(),
            vendor: 0,
            device: 0,
            device_type: wgpu::DeviceType::Other,
            driver: String::new(),
            driver_info: String::new(),
            backend: wgpu::Backend::Noop,
            device_pci_bus_id: String::new(),
            subgroup_min_size: 0,
            subgroup_max_size: 0,
            transient_saves_memory: None,
            limit_bucket: None,
        });
        Gpu {
            limits: device.limits(),
            features: device.features(),
            cooperative_matrix: Vec::new(),
            device,
            queue,
            info,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            uncaptured,
            storage_bytes: AtomicU64::new(0),
            uniform_bytes: AtomicU64::new(0),
        }
    }

    pub fn report(&self) -> AdapterReport {
        AdapterReport {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver: self.info.driver.clone(),
            driver_info: self.info.driver_info.clone(),
            max_storage_buffer_binding_size: self.limits.max_storage_buffer_binding_size,
            max_buffer_size: self.limits.max_buffer_size,
            max_compute_workgroup_storage_size: self.limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: self.limits.max_compute_invocations_per_workgroup,
            shader_f16: self.features.contains(wgpu::Features::SHADER_F16),
            subgroups: self.features.contains(wgpu::Features::SUBGROUP),
            timestamp_query: self.features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: match self.f16_cooperative_matrix_missing() {
                None => "yes".into(),
                Some(why) => format!("no: {why}"),
            },
        }
    }

    /// One-line description: "name (backend, type)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The compiled pipeline for (shader, entry, overrides), built on first use.
    pub fn pipeline(
        &self,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        self.pipeline_for(shader, entry, overrides, None)
    }

    /// [`Gpu::pipeline`] with the bind-group layout made from `sig`'s slots
    /// (typed bindings) instead of derived from the shader.
    pub fn pipeline_for(
        &self,
        shader: &Shader,
        entry: &str,
        overrides: &[(&str, f64)],
        sig: Option<&KernelSig>,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = PipelineKey {
            shader: shader.name,
            dtype: shader.dtype,
            entry: entry.to_string(),
            overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect(),
            layout: sig.map(|s| s.slots.to_vec()),
        };
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(shader)?;
        let context = match shader.dtype {
            DType::F32 => format!("pipeline {}::{}", shader.name, entry),
            d => format!("pipeline {}<{}>::{}", shader.name, d.wgsl(), entry),
        };
        let pipeline = self.scoped(&context, || {
            let layout = sig.map(|sig| {
                let group = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&context),
                    entries: &sig.layout_entries(),
                });
                self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(&context),
                    bind_group_layouts: &[Some(&group)],
                    immediate_size: 0,
                })
            });
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&context),
                layout: layout.as_ref(),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: overrides,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            })
        })?;
        // Another thread may have built the same pipeline meanwhile: the
        // first one cached is the one every caller gets.
        Ok(self.pipelines.lock().unwrap().entry(key).or_insert(pipeline).clone())
    }

    fn module(&self, shader: &Shader) -> Result<wgpu::ShaderModule, GpuError> {
        let key = (shader.name, shader.dtype);
        if let Some((len, m)) = self.modules.lock().unwrap().get(&key) {
            if *len != shader.source.len() {
                return Err(GpuError::Other(format!(
                    "two different WGSL sources are both named {}",
                    shader.name
                )));
            }
            return Ok(m.clone());
        }
        if shader.dtype == DType::F16 && !self.features.contains(wgpu::Features::SHADER_F16) {
            return Err(GpuError::Other(format!(
                "{}.wgsl for f16 needs the shader-f16 feature, which {} lacks",
                shader.name, self.info.name
            )));
        }
        let module = self.scoped(&format!("shader {}.wgsl ({:?})", shader.name, shader.dtype), || {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(shader.wgsl()),
            })
        })?;
        let len = shader.source.len();
        Ok(self
            .modules
            .lock()
            .unwrap()
            .entry(key)
            .or_insert((len, module))
            .1
            .clone())
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a
    /// captured error into `Err`.
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(GpuError::from_wgpu(context, e));
        }
        Ok(out)
    }

    /// Refuses a buffer the adapter cannot bind, with a message that names it.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<(), GpuError> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(GpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
                adapter: self.info.name.clone(),
            });
        }
        Ok(())
    }

    /// Refuses `dtype` storage where the adapter cannot run it (f16 needs
    /// `shader-f16`), in one line naming the adapter.
    pub fn require_dtype(&self, dtype: DType) -> Result<(), GpuError> {
        if dtype == DType::F16 && !self.features.contains(wgpu::Features::SHADER_F16) {
            return Err(GpuError::Other(format!(
                "precision f16 needs the adapter's shader-f16 feature, which {} does not have (use --precision f32)",
                self.info.name
            )));
        }
        Ok(())
    }

    /// Bytes of the buffers made so far through [`Gpu::storage_buffer`],
    /// [`Gpu::upload`] and [`Gpu::uniform`].
    pub fn allocated(&self) -> Allocated {
        Allocated {
            storage: self.storage_bytes.load(Ordering::Relaxed),
            uniform: self.uniform_bytes.load(Ordering::Relaxed),
        }
    }

    /// A storage buffer of `bytes` (rounded up to 4), usable as copy source and
    /// destination. Zero-initialised by wgpu.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
        self.counted_storage(label, bytes.max(4), wgpu::BufferUsages::empty())
    }

    /// A storage buffer of `bytes` (rounded up to 4) that can also hold
    /// indirect-dispatch args ([`crate::gpu::Dispatch::indirect`]): kernels
    /// write it as storage, later dispatches read their grid from it.
    /// Zero-initialised by wgpu.
    pub fn indirect_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
        self.counted_storage(label, bytes.max(12), wgpu::BufferUsages::INDIRECT)
    }

    /// A copyable storage buffer of `bytes` rounded up to 4, with `extra`
    /// usages, checked against the binding limit and counted in [`Gpu::allocated`].
    fn counted_storage(&self, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> Result<wgpu::Buffer, GpuError> {
        let bytes = bytes.div_ceil(4) * 4;
        self.check_binding_size(label, bytes)?;
        self.storage_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.scoped(label, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST
                    | extra,
                mapped_at_creation: false,
            })
        })
    }

    /// A storage buffer holding `data` (zero-padded to whole 4-byte words, so
    /// an odd number of f16 values uploads too).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer, GpuError> {
        let buf = self.storage_buffer(label, std::mem::size_of_val(data) as u64)?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() % 4 == 0 {
            if !bytes.is_empty() {
                self.queue.write_buffer(&buf, 0, bytes);
            }
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(&buf, 0, &padded);
        }
        Ok(buf)
    }

    /// A uniform buffer holding one `#[repr(C)]` parameter struct.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        let size = (bytes.len() as u64).max(16).div_ceil(16) * 16;
        self.uniform_bytes.fetch_add(size, Ordering::Relaxed);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// Copies `len` elements of type T starting at element `offset` back to the
    /// host. A sync point: waits for all submitted work.
    pub fn read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<T>, GpuError> {
        let elem = std::mem::size_of::<T>() as u64;
        let bytes = len as u64 * elem;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        enc.copy_buffer_to_buffer(buf, offset as u64 * elem, &staging, 0, bytes.div_ceil(4) * 4);
        self.submit_checked("readback copy", enc)?;
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize]);
        drop(view);
        staging.unmap();
        self.take_uncaptured()?;
        Ok(out)
    }

    /// Copies the first `bytes` of `src` into `dst` (one `copy_buffer_to_buffer`,
    /// submitted; no wait). Both need COPY_SRC / COPY_DST usage.
    pub fn copy_buffer(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) -> Result<(), GpuError> {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy") });
        enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
        self.submit_checked("copy", enc)
    }

    /// Submits an encoder inside error scopes.
    pub fn submit_checked(&self, context: &str, enc: wgpu::CommandEncoder) -> Result<(), GpuError> {
        self.scoped(context, || {
            self.queue.submit(Some(enc.finish()));
        })
    }

    /// Waits for all submitted work and reports any error no scope caught.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Other(e.to_string()))?;
        self.take_uncaptured()
    }

    fn take_uncaptured(&self) -> Result<(), GpuError> {
        let mut v = self.uncaptured.lock().unwrap();
        if let Some(first) = v.first().cloned() {
            v.clear();
            return Err(GpuError::Other(first.lines().next().unwrap_or("").to_string()));
        }
        Ok(())
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // wgpu validates indirect-dispatch args by default with one extra
    // dispatch (plus barriers) before every indirect one, which doubles the
    // cost of CG's gated iterations on lavapipe. The args tweedie writes are
    // always a grid `Dispatch::new` checked against the limits, or zero
    // (`Dispatch::indirect`), so the check is dropped, except on Windows:
    // without it D3D12 reports `num_workgroups` as 0 in indirect dispatches,
    // and the kernels use it. `WGPU_VALIDATION_INDIRECT_CALL=1` turns it back on.
    if !cfg!(windows) {
        desc.flags.remove(wgpu::InstanceFlags::VALIDATION_INDIRECT_CALL);
    }
    let mut desc = desc.with_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    }
    wgpu::Instance::new(desc)
}
