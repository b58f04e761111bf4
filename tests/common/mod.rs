//! Shared test helpers: the devices to compare, random inputs with fresh seeds, tolerance checks, and
//! `check_op`, the one-line kernel check (CPU twin and GPU against the op's f64 reference).
#![allow(dead_code, unused_imports)]

mod binary;
mod gpt;
mod kernel;
pub use binary::*;
pub use gpt::*;
pub use kernel::*;

use std::cell::RefCell;
use tigel::device::TuneMode;
use tigel::kernels::Kernel;
use tigel::{BackendChoice, Device};

thread_local! {
    /// The kernel variant `gpu()` devices run on this test thread (`for_each_variant`).
    static VARIANT: RefCell<Option<(Vec<&'static Kernel>, String)>> = const { RefCell::new(None) };
}

/// Runs `f` once per variant of the family kernels `kernels` (which share their variants' names):
/// first the family's own workgroup-memory form, forced, then every variant the GPU can run, with
/// every `gpu()` device made inside `f` running it. `f` gets the variant's name ("" for the family).
pub fn for_each_variant(kernels: &[&'static Kernel], mut f: impl FnMut(&str)) {
    let probe = gpu();
    let mut names = vec![""];
    for v in kernels[0].variants() {
        let n = v.variant_name();
        match &probe {
            Some(d) if kernels.iter().all(|k| d.use_variant(k, n).is_ok()) => names.push(n),
            Some(_) => eprintln!("variant {n}: this adapter cannot run it, skipped"),
            None => {}
        }
    }
    drop(probe);
    for n in names {
        eprintln!("variant `{n}` of {:?}", kernels);
        VARIANT.with(|v| *v.borrow_mut() = Some((kernels.to_vec(), n.to_string())));
        f(n);
    }
    VARIANT.with(|v| *v.borrow_mut() = None);
}

/// The GPU device the equivalence tests run on: `TIGEL_TEST_BACKEND` (default vulkan, which is
/// lavapipe on a machine without a GPU). Under CI=true a missing adapter fails the test; elsewhere the
/// test prints that it skipped.
pub fn gpu() -> Option<Device> {
    let name = std::env::var("TIGEL_TEST_BACKEND").unwrap_or_else(|_| "vulkan".into());
    let choice: BackendChoice = name.parse().expect("TIGEL_TEST_BACKEND");
    match Device::new(choice) {
        Ok(d) => {
            d.set_poison(true);
            // Tests run the defaults (or the variant `for_each_variant` names), never the user's cache.
            d.set_tune_mode(TuneMode::Off);
            VARIANT.with(|v| {
                if let Some((ks, n)) = &*v.borrow() {
                    for k in ks {
                        d.use_variant(k, n).unwrap_or_else(|e| panic!("variant `{n}` of {k:?}: {e}"));
                    }
                }
            });
            Some(d)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no {name} adapter: {e}. Install mesa-vulkan-drivers for lavapipe.");
            }
            eprintln!("skipped: no {name} adapter ({e})");
            None
        }
    }
}

/// The CPU backend, with poisoned fresh buffers so an unwritten element shows as NaN.
pub fn cpu() -> Device {
    let d = Device::cpu();
    d.set_poison(true);
    d
}

/// A fresh seed per run (printed, so a failure can be replayed with TIGEL_TEST_SEED).
pub fn seed() -> u64 {
    let s = std::env::var("TIGEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("TIGEL_TEST_SEED={s}");
    s
}

/// The one host RNG (xorshift64*) for test inputs.
pub use tigel::host::Rng;

/// Fails with the worst element if any |got - want| > atol + rtol * |want|, or if `got` has a NaN
/// where `want` has none (an unwritten, poisoned element).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() && g.is_nan() {
            continue;
        }
        let err = (g - w).abs();
        let excess = if err.is_nan() { f32::INFINITY } else { err - (atol + rtol * w.abs()) };
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but should be {} (atol {atol}, rtol {rtol}; {} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// Checks a run directory's metrics.jsonl (evaluation lines exactly at `eval` steps, training lines
/// exactly at `train` steps, nothing else, each with 0 < train_s ≤ elapsed_s) and that each of `pngs` is
/// a PNG at least 256 pixels wide. Returns the metrics lines for further checks.
#[track_caller]
pub fn check_run_dir(run: &std::path::Path, eval: &[u64], train: &[u64], pngs: &[&str]) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = |kind: &str| -> Vec<u64> {
        lines.iter().filter(|l| l["kind"] == kind).map(|l| l["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps("eval"), eval);
    assert_eq!(steps("train"), train);
    assert_eq!(lines.len(), eval.len() + train.len());
    for l in &lines {
        assert!(l["train_s"].as_f64().is_some_and(|t| t > 0.0 && t <= l["elapsed_s"].as_f64().unwrap()), "{l}");
    }
    for f in pngs {
        let png = std::fs::read(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!(png.starts_with(b"\x89PNG") && width >= 256, "{f}: {width} pixels wide");
    }
    lines
}

/// The test GPU's adapter opened again with WebGPU's default limits (8 storage buffers per stage, 16 KiB
/// of workgroup memory), as a browser that offers only the defaults would give it.
pub fn webgpu_defaults_device(full: &Device) -> Device {
    webgpu_defaults_device_with(full, tigel::wgpu::Features::empty())
}

/// `webgpu_defaults_device` with the optional features `features` where the adapter has them (as a
/// browser offers subgroups).
pub fn webgpu_defaults_device_with(full: &Device, features: tigel::wgpu::Features) -> Device {
    let info = full.adapter_info().expect("a GPU device").clone();
    let choice = tigel::device::adapter::backend_str(info.backend).parse().expect("a backend tigel names");
    let adapter = tigel::device::adapter::adapters(choice)
        .into_iter()
        .find(|a| a.get_info().name == info.name)
        .expect("the test GPU's adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&tigel::wgpu::DeviceDescriptor {
        label: Some("WebGPU default limits"),
        required_features: features & adapter.features(),
        required_limits: tigel::wgpu::Limits::default(),
        ..Default::default()
    }))
    .expect("a device with WebGPU's default limits");
    let d = Device::from_wgpu(device, queue, info).unwrap();
    d.set_poison(true);
    d
}
