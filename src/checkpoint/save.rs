//! The atomic save: a temporary file in the target's directory (never one that exists), fsynced, renamed
//! over the target, then the directory fsynced; and the faults tests inject to check that a failed
//! save leaves the old checkpoint as it was.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::{Checkpoint, HostTensor};

/// Where a test makes `save` fail, to check that a failed save leaves the old checkpoint alone.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFault {
    /// Writing the temporary file fails once this many bytes are written.
    AfterBytes(u64),
    /// Everything is written and synced, then the save fails before the rename.
    BeforeRename,
}

impl Checkpoint {
    /// The bytes `save` writes, in memory (a web page has no files: it offers them as a download).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = self.encode_header().map_err(|m| self.err(format!("cannot encode: {m}")))?;
        let mut out =
            Vec::with_capacity(8 + header.len() + self.tensors.values().map(|t| 4 * t.data.len()).sum::<usize>());
        write_body(&mut out, &header, &self.tensors).map_err(|e| self.err(format!("cannot encode: {e}")))?;
        Ok(out)
    }

    pub(super) fn save_inner(&self, path: &Path, fault: Option<SaveFault>) -> Result<()> {
        let perr = |msg: String| Error::Checkpoint { path: path.display().to_string(), msg };
        let header = self.encode_header().map_err(|m| perr(format!("cannot save: {m}")))?;
        let Some(name) = path.file_name() else {
            return Err(perr("cannot save: the path does not name a file".into()));
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|e| perr(format!("cannot create directory {}: {e}", dir.display())))?;
        let (tmp, file) = create_temp(&dir, name).map_err(|e| perr(format!("cannot save: {e}")))?;
        let written = write_file(&file, &header, &self.tensors, fault)
            .map_err(|e| format!("writing {} failed: {e}", tmp.display()))
            .and_then(|()| match fault {
                Some(SaveFault::BeforeRename) => Err("injected failure before the rename".to_string()),
                _ => Ok(()),
            })
            .and_then(|()| {
                drop(file);
                fs::rename(&tmp, path).map_err(|e| format!("renaming {} over it failed: {e}", tmp.display()))
            });
        if let Err(m) = written {
            let _ = fs::remove_file(&tmp);
            return Err(perr(format!("cannot save: {m}; a checkpoint already at this path is unchanged")));
        }
        sync_dir(&dir).map_err(|e| perr(format!("saved, but syncing directory {} failed: {e}", dir.display())))
    }
}

/// Creates `.NAME.tmp-<pid>-<n>` next to the target, the first `n` from 0 whose name is free. `create_new`
/// arbitrates between concurrent saves of one process; a name that exists (a concurrent save, or a
/// leftover from a crashed save of an earlier process with the same pid) is skipped, never reused.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    const TRIES: u32 = 64;
    let pid = std::process::id();
    for n in 0..TRIES {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{pid}-{n}"));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", tmp.display()))),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "the temporary files .{}.tmp-{pid}-0 to -{} in {} all exist; remove them",
            name.to_string_lossy(),
            TRIES - 1,
            dir.display()
        ),
    ))
}

/// Failure injection for `SaveFault::AfterBytes`.
struct FaultWriter<'a> {
    file: &'a File,
    left: Option<u64>,
}

impl Write for FaultWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.left {
            None => self.file.write(buf),
            Some(0) => Err(io::Error::other("injected write failure")),
            Some(left) => {
                let n = (buf.len() as u64).min(*left) as usize;
                let n = self.file.write(&buf[..n])?;
                *left -= n as u64;
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn write_file(
    file: &File,
    header: &[u8],
    tensors: &BTreeMap<String, HostTensor>,
    fault: Option<SaveFault>,
) -> io::Result<()> {
    let left = match fault {
        Some(SaveFault::AfterBytes(n)) => Some(n),
        _ => None,
    };
    let mut w = io::BufWriter::with_capacity(1 << 20, FaultWriter { file, left });
    write_body(&mut w, header, tensors)?;
    w.flush()?;
    drop(w);
    file.sync_all()
}

/// The file's bytes after the header's: its length, the header, then every tensor's words (little-endian).
fn write_body(w: &mut impl Write, header: &[u8], tensors: &BTreeMap<String, HostTensor>) -> io::Result<()> {
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header)?;
    for t in tensors.values() {
        if cfg!(target_endian = "little") {
            w.write_all(bytemuck::cast_slice(&t.data))?;
        } else {
            for chunk in t.data.chunks(1 << 14) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
    }
    Ok(())
}

/// Makes the rename durable. Directories cannot be opened as files on Windows; there the rename is
/// as durable as the file system makes it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}
