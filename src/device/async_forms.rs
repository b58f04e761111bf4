//! The async forms of the device's waiting calls: device creation, waiting for submitted work, reading
//! buffers back, and making a kernel's pipeline with the driver's verdict. Every target can await them;
//! in a browser they are the only ones that wait (see readback.rs for how each target waits).

use std::sync::Arc;

use super::{adapter, gpu, BackendChoice, Buffer, Counters, Device, DeviceInner, Engine};
use crate::error::Result;
use crate::kernels::Kernel;

impl Device {
    /// `Device::new` awaited: chooses a backend (see `BackendChoice`), honouring `TIGEL_ADAPTER` where
    /// there is an environment (not in a browser).
    pub async fn new_async(choice: BackendChoice) -> Result<Device> {
        let filter = std::env::var("TIGEL_ADAPTER").ok().filter(|s| !s.is_empty());
        Device::select_async(choice, filter.as_deref()).await
    }

    /// `Device::select` awaited: the backend `choice`, its adapter's name containing `adapter_filter`.
    pub async fn select_async(choice: BackendChoice, adapter_filter: Option<&str>) -> Result<Device> {
        match adapter::choose_async(choice, adapter_filter).await? {
            adapter::Chosen::Cpu { note } => Ok(Device::cpu_with_note(note)),
            adapter::Chosen::Gpu { adapter, note } => {
                let counters = Arc::new(Counters::default());
                let engine = gpu::GpuEngine::from_adapter_async(&adapter, counters.clone()).await?;
                Ok(Device { inner: DeviceInner::new(Engine::Gpu(engine), counters, note) })
            }
        }
    }

    /// Submits batched work and waits until the GPU has done everything submitted so far (no-op on the
    /// CPU backend and during a capture). Not counted as a blocking wait: it blocks nothing.
    pub async fn wait_async(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Gpu(g) if !self.capturing() => {
                g.flush()?;
                g.wait_async().await
            }
            _ => Ok(()),
        }
    }

    /// Reads `buf` back: `read_u32` awaited.
    pub async fn read_u32_async(&self, buf: &Buffer) -> Result<Vec<u32>> {
        self.download(buf)?.wait_async().await
    }

    /// Reads `buf` back as f32 words: `read_f32` awaited.
    pub async fn read_f32_async(&self, buf: &Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_vec(self.read_u32_async(buf).await?))
    }

    /// Makes the pipeline of kernel `k` now, awaiting the driver's verdict, so a kernel the driver
    /// rejects fails here with its name (a browser reports it no other way before the next read). It
    /// checks the entry point against the device's limits first. No-op on the CPU backend.
    pub async fn prepare_kernel_async(&self, k: &'static Kernel) -> Result<()> {
        match &self.inner.engine {
            Engine::Gpu(g) => g.pipe_async(k).await.map(drop),
            Engine::Cpu => Ok(()),
        }
    }

    /// The shader compiler's messages on shader family `shader` (errors, warnings and notes, one line
    /// each with its line and column in the composed source); empty on the CPU backend.
    pub async fn shader_messages_async(&self, shader: &'static str) -> Result<Vec<String>> {
        match &self.inner.engine {
            Engine::Gpu(g) => g.shader_messages_async(shader).await,
            Engine::Cpu => Ok(Vec::new()),
        }
    }
}
