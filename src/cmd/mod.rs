//! The `tigel` subcommands: argument parsing and wiring only; the work is the library's (the run loop in
//! `tigel::run`, the models in `tigel::models`).

pub mod bench;
pub mod demo;
pub mod diffusion;
pub mod dist;
pub mod export;
pub mod gan;
pub mod gpt;
pub mod info;
pub mod progress;
pub mod signal;
pub mod tune;

use tigel::{BackendChoice, Device, Error, Result};

/// The device for `--backend` (or $TIGEL_BACKEND, else auto), with its one-line note on stderr. On
/// several ranks each rank takes the GPU of its rank on the machine (unless `TIGEL_ADAPTER` says
/// otherwise) and its line starts `rank R/N:`.
pub fn device(backend: Option<&str>) -> Result<Device> {
    let d = match (backend, tigel::dist::adapter_filter(tigel::dist::local_rank())) {
        (b, Some(nth)) => {
            let choice = match b.map(str::to_string).or_else(|| std::env::var("TIGEL_BACKEND").ok()) {
                Some(b) if !b.is_empty() => b.parse::<BackendChoice>()?,
                _ => BackendChoice::Auto,
            };
            Device::select(choice, Some(&nth))?
        }
        (Some(b), None) => Device::new(b.parse::<BackendChoice>()?)?,
        (None, None) => Device::from_env()?,
    };
    eprintln!("{}{}", tigel::dist::prefix(), d.note());
    Ok(d)
}

/// The data a command reads: `--data` when given (a path made absolute, see [`absolute_data`]), else the
/// data the checkpoint (resumed or evaluated) was trained on, as its config names it.
pub fn data_spec(op: &'static str, given: Option<&str>, ck: Option<&tigel::checkpoint::Checkpoint>) -> Result<String> {
    if let Some(d) = given {
        return Ok(absolute_data(d));
    }
    match ck {
        Some(ck) => {
            let stored = ck.config.get("data").and_then(|d| d.as_str()).ok_or_else(|| {
                Error::invalid(op, "the checkpoint does not name the data it was trained on; pass --data")
            })?;
            stored_data_exists(op, stored, ck)?;
            Ok(stored.to_string())
        }
        None => Err(Error::invalid(op, "--data is required (ring8, grid25, or an image file or folder)")),
    }
}

/// A data argument as run configs store it: a path that exists made absolute (so `eval` and `--resume`
/// find it from any directory); anything else (a mixture's name, a path that will fail to open) as given.
pub fn absolute_data(spec: &str) -> String {
    let p = std::path::Path::new(spec);
    if tigel::data::mixture::Mixture::parse(spec).is_ok() || !p.exists() {
        return spec.to_string();
    }
    p.canonicalize().map_or_else(|_| spec.to_string(), |a| a.display().to_string())
}

/// Refuses a data path a checkpoint's config names (a path, not a mixture or the embedded text) that is
/// no longer there, naming the checkpoint it came from.
pub fn stored_data_exists(op: &'static str, stored: &str, ck: &tigel::checkpoint::Checkpoint) -> Result<()> {
    let builtin = stored == "<embedded>" || tigel::data::mixture::Mixture::parse(stored).is_ok();
    if builtin || std::path::Path::new(stored).exists() {
        return Ok(());
    }
    let from = ck.source.as_ref().map_or("the checkpoint".to_string(), |p| p.display().to_string());
    Err(Error::invalid(
        op,
        format!(
            "`{stored}`, the data {from} was trained on (stored in its config), is not there (a relative path is \
             read from the current directory); pass --data"
        ),
    ))
}

/// A flag's value as given (None: not given), as text for [`check_resumed`].
pub fn given<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|v| v.to_string())
}

/// Refuses a model flag that conflicts with the resumed model: (flag, the value given or None when the
/// flag was not given, the model's value). A switch (`--conditional`) is given as "".
pub fn check_resumed(op: &'static str, flags: &[(&str, Option<String>, String)]) -> Result<()> {
    for (flag, given, have) in flags {
        match given.as_deref() {
            Some("") => {
                return Err(Error::invalid(op, format!("--{flag} conflicts with the resumed model ({have})")));
            }
            Some(g) if g != have => {
                return Err(Error::invalid(op, format!("--{flag} {g} differs from the resumed model's {have}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The step a resumed checkpoint stopped at (0 for a new run), checked so that this run's `steps` keep
/// the step counter (and the learning-rate schedule computed from it) within 32 bits.
pub fn start_step(op: &'static str, ck: Option<&tigel::checkpoint::Checkpoint>, steps: u32) -> Result<u32> {
    let start = ck.map_or(0, |ck| ck.step);
    match u32::try_from(start).ok().and_then(|s| s.checked_add(steps).map(|_| s)) {
        Some(s) => Ok(s),
        None => Err(Error::invalid(
            op,
            format!("the checkpoint's step {start} and --steps {steps} pass the step counter's limit {}", u32::MAX),
        )),
    }
}
