//! Device memory: buffers from a pool of size classes (private to a capture while one runs), uploads,
//! writes and read-backs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::{gpu, Counters, Device, DeviceInner, Engine, RawDispatch, POISON};
use crate::error::{Error, Result};

/// The memory behind a `Buffer`, shareable without keeping the `Buffer` (and so its pool slot) alive.
#[derive(Clone)]
pub(crate) enum Raw {
    Cpu(Arc<RwLock<Vec<u32>>>),
    Gpu(wgpu::Buffer),
}

impl Raw {
    pub(super) fn capacity(&self) -> u64 {
        match self {
            Raw::Cpu(v) => v.read().unwrap().len() as u64 * 4,
            Raw::Gpu(b) => b.size(),
        }
    }
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
pub(super) struct Pools {
    pub(super) free: HashMap<u64, Vec<Raw>>,
    pub(super) capture: Option<Capture>,
    pub(super) next_capture: u64,
}

pub(super) struct Capture {
    pub(super) id: u64,
    pub(super) free: HashMap<u64, Vec<Raw>>,
    pub(super) owned: Vec<Raw>,
    pub(super) dispatches: Vec<RawDispatch>,
    pub(super) live: u64,
    pub(super) peak: u64,
}

impl Device {
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

    pub(super) fn create_raw(&self, class: u64) -> Raw {
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

    pub(super) fn capturing(&self) -> bool {
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

    pub(super) fn check_owner(&self, op: &'static str, b: &Buffer) -> Result<()> {
        if b.inner.device.ptr_eq(&Arc::downgrade(&self.inner)) {
            Ok(())
        } else {
            Err(Error::invalid(op, "buffer belongs to another device"))
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

    /// Whether the device can run the f16 storage kernels (cast, matmul_half): always on the CPU; on a
    /// GPU where the adapter has WebGPU's downlevel SHADER_F16_IN_F32 (every conformant one).
    pub fn has_f16_storage(&self) -> bool {
        match &self.inner.engine {
            Engine::Cpu => true,
            Engine::Gpu(g) => g.f16_storage,
        }
    }

    /// Download and wait, as f32 words.
    pub fn read_f32(&self, buf: &Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_vec(self.read_u32(buf)?))
    }
}

pub(crate) struct BufInner {
    pub(super) words: usize,
    pub(crate) raw: Raw,
    pub(super) class: u64,
    /// The capture that allocated this buffer (0: none).
    pub(super) stamp: u64,
    pub(super) device: std::sync::Weak<DeviceInner>,
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
    /// Length in 32-bit words.
    pub fn words(&self) -> usize {
        self.inner.words
    }
    /// Whether both handles share one buffer.
    pub fn same(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
    /// A handle that names this buffer without keeping it alive.
    pub(crate) fn downgrade(&self) -> WeakBuffer {
        WeakBuffer(Arc::downgrade(&self.inner))
    }
}

/// A buffer named without being kept alive (`Buffer::downgrade`).
pub(crate) struct WeakBuffer(std::sync::Weak<BufInner>);

impl WeakBuffer {
    /// Whether the buffer is still alive.
    pub fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
    /// Whether `b` is this buffer (while it is alive, its address is its own).
    pub fn is(&self, b: &Buffer) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&b.inner))
    }
    /// The buffer, if it is still alive.
    pub fn upgrade(&self) -> Option<Buffer> {
        self.0.upgrade().map(|inner| Buffer { inner })
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

    /// Waits until the data is on the host and returns it: `wait` awaited (see readback.rs for how each
    /// target waits). Not counted as a blocking wait.
    pub async fn wait_async(mut self) -> Result<Vec<u32>> {
        match std::mem::replace(&mut self.state, DownloadState::Taken) {
            DownloadState::Ready(v) => Ok(v),
            DownloadState::Gpu(p) => p.wait_async().await,
            DownloadState::Taken => Err(Error::Other("download already taken".into())),
        }
    }

    /// `f32` awaited: the first value as an f32 (how a loss comes back).
    pub async fn f32_async(self) -> Result<f32> {
        first_f32(self.wait_async().await?)
    }

    /// Blocks until the data is on the host and returns its first value as an f32: how a loss (a
    /// one-element f32 tensor, e.g. `Trainer::read_loss`) comes back.
    pub fn f32(self) -> Result<f32> {
        first_f32(self.wait()?)
    }
}

fn first_f32(words: Vec<u32>) -> Result<f32> {
    words.first().map(|&b| f32::from_bits(b)).ok_or_else(|| Error::Other("download of an empty buffer".into()))
}
