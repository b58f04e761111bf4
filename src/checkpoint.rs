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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{numel, DType, Tensor};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "tigel";
/// Value of the `format_version` metadata key this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// File name of a run directory's checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Metadata keys that belong to `Checkpoint` fields; `extra` may not use them.
pub const RESERVED_KEYS: [&str; 6] = ["format", "format_version", "kind", "config", "step", "rng"];

const METADATA_KEY: &str = "__metadata__";
const LEN_BYTES: usize = 8;

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// A tensor on the host: raw 32-bit words (f32 as bits), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<u32>,
}

impl HostTensor {
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Result<HostTensor> {
        let t =
            HostTensor { shape: shape.to_vec(), dtype: DType::F32, data: data.iter().map(|x| x.to_bits()).collect() };
        t.check_len("HostTensor::from_f32")?;
        Ok(t)
    }

    pub fn from_u32(shape: &[usize], data: Vec<u32>) -> Result<HostTensor> {
        let t = HostTensor { shape: shape.to_vec(), dtype: DType::U32, data };
        t.check_len("HostTensor::from_u32")?;
        Ok(t)
    }

    /// Reads a device tensor back (waits for the work that writes it).
    pub fn from_device(dev: &Device, t: &Tensor) -> Result<HostTensor> {
        Ok(HostTensor { shape: t.shape.clone(), dtype: t.dtype, data: t.to_u32(dev)? })
    }

    /// A new device tensor holding this data.
    pub fn to_device(&self, dev: &Device) -> Result<Tensor> {
        self.check_len("HostTensor::to_device")?;
        let mut t = Tensor::from_u32(dev, &self.shape, &self.data)?;
        t.dtype = self.dtype;
        Ok(t)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values of an f32 tensor.
    pub fn f32s(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => Ok(self.data.iter().map(|&b| f32::from_bits(b)).collect()),
            d => Err(Error::DType { op: "HostTensor::f32s", got: d.name(), want: "f32" }),
        }
    }

    /// The values of a u32 tensor.
    pub fn u32s(&self) -> Result<&[u32]> {
        match self.dtype {
            DType::U32 => Ok(&self.data),
            d => Err(Error::DType { op: "HostTensor::u32s", got: d.name(), want: "u32" }),
        }
    }

    fn check_len(&self, op: &'static str) -> Result<()> {
        let n = numel(&self.shape)?;
        if n != self.data.len() {
            return Err(Error::invalid(
                op,
                format!("shape {:?} holds {n} elements, data has {}", self.shape, self.data.len()),
            ));
        }
        Ok(())
    }
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
    pub tensors: BTreeMap<String, HostTensor>,
    /// The file this was loaded from, for error messages; None for one made in memory. Not saved.
    pub source: Option<PathBuf>,
}

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

    fn save_inner(&self, path: &Path, fault: Option<SaveFault>) -> Result<()> {
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

    /// Reads a checkpoint file, or the checkpoint of a run directory.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let file = if path.is_dir() { checkpoint_path(path) } else { path.to_path_buf() };
        let perr = |msg: String| Error::Checkpoint { path: file.display().to_string(), msg };
        let bytes = fs::read(&file).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => perr("no such file".into()),
            _ => perr(format!("cannot read: {e}")),
        })?;
        let mut ck = decode(&bytes).map_err(perr)?;
        ck.source = Some(file);
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

    /// The safetensors metadata map.
    fn metadata(&self) -> std::result::Result<BTreeMap<String, String>, String> {
        if self.kind.is_empty() {
            return Err("the model kind is empty".into());
        }
        let mut m = BTreeMap::new();
        for (k, v) in &self.extra {
            if RESERVED_KEYS.contains(&k.as_str()) {
                return Err(format!("extra metadata key `{k}` is reserved for the checkpoint's own `{k}` field"));
            }
            m.insert(k.clone(), v.clone());
        }
        m.insert("format".into(), FORMAT.into());
        m.insert("format_version".into(), FORMAT_VERSION.into());
        m.insert("kind".into(), self.kind.clone());
        m.insert("config".into(), self.config.to_string());
        m.insert("step".into(), self.step.to_string());
        m.insert("rng".into(), self.rng.to_string());
        Ok(m)
    }

    /// The header JSON, padded with spaces to a multiple of 8 bytes so the data starts aligned.
    fn encode_header(&self) -> std::result::Result<Vec<u8>, String> {
        let json_err = |e: serde_json::Error| format!("internal error: {e}");
        let meta = serde_json::to_string(&self.metadata()?).map_err(json_err)?;
        let mut h = format!("{{\"{METADATA_KEY}\":{meta}");
        let mut offset = 0usize;
        for (name, t) in &self.tensors {
            if name == METADATA_KEY {
                return Err(format!("a tensor cannot be named `{METADATA_KEY}` (safetensors reserves it)"));
            }
            let n = numel(&t.shape).map_err(|e| format!("tensor `{name}`: {e}"))?;
            if n != t.data.len() {
                return Err(format!(
                    "tensor `{name}`: shape {:?} holds {n} elements but it has {} words of data",
                    t.shape,
                    t.data.len()
                ));
            }
            let end = n.checked_mul(4).and_then(|b| b.checked_add(offset)).ok_or("tensors too large")?;
            let _ = write!(
                h,
                ",{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
                serde_json::to_string(name).map_err(json_err)?,
                st_dtype(t.dtype),
                serde_json::to_string(&t.shape).map_err(json_err)?
            );
            offset = end;
        }
        h.push('}');
        let mut bytes = h.into_bytes();
        bytes.resize(bytes.len().next_multiple_of(LEN_BYTES), b' ');
        // Whatever we write, the safetensors reader must accept.
        serde_json::from_slice::<safetensors::tensor::Metadata>(&bytes)
            .map_err(|e| format!("internal error: the safetensors reader rejects the header: {e}"))?;
        Ok(bytes)
    }
}

fn st_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::U32 => "U32",
    }
}

fn tigel_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::U32 => Some(DType::U32),
        _ => None,
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
    w.flush()?;
    drop(w);
    file.sync_all()
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

/// Parses a whole checkpoint file. Errors are messages for `Error::Checkpoint`.
fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    let len = bytes.len();
    if len < LEN_BYTES {
        return Err(format!("truncated: the file is {len} bytes, shorter than the 8-byte header length field"));
    }
    let n = u64::from_le_bytes(bytes[..LEN_BYTES].try_into().expect("8 bytes"));
    let avail = (len - LEN_BYTES) as u64;
    if n > avail {
        return Err(format!(
            "truncated or corrupt: the header length field says {n} bytes but only {avail} bytes follow it"
        ));
    }
    let data_start = LEN_BYTES + n as usize;
    let header: Value = serde_json::from_slice(&bytes[LEN_BYTES..data_start])
        .map_err(|e| format!("corrupt header: not valid JSON ({e})"))?;
    let Value::Object(entries) = header else {
        return Err("corrupt header: not a JSON object".into());
    };

    // The tensor table, checked entry by entry so that errors name the tensor.
    let mut meta = None;
    let mut infos: Vec<(String, TensorInfo)> = Vec::new();
    for (name, v) in entries {
        if name == METADATA_KEY {
            meta = Some(v);
            continue;
        }
        let info: TensorInfo = serde_json::from_value(v)
            .map_err(|e| format!("corrupt header: the entry for tensor `{name}` is not a tensor description ({e})"))?;
        let need = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| format!("corrupt header: tensor `{name}` has an impossible shape {:?}", info.shape))?;
        let (s, e) = info.data_offsets;
        if e < s || e - s != need {
            return Err(format!(
                "tensor `{name}`: shape {:?} of {} needs {need} bytes of data but its data_offsets [{s}, {e}] span \
                 {} bytes",
                info.shape,
                info.dtype,
                e.saturating_sub(s)
            ));
        }
        infos.push((name, info));
    }
    let meta: BTreeMap<String, String> = match meta {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|_| format!("corrupt header: `{METADATA_KEY}` must map names to strings"))?,
    };
    let have = len - data_start;
    let need = infos.iter().map(|(_, i)| i.data_offsets.1).max().unwrap_or(0);
    if need > have {
        return Err(format!(
            "truncated: the tensors need {need} bytes of data but the file holds {have} (the file is {len} bytes, \
             it should be {})",
            data_start + need
        ));
    }
    if need < have {
        return Err(format!("corrupt: {} bytes of unexpected data after the last tensor", have - need));
    }
    // Overlaps and gaps between tensors, and anything else the format forbids.
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt: {e}"))?;

    infos.sort_by(|a, b| a.0.cmp(&b.0));
    let unsupported = infos.iter().find(|(_, i)| tigel_dtype(i.dtype).is_none());
    let hint = match unsupported {
        Some((name, i)) => format!("; it holds tensor `{name}` of dtype {}, which tigel cannot load", i.dtype),
        None => String::new(),
    };
    match meta.get("format") {
        None => {
            return Err(format!(
                "not a tigel checkpoint: its metadata has no `format` key (a safetensors file from another tool?){hint}"
            ))
        }
        Some(f) if f != FORMAT => {
            return Err(format!("not a tigel checkpoint: its metadata says format `{f}`, not `{FORMAT}`{hint}"))
        }
        Some(_) => {}
    }
    let field = |key: &str| meta.get(key).ok_or_else(|| format!("corrupt metadata: missing key `{key}`"));
    let version = field("format_version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version `{version}` is not supported: this tigel reads version {FORMAT_VERSION} (a newer tigel \
             wrote it?)"
        ));
    }
    if let Some((name, i)) = unsupported {
        return Err(format!("tensor `{name}` has dtype {}; tigel checkpoints hold only F32 and U32 tensors", i.dtype));
    }
    let json = |key: &str| -> std::result::Result<Value, String> {
        serde_json::from_str(field(key)?).map_err(|e| format!("corrupt metadata: `{key}` is not valid JSON ({e})"))
    };
    let step_s = field("step")?;
    let step =
        step_s.parse::<u64>().map_err(|_| format!("corrupt metadata: `step` is `{step_s}`, not a whole number"))?;
    let kind = field("kind")?.clone();
    let config = json("config")?;
    let rng = json("rng")?;
    let extra = meta
        .iter()
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = tigel_dtype(view.dtype()).expect("dtypes checked above");
        let data = view.data().chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        tensors.insert(name.to_string(), HostTensor { shape: view.shape().to_vec(), dtype, data });
    }
    Ok(Checkpoint { kind, config, step, rng, extra, tensors, source: None })
}
