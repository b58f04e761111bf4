//! Recordings: fixed lists of dispatches prepared once and replayed with one submission each, made
//! explicitly (`Device::record`) or by running eager code under `Device::capture`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::dispatch::{run_cpu, to_raw};
use super::memory::Capture;
use super::{gpu, Device, DeviceInner, Dispatch, Engine, Raw, RawDispatch};
use crate::error::{Error, Result};

impl Device {
    /// Prepares a fixed list of dispatches for repeated replay: pipelines, bind groups and uniform data
    /// are made here, once; `replay` then costs one command encoding and one queue submission.
    pub fn record(&self, dispatches: Vec<Dispatch>) -> Result<Recording> {
        for d in &dispatches {
            self.validate(d)?;
        }
        let raw = dispatches.into_iter().map(|d| to_raw(d, None, self.is_cpu())).collect();
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

    pub(super) fn finish_recording(
        &self,
        dispatches: Vec<RawDispatch>,
        owned: Vec<Raw>,
        peak: u64,
    ) -> Result<Recording> {
        let gpu = match &self.inner.engine {
            Engine::Cpu => None,
            Engine::Gpu(g) => {
                // First use of a kernel with variants: time them on these dispatches (device::tune).
                g.tune_dispatches(&dispatches)?;
                Some(g.prepare(&dispatches)?)
            }
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
                            let t = super::Instant::now();
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
    /// Number of dispatches.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    /// Whether it holds no dispatch.
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
    /// The bytes of the buffers each dispatch binds, summed over one run: each kernel reads or writes
    /// its bindings about once, so this is close to the run's memory traffic (re-reads served by
    /// caches and workgroup memory not counted; uniform params not counted).
    pub fn bytes_bound(&self) -> u64 {
        self.dispatches.iter().flat_map(|d| &d.buffers).map(|(_, words)| (*words as u64) * 4).sum()
    }

    /// The dispatches by kernel (`family::entry`), most frequent first: where fusion would pay.
    pub fn kernel_counts(&self) -> Vec<(String, usize)> {
        let mut m: HashMap<String, usize> = HashMap::new();
        for d in &self.dispatches {
            *m.entry(format!("{}::{}", d.kernel.shader, d.kernel.entry)).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}
