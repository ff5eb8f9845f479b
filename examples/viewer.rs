//! A live restoration in a window, on the application's own wgpu device and
//! surface: every frame advances the restoration a few sampler steps on the
//! same queue ([`tweedie::restore::Stepper`]), draws the measurement, the
//! current estimate of x0 (the mean over the samples) and the per-pixel
//! standard deviation over the samples side by side with
//! [`tweedie::restore::TextureWriter`], and presents. The title shows the
//! method, the task and the step.
//!
//! Keys: T next task, M next method, R restart with a new seed, Esc or Q quits.
//!
//! ```text
//! cargo run --release --example viewer -- [--input PNG] [--task sr] [--method dmps]
//!     [--steps 50] [--model DIR] [--screenshot frame.png]
//! ```
//! `--screenshot` saves the frame presented once the restoration has finished,
//! then exits (headless: `xvfb-run -a -s "-screen 0 1024x768x24" ...`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use winit::application::ApplicationHandler;
use winit::event::{ElementState, WindowEvent};
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

use tweedie::operators::task::{build, Task, TaskSpec};
use tweedie::operators::Operator;
use tweedie::restore::{measure_on_gpu, Panel, Restore, State, Stepper, TextureWriter, SIGNED};
use tweedie::samplers::{Method, MethodOptions, SamplerOptions, UnetScore};
use tweedie::tensor::DType;
use tweedie::unet::Unet;
use tweedie::{Gpu, Tensor};

#[derive(Parser, Debug)]
#[command(about = "A live restoration in a window (tweedie's embedding example)")]
struct Args {
    /// Clean image to measure and restore (default: the first built-in test image).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Measurement task (T cycles through the others).
    #[arg(long, default_value = "sr")]
    task: String,
    /// Posterior method (M cycles through the others).
    #[arg(long, default_value = "dmps")]
    method: String,
    /// Reverse steps per restoration.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Model directory or PyTorch checkpoint, as `tweedie restore --model` (default: the built-in prior).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Measurement noise sigma_y.
    #[arg(long, default_value_t = 0.05)]
    sigma: f32,
    /// Posterior samples (the standard deviation is over them).
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Sampler steps recorded per frame.
    #[arg(long, default_value_t = 2)]
    per_frame: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the frame presented when the restoration finishes to this PNG and exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

/// Texels per model pixel in each panel, and between panels.
const SCALE: u32 = 6;
const GAP: u32 = 8;
/// The standard deviation drawn white.
const STD_WHITE: f32 = 0.5;

fn main() {
    if let Err(e) = run() {
        eprintln!("viewer: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let task = task_by_name(&args.task)?;
    let method = Method::from_name(&args.method)
        .filter(|m| m.takes_measurement())
        .with_context(|| {
            format!(
                "--method {}: not a posterior method ({})",
                args.method,
                posterior_names()
            )
        })?;
    if args.steps == 0 || args.samples == 0 || args.per_frame == 0 {
        bail!("--steps, --samples and --per-frame must be at least 1");
    }
    let event_loop = EventLoop::new().context("opening a window needs a display (X11; try xvfb-run -a)")?;
    event_loop.set_control_flow(ControlFlow::Poll);
    let mut app = App {
        args,
        task,
        method,
        seed_bump: 0,
        gfx: None,
        error: None,
    };
    event_loop.run_app(&mut app)?;
    match app.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn task_by_name(name: &str) -> anyhow::Result<Task> {
    Task::ALL.into_iter().find(|t| t.name() == name).with_context(|| {
        let names: Vec<_> = Task::ALL.iter().map(|t| t.name()).collect();
        format!("--task {name}: not a task ({})", names.join(", "))
    })
}

fn posterior_names() -> String {
    let names: Vec<_> = Method::all()
        .iter()
        .filter(|m| m.takes_measurement())
        .map(|m| m.name())
        .collect();
    names.join(", ")
}

struct App {
    args: Args,
    task: Task,
    method: Method,
    /// Added to the seed by each restart (R).
    seed_bump: u64,
    gfx: Option<Gfx>,
    error: Option<anyhow::Error>,
}

/// The application's graphics: window, surface, its device (shared with the
/// engine), the panels' texture and the pipeline that shows it.
struct Gfx {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    gpu: Gpu,
    panels: wgpu::Texture,
    blit: wgpu::RenderPipeline,
    blit_group: wgpu::BindGroup,
    prior: Prior,
    live: Option<Live>,
}

/// The model and the clean image, on the application's device.
struct Prior {
    score: UnetScore,
    channels: usize,
    size: usize,
    /// [1, C, H, W] on [-1, 1].
    clean: Tensor,
}

impl Prior {
    /// `--model` (default: the built-in prior) and `--input` (default: the
    /// first built-in test image), which must match the model's shape.
    fn load(gpu: &Gpu, args: &Args) -> anyhow::Result<Prior> {
        let unet = match &args.model {
            Some(path) => Unet::load_with_config(gpu, path, None, DType::F32)
                .with_context(|| format!("loading model {}", path.display()))?,
            None => Unet::load_embedded(gpu)?,
        };
        let (channels, size) = (unet.config.in_channels(), unet.config.image_size());
        let clean = match &args.input {
            Some(p) => tweedie::io::read_image(p)?,
            None => {
                let (name, png) = tweedie::embedded::TEST_IMAGES
                    .first()
                    .context("no built-in test image")?;
                tweedie::io::read_image_bytes(name, png)?
            }
        };
        if clean.shape[1..] != [channels, size, size] {
            bail!(
                "the input is {:?} (C, H, W) but the model takes [{channels}, {size}, {size}]",
                &clean.shape[1..]
            );
        }
        Ok(Prior {
            score: UnetScore::new(Arc::new(unet), size, size),
            channels,
            size,
            clean: Tensor::from_host(gpu, "clean image", &clean)?,
        })
    }
}

/// One restoration on screen: its operator, measurement, stepper and the draws.
struct Live {
    label: String,
    stepper: Stepper,
    draws: Vec<TextureWriter>,
    /// The state the last frame showed.
    shown: State,
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.gfx.is_some() {
            return;
        }
        match Gfx::new(event_loop, &self.args).and_then(|mut g| {
            g.restart(self)?;
            Ok(g)
        }) {
            Ok(g) => {
                g.window.request_redraw();
                self.gfx = Some(g);
            }
            Err(e) => self.fail(event_loop, e),
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(size) => {
                if let Some(g) = &mut self.gfx {
                    g.resize(size.width, size.height);
                }
            }
            WindowEvent::KeyboardInput { event, .. } if event.state == ElementState::Pressed => {
                let r = match event.logical_key.as_ref() {
                    Key::Named(NamedKey::Escape) | Key::Character("q") => {
                        event_loop.exit();
                        Ok(())
                    }
                    Key::Character("t") => self.switch(|app| app.task = next(&Task::ALL, app.task)),
                    Key::Character("m") => self.switch(|app| {
                        let posterior: Vec<Method> = Method::all()
                            .iter()
                            .copied()
                            .filter(|m| m.takes_measurement())
                            .collect();
                        app.method = next(&posterior, app.method);
                    }),
                    Key::Character("r") => self.switch(|app| app.seed_bump += 1),
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    self.fail(event_loop, e);
                }
            }
            WindowEvent::RedrawRequested => {
                let Some(mut g) = self.gfx.take() else { return };
                match g.frame(self) {
                    Ok(Some(path)) => {
                        println!("saved {}", path.display());
                        event_loop.exit();
                    }
                    Ok(None) => g.window.request_redraw(),
                    Err(e) => self.fail(event_loop, e),
                }
                self.gfx = Some(g);
            }
            _ => {}
        }
    }
}

/// The element after `cur` in `all`, wrapping around.
fn next<T: Copy + PartialEq>(all: &[T], cur: T) -> T {
    let i = all.iter().position(|&x| x == cur).unwrap_or(0);
    all[(i + 1) % all.len()]
}

impl App {
    fn fail(&mut self, event_loop: &ActiveEventLoop, e: anyhow::Error) {
        self.error = Some(e);
        event_loop.exit();
    }

    /// Changes the task, method or seed, then restarts; a task or method the
    /// model or operator cannot run is skipped (said on stderr).
    fn switch(&mut self, change: impl Fn(&mut App)) -> anyhow::Result<()> {
        let Some(mut g) = self.gfx.take() else { return Ok(()) };
        let mut result = Ok(());
        for _ in 0..Task::ALL.len() * Method::all().len() {
            change(self);
            match g.restart(self) {
                Ok(()) => {
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    eprintln!("viewer: skipping {} on {}: {e:#}", self.method.name(), self.task.name());
                    result = Err(e);
                }
            }
        }
        g.window.request_redraw();
        self.gfx = Some(g);
        result
    }
}

const BLIT_WGSL: &str = r#"
@group(0) @binding(0) var panels: texture_2d<f32>;
@group(0) @binding(1) var<uniform> target_size: vec4<f32>;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let xy = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(xy * 2.0 - 1.0, 0.0, 1.0);
}

// Nearest texel of the panels, stretched over the whole surface.
@fragment
fn fs(@builtin(position) p: vec4<f32>) -> @location(0) vec4<f32> {
    let size = vec2<f32>(textureDimensions(panels));
    let t = min(vec2<u32>(p.xy / target_size.xy * size), vec2<u32>(size) - 1u);
    return vec4<f32>(textureLoad(panels, t, 0).rgb, 1.0);
}
"#;

impl Gfx {
    fn new(event_loop: &ActiveEventLoop, args: &Args) -> anyhow::Result<Gfx> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        // The panels' size comes from the model, so the device (and the prior) come first.
        let side = 32 * SCALE;
        let attrs = Window::default_attributes()
            .with_title("tweedie viewer")
            .with_inner_size(winit::dpi::PhysicalSize::new(3 * side + 2 * GAP, side))
            .with_resizable(true);
        let window = Arc::new(event_loop.create_window(attrs)?);
        let surface = instance.create_surface(window.clone())?;
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            compatible_surface: Some(&surface),
            ..Default::default()
        }))
        .context("no adapter can present to this window")?;
        // The application's device: default features and limits (tweedie's
        // f32 models need nothing more).
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
        let gpu = Gpu::from_device(device.clone(), queue, Some(adapter.get_info()));
        let prior = Prior::load(&gpu, args)?;
        let side = prior.size as u32 * SCALE;
        let (pw, ph) = (3 * side + 2 * GAP, side);
        let _ = window.request_inner_size(winit::dpi::PhysicalSize::new(pw, ph));
        let caps = surface.get_capabilities(&adapter);
        let format = caps
            .formats
            .iter()
            .copied()
            .find(|f| !f.is_srgb())
            .or(caps.formats.first().copied())
            .context("the surface offers no format")?;
        let size = window.inner_size();
        let config = wgpu::SurfaceConfiguration {
            // COPY_SRC where offered: --screenshot reads the presented frame.
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | (caps.usages & wgpu::TextureUsages::COPY_SRC),
            format,
            color_space: wgpu::SurfaceColorSpace::Auto,
            width: size.width.max(1),
            height: size.height.max(1),
            present_mode: wgpu::PresentMode::AutoVsync,
            desired_maximum_frame_latency: 2,
            alpha_mode: caps.alpha_modes[0],
            view_formats: vec![],
        };
        surface.configure(&device, &config);
        let panels = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("panels"),
            size: wgpu::Extent3d {
                width: pw,
                height: ph,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::STORAGE_BINDING
                | wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::RENDER_ATTACHMENT
                | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let (blit, blit_group) = blit_pipeline(&device, &gpu.queue, &panels, format, &config);
        Ok(Gfx {
            window,
            surface,
            config,
            gpu,
            panels,
            blit,
            blit_group,
            prior,
            live: None,
        })
    }

    fn resize(&mut self, width: u32, height: u32) {
        if width == 0 || height == 0 {
            return;
        }
        self.config.width = width;
        self.config.height = height;
        self.surface.configure(&self.gpu.device, &self.config);
        let (blit, group) = blit_pipeline(
            &self.gpu.device,
            &self.gpu.queue,
            &self.panels,
            self.config.format,
            &self.config,
        );
        self.blit = blit;
        self.blit_group = group;
    }

    /// Measures the clean image through the task's operator on the GPU, plans
    /// the stepper and its three draws, starts it.
    fn restart(&mut self, app: &App) -> anyhow::Result<()> {
        let gpu = &self.gpu;
        let seed = app.args.seed + app.seed_bump;
        let spec = TaskSpec::new(app.task);
        let shape = [self.prior.channels, self.prior.size, self.prior.size];
        let op: Box<dyn Operator> = build(gpu, &spec, shape, seed)?;
        let y = measure_on_gpu(gpu, op.as_ref(), &self.prior.clean, app.args.sigma, seed)?;
        let zeta = if app.task.is_inpainting() { "0.5" } else { "0.3" };
        let opts = SamplerOptions {
            steps: app.args.steps,
            seed,
            method: match app.method.takes("zeta") {
                true => MethodOptions::default().with("zeta", zeta)?,
                false => MethodOptions::default(),
            },
            ..SamplerOptions::default()
        };
        let job = Restore::new(&self.prior.score, app.method, &opts).measured(op.as_ref(), app.args.sigma);
        let mut stepper = job.stepwise(gpu, 1, app.args.samples)?;
        stepper.start(gpu, &y)?;
        let side = self.prior.size as u32 * SCALE;
        let [_, yh, yw] = op.out_shape();
        let y_scale = (side / yh.max(yw) as u32).max(1);
        let centre = |n: usize| (side.saturating_sub(n as u32 * y_scale)) / 2;
        let panel = |x: u32, range: [f32; 2]| Panel {
            row: 0,
            origin: [x, 0],
            scale: SCALE,
            range,
        };
        let draws = vec![
            TextureWriter::new(
                gpu,
                &y,
                &self.panels,
                Panel {
                    row: 0,
                    origin: [centre(yw), centre(yh)],
                    scale: y_scale,
                    range: SIGNED,
                },
            )?,
            TextureWriter::new(gpu, stepper.mean(), &self.panels, panel(side + GAP, SIGNED))?,
            TextureWriter::new(
                gpu,
                stepper.std(),
                &self.panels,
                panel(2 * (side + GAP), [0.0, STD_WHITE]),
            )?,
        ];
        self.live = Some(Live {
            label: format!(
                "{} on {} ({} samples)",
                app.method.name(),
                app.task.name(),
                app.args.samples
            ),
            stepper,
            draws,
            shown: State::Idle,
        });
        // The measurement panel's margins (another task's y was larger) start black.
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let view = self.panels.create_view(&Default::default());
        drop(enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("clear panels"),
            color_attachments: &[Some(attachment(&view))],
            ..Default::default()
        }));
        gpu.submit_checked("clear panels", enc)?;
        Ok(())
    }

    /// One frame: a few steps, the three draws, the blit, present. Returns
    /// the screenshot's path once it is saved.
    fn frame(&mut self, app: &App) -> anyhow::Result<Option<PathBuf>> {
        let gpu = &self.gpu;
        let live = self.live.as_mut().context("no restoration planned")?;
        let finished_before = live.shown == State::Done;
        let progress = live.stepper.step(gpu, app.args.per_frame)?;
        live.shown = live.stepper.poll(gpu)?;
        self.window.set_title(&format!(
            "tweedie viewer: {}: step {}/{}{}",
            live.label,
            progress.done,
            progress.total,
            match live.shown {
                State::Done => ", done",
                State::Checking => ", checking",
                _ => "",
            }
        ));
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f) | wgpu::CurrentSurfaceTexture::Suboptimal(f) => f,
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&gpu.device, &self.config);
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        TextureWriter::record(&live.draws.iter().collect::<Vec<_>>(), &mut enc);
        let view = frame.texture.create_view(&Default::default());
        {
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("blit panels"),
                color_attachments: &[Some(attachment(&view))],
                ..Default::default()
            });
            pass.set_pipeline(&self.blit);
            pass.set_bind_group(0, &self.blit_group, &[]);
            pass.draw(0..3, 0..1);
        }
        // The frame that first shows the finished restoration is the screenshot.
        let shot = match &app.args.screenshot {
            Some(path) if live.shown == State::Done && !finished_before => {
                let source = if self.config.usage.contains(wgpu::TextureUsages::COPY_SRC) {
                    &frame.texture
                } else {
                    &self.panels
                };
                Some((path.clone(), Readback::record(&gpu.device, &mut enc, source)))
            }
            _ => None,
        };
        gpu.queue.submit(Some(enc.finish()));
        gpu.queue.present(frame);
        match shot {
            Some((path, rb)) => {
                rb.save(&gpu.device, &path)?;
                Ok(Some(path))
            }
            None => Ok(None),
        }
    }
}

/// `view` cleared to black, then stored.
fn attachment(view: &wgpu::TextureView) -> wgpu::RenderPassColorAttachment<'_> {
    wgpu::RenderPassColorAttachment {
        view,
        depth_slice: None,
        resolve_target: None,
        ops: wgpu::Operations {
            load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
            store: wgpu::StoreOp::Store,
        },
    }
}

fn blit_pipeline(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    panels: &wgpu::Texture,
    format: wgpu::TextureFormat,
    config: &wgpu::SurfaceConfiguration,
) -> (wgpu::RenderPipeline, wgpu::BindGroup) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("blit"),
        source: wgpu::ShaderSource::Wgsl(BLIT_WGSL.into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("blit"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(format.into())],
        }),
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        multiview_mask: None,
        cache: None,
    });
    let size = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("blit target size"),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(
        &size,
        0,
        bytemuck::cast_slice(&[config.width as f32, config.height as f32, 0.0, 0.0]),
    );
    let view = panels.create_view(&Default::default());
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("blit"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&view),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: size.as_entire_binding(),
            },
        ],
    });
    (pipeline, group)
}

/// A texture's copy into a mappable buffer, rows padded to 256 bytes.
struct Readback {
    buffer: wgpu::Buffer,
    width: u32,
    height: u32,
    padded_row: u32,
    bgra: bool,
}

impl Readback {
    fn record(device: &wgpu::Device, enc: &mut wgpu::CommandEncoder, texture: &wgpu::Texture) -> Readback {
        let (width, height) = (texture.width(), texture.height());
        let padded_row = (width * 4).div_ceil(256) * 256;
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("screenshot"),
            size: (padded_row * height) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_texture_to_buffer(
            texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded_row),
                    rows_per_image: None,
                },
            },
            texture.size(),
        );
        let bgra = matches!(
            texture.format(),
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        Readback {
            buffer,
            width,
            height,
            padded_row,
            bgra,
        }
    }

    /// Waits for the copy and writes an RGB PNG.
    fn save(&self, device: &wgpu::Device, path: &std::path::Path) -> anyhow::Result<()> {
        let slice = self.buffer.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device.poll(wgpu::PollType::wait_indefinitely())?;
        rx.recv()??;
        let data = slice.get_mapped_range()?;
        let mut rgb = Vec::with_capacity((self.width * self.height * 3) as usize);
        for row in data.chunks(self.padded_row as usize) {
            for px in row[..(self.width * 4) as usize].chunks(4) {
                let (r, b) = if self.bgra { (px[2], px[0]) } else { (px[0], px[2]) };
                rgb.extend_from_slice(&[r, px[1], b]);
            }
        }
        image::save_buffer(path, &rgb, self.width, self.height, image::ColorType::Rgb8)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}
