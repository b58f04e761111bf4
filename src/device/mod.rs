//! The device layer: one `Device` type over two engines.
//!
//! * the wgpu engine (`gpu`) runs the WGSL kernels on any Vulkan, Metal, DX12 or GL adapter;
//! * the CPU engine (`cpu`) runs each kernel's CPU twin, same name, same binding order.
//!
//! Work reaches a device as `Dispatch`es (kernel, params, buffers, workgroup grid). Eagerly issued
//! dispatches are batched and submitted together at the next `flush` (or any download); a `Recording`
//! is a fixed list of dispatches prepared once (pipelines, bind groups, uniform data) and replayed with a
//! single queue submission each time, which is how training steps run.
//!
//! Memory: buffers come from a pool of size classes on both engines. `Device::capture` runs ordinary
//! eager code once with dispatches recorded instead of run and allocations served from a pool private to
//! the capture: a tensor dropped during the capture frees its memory for later tensors of the same
//! capture (the recording's order makes that safe), so the capture's own buffers are the memory plan of
//! the step, and its peak is known before the first replay.

pub mod adapter;
pub mod cpu;
pub mod gpu;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::kernels::{BindingKind, Kernel};

pub use adapter::{AdapterSummary, BackendChoice};

/// Poison written into freshly allocated buffers when `Device::set_poison(true)`: a quiet NaN with a
/// recognisable payload, so a kernel that forgets to write an element fails any comparison.
pub const POISON: u32 = 0x7FC0_0BAD;

/// Dispatch time per (shader, entry): (dispatches, seconds), while profiling is on.
type ProfileTable = HashMap<(&'static str, &'static str), (u64, f64)>;

/// Counters that tests and benchmarks read to check the execution model (for example: one queue
/// submission per replayed step, no blocking wait inside a step).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub submissions: u64,
    pub dispatches: u64,
    pub blocking_waits: u64,
    pub buffers_created: u64,
    pub bytes_allocated: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub submissions: AtomicU64,
    pub dispatches: AtomicU64,
    pub blocking_waits: AtomicU64,
    pub buffers_created: AtomicU64,
    pub bytes_allocated: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            submissions: self.submissions.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            blocking_waits: self.blocking_waits.load(Ordering::Relaxed),
            buffers_created: self.buffers_created.load(Ordering::Relaxed),
            bytes_allocated: self.bytes_allocated.load(Ordering::Relaxed),
        }
    }
}

// One per device: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Engine {
    Cpu,
    Gpu(gpu::GpuEngine),
}

pub(crate) struct DeviceInner {
    pub engine: Engine,
    pub poison: AtomicBool,
    pub counters: Arc<Counters>,
    pub note: String,
    pools: Mutex<Pools>,
    /// CPU backend: time per kernel over replays, when profiling is on.
    profile: Mutex<Option<ProfileTable>>,
}

impl DeviceInner {
    fn new(engine: Engine, counters: Arc<Counters>, note: String) -> Arc<DeviceInner> {
        Arc::new(DeviceInner {
            engine,
            poison: AtomicBool::new(false),
            counters,
            note,
            pools: Mutex::default(),
            profile: Mutex::default(),
        })
    }
}

/// The memory behind a `Buffer`, shareable without keeping the `Buffer` (and so its pool slot) alive.
#[derive(Clone)]
pub(crate) enum Raw {
    Cpu(Arc<RwLock<Vec<u32>>>),
    Gpu(wgpu::Buffer),
}

impl Raw {
    fn capacity(&self) -> u64 {
        match self {
            Raw::Cpu(v) => v.read().unwrap().len() as u64 * 4,
            Raw::Gpu(b) => b.size(),
        }
    }
}

/// A dispatch as the engines run it: raw buffers with their lengths in words, plus handles on the
/// buffers that must outlive it (those not owned by the capture or recording that holds it).
pub(crate) struct RawDispatch {
    pub kernel: &'static Kernel,
    pub params: Vec<u8>,
    pub buffers: Vec<(Raw, usize)>,
    pub groups: [u32; 3],
    _keep: Vec<Buffer>,
}

/// Size classes: the byte count rounded up to one of four steps per power of two (at most 19% slack),
/// so buffers of nearby sizes share a free list.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let top = 63 - bytes.leading_zeros() as u64;
    let step = 1u64 << top.saturating_sub(2);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct Pools {
    free: HashMap<u64, Vec<Raw>>,
    capture: Option<Capture>,
    next_capture: u64,
}

struct Capture {
    id: u64,
    free: HashMap<u64, Vec<Raw>>,
    owned: Vec<Raw>,
    dispatches: Vec<RawDispatch>,
    live: u64,
    peak: u64,
}

/// A compute device: cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

/// One kernel launch: the kernel, its uniform params (bytes of its `#[repr(C)]` params struct), its
/// storage buffers in binding order (bindings 1..), and the workgroup grid.
#[derive(Clone)]
pub struct Dispatch {
    pub kernel: &'static Kernel,
    pub params: Vec<u8>,
    pub buffers: Vec<Buffer>,
    pub groups: [u32; 3],
}

impl Dispatch {
    pub fn new<P: bytemuck::Pod>(kernel: &'static Kernel, params: &P, buffers: &[&Buffer], groups: [u32; 3]) -> Self {
        Dispatch {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            groups,
        }
    }
}

impl Device {
    /// The CPU backend: every kernel runs as its CPU twin, multi-threaded with rayon.
    pub fn cpu() -> Device {
        Device::cpu_with_note(format!("backend: cpu ({} threads)", rayon::current_num_threads()))
    }

    fn cpu_with_note(note: String) -> Device {
        Device { inner: DeviceInner::new(Engine::Cpu, Arc::default(), note) }
    }

    /// Chooses a backend (see `BackendChoice`), honouring `TIGEL_ADAPTER=substring`. The returned
    /// device's `note()` says which adapter was taken and why.
    pub fn new(choice: BackendChoice) -> Result<Device> {
        let filter = std::env::var("TIGEL_ADAPTER").ok().filter(|s| !s.is_empty());
        Device::select(choice, filter.as_deref())
    }

    /// Like `new`, with the adapter-name filter given explicitly (a case-insensitive substring).
    pub fn select(choice: BackendChoice, adapter_filter: Option<&str>) -> Result<Device> {
        match adapter::choose(choice, adapter_filter)? {
            adapter::Chosen::Cpu { note } => Ok(Device::cpu_with_note(note)),
            adapter::Chosen::Gpu { adapter, note } => {
                let counters = Arc::new(Counters::default());
                let engine = gpu::GpuEngine::from_adapter(&adapter, counters.clone())?;
                Ok(Device { inner: DeviceInner::new(Engine::Gpu(engine), counters, note) })
            }
        }
    }

    /// `Device::new` with the choice read from `TIGEL_BACKEND` (default `auto`).
    pub fn from_env() -> Result<Device> {
        let choice = match std::env::var("TIGEL_BACKEND") {
            Ok(s) if !s.is_empty() => s.parse()?,
            _ => BackendChoice::Auto,
        };
        Device::new(choice)
    }

    /// Builds a tigel device on a `wgpu::Device` and `wgpu::Queue` that the application already owns
    /// (for example beside its own rendering). tigel uses the limits and features the device was
    /// created with, and never blocks on work it did not submit itself except inside `wait`/downloads.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Result<Device> {
        let counters = Arc::new(Counters::default());
        let note = format!("backend: {:?} on application device `{}`", info.backend, info.name);
        let engine = gpu::GpuEngine::new(device, queue, info, counters.clone());
        Ok(Device { inner: DeviceInner::new(Engine::Gpu(engine), counters, note) })
    }

    /// One line saying which backend and adapter this device runs on, and why it was chosen.
    pub fn note(&self) -> &str {
        &self.inner.note
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self.inner.engine, Engine::Cpu)
    }

    pub fn name(&self) -> String {
        match &self.inner.engine {
            Engine::Cpu => "cpu".into(),
            Engine::Gpu(g) => format!("{} ({:?})", g.info.name, g.info.backend),
        }
    }

    /// Short backend name: cpu, vulkan, metal, dx12, gl.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.engine {
            Engine::Cpu => "cpu",
            Engine::Gpu(g) => adapter::backend_str(g.info.backend),
        }
    }

    pub(crate) fn gpu(&self) -> Option<&gpu::GpuEngine> {
        match &self.inner.engine {
            Engine::Gpu(g) => Some(g),
            Engine::Cpu => None,
        }
    }

    /// The wgpu device and queue, for applications that share them (None on the CPU backend).
    pub fn wgpu(&self) -> Option<(&wgpu::Device, &wgpu::Queue)> {
        self.gpu().map(|g| (&g.device, &g.queue))
    }

    /// The wgpu buffer behind a tigel buffer (None on the CPU backend), for applications that use
    /// tigel's results in their own passes. Work tigel has issued is ordered before the application's
    /// only after `flush`.
    pub fn raw_buffer<'a>(&self, b: &'a Buffer) -> Option<&'a wgpu::Buffer> {
        match &b.inner.raw {
            Raw::Gpu(w) => Some(w),
            Raw::Cpu(_) => None,
        }
    }

    pub fn adapter_info(&self) -> Option<&wgpu::AdapterInfo> {
        self.gpu().map(|g| &g.info)
    }

    /// The limits the GPU device was created with (None on the CPU backend).
    pub fn gpu_limits(&self) -> Option<wgpu::Limits> {
        self.gpu().map(|g| g.limits.clone())
    }

    /// Names of the features the GPU device was created with.
    pub fn gpu_features(&self) -> Vec<String> {
        self.gpu().map(|g| g.device.features().iter_names().map(|(n, _)| n.to_string()).collect()).unwrap_or_default()
    }

    /// Host time the last `replay` spent per phase (GPU only).
    pub fn last_replay_cpu_times(&self) -> Option<gpu::ReplayCpuTimes> {
        self.gpu().and_then(|g| *g.last_replay.lock().unwrap())
    }

    pub fn has_timestamps(&self) -> bool {
        self.gpu().is_some_and(|g| g.timestamps)
    }

    /// Fill every new buffer with `POISON` (tests use this so unwritten outputs cannot pass).
    pub fn set_poison(&self, on: bool) {
        self.inner.poison.store(on, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Largest number of workgroups per grid dimension.
    pub fn max_groups_per_dim(&self) -> u32 {
        match &self.inner.engine {
            Engine::Cpu => 65535,
            Engine::Gpu(g) => g.limits.max_compute_workgroups_per_dimension,
        }
    }

    /// Largest buffer this device accepts, in bytes (for the CPU backend, a practical bound).
    pub fn max_buffer_bytes(&self) -> u64 {
        match &self.inner.engine {
            Engine::Cpu => 1 << 40,
            Engine::Gpu(g) => g.max_buffer_bytes(),
        }
    }

    /// A buffer of `words` 32-bit words. Contents are unspecified (poison when poisoning is on).
    pub fn alloc(&self, words: usize) -> Result<Buffer> {
        let bytes = (words.max(1) * 4) as u64;
        let max = self.max_buffer_bytes();
        if bytes > max {
            let limit_name = match &self.inner.engine {
                Engine::Cpu => "cpu_max_buffer_bytes",
                Engine::Gpu(g) => g.max_buffer_limit_name(),
            };
            return Err(Error::LimitExceeded {
                what: format!("a buffer of {words} words ({bytes} bytes)"),
                requested: bytes,
                limit_name,
                limit: max,
            });
        }
        let class = size_class(bytes).min(max);
        let mut pools = self.inner.pools.lock().unwrap();
        let (raw, stamp) = match pools.capture.as_mut() {
            Some(c) => {
                let raw = match c.free.get_mut(&class).and_then(|v| v.pop()) {
                    Some(r) => r,
                    None => {
                        let r = self.create_raw(class);
                        c.owned.push(r.clone());
                        r
                    }
                };
                c.live += bytes;
                c.peak = c.peak.max(c.live);
                (raw, c.id)
            }
            None => match pools.free.get_mut(&class).and_then(|v| v.pop()) {
                Some(r) => (r, 0),
                None => (self.create_raw(class), 0),
            },
        };
        let capturing = pools.capture.is_some();
        drop(pools);
        let buf =
            Buffer { inner: Arc::new(BufInner { words, raw, class, stamp, device: Arc::downgrade(&self.inner) }) };
        if self.inner.poison.load(Ordering::Relaxed) && !capturing {
            self.write(&buf, &vec![POISON; words.max(1)])?;
        }
        Ok(buf)
    }

    fn create_raw(&self, class: u64) -> Raw {
        self.inner.counters.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.bytes_allocated.fetch_add(class, Ordering::Relaxed);
        match &self.inner.engine {
            Engine::Cpu => Raw::Cpu(Arc::new(RwLock::new(vec![0; (class / 4) as usize]))),
            Engine::Gpu(g) => Raw::Gpu(g.create_buffer(class)),
        }
    }

    /// A buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::invalid(
                "upload",
                format!("{} bytes is not a whole number of 32-bit words", bytes.len()),
            ));
        }
        let buf = self.alloc(bytes.len() / 4)?;
        self.write(&buf, data)?;
        Ok(buf)
    }

    fn capturing(&self) -> bool {
        self.inner.pools.lock().unwrap().capture.is_some()
    }

    /// Overwrites the start of `buf` with `data`, in order with the work already issued.
    pub fn write<T: bytemuck::Pod>(&self, buf: &Buffer, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() > buf.words().max(1) * 4 || !bytes.len().is_multiple_of(4) {
            return Err(Error::invalid(
                "write",
                format!("{} bytes do not fit a buffer of {} words", bytes.len(), buf.words()),
            ));
        }
        if self.capturing() {
            return Err(Error::invalid(
                "write",
                "uploads cannot be captured: make inputs and constants before capture",
            ));
        }
        self.check_owner("write", buf)?;
        match (&self.inner.engine, &buf.inner.raw) {
            (Engine::Cpu, Raw::Cpu(v)) => {
                let mut v = v.write().unwrap();
                bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            (Engine::Gpu(g), Raw::Gpu(raw)) => g.write(raw, bytes),
            _ => Err(Error::invalid("write", "buffer belongs to another device")),
        }
    }

    fn check_owner(&self, op: &'static str, b: &Buffer) -> Result<()> {
        if b.inner.device.ptr_eq(&Arc::downgrade(&self.inner)) {
            Ok(())
        } else {
            Err(Error::invalid(op, "buffer belongs to another device"))
        }
    }

    /// Issues one dispatch. On the CPU backend it runs now; on a GPU it is batched until the next flush.
    /// During a capture it is recorded instead.
    pub fn dispatch(&self, d: Dispatch) -> Result<()> {
        self.validate(&d)?;
        let capture = self.inner.pools.lock().unwrap().capture.as_ref().map(|c| c.id);
        if let Some(id) = capture {
            // Converted outside the lock: it may drop the last handle on a buffer, whose release locks.
            let rd = to_raw(d, Some(id));
            if let Some(c) = self.inner.pools.lock().unwrap().capture.as_mut() {
                c.dispatches.push(rd);
            }
            return Ok(());
        }
        self.inner.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        let rd = to_raw(d, None);
        match &self.inner.engine {
            Engine::Cpu => {
                run_cpu(&rd);
                Ok(())
            }
            Engine::Gpu(g) => g.enqueue(rd),
        }
    }

    /// Submits batched work (no-op on the CPU backend and during a capture). Never waits.
    pub fn flush(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Gpu(g) if !self.capturing() => g.flush(),
            _ => Ok(()),
        }
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Gpu(g) if !self.capturing() => {
                g.flush()?;
                self.inner.counters.blocking_waits.fetch_add(1, Ordering::Relaxed);
                g.wait()
            }
            _ => Ok(()),
        }
    }

    /// Starts reading `buf` back. The copy is ordered after all work issued so far; the returned handle
    /// is polled with `ready()` or waited on with `wait()`.
    pub fn download(&self, buf: &Buffer) -> Result<Download> {
        if self.capturing() {
            return Err(Error::invalid("download", "downloads cannot be captured: read results after replay"));
        }
        self.check_owner("download", buf)?;
        let counters = self.inner.counters.clone();
        match (&self.inner.engine, &buf.inner.raw) {
            (Engine::Cpu, Raw::Cpu(v)) => {
                Ok(Download { state: DownloadState::Ready(v.read().unwrap()[..buf.words()].to_vec()), counters })
            }
            (Engine::Gpu(g), Raw::Gpu(raw)) => {
                Ok(Download { state: DownloadState::Gpu(g.download(raw, buf.words())?), counters })
            }
            _ => Err(Error::invalid("download", "buffer belongs to another device")),
        }
    }

    /// Download and wait: the blocking helper.
    pub fn read_u32(&self, buf: &Buffer) -> Result<Vec<u32>> {
        self.download(buf)?.wait()
    }

    pub fn read_f32(&self, buf: &Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_vec(self.read_u32(buf)?))
    }

    /// Prepares a fixed list of dispatches for repeated replay: pipelines, bind groups and uniform data
    /// are made here, once; `replay` then costs one command encoding and one queue submission.
    pub fn record(&self, dispatches: Vec<Dispatch>) -> Result<Recording> {
        for d in &dispatches {
            self.validate(d)?;
        }
        let raw = dispatches.into_iter().map(|d| to_raw(d, None)).collect();
        self.finish_recording(raw, Vec::new(), 0)
    }

    /// Runs `f` once with every dispatch recorded rather than run and every allocation served from a
    /// pool private to this capture, and returns `f`'s result with the recording. Tensors that `f`
    /// drops free their memory for later tensors of the capture; tensors it returns stay valid and are
    /// written by each replay. Uploads and downloads inside `f` are errors.
    pub fn capture<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, Recording)> {
        self.flush()?;
        {
            let mut pools = self.inner.pools.lock().unwrap();
            if pools.capture.is_some() {
                return Err(Error::invalid("capture", "a capture is already running on this device"));
            }
            pools.next_capture += 1;
            let id = pools.next_capture;
            pools.capture =
                Some(Capture { id, free: HashMap::new(), owned: Vec::new(), dispatches: Vec::new(), live: 0, peak: 0 });
        }
        let out = f();
        let c = self.inner.pools.lock().unwrap().capture.take().expect("capture state");
        let out = out?;
        let rec = self.finish_recording(c.dispatches, c.owned, c.peak)?;
        Ok((out, rec))
    }

    fn finish_recording(&self, dispatches: Vec<RawDispatch>, owned: Vec<Raw>, peak: u64) -> Result<Recording> {
        let gpu = match &self.inner.engine {
            Engine::Cpu => None,
            Engine::Gpu(g) => Some(g.prepare(&dispatches)?),
        };
        let allocated = owned.iter().map(Raw::capacity).sum();
        Ok(Recording {
            dispatches,
            gpu,
            _owned: owned,
            planned_peak_bytes: peak,
            allocated_bytes: allocated,
            device: Arc::downgrade(&self.inner),
        })
    }

    /// Runs a recording: on a GPU, one command buffer and one submission, no wait.
    pub fn replay(&self, rec: &Recording) -> Result<()> {
        if !rec.device.ptr_eq(&Arc::downgrade(&self.inner)) {
            return Err(Error::invalid("replay", "recording was made on another device"));
        }
        self.inner.counters.dispatches.fetch_add(rec.dispatches.len() as u64, Ordering::Relaxed);
        match (&self.inner.engine, &rec.gpu) {
            (Engine::Gpu(g), Some(p)) => g.replay(p),
            _ => {
                let mut prof = self.inner.profile.lock().unwrap();
                match prof.as_mut() {
                    None => rec.dispatches.iter().for_each(run_cpu),
                    Some(p) => {
                        for d in &rec.dispatches {
                            let t = std::time::Instant::now();
                            run_cpu(d);
                            let e = p.entry((d.kernel.shader, d.kernel.entry)).or_default();
                            e.0 += 1;
                            e.1 += t.elapsed().as_secs_f64();
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// CPU backend: starts (or stops and clears) timing each kernel of the recordings replayed.
    pub fn set_profiling(&self, on: bool) {
        *self.inner.profile.lock().unwrap() = on.then(HashMap::new);
    }

    /// CPU backend, profiling on: (kernel, calls, seconds) over the replays so far, slowest first.
    pub fn profile(&self) -> Vec<(String, u64, f64)> {
        let prof = self.inner.profile.lock().unwrap();
        let mut v: Vec<(String, u64, f64)> =
            prof.iter().flatten().map(|((s, e), &(n, t))| (format!("{s}::{e}"), n, t)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Replays `rec` once, waits, and returns the GPU time between the start and end of its compute
    /// pass in seconds, from timestamp queries. None where the adapter has no timestamp queries.
    pub fn replay_timed(&self, rec: &Recording) -> Result<Option<f64>> {
        match (&self.inner.engine, &rec.gpu) {
            (Engine::Gpu(g), Some(p)) if g.timestamps => {
                self.inner.counters.dispatches.fetch_add(rec.dispatches.len() as u64, Ordering::Relaxed);
                g.replay_timed(p).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Checks a dispatch against the kernel's bindings and the device's limits, before wgpu sees it.
    fn validate(&self, d: &Dispatch) -> Result<()> {
        let info = d.kernel.info()?;
        let storage = &info.bindings[1..];
        if d.buffers.len() != storage.len() {
            return Err(Error::invalid(
                "dispatch",
                format!("{} takes {} buffers, got {}", d.kernel.name(), storage.len(), d.buffers.len()),
            ));
        }
        if d.params.len() < info.bindings[0].size as usize {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "{}: params are {} bytes, the shader's struct is {}",
                    d.kernel.name(),
                    d.params.len(),
                    info.bindings[0].size
                ),
            ));
        }
        for (b, binfo) in d.buffers.iter().zip(storage) {
            if !b.inner.device.ptr_eq(&Arc::downgrade(&self.inner)) {
                return Err(Error::invalid(
                    "dispatch",
                    format!("{}: buffer `{}` belongs to another device", d.kernel.name(), binfo.name),
                ));
            }
        }
        // A buffer written by a dispatch may not be bound twice in it (wgpu forbids it on the GPU).
        for (i, (b, bi)) in d.buffers.iter().zip(storage).enumerate() {
            if bi.kind != BindingKind::StorageReadWrite {
                continue;
            }
            for (j, c) in d.buffers.iter().enumerate() {
                if i != j && Arc::ptr_eq(&b.inner, &c.inner) {
                    return Err(Error::invalid(
                        "dispatch",
                        format!("{}: output `{}` is also bound as binding {}", d.kernel.name(), bi.name, j + 1),
                    ));
                }
            }
        }
        let max = self.max_groups_per_dim();
        for (axis, &n) in d.groups.iter().enumerate() {
            if n > max {
                return Err(Error::LimitExceeded {
                    what: format!("{} with workgroups {:?} (axis {axis})", d.kernel.name(), d.groups),
                    requested: n as u64,
                    limit_name: "max_compute_workgroups_per_dimension",
                    limit: max as u64,
                });
            }
        }
        match &self.inner.engine {
            Engine::Gpu(g) => g.check_entry(d.kernel, info)?,
            Engine::Cpu if cpu::twin(d.kernel).is_none() => {
                return Err(Error::Other(format!("{} has no CPU twin in device::cpu::twin", d.kernel.name())))
            }
            Engine::Cpu => {}
        }
        Ok(())
    }
}

/// Converts a validated dispatch to raw form. Buffers stamped with `capture` belong to that capture
/// (its recording owns their memory); any other buffer is kept alive by the dispatch itself.
fn to_raw(d: Dispatch, capture: Option<u64>) -> RawDispatch {
    let buffers = d.buffers.iter().map(|b| (b.inner.raw.clone(), b.words())).collect();
    let keep = d.buffers.into_iter().filter(|b| capture.is_none_or(|id| b.inner.stamp != id)).collect();
    RawDispatch { kernel: d.kernel, params: d.params, buffers, groups: d.groups, _keep: keep }
}

fn run_cpu(d: &RawDispatch) {
    let info = d.kernel.info().expect("validated");
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for ((raw, words), bi) in d.buffers.iter().zip(&info.bindings[1..]) {
        let Raw::Cpu(v) = raw else { unreachable!("validated: CPU buffers on the CPU backend") };
        match bi.kind {
            BindingKind::StorageReadWrite => writes.push((v.write().unwrap(), (*words).max(1))),
            _ => reads.push((v.read().unwrap(), (*words).max(1))),
        }
    }
    let twin = cpu::twin(d.kernel).expect("validated: the kernel has a CPU twin");
    let mut args = cpu::CpuArgs {
        params: &d.params,
        ins: reads.iter().map(|(g, n)| &g[..*n]).collect(),
        outs: writes.iter_mut().map(|(g, n)| &mut g[..*n]).collect(),
    };
    twin(&mut args);
}

pub(crate) struct BufInner {
    words: usize,
    pub(crate) raw: Raw,
    class: u64,
    /// The capture that allocated this buffer (0: none).
    stamp: u64,
    device: std::sync::Weak<DeviceInner>,
}

impl Drop for BufInner {
    fn drop(&mut self) {
        let Some(dev) = self.device.upgrade() else { return };
        let mut pools = dev.pools.lock().unwrap();
        if self.stamp == 0 {
            // Safe to reuse at once: every use of this memory is already submitted or pending ahead of
            // any later use in queue order (pending work holds raw handles, not this buffer).
            pools.free.entry(self.class).or_default().push(self.raw.clone());
            return;
        }
        match pools.capture.as_mut() {
            Some(c) if c.id == self.stamp => {
                c.live -= (self.words.max(1) * 4) as u64;
                c.free.entry(self.class).or_default().push(self.raw.clone());
            }
            // The capture ended: its recording owns this memory; it is freed with the recording.
            _ => {}
        }
    }
}

/// A device buffer of 32-bit words. Clones share the buffer; the last drop returns it to the pool.
#[derive(Clone)]
pub struct Buffer {
    pub(crate) inner: Arc<BufInner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} words)", self.inner.words)
    }
}

impl Buffer {
    pub fn words(&self) -> usize {
        self.inner.words
    }
    pub fn same(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A prepared list of dispatches (see `Device::record` and `Device::capture`).
pub struct Recording {
    dispatches: Vec<RawDispatch>,
    gpu: Option<gpu::Prepared>,
    /// Memory allocated inside the capture: freed with the recording, never returned to the pool, since
    /// tensors that the capture returned may still use it.
    _owned: Vec<Raw>,
    /// Largest sum of live tensor sizes during the capture (bytes).
    pub planned_peak_bytes: u64,
    /// Bytes of buffers the capture allocated (size classes and reuse gaps included).
    pub allocated_bytes: u64,
    device: std::sync::Weak<DeviceInner>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({} dispatches, planned peak {} B)", self.dispatches.len(), self.planned_peak_bytes)
    }
}

impl Recording {
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
}

enum DownloadState {
    Ready(Vec<u32>),
    Gpu(gpu::PendingRead),
    Taken,
}

/// A read-back in flight.
pub struct Download {
    state: DownloadState,
    counters: Arc<Counters>,
}

impl Download {
    /// Polls without blocking; true once the data is on the host.
    pub fn ready(&mut self) -> Result<bool> {
        match &mut self.state {
            DownloadState::Ready(_) => Ok(true),
            DownloadState::Gpu(p) => p.poll(),
            DownloadState::Taken => Ok(false),
        }
    }

    /// Blocks until the data is on the host and returns it.
    pub fn wait(mut self) -> Result<Vec<u32>> {
        match std::mem::replace(&mut self.state, DownloadState::Taken) {
            DownloadState::Ready(v) => Ok(v),
            DownloadState::Gpu(mut p) => {
                if !p.poll()? {
                    self.counters.blocking_waits.fetch_add(1, Ordering::Relaxed);
                }
                p.wait()
            }
            DownloadState::Taken => Err(Error::Other("download already taken".into())),
        }
    }
}
