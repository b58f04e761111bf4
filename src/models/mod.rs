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

/// A config from JSON (unknown keys ignored, so older and newer files load), or an error naming `what`.
pub fn config_from_json<T: DeserializeOwned>(what: &'static str, v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| Error::invalid(what, format!("{e} in {v}")))
}
