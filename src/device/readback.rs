//! Waiting for the GPU: buffer read-backs and "submitted work done", each as a future that any target can
//! await, plus the blocking forms native code uses.
//!
//! wgpu reports both through callbacks. In a browser the callbacks run from the page's event loop, so a
//! future registers its waker and returns to it; nothing may block there (the browser maps a buffer only
//! after control returns to its loop). Natively the callbacks run inside `wgpu::Device::poll`, which no
//! event loop calls for us: a pending future therefore polls the device itself, blocking until the work
//! submitted so far is done, so awaiting costs what the blocking wait costs and never spins.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// A one-shot completion set by a wgpu callback, awaited by `Signalled`.
#[derive(Default)]
pub(crate) struct Signal {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Marks the signal done (or failed) and wakes the task awaiting it.
    pub(crate) fn set(&self, ok: bool) {
        self.state.store(if ok { DONE } else { FAILED }, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }
}

/// Resolves once `signal` is set: Ok when done, an error naming `what` when it failed.
pub(crate) struct Signalled {
    device: wgpu::Device,
    signal: Arc<Signal>,
    what: &'static str,
}

impl Signalled {
    pub(crate) fn new(device: wgpu::Device, signal: Arc<Signal>, what: &'static str) -> Self {
        Signalled { device, signal, what }
    }

    fn result(&self) -> Poll<Result<()>> {
        match self.signal.state() {
            PENDING => Poll::Pending,
            DONE => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(Error::Gpu(format!("{} failed", self.what)))),
        }
    }
}

impl Future for Signalled {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Poll::Ready(r) = self.result() {
            return Poll::Ready(r);
        }
        // Registered before the state is read again, so a callback in between still wakes us.
        *self.signal.waker.lock().unwrap() = Some(cx.waker().clone());
        if cfg!(not(target_arch = "wasm32")) {
            // Native: the callback fires inside poll; waiting here is what the blocking form does.
            if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
                return Poll::Ready(Err(Error::Gpu(e.to_string())));
            }
            if let Poll::Ready(r) = self.result() {
                return Poll::Ready(r);
            }
            // Not ours yet (another submission finished first): try again at once.
            cx.waker().wake_by_ref();
        }
        self.result()
    }
}

/// A buffer copy on its way to the host.
pub(crate) struct PendingRead {
    device: wgpu::Device,
    staging: wgpu::Buffer,
    words: usize,
    mapped: Arc<Signal>,
}

impl PendingRead {
    /// Starts mapping `staging` (whose copy has been submitted) for reading.
    pub(crate) fn start(device: wgpu::Device, staging: wgpu::Buffer, words: usize) -> PendingRead {
        let mapped = Arc::new(Signal::default());
        let s = mapped.clone();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| s.set(r.is_ok()));
        PendingRead { device, staging, words, mapped }
    }

    /// True once the data is on the host (never blocks).
    pub(crate) fn poll(&mut self) -> Result<bool> {
        if self.mapped.state() == PENDING {
            self.device.poll(wgpu::PollType::Poll).map_err(|e| Error::Gpu(e.to_string()))?;
        }
        match self.mapped.state() {
            PENDING => Ok(false),
            DONE => Ok(true),
            _ => Err(Error::Gpu("buffer map failed".into())),
        }
    }

    /// Waits until the data is on the host and returns it.
    pub(crate) async fn wait_async(self) -> Result<Vec<u32>> {
        Signalled::new(self.device.clone(), self.mapped.clone(), "buffer map").await?;
        self.take()
    }

    /// Blocks until the data is on the host and returns it. In a browser nothing may block: there this
    /// is an error unless the data has already arrived (use `wait_async`).
    pub(crate) fn wait(mut self) -> Result<Vec<u32>> {
        if cfg!(target_arch = "wasm32") && !self.poll()? {
            return Err(Error::Gpu(
                "a blocking read-back cannot wait in a browser: use the async form (Download::wait_async)".into(),
            ));
        }
        pollster::block_on(self.wait_async())
    }

    fn take(self) -> Result<Vec<u32>> {
        let out = {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| Error::Gpu(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view)[..self.words].to_vec()
        };
        self.staging.unmap();
        Ok(out)
    }
}
