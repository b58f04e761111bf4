//! Checkpoints: a model's tensors plus what it takes to sample from it or resume training it, in one
//! safetensors file.
//!
//! Layout: every tensor is F32 or U32, row-major, little-endian, stored in name order. The safetensors
//! `__metadata__` map (strings to strings) holds `format` = "tigel", `format_version` = "1", `kind` (the
//! model kind), `config` (JSON), `step` (optimizer steps done, decimal), `rng` (JSON: seeds and offsets of
//! the RNG streams), and any extra keys the caller adds. The header is written here rather than by the
//! safetensors crate because the crate keeps metadata in a `HashMap`, whose order changes from run to
//! run; written here, the same checkpoint always gives the same bytes. Reading goes through the crate's
//! validation, after checks of our own that name the offending tensor.
//!
//! Saving is atomic: a temporary file in the target's directory, fsynced, renamed over the target, then
//! the directory fsynced. A crash or a failed save leaves the previous checkpoint as it was.
//!
//! Files: `host_tensor` (tensors on the host), `format` (the safetensors header, written and read),
//! `save` (the atomic save and its fault injection for tests), `ema` (the EMA tensors' names, old and new),
//! `export` (weights only, in PyTorch's layouts: `tigel export`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{fs, io};

use serde_json::Value;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

mod ema;
pub mod export;
mod format;
mod host_tensor;
mod save;

pub use ema::ema_name;
pub use host_tensor::HostTensor;
pub use save::SaveFault;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "tigel";
/// Value of the `format_version` metadata key this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// File name of a run directory's checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Metadata keys that belong to `Checkpoint` fields; `extra` may not use them.
pub const RESERVED_KEYS: [&str; 6] = ["format", "format_version", "kind", "config", "step", "rng"];

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// A saved model: named tensors and the metadata to use or resume it.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Model kind: "mlp", "gpt", "gan", "ddpm", ...
    pub kind: String,
    /// The model/training configuration.
    pub config: Value,
    /// Optimizer steps done.
    pub step: u64,
    /// Seeds and offsets of the data/noise RNG streams.
    pub rng: Value,
    /// Further metadata, string to string; keys may not be one of `RESERVED_KEYS`.
    pub extra: BTreeMap<String, String>,
    /// The tensors by name (saved in name order).
    pub tensors: BTreeMap<String, HostTensor>,
    /// The file this was loaded from, for error messages; None for one made in memory. Not saved.
    pub source: Option<PathBuf>,
}

impl Checkpoint {
    /// An empty checkpoint at step 0.
    pub fn new(kind: impl Into<String>, config: Value) -> Checkpoint {
        Checkpoint {
            kind: kind.into(),
            config,
            step: 0,
            rng: Value::Null,
            extra: BTreeMap::new(),
            tensors: BTreeMap::new(),
            source: None,
        }
    }

    fn err(&self, msg: String) -> Error {
        let path = match &self.source {
            Some(p) => p.display().to_string(),
            None => "(in memory)".into(),
        };
        Error::Checkpoint { path, msg }
    }

    /// Writes the checkpoint to `path` atomically (see the module doc), creating the directory if needed.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_inner(path, None)
    }

    /// `save` with an injected failure (tests only).
    #[doc(hidden)]
    pub fn save_with_fault(&self, path: &Path, fault: SaveFault) -> Result<()> {
        self.save_inner(path, Some(fault))
    }

    /// Reads a checkpoint file, or the checkpoint of a run directory.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let file = if path.is_dir() { checkpoint_path(path) } else { path.to_path_buf() };
        let perr = |msg: String| Error::Checkpoint { path: file.display().to_string(), msg };
        let bytes = fs::read(&file).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => perr("no such file".into()),
            _ => perr(format!("cannot read: {e}")),
        })?;
        let mut ck = format::decode(&bytes).map_err(perr)?;
        ck.source = Some(file);
        Ok(ck)
    }

    /// Parses the bytes of a checkpoint file (`name` names them in errors), as `load` does a file's.
    pub fn from_bytes(name: &Path, bytes: &[u8]) -> Result<Checkpoint> {
        let mut ck =
            format::decode(bytes).map_err(|msg| Error::Checkpoint { path: name.display().to_string(), msg })?;
        ck.source = Some(name.to_path_buf());
        Ok(ck)
    }

    /// Fails unless this checkpoint holds a `kind` model.
    pub fn expect_kind(&self, kind: &str) -> Result<()> {
        self.check_kind(kind, || format!("a `{kind}` checkpoint is needed"))
    }

    /// As `expect_kind`, saying who needs it: `expect_kind_for("gpt", "`tigel sample gpt`")` fails with
    /// "checkpoint runs/x/checkpoint.safetensors: holds a `gan` model; `tigel sample gpt` needs a `gpt`
    /// checkpoint".
    pub fn expect_kind_for(&self, kind: &str, needed_by: &str) -> Result<()> {
        self.check_kind(kind, || format!("{needed_by} needs a `{kind}` checkpoint"))
    }

    fn check_kind(&self, kind: &str, need: impl FnOnce() -> String) -> Result<()> {
        if self.kind == kind {
            return Ok(());
        }
        Err(self.err(format!("holds a `{}` model; {}", self.kind, need())))
    }

    /// The tensor `name`, or an error listing the tensors there are.
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| self.err(format!("has no tensor `{name}`; it holds {}", list(self.tensors.keys()))))
    }

    /// Checks that the tensors are exactly `specs` (name, shape, dtype): none missing, none different,
    /// none extra. The error names the first offending tensor.
    pub fn expect_tensors(&self, specs: &[(&str, &[usize], DType)]) -> Result<()> {
        for &(name, shape, dtype) in specs {
            let want = describe(dtype, shape);
            match self.tensors.get(name) {
                None => {
                    return Err(self.err(format!(
                        "missing tensor `{name}` ({want}) of a `{}` model; it holds {}",
                        self.kind,
                        list(self.tensors.keys())
                    )))
                }
                Some(t) if t.shape != shape || t.dtype != dtype => {
                    return Err(self.err(format!(
                        "tensor `{name}` is {} where {want} is expected (does the config match the one it was \
                         trained with?)",
                        describe(t.dtype, &t.shape)
                    )))
                }
                Some(_) => {}
            }
        }
        let extra: Vec<&String> = self.tensors.keys().filter(|k| !specs.iter().any(|(name, _, _)| name == k)).collect();
        if !extra.is_empty() {
            return Err(self.err(format!(
                "unexpected tensor{} {}: not part of a `{}` model with this config",
                if extra.len() == 1 { "" } else { "s" },
                list(extra.into_iter()),
                self.kind
            )));
        }
        Ok(())
    }

    /// Writes checkpoint tensor `name` into the existing device tensor `t` (same shape and dtype), in order
    /// with the work already issued on `dev`.
    pub fn restore_into(&self, dev: &Device, name: &str, t: &Tensor) -> Result<()> {
        let h = self.get(name)?;
        if h.shape != t.shape || h.dtype != t.dtype {
            return Err(self.err(format!(
                "cannot restore tensor `{name}`: the checkpoint holds {}, the model's tensor is {}",
                describe(h.dtype, &h.shape),
                describe(t.dtype, &t.shape)
            )));
        }
        if h.data.len() != t.numel() {
            return Err(self.err(format!(
                "cannot restore tensor `{name}`: shape {:?} holds {} elements, the data has {}",
                h.shape,
                t.numel(),
                h.data.len()
            )));
        }
        if h.data.is_empty() {
            return Ok(());
        }
        dev.write(&t.buf, &h.data)
    }
}

fn describe(dtype: DType, shape: &[usize]) -> String {
    format!("{} {shape:?}", dtype.name())
}

/// "`a`, `b`, `c`", at most a dozen names, or "no tensors".
fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    if names.is_empty() {
        return "no tensors".into();
    }
    let mut s = names.iter().take(12).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > 12 {
        let _ = write!(s, " and {} more", names.len() - 12);
    }
    s
}
