//! A run directory: where `tigel train KIND` writes checkpoint.safetensors (and the checkpoints
//! `retain` keeps beside it), config.json and metrics.jsonl, how it is chosen, and the checkpoint a
//! resumed run continues.

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
    keep: usize,
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
            return Ok(RunDir { path: o.to_path_buf(), keep: 0 });
        }
        if let Some(r) = resume {
            let path = if r.is_dir() { r.to_path_buf() } else { r.parent().unwrap_or(Path::new(".")).to_path_buf() };
            return Ok(RunDir { path, keep: 0 });
        }
        (1..)
            .map(|i| PathBuf::from(if i == 1 { format!("runs/{kind}") } else { format!("runs/{kind}-{i}") }))
            .find(|p| !p.exists())
            .map(|path| RunDir { path, keep: 0 })
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

    /// Keeps the last `n` periodic checkpoints (`--keep`) beside the latest and the best (0: none).
    pub fn with_keep(mut self, n: usize) -> RunDir {
        self.keep = n;
        self
    }

    /// How many periodic checkpoints the run keeps.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Where the best checkpoint goes (see `run::retain`).
    pub fn best(&self) -> PathBuf {
        self.path.join(super::retain::BEST_FILE)
    }

    /// The lines of metrics.jsonl as they are (none when there is no file; an unreadable line is
    /// skipped).
    pub fn read_metrics(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path.join("metrics.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
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

    /// metrics.jsonl, opened to append (a resumed run adds to its lines). Lines for steps after
    /// `start_step` (the checkpoint's step) are dropped first: a run that crashed after writing them
    /// but before saving its checkpoint repeats those steps, so they would otherwise appear twice.
    pub fn metrics(&self, start_step: u32) -> Result<MetricsLog> {
        let path = self.path.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let after = |line: &str| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(Value::as_u64))
                    .is_some_and(|s| s > start_step as u64)
            };
            if text.lines().any(after) {
                let kept: String = text.lines().filter(|l| !after(l)).map(|l| format!("{l}\n")).collect();
                write_atomic(&path, kept.as_bytes())?;
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Creates the directory and takes its lock (`.lock`, holding this process's id): a second run on
    /// the same directory is refused while the first lives; a lock left by a process that has died is
    /// taken over. Temporary files that earlier crashes left behind are then removed. `op` names the
    /// command in errors.
    pub fn lock(&self, op: &'static str) -> Result<RunLock> {
        self.create()?;
        let path = self.path.join(LOCK_FILE);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(|e| io_err(&path, e))?;
                    let lock = RunLock { path };
                    self.remove_stale_temps();
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                    if let Some(pid) = owner.filter(|&p| process_alive(p)) {
                        return Err(Error::invalid(
                            op,
                            format!(
                                "{} is in use by another run (pid {pid}); wait for it to finish or choose another \
                                 --out (if no such run exists, remove {})",
                                self.path.display(),
                                path.display()
                            ),
                        ));
                    }
                    // The owner has died (or the file is unreadable): take the lock over.
                    std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                }
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Err(Error::invalid(op, format!("{} is being locked by another run at the same moment", path.display())))
    }

    /// Removes the hidden temporary files (`.NAME.PID.N.tmp`, and the older `.NAME.tmp-*`) that a crash
    /// during an atomic write leaves; called with the lock held, so no live writer owns them.
    fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && (name.ends_with(".tmp") || name.contains(".tmp-")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// A held run-directory lock ([`RunDir::lock`]); dropping it removes the lock file.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` is alive. On Linux /proc says; elsewhere the owner counts as alive (the refusal
/// says which file to remove if it is not).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// metrics.jsonl: one JSON object per line (training lines and evaluation lines).
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
