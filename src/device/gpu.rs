//! The wgpu engine: device creation with the adapter's own limits, a pipeline cache (one pipeline per
//! entry point, made on first use), batched eager work, and prepared recordings replayed with one
//! submission. Buffer pooling is the device layer's (device/mod.rs), shared with the CPU engine.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::device::{Counters, Raw, RawDispatch};
use crate::error::{Error, Result};
use crate::kernels::{BindingKind, EntryInfo, Kernel};

pub(crate) struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    params_size: u64,
}

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
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipes: Mutex<HashMap<(&'static str, &'static str), Arc<Pipe>>>,
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
    pub fn from_adapter(adapter: &wgpu::Adapter, counters: Arc<Counters>) -> Result<GpuEngine> {
        let mut features = wgpu::Features::empty();
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // The adapter's own limits, not wgpu's conservative defaults: large buffers and workgroup
        // memory are what make kernels fast on real GPUs.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tigel"),
            required_features: features,
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| {
            Error::DeviceRequest(format!("{} ({:?}): {e}", adapter.get_info().name, adapter.get_info().backend))
        })?;
        Ok(GpuEngine::new(device, queue, adapter.get_info(), counters))
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
        GpuEngine {
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

    fn module(&self, shader: &'static str) -> Result<wgpu::ShaderModule> {
        let mut m = self.modules.lock().unwrap();
        if let Some(x) = m.get(shader) {
            return Ok(x.clone());
        }
        let info = crate::kernels::shader(shader).ok_or_else(|| Error::Other(format!("no shader `{shader}`")))?;
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(info.source.into()),
        });
        m.insert(shader, module.clone());
        Ok(module)
    }

    /// Checks an entry point against the adapter's limits (before wgpu would reject it).
    pub fn check_entry(&self, k: &Kernel, info: &EntryInfo) -> Result<()> {
        let l = &self.limits;
        let [x, y, z] = info.workgroup_size;
        let checks: [(&str, u64, &'static str, u64); 5] = [
            ("workgroup size x", x as u64, "max_compute_workgroup_size_x", l.max_compute_workgroup_size_x as u64),
            ("workgroup size y", y as u64, "max_compute_workgroup_size_y", l.max_compute_workgroup_size_y as u64),
            (
                "invocations per workgroup",
                (x * y * z) as u64,
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup as u64,
            ),
            (
                "workgroup memory (bytes)",
                info.workgroup_memory as u64,
                "max_compute_workgroup_storage_size",
                l.max_compute_workgroup_storage_size as u64,
            ),
            (
                "storage buffers",
                (info.bindings.len() - 1) as u64,
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage as u64,
            ),
        ];
        for (what, v, limit_name, limit) in checks {
            if v > limit {
                return Err(Error::LimitExceeded {
                    what: format!("kernel {}: {what}", k.name()),
                    requested: v,
                    limit_name,
                    limit,
                });
            }
        }
        Ok(())
    }

    fn pipe(&self, k: &'static Kernel) -> Result<Arc<Pipe>> {
        if let Some(p) = self.pipes.lock().unwrap().get(&(k.shader, k.entry)) {
            return Ok(p.clone());
        }
        let info = k.info()?;
        self.check_entry(k, info)?;
        let module = self.module(k.shader)?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = info
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => wgpu::BufferBindingType::Storage { read_only: true },
                        BindingKind::StorageReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    // Params live in one shared uniform buffer per batch, addressed by dynamic offset.
                    has_dynamic_offset: b.kind == BindingKind::Uniform,
                    min_binding_size: NonZeroU64::new(b.size as u64),
                },
                count: None,
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(k.entry), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("creating pipeline {}: {e}", k.name())));
        }
        let p = Arc::new(Pipe { pipeline, layout, params_size: info.bindings[0].size as u64 });
        self.pipes.lock().unwrap().insert((k.shader, k.entry), p.clone());
        Ok(p)
    }

    /// Adds one dispatch to the batch submitted at the next flush.
    pub fn enqueue(&self, d: RawDispatch) -> Result<()> {
        let pipe = self.pipe(d.kernel)?;
        let mut params = d.params.clone();
        params.resize(pipe.params_size as usize, 0);
        let buffers = gpu_buffers(&d);
        self.pending.lock().unwrap().push(Op::Dispatch { pipe, params, buffers, groups: d.groups });
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
        let t0 = std::time::Instant::now();
        if let Some(p) = rec {
            self.encode_prepared(&mut enc, p, false);
        }
        drop(arena_guard);
        let t1 = std::time::Instant::now();
        let cb = enc.finish();
        let t2 = std::time::Instant::now();
        self.queue.submit([cb]);
        if rec.is_some() {
            let t3 = std::time::Instant::now();
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
        let pipes = dispatches.iter().map(|d| self.pipe(d.kernel)).collect::<Result<Vec<_>>>()?;
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
        Ok(Prepared {
            pipes,
            bind_groups,
            groups: dispatches.iter().map(|d| d.groups).collect(),
            _uniform: uniform,
            timer,
        })
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

/// A buffer copy on its way to the host.
pub(crate) struct PendingRead {
    device: wgpu::Device,
    staging: wgpu::Buffer,
    words: usize,
    // 0: in flight, 1: mapped, 2: failed
    state: Arc<AtomicU8>,
}

impl PendingRead {
    fn start(device: wgpu::Device, staging: wgpu::Buffer, words: usize) -> PendingRead {
        let state = Arc::new(AtomicU8::new(0));
        let s = state.clone();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| s.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release));
        PendingRead { device, staging, words, state }
    }

    /// True once the data is on the host (never blocks).
    pub fn poll(&mut self) -> Result<bool> {
        if self.state.load(Ordering::Acquire) == 0 {
            self.device.poll(wgpu::PollType::Poll).map_err(|e| Error::Gpu(e.to_string()))?;
        }
        match self.state.load(Ordering::Acquire) {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Gpu("buffer map failed".into())),
        }
    }

    /// Blocks until the data is on the host and returns it.
    pub fn wait(self) -> Result<Vec<u32>> {
        while self.state.load(Ordering::Acquire) == 0 {
            self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
        }
        if self.state.load(Ordering::Acquire) != 1 {
            return Err(Error::Gpu("buffer map failed".into()));
        }
        let out = {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| Error::Gpu(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view)[..self.words].to_vec()
        };
        self.staging.unmap();
        Ok(out)
    }
}
