//! tigel in a real browser: builds the page (`bash web/build.sh`), opens it in headless Chromium on
//! SwiftShader's WebGPU (`web/run.py`, DevTools over a pipe), checks that the browser's WGSL compiler
//! takes every shader without an error or a warning, and trains a few steps of each regime in the page,
//! comparing every step's losses with the same code on tigel's native CPU engine (the page's training
//! modules compiled into this test).
//!
//! Needs python3, chromium (`CHROMIUM` names another), the wasm32-unknown-unknown target and
//! wasm-bindgen-cli of the version web/Cargo.toml pins (`bash web/build.sh --tools` installs both).
//! Without them it skips with the reason, or with CI=true fails.

#[allow(dead_code)]
#[path = "../web/src/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../web/src/sample.rs"]
mod sample;
#[allow(dead_code)]
#[path = "../web/src/session.rs"]
mod session;
#[allow(dead_code)]
#[path = "../web/src/train.rs"]
mod train;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tigel::Device;

/// Steps of each regime in the page: a few, since SwiftShader runs the GPU on the CPU.
const STEPS: u32 = 3;
const SEED: u64 = 1;
/// The regimes' CPU-vs-GPU tolerance (tests/gpt.rs, tests/diffusion.rs): f32 kernels with different
/// summation orders, a few optimizer steps deep.
const REL_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let on_path = |exe: &str| Command::new(exe).arg("--version").output().is_ok_and(|o| o.status.success());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    if !on_path("python3") {
        return Some("no python3".into());
    }
    if !on_path(&chromium) {
        return Some(format!("no browser `{chromium}` (apt-get install chromium, or set CHROMIUM)"));
    }
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if !targets.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-unknown-unknown")) {
        return Some("no wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)".into());
    }
    // The CLI must be the version web/Cargo.toml pins (build.sh --tools installs it).
    let manifest = std::fs::read_to_string(root().join("web/Cargo.toml")).unwrap_or_default();
    let pinned = manifest.lines().find_map(|l| l.strip_prefix("wasm-bindgen = \"=")?.strip_suffix('"')).unwrap_or("?");
    let cli = Command::new("wasm-bindgen").arg("--version").output();
    if !cli.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("wasm-bindgen {pinned}")) {
        return Some(format!("no wasm-bindgen {pinned} (bash web/build.sh --tools installs it)"));
    }
    None
}

/// Runs the page's query in headless Chromium (`extra`: more run.py flags); the `#result` JSON.
fn page(query: &str, timeout_s: u32) -> Value {
    page_with(query, timeout_s, &[])
}

fn page_with(query: &str, timeout_s: u32, extra: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(root().join("web/run.py"))
        .args([query, "--timeout", &timeout_s.to_string()])
        .args(extra)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{query}: {text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{query}: no JSON result ({e}): {text}"))
}

fn build(target: &Path) {
    let status = Command::new("bash")
        .arg(root().join("web/build.sh"))
        .env("CARGO_TARGET_DIR", target)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash web/build.sh failed");
}

fn losses_of(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v["losses"].clone()).unwrap_or_else(|e| panic!("losses in {v}: {e}"))
}

#[test]
fn page_compiles_every_shader_and_trains_each_regime_like_the_cpu_engine() {
    if let Some(why) = missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the browser test cannot run: {why}");
        }
        eprintln!("skipping the browser test: {why}");
        return;
    }
    // The wasm build goes beside this crate's own builds, in a directory of its own (a cargo inside
    // cargo test must not wait on the outer build's lock).
    build(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web"));

    let shaders = page("run=shaders", 600);
    assert_eq!(shaders["ok"], true, "the browser's WGSL compiler: {shaders}");
    for limits in ["adapter_limits", "webgpu_defaults"] {
        let r = &shaders[limits];
        assert_eq!(r["compiled"], r["shaders"], "{limits}: every shader family compiles: {r}");
        assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{limits}: compiler errors: {r}");
        assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{limits}: compiler warnings: {r}");
    }

    // The demo itself: its training loop, a sample, and a save and a load in the page.
    let demo = page("demo=gan&data=ring8&steps=3&seed=1", 600);
    assert_eq!(demo["ok"], true, "the demo: {demo}");
    assert_eq!(demo["loaded_step"], 3, "the demo's checkpoint: {demo}");
    // Without WebGPU the page says so and trains on the CPU engine in wasm.
    let fallback = page_with("demo=diffusion&data=ring8&steps=3&seed=1", 600, &["--no-webgpu"]);
    assert_eq!(
        (&fallback["ok"], &fallback["webgpu"], &fallback["backend"]),
        (&json!(true), &json!(false), &json!("cpu"))
    );

    let cpu = Device::cpu();
    for (regime, data) in
        [("gpt", "ring8"), ("gan", "ring8"), ("diffusion", "ring8"), ("gan", "shapes"), ("diffusion", "shapes")]
    {
        let query = format!("run={regime}&data={data}&steps={STEPS}&seed={SEED}");
        let got = page(&query, 600);
        assert_eq!(got["ok"], true, "{query}: {got}");
        let want = pollster::block_on(train::losses(&cpu, regime, data::Data::parse(data).unwrap(), STEPS, SEED))
            .unwrap_or_else(|e| panic!("{regime} on {data} on the CPU engine: {e}"));
        let got = losses_of(&got);
        assert_eq!(got.len(), want.losses.len(), "{query}: steps");
        let mut worst = 0.0f32;
        for (s, (g, w)) in got.iter().zip(&want.losses).enumerate() {
            assert_eq!(g.len(), want.names.len(), "{query} step {s}: losses");
            for (name, (x, y)) in want.names.iter().zip(w.iter().zip(g)) {
                let rel = ((x - y) / x).abs();
                assert!(rel <= REL_TOL, "{query} step {s} {name}: cpu {x}, webgpu {y}");
                worst = worst.max(rel);
            }
        }
        eprintln!("{regime} on {data}: every step's losses within {worst:.1e} relative of the CPU engine's");
    }
}

/// The page's checkpoint is the file `tigel train` writes: a session saved to bytes and loaded back
/// trains on exactly as the one that was not saved (natively on the CPU engine, the same code).
#[test]
fn page_checkpoints_resume_exactly() {
    let cpu = Device::cpu();
    for (regime, data) in [("gpt", "ring8"), ("gan", "ring8"), ("diffusion", "ring8"), ("diffusion", "shapes")] {
        let data = data::Data::parse(data).unwrap();
        let mut a = session::Session::new(&cpu, regime, data, 50, SEED).unwrap();
        for _ in 0..2 {
            a.step(&cpu).unwrap();
        }
        let bytes = pollster::block_on(a.checkpoint(&cpu)).unwrap().to_bytes().unwrap();
        let ck = tigel::checkpoint::Checkpoint::from_bytes(Path::new("page.safetensors"), &bytes).unwrap();
        assert_eq!(ck.step, 2);
        let mut b = session::Session::from_checkpoint(&cpu, &ck).unwrap();
        assert_eq!((b.regime(), b.data, b.step), (regime, data, 2));
        a.step(&cpu).unwrap();
        b.step(&cpu).unwrap();
        let (la, lb) = (pollster::block_on(a.losses(&cpu)).unwrap(), pollster::block_on(b.losses(&cpu)).unwrap());
        assert_eq!(la, lb, "{regime}: the step after a save and a load");
        // What the page draws from it: the models `tigel sample` loads, through its samplers.
        let shown = sample::sample(&ck, "fn ", 4, 1).unwrap();
        let kind = if regime == "gpt" {
            "text"
        } else if data == data::Data::Ring8 {
            "points"
        } else {
            "images"
        };
        assert_eq!(shown["kind"], kind, "{regime}: {shown}");
    }
}
