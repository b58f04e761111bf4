//! The file format: a safetensors file whose header this module writes itself, so that the metadata
//! comes out in one order and the same checkpoint always gives the same bytes, and reads with checks
//! that name the offending tensor before the safetensors crate validates the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::tensor::{numel, DType};

use super::{Checkpoint, HostTensor, FORMAT, FORMAT_VERSION, RESERVED_KEYS};

const METADATA_KEY: &str = "__metadata__";
/// Bytes of the little-endian header length that starts the file.
const LEN_BYTES: usize = 8;

impl Checkpoint {
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
    pub(super) fn encode_header(&self) -> std::result::Result<Vec<u8>, String> {
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
        // Never written: `HostTensor::from_device` refuses f16 working copies (checkpoints hold f32).
        DType::F16 => "F16",
    }
}

fn tigel_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::U32 => Some(DType::U32),
        _ => None,
    }
}
/// Parses a whole checkpoint file. Errors are messages for `Error::Checkpoint`.
pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
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
