//! IDX, the MNIST format: u8 images [N, H, W] (magic 0x00000803) and the labels file beside them (magic
//! 0x00000801, N bytes).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::Result;

use super::images::{attach_labels, bad, read_maybe_gz, u8_to_unit, ImageSet, LOAD};

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Images from the bytes of an IDX file (`path` names it in errors), with the labels beside it if any.
pub(super) fn load_idx_images(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    let mut set = parse_idx_images(path, bytes)?;
    if let Some(lpath) = idx_labels_path(path) {
        let labels = load_idx_labels(&lpath)?;
        attach_labels(&mut set, labels, path, &lpath)?;
    }
    Ok(set)
}

/// Images from the bytes of an IDX file, without labels.
pub(super) fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
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
    Ok(ImageSet { n, c: 1, h, w, pixels, labels: None, num_classes: 0 })
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
    parse_idx_labels(path, &read_maybe_gz(path)?)
}

/// Class ids from the bytes of an IDX labels file (`path` names it in errors).
pub(super) fn parse_idx_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u32>> {
    if bytes.len() < 8 {
        return Err(bad(
            LOAD,
            path,
            format!("truncated IDX label header: {} bytes, a label file needs 8", bytes.len()),
        ));
    }
    let magic = be32(bytes, 0);
    if magic != 0x0000_0801 {
        return Err(bad(LOAD, path, format!("wrong IDX magic 0x{magic:08x} for labels: want 0x00000801 (u8 [N])")));
    }
    let n = be32(bytes, 4) as usize;
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
