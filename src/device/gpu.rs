//! The wgpu engine: device creation with the adapter's own limits, a pipeline cache (one pipeline per
//! entry point, made on first use), batched eager work, and prepared recordings replayed with one
//! submission. Buffer pooling is the device layer's (device/mod.rs), shared with the CPU engine.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::pipeline::Pipe;
pub(crate) use super::readback::PendingRead;
use super::readback::{Signal, Signalled};
use crate::device::{Counters, Instant, Raw, RawDispatch};
use crate::error::{Error, Result};

/// Eager work waiting for the next submission. Dispatches hold raw wgpu buffers, not tigel `Buffer`s:
/// a tensor dropped while its dispatch is pending goes back to the pool at once, and a later dispatch
/// that reuses the memory comes after it in the same command stream, so the GPU orders the two.
enum Op {
    Dispatch { pipe: Arc<Pipe>, params: Vec<u8>, buffers: Vec<(wgpu::Buffer, u64)>, groups: [u32; 3] },
    Copy { src: wgpu::Buffer, dst: wgpu::Buffer, bytes: u64 },
}

pub(crate) struct GpuEngine {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter it runs on.
    pub info: wgpu::AdapterInfo,
    /// The limits it was created with.
    pub limits: wgpu::Limits,
    /// Whether timestamp queries can time a replay.
    pub timestamps: bool,
    /// Whether the device has SUBGROUP (subgroup variants of kernels can run).
    pub subgroups: bool,
    /// Whether shaders may use pack2x16float / unpack2x16float (WebGPU's downlevel SHADER_F16_IN_F32,
    /// which the f16 storage kernels need): true on every conformant WebGPU adapter.
    pub f16_storage: bool,
    /// Which kernel variants it runs (device::tune).
    pub(super) tune: super::tune::TuneState,
    pub(super) modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pub(super) pipes: Mutex<HashMap<(&'static str, &'static str), Arc<Pipe>>>,
    pending: Mutex<Vec<Op>>,
    arena: Mutex<Option<wgpu::Buffer>>,
    errors: Arc<Mutex<Vec<String>>>,
    counters: Arc<Counters>,
    /// Host time of the last replay, by phase.
    pub last_replay: Mutex<Option<ReplayCpuTimes>>,
}

/// Host time spent on the last replay, by phase: recording the compute pass, wgpu's
/// `CommandEncoder::finish` (resource tracking, barriers, translation to the driver), and the
/// queue submission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayCpuTimes {
    /// Seconds recording the compute pass.
    pub record_s: f64,
    /// Seconds in `CommandEncoder::finish`.
    pub finish_s: f64,
    /// Seconds in the queue submission.
    pub submit_s: f64,
}

/// A recording prepared on the GPU: everything a replay needs, made once.
pub(crate) struct Prepared {
    pipes: Vec<Arc<Pipe>>,
    bind_groups: Vec<wgpu::BindGroup>,
    groups: Vec<[u32; 3]>,
    _uniform: Option<wgpu::Buffer>,
    timer: Option<(wgpu::QuerySet, wgpu::Buffer)>,
}

impl GpuEngine {
    /// Requests a device from `adapter` with the limits and features tigel wants.
    pub async fn from_adapter_async(adapter: &wgpu::Adapter, counters: Arc<Counters>) -> Result<GpuEngine> {
        let mut features = wgpu::Features::empty();
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Subgroup operations make the reductions' workgroup step a few instructions (their variants
        // are picked when pipelines are made; the workgroup-memory forms stay for adapters without).
        if adapter.features().contains(wgpu::Features::SUBGROUP) {
            features |= wgpu::Features::SUBGROUP;
        }
        // The adapter's own limits, not wgpu's conservative defaults: large buffers and workgroup
        // memory are what make kernels fast on real GPUs. Kernels that need more than WebGPU's
        // defaults have variants chosen from these limits (see kernels::attention).
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tigel"),
                required_features: features,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| {
                Error::DeviceRequest(format!("{} ({:?}): {e}", adapter.get_info().name, adapter.get_info().backend))
            })?;
        let mut engine = GpuEngine::new(device, queue, adapter.get_info(), counters);
        engine.f16_storage =
            adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32);
        Ok(engine)
    }

    /// An engine on a device and queue that already exist (made by tigel or the application).
    pub fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        counters: Arc<Counters>,
    ) -> GpuEngine {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().unwrap().push(e.to_string())));
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        GpuEngine {
            subgroups,
            f16_storage: true,
            tune: super::tune::TuneState::new(),
            limits: device.limits(),
            device,
            queue,
            info,
            timestamps,
            modules: Mutex::default(),
            pipes: Mutex::default(),
            pending: Mutex::default(),
            arena: Mutex::default(),
            errors,
            counters,
            last_replay: Mutex::default(),
        }
    }

    /// Largest buffer the device accepts, in bytes.
    pub fn max_buffer_bytes(&self) -> u64 {
        self.limits.max_buffer_size.min(self.limits.max_storage_buffer_binding_size)
    }

    fn take_errors(&self) -> Result<()> {
        let mut e = self.errors.lock().unwrap();
        if e.is_empty() {
            Ok(())
        } else {
            Err(Error::Gpu(std::mem::take(&mut *e).join("; ")))
        }
    }

    /// Name of the wgpu limit that bounds `max_buffer_bytes`.
    pub fn max_buffer_limit_name(&self) -> &'static str {
        if self.limits.max_buffer_size < self.limits.max_storage_buffer_binding_size {
            "max_buffer_size"
        } else {
            "max_storage_buffer_binding_size"
        }
    }

    /// A new storage buffer of `bytes` (the device layer has checked the limits and pools the result).
    pub fn create_buffer(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tigel storage"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Writes `bytes` at the start of `raw`, in order with the work issued so far.
    pub fn write(&self, raw: &wgpu::Buffer, bytes: &[u8]) -> Result<()> {
        // queue.write_buffer lands before the next submission's commands: submit what is pending
        // first, so the write cannot overtake work issued before it.
        self.flush()?;
        self.queue.write_buffer(raw, 0, bytes);
        Ok(())
    }

    /// Adds one dispatch to the batch submitted at the next flush.
    pub fn enqueue(&self, d: RawDispatch) -> Result<()> {
        let pipe = self.pipe_for(&d)?;
        let mut params = d.params.clone();
        params.resize(pipe.params_size as usize, 0);
        let buffers = gpu_buffers(&d);
        let groups = pipe.groups(d.groups);
        self.pending.lock().unwrap().push(Op::Dispatch { pipe, params, buffers, groups });
        Ok(())
    }

    fn align(&self) -> u64 {
        self.limits.min_uniform_buffer_offset_alignment as u64
    }

    /// Packs params at aligned offsets into one uniform buffer's worth of bytes.
    fn pack_params<'a>(&self, params: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u32>) {
        let align = self.align();
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for p in params {
            let off = (bytes.len() as u64).div_ceil(align) * align;
            bytes.resize(off as usize, 0);
            offsets.push(off as u32);
            bytes.extend_from_slice(p);
        }
        (bytes, offsets)
    }

    /// A bind group: params at `offset` of `uniform`, then the storage buffers (buffer, bytes).
    fn bind_group(
        &self,
        pipe: &Pipe,
        uniform: &wgpu::Buffer,
        offset: u64,
        buffers: &[(wgpu::Buffer, u64)],
    ) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform,
                offset,
                size: NonZeroU64::new(pipe.params_size),
            }),
        }];
        for (i, (raw, bytes)) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: raw,
                    offset: 0,
                    size: NonZeroU64::new(*bytes),
                }),
            });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        })
    }

    fn uniform_buffer(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tigel params"),
            size: bytes.max(256).div_ceil(256) * 256,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Encodes pending eager work (and optionally a prepared recording after it) into one command
    /// buffer and submits it once.
    fn submit(&self, rec: Option<&Prepared>) -> Result<()> {
        let ops = std::mem::take(&mut *self.pending.lock().unwrap());
        if ops.is_empty() && rec.is_none() {
            return Ok(());
        }
        let (bytes, offsets) = self.pack_params(ops.iter().filter_map(|o| match o {
            Op::Dispatch { params, .. } => Some(&params[..]),
            Op::Copy { .. } => None,
        }));
        let mut arena_guard = self.arena.lock().unwrap();
        if !bytes.is_empty() {
            if arena_guard.as_ref().is_none_or(|a| a.size() < bytes.len() as u64) {
                *arena_guard = Some(self.uniform_buffer((bytes.len() as u64).next_power_of_two()));
            }
            self.queue.write_buffer(arena_guard.as_ref().unwrap(), 0, &bytes);
        }
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tigel step") });
        let mut i = 0;
        let mut k = 0;
        while i < ops.len() {
            // One compute pass per run of consecutive dispatches; copies sit between passes.
            if let Op::Copy { src, dst, bytes } = &ops[i] {
                enc.copy_buffer_to_buffer(src, 0, dst, 0, *bytes);
                i += 1;
                continue;
            }
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            while let Some(Op::Dispatch { pipe, buffers, groups, .. }) = ops.get(i) {
                let arena = arena_guard.as_ref().unwrap();
                let bg = self.bind_group(pipe, arena, 0, buffers);
                pass.set_pipeline(&pipe.pipeline);
                pass.set_bind_group(0, &bg, &[offsets[k]]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                k += 1;
                i += 1;
            }
        }
        let t0 = Instant::now();
        if let Some(p) = rec {
            self.encode_prepared(&mut enc, p, false);
        }
        drop(arena_guard);
        let t1 = Instant::now();
        let cb = enc.finish();
        let t2 = Instant::now();
        self.queue.submit([cb]);
        if rec.is_some() {
            let t3 = Instant::now();
            *self.last_replay.lock().unwrap() = Some(ReplayCpuTimes {
                record_s: (t1 - t0).as_secs_f64(),
                finish_s: (t2 - t1).as_secs_f64(),
                submit_s: (t3 - t2).as_secs_f64(),
            });
        }
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.take_errors()
    }

    /// Submits the batched dispatches (never waits).
    pub fn flush(&self) -> Result<()> {
        self.submit(None)
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
        self.take_errors()
    }

    /// Waits until all work submitted so far is done.
    pub async fn wait_async(&self) -> Result<()> {
        let done = Arc::new(Signal::default());
        let d = done.clone();
        self.queue.on_submitted_work_done(move || d.set(true));
        Signalled::new(self.device.clone(), done, "waiting for the queue").await?;
        self.take_errors()
    }

    /// Starts copying the first `words` words of `raw` back to the host.
    pub fn download(&self, raw: &wgpu::Buffer, words: usize) -> Result<PendingRead> {
        let bytes = (words.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tigel readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.pending.lock().unwrap().push(Op::Copy { src: raw.clone(), dst: staging.clone(), bytes });
        self.flush()?;
        Ok(PendingRead::start(self.device.clone(), staging, words))
    }

    /// Prepares pipelines, bind groups and uniform data of a recording once.
    pub fn prepare(&self, dispatches: &[RawDispatch]) -> Result<Prepared> {
        let pipes = dispatches.iter().map(|d| self.pipe_for(d)).collect::<Result<Vec<_>>>()?;
        let padded: Vec<Vec<u8>> = dispatches
            .iter()
            .zip(&pipes)
            .map(|(d, p)| {
                let mut v = d.params.clone();
                v.resize(p.params_size as usize, 0);
                v
            })
            .collect();
        let (bytes, offsets) = self.pack_params(padded.iter().map(|v| &v[..]));
        let uniform = (!bytes.is_empty()).then(|| {
            let u = self.uniform_buffer(bytes.len() as u64);
            self.queue.write_buffer(&u, 0, &bytes);
            u
        });
        // Each bind group takes the uniform at its own fixed offset; replay passes a dynamic offset of 0.
        let bind_groups = dispatches
            .iter()
            .zip(&pipes)
            .zip(&offsets)
            .map(|((d, p), &off)| {
                self.bind_group(p, uniform.as_ref().expect("every kernel has params"), off as u64, &gpu_buffers(d))
            })
            .collect();
        let timer = self.timestamps.then(|| {
            let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("tigel timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tigel timer resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (qs, resolve)
        });
        self.take_errors()?;
        let groups = dispatches.iter().zip(&pipes).map(|(d, p)| p.groups(d.groups)).collect();
        Ok(Prepared { pipes, bind_groups, groups, _uniform: uniform, timer })
    }

    fn encode_prepared(&self, enc: &mut wgpu::CommandEncoder, p: &Prepared, timed: bool) {
        let timestamp_writes = match (&p.timer, timed) {
            (Some((qs, _)), true) => Some(wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
            _ => None,
        };
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("tigel recording"), timestamp_writes });
        let mut last: Option<&Arc<Pipe>> = None;
        for ((pipe, bg), g) in p.pipes.iter().zip(&p.bind_groups).zip(&p.groups) {
            // Runs of one kernel (per-tensor optimizer updates) set their pipeline once.
            if last.is_none_or(|l| !Arc::ptr_eq(l, pipe)) {
                pass.set_pipeline(&pipe.pipeline);
                last = Some(pipe);
            }
            // The offset is baked into the bind group; the layout still declares a dynamic offset.
            pass.set_bind_group(0, bg, &[0]);
            pass.dispatch_workgroups(g[0], g[1], g[2]);
        }
    }

    /// Encodes a prepared recording in one command buffer and submits it, without waiting.
    pub fn replay(&self, p: &Prepared) -> Result<()> {
        self.submit(Some(p))
    }

    /// One timed replay: submit, wait, and read the pass's two timestamps.
    pub fn replay_timed(&self, p: &Prepared) -> Result<f64> {
        self.flush()?;
        let (qs, resolve) =
            p.timer.as_ref().ok_or_else(|| Error::Other("no timestamp queries on this adapter".into()))?;
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tigel timed") });
        self.encode_prepared(&mut enc, p, true);
        enc.resolve_query_set(qs, 0..2, resolve, 0);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tigel timer readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(resolve, 0, &staging, 0, 16);
        self.queue.submit([enc.finish()]);
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        // Copied, not cast in place: a Vec<u32>'s allocation is not aligned for u64.
        let ts: Vec<u64> = bytemuck::pod_collect_to_vec(&PendingRead::start(self.device.clone(), staging, 4).wait()?);
        self.take_errors()?;
        let period_ns = self.queue.get_timestamp_period() as f64;
        Ok(ts[1].saturating_sub(ts[0]) as f64 * period_ns * 1e-9)
    }
}

/// The (buffer, bytes bound) pairs of a dispatch.
fn gpu_buffers(d: &RawDispatch) -> Vec<(wgpu::Buffer, u64)> {
    d.buffers
        .iter()
        .map(|(raw, words)| match raw {
            Raw::Gpu(b) => (b.clone(), (*words).max(1) as u64 * 4),
            Raw::Cpu(_) => unreachable!("validated: GPU buffers on the GPU engine"),
        })
        .collect()
}
