pub mod bench;
pub mod demo;
pub mod diffusion;
pub mod gan;
pub mod gpt;
pub mod info;

use std::path::{Path, PathBuf};

use tigel::checkpoint::checkpoint_path;
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

/// An I/O error naming its path.
pub fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// Writes a small text file through a temporary file and a rename: never half-written.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// A training step's loss, read back asynchronously (one f32).
pub fn loss_of(d: tigel::device::Download) -> Result<f64> {
    Ok(f32::from_bits(d.wait()?[0]) as f64)
}

/// The run directory of `tigel train KIND`: `--out`, which must not hold another run's checkpoint, or
/// the first free runs/KIND, runs/KIND-2, ... A resumed run writes back into its own directory unless
/// told otherwise.
/// `op` names the command in errors ("train gpt").
pub fn run_dir(op: &'static str, kind: &str, out: Option<&Path>, resume: Option<&Path>) -> Result<PathBuf> {
    if let Some(o) = out {
        let same = resume.is_some_and(|r| r.canonicalize().ok() == o.canonicalize().ok());
        if checkpoint_path(o).exists() && !same {
            return Err(Error::invalid(
                op,
                format!(
                    "{} already holds a checkpoint; continue it with --resume {0} or choose another --out",
                    o.display()
                ),
            ));
        }
        return Ok(o.to_path_buf());
    }
    if let Some(r) = resume {
        return Ok(if r.is_dir() { r.to_path_buf() } else { r.parent().unwrap_or(Path::new(".")).to_path_buf() });
    }
    (1..)
        .map(|i| PathBuf::from(if i == 1 { format!("runs/{kind}") } else { format!("runs/{kind}-{i}") }))
        .find(|p| !p.exists())
        .ok_or_else(|| Error::invalid(op, "no free run directory"))
}
