//! Files: I/O errors that name their path, and writes that are atomic (a temporary file beside the
//! target, synced, then renamed over it), so a crash or a failed write never leaves a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// An I/O error naming its path.
pub fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// A fresh temporary name beside `path`: `.NAME.<pid>.<n>.tmp`, hidden and unique within the process.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    Ok(path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Writes through `body` into a temporary file beside `path`, syncs it, then renames it onto `path`. On
/// any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic_with(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(path, e))?;
        let mut out = std::io::BufWriter::new(file);
        body(&mut out)?;
        let file = out.into_inner().map_err(|e| io_err(path, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes).map_err(|e| io_err(path, e)))
}
