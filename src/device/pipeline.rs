//! Pipelines of the wgpu engine: one shader module per family and one pipeline per entry point, made on
//! first use after checking the entry point against the device's limits, with the driver's verdict
//! awaited (`pipe_async`) or, natively, waited for (`pipe`).

use std::num::NonZeroU64;
use std::sync::Arc;

use super::dispatch::RawDispatch;
use super::gpu::GpuEngine;
use super::tune::size_class;
use crate::error::{Error, Result};
use crate::kernels::{BindingKind, EntryInfo, Kernel};

/// A compute pipeline, its bind group layout and the size of its params struct.
pub(crate) struct Pipe {
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) layout: wgpu::BindGroupLayout,
    pub(super) params_size: u64,
    /// The variant it runs divides the family's grid by these (its tiles are that much larger).
    pub(super) grid_div: [u32; 3],
}

impl Pipe {
    /// The grid of a dispatch made for the family kernel, as this pipeline's variant needs it.
    pub(super) fn groups(&self, g: [u32; 3]) -> [u32; 3] {
        [0, 1, 2].map(|i| g[i].div_ceil(self.grid_div[i]))
    }
}

impl GpuEngine {
    fn module(&self, shader: &'static str) -> Result<wgpu::ShaderModule> {
        let mut m = self.modules.lock().unwrap();
        if let Some(x) = m.get(shader) {
            return Ok(x.clone());
        }
        let info = crate::kernels::shader(shader).ok_or_else(|| Error::Other(format!("no shader `{shader}`")))?;
        // A browser's compiler requires the `enable` directives that naga (native) refuses.
        let source = if self.info.backend == wgpu::Backend::BrowserWebGpu {
            info.source_with_enables()
        } else {
            info.source.into()
        };
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(source),
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

    /// Makes the pipeline of exactly `k` (a family kernel's own form or one variant: callers resolve
    /// first, device::tune); errors in it go to the current error scope or the uncaptured-error handler.
    fn build_pipe(&self, k: &'static Kernel) -> Result<Pipe> {
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
        let grid_div = k.shader_info().map_or([1, 1, 1], |s| s.grid_div);
        Ok(Pipe { pipeline, layout, params_size: info.bindings[0].size as u64, grid_div })
    }

    fn cached_pipe(&self, k: &'static Kernel) -> Option<Arc<Pipe>> {
        self.pipes.lock().unwrap().get(&(k.shader, k.entry)).cloned()
    }

    fn cache_pipe(&self, k: &'static Kernel, p: Pipe) -> Arc<Pipe> {
        let p = Arc::new(p);
        self.pipes.lock().unwrap().insert((k.shader, k.entry), p.clone());
        p
    }

    /// The pipeline of `k` as the variant this device runs for it at any size, made on first use with
    /// its validation errors awaited: a kernel the driver rejects is an error naming it.
    pub async fn pipe_async(&self, k: &'static Kernel) -> Result<Arc<Pipe>> {
        let k = self.resolve(k);
        if let Some(p) = self.cached_pipe(k) {
            return Ok(p);
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let p = self.build_pipe(k)?;
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!("creating pipeline {}: {e}", k.name())));
        }
        Ok(self.cache_pipe(k, p))
    }

    /// The pipeline a dispatch runs: for a family kernel, the variant this device runs at the
    /// dispatch's size (device::tune); a dispatch made for one exact variant (timing) runs that one.
    pub(super) fn pipe_for(&self, d: &RawDispatch) -> Result<Arc<Pipe>> {
        let k = if d.exact { d.kernel } else { self.resolve_sized(d.kernel, Some(size_class(d.groups))) };
        self.pipe_exact(k)
    }

    /// The pipeline of exactly `k`, made on first use. In a browser the driver's verdict arrives only
    /// through its event loop, so there an invalid pipeline surfaces at the next submission or read
    /// instead (`pipe_async` checks one at once).
    fn pipe_exact(&self, k: &'static Kernel) -> Result<Arc<Pipe>> {
        if let Some(p) = self.cached_pipe(k) {
            return Ok(p);
        }
        if cfg!(target_arch = "wasm32") {
            let p = self.build_pipe(k)?;
            return Ok(self.cache_pipe(k, p));
        }
        // `k` is exact: resolving it again in pipe_async returns it.
        pollster::block_on(self.pipe_async(k))
    }

    /// The compiler's messages (errors, warnings, notes) on shader family `shader`, one line each with
    /// its line and column in the composed source and that line's text.
    pub async fn shader_messages_async(&self, shader: &'static str) -> Result<Vec<String>> {
        let module = self.module(shader)?;
        let info = module.get_compilation_info().await;
        let source = crate::kernels::shader(shader).map(|s| s.source).unwrap_or_default();
        Ok(info
            .messages
            .iter()
            .map(|m| {
                let kind = match m.message_type {
                    wgpu::CompilationMessageType::Error => "error",
                    wgpu::CompilationMessageType::Warning => "warning",
                    wgpu::CompilationMessageType::Info => "info",
                };
                match &m.location {
                    Some(l) => {
                        let line = source.lines().nth(l.line_number.saturating_sub(1) as usize).unwrap_or("");
                        format!("{kind} at {}:{}: {} | {}", l.line_number, l.line_position, m.message, line.trim())
                    }
                    None => format!("{kind}: {}", m.message),
                }
            })
            .collect())
    }
}
