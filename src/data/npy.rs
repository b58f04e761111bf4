//! NumPy `.npy` arrays: a reader (format 1.0 to 3.0, the Python-literal header parsed here) for images
//! and labels, and a writer for `<f4` arrays.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::Result;
use crate::host::fs::{io_err, write_atomic_with};

use super::images::{attach_labels, bad, read_maybe_gz, strip_gz, u8_to_unit, ImageSet, PixelRange, LOAD};

/// The first bytes of every `.npy` file.
pub(super) const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// A Python literal as it appears in an .npy header.
#[derive(Debug, Clone, PartialEq)]
enum PyVal {
    Str(String),
    Bool(bool),
    Int(i128),
    Tuple(Vec<PyVal>),
    List(Vec<PyVal>),
    Dict(Vec<(PyVal, PyVal)>),
}

struct PyParser<'a> {
    s: &'a [u8],
    i: usize,
    /// Open brackets around the value being read: bounded, so a header of nested brackets is an error
    /// rather than a stack overflow.
    depth: usize,
}

/// Deepest nesting of tuples, lists and dicts a header may have (NumPy's own headers nest two deep).
const MAX_DEPTH: usize = 32;

impl PyParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            other => Err(format!("expected `{}` at byte {}, found {:?}", c as char, self.i, other.map(|b| b as char))),
        }
    }

    /// Items up to `close`, separated by commas, a trailing comma allowed.
    fn seq<T>(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(out);
            }
            out.push(item(self)?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                other => {
                    return Err(format!("expected `,` or `{}`, found {:?}", close as char, other.map(|b| b as char)))
                }
            }
        }
    }

    fn value(&mut self) -> Result<PyVal, String> {
        if matches!(self.peek(), Some(b'(' | b'[' | b'{')) {
            if self.depth >= MAX_DEPTH {
                return Err(format!("brackets nested over {MAX_DEPTH} deep at byte {}", self.i));
            }
            self.depth += 1;
            let v = self.scalar_or_seq();
            self.depth -= 1;
            return v;
        }
        self.scalar_or_seq()
    }

    fn scalar_or_seq(&mut self) -> Result<PyVal, String> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                let start = self.i + 1;
                let len = self.s[start..].iter().position(|&c| c == q).ok_or("unterminated string")?;
                self.i = start + len + 1;
                Ok(PyVal::Str(String::from_utf8_lossy(&self.s[start..start + len]).into_owned()))
            }
            Some(b'(') => {
                self.i += 1;
                Ok(PyVal::Tuple(self.seq(b')', Self::value)?))
            }
            Some(b'[') => {
                self.i += 1;
                Ok(PyVal::List(self.seq(b']', Self::value)?))
            }
            Some(b'{') => {
                self.i += 1;
                Ok(PyVal::Dict(self.seq(b'}', |p| {
                    let k = p.value()?;
                    p.expect(b':')?;
                    Ok((k, p.value()?))
                })?))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                let v = text.parse::<i128>().map_err(|_| format!("bad integer `{text}`"))?;
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1; // Python 2 long
                }
                Ok(PyVal::Int(v))
            }
            _ => {
                let rest = &self.s[self.i..];
                for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if rest.starts_with(word) {
                        self.i += word.len();
                        return Ok(PyVal::Bool(v));
                    }
                }
                Err(format!("unexpected `{}` at byte {}", String::from_utf8_lossy(&rest[..rest.len().min(12)]), self.i))
            }
        }
    }
}

/// A parsed .npy array: dtype descr, shape and the raw little-endian data.
struct Npy<'a> {
    descr: String,
    shape: Vec<usize>,
    data: &'a [u8],
}

fn parse_npy<'a>(op: &'static str, path: &Path, bytes: &'a [u8]) -> Result<Npy<'a>> {
    if !bytes.starts_with(NPY_MAGIC) {
        return Err(bad(op, path, "not an .npy file: it does not start with the \\x93NUMPY magic"));
    }
    if bytes.len() < 10 {
        return Err(bad(op, path, "truncated .npy header"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        2 | 3 => return Err(bad(op, path, "truncated .npy header")),
        _ => return Err(bad(op, path, format!("unsupported .npy format version {major}.{minor} (1.0, 2.0, 3.0 are)"))),
    };
    let Some(header) = bytes.get(start..start + hlen) else {
        return Err(bad(op, path, format!("truncated .npy header: it says {hlen} bytes, the file has fewer")));
    };
    let dict = PyParser { s: header, i: 0, depth: 0 }
        .value()
        .map_err(|e| bad(op, path, format!("cannot parse .npy header {:?}: {e}", String::from_utf8_lossy(header))))?;
    let PyVal::Dict(items) = dict else {
        return Err(bad(op, path, "the .npy header is not a dict"));
    };
    let get = |key: &str| items.iter().find(|(k, _)| *k == PyVal::Str(key.into())).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(PyVal::Str(s)) => s.clone(),
        Some(other) => return Err(bad(op, path, format!("unsupported dtype {other:?} (structured arrays are not)"))),
        None => return Err(bad(op, path, "the .npy header has no 'descr'")),
    };
    match get("fortran_order") {
        Some(PyVal::Bool(false)) => {}
        Some(PyVal::Bool(true)) => {
            return Err(bad(
                op,
                path,
                "fortran_order is True: only C-order arrays are supported (np.ascontiguousarray)",
            ))
        }
        _ => return Err(bad(op, path, "the .npy header has no boolean 'fortran_order'")),
    }
    let shape = match get("shape") {
        Some(PyVal::Tuple(dims)) => dims
            .iter()
            .map(|d| match d {
                PyVal::Int(v) if *v >= 0 && *v <= usize::MAX as i128 => Ok(*v as usize),
                other => Err(bad(op, path, format!("bad dimension {other:?} in shape"))),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(bad(op, path, "the .npy header has no tuple 'shape'")),
    };
    let data = &bytes[start + hlen..];
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let want = count.and_then(|c| c.checked_mul(npy_itemsize(&descr)));
    if let Some(want) = want {
        if npy_itemsize(&descr) > 0 && data.len() != want {
            let kind = if data.len() < want { "truncated" } else { "trailing data" };
            return Err(bad(
                op,
                path,
                format!("{kind}: shape {shape:?} of {descr} needs {want} bytes of data, the file has {}", data.len()),
            ));
        }
    } else {
        return Err(bad(op, path, format!("shape {shape:?} is too large")));
    }
    Ok(Npy { descr, shape, data })
}

/// Bytes per element of the dtypes read here; 0 for the rest.
fn npy_itemsize(descr: &str) -> usize {
    match descr {
        "|u1" | "<u1" | "u1" | "|i1" | "<i1" | "i1" => 1,
        "<u2" | "<i2" => 2,
        "<f4" | "<u4" | "<i4" => 4,
        "<f8" | "<u8" | "<i8" => 8,
        _ => 0,
    }
}

/// Images from the bytes of an `.npy` file (`path` names it in errors), with its labels file if any.
pub(super) fn load_npy_images(path: &Path, bytes: &[u8], range: PixelRange) -> Result<ImageSet> {
    let mut set = parse_npy_images(path, bytes, range)?;
    if let Some(lpath) = npy_labels_path(path) {
        let labels = load_npy_labels(&lpath)?;
        attach_labels(&mut set, labels, path, &lpath)?;
    }
    Ok(set)
}

/// Images from the bytes of an `.npy` file, without labels; float pixels are taken in `range`.
pub(super) fn parse_npy_images(path: &Path, bytes: &[u8], range: PixelRange) -> Result<ImageSet> {
    let npy = parse_npy(LOAD, path, bytes)?;
    let (n, c, h, w) = match npy.shape[..] {
        [n, h, w] => (n, 1, h, w),
        [n, c, h, w] => {
            let chan = |d: usize| matches!(d, 1 | 3 | 4);
            if chan(w) && !chan(c) {
                return Err(bad(
                    LOAD,
                    path,
                    format!("shape {:?} looks channels-last (N, H, W, C): want (N, C, H, W)", npy.shape),
                ));
            }
            (n, c, h, w)
        }
        _ => return Err(bad(LOAD, path, format!("unsupported shape {:?}: want (N, H, W) or (N, C, H, W)", npy.shape))),
    };
    if n * c * h * w == 0 {
        return Err(bad(LOAD, path, format!("empty: shape {:?}", npy.shape)));
    }
    let pixels: Vec<f32> = match npy.descr.as_str() {
        "|u1" | "<u1" | "u1" => npy.data.par_iter().map(|&v| u8_to_unit(v)).collect(),
        "<f4" => npy.data.par_chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        "<f8" => npy
            .data
            .par_chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        d => return Err(bad(LOAD, path, format!("unsupported dtype {d}: images must be |u1, <f4 or <f8"))),
    };
    let mut pixels = pixels;
    if npy.descr.ends_with("u1") {
        range.check_u8(path, "this .npy file (dtype u1)")?;
    } else {
        super::images::float_to_unit(path, &mut pixels, c * h * w, range)?;
    }
    Ok(ImageSet { n, c, h, w, pixels, labels: None, num_classes: 0 })
}

/// `<stem>_labels.npy`, else `labels.npy`, beside `images`, if one exists (and is not `images` itself).
fn npy_labels_path(images: &Path) -> Option<PathBuf> {
    let stem = strip_gz(images).file_stem()?.to_str()?.to_string();
    [format!("{stem}_labels.npy"), "labels.npy".to_string()]
        .into_iter()
        .map(|n| images.with_file_name(n))
        .find(|p| p.is_file() && p.file_name() != images.file_name())
}

fn load_npy_labels(path: &Path) -> Result<Vec<u32>> {
    parse_npy_labels(path, &read_maybe_gz(path)?)
}

/// Class ids from the bytes of an `.npy` labels file (`path` names it in errors).
pub(super) fn parse_npy_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u32>> {
    let npy = parse_npy(LOAD, path, bytes)?;
    match npy.shape[..] {
        [_] => {}
        [_, 1] => {}
        _ => return Err(bad(LOAD, path, format!("labels must have shape (N,), not {:?}", npy.shape))),
    }
    let d = npy.data;
    let vals: Vec<i128> = match npy.descr.as_str() {
        "|u1" | "<u1" | "u1" => d.iter().map(|&v| v as i128).collect(),
        "|i1" | "<i1" | "i1" => d.iter().map(|&v| v as i8 as i128).collect(),
        "<u2" => d.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as i128).collect(),
        "<i2" => d.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as i128).collect(),
        "<u4" => d.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as i128).collect(),
        "<i4" => d.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i128).collect(),
        "<u8" => d.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as i128).collect(),
        "<i8" => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as i128).collect(),
        other => return Err(bad(LOAD, path, format!("unsupported label dtype {other}: labels must be integers"))),
    };
    vals.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| bad(LOAD, path, format!("label {v} at index {i} is not a class id (0..2^32)")))
        })
        .collect()
}

/// Writes `data` as an .npy file (format 1.0, `<f4`, C order) of `shape`, whose product must be
/// `data.len()`. Atomic.
pub fn write_npy_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(bad("write_npy_f32", path, format!("shape {shape:?} does not hold {} values", data.len())));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded with spaces to a multiple of 64.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.extend(std::iter::repeat_n(' ', total - 10 - header.len() - 1));
    header.push('\n');
    let hlen = u16::try_from(header.len())
        .map_err(|_| bad("write_npy_f32", path, format!("shape {shape:?} makes too long a header")))?;
    write_atomic_with(path, |out| {
        let io = |e| io_err(path, e);
        out.write_all(NPY_MAGIC).map_err(io)?;
        out.write_all(&[1, 0]).map_err(io)?;
        out.write_all(&hlen.to_le_bytes()).map_err(io)?;
        out.write_all(header.as_bytes()).map_err(io)?;
        let mut bytes = Vec::with_capacity(64 * 1024);
        for chunk in data.chunks(16 * 1024) {
            bytes.clear();
            chunk.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            out.write_all(&bytes).map_err(io)?;
        }
        Ok(())
    })
}
