//! Models, built from `nn` layers: `gpt` (a byte-level transformer), `gan` (MLP GAN and DCGAN),
//! `ddpm` (the diffusion model's denoisers, with `unet`), `mlp` (a plain perceptron).

pub mod ddpm;
pub mod gan;
pub mod gpt;
pub mod mlp;
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

/// A config from JSON (unknown keys ignored, so older and newer files load), or an error naming `what`.
pub fn config_from_json<T: DeserializeOwned>(what: &'static str, v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| Error::invalid(what, format!("{e} in {v}")))
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

/// `--clip` (the global gradient norm's ceiling) must be 0 (off) or positive and finite.
pub fn check_clip(op: &'static str, clip: f32) -> Result<()> {
    if clip == 0.0 || (clip.is_finite() && clip > 0.0) {
        return Ok(());
    }
    Err(Error::invalid(op, format!("--clip must be 0 (off) or a positive number, got {clip}")))
}
