//! A run directory: where `tigel train KIND` writes checkpoint.safetensors, config.json and
//! metrics.jsonl, how it is chosen, and the checkpoint a resumed run continues.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{checkpoint_path, Checkpoint};
use crate::error::{Error, Result};
use crate::host::fs::{io_err, write_atomic};

/// The directory one training run writes into.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// `out`, which must not hold another run's checkpoint, or the first free runs/KIND, runs/KIND-2, ...
    /// A resumed run writes back into its own directory unless told otherwise. `op` names the command in
    /// errors ("train gpt"). Nothing is created yet (see [`RunDir::create`]).
    pub fn choose(op: &'static str, kind: &str, out: Option<&Path>, resume: Option<&Path>) -> Result<RunDir> {
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
            return Ok(RunDir { path: o.to_path_buf() });
        }
        if let Some(r) = resume {
            let path = if r.is_dir() { r.to_path_buf() } else { r.parent().unwrap_or(Path::new(".")).to_path_buf() };
            return Ok(RunDir { path });
        }
        (1..)
            .map(|i| PathBuf::from(if i == 1 { format!("runs/{kind}") } else { format!("runs/{kind}-{i}") }))
            .find(|p| !p.exists())
            .map(|path| RunDir { path })
            .ok_or_else(|| Error::invalid(op, "no free run directory"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the run's checkpoint goes.
    pub fn checkpoint(&self) -> PathBuf {
        checkpoint_path(&self.path)
    }

    /// Creates the directory (and its parents) if it is not there.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(|e| io_err(&self.path, e))
    }

    /// Writes config.json (pretty-printed, atomically).
    pub fn write_config(&self, config: &Value) -> Result<()> {
        let text = serde_json::to_string_pretty(config).expect("JSON values serialise") + "\n";
        write_atomic(&self.path.join("config.json"), text.as_bytes())
    }

    /// metrics.jsonl, opened to append (a resumed run adds to its lines).
    pub fn metrics(&self) -> Result<MetricsLog> {
        let path = self.path.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(MetricsLog { path, file })
    }
}

/// metrics.jsonl: one JSON object per line, one line per evaluation.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Appends one line.
    pub fn append(&mut self, line: &Value) -> Result<()> {
        writeln!(self.file, "{line}").map_err(|e| io_err(&self.path, e))
    }
}

/// The checkpoint `--resume` names (a run directory or a checkpoint file), checked to be of `kind`;
/// `needed_by` names the command in the error ("`tigel train gpt --resume`").
pub fn resume_checkpoint(resume: Option<&Path>, kind: &str, needed_by: &str) -> Result<Option<Checkpoint>> {
    let Some(path) = resume else { return Ok(None) };
    let ck = Checkpoint::load(path)?;
    ck.expect_kind_for(kind, needed_by)?;
    Ok(Some(ck))
}
