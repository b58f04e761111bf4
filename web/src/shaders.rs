//! The shader test: every shader family tigel ships through the browser's WGSL compiler, every kernel's
//! pipeline made with the driver's verdict awaited, on the adapter's own limits and on WebGPU's default
//! limits (where kernels too big for them must be refused by tigel's limit check, not by the browser,
//! and have a variant that fits); and a few kernels run against their CPU twins.

use serde_json::{json, Value};
use tigel::kernels::chnorm::CHNORM_BWD_GROUP_ACC;
use tigel::kernels::muon::{MUON_MOMENTUM_MULTI, MUON_MOMENTUM_MULTI_WIDE, MUON_UPDATE_MULTI, MUON_UPDATE_MULTI_WIDE};
use tigel::kernels::optim::{
    ADAM_MULTI, ADAM_MULTI_WIDE, EMA_MULTI, EMA_MULTI_WIDE, SGD_MULTI, SUMSQ_MULTI, SUMSQ_MULTI_WIDE,
};
use tigel::kernels::qknorm::{QK_NORM_BWD_FUSED, QK_NORM_BWD_FUSED_HALF};
use tigel::kernels::{Kernel, ALL_KERNELS, SHADERS};
use tigel::{Device, Tensor};

use crate::web_device;

/// The compiler's messages on every family and each kernel's pipeline, on `dev`.
async fn compile_all(dev: &Device) -> Value {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut compiled = 0;
    // A module that needs a feature the device lacks is not the browser's to compile: wgpu 30's WebGPU
    // backend does not request the browser's `subgroups` feature, so the subgroup variants never run
    // here (the engine picks the workgroup-memory forms) and would only be refused.
    let (needs_subgroups, checked): (Vec<_>, Vec<_>) =
        SHADERS.iter().partition(|s| s.subgroups && dev.subgroup_sizes().is_none());
    for s in &checked {
        match dev.shader_messages_async(s.name).await {
            Ok(msgs) => {
                let mut bad = false;
                for m in msgs {
                    let line = format!("{}: {m}", s.name);
                    if m.starts_with("error") {
                        bad = true;
                        errors.push(line);
                    } else {
                        warnings.push(line);
                    }
                }
                compiled += usize::from(!bad);
            }
            Err(e) => errors.push(format!("{}: {e}", s.name)),
        }
    }
    let (mut pipelines, mut refused) = (0, Vec::new());
    // Kernels the ops dispatch only where the device binds all their storage buffers (up to 62): below
    // that the optimizers take fewer tensors per dispatch or one (`ops::optim_multi`, `ops::muon`), the
    // QK-norm backward runs as two kernels (`ops::qknorm`) and a group norm's backward that adds an
    // earlier gradient as three passes (`ops::chnorm`); such a device never makes them.
    let optional = [
        &ADAM_MULTI,
        &SGD_MULTI,
        &EMA_MULTI,
        &SUMSQ_MULTI,
        &ADAM_MULTI_WIDE,
        &EMA_MULTI_WIDE,
        &SUMSQ_MULTI_WIDE,
        &MUON_MOMENTUM_MULTI,
        &MUON_MOMENTUM_MULTI_WIDE,
        &MUON_UPDATE_MULTI,
        &MUON_UPDATE_MULTI_WIDE,
        &QK_NORM_BWD_FUSED,
        &QK_NORM_BWD_FUSED_HALF,
        &CHNORM_BWD_GROUP_ACC,
    ];
    let (unused, kernels): (Vec<&&Kernel>, Vec<&&Kernel>) = ALL_KERNELS
        .iter()
        .partition(|k| optional.iter().any(|o| o.name() == k.name()) && !tigel::ops::optim_multi::fits(dev, k));
    for k in &kernels {
        match dev.prepare_kernel_async(k).await {
            Ok(()) => pipelines += 1,
            Err(e @ tigel::Error::LimitExceeded { .. }) => refused.push(format!("{}: {e}", k.name())),
            Err(e) => errors.push(format!("{}: {e}", k.name())),
        }
    }
    json!({
        "shaders": checked.len(),
        "compiled": compiled,
        "not_for_this_device": needs_subgroups.iter().map(|s| s.name.to_string()).chain(unused.iter().map(|k| k.name())).collect::<Vec<_>>(),
        "kernels": kernels.len(),
        "pipelines": pipelines,
        "over_limits": refused,
        "errors": errors,
        "warnings": warnings,
        "workgroup_memory": dev.max_workgroup_memory(),
    })
}

/// The shader test's report: `ok` when no family has an error or a warning, every kernel's pipeline
/// was made on the adapter's limits, and on WebGPU's defaults every kernel refused has a variant that
/// was made.
pub async fn run() -> Value {
    let full = match web_device(false).await {
        Ok(d) => d,
        Err(e) => return json!({ "ok": false, "error": e }),
    };
    let adapter_limits = compile_all(&full).await;
    let small = match web_device(true).await {
        Ok(d) => d,
        Err(e) => return json!({ "ok": false, "error": e }),
    };
    let defaults = compile_all(&small).await;
    let none = |v: &Value, key: &str| v[key].as_array().is_some_and(|a| a.is_empty());
    let refused_have_variants = defaults["over_limits"]
        .as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str().is_some_and(|m| m.starts_with("attention::"))));
    let ok = none(&adapter_limits, "errors")
        && none(&adapter_limits, "warnings")
        && none(&adapter_limits, "over_limits")
        && adapter_limits["pipelines"] == adapter_limits["kernels"]
        && none(&defaults, "errors")
        && refused_have_variants;
    json!({
        "test": "shaders",
        "device": full.note(),
        "adapter_limits": adapter_limits,
        "webgpu_defaults": defaults,
        "ok": ok,
    })
}

/// Max |a - b| over two equal-length slices.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Attention forward and a matmul on `dev` against the CPU engine, on fixed pseudo-random inputs.
async fn compare(dev: &Device, cpu: &Device, head_dim: usize) -> Result<Value, tigel::Error> {
    let (b, t, h) = (2, 33, 2);
    let mut rng = tigel::host::Rng::new(7);
    let qkv: Vec<f32> = (0..b * t * 3 * h * head_dim).map(|_| rng.uniform(-1.5, 1.5)).collect();
    let a: Vec<f32> = (0..64 * 48).map(|_| rng.uniform(-0.5, 0.5)).collect();
    let w: Vec<f32> = (0..48 * 40).map(|_| rng.uniform(-0.5, 0.5)).collect();
    let mut outs = Vec::new();
    for d in [dev, cpu] {
        let x = Tensor::from_f32(d, &[b, t, 3 * h * head_dim], &qkv)?;
        let (out, lse) = tigel::ops::attention::attention(d, &x, h, true)?;
        let ta = Tensor::from_f32(d, &[64, 48], &a)?;
        let tw = Tensor::from_f32(d, &[48, 40], &w)?;
        let y = tigel::ops::matmul::matmul(d, &ta, &tw, Default::default())?;
        outs.push([
            d.read_f32_async(&out.buf).await?,
            d.read_f32_async(&lse.buf).await?,
            d.read_f32_async(&y.buf).await?,
        ]);
    }
    Ok(json!({
        "head_dim": head_dim,
        "attention_out": max_diff(&outs[0][0], &outs[1][0]),
        "attention_lse": max_diff(&outs[0][1], &outs[1][1]),
        "matmul": max_diff(&outs[0][2], &outs[1][2]),
    }))
}

/// Kernels on WebGPU (adapter limits, and WebGPU's defaults where attention takes the small tiles)
/// against the CPU engine running in wasm. `ok` when every difference is within 1e-4.
pub async fn ops() -> Value {
    let cpu = Device::cpu();
    let mut rows = Vec::new();
    for defaults in [false, true] {
        let dev = match web_device(defaults).await {
            Ok(d) => d,
            Err(e) => return json!({ "ok": false, "error": e }),
        };
        for head_dim in [16, 64] {
            match compare(&dev, &cpu, head_dim).await {
                Ok(mut v) => {
                    v["webgpu_defaults"] = json!(defaults);
                    rows.push(v)
                }
                Err(e) => return json!({ "ok": false, "error": e.to_string() }),
            }
        }
    }
    let ok = rows
        .iter()
        .all(|r| ["attention_out", "attention_lse", "matmul"].iter().all(|k| r[k].as_f64().is_some_and(|v| v <= 1e-4)));
    json!({ "test": "ops", "cpu": cpu.note(), "results": rows, "ok": ok })
}
