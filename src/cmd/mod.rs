//! The `tigel` subcommands: argument parsing and wiring only; the work is the library's (the run loop in
//! `tigel::run`, the models in `tigel::models`).

pub mod bench;
pub mod demo;
pub mod diffusion;
pub mod gan;
pub mod gpt;
pub mod info;
pub mod progress;

use tigel::{BackendChoice, Device, Error, Result};

/// The device for `--backend` (or $TIGEL_BACKEND, else auto), with its one-line note on stderr.
pub fn device(backend: Option<&str>) -> Result<Device> {
    let d = match backend {
        Some(b) => Device::new(b.parse::<BackendChoice>()?)?,
        None => Device::from_env()?,
    };
    eprintln!("{}", d.note());
    Ok(d)
}

/// The data a command reads: `--data` when given, else the data the checkpoint (resumed or evaluated) was
/// trained on, as its config names it.
pub fn data_spec(op: &'static str, given: Option<&str>, ck: Option<&tigel::checkpoint::Checkpoint>) -> Result<String> {
    if let Some(d) = given {
        return Ok(d.to_string());
    }
    match ck {
        Some(ck) => {
            ck.config.get("data").and_then(|d| d.as_str()).map(String::from).ok_or_else(|| {
                Error::invalid(op, "the checkpoint does not name the data it was trained on; pass --data")
            })
        }
        None => Err(Error::invalid(op, "--data is required (ring8, grid25, or an image file or folder)")),
    }
}

/// Refuses a model flag that differs from the resumed model's value: (flag, given, the model's).
pub fn check_resumed(op: &'static str, flags: &[(&str, Option<usize>, usize)]) -> Result<()> {
    for &(flag, given, have) in flags {
        if let Some(g) = given.filter(|&g| g != have) {
            return Err(Error::invalid(op, format!("--{flag} {g} differs from the resumed model's {have}")));
        }
    }
    Ok(())
}
