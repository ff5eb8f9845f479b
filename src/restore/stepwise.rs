//! A restoration planned once and driven a few steps at a time: the shape an
//! application's render loop needs (see [`Stepper`]).

use std::sync::mpsc;

use crate::gpu::Plan;
use crate::kernels::embed::{finite_check, sample_stats};
use crate::samplers::kernels::X0AndMask;
use crate::samplers::{Sampler, SamplerError};
use crate::tensor::Tensor;
use crate::Gpu;

use super::{check_caller_tensor, diverged, EXPLODED};

/// Steps done and steps in all of a [`Stepper`]'s current run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

impl Progress {
    pub fn finished(&self) -> bool {
        self.done == self.total
    }
}

/// Where a [`Stepper`]'s run stands ([`Stepper::poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// [`Stepper::start`] has not been called yet.
    Idle,
    /// Steps are left to record.
    Running(Progress),
    /// Every step is recorded; the finite check has not come back from the GPU.
    Checking,
    /// The run is over and its samples are finite and within range.
    Done,
}

/// A restoration of `images` measurements, `samples` posterior samples each,
/// planned once by [`super::Restore::stepwise`]: every buffer, bind group and
/// dispatch exists before the first step, so [`Stepper::start`] with a new
/// measurement re-runs it with no new allocation.
///
/// [`Stepper::step`] records at most `k` reverse steps on the queue (one
/// submission each, no read-back) and then the read-outs: [`Stepper::x0`],
/// Tweedie's estimate of x0 from x_t and the model's output at the last
/// step taken (clipped to [-1, 1] when the options clip), and
/// [`Stepper::mean`] and [`Stepper::std`], its per-pixel mean and standard
/// deviation over each image's samples (0 everywhere with one sample). After
/// the last step x0 holds the samples themselves, and one small check (per
/// sample: non-finite values, largest magnitude) is copied to a mappable
/// buffer; [`Stepper::poll`] reports it when the GPU has answered, without
/// waiting, [`Stepper::wait`] waits for it.
///
/// Image j's samples are rows `j * samples ..` of x_t and x0 ([N * K, C, H,
/// W]); mean and std are [N, C, H, W]. All are planar f32 on the scale of
/// [-1, 1]; [`super::TextureWriter`] shows any of them in a texture.
pub struct Stepper {
    sampler: Sampler,
    images: usize,
    samples: usize,
    /// The measurement's shape per image (the operator's output).
    meas_shape: [usize; 3],
    /// y repeated per sample [N * K, m], when K > 1 (loaded into the sampler).
    y_rows: Option<Tensor>,
    /// The per-step read-outs; None on the host entry points' runs, which
    /// read only the samples.
    live: Option<ReadOuts>,
    /// What a diverged run's message calls its rows.
    names: Rows,
    /// A sample's largest magnitude past this fails the run: [`EXPLODED`]
    /// for the application's runs; the host entry points refuse only
    /// non-finite samples (an eval scores a wild sample rather than lose
    /// the run to it).
    limit: f32,
    /// The finite check of the samples into `verdict`.
    check: Plan,
    verdict: Tensor,
    /// `verdict`'s copy the host maps.
    staging: wgpu::Buffer,
    /// The map of `staging` in flight, once the last step is recorded.
    pending: Option<mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>>,
    /// Reverse steps left (the next is step `left - 1`); None before `start`.
    left: Option<usize>,
    /// The checked outcome of the run, once known.
    outcome: Option<Result<(), String>>,
}

/// The x0 estimate, mean and std an application reads between steps.
struct ReadOuts {
    /// x_t before the last step of a [`Stepper::step`] call (the x0 estimate's input).
    x_prev: Tensor,
    /// The x0 estimate over every row the method runs (SMC runs whole populations).
    x0_all: Tensor,
    /// Its first N * K rows.
    x0: Tensor,
    mean: Tensor,
    std: Tensor,
    /// x0 from (x_prev, eps) with the last step's scalars, then mean and std.
    estimate: Plan,
    /// mean and std alone (after the last step, x0 is copied from x).
    stats: Plan,
}

/// How a diverged run names row r: "image r" (or "image j (sample k)"), or,
/// for one image's samples drawn in batches, "sample first + r".
#[derive(Clone, Copy, Debug)]
pub(super) enum Rows {
    Images,
    Samples { first: usize },
}

impl ReadOuts {
    fn new(gpu: &Gpu, sampler: &Sampler, images: usize, samples: usize) -> Result<ReadOuts, SamplerError> {
        let core = &sampler.core;
        let full = core.x.shape.clone();
        let image = &full[1..];
        let x_prev = Tensor::zeros(gpu, "stepwise x_t before the step", &full)?;
        let x0_all = Tensor::zeros(gpu, "stepwise x0 estimate", &full)?;
        let mask = Tensor::zeros(gpu, "stepwise x0 clip mask", &full)?;
        let x0 = Tensor::wrap(x0_all.buffer.clone(), &[&[images * samples][..], image].concat());
        let mean = Tensor::zeros(gpu, "stepwise mean", &[&[images][..], image].concat())?;
        let std = Tensor::zeros(gpu, "stepwise std", &[&[images][..], image].concat())?;
        let stats = Plan {
            steps: vec![sample_stats(gpu, &x0, &mean, &std, samples)?],
        };
        let b = X0AndMask {
            s: &core.step_uniform,
            x: &x_prev,
            eps: &core.eps,
            x0: &x0_all,
            mask: &mask,
        };
        let x0_dispatch = crate::gpu::Dispatch::typed(
            gpu,
            "x0_and_mask",
            &[],
            &b,
            crate::gpu::dispatch_groups(x0_all.numel(), crate::gpu::WG1D),
        )?;
        let mut estimate = Plan::new();
        estimate.push(x0_dispatch);
        estimate.extend(stats.clone());
        Ok(ReadOuts {
            x_prev,
            x0_all,
            x0,
            mean,
            std,
            estimate,
            stats,
        })
    }
}

impl Stepper {
    /// Plans the read-outs around a sampler planned for `images * samples`
    /// rows with the per-sample measurement layout.
    pub(super) fn new(
        gpu: &Gpu,
        sampler: Sampler,
        images: usize,
        samples: usize,
        meas_shape: [usize; 3],
    ) -> Result<Stepper, SamplerError> {
        let live = ReadOuts::new(gpu, &sampler, images, samples)?;
        let m_per: usize = meas_shape.iter().product();
        let y_rows = (samples > 1)
            .then(|| Tensor::zeros(gpu, "stepwise y per sample", &[images * samples, m_per]))
            .transpose()?;
        Self::with(
            gpu,
            sampler,
            [images, samples],
            meas_shape,
            Some(live),
            y_rows,
            Rows::Images,
        )
        .map(|s| Stepper { limit: EXPLODED, ..s })
    }

    /// A run of a sampler planned with its measurement, for the host entry
    /// points: no read-outs between steps, only the finite check at the end
    /// ([`Stepper::restart`] starts it).
    pub(super) fn host(gpu: &Gpu, sampler: Sampler, rows: usize, names: Rows) -> Result<Stepper, SamplerError> {
        let shape = sampler.core.x.shape.clone();
        let image = [shape[1], shape[2], shape[3]];
        Self::with(gpu, sampler, [rows, 1], image, None, None, names)
    }

    fn with(
        gpu: &Gpu,
        sampler: Sampler,
        [images, samples]: [usize; 2],
        meas_shape: [usize; 3],
        live: Option<ReadOuts>,
        y_rows: Option<Tensor>,
        names: Rows,
    ) -> Result<Stepper, SamplerError> {
        let rows = images * samples;
        let verdict = Tensor::zeros(gpu, "stepwise finite check", &[rows, 2])?;
        let check = Plan {
            steps: vec![finite_check(gpu, sampler.x(), rows, &verdict)?],
        };
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stepwise finite check read-back"),
            size: verdict.size_bytes() as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Stepper {
            sampler,
            images,
            samples,
            meas_shape,
            y_rows,
            live,
            names,
            limit: f32::INFINITY,
            check,
            verdict,
            staging,
            pending: None,
            left: None,
            outcome: None,
        })
    }

    /// Starts a run on measurement `y` [N, out_shape], a tensor on a buffer
    /// with COPY_SRC usage (checked, with its shape and size, before any
    /// work): copies it in, draws x_T. Nothing is allocated; a run in
    /// progress is dropped.
    pub fn start(&mut self, gpu: &Gpu, y: &Tensor) -> Result<(), SamplerError> {
        check_caller_tensor("y", y, self.meas_shape, wgpu::BufferUsages::COPY_SRC, Some(self.images))?;
        // A check still in flight holds the staging buffer: let it land.
        if self.pending.is_some() {
            self.settle(gpu, wgpu::PollType::wait_indefinitely())?;
        }
        match &self.y_rows {
            Some(rows) => {
                let per = (y.size_bytes() / self.images) as u64;
                let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("stepwise y per sample"),
                });
                for r in 0..self.images * self.samples {
                    let j = (r / self.samples) as u64;
                    enc.copy_buffer_to_buffer(&y.buffer, j * per, &rows.buffer, r as u64 * per, per);
                }
                gpu.submit_checked("stepwise y per sample", enc)?;
                self.sampler.load_measurement(gpu, rows)?;
            }
            None => self.sampler.load_measurement(gpu, y)?,
        }
        self.restart(gpu)
    }

    /// Starts a run on the measurement the sampler holds: draws x_T.
    pub(super) fn restart(&mut self, gpu: &Gpu) -> Result<(), SamplerError> {
        if self.pending.is_some() {
            self.settle(gpu, wgpu::PollType::wait_indefinitely())?;
        }
        self.sampler.init(gpu)?;
        self.left = Some(self.sampler.steps());
        self.outcome = None;
        Ok(())
    }

    /// Records up to `k` reverse steps, then the read-outs (and after the
    /// last step, the finite check). Never waits for the GPU.
    pub fn step(&mut self, gpu: &Gpu, k: usize) -> Result<Progress, SamplerError> {
        let Some(left) = self.left else {
            return Err(SamplerError::Invalid(
                "the restoration has no measurement yet: call start first".into(),
            ));
        };
        let todo = k.min(left);
        for n in 0..todo {
            let i = left - 1 - n;
            if let Some(live) = self.live.as_ref().filter(|_| n + 1 == todo && i > 0) {
                gpu.copy_buffer(
                    &self.sampler.core.x.buffer,
                    &live.x_prev.buffer,
                    live.x_prev.size_bytes() as u64,
                )?;
            }
            self.sampler.step(gpu, i)?;
        }
        self.left = Some(left - todo);
        if todo > 0 {
            if left == todo {
                self.finish(gpu)?;
            } else if let Some(live) = &self.live {
                live.estimate.run(gpu)?;
            }
        }
        Ok(self.progress())
    }

    /// After the last step: x0 = the samples, their mean and std, the
    /// finite check and its copy, one submission; the copy is then mapped.
    fn finish(&mut self, gpu: &Gpu) -> Result<(), SamplerError> {
        let x = &self.sampler.core.x;
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("stepwise finish"),
        });
        let stats = self.live.as_ref().map(|live| {
            enc.copy_buffer_to_buffer(&x.buffer, 0, &live.x0_all.buffer, 0, x.size_bytes() as u64);
            &live.stats
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("stepwise finish"),
                timestamp_writes: None,
            });
            Plan::record_all(stats.into_iter().chain([&self.check]), &mut pass);
        }
        enc.copy_buffer_to_buffer(&self.verdict.buffer, 0, &self.staging, 0, self.staging.size());
        gpu.submit_checked("stepwise finish", enc)?;
        let (tx, rx) = mpsc::channel();
        self.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.pending = Some(rx);
        Ok(())
    }

    /// Steps done and in all (0 of K before [`Stepper::start`]).
    pub fn progress(&self) -> Progress {
        let total = self.sampler.steps();
        Progress {
            done: total - self.left.unwrap_or(total),
            total,
        }
    }

    /// Where the run stands, without waiting for the GPU; a run that went
    /// non-finite or past [`EXPLODED`] is an `Err` once its check is back.
    pub fn poll(&mut self, gpu: &Gpu) -> Result<State, SamplerError> {
        self.settle(gpu, wgpu::PollType::Poll)?;
        self.state()
    }

    /// Waits for the finite check of a finished run and returns its verdict
    /// (an error if steps are left).
    pub fn wait(&mut self, gpu: &Gpu) -> Result<(), SamplerError> {
        self.settle(gpu, wgpu::PollType::wait_indefinitely())?;
        match self.state()? {
            State::Done => Ok(()),
            _ => Err(SamplerError::Invalid(format!(
                "the restoration is not finished: {} of {} steps done",
                self.progress().done,
                self.progress().total
            ))),
        }
    }

    fn state(&self) -> Result<State, SamplerError> {
        Ok(match (&self.outcome, self.left) {
            (Some(Err(e)), _) => return Err(SamplerError::Invalid(e.clone())),
            (Some(Ok(())), _) => State::Done,
            (None, None) => State::Idle,
            (None, Some(0)) => State::Checking,
            (None, Some(_)) => State::Running(self.progress()),
        })
    }

    /// Polls the device (`how`) and, when the check's map has landed, reads
    /// it into `outcome`.
    fn settle(&mut self, gpu: &Gpu, how: wgpu::PollType) -> Result<(), SamplerError> {
        let Some(rx) = &self.pending else {
            return Ok(());
        };
        gpu.device
            .poll(how)
            .map_err(|e| crate::GpuError::Readback(e.to_string()))?;
        let mapped = match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => Err("the map was dropped".to_string()),
            Ok(r) => r.map_err(|e| e.to_string()),
        };
        self.pending = None;
        mapped.map_err(crate::GpuError::Readback)?;
        let check: Vec<f32> = {
            let view = self
                .staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| crate::GpuError::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..])
        };
        self.staging.unmap();
        self.outcome = Some(self.judge(&check));
        Ok(())
    }

    /// The verdict on the rows' (non-finite count, largest value) pairs.
    fn judge(&self, check: &[f32]) -> Result<(), String> {
        let name = |r: usize| match (self.names, self.samples) {
            (Rows::Samples { first }, _) => format!("sample {}", first + r),
            (Rows::Images, 1) => format!("image {r}"),
            (Rows::Images, k) => format!("image {} (sample {})", r / k, r % k),
        };
        for (r, c) in check.chunks(2).enumerate() {
            if c[0] > 0.0 {
                return Err(diverged(&name(r), None));
            }
            if c[1].abs() > self.limit {
                return Err(diverged(&name(r), Some(c[1])));
            }
        }
        Ok(())
    }

    /// x_t [N * K, C, H, W] (x_0 after the last step).
    pub fn x_t(&self) -> &Tensor {
        self.sampler.x()
    }

    /// The estimate of x0 at the last step taken [N * K, C, H, W].
    pub fn x0(&self) -> &Tensor {
        &self.read_outs().x0
    }

    /// Per-pixel mean of x0 over each image's samples [N, C, H, W].
    pub fn mean(&self) -> &Tensor {
        &self.read_outs().mean
    }

    /// Per-pixel (population) standard deviation of x0 over each image's
    /// samples [N, C, H, W].
    pub fn std(&self) -> &Tensor {
        &self.read_outs().std
    }

    /// The read-outs every public [`Stepper`] has (only the host entry
    /// points' private runs go without).
    fn read_outs(&self) -> &ReadOuts {
        self.live
            .as_ref()
            .expect("a step-wise restoration is planned with its read-outs")
    }

    /// Measurements (N) and samples per measurement (K).
    pub fn images(&self) -> usize {
        self.images
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The measurement shape [C, H, W] per image that [`Stepper::start`] takes.
    pub fn measurement_shape(&self) -> [usize; 3] {
        self.meas_shape
    }

    /// The planned sampler (its method, its statistics).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Every GPU buffer the plan made for the read-outs and the samples, for
    /// checking that a re-run allocates nothing new.
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let mut v = vec![&self.sampler.core.x.buffer, &self.verdict.buffer, &self.staging];
        if let Some(live) = &self.live {
            v.extend([
                &live.x_prev.buffer,
                &live.x0_all.buffer,
                &live.mean.buffer,
                &live.std.buffer,
            ]);
        }
        v.extend(self.y_rows.as_ref().map(|t| &t.buffer));
        v
    }
}
