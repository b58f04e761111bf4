//! Which checkpoints a run directory keeps: `checkpoint.safetensors` (the latest, what `--resume`,
//! `sample` and `eval` load from a run directory), `best.safetensors` (the evaluation with the lowest
//! figure the regime names, [`super::Regime::best_key`]) and, with `--keep N`, the last N periodic
//! checkpoints `checkpoint-NNNNNN.safetensors` (the step, six digits or more).
//!
//! Each is an atomic copy of the latest checkpoint, made right after it is saved and before config.json
//! and the metrics line: the metrics line stays the commit point. A run that resumes from step S (the
//! metrics lines past S dropped, see [`RunDir::metrics`]) drops the periodic checkpoints past S and a
//! best checkpoint past S too, so every kept file belongs to the history the metrics describe; the best
//! figure so far is read back from the evaluation line of the best checkpoint's step.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::dir::RunDir;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::host::fs::{io_err, write_atomic_with};

/// The best checkpoint's file name in a run directory.
pub const BEST_FILE: &str = "best.safetensors";

/// A periodic checkpoint's file name: `checkpoint-NNNNNN.safetensors`.
pub fn periodic_name(step: u32) -> String {
    format!("checkpoint-{step:06}.safetensors")
}

/// The step of a periodic checkpoint's file name, None for any other name.
fn periodic_step(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".safetensors")?;
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
}

/// The best checkpoint so far: its step and figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Best {
    /// The optimizer step it was saved at.
    pub step: u32,
    /// Its figure (the regime's `best_key`; lower is better).
    pub value: f64,
}

/// The retention state of one run: the best so far and the periodic checkpoints on disk.
pub(super) struct Retention {
    dir: PathBuf,
    key: Option<&'static str>,
    keep: usize,
    best: Option<Best>,
    periodic: Vec<u32>,
}

impl Retention {
    /// Opens the retention of `dir` for a run starting at `start_step`, after its metrics were trimmed
    /// to that step: drops what lies past it and reads the best figure back from `history` (the
    /// metrics lines kept).
    pub(super) fn open(dir: &RunDir, start_step: u32, key: Option<&'static str>, history: &[Value]) -> Result<Self> {
        let path = dir.path().to_path_buf();
        let mut periodic = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&path) {
            for e in entries.flatten() {
                let Some(step) = periodic_step(&e.file_name().to_string_lossy()) else { continue };
                if step > start_step {
                    std::fs::remove_file(e.path()).map_err(|err| io_err(&e.path(), err))?;
                } else {
                    periodic.push(step);
                }
            }
        }
        periodic.sort_unstable();
        let best_path = path.join(BEST_FILE);
        let mut best = None;
        if best_path.exists() {
            // A best checkpoint from past the start (a resume from an earlier checkpoint) is another
            // history's: dropped. An unreadable one is replaced at the next evaluation.
            let step = Checkpoint::load(&best_path).ok().and_then(|ck| u32::try_from(ck.step).ok());
            match step {
                Some(s) if s <= start_step => {
                    best = key.and_then(|k| figure_at(history, s, k)).map(|value| Best { step: s, value });
                }
                _ => std::fs::remove_file(&best_path).map_err(|e| io_err(&best_path, e))?,
            }
        }
        Ok(Retention { dir: path, key, keep: dir.keep(), best, periodic })
    }

    /// After the latest checkpoint (`latest`) was saved at `step` with the evaluation line `line`:
    /// copies it to best.safetensors when its figure beats the best so far, and to a periodic
    /// checkpoint with `--keep`, removing the oldest past N. Returns whether it became the best.
    pub(super) fn saved(&mut self, latest: &Path, step: u32, line: &Value) -> Result<bool> {
        let value = self.key.and_then(|k| line.get(k)).and_then(Value::as_f64).filter(|v| v.is_finite());
        let better = match (value, self.best) {
            (Some(v), Some(b)) => v < b.value,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some(value)) = (better, value) {
            copy_atomic(latest, &self.dir.join(BEST_FILE))?;
            self.best = Some(Best { step, value });
        }
        if self.keep > 0 {
            copy_atomic(latest, &self.dir.join(periodic_name(step)))?;
            self.periodic.retain(|&s| s != step);
            self.periodic.push(step);
            while self.periodic.len() > self.keep {
                let old = self.dir.join(periodic_name(self.periodic.remove(0)));
                std::fs::remove_file(&old).map_err(|e| io_err(&old, e))?;
            }
        }
        Ok(better)
    }

    /// The best checkpoint so far, with its path and key, if the regime names a figure.
    pub(super) fn best(&self) -> Option<(PathBuf, &'static str, Best)> {
        Some((self.dir.join(BEST_FILE), self.key?, self.best?))
    }
}

/// The figure `key` of the evaluation line at `step`.
fn figure_at(history: &[Value], step: u32, key: &str) -> Option<f64> {
    history
        .iter()
        .filter(|l| l["kind"] == "eval" && l["step"].as_u64() == Some(step as u64))
        .find_map(|l| l.get(key).and_then(Value::as_f64))
}

/// Copies `from` to `to` atomically (a temporary file beside `to`, synced, then renamed).
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from).map_err(|e| io_err(from, e))?;
    write_atomic_with(to, |out| std::io::copy(&mut src, out).map(|_| ()).map_err(|e| io_err(to, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_names_round_trip() {
        assert_eq!(periodic_name(500), "checkpoint-000500.safetensors");
        assert_eq!(periodic_step(&periodic_name(500)), Some(500));
        assert_eq!(periodic_step(&periodic_name(12_345_678)), Some(12_345_678));
        for other in
            ["checkpoint.safetensors", "checkpoint-.safetensors", "checkpoint-1a.safetensors", "best.safetensors"]
        {
            assert_eq!(periodic_step(other), None, "{other}");
        }
    }
}
