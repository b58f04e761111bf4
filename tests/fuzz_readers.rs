//! Property tests of every reader: valid files (from tigel's own writers, or made here) are mutated —
//! truncated at every length, bits flipped, bytes set to edge values, header fields set to huge or zero
//! sizes, dtypes and keys changed, configs given negative, huge or wrongly typed numbers — and each reader
//! must answer with an error or a consistent value, never a panic. Every case runs inside
//! `catch_unwind`, so a panic fails naming the reader, the case and the mutation, and saves the input.
//!
//! The generator is `tigel::host::Rng` with fixed seeds: a failure replays exactly. Each test prints how
//! many inputs it ran (`cargo test --test fuzz_readers -- --nocapture`); docs/reliability.md records them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tigel::checkpoint::{Checkpoint, HostTensor};
use tigel::data::images::{images_from_bytes, labels_from_bytes, load_images, write_npy_f32, write_png_grid, ImageSet};
use tigel::data::text::Corpus;
use tigel::host::Rng;
use tigel::models::ddpm::DiffusionConfig;
use tigel::models::gan::GanConfig;
use tigel::models::gpt::GptConfig;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tigel-fuzz-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on one input; a panic fails the test naming the reader, the case and the mutation, with the
/// input saved beside the temp dir for replay.
fn guarded<T>(reader: &str, case: usize, how: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            let saved = std::env::temp_dir().join(format!("tigel-fuzz-{reader}-case{case}.bin"));
            let _ = std::fs::write(&saved, input);
            panic!("{reader}: case {case} ({how}) panicked: {msg:?}; the input is saved as {}", saved.display());
        }
    }
}

/// Random mutations per base input and reader part (the systematic cases come on top).
const ROUNDS: usize = 10_000;

/// A header field a mutation may set: (offset, width in bytes, big-endian).
type Field = (usize, usize, bool);

/// Edge values for header fields: zero, one, powers of two, the largest 16-, 32- and 64-bit values.
const EDGE: [u64; 10] = [0, 1, 2, 255, 0xffff, 1 << 16, 0x7fff_ffff, 0xffff_ffff, 1 << 40, u64::MAX];

/// One random mutation of `base`: the mutated bytes and what was done.
fn mutate(rng: &mut Rng, base: &[u8], fields: &[Field]) -> (Vec<u8>, String) {
    let mut b = base.to_vec();
    let at = |rng: &mut Rng, b: &[u8]| rng.below(b.len().max(1));
    let how = match rng.below(7) {
        0 => {
            let n = rng.below(base.len());
            b.truncate(n);
            format!("truncated to {n} bytes")
        }
        1 => {
            let k = 1 + rng.below(4);
            for _ in 0..k {
                let i = at(rng, &b);
                b[i] ^= 1 << rng.below(8);
            }
            format!("{k} bits flipped")
        }
        2 => {
            let i = at(rng, &b);
            let v = [0u8, 1, 0x7f, 0x80, 0xff, rng.next_u64() as u8][rng.below(6)];
            b[i] = v;
            format!("byte {i} set to {v:#x}")
        }
        3 if !fields.is_empty() => {
            let (off, width, be) = fields[rng.below(fields.len())];
            let v = if rng.below(4) == 0 { rng.next_u64() } else { EDGE[rng.below(EDGE.len())] };
            let bytes = if be { v.to_be_bytes() } else { v.to_le_bytes() };
            let src = if be { &bytes[8 - width..] } else { &bytes[..width] };
            if off + width <= b.len() {
                b[off..off + width].copy_from_slice(src);
            }
            format!("field at {off} set to {v}")
        }
        4 => {
            let i = rng.below(b.len() + 1);
            let n = 1 + rng.below(16);
            let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, junk);
            format!("{n} bytes inserted at {i}")
        }
        5 => {
            let i = at(rng, &b);
            let n = (1 + rng.below(32)).min(b.len() - i);
            b.drain(i..i + n);
            format!("{n} bytes removed at {i}")
        }
        _ => {
            let i = at(rng, &b);
            let tail = b[i..].to_vec();
            b.extend_from_slice(&tail);
            format!("the bytes from {i} repeated")
        }
    };
    (b, how)
}

/// A loaded image set must be what the type promises.
fn check_set(reader: &str, case: usize, how: &str, s: &ImageSet) {
    let n = s.n.checked_mul(s.image_len()).expect("size");
    assert_eq!(s.pixels.len(), n, "{reader} case {case} ({how}): pixel count");
    assert!(s.pixels.iter().all(|v| (-1.0..=1.0).contains(v)), "{reader} case {case} ({how}): pixels outside [-1, 1]");
    if let Some(l) = &s.labels {
        assert_eq!(l.len(), s.n, "{reader} case {case} ({how}): label count");
        assert!(l.iter().all(|&v| (v as usize) < s.num_classes), "{reader} case {case} ({how}): num_classes");
    }
}

/// Counts inputs per reader and prints the count at the end of a test.
struct Tally(&'static str, usize);

impl Tally {
    fn images(&mut self, name: &Path, bytes: &[u8], how: &str) {
        let case = self.1;
        self.1 += 1;
        if let Ok(s) = guarded(self.0, case, how, bytes, || images_from_bytes(name, bytes)) {
            check_set(self.0, case, how, &s);
        }
    }
    fn labels(&mut self, name: &Path, bytes: &[u8], how: &str) {
        self.1 += 1;
        let _ = guarded(self.0, self.1, how, bytes, || labels_from_bytes(name, bytes));
    }
    /// Writes `bytes` to `file` and loads `load` (the file or its folder) as `tigel train` would.
    fn file(&mut self, file: &Path, load: &Path, bytes: &[u8], how: &str) {
        let case = self.1;
        self.1 += 1;
        std::fs::write(file, bytes).unwrap();
        if let Ok(s) = guarded(self.0, case, how, bytes, || load_images(load)) {
            check_set(self.0, case, how, &s);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        eprintln!("fuzz {}: {} inputs", self.0, self.1);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_images_and_labels_never_panic() {
    let mut rng = Rng::new(14_001);
    let (n, h, w) = (5usize, 6usize, 7usize);
    let mut images = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    images.extend((0..n * h * w).map(|_| rng.next_u64() as u8));
    let mut labels = vec![0, 0, 8, 1, 0, 0, 0, n as u8];
    labels.extend((0..n).map(|_| rng.below(10) as u8));
    let dir = TempDir::new("idx");
    let (ipath, lpath) = (dir.join("train-images-idx3-ubyte"), dir.join("train-labels-idx1-ubyte"));
    std::fs::write(&lpath, &labels).unwrap();
    let name = Path::new("images.idx");
    let mut t = Tally("idx", 0);
    assert!(images_from_bytes(name, &images).is_ok() && labels_from_bytes(name, &labels).is_ok());

    let image_fields: &[Field] = &[(0, 4, true), (4, 4, true), (8, 4, true), (12, 4, true)];
    for len in 0..images.len() {
        t.images(name, &images[..len], &format!("truncated to {len} bytes"));
    }
    for len in 0..labels.len() {
        t.labels(name, &labels[..len], &format!("labels truncated to {len} bytes"));
    }
    // Sizes whose product overflows usize, or is far larger than the file.
    for (a, b, c) in [(u32::MAX, u32::MAX, u32::MAX), (1 << 16, 1 << 16, 1 << 16), (u32::MAX, 1, 0), (0, 0, 0)] {
        let mut m = images.clone();
        m[4..16].copy_from_slice(&[a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes()].concat());
        t.images(name, &m, &format!("header {a}×{b}×{c}"));
    }
    for _ in 0..ROUNDS {
        let (m, how) = mutate(&mut rng, &images, image_fields);
        t.images(name, &m, &how);
    }
    for _ in 0..ROUNDS / 4 {
        let (m, how) = mutate(&mut rng, &labels, &[(0, 4, true), (4, 4, true)]);
        t.labels(name, &m, &how);
    }
    // Gzipped: the compressed stream mutated, and mutated content compressed.
    let gz = gzip(&images);
    let gz_name = Path::new("images.idx.gz");
    for len in 0..gz.len() {
        t.images(gz_name, &gz[..len], &format!("gzip truncated to {len} bytes"));
    }
    for _ in 0..ROUNDS / 4 {
        let (m, how) = mutate(&mut rng, &gz, &[]);
        t.images(gz_name, &m, &format!("gzip stream: {how}"));
        let (m, how) = mutate(&mut rng, &images, image_fields);
        t.images(gz_name, &gzip(&m), &format!("gzipped content: {how}"));
    }
    // Through the file loader, with the labels file beside the images mutated too.
    for _ in 0..300 {
        let (m, how) = mutate(&mut rng, &images, image_fields);
        t.file(&ipath, &ipath, &m, &how);
    }
    std::fs::write(&ipath, &images).unwrap();
    for _ in 0..300 {
        let (m, how) = mutate(&mut rng, &labels, &[(4, 4, true)]);
        t.file(&lpath, &ipath, &m, &format!("labels file: {how}"));
    }
}

/// An .npy file with a handwritten header (format 1.0, or 2.0 with a 4-byte length) and raw data.
fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY".to_vec();
    b.extend_from_slice(&[version, 0]);
    if version == 1 {
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn npy_images_and_labels_never_panic() {
    let mut rng = Rng::new(14_002);
    let dir = TempDir::new("npy");
    let ipath = dir.join("x.npy");
    let shape = [4usize, 1, 3, 5];
    let values = rng.vec(60, -1.0, 1.0);
    write_npy_f32(&ipath, &values, &shape).unwrap();
    let images = std::fs::read(&ipath).unwrap();
    let label_data: Vec<u8> = (0..4i64).flat_map(|v| v.to_le_bytes()).collect();
    let labels = npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }\n", &label_data);
    let lpath = dir.join("x_labels.npy");
    std::fs::write(&lpath, &labels).unwrap();
    let name = Path::new("x.npy");
    let mut t = Tally("npy", 0);
    assert!(images_from_bytes(name, &images).is_ok() && labels_from_bytes(name, &labels).is_ok());
    assert!(load_images(&ipath).unwrap().labels.is_some());

    let fields: &[Field] = &[(6, 1, false), (7, 1, false), (8, 2, false), (8, 4, false)];
    for len in 0..images.len() {
        t.images(name, &images[..len], &format!("truncated to {len} bytes"));
    }
    for len in 0..labels.len() {
        t.labels(name, &labels[..len], &format!("labels truncated to {len} bytes"));
    }
    // Headers a damaged or foreign file may carry.
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let deep =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}4{} }}", "(".repeat(60_000), ")".repeat(60_000));
    let mut headers: Vec<String> = [
        "(4294967295, 4294967295, 4294967295, 4294967295)",
        "(18446744073709551615,)",
        "(18446744073709551616, 1, 1)",
        "(99999999999999999999999999999999999999999, 1, 1)",
        "(1000000000000, 1, 28, 28)",
        "(4611686018427387904, 4, 1, 1)",
        "(-1, 1, 3, 5)",
        "(4, 1, 3, 5, 1)",
        "()",
        "(4,)",
        "(0, 1, 3, 5)",
        "[4, 1, 3, 5]",
        "(4, 1, 3, 'five')",
        "(4, 1, 3, True)",
        "(4, 5, 3, 1)",
    ]
    .iter()
    .map(|s| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {s}, }}"))
    .collect();
    for d in ["<f2", ">f4", "|b1", "<c8", "<U4", "|u1", "<f8", "<i4", "O", "", "<f4\0"] {
        headers.push(format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (4, 1, 3, 5), }}"));
    }
    headers.extend(
        [
            "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 1, 3, 5), }",
            "{'descr': '<f4', 'shape': (4, 1, 3, 5), }",
            "{'fortran_order': False, 'shape': (4, 1, 3, 5), }",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4, 1, 3, 5), }",
            "{'descr': '<f4', 'fortran_order': False, }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1, 3, 5) ",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1, 3, 5), 'shape': (1,), }",
            "('<f4', False, (4, 1, 3, 5))",
            "",
            "{",
            "{'",
            "{-",
            "{'descr': '<f4', 'fortran_order': Fals",
        ]
        .map(String::from),
    );
    headers.push(deep.clone());
    headers.push(format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}4{} }}",
        "[".repeat(40),
        "]".repeat(40)
    ));
    for (k, h) in headers.iter().enumerate() {
        for version in [1u8, 2, 3] {
            if version == 1 && h.len() > 65535 {
                continue;
            }
            let m = npy(version, h, &data);
            let how = format!("header {k} ({}…), version {version}", &h[..h.len().min(60)]);
            t.images(name, &m, &how);
            t.labels(name, &m, &format!("labels: {how}"));
        }
    }
    // A v2 header length past the file.
    for len in [u32::MAX, u32::MAX - 11, 1 << 31] {
        let mut m = npy(2, &headers[0], &data);
        m[8..12].copy_from_slice(&len.to_le_bytes());
        t.images(name, &m, &format!("v2 header length {len}"));
    }
    for _ in 0..ROUNDS {
        let (m, how) = mutate(&mut rng, &images, fields);
        t.images(name, &m, &how);
    }
    for _ in 0..ROUNDS / 4 {
        let (m, how) = mutate(&mut rng, &labels, fields);
        t.labels(name, &m, &how);
    }
    // u8 images and other label dtypes, mutated.
    let u8_images = npy(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }\n", &[7u8; 24]);
    for _ in 0..ROUNDS / 4 {
        let (m, how) = mutate(&mut rng, &u8_images, fields);
        t.images(name, &m, &format!("|u1: {how}"));
        let d = ["|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<f4"][rng.below(8)];
        let l = npy(1, &format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (8,), }}"), &label_data[..8]);
        let (m, how) = mutate(&mut rng, &l, fields);
        t.labels(name, &m, &format!("{d} labels: {how}"));
    }
    // Through the file loader, images and the labels beside them.
    for _ in 0..300 {
        let (m, how) = mutate(&mut rng, &images, fields);
        t.file(&ipath, &ipath, &m, &how);
    }
    std::fs::write(&ipath, &images).unwrap();
    for _ in 0..300 {
        let (m, how) = mutate(&mut rng, &labels, fields);
        t.file(&lpath, &ipath, &m, &format!("labels file: {how}"));
    }
}

/// Recomputes every complete chunk's CRC, so a mutation reaches the decoder past the CRC check.
fn fix_png_crcs(b: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= b.len()) else { break };
        let mut crc = flate2::Crc::new();
        crc.update(&b[at + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.sum().to_be_bytes());
        at = end + 4;
    }
}

#[test]
fn png_images_never_panic() {
    let mut rng = Rng::new(14_003);
    let dir = TempDir::new("png");
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    let gray = rng.vec(5 * 4, -1.0, 1.0);
    let rgb = rng.vec(3 * 6 * 6, -1.0, 1.0);
    write_png_grid(&a, &gray, 1, 1, 5, 4, 1).unwrap();
    let gray_png = std::fs::read(&a).unwrap();
    write_png_grid(&b, &rgb, 1, 3, 6, 6, 1).unwrap();
    let rgb_png = std::fs::read(&b).unwrap();
    let name = Path::new("a.png");
    let mut t = Tally("png", 0);
    assert!(images_from_bytes(name, &gray_png).is_ok() && images_from_bytes(name, &rgb_png).is_ok());

    // IHDR: width 16, height 20, bit depth 24, colour type 25, compression 26, filter 27, interlace 28.
    let ihdr: &[Field] =
        &[(16, 4, true), (20, 4, true), (24, 1, false), (25, 1, false), (26, 1, false), (27, 1, false), (28, 1, false)];
    for base in [&gray_png, &rgb_png] {
        for len in 0..base.len() {
            t.images(name, &base[..len], &format!("truncated to {len} bytes"));
        }
        for _ in 0..ROUNDS / 2 {
            // Half keep their CRCs wrong (the decoder must refuse), half have them fixed.
            let (mut m, how) = mutate(&mut rng, base, ihdr);
            let fixed = rng.below(2) == 0;
            if fixed {
                fix_png_crcs(&mut m);
            }
            t.images(name, &m, &format!("{how}{}", if fixed { ", CRCs fixed" } else { "" }));
        }
    }
    // Sizes and depths a PNG header may claim, with valid CRCs.
    for (w, h) in [(u32::MAX, u32::MAX), (1 << 31, 1), (1, 1 << 31), (0, 5), (100_000, 100_000), (65_535, 65_535)] {
        for depth in [1u8, 2, 4, 8, 16, 3] {
            for color in [0u8, 2, 3, 4, 6, 1] {
                let mut m = gray_png.clone();
                m[16..20].copy_from_slice(&w.to_be_bytes());
                m[20..24].copy_from_slice(&h.to_be_bytes());
                m[24] = depth;
                m[25] = color;
                fix_png_crcs(&mut m);
                t.images(name, &m, &format!("IHDR {w}×{h}, depth {depth}, colour {color}"));
            }
        }
    }
    // Through the folder loader: one good image beside a mutated one.
    std::fs::write(&b, &gray_png).unwrap();
    for _ in 0..300 {
        let (mut m, how) = mutate(&mut rng, &gray_png, ihdr);
        fix_png_crcs(&mut m);
        t.file(&b, &dir.0, &m, &how);
    }
}

/// A small GPT checkpoint saved by tigel's own writer: its config, a step, an rng and three tensors.
fn gpt_checkpoint(rng: &mut Rng) -> Checkpoint {
    let cfg = GptConfig { layers: 1, heads: 2, width: 8, context: 4, dropout: 0.0, ..GptConfig::default() };
    let mut ck = Checkpoint::new("gpt", json!({ "model": cfg.to_json(), "train": {"lr": 0.001}, "data": "x.txt" }));
    ck.step = 1234;
    ck.rng = json!({ "seed": 7 });
    ck.extra.insert("note".into(), "fuzz".into());
    let f = |n: usize, rng: &mut Rng| rng.vec(n, -1.0, 1.0);
    ck.tensors.insert("a.w".into(), HostTensor::from_f32(&[2, 3], &f(6, rng)).unwrap());
    ck.tensors.insert("b".into(), HostTensor::from_u32(&[4], vec![1, 2, 3, 4]).unwrap());
    ck.tensors.insert("c".into(), HostTensor::from_f32(&[1, 1, 1], &f(1, rng)).unwrap());
    ck
}

/// A safetensors file of `header` (JSON, padded to 8 bytes) and `data`.
fn st_file(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&h);
    b.extend_from_slice(data);
    b
}

/// Edge JSON values for a field: wrong types, negative, huge and fractional numbers.
fn edge_value(rng: &mut Rng) -> Value {
    let v = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1),
        json!(1e12),
        json!(1000000000000u64),
        json!(4294967296u64),
        json!(u64::MAX),
        json!(-1e300),
        json!(1e300),
        json!(0.5),
        json!(-0.0),
        json!("NaN"),
        json!("1e12"),
        json!(""),
        json!(true),
        json!([]),
        json!({}),
        json!([u32::MAX, u32::MAX, u32::MAX, u32::MAX]),
        json!(vec![1; 70]),
        json!(vec![2; 64]),
        json!(4294967295u64),
        json!(i64::MIN),
    ];
    let k = rng.below(v.len() + 1);
    if k == v.len() {
        json!(rng.next_u64() >> rng.below(64))
    } else {
        v[k].clone()
    }
}

/// Every path into `v` (object keys and array indices), the root included.
fn paths(v: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| paths(x, [at.clone(), vec![json!(k)]].concat(), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| paths(x, [at.clone(), vec![json!(i)]].concat(), out)),
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        k => &mut v[k.as_u64().unwrap() as usize],
    })
}

/// One to three random edits of a JSON value: a node replaced by an edge value, a key removed, an unknown
/// key added.
fn mutate_json(rng: &mut Rng, base: &Value) -> (Value, String) {
    let mut v = base.clone();
    let mut how = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        paths(&v, vec![], &mut all);
        let p = all[rng.below(all.len())].clone();
        match rng.below(4) {
            0 if !p.is_empty() => {
                let (last, parent) = p.split_last().unwrap();
                match (at_path(&mut v, parent), last) {
                    (Value::Object(m), Value::String(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), i) => {
                        a.remove(i.as_u64().unwrap() as usize);
                    }
                    _ => {}
                }
                how.push(format!("removed {p:?}"));
            }
            1 => {
                if let Value::Object(m) = at_path(&mut v, &p) {
                    m.insert("unknown".into(), edge_value(rng));
                }
                how.push(format!("added a key at {p:?}"));
            }
            _ => {
                let e = edge_value(rng);
                how.push(format!("{p:?} = {e}"));
                *at_path(&mut v, &p) = e;
            }
        }
    }
    (v, how.join("; "))
}

#[test]
fn checkpoints_never_panic() {
    let mut rng = Rng::new(14_004);
    let dir = TempDir::new("ckpt");
    let path = dir.join("checkpoint.safetensors");
    let ck = gpt_checkpoint(&mut rng);
    ck.save(&path).unwrap();
    let file = std::fs::read(&path).unwrap();
    let name = Path::new("checkpoint.safetensors");
    let mut t = Tally("checkpoint", 0);
    let read = |t: &mut Tally, bytes: &[u8], how: &str| {
        let case = t.1;
        t.1 += 1;
        guarded("checkpoint", case, how, bytes, || {
            if let Ok(ck) = Checkpoint::from_bytes(name, bytes) {
                for (n, h) in &ck.tensors {
                    assert_eq!(Some(h.data.len()), h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)), "{n}");
                }
                let _ = GptConfig::from_json(ck.config.get("model").unwrap_or(&Value::Null));
            }
        });
    };
    assert_eq!(Checkpoint::from_bytes(name, &file).unwrap().tensors, ck.tensors);
    for len in 0..file.len() {
        read(&mut t, &file[..len], &format!("truncated to {len} bytes"));
    }
    for _ in 0..ROUNDS {
        let (m, how) = mutate(&mut rng, &file, &[(0, 8, false), (0, 4, false), (4, 4, false)]);
        read(&mut t, &m, &how);
    }
    // The header as JSON: tensor entries and metadata edited, the file rebuilt around it.
    let hlen = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&file[8..8 + hlen]).unwrap();
    let data = &file[8 + hlen..];
    let dtypes = ["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "F4", "F6_E2M3", "E8M0", "C64", "XYZ"];
    for _ in 0..ROUNDS {
        let mut h = header.clone();
        let key = ["a.w", "b", "c", "__metadata__"][rng.below(4)];
        let how = if key == "__metadata__" {
            let meta = ["format", "format_version", "kind", "config", "step", "rng", "note"][rng.below(7)];
            let val = match meta {
                "config" => {
                    let cfg: Value = serde_json::from_str(h[key][meta].as_str().unwrap()).unwrap();
                    mutate_json(&mut rng, &cfg).0.to_string()
                }
                "step" => ["-1", "1e12", "18446744073709551615", "18446744073709551616", "4294967296", " 1", ""]
                    [rng.below(7)]
                .to_string(),
                _ => edge_value(&mut rng).to_string(),
            };
            if rng.below(8) == 0 {
                h[key].as_object_mut().unwrap().remove(meta);
                format!("metadata `{meta}` removed")
            } else {
                h[key][meta] = if rng.below(8) == 0 { json!(12) } else { json!(val) };
                format!("metadata `{meta}` = {val}")
            }
        } else {
            let (f, v) = match rng.below(4) {
                0 => ("dtype", json!(dtypes[rng.below(dtypes.len())])),
                1 => ("shape", edge_value(&mut rng)),
                2 => ("data_offsets", json!([EDGE[rng.below(EDGE.len())], EDGE[rng.below(EDGE.len())]])),
                _ => ("data_offsets", edge_value(&mut rng)),
            };
            let how = format!("tensor `{key}` {f} = {v}");
            h[key][f] = v;
            how
        };
        read(&mut t, &st_file(&h, data), &how);
    }
    // Header lengths past the end, and absurd ones.
    for n in [u64::MAX, u64::MAX - 7, 1 << 40, (file.len() - 8) as u64, 0, 1] {
        let mut m = file.clone();
        m[..8].copy_from_slice(&n.to_le_bytes());
        read(&mut t, &m, &format!("header length {n}"));
    }
    // Deeply nested JSON in the header.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    read(&mut t, &st_file(&serde_json::from_str::<Value>("{}").unwrap(), &[]), "empty header");
    let mut m = (deep.len() as u64).to_le_bytes().to_vec();
    m.extend_from_slice(deep.as_bytes());
    read(&mut t, &m, "nested arrays 100000 deep");
    // Through the file loader, as `--resume` and `sample` read it.
    for _ in 0..300 {
        let (m, how) = mutate(&mut rng, &file, &[(0, 8, false)]);
        std::fs::write(&path, &m).unwrap();
        let case = t.1;
        t.1 += 1;
        let _ = guarded("checkpoint", case, &how, &m, || Checkpoint::load(&dir.0));
    }
}

/// Every model config reader, on one JSON value.
fn read_configs(v: &Value) {
    let _ = GptConfig::from_json(v);
    if let Ok(c) = GanConfig::from_json(v) {
        let _ = c.to_json();
    }
    if let Ok(c) = DiffusionConfig::from_json(v) {
        let _ = c.to_json();
    }
    let _ = tigel::models::unet::UnetConfig::from_json(v);
}

#[test]
fn model_configs_never_panic() {
    let mut rng = Rng::new(14_005);
    let bases = [
        GptConfig { layers: 4, heads: 4, width: 128, context: 128, dropout: 0.1, ..GptConfig::default() }.to_json(),
        json!({"data_shape": [2], "z_dim": 8, "width": 64, "depth": 2, "pack": 4, "scale": 2.5, "arch": "mlp"}),
        json!({"data_shape": [1, 28, 28], "z_dim": 64, "width": 32, "depth": 1, "pack": 1, "scale": 1.0, "arch": "dcgan"}),
        json!({"arch": {"kind": "mlp", "hidden": 64, "layers": 3}, "sample_shape": [2], "timesteps": 100,
               "schedule": "cosine", "prediction": "eps", "num_classes": 0, "emb": 64, "data_scale": 2.0}),
        json!({"arch": {"kind": "unet", "unet": {"base": 16, "mults": [1, 2], "attention": true}},
               "sample_shape": [1, 8, 8], "timesteps": 50, "schedule": "linear", "prediction": "v",
               "num_classes": 10, "emb": 64, "data_scale": 1.0}),
    ];
    assert!(GptConfig::from_json(&bases[0]).is_ok());
    assert!(GanConfig::from_json(&bases[1]).is_ok() && GanConfig::from_json(&bases[2]).is_ok());
    assert!(DiffusionConfig::from_json(&bases[3]).is_ok() && DiffusionConfig::from_json(&bases[4]).is_ok());
    let mut t = Tally("config", 0);
    for (k, base) in bases.iter().enumerate() {
        for _ in 0..ROUNDS {
            let (v, how) = mutate_json(&mut rng, base);
            t.1 += 1;
            let text = v.to_string();
            guarded("config", t.1, &format!("config {k}: {how}"), text.as_bytes(), || read_configs(&v));
        }
        // The text mutated: what still parses as JSON goes to the readers.
        let text = base.to_string().into_bytes();
        for _ in 0..ROUNDS / 4 {
            let (m, how) = mutate(&mut rng, &text, &[]);
            t.1 += 1;
            guarded("config", t.1, &format!("config {k} text: {how}"), &m, || {
                if let Ok(v) = serde_json::from_slice::<Value>(&m) {
                    read_configs(&v);
                }
            });
        }
    }
    // Configs that are not objects at all.
    for v in [json!(null), json!([]), json!(1), json!("gpt"), json!(vec![json!({}); 100])] {
        t.1 += 1;
        guarded("config", t.1, "not an object", v.to_string().as_bytes(), || read_configs(&v));
    }
    // A count a damaged checkpoint may hold is refused by name before any model code sizes anything.
    let mut huge = bases[0].clone();
    huge["layers"] = json!(1_000_000_000_000u64);
    let e = GptConfig::from_json(&huge).unwrap_err().to_string();
    assert!(e.contains("`layers`") && e.contains("1000000000000"), "{e}");
}

#[test]
fn text_corpora_never_panic() {
    let mut rng = Rng::new(14_006);
    let base = "tigel lit le texte: héllo wörld, ∑ x², 日本語, 🙂 — fin.\n".repeat(8).into_bytes();
    let mut t = Tally("text", 0);
    let contexts = [0usize, 1, 2, 7, 100, base.len(), usize::MAX - 1, usize::MAX];
    let check = |t: &mut Tally, bytes: Vec<u8>, how: &str| {
        let case = t.1;
        t.1 += 1;
        guarded("text", case, how, &bytes.clone(), || {
            if let Ok(c) = Corpus::from_bytes("fuzz.txt".into(), bytes) {
                let (train, held) = c.split();
                assert_eq!(train.1 + held.1, c.len());
                for &ctx in &contexts {
                    let _ = c.check_context(ctx);
                    for part in [train, held, (usize::MAX, 2), (3, usize::MAX)] {
                        let w = c.windows(part, ctx);
                        assert!(w.iter().all(|&(o, n)| n >= 1 && o + n < c.len()), "{how}: windows {w:?}");
                    }
                }
            }
        });
    };
    for len in 0..base.len() {
        check(&mut t, base[..len].to_vec(), &format!("truncated to {len} bytes"));
    }
    for _ in 0..ROUNDS {
        let (m, how) = mutate(&mut rng, &base, &[]);
        check(&mut t, m, &how);
    }
}
