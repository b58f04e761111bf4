//! Models, built from `nn` layers: `gpt` (a byte-level transformer), `gan` (MLP GAN and DCGAN),
//! `ddpm` (the diffusion model's denoisers, with `unet`), `mlp` (a plain perceptron).

pub mod ddpm;
pub mod gan;
pub mod gpt;
pub mod mlp;
pub mod scores;
pub mod unet;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A config as JSON with every number written as given: f32 fields keep their shortest decimal form
/// (`0.002`, not the widened `0.0020000000949949026` a direct conversion to a JSON value gives).
pub fn config_json<T: Serialize>(cfg: &T) -> Value {
    // Through text: serde_json prints an f32 in its shortest form, which parses back to the same f32.
    let text = serde_json::to_string(cfg).expect("configs are plain data");
    serde_json::from_str(&text).expect("serde_json reads what it writes")
}

/// A run's config (config.json and the checkpoint's): the model's and the training settings' JSON and
/// the data it learns.
pub fn run_config(model: Value, train: Value, data: &str) -> Value {
    serde_json::json!({"model": model, "train": train, "data": data})
}

/// Largest whole number a stored config may hold: every size tigel builds (a layer count, a width, a
/// dimension) fits in 32 bits, and products of two such numbers cannot overflow a `usize`.
pub const CONFIG_MAX_INT: u64 = u32::MAX as u64;
/// Most entries a list in a stored config may hold (shapes and per-level multipliers are short).
pub const CONFIG_MAX_LIST: usize = 64;

/// A config from JSON (unknown keys ignored, so older and newer files load), or an error naming `what`.
/// Configs come from checkpoints, which may be damaged or hand-edited: whole numbers over
/// [`CONFIG_MAX_INT`] and lists over [`CONFIG_MAX_LIST`] entries are refused, naming the key, before any
/// model code computes sizes from them.
pub fn config_from_json<T: DeserializeOwned>(what: &'static str, v: &Value) -> Result<T> {
    check_bounds(what, "", v)?;
    T::deserialize(v).map_err(|e| Error::invalid(what, format!("{e} in {}", shorten(&v.to_string()))))
}

/// Walks `v` (at `key`, a dotted path) for numbers and lists beyond the bounds of a config.
fn check_bounds(what: &'static str, key: &str, v: &Value) -> Result<()> {
    let name = |k: &str| if k.is_empty() { "the config".to_string() } else { format!("`{k}`") };
    match v {
        Value::Number(n) if n.as_u64().is_some_and(|x| x > CONFIG_MAX_INT) => Err(Error::invalid(
            what,
            format!("{} is {n}, over the largest size a config may hold ({CONFIG_MAX_INT})", name(key)),
        )),
        Value::Array(items) if items.len() > CONFIG_MAX_LIST => Err(Error::invalid(
            what,
            format!("{} has {} entries, over the {CONFIG_MAX_LIST} a config list may hold", name(key), items.len()),
        )),
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, x)| check_bounds(what, &format!("{key}[{i}]"), x))
        }
        Value::Object(map) => map.iter().try_for_each(|(k, x)| {
            let path = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
            check_bounds(what, &path, x)
        }),
        _ => Ok(()),
    }
}

/// At most 300 characters of `s` (a config quoted in an error), cut at a character boundary.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The most values one tensor, or all of a model's parameters, may hold: kernels index with 32-bit
/// integers, and 2^31 f32 values are already 8 GiB (four times that while training, with gradients
/// and the optimizer's two moments).
pub const MAX_VALUES: u64 = 1 << 31;

/// The product of `dims`, or None when it overflows 64 bits.
pub fn product(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Refuses a size over [`MAX_VALUES`] (None: it overflowed): `what` says what the size is and which
/// arguments set it ("--layers 1000000000 and --width 128 give the GPT's parameters").
pub fn check_values(op: &'static str, what: impl FnOnce() -> String, n: Option<u64>) -> Result<()> {
    match n {
        Some(n) if n <= MAX_VALUES => Ok(()),
        Some(n) => Err(Error::invalid(op, format!("{}: {n} values, over the {MAX_VALUES} (2^31) supported", what()))),
        None => Err(Error::invalid(op, format!("{}: more values than 64 bits count", what()))),
    }
}

/// Most samples an evaluation scores: the metrics compare every sample with the data (image metrics
/// hold 256 f64 features per sample and search neighbours among them), so far more would exhaust memory
/// or run for days rather than fail clearly.
pub const MAX_EVAL_SAMPLES: usize = 1_000_000;

/// Refuses an evaluation `--n` over [`MAX_EVAL_SAMPLES`], naming the command (`op`).
pub fn check_eval_samples(op: &'static str, n: usize) -> Result<()> {
    if n > MAX_EVAL_SAMPLES {
        return Err(Error::invalid(
            op,
            format!("--n {n} is over the {MAX_EVAL_SAMPLES} samples an evaluation scores (use `sample` to draw more)"),
        ));
    }
    Ok(())
}

/// A positive `--batch`, `--steps` and `--lr` (finite): the checks every optimizer-driven run shares.
pub fn check_batch_steps_lr(op: &'static str, batch: usize, steps: u32, lr: f32) -> Result<()> {
    let err = |m: String| Err(Error::invalid(op, m));
    if batch == 0 {
        return err(format!("--batch must be a positive integer, got {batch}"));
    }
    if steps == 0 {
        return err(format!("--steps must be a positive integer, got {steps}"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return err(format!("--lr must be a positive number, got {lr}"));
    }
    Ok(())
}

/// `--clip` (the global gradient norm's ceiling) must be 0 (off) or positive and finite.
pub fn check_clip(op: &'static str, clip: f32) -> Result<()> {
    if clip == 0.0 || (clip.is_finite() && clip > 0.0) {
        return Ok(());
    }
    Err(Error::invalid(op, format!("--clip must be 0 (off) or a positive number, got {clip}")))
}
