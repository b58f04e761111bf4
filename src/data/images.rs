//! Image datasets for the GAN and diffusion regimes: one [`ImageSet`] of NCHW `f32` pixels in [-1, 1]
//! from IDX files (MNIST, Fashion-MNIST), `.npy` arrays or folders of PNGs, the loader that tells them
//! apart, a deterministic hold-out split, and padding (28×28 to 32×32). The formats have their own
//! files: `idx`, `npy` (reader and writer), `png` (folder reader and sample-grid writer).
//!
//! Every failure that a file can cause is an [`Error`] naming the file and the problem, never a panic.
//! Writers are atomic (`host::fs::write_atomic_with`): a failure leaves either the old file or none,
//! never half of a new one.

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::host::fs::io_err;

use super::{idx, npy, png};

pub use super::npy::write_npy_f32;
pub use super::png::{grid_u8, write_png_grid, write_png_u8};

/// A set of images, NCHW, every pixel in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Number of images.
    pub n: usize,
    /// Channels per image: 1 (gray) or 3 (RGB) from PNGs and IDX; as stored for `.npy`.
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
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
pub(super) fn u8_to_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// [-1, 1] to u8, clamped; NaN goes to 0.
pub(super) fn unit_to_u8(x: f32) -> u8 {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// The range the pixels of float image data (`.npy` `<f4`/`<f8`) are in, as `--range` gives it; they
/// are mapped from it to [-1, 1]. 8-bit data (IDX, PNG, `.npy` `|u1`) is 0..255 by its type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PixelRange {
    /// Read from the values' minimum and maximum (`auto`): [-1, 1] when one is negative, else [0, 1]
    /// when all are at most 1, else [0, 255].
    #[default]
    Auto,
    /// [-1, 1] (`-1,1`), used as given.
    Signed,
    /// [0, 1] (`0,1`), mapped by 2x − 1.
    Unit,
    /// [0, 255] (`0,255`), mapped by x / 127.5 − 1.
    Byte,
}

impl PixelRange {
    /// The bounds, None for `Auto`.
    pub fn bounds(self) -> Option<(f32, f32)> {
        match self {
            PixelRange::Auto => None,
            PixelRange::Signed => Some((-1.0, 1.0)),
            PixelRange::Unit => Some((0.0, 1.0)),
            PixelRange::Byte => Some((0.0, 255.0)),
        }
    }

    /// (scale, shift) taking the range to [-1, 1]; identity for `Auto`.
    fn map(self) -> (f32, f32) {
        match self {
            PixelRange::Auto | PixelRange::Signed => (1.0, 0.0),
            PixelRange::Unit => (2.0, -1.0),
            PixelRange::Byte => (1.0 / 127.5, -1.0),
        }
    }

    /// Refuses a range other than `auto` or `0,255` for 8-bit data (`what` describes it).
    pub(super) fn check_u8(self, path: &Path, what: &str) -> Result<()> {
        if matches!(self, PixelRange::Auto | PixelRange::Byte) {
            return Ok(());
        }
        Err(bad(
            LOAD,
            path,
            format!("--range {self} is for float pixels; {what} holds 8-bit pixels, 0..255 by their type"),
        ))
    }
}

impl std::str::FromStr for PixelRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.replace(' ', "").as_str() {
            "auto" => Ok(PixelRange::Auto),
            "-1,1" => Ok(PixelRange::Signed),
            "0,1" => Ok(PixelRange::Unit),
            "0,255" => Ok(PixelRange::Byte),
            _ => Err(format!("`{s}`: want 0,1, -1,1, 0,255 or auto")),
        }
    }
}

impl std::fmt::Display for PixelRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PixelRange::Auto => "auto",
            PixelRange::Signed => "-1,1",
            PixelRange::Unit => "0,1",
            PixelRange::Byte => "0,255",
        })
    }
}

/// Float pixels to [-1, 1] from `range`. Given a range, every value must lie in it: the first that does
/// not is an error naming it, its image, the range given and the span found. With `Auto` the range is
/// read from the minimum and maximum: values in [-1, 1] with a negative one are used as given; values in
/// [0, 1] (the usual convention for floats) are mapped by 2x − 1, values in [0, 255] by x / 127.5 − 1;
/// anything beyond those ranges is an error that names the span found and the ranges taken. A NaN or an
/// infinity is always an error. `per` values make one image (for the message).
pub(super) fn float_to_unit(path: &Path, pixels: &mut [f32], per: usize, range: PixelRange) -> Result<()> {
    if let Some(i) = pixels.par_iter().position_first(|v| !v.is_finite()) {
        return Err(bad(LOAD, path, format!("pixel {} at flat index {i} (image {})", pixels[i], i / per.max(1))));
    }
    let (lo, hi) = pixels
        .par_iter()
        .fold(|| (f32::INFINITY, f32::NEG_INFINITY), |m, &v| (m.0.min(v), m.1.max(v)))
        .reduce(|| (f32::INFINITY, f32::NEG_INFINITY), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    if let Some((a, b)) = range.bounds() {
        if let Some(i) = pixels.par_iter().position_first(|v| !(a..=b).contains(v)) {
            return Err(bad(
                LOAD,
                path,
                format!(
                    "value {} at flat index {i} (image {}) is outside --range {range}: the pixels span [{lo}, {hi}]; \
                     give the range they are in (0,1, -1,1, 0,255) or auto",
                    pixels[i],
                    i / per.max(1)
                ),
            ));
        }
        let (scale, shift) = range.map();
        if (scale, shift) != (1.0, 0.0) {
            pixels.par_iter_mut().for_each(|v| *v = *v * scale + shift);
        }
        return Ok(());
    }
    let (scale, shift) = if (-1.0..0.0).contains(&lo) && hi <= 1.0 {
        return Ok(());
    } else if lo >= 0.0 && hi <= 1.0 {
        (2.0, -1.0)
    } else if lo >= 0.0 && hi <= 255.0 {
        (1.0 / 127.5, -1.0)
    } else {
        // The first value outside the range the data's sign points to.
        let range = if lo < 0.0 { -1.0..=1.0 } else { 0.0..=255.0 };
        let i = pixels.par_iter().position_first(|v| !range.contains(v)).unwrap_or(0);
        return Err(bad(
            LOAD,
            path,
            format!(
                "float pixels span [{lo}, {hi}]: value {} at flat index {i} (image {}) is outside [{}, {}]; \
                 tigel takes pixels in [-1, 1], [0, 1] or [0, 255] (read from their minimum and maximum): \
                 rescale them into one of these",
                pixels[i],
                i / per.max(1),
                range.start(),
                range.end()
            ),
        ));
    };
    pixels.par_iter_mut().for_each(|v| *v = *v * scale + shift);
    Ok(())
}

/// An error of `op` about the file `path`.
pub(super) fn bad(op: &'static str, path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(op, format!("{}: {msg}", path.display()))
}

/// The op name errors of the loaders carry.
pub(super) const LOAD: &str = "load_images";

/// Loads an image dataset from `path`, deciding by what the path is:
///
/// - a folder: every `*.png` in it (not in subfolders), sorted by file name; all must have the same size
///   and the same channel count; 8-bit gray, gray+alpha, RGB, RGBA or palette (alpha is dropped, so C is
///   1 or 3). No labels.
/// - a file starting with `\x93NUMPY` (or named `*.npy`): a NumPy array, format 1.0, 2.0 or 3.0, C order,
///   shape (N, H, W) or (N, C, H, W), dtype `|u1` (scaled 0..255 → -1..1) or `<f4` / `<f8`, whose range
///   is read from the values (`float_to_unit`, or given: `load_images_in`): [-1, 1] when some are
///   negative, [0, 1] (the usual convention) or [0, 255] when none are, each mapped to [-1, 1]; other
///   values are an error. Labels come from
///   `<stem>_labels.npy`, or else `labels.npy`, in the same folder (integer dtype, shape (N,)).
/// - any other file: IDX (the MNIST format), magic 0x00000803, u8 images [N, H, W] (C = 1). Labels come
///   from the file beside it whose name has `images` → `labels` and `idx3` → `idx1` (with or without
///   `.gz`), e.g. `train-images-idx3-ubyte.gz` → `train-labels-idx1-ubyte.gz`; magic 0x00000801, N bytes.
///
/// Files that start with the gzip magic (1f 8b) are decompressed first, whatever their name.
pub fn load_images(path: &Path) -> Result<ImageSet> {
    load_images_in(path, PixelRange::Auto)
}

/// `load_images` with the pixel range of float data given (`--range`) rather than read from the values;
/// a range other than `auto` or `0,255` for 8-bit data is an error naming the file.
pub fn load_images_in(path: &Path, range: PixelRange) -> Result<ImageSet> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        range.check_u8(path, "this folder of PNGs")?;
        return png::load_png_folder(path);
    }
    let bytes = read_maybe_gz(path)?;
    let npy_name = strip_gz(path).extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if bytes.starts_with(npy::NPY_MAGIC) || npy_name {
        npy::load_npy_images(path, &bytes, range)
    } else {
        range.check_u8(path, "this IDX file")?;
        idx::load_idx_images(path, &bytes)
    }
}

/// Images from the bytes of one file, as `load_images` reads a file of that content (gzipped or not):
/// `.npy` (by its magic or `name`), a PNG (by its magic; one image), else IDX. `name` names it in errors;
/// no labels file is looked for. For data that is not in a file, and for fuzzing.
pub fn images_from_bytes(name: &Path, bytes: &[u8]) -> Result<ImageSet> {
    let bytes = gunzip_if_gz(name, bytes)?;
    let npy_name = strip_gz(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if bytes.starts_with(npy::NPY_MAGIC) || npy_name {
        npy::parse_npy_images(name, &bytes, PixelRange::Auto)
    } else if bytes.starts_with(png::PNG_MAGIC) {
        png::png_from_bytes(name, &bytes)
    } else {
        idx::parse_idx_images(name, &bytes)
    }
}

/// Class ids from the bytes of a labels file (gzipped or not): `.npy` by its magic, else IDX. `name`
/// names it in errors. For data that is not in a file, and for fuzzing.
pub fn labels_from_bytes(name: &Path, bytes: &[u8]) -> Result<Vec<u32>> {
    let bytes = gunzip_if_gz(name, bytes)?;
    if bytes.starts_with(npy::NPY_MAGIC) {
        npy::parse_npy_labels(name, &bytes)
    } else {
        idx::parse_idx_labels(name, &bytes)
    }
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub(super) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| io_err(path, e))?;
    match gunzip_if_gz(path, &raw)? {
        std::borrow::Cow::Owned(out) => Ok(out),
        std::borrow::Cow::Borrowed(_) => Ok(raw),
    }
}

/// The bytes, gunzipped when they start with the gzip magic (`path` names them in errors).
fn gunzip_if_gz<'a>(path: &Path, raw: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    // The capacity is a guess (MNIST compresses about 4:1), capped so a tiny file reserves little.
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(1 << 30));
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| bad(LOAD, path, format!("gzip data is corrupt or truncated: {e}")))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// `x.npy.gz` → `x.npy`; other names unchanged.
pub(super) fn strip_gz(path: &Path) -> PathBuf {
    match path.extension() {
        Some(e) if e.eq_ignore_ascii_case("gz") => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

/// Class ids must be below this (a label-conditioned model holds one embedding row per class).
pub const MAX_CLASSES: usize = 1 << 16;

/// Sets `set`'s labels (read from `lpath`) and class count, if there is one label per image.
pub(super) fn attach_labels(set: &mut ImageSet, labels: Vec<u32>, images: &Path, lpath: &Path) -> Result<()> {
    if labels.len() != set.n {
        return Err(bad(
            LOAD,
            lpath,
            format!("label count mismatch: {} labels for {} images in {}", labels.len(), set.n, images.display()),
        ));
    }
    // A class id sets the size of a label-embedding table: refuse one no dataset has before it does.
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= MAX_CLASSES) {
        return Err(bad(LOAD, lpath, format!("label {l} of image {i}: class ids must be below {MAX_CLASSES}")));
    }
    set.num_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    set.labels = Some(labels);
    Ok(())
}

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
