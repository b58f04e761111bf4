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
//! Waiting: device creation, read-backs and `wait` have async forms (`Device::new_async`,
//! `Download::wait_async`, `Device::wait_async`, ...) that every target can await; in a browser they are
//! the only ones that wait, since nothing may block its event loop. The blocking forms stay for native
//! code and are built on the async ones.
//!
//! Memory: buffers come from a pool of size classes on both engines. `Device::capture` runs ordinary
//! eager code once with dispatches recorded instead of run and allocations served from a pool private to
//! the capture: a tensor dropped during the capture frees its memory for later tensors of the same
//! capture (the recording's order makes that safe), so the capture's own buffers are the memory plan of
//! the step, and its peak is known before the first replay.

pub mod adapter;
mod async_forms;
pub mod cpu;
mod dispatch;
pub mod gpu;
mod memory;
mod pipeline;
mod readback;
mod recording;
pub mod tune;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Result;

pub use adapter::{AdapterSummary, BackendChoice};
pub use dispatch::Dispatch;
pub(crate) use dispatch::RawDispatch;
use memory::Pools;
pub use memory::{Buffer, Download};
pub(crate) use memory::{Raw, WeakBuffer};
pub use recording::Recording;
pub use tune::{ChoiceSource, TuneMode, TuneResult, VariantChoice};

/// A monotonic clock on every target tigel builds for: std's `Instant` natively; in a browser, where
/// std's panics, `web_time`'s (the page's `performance.now()`).
#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;
#[cfg(target_arch = "wasm32")]
pub use web_time::Instant;

/// Poison written into freshly allocated buffers when `Device::set_poison(true)`: a quiet NaN with a
/// recognisable payload, so a kernel that forgets to write an element fails any comparison.
pub const POISON: u32 = 0x7FC0_0BAD;

/// Dispatch time per (shader, entry): (dispatches, seconds), while profiling is on.
type ProfileTable = HashMap<(&'static str, &'static str), (u64, f64)>;

/// Counters that tests and benchmarks read to check the execution model (for example: one queue
/// submission per replayed step, no blocking wait inside a step).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Queue submissions.
    pub submissions: u64,
    /// Kernel dispatches issued or replayed.
    pub dispatches: u64,
    /// Times the host blocked on the GPU.
    pub blocking_waits: u64,
    /// Buffers created (pool misses).
    pub buffers_created: u64,
    /// Bytes of the buffers created.
    pub bytes_allocated: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Queue submissions.
    pub submissions: AtomicU64,
    /// Kernel dispatches issued or replayed.
    pub dispatches: AtomicU64,
    /// Times the host blocked on the GPU.
    pub blocking_waits: AtomicU64,
    /// Buffers created (pool misses).
    pub buffers_created: AtomicU64,
    /// Bytes of the buffers created.
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
    /// The engine that runs dispatches.
    pub engine: Engine,
    /// Whether new buffers are filled with `POISON`.
    pub poison: AtomicBool,
    /// Execution counters (`Device::stats`).
    pub counters: Arc<Counters>,
    /// Which backend was chosen and why.
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

    /// Like `new`, with the adapter-name filter given explicitly (a case-insensitive substring). In a
    /// browser only the CPU backend can be made this way: use `select_async` there.
    pub fn select(choice: BackendChoice, adapter_filter: Option<&str>) -> Result<Device> {
        if cfg!(target_arch = "wasm32") && choice != BackendChoice::Cpu {
            return Err(crate::error::Error::DeviceRequest(
                "a browser's GPU answers only asynchronously: use Device::select_async".into(),
            ));
        }
        pollster::block_on(Device::select_async(choice, adapter_filter))
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

    /// Whether this is the CPU engine.
    pub fn is_cpu(&self) -> bool {
        matches!(self.inner.engine, Engine::Cpu)
    }

    /// The adapter's name and backend, or "cpu".
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

    /// The adapter's info (None on the CPU backend).
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

    /// Whether `replay_timed` can time recordings on this device.
    pub fn has_timestamps(&self) -> bool {
        self.gpu().is_some_and(|g| g.timestamps)
    }

    /// Fill every new buffer with `POISON` (tests use this so unwritten outputs cannot pass).
    pub fn set_poison(&self, on: bool) {
        self.inner.poison.store(on, Ordering::Relaxed);
    }

    /// The execution counters so far.
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

    /// Bytes of workgroup memory a kernel may use (for the CPU backend, unbounded): kernels with
    /// large tiles have variants for devices with less (WebGPU's default is 16 KiB).
    pub fn max_workgroup_memory(&self) -> u32 {
        match &self.inner.engine {
            Engine::Cpu => u32::MAX,
            Engine::Gpu(g) => g.limits.max_compute_workgroup_storage_size,
        }
    }

    /// Storage buffers one kernel may bind (for the CPU backend, unbounded): kernels that bind many
    /// tensors at once (the multi-tensor optimizer kernels) fall back to one tensor per dispatch below it.
    pub fn max_storage_buffers(&self) -> u32 {
        match &self.inner.engine {
            Engine::Cpu => u32::MAX,
            Engine::Gpu(g) => g.limits.max_storage_buffers_per_shader_stage,
        }
    }

    /// Largest buffer this device accepts, in bytes (for the CPU backend, a practical bound).
    pub fn max_buffer_bytes(&self) -> u64 {
        match &self.inner.engine {
            Engine::Cpu => 1 << 40,
            Engine::Gpu(g) => g.max_buffer_bytes(),
        }
    }
}
