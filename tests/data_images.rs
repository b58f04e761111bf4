//! Image dataset loaders and writers: round trips, handmade IDX / .npy / PNG inputs, every bad input as an
//! error naming the file and the problem, and the Debian Fashion-MNIST files when they are installed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::Rng;
use tigel::data::images::{load_images, pad_to, split_holdout, write_npy_f32, write_png_grid, ImageSet};

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("tigel-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: usize, h: usize, w: usize, px: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(px);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// An .npy file with a handwritten header (version 1.0 or 2.0) and raw data.
fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let lenbytes = if version == 1 { 2 } else { 4 };
    let mut h = header.to_string();
    while !(8 + lenbytes + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY".to_vec();
    b.extend_from_slice(&[version, 0]);
    if version == 1 {
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        b.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

fn npy_header(descr: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
}

fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
}

/// Decodes a PNG into (width, height, channels, bytes).
fn read_png(path: &Path) -> (usize, usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    (info.width as usize, info.height as usize, info.color_type.samples(), buf)
}

/// The error's message, which must name `file` and contain every one of `words`.
#[track_caller]
fn assert_err(r: tigel::Result<ImageSet>, file: &Path, words: &[&str]) {
    let msg = match r {
        Ok(s) => panic!("loading {} succeeded ({}×{}×{}×{}) but should fail", file.display(), s.n, s.c, s.h, s.w),
        Err(e) => e.to_string(),
    };
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error `{msg}` does not name {name}");
    for w in words {
        assert!(msg.contains(w), "error `{msg}` does not say `{w}`");
    }
}

#[test]
fn npy_f32_round_trip_nchw_and_nhw() {
    let dir = TempDir::new("npy-rt");
    let mut rng = Rng::new(common::seed());
    let data = rng.vec(5 * 3 * 4 * 6, -1.0, 1.0);
    let p = dir.join("x.npy");
    write_npy_f32(&p, &data, &[5, 3, 4, 6]).unwrap();
    let s = load_images(&p).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (5, 3, 4, 6));
    assert_eq!(s.pixels, data);
    assert_eq!(s.labels, None);
    assert_eq!(s.num_classes, 0);
    assert_eq!(s.image(4), &data[4 * 72..]);

    let p = dir.join("y.npy");
    write_npy_f32(&p, &data[..7 * 4 * 5], &[7, 4, 5]).unwrap();
    let s = load_images(&p).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (7, 1, 4, 5));
    assert_eq!(s.pixels, &data[..140]);
    // Only the two files: no temporary file is left behind.
    assert_eq!(dir.names(), ["x.npy", "y.npy"]);
}

#[test]
fn npy_u8_f64_v2_and_labels() {
    let dir = TempDir::new("npy-kinds");
    let px: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 23) as u8).collect();
    let p = dir.join("digits.npy");
    std::fs::write(&p, npy(1, &npy_header("|u1", "(2, 2, 3)"), &px)).unwrap();
    // <stem>_labels.npy wins over labels.npy.
    std::fs::write(
        dir.join("digits_labels.npy"),
        npy(1, &npy_header("<i8", "(2,)"), &[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
    )
    .unwrap();
    std::fs::write(dir.join("labels.npy"), npy(1, &npy_header("|u1", "(2,)"), &[9, 9])).unwrap();
    let s = load_images(&p).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (2, 1, 2, 3));
    assert_eq!(s.pixels, px.iter().map(|&v| unit(v)).collect::<Vec<_>>());
    assert_eq!(s.labels, Some(vec![4, 1]));
    assert_eq!(s.num_classes, 5);
    assert_eq!(unit(0), -1.0);
    assert_eq!(unit(255), 1.0);

    // Version 2.0 header, <f8 data, labels from labels.npy.
    let vals = [-1.0f64, -0.25, 0.0, 0.5, 1.0, 0.125];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.join("wide.npy");
    std::fs::write(&p, npy(2, &npy_header("<f8", "(2, 1, 1, 3)"), &bytes)).unwrap();
    let s = load_images(&p).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (2, 1, 1, 3));
    assert_eq!(s.pixels, vals.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert_eq!(s.labels, Some(vec![9, 9]));
    assert_eq!(s.num_classes, 10);

    // A gzipped .npy is read too (detected by content).
    let p = dir.join("packed.npy.gz");
    std::fs::write(&p, gzip(&npy(1, &npy_header("|u1", "(2, 2, 3)"), &px))).unwrap();
    assert_eq!(load_images(&p).unwrap().pixels.len(), 12);
}

#[test]
fn idx_raw_and_gzipped_with_labels() {
    let dir = TempDir::new("idx");
    let px: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
    let labels = [2u8, 0, 7];
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(3, 4, 5, &px)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    let s = load_images(&dir.join("train-images-idx3-ubyte")).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (3, 1, 4, 5));
    assert_eq!(s.pixels, px.iter().map(|&v| unit(v)).collect::<Vec<_>>());
    assert_eq!(s.labels, Some(vec![2, 0, 7]));
    assert_eq!(s.num_classes, 8);

    // Gzipped, named .gz, labels gzipped beside.
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gzip(&idx_images(3, 4, 5, &px))).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_labels(&labels))).unwrap();
    let g = load_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(g, s);

    // Gzip found by content, not name; labels beside it without .gz.
    std::fs::write(dir.join("odd-images-idx3"), gzip(&idx_images(3, 4, 5, &px))).unwrap();
    std::fs::write(dir.join("odd-labels-idx1"), idx_labels(&[1, 1, 1])).unwrap();
    let o = load_images(&dir.join("odd-images-idx3")).unwrap();
    assert_eq!(o.pixels, s.pixels);
    assert_eq!(o.labels, Some(vec![1, 1, 1]));

    // No labels file: no labels.
    std::fs::write(dir.join("alone-images-idx3-ubyte"), idx_images(3, 4, 5, &px)).unwrap();
    let a = load_images(&dir.join("alone-images-idx3-ubyte")).unwrap();
    assert_eq!((a.labels, a.num_classes), (None, 0));
}

#[test]
fn png_folder_sorted_gray_rgb_rgba() {
    let dir = TempDir::new("png");
    let gray = dir.join("gray");
    std::fs::create_dir(&gray).unwrap();
    // Written out of order; read back sorted by name. Other files are ignored.
    for (name, v) in [("b.png", 100u8), ("a.png", 0), ("c.png", 255)] {
        let data: Vec<u8> = (0..6).map(|i| v.wrapping_add(i)).collect();
        write_png(&gray.join(name), 3, 2, png::ColorType::Grayscale, &data);
    }
    std::fs::write(gray.join("notes.txt"), "not an image").unwrap();
    let s = load_images(&gray).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (3, 1, 2, 3));
    assert_eq!(s.image(0), (0..6).map(unit).collect::<Vec<_>>());
    assert_eq!(s.image(1), (100..106).map(unit).collect::<Vec<_>>());
    assert_eq!(s.image(2)[0], 1.0);
    assert_eq!(s.labels, None);

    // RGB and RGBA mix fine (alpha dropped); HWC in the file, CHW out.
    let rgb = dir.join("rgb");
    std::fs::create_dir(&rgb).unwrap();
    let hwc: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
    write_png(&rgb.join("0.png"), 2, 2, png::ColorType::Rgb, &hwc);
    let rgba: Vec<u8> = hwc.chunks(3).flat_map(|p| [p[0], p[1], p[2], 17]).collect();
    write_png(&rgb.join("1.png"), 2, 2, png::ColorType::Rgba, &rgba);
    let s = load_images(&rgb).unwrap();
    assert_eq!((s.n, s.c, s.h, s.w), (2, 3, 2, 2));
    let hwc = &hwc;
    let chw: Vec<f32> = (0..3).flat_map(|c| (0..4).map(move |p| unit(hwc[p * 3 + c]))).collect();
    assert_eq!(s.image(0), chw);
    assert_eq!(s.image(1), chw);
}

#[test]
fn png_grid_layout_values_and_atomicity() {
    let dir = TempDir::new("grid");
    // 5 gray 2×3 images, 3 a row: 2 rows, 3·3 + 2 = 11 wide, 2·2 + 1 = 5 high.
    let (n, h, w) = (5, 2, 3);
    let mut px = vec![0f32; n * h * w];
    for i in 0..n {
        for k in 0..h * w {
            px[i * h * w + k] = -1.0 + 0.4 * i as f32 + 0.01 * k as f32;
        }
    }
    px[0] = -7.0; // clamped to -1
    px[1] = 3.0; // clamped to 1
    let p = dir.join("grid.png");
    write_png_grid(&p, &px, n, 1, h, w, 3).unwrap();
    let (gw, gh, gc, buf) = read_png(&p);
    assert_eq!((gw, gh, gc), (11, 5, 1));
    let at = |x: usize, y: usize| buf[y * gw + x];
    assert_eq!(at(0, 0), 0);
    assert_eq!(at(1, 0), 255);
    assert_eq!(at(3, 0), 255, "gap column");
    assert_eq!(at(0, 2), 255, "gap row");
    // Image 4 sits at row 1, column 1: top-left at (4, 3).
    let want = ((px[4 * 6 + 2] + 1.0) * 127.5).round() as u8;
    assert_eq!(at(4 + 2, 3), want);
    // The empty cell of the last row is background.
    assert_eq!(at(8, 4), 255);

    // RGB: channel planes go to interleaved pixels.
    let rgb = [1.0f32, -1.0, -1.0]; // 1 image, 3 channels, 1×1
    let p2 = dir.join("rgb.png");
    write_png_grid(&p2, &rgb, 1, 3, 1, 1, 4).unwrap();
    let (w2, h2, c2, b2) = read_png(&p2);
    assert_eq!((w2, h2, c2), (1, 1, 3));
    assert_eq!(&b2[..3], &[255, 0, 0]);

    // Bad arguments fail before anything is written; a failed rename (the target is a folder) leaves no
    // temporary file.
    assert!(write_png_grid(&dir.join("bad.png"), &px, n, 2, h, w, 3).unwrap_err().to_string().contains("channels"));
    assert!(write_png_grid(&dir.join("bad.png"), &px[1..], n, 1, h, w, 3).is_err());
    std::fs::create_dir(dir.join("taken.png")).unwrap();
    let e = write_png_grid(&dir.join("taken.png"), &px, n, 1, h, w, 3).unwrap_err().to_string();
    assert!(e.contains("taken.png"), "{e}");
    let e = write_npy_f32(&dir.join("taken.png"), &px, &[n, h, w]).unwrap_err().to_string();
    assert!(e.contains("taken.png"), "{e}");
    assert!(write_npy_f32(&dir.join("short.npy"), &px, &[n, h, w + 1]).is_err());
    assert!(write_npy_f32(&dir.join("missing").join("x.npy"), &px, &[n, h, w]).is_err());
    assert_eq!(dir.names(), ["grid.png", "rgb.png", "taken.png"]);

    // A rewrite replaces the file whole.
    write_png_grid(&p, &px[..6], 1, 1, h, w, 3).unwrap();
    assert_eq!(read_png(&p).0, 3);
}

#[test]
fn split_and_pad() {
    let mut rng = Rng::new(common::seed());
    let set = ImageSet {
        n: 10,
        c: 1,
        h: 28,
        w: 28,
        pixels: rng.vec(10 * 784, -1.0, 1.0),
        labels: Some((0..10).collect()),
        num_classes: 10,
    };
    let (train, held) = split_holdout(set.clone(), 0.25).unwrap();
    assert_eq!((train.n, held.n), (7, 3)); // round(2.5) = 3
    assert_eq!(train.pixels, &set.pixels[..7 * 784]);
    assert_eq!(held.pixels, &set.pixels[7 * 784..]);
    assert_eq!(held.labels, Some(vec![7, 8, 9]));
    assert_eq!((train.num_classes, held.num_classes), (10, 10));
    let (all, none) = split_holdout(set.clone(), 0.0).unwrap();
    assert_eq!((all.n, none.n, none.pixels.len()), (10, 0, 0));
    assert!(split_holdout(set.clone(), 1.5).is_err());
    assert!(split_holdout(set.clone(), f64::NAN).is_err());

    let p = pad_to(&set, 32, 32).unwrap();
    assert_eq!((p.n, p.c, p.h, p.w), (10, 1, 32, 32));
    assert_eq!(p.labels, set.labels);
    let img = p.image(9);
    assert_eq!(img[0], -1.0);
    assert_eq!(img[2 * 32 + 1], -1.0);
    assert_eq!(img[2 * 32 + 2], set.image(9)[0]);
    assert_eq!(img[29 * 32 + 29], set.image(9)[27 * 28 + 27]);
    assert_eq!(img[29 * 32 + 30], -1.0);
    assert_eq!(img[30 * 32 + 29], -1.0);
    let inner: f32 = img.iter().filter(|&&v| v != -1.0).count() as f32;
    assert_eq!(inner, set.image(9).iter().filter(|&&v| v != -1.0).count() as f32);
    assert!(pad_to(&set, 27, 32).unwrap_err().to_string().contains("smaller"));
}

#[test]
fn bad_inputs_are_errors_naming_file_and_problem() {
    let dir = TempDir::new("bad");
    let px = vec![7u8; 2 * 3 * 3];

    let p = dir.join("nothing-here.npy");
    assert_err(load_images(&p), &p, &["No such file"]);

    let p = dir.join("garbage.bin");
    std::fs::write(&p, b"\x00\x00\x09\x03 some junk bytes here").unwrap();
    assert_err(load_images(&p), &p, &["wrong IDX magic", "0x00000903"]);
    let p = dir.join("train-labels-idx1-ubyte");
    std::fs::write(&p, idx_labels(&[1, 2])).unwrap();
    assert_err(load_images(&p), &p, &["wrong IDX magic", "label file"]);

    let p = dir.join("short-images-idx3-ubyte");
    std::fs::write(&p, idx_images(2, 3, 3, &px[..17])).unwrap();
    assert_err(load_images(&p), &p, &["truncated", "18 bytes", "17"]);
    let p = dir.join("long-images-idx3-ubyte");
    std::fs::write(&p, idx_images(2, 3, 3, &[px.clone(), vec![0]].concat())).unwrap();
    assert_err(load_images(&p), &p, &["trailing data"]);
    let p = dir.join("header-images-idx3-ubyte");
    std::fs::write(&p, &idx_images(2, 3, 3, &px)[..10]).unwrap();
    assert_err(load_images(&p), &p, &["truncated IDX header"]);
    let p = dir.join("cut-images-idx3-ubyte.gz");
    let gz = gzip(&idx_images(2, 3, 3, &px));
    std::fs::write(&p, &gz[..gz.len() - 12]).unwrap();
    assert_err(load_images(&p), &p, &["gzip", "truncated"]);

    let p = dir.join("count-images-idx3-ubyte");
    std::fs::write(&p, idx_images(2, 3, 3, &px)).unwrap();
    let lp = dir.join("count-labels-idx1-ubyte");
    std::fs::write(&lp, idx_labels(&[1, 2, 3])).unwrap();
    assert_err(load_images(&p), &lp, &["label count mismatch", "3 labels for 2 images", "count-images-idx3-ubyte"]);

    // .npy: dtype, shape, order, range, truncation, labels.
    let f4: Vec<u8> = [0.5f32; 18].iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.join("ints.npy");
    std::fs::write(&p, npy(1, &npy_header("<i4", "(2, 3, 3)"), &f4)).unwrap();
    assert_err(load_images(&p), &p, &["unsupported dtype <i4"]);
    let p = dir.join("flat.npy");
    std::fs::write(&p, npy(1, &npy_header("<f4", "(18,)"), &f4)).unwrap();
    assert_err(load_images(&p), &p, &["unsupported shape [18]"]);
    let p = dir.join("nhwc.npy");
    std::fs::write(&p, npy(1, &npy_header("<f4", "(1, 2, 3, 3)"), &f4)).unwrap();
    assert_err(load_images(&p), &p, &["channels-last"]);
    let p = dir.join("fortran.npy");
    std::fs::write(&p, npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 3), }", &f4)).unwrap();
    assert_err(load_images(&p), &p, &["fortran_order", "C-order"]);
    let p = dir.join("big.npy");
    let mut vals = [0.5f32; 18];
    vals[11] = 1.5;
    vals[3] = -0.5;
    let f32s = |v: &[f32]| {
        npy(1, &npy_header("<f4", "(2, 3, 3)"), &v.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
    };
    std::fs::write(&p, f32s(&vals)).unwrap();
    assert_err(load_images(&p), &p, &["[-1, 1]", "1.5", "index 11", "image 1"]);
    vals[3] = 0.5;
    vals[11] = 300.0;
    std::fs::write(&p, f32s(&vals)).unwrap();
    assert_err(load_images(&p), &p, &["[0, 255]", "300", "index 11", "image 1"]);
    // The range is read from the values: [0, 1] and [0, 255] map onto [-1, 1]; [-1, 1] is kept.
    for (scale, top) in [(1.0f32, 1.0f32), (255.0, 1.0), (1.0, 0.5)] {
        let v: Vec<f32> = (0..18)
            .map(|i| {
                if i == 0 {
                    0.0
                } else if i == 1 {
                    top * scale
                } else {
                    0.25 * scale
                }
            })
            .collect();
        std::fs::write(&p, f32s(&v)).unwrap();
        let s = load_images(&p).unwrap();
        let want = |x: f32| if scale == 1.0 { 2.0 * x - 1.0 } else { x / 127.5 - 1.0 };
        assert_eq!((s.pixels[0], s.pixels[1], s.pixels[2]), (-1.0, want(top * scale), want(0.25 * scale)));
    }
    let v: Vec<f32> = (0..18).map(|i| i as f32 / 8.5 - 1.0).collect();
    std::fs::write(&p, f32s(&v)).unwrap();
    assert_eq!(load_images(&p).unwrap().pixels, v);
    let p = dir.join("cut.npy");
    std::fs::write(&p, npy(1, &npy_header("<f4", "(2, 3, 3)"), &f4[..70])).unwrap();
    assert_err(load_images(&p), &p, &["truncated", "72 bytes", "70"]);
    let p = dir.join("notnumpy.npy");
    std::fs::write(&p, b"hello").unwrap();
    assert_err(load_images(&p), &p, &["NUMPY magic"]);
    let p = dir.join("brokenheader.npy");
    std::fs::write(&p, npy(1, "{'descr': '<f4', 'shape': (2, 3 3)}", &f4)).unwrap();
    assert_err(load_images(&p), &p, &["cannot parse .npy header"]);

    let p = dir.join("good.npy");
    std::fs::write(&p, npy(1, &npy_header("<f4", "(2, 3, 3)"), &f4)).unwrap();
    let lp = dir.join("good_labels.npy");
    std::fs::write(&lp, npy(1, &npy_header("|u1", "(3,)"), &[0, 1, 2])).unwrap();
    assert_err(load_images(&p), &lp, &["label count mismatch", "3 labels for 2 images"]);
    std::fs::write(&lp, npy(1, &npy_header("<f4", "(2,)"), &f4[..8])).unwrap();
    assert_err(load_images(&p), &lp, &["label dtype <f4"]);
    std::fs::write(&lp, npy(1, &npy_header("<i4", "(2,)"), &[1, 0, 0, 0, 255, 255, 255, 255])).unwrap();
    assert_err(load_images(&p), &lp, &["label -1"]);
    std::fs::remove_file(&lp).unwrap();
    assert_eq!(load_images(&p).unwrap().n, 2);

    // PNG folders.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "x").unwrap();
    assert_err(load_images(&empty), &empty, &["no .png files"]);
    let mixed = dir.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    write_png(&mixed.join("a.png"), 2, 2, png::ColorType::Grayscale, &[0; 4]);
    write_png(&mixed.join("b.png"), 3, 2, png::ColorType::Grayscale, &[0; 6]);
    assert_err(load_images(&mixed), &mixed.join("b.png"), &["mixed sizes", "3×2", "a.png"]);
    let colors = dir.join("colors");
    std::fs::create_dir(&colors).unwrap();
    write_png(&colors.join("a.png"), 2, 2, png::ColorType::Grayscale, &[0; 4]);
    write_png(&colors.join("b.png"), 2, 2, png::ColorType::Rgb, &[0; 12]);
    assert_err(load_images(&colors), &colors.join("b.png"), &["mixed color types", "RGB", "gray"]);
    let broken = dir.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("x.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    assert_err(load_images(&broken), &broken.join("x.png"), &["cannot decode PNG"]);
}

#[test]
fn fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.exists() {
        eprintln!("skipped: {} not installed (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let t = std::time::Instant::now();
    let train = load_images(&dir.join("train-images-idx3-ubyte.gz")).unwrap();
    eprintln!("fashion-mnist train loaded in {:.2?}", t.elapsed());
    assert_eq!((train.n, train.c, train.h, train.w), (60000, 1, 28, 28));
    assert_eq!(train.num_classes, 10);
    let labels = train.labels.as_ref().unwrap();
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6000; 10]);
    let (lo, hi) = train.pixels.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (-1.0, 1.0));
    let test = load_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((test.n, test.num_classes), (10000, 10));
    let padded = pad_to(&test, 32, 32).unwrap();
    assert_eq!(padded.pixels.len(), 10000 * 1024);
}
