//! PNG: a folder of PNGs read as one image set, and sample grids written as one PNG.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::Result;
use crate::host::fs::{io_err, write_atomic_with};

use super::images::{bad, u8_to_unit, unit_to_u8, ImageSet, LOAD};

struct Decoded {
    w: usize,
    h: usize,
    c: usize,
    /// HWC, alpha dropped.
    data: Vec<u8>,
}

/// The first bytes of every PNG file.
pub(super) const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn decode_png(path: &Path) -> Result<Decoded> {
    decode_png_bytes(path, std::fs::read(path).map_err(|e| io_err(path, e))?)
}

/// One PNG's bytes as a set of one image (`path` names it in errors).
pub(super) fn png_from_bytes(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    let d = decode_png_bytes(path, bytes.to_vec())?;
    Ok(ImageSet { n: 1, c: d.c, h: d.h, w: d.w, pixels: to_planes(&d), labels: None, num_classes: 0 })
}

/// Most bytes of pixels `len` bytes of PNG can hold: deflate expands at most 1032:1, plus slack for the
/// filter byte of each row of a tiny image.
fn most_pixel_bytes(len: usize) -> usize {
    len.saturating_mul(1032).saturating_add(1 << 16)
}

fn decode_png_bytes(path: &Path, bytes: Vec<u8>) -> Result<Decoded> {
    let most = most_pixel_bytes(bytes.len());
    let mut dec = ::png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(::png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| bad(LOAD, path, format!("cannot decode PNG: {e}")))?;
    let (color, depth) = reader.output_color_type();
    if depth != ::png::BitDepth::Eight {
        return Err(bad(LOAD, path, format!("{depth:?}-bit PNG: only 8-bit PNGs are supported")));
    }
    let (src_c, c) = match color {
        ::png::ColorType::Grayscale => (1, 1),
        ::png::ColorType::GrayscaleAlpha => (2, 1),
        ::png::ColorType::Rgb => (3, 3),
        ::png::ColorType::Rgba => (4, 3),
        ::png::ColorType::Indexed => return Err(bad(LOAD, path, "palette PNG was not expanded")),
    };
    let size = reader.output_buffer_size().ok_or_else(|| bad(LOAD, path, "PNG too large"))?;
    // The header may claim any size: refuse what the file cannot hold before allocating for it.
    if size > most {
        let (w, h) = (reader.info().width, reader.info().height);
        return Err(bad(
            LOAD,
            path,
            format!("corrupt PNG: its header says {w}×{h} pixels ({size} bytes), more than a file this size can hold"),
        ));
    }
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

/// Every `*.png` in `dir` (not in subfolders), sorted by name, as one set; all of one size and one
/// channel count.
pub(super) fn load_png_folder(dir: &Path) -> Result<ImageSet> {
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
                format!("mixed sizes: {}×{} (w×h) where {} is {w}×{h}", d.w, d.h, files[0].display()),
            ));
        }
        if d.c != c {
            let name = |c: usize| if c == 1 { "gray" } else { "RGB" };
            return Err(bad(
                LOAD,
                p,
                format!("mixed color types: {} where {} is {}", name(d.c), files[0].display(), name(c)),
            ));
        }
    }
    let pixels = decoded.par_iter().flat_map_iter(to_planes).collect();
    Ok(ImageSet { n: decoded.len(), c, h, w, pixels, labels: None, num_classes: 0 })
}

/// A decoded image's HWC bytes as CHW values in [-1, 1].
fn to_planes(d: &Decoded) -> Vec<f32> {
    let (c, hw) = (d.c, d.h * d.w);
    let mut out = vec![0f32; c * hw];
    for (k, &v) in d.data.iter().enumerate() {
        out[(k % c) * hw + k / c] = u8_to_unit(v);
    }
    out
}

/// Writes `n` images (NCHW, values in [-1, 1]; clamped, NaN shown as -1) as one PNG grid: `cols` images a
/// row (fewer if `n < cols`), a 1-pixel white gap between neighbours and no outer border. `c` is 1 (gray)
/// or 3 (RGB). Atomic. Pixel for pixel: `plot::sample_grid` writes the scaled, labelled picture.
pub fn write_png_grid(path: &Path, pixels: &[f32], n: usize, c: usize, h: usize, w: usize, cols: usize) -> Result<()> {
    let (gw, gh, buf) = grid_u8(path, pixels, n, c, h, w, cols)?;
    write_png_u8(path, gw, gh, c, &buf)
}

/// The grid of [`write_png_grid`] as 8-bit pixels: (width, height, HWC bytes); `path` names errors.
pub fn grid_u8(
    path: &Path,
    pixels: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    cols: usize,
) -> Result<(usize, usize, Vec<u8>)> {
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
    Ok((gw, gh, buf))
}

/// Writes 8-bit pixels (HWC, `c` 1: gray or 3: RGB) as a PNG of `w` × `h`. Atomic.
pub fn write_png_u8(path: &Path, w: usize, h: usize, c: usize, buf: &[u8]) -> Result<()> {
    const OP: &str = "write_png";
    if (c != 1 && c != 3) || buf.len() != w * h * c || w > u32::MAX as usize || h > u32::MAX as usize {
        return Err(bad(OP, path, format!("{} bytes for a {w}×{h} image of {c} channels", buf.len())));
    }
    write_atomic_with(path, |out| {
        let mut enc = ::png::Encoder::new(out, w as u32, h as u32);
        enc.set_color(if c == 1 { ::png::ColorType::Grayscale } else { ::png::ColorType::Rgb });
        enc.set_depth(::png::BitDepth::Eight);
        let png_err = |e: ::png::EncodingError| bad(OP, path, format!("PNG encoding failed: {e}"));
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(buf).map_err(png_err)?;
        writer.finish().map_err(png_err)
    })
}
