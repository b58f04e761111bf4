//! Backend and adapter choice.
//!
//! `auto` takes the best hardware GPU (discrete, then integrated, then virtual; native APIs before GL)
//! and otherwise the CPU backend. Software adapters (lavapipe, WARP, SwiftShader) are slower than
//! tigel's own CPU backend for training, so `auto` never picks them: they are used only when their
//! backend is named (`--backend vulkan` on a machine whose only Vulkan device is lavapipe).
//!
//! In a browser (wasm32) the only backend is the browser's WebGPU, which offers the one adapter it
//! chose: `auto` takes it whatever its type, since tigel's CPU engine runs single-threaded there.

use crate::error::{Error, Result};

/// Which backend `Device::new` takes (parsed from `--backend` or `TIGEL_BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The best hardware adapter, else the CPU engine.
    Auto,
    /// A Vulkan adapter.
    Vulkan,
    /// A Metal adapter.
    Metal,
    /// A DirectX 12 adapter.
    Dx12,
    /// An OpenGL (ES) adapter.
    Gl,
    /// The CPU engine (the kernels' CPU twins).
    Cpu,
    /// The browser's WebGPU (wasm32 builds with the `web` feature).
    WebGpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => BackendChoice::Auto,
            "vulkan" | "vk" => BackendChoice::Vulkan,
            "metal" => BackendChoice::Metal,
            "dx12" | "d3d12" => BackendChoice::Dx12,
            "gl" | "gles" | "opengl" => BackendChoice::Gl,
            "cpu" => BackendChoice::Cpu,
            "webgpu" | "web" => BackendChoice::WebGpu,
            _ => return Err(Error::UnknownBackend(s.to_string())),
        })
    }
}

impl BackendChoice {
    fn wgpu_backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto if cfg!(target_arch = "wasm32") => wgpu::Backends::BROWSER_WEBGPU,
            BackendChoice::Auto => {
                wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL
            }
            BackendChoice::WebGpu => wgpu::Backends::BROWSER_WEBGPU,
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
            BackendChoice::Cpu => wgpu::Backends::empty(),
        }
    }
}

/// Short lower-case name of a wgpu backend: vulkan, metal, dx12, gl.
pub fn backend_str(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

/// Short name of an adapter's device type (discrete, integrated, ...).
pub fn device_type_str(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "software",
        wgpu::DeviceType::Other => "other",
    }
}

/// Whether `auto` may take an adapter of this type: hardware only, except in a browser (see above).
fn auto_takes(t: wgpu::DeviceType) -> bool {
    cfg!(target_arch = "wasm32") || !matches!(t, wgpu::DeviceType::Cpu)
}

/// Higher is better: device type first, then native APIs over GL.
fn rank(info: &wgpu::AdapterInfo) -> u32 {
    let t = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 40,
        wgpu::DeviceType::IntegratedGpu => 30,
        wgpu::DeviceType::VirtualGpu => 20,
        wgpu::DeviceType::Other => 10,
        wgpu::DeviceType::Cpu => 0,
    };
    t + if info.backend == wgpu::Backend::Gl { 0 } else { 1 }
}

/// What `tigel info` prints about one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Backend name (`backend_str`).
    pub backend: &'static str,
    /// Device type (`device_type_str`).
    pub device_type: &'static str,
    /// Driver name.
    pub driver: String,
    /// Driver version details.
    pub driver_info: String,
    /// Names of the adapter's wgpu features.
    pub features: Vec<String>,
    /// The limits tigel cares about, by wgpu name.
    pub limits: Vec<(&'static str, u64)>,
}

impl AdapterSummary {
    /// One line: name, backend and device type.
    pub fn label(&self) -> String {
        format!("{} ({}, {})", self.name, self.backend, self.device_type)
    }

    /// The summary as JSON (for `tigel info --json` and benchmark reports).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "backend": self.backend,
            "device_type": self.device_type,
            "driver": self.driver,
            "driver_info": self.driver_info,
            "features": self.features,
            "limits": self.limits.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

pub(crate) fn summarize(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    AdapterSummary {
        // A browser may withhold the adapter's description.
        name: if info.name.is_empty() { "unnamed adapter".into() } else { info.name.clone() },
        backend: backend_str(info.backend),
        device_type: device_type_str(info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        features: a.features().iter_names().map(|(n, _)| n.to_string()).collect(),
        limits: key_limits(&a.limits()),
    }
}

/// The limits that matter to compute kernels, as name/value pairs.
pub fn key_limits(l: &wgpu::Limits) -> Vec<(&'static str, u64)> {
    vec![
        ("max_buffer_size", l.max_buffer_size),
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage as u64),
        ("max_uniform_buffer_binding_size", l.max_uniform_buffer_binding_size),
        ("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size as u64),
        ("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup as u64),
        ("max_compute_workgroup_size_x", l.max_compute_workgroup_size_x as u64),
        ("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension as u64),
        ("min_uniform_buffer_offset_alignment", l.min_uniform_buffer_offset_alignment as u64),
    ]
}

pub(crate) fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    // Validation layers only when asked for (WGPU_VALIDATION=1): tigel checks shapes and limits itself.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu sees for the given choice.
pub async fn adapters_async(choice: BackendChoice) -> Vec<wgpu::Adapter> {
    let backends = choice.wgpu_backends();
    if backends.is_empty() {
        return Vec::new();
    }
    instance(backends).enumerate_adapters(backends).await
}

/// Every adapter wgpu sees for the given choice (none in a browser, which answers only asynchronously:
/// use `adapters_async` there).
pub fn adapters(choice: BackendChoice) -> Vec<wgpu::Adapter> {
    if cfg!(target_arch = "wasm32") {
        return Vec::new();
    }
    pollster::block_on(adapters_async(choice))
}

/// Summaries of every adapter wgpu sees on any backend.
pub fn list_adapters() -> Vec<AdapterSummary> {
    adapters(BackendChoice::Auto).iter().map(summarize).collect()
}

pub(crate) enum Chosen {
    Cpu { note: String },
    Gpu { adapter: wgpu::Adapter, note: String },
}

pub(crate) async fn choose_async(choice: BackendChoice, filter: Option<&str>) -> Result<Chosen> {
    if choice == BackendChoice::Cpu {
        return Ok(Chosen::Cpu { note: format!("backend: cpu ({} threads), as asked", rayon::current_num_threads()) });
    }
    let all = adapters_async(choice).await;
    let seen = if all.is_empty() {
        "none".to_string()
    } else {
        all.iter().map(|a| summarize(a).label()).collect::<Vec<_>>().join(", ")
    };
    // `#i`: the i-th of the adapters the choice would take from, best first, modulo their number (one GPU
    // per rank of a data-parallel run).
    let index = filter.and_then(|f| f.strip_prefix('#')).and_then(|i| i.parse::<usize>().ok());
    let matches_filter = |a: &wgpu::Adapter| {
        index.is_some() || filter.is_none_or(|f| a.get_info().name.to_lowercase().contains(&f.to_lowercase()))
    };
    let filter_txt = filter.map(|f| format!(" matching TIGEL_ADAPTER=`{f}`")).unwrap_or_default();

    let mut candidates: Vec<wgpu::Adapter> = all
        .into_iter()
        .filter(|a| matches_filter(a))
        .filter(|a| choice != BackendChoice::Auto || auto_takes(a.get_info().device_type))
        .collect();
    candidates.sort_by_key(|a| std::cmp::Reverse(rank(&a.get_info())));
    let count = candidates.len();
    if let (Some(i), true) = (index, count > 0) {
        candidates.rotate_left(i % count);
    }

    match candidates.into_iter().next() {
        Some(a) => {
            let s = summarize(&a);
            let nth = index.map(|i| format!("adapter {} of {count}, TIGEL_ADAPTER=#{i}", i % count));
            let why = match &nth {
                Some(n) => n.as_str(),
                None if choice == BackendChoice::Auto => "the best hardware GPU",
                None => "as asked",
            };
            Ok(Chosen::Gpu { note: format!("backend: {} on {} ({why})", s.backend, s.label()), adapter: a })
        }
        None if choice == BackendChoice::Auto && (filter.is_none() || index.is_some()) => Ok(Chosen::Cpu {
            note: format!(
                "backend: cpu ({} threads): no hardware GPU adapter (seen: {seen}); name a backend, e.g. --backend vulkan, to use a software adapter",
                rayon::current_num_threads()
            ),
        }),
        None => Err(Error::AdapterNotFound {
            wanted: if choice == BackendChoice::Auto { "hardware GPU".into() } else { format!("{choice:?}").to_lowercase() },
            filter: filter_txt,
            seen,
        }),
    }
}
