//! tigel in a web page. The page (index.html, main.js) calls these exports and writes what they return,
//! one JSON object, into its `#result` element:
//! * `shader_test`: every shader family through the browser's own WGSL compiler (Tint in Chromium) and
//!   every kernel's pipeline, with the compiler's messages;
//! * `ops_test`: a few kernels on WebGPU against their CPU twins (the CPU engine runs in wasm too);
//! * `train`: a few training steps of a regime (see train.rs);
//! * `demo_*`: the interactive page's session (demo.rs): start, train, sample, save, load.

pub mod data;
mod demo;
pub mod sample;
pub mod session;
mod shaders;
pub mod train;

use tigel::device::BackendChoice;
use tigel::Device;
use wasm_bindgen::prelude::*;

/// The browser's WebGPU device, with the adapter's own limits (or, when `webgpu_defaults`, WebGPU's
/// default limits, as the smallest conforming device has them).
pub(crate) async fn web_device(webgpu_defaults: bool) -> Result<Device, String> {
    if !webgpu_defaults {
        return Device::select_async(BackendChoice::WebGpu, None).await.map_err(|e| e.to_string());
    }
    let instance = wgpu_instance();
    let adapter = instance.request_adapter(&Default::default()).await.map_err(|e| e.to_string())?;
    let (device, queue) = adapter
        .request_device(&tigel::wgpu::DeviceDescriptor {
            label: Some("tigel (WebGPU default limits)"),
            required_limits: tigel::wgpu::Limits::default(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Device::from_wgpu(device, queue, adapter.get_info()).map_err(|e| e.to_string())
}

fn wgpu_instance() -> tigel::wgpu::Instance {
    let mut desc = tigel::wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = tigel::wgpu::Backends::BROWSER_WEBGPU;
    tigel::wgpu::Instance::new(desc)
}

/// Compiles every shader family and makes every kernel's pipeline; returns the report as JSON.
#[wasm_bindgen]
pub async fn shader_test() -> String {
    shaders::run().await.to_string()
}

/// Runs a few kernels on WebGPU and on the CPU engine and compares; returns the report as JSON.
#[wasm_bindgen]
pub async fn ops_test() -> String {
    shaders::ops().await.to_string()
}

/// Trains `regime` on `data` for `steps` steps from `seed`; returns the report as JSON.
#[wasm_bindgen]
pub async fn train(regime: String, data: String, steps: u32, seed: u32, backend: String) -> String {
    train::run(&regime, &data, steps, seed as u64, &backend).await.to_string()
}

/// Starts the interactive session; returns `{ok, regime, data, describe, device, loss_names, step}`.
#[wasm_bindgen]
pub async fn demo_start(regime: String, data: String, seed: u32, backend: String) -> String {
    demo::reply(demo::start(&regime, &data, seed as u64, &backend).await)
}

/// Trains the session `steps` steps; returns `{ok, step, losses}`.
#[wasm_bindgen]
pub async fn demo_train(steps: u32) -> String {
    demo::reply(demo::train(steps).await)
}

/// Samples the session's model; returns `{ok, kind, ...}` (text, points or images).
#[wasm_bindgen]
pub async fn demo_sample(prompt: String, tokens: u32, seed: u32) -> String {
    demo::reply(demo::sample(&prompt, tokens as usize, seed as u64).await)
}

/// The session as a checkpoint file (safetensors with tigel's metadata, as `tigel train` saves).
#[wasm_bindgen]
pub async fn demo_save() -> Result<Vec<u8>, JsValue> {
    demo::save().await.map_err(|e| JsValue::from_str(&e.to_string()))
}

/// Replaces the session with the one a checkpoint file holds; returns `demo_start`'s answer.
#[wasm_bindgen]
pub async fn demo_load(name: String, bytes: Vec<u8>, backend: String) -> String {
    demo::reply(demo::load(&name, &bytes, &backend).await)
}
