//! Dispatches: checked against the kernel's bindings and the device's limits, then run (CPU engine),
//! batched (wgpu engine) or recorded (during a capture).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{cpu, Buffer, Device, Engine, Raw};
use crate::error::{Error, Result};
use crate::kernels::{BindingKind, Kernel};

/// One kernel launch: the kernel, its uniform params (bytes of its `#[repr(C)]` params struct), its
/// storage buffers in binding order (bindings 1..), and the workgroup grid.
#[derive(Clone)]
pub struct Dispatch {
    /// The entry point to run.
    pub kernel: &'static Kernel,
    /// Bytes of the kernel's params struct (binding 0).
    pub params: Vec<u8>,
    /// Storage buffers, bindings 1.. in order.
    pub buffers: Vec<Buffer>,
    /// Workgroups along x, y and z.
    pub groups: [u32; 3],
}

impl Dispatch {
    /// A dispatch of `kernel` with `params` (its params struct) over `buffers` and `groups`.
    pub fn new<P: bytemuck::Pod>(kernel: &'static Kernel, params: &P, buffers: &[&Buffer], groups: [u32; 3]) -> Self {
        Dispatch {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            groups,
        }
    }
}

/// A dispatch as the engines run it: raw buffers with their lengths in words, plus handles on the
/// buffers that must outlive it (those not owned by the capture or recording that holds it).
pub(crate) struct RawDispatch {
    /// The entry point to run.
    pub kernel: &'static Kernel,
    /// Bytes of the kernel's params struct (binding 0).
    pub params: Vec<u8>,
    /// Raw buffers with their lengths in words, bindings 1.. in order.
    pub buffers: Vec<(Raw, usize)>,
    /// The CPU twin, looked up once when the dispatch is made on the CPU engine (None on a GPU).
    pub twin: Option<cpu::CpuTwin>,
    /// Workgroups along x, y and z.
    pub groups: [u32; 3],
    /// Runs exactly `kernel`, not the variant the device chose for it (a candidate being timed).
    pub exact: bool,
    _keep: Vec<Buffer>,
}

impl Device {
    /// Issues one dispatch. On the CPU backend it runs now; on a GPU it is batched until the next flush.
    /// During a capture it is recorded instead.
    pub fn dispatch(&self, d: Dispatch) -> Result<()> {
        self.validate(&d)?;
        let capture = self.inner.pools.lock().unwrap().capture.as_ref().map(|c| c.id);
        if let Some(id) = capture {
            // Converted outside the lock: it may drop the last handle on a buffer, whose release locks.
            let rd = to_raw(d, Some(id), self.is_cpu());
            if let Some(c) = self.inner.pools.lock().unwrap().capture.as_mut() {
                c.dispatches.push(rd);
            }
            return Ok(());
        }
        self.inner.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        let rd = to_raw(d, None, self.is_cpu());
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

    /// Checks a dispatch against the kernel's bindings and the device's limits, before wgpu sees it.
    pub(super) fn validate(&self, d: &Dispatch) -> Result<()> {
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

impl RawDispatch {
    /// The same dispatch (params, buffers, grid) of another kernel with the same bindings: a variant,
    /// for timing it (device::tune). Holds no buffers alive: the caller's dispatch does.
    pub(crate) fn retarget(&self, kernel: &'static Kernel) -> RawDispatch {
        RawDispatch {
            kernel,
            params: self.params.clone(),
            buffers: self.buffers.clone(),
            twin: None,
            groups: self.groups,
            exact: true,
            _keep: Vec::new(),
        }
    }
}

/// Converts a validated dispatch to raw form. Buffers stamped with `capture` belong to that capture
/// (its recording owns their memory); any other buffer is kept alive by the dispatch itself. `on_cpu`:
/// the CPU engine will run it, so its twin is looked up now rather than at every run.
pub(super) fn to_raw(d: Dispatch, capture: Option<u64>, on_cpu: bool) -> RawDispatch {
    let buffers = d.buffers.iter().map(|b| (b.inner.raw.clone(), b.words())).collect();
    let keep = d.buffers.into_iter().filter(|b| capture.is_none_or(|id| b.inner.stamp != id)).collect();
    let twin = if on_cpu { cpu::twin(d.kernel) } else { None };
    RawDispatch { kernel: d.kernel, params: d.params, buffers, twin, groups: d.groups, exact: false, _keep: keep }
}

pub(super) fn run_cpu(d: &RawDispatch) {
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
    let twin = d.twin.expect("validated: the kernel has a CPU twin");
    let mut args = cpu::CpuArgs {
        params: &d.params,
        ins: reads.iter().map(|(g, n)| &g[..*n]).collect(),
        outs: writes.iter_mut().map(|(g, n)| &mut g[..*n]).collect(),
    };
    twin(&mut args);
}
