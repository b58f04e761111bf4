//! The device layer: one `Device` type over two engines.
//!
//! * the wgpu engine (`gpu`) runs the WGSL kernels on any Vulkan, Metal, DX12 or GL adapter;
//! * the CPU engine (`cpu`) runs each kernel's CPU twin, same name, same binding order.
//!
//! Work reaches a device as `Dispatch`es (kernel, params, buffers, workgroup grid). Eagerly issued
//! dispatches are batched and submitted together at the next `flush` (or any download); a `Recording`
//! is a fixed list of dispatches prepared once (pipelines, bind groups, uniform data) and replayed with a
//! single queue submission each time, which is how training steps run.

pub mod adapter;
pub mod cpu;
pub mod gpu;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::kernels::{BindingKind, Kernel};

pub use adapter::{AdapterSummary, BackendChoice};

/// Poison written into freshly allocated buffers when `Device::set_poison(true)`: a quiet NaN with a
/// recognisable payload, so a kernel that forgets to write an element fails any comparison.
pub const POISON: u32 = 0x7FC0_0BAD;

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

pub(crate) enum Engine {
    Cpu,
    Gpu(gpu::GpuEngine),
}

pub(crate) struct DeviceInner {
    pub engine: Engine,
    pub poison: AtomicBool,
    pub counters: Arc<Counters>,
    pub note: String,
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
        Device {
            inner: Arc::new(DeviceInner {
                engine: Engine::Cpu,
                poison: AtomicBool::new(false),
                counters: Arc::default(),
                note,
            }),
        }
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
                Ok(Device {
                    inner: Arc::new(DeviceInner {
                        engine: Engine::Gpu(engine),
                        poison: AtomicBool::new(false),
                        counters,
                        note,
                    }),
                })
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
        Ok(Device {
            inner: Arc::new(DeviceInner {
                engine: Engine::Gpu(engine),
                poison: AtomicBool::new(false),
                counters,
                note,
            }),
        })
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
        let poison = self.inner.poison.load(Ordering::Relaxed);
        let store = match &self.inner.engine {
            Engine::Cpu => {
                if bytes > self.max_buffer_bytes() {
                    return Err(Error::LimitExceeded {
                        what: format!("a buffer of {words} words"),
                        requested: bytes,
                        limit_name: "cpu max buffer",
                        limit: self.max_buffer_bytes(),
                    });
                }
                self.inner.counters.buffers_created.fetch_add(1, Ordering::Relaxed);
                let fill = if poison { POISON } else { 0 };
                Store::Cpu(RwLock::new(vec![fill; words.max(1)]))
            }
            Engine::Gpu(g) => {
                let raw = g.alloc(bytes)?;
                if poison {
                    g.fill_words(&raw, words.max(1), POISON);
                }
                Store::Gpu(raw)
            }
        };
        Ok(Buffer { inner: Arc::new(BufInner { words, store, device: Arc::downgrade(&self.inner) }) })
    }

    /// A buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() % 4 != 0 {
            return Err(Error::invalid(
                "upload",
                format!("{} bytes is not a whole number of 32-bit words", bytes.len()),
            ));
        }
        let buf = self.alloc(bytes.len() / 4)?;
        self.write(&buf, data)?;
        Ok(buf)
    }

    /// Overwrites the start of `buf` with `data`, in order with the work already issued.
    pub fn write<T: bytemuck::Pod>(&self, buf: &Buffer, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() > buf.words() * 4 || bytes.len() % 4 != 0 {
            return Err(Error::invalid(
                "write",
                format!("{} bytes do not fit a buffer of {} words", bytes.len(), buf.words()),
            ));
        }
        match (&self.inner.engine, &buf.inner.store) {
            (Engine::Cpu, Store::Cpu(v)) => {
                let mut v = v.write().unwrap();
                bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            (Engine::Gpu(g), Store::Gpu(raw)) => g.write(raw, bytes),
            _ => Err(Error::invalid("write", "buffer belongs to another device")),
        }
    }

    /// Issues one dispatch. On the CPU backend it runs now; on a GPU it is batched until the next flush.
    pub fn dispatch(&self, d: Dispatch) -> Result<()> {
        self.validate(&d)?;
        self.inner.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        match &self.inner.engine {
            Engine::Cpu => run_cpu(&d),
            Engine::Gpu(g) => g.enqueue(d),
        }
    }

    /// Submits batched work (no-op on the CPU backend). Never waits.
    pub fn flush(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Cpu => Ok(()),
            Engine::Gpu(g) => g.flush(),
        }
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Cpu => Ok(()),
            Engine::Gpu(g) => {
                g.flush()?;
                self.inner.counters.blocking_waits.fetch_add(1, Ordering::Relaxed);
                g.wait()
            }
        }
    }

    /// Starts reading `buf` back. The copy is ordered after all work issued so far; the returned handle
    /// is polled with `ready()` or waited on with `wait()`.
    pub fn download(&self, buf: &Buffer) -> Result<Download> {
        match (&self.inner.engine, &buf.inner.store) {
            (Engine::Cpu, Store::Cpu(v)) => Ok(Download {
                state: DownloadState::Ready(v.read().unwrap()[..buf.words()].to_vec()),
                counters: self.inner.counters.clone(),
            }),
            (Engine::Gpu(g), Store::Gpu(raw)) => {
                let p = g.download(raw, buf.words())?;
                Ok(Download { state: DownloadState::Gpu(p), counters: self.inner.counters.clone() })
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
        let gpu = match &self.inner.engine {
            Engine::Cpu => None,
            Engine::Gpu(g) => Some(g.prepare(&dispatches)?),
        };
        Ok(Recording { dispatches, gpu })
    }

    /// Runs a recording: on a GPU, one command buffer and one submission, no wait.
    pub fn replay(&self, rec: &Recording) -> Result<()> {
        self.inner.counters.dispatches.fetch_add(rec.dispatches.len() as u64, Ordering::Relaxed);
        match (&self.inner.engine, &rec.gpu) {
            (Engine::Cpu, _) => rec.dispatches.iter().try_for_each(run_cpu),
            (Engine::Gpu(g), Some(p)) => g.replay(p, None),
            _ => Err(Error::invalid("replay", "recording was made on another device")),
        }
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
        if let Engine::Gpu(g) = &self.inner.engine {
            g.check_entry(d.kernel, info)?;
        }
        Ok(())
    }
}

fn run_cpu(d: &Dispatch) -> Result<()> {
    let info = d.kernel.info()?;
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for (b, bi) in d.buffers.iter().zip(&info.bindings[1..]) {
        let Store::Cpu(v) = &b.inner.store else {
            return Err(Error::invalid("dispatch", "GPU buffer on the CPU backend"));
        };
        match bi.kind {
            BindingKind::StorageReadWrite => writes.push(v.write().unwrap()),
            _ => reads.push(v.read().unwrap()),
        }
    }
    let mut args = crate::kernels::CpuArgs {
        params: &d.params,
        ins: reads.iter().map(|g| &g[..]).collect(),
        outs: writes.iter_mut().map(|g| &mut g[..]).collect(),
    };
    (d.kernel.cpu)(&mut args);
    Ok(())
}

pub(crate) enum Store {
    Cpu(RwLock<Vec<u32>>),
    Gpu(gpu::RawBuffer),
}

pub(crate) struct BufInner {
    words: usize,
    pub(crate) store: Store,
    device: std::sync::Weak<DeviceInner>,
}

impl Drop for BufInner {
    fn drop(&mut self) {
        if let (Store::Gpu(raw), Some(dev)) = (&self.store, self.device.upgrade()) {
            if let Engine::Gpu(g) = &dev.engine {
                g.release(raw.clone());
            }
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

/// A prepared list of dispatches (see `Device::record`).
pub struct Recording {
    pub(crate) dispatches: Vec<Dispatch>,
    pub(crate) gpu: Option<gpu::Prepared>,
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
