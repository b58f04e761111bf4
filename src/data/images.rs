//! Image datasets for the GAN and diffusion regimes: loaders for IDX files (MNIST, Fashion-MNIST), `.npy`
//! arrays and folders of PNGs, all into one [`ImageSet`] of NCHW `f32` pixels in [-1, 1]; a deterministic
//! hold-out split; padding (28×28 to 32×32); and writers for sample grids (PNG) and arrays (`.npy`).
//!
//! Every failure that a file can cause is an [`Error`] naming the file and the problem, never a panic.
//! Writers are atomic: they write a temporary file in the target's folder and rename it into place, so a
//! failure leaves either the old file or none, never half of a new one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// A set of images, NCHW, every pixel in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// `n * c * h * w` values, image-major then channel, row, column; in [-1, 1].
    pub pixels: Vec<f32>,
    /// One class id per image when the source has labels.
    pub labels: Option<Vec<u32>>,
    /// `1 + max(labels)` when there are labels, else 0.
    pub num_classes: usize,
}

impl ImageSet {
    /// Values per image: `c * h * w`.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Image `i` (CHW).
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.image_len();
        &self.pixels[i * d..(i + 1) * d]
    }
}

/// u8 to [-1, 1]: 0 → -1, 255 → 1 exactly.
fn u8_to_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// [-1, 1] to u8, clamped; NaN goes to 0.
fn unit_to_u8(x: f32) -> u8 {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn bad(op: &'static str, path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(op, format!("{}: {msg}", shown(path)))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: shown(path), source }
}

const LOAD: &str = "load_images";

/// Loads an image dataset from `path`, deciding by what the path is:
///
/// - a folder: every `*.png` in it (not in subfolders), sorted by file name; all must have the same size
///   and the same channel count; 8-bit gray, gray+alpha, RGB, RGBA or palette (alpha is dropped, so C is
///   1 or 3). No labels.
/// - a file starting with `\x93NUMPY` (or named `*.npy`): a NumPy array, format 1.0, 2.0 or 3.0, C order,
///   shape (N, H, W) or (N, C, H, W), dtype `|u1` (scaled 0..255 → -1..1) or `<f4` / `<f8` (used as given;
///   every value must already lie in [-1, 1], else an error says where one does not). Labels come from
///   `<stem>_labels.npy`, or else `labels.npy`, in the same folder (integer dtype, shape (N,)).
/// - any other file: IDX (the MNIST format), magic 0x00000803, u8 images [N, H, W] (C = 1). Labels come
///   from the file beside it whose name has `images` → `labels` and `idx3` → `idx1` (with or without
///   `.gz`), e.g. `train-images-idx3-ubyte.gz` → `train-labels-idx1-ubyte.gz`; magic 0x00000801, N bytes.
///
/// Files that start with the gzip magic (1f 8b) are decompressed first, whatever their name.
pub fn load_images(path: &Path) -> Result<ImageSet> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        return load_png_folder(path);
    }
    let bytes = read_maybe_gz(path)?;
    let npy_name = strip_gz(path).extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if bytes.starts_with(NPY_MAGIC) || npy_name {
        load_npy_images(path, &bytes)
    } else {
        load_idx_images(path, &bytes)
    }
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| io_err(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(LOAD, path, format!("gzip data is corrupt or truncated: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// `x.npy.gz` → `x.npy`; other names unchanged.
fn strip_gz(path: &Path) -> PathBuf {
    match path.extension() {
        Some(e) if e.eq_ignore_ascii_case("gz") => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// IDX

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn load_idx_images(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    if bytes.len() < 4 {
        return Err(bad(LOAD, path, format!("truncated IDX header: {} bytes, an image file needs 16", bytes.len())));
    }
    let magic = be32(bytes, 0);
    if magic != 0x0000_0803 {
        let what = if magic == 0x0000_0801 { " (that is an IDX label file)" } else { "" };
        return Err(bad(
            LOAD,
            path,
            format!(
                "wrong IDX magic 0x{magic:08x}{what}: want 0x00000803 (u8 images [N, H, W]); \
                 other accepted inputs are .npy files and folders of PNGs"
            ),
        ));
    }
    if bytes.len() < 16 {
        return Err(bad(LOAD, path, format!("truncated IDX header: {} bytes, an image file needs 16", bytes.len())));
    }
    let (n, h, w) = (be32(bytes, 4) as usize, be32(bytes, 8) as usize, be32(bytes, 12) as usize);
    let body = &bytes[16..];
    let size_err = |kind: &str, want: String| {
        bad(
            LOAD,
            path,
            format!("{kind}: header says {n}×{h}×{w} = {want} bytes of pixels, the file has {}", body.len()),
        )
    };
    match n.checked_mul(h).and_then(|v| v.checked_mul(w)) {
        Some(want) if want == body.len() => {}
        Some(want) if want < body.len() => return Err(size_err("trailing data", want.to_string())),
        Some(want) => return Err(size_err("truncated", want.to_string())),
        None => return Err(size_err("truncated", "more than fits in memory".into())),
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(bad(LOAD, path, format!("empty: header says {n}×{h}×{w}")));
    }
    let pixels = body.par_iter().map(|&v| u8_to_unit(v)).collect();
    let mut set = ImageSet { n, c: 1, h, w, pixels, labels: None, num_classes: 0 };
    if let Some(lpath) = idx_labels_path(path) {
        let labels = load_idx_labels(&lpath)?;
        attach_labels(&mut set, labels, path, &lpath)?;
    }
    Ok(set)
}

/// The labels file beside IDX images, if one exists: `images` → `labels`, `idx3` → `idx1` in the name,
/// tried as is, then with `.gz` removed or added.
fn idx_labels_path(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let lname = name.replace("images", "labels").replace("idx3", "idx1");
    if lname == name {
        return None;
    }
    let alt = match lname.strip_suffix(".gz") {
        Some(s) => s.to_string(),
        None => format!("{lname}.gz"),
    };
    [lname, alt].into_iter().map(|n| images.with_file_name(n)).find(|p| p.is_file())
}

fn load_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 8 {
        return Err(bad(
            LOAD,
            path,
            format!("truncated IDX label header: {} bytes, a label file needs 8", bytes.len()),
        ));
    }
    let magic = be32(&bytes, 0);
    if magic != 0x0000_0801 {
        return Err(bad(LOAD, path, format!("wrong IDX magic 0x{magic:08x} for labels: want 0x00000801 (u8 [N])")));
    }
    let n = be32(&bytes, 4) as usize;
    let body = &bytes[8..];
    if body.len() != n {
        let kind = if body.len() < n { "truncated" } else { "trailing data" };
        return Err(bad(
            LOAD,
            path,
            format!("{kind}: header says {n} labels, the file has {} bytes of them", body.len()),
        ));
    }
    Ok(body.iter().map(|&v| v as u32).collect())
}

fn attach_labels(set: &mut ImageSet, labels: Vec<u32>, images: &Path, lpath: &Path) -> Result<()> {
    if labels.len() != set.n {
        return Err(bad(
            LOAD,
            lpath,
            format!("label count mismatch: {} labels for {} images in {}", labels.len(), set.n, shown(images)),
        ));
    }
    set.num_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    set.labels = Some(labels);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// .npy

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

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
}

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
    let dict = PyParser { s: header, i: 0 }
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

fn load_npy_images(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
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
    if let Some(i) = pixels.par_iter().position_first(|v| !(-1.0..=1.0).contains(v)) {
        return Err(bad(
            LOAD,
            path,
            format!(
                "float pixels must lie in [-1, 1] (they are used as given): value {} at flat index {i} \
                 (image {})",
                pixels[i],
                i / (c * h * w)
            ),
        ));
    }
    let mut set = ImageSet { n, c, h, w, pixels, labels: None, num_classes: 0 };
    if let Some(lpath) = npy_labels_path(path) {
        let labels = load_npy_labels(&lpath)?;
        attach_labels(&mut set, labels, path, &lpath)?;
    }
    Ok(set)
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
    let bytes = read_maybe_gz(path)?;
    let npy = parse_npy(LOAD, path, &bytes)?;
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

// ---------------------------------------------------------------------------------------------------------
// PNG folders

struct Decoded {
    w: usize,
    h: usize,
    c: usize,
    /// HWC, alpha dropped.
    data: Vec<u8>,
}

fn decode_png(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| bad(LOAD, path, format!("cannot decode PNG: {e}")))?;
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight {
        return Err(bad(LOAD, path, format!("{depth:?}-bit PNG: only 8-bit PNGs are supported")));
    }
    let (src_c, c) = match color {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => return Err(bad(LOAD, path, "palette PNG was not expanded")),
    };
    let size = reader.output_buffer_size().ok_or_else(|| bad(LOAD, path, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(LOAD, path, format!("cannot decode PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut data = Vec::with_capacity(w * h * c);
    for row in buf.chunks(info.line_size).take(h) {
        for px in row[..w * src_c].chunks_exact(src_c) {
            data.extend_from_slice(&px[..c]);
        }
    }
    Ok(Decoded { w, h, c, data })
}

fn load_png_folder(dir: &Path) -> Result<ImageSet> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    if files.is_empty() {
        return Err(bad(
            LOAD,
            dir,
            "no .png files in this folder (want a folder of PNGs, an IDX file or an .npy file)",
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let decoded: Vec<Decoded> = files.par_iter().map(|p| decode_png(p)).collect::<Result<_>>()?;
    let first = &decoded[0];
    let (h, w, c) = (first.h, first.w, first.c);
    for (d, p) in decoded.iter().zip(&files) {
        if (d.h, d.w) != (h, w) {
            return Err(bad(
                LOAD,
                p,
                format!("mixed sizes: {}×{} (w×h) where {} is {w}×{h}", d.w, d.h, shown(&files[0])),
            ));
        }
        if d.c != c {
            let name = |c: usize| if c == 1 { "gray" } else { "RGB" };
            return Err(bad(
                LOAD,
                p,
                format!("mixed color types: {} where {} is {}", name(d.c), shown(&files[0]), name(c)),
            ));
        }
    }
    let per = c * h * w;
    let mut pixels = vec![0f32; decoded.len() * per];
    pixels.par_chunks_mut(per).zip(&decoded).for_each(|(out, d)| {
        for (k, &v) in d.data.iter().enumerate() {
            let (yx, ch) = (k / c, k % c);
            out[ch * h * w + yx] = u8_to_unit(v);
        }
    });
    Ok(ImageSet { n: decoded.len(), c, h, w, pixels, labels: None, num_classes: 0 })
}

// ---------------------------------------------------------------------------------------------------------
// Splitting and padding

/// Splits off the last `round(n * frac)` images as a held-out set: `(train, held)`, deterministic (no
/// shuffle; shuffle first if the source is ordered). Labels split with their images; both halves keep
/// `num_classes`. `frac` must be in [0, 1].
pub fn split_holdout(set: ImageSet, frac: f64) -> Result<(ImageSet, ImageSet)> {
    if !(0.0..=1.0).contains(&frac) {
        return Err(Error::invalid("split_holdout", format!("frac {frac} is not in [0, 1]")));
    }
    let held_n = ((set.n as f64 * frac).round() as usize).min(set.n);
    let train_n = set.n - held_n;
    let (d, k) = (set.image_len(), set.num_classes);
    let mut train = set;
    let held = ImageSet {
        n: held_n,
        c: train.c,
        h: train.h,
        w: train.w,
        pixels: train.pixels.split_off(train_n * d),
        labels: train.labels.as_mut().map(|l| l.split_off(train_n)),
        num_classes: k,
    };
    train.n = train_n;
    Ok((train, held))
}

/// Pads every image to `h` × `w` with -1 (black), centered (the extra row or column, if odd, at the bottom
/// or right): 28×28 → 32×32 puts 2 pixels on each side. The target must be at least the current size.
pub fn pad_to(set: &ImageSet, h: usize, w: usize) -> Result<ImageSet> {
    if h < set.h || w < set.w {
        return Err(Error::invalid(
            "pad_to",
            format!("cannot pad {}×{} images to a smaller {h}×{w} (this pads, it does not crop)", set.h, set.w),
        ));
    }
    let (top, left) = ((h - set.h) / 2, (w - set.w) / 2);
    let planes = set.n * set.c;
    let mut pixels = vec![-1f32; planes * h * w];
    pixels.par_chunks_mut(h * w).zip(set.pixels.par_chunks(set.h * set.w)).for_each(|(out, src)| {
        for (y, row) in src.chunks(set.w).enumerate() {
            let at = (top + y) * w + left;
            out[at..at + set.w].copy_from_slice(row);
        }
    });
    Ok(ImageSet { n: set.n, c: set.c, h, w, pixels, labels: set.labels.clone(), num_classes: set.num_classes })
}

// ---------------------------------------------------------------------------------------------------------
// Writers

/// Writes through `body` into a temporary file beside `path`, then renames it onto `path`. On any error
/// the temporary file is removed and `path` is left as it was.
fn write_atomic(path: &Path, body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| bad("write", path, "not a file path"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
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

/// Writes `n` images (NCHW, values in [-1, 1]; clamped, NaN shown as -1) as one PNG grid: `cols` images a
/// row (fewer if `n < cols`), a 1-pixel white gap between neighbours and no outer border. `c` is 1 (gray)
/// or 3 (RGB). Atomic.
pub fn write_png_grid(path: &Path, pixels: &[f32], n: usize, c: usize, h: usize, w: usize, cols: usize) -> Result<()> {
    const OP: &str = "write_png_grid";
    if c != 1 && c != 3 {
        return Err(bad(OP, path, format!("{c} channels: want 1 (gray) or 3 (RGB)")));
    }
    if n == 0 || h == 0 || w == 0 || cols == 0 {
        return Err(bad(OP, path, format!("nothing to draw: n {n}, h {h}, w {w}, cols {cols}")));
    }
    if n.checked_mul(c * h * w) != Some(pixels.len()) {
        return Err(bad(OP, path, format!("{} values for {n}×{c}×{h}×{w} images", pixels.len())));
    }
    let cols = cols.min(n);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * w + cols - 1, rows * h + rows - 1);
    if gw > u32::MAX as usize || gh > u32::MAX as usize {
        return Err(bad(OP, path, format!("grid of {gw}×{gh} pixels is too large for a PNG")));
    }
    let mut buf = vec![255u8; gw * gh * c];
    for i in 0..n {
        let (r, q) = (i / cols, i % cols);
        let img = &pixels[i * c * h * w..(i + 1) * c * h * w];
        for y in 0..h {
            for x in 0..w {
                let at = ((r * (h + 1) + y) * gw + q * (w + 1) + x) * c;
                for ch in 0..c {
                    buf[at + ch] = unit_to_u8(img[(ch * h + y) * w + x]);
                }
            }
        }
    }
    write_atomic(path, |out| {
        let mut enc = png::Encoder::new(out, gw as u32, gh as u32);
        enc.set_color(if c == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| bad(OP, path, format!("PNG encoding failed: {e}"));
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&buf).map_err(png_err)?;
        writer.finish().map_err(png_err)
    })
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
    write_atomic(path, |out| {
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
