//! Checkpoints: bit-exact round trips through both backends, clear errors for every kind of bad file,
//! atomic saves, deterministic bytes.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::json;
use tigel::checkpoint::{checkpoint_path, Checkpoint, HostTensor, SaveFault};
use tigel::{DType, Device, Error, Tensor};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tigel-ckpt-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// Names of the files in the directory, sorted.
    fn entries(&self) -> Vec<String> {
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

/// f32 words that must survive bit for bit: NaNs with payloads (quiet, signalling, negative), infinities,
/// signed zero, subnormals.
const SPECIAL_F32_BITS: [u32; 9] =
    [0x7fc0_0001, 0xffba_dbad, 0x7f80_0001, 0x7f80_0000, 0xff80_0000, 0x8000_0000, 0x0000_0001, 0x807f_ffff, 0];

/// Random f32 bit patterns (any word, so NaN payloads too) with the special values mixed in.
fn f32_bits(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|i| if i % 5 == 0 { SPECIAL_F32_BITS[rng.below(9)] } else { rng.next_u64() as u32 }).collect()
}

/// Shapes of every sort: scalars (rank 0 and [1]), a prime length, rank 3, and zero-size tensors, which
/// checkpoints allow (an empty bias or an unused table is still a tensor of the model).
fn shapes() -> Vec<(&'static str, Vec<usize>, DType)> {
    vec![
        ("scalar", vec![1], DType::F32),
        ("rank0", vec![], DType::U32),
        ("blocks.0.w", vec![3, 5, 7], DType::F32),
        ("blocks.0.b", vec![7], DType::F32),
        ("blocks.1.idx", vec![3, 5, 7], DType::U32),
        ("step_counter", vec![1], DType::U32),
        ("empty", vec![0], DType::F32),
        ("Empty_u32", vec![2, 0, 3], DType::U32),
        ("emb\u{e9}\"quoted\"", vec![4, 3], DType::F32),
    ]
}

fn random_checkpoint(rng: &mut Rng) -> Checkpoint {
    let mut ck = Checkpoint::new(
        "gpt",
        json!({
            "n_layer": 2, "d_model": 48, "lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8,
            "weird_float": 0.1 + 0.2, "tiny": 4.9e-324, "name": "caf\u{e9} \"x\"\n", "nested": {"z": 1, "a": [true, null]},
            "uniform": rng.uniform(0.0, 1.0) as f64 * 1.000000123,
        }),
    );
    ck.step = rng.next_u64() >> 20;
    ck.rng = json!({"data": {"seed": rng.next_u64(), "offset": rng.next_u64() >> 30},
                    "noise": {"seed": u64::MAX, "offset": 0}});
    ck.extra.insert("note".into(), "trained on \u{1f600}\nline two".into());
    ck.extra.insert("tigel_version".into(), "0.1.0".into());
    for (name, shape, dtype) in shapes() {
        let n: usize = shape.iter().product();
        let data = match dtype {
            DType::F32 => f32_bits(rng, n),
            DType::U32 => (0..n).map(|_| rng.next_u64() as u32).collect(),
            DType::F16 => unreachable!("checkpoints hold f32 and u32 tensors"),
        };
        ck.tensors.insert(name.into(), HostTensor { shape, dtype, data });
    }
    ck
}

/// Everything but `source`, which says where a checkpoint was loaded from.
#[track_caller]
fn assert_same(got: &Checkpoint, want: &Checkpoint) {
    let mut got = got.clone();
    got.source = want.source.clone();
    if got != *want {
        for (name, t) in &want.tensors {
            assert_eq!(got.tensors.get(name), Some(t), "tensor `{name}`");
        }
        assert_eq!(got, *want);
    }
}

fn tigel_meta() -> BTreeMap<String, String> {
    [("format", "tigel"), ("format_version", "1"), ("kind", "mlp"), ("config", "{}"), ("step", "0"), ("rng", "null")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A safetensors file written by hand: `header` JSON padded to 8 bytes, then `data`.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// A safetensors file written by the safetensors crate, as another tool would.
fn foreign_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: Option<BTreeMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, meta.map(|m| m.into_iter().collect())).unwrap()
}

#[track_caller]
fn load_err(path: &Path) -> String {
    match Checkpoint::load(path) {
        Ok(_) => panic!("{} loaded, but should not have", path.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(matches!(e, Error::Checkpoint { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "the error does not name the file: {msg}");
            msg
        }
    }
}

#[track_caller]
fn load_bytes_err(dir: &TempDir, bytes: &[u8]) -> String {
    let p = dir.path().join("bad.safetensors");
    std::fs::write(&p, bytes).unwrap();
    load_err(&p)
}

/// Device tensors from a checkpoint, back to host through `from_device`, saved, loaded, uploaded again:
/// every word comes back identical.
fn round_trip_on(dev: &Device, rng: &mut Rng) {
    let dir = TempDir::new("roundtrip");
    let want = random_checkpoint(rng);
    let mut from_dev = Checkpoint { tensors: BTreeMap::new(), ..want.clone() };
    for (name, h) in &want.tensors {
        let t = h.to_device(dev).unwrap();
        assert_eq!((&t.shape, t.dtype), (&h.shape, h.dtype), "{name}");
        from_dev.tensors.insert(name.clone(), HostTensor::from_device(dev, &t).unwrap());
    }
    assert_same(&from_dev, &want);

    let path = dir.path().join("run").join("checkpoint.safetensors");
    from_dev.save(&path).unwrap();
    let got = Checkpoint::load(&path).unwrap();
    assert_eq!(got.source.as_deref(), Some(path.as_path()));
    assert_same(&got, &want);

    // Into fresh (poisoned) device tensors, and into ones that already hold other data.
    for (name, h) in &got.tensors {
        let fresh = h.to_device(dev).unwrap();
        assert_eq!(fresh.to_u32(dev).unwrap(), h.data, "{name} via to_device");
        let existing = Tensor::empty(dev, &h.shape, h.dtype).unwrap();
        got.restore_into(dev, name, &existing).unwrap();
        assert_eq!(existing.to_u32(dev).unwrap(), h.data, "{name} via restore_into");
    }
}

#[test]
fn round_trip_is_bit_exact_on_cpu() {
    let mut rng = Rng::new(seed());
    round_trip_on(&cpu(), &mut rng);
}

#[test]
fn round_trip_is_bit_exact_on_gpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed());
    round_trip_on(&gpu, &mut rng);

    // Saved from the GPU, restored on the CPU and back.
    let dir = TempDir::new("cross");
    let want = random_checkpoint(&mut rng);
    let mut ck = Checkpoint { tensors: BTreeMap::new(), ..want.clone() };
    for (name, h) in &want.tensors {
        ck.tensors.insert(name.clone(), HostTensor::from_device(&gpu, &h.to_device(&gpu).unwrap()).unwrap());
    }
    let path = checkpoint_path(dir.path());
    ck.save(&path).unwrap();
    let got = Checkpoint::load(dir.path()).unwrap();
    let cpu = cpu();
    for (name, h) in &want.tensors {
        let t = Tensor::empty(&cpu, &h.shape, h.dtype).unwrap();
        got.restore_into(&cpu, name, &t).unwrap();
        assert_eq!(t.to_u32(&cpu).unwrap(), h.data, "{name}");
    }
}

#[test]
fn f32_values_and_host_tensor_checks() {
    let t = HostTensor::from_f32(&[2], &[1.5, -0.0]).unwrap();
    assert_eq!(t.f32s().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(), [1.5f32.to_bits(), 0x8000_0000]);
    assert!(t.u32s().unwrap_err().to_string().contains("f32"));
    let u = HostTensor::from_u32(&[3], vec![1, 2, 3]).unwrap();
    assert_eq!(u.u32s().unwrap(), [1, 2, 3]);
    assert!(u.f32s().unwrap_err().to_string().contains("u32"));
    let e = HostTensor::from_u32(&[2, 2], vec![1]).unwrap_err().to_string();
    assert!(e.contains("[2, 2]") && e.contains("4 elements"), "{e}");
}

#[test]
fn the_file_is_plain_safetensors_with_tigel_metadata() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("plain");
    let ck = random_checkpoint(&mut rng);
    let path = checkpoint_path(dir.path());
    ck.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "tensor data starts 8-byte aligned");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["format"], "tigel");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["kind"], "gpt");
    assert_eq!(meta["step"], ck.step.to_string());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&meta["config"]).unwrap(), ck.config);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&meta["rng"]).unwrap(), ck.rng);
    assert_eq!(meta["note"], ck.extra["note"]);
    assert_eq!(st.len(), ck.tensors.len());
    for (name, h) in &ck.tensors {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.shape(), h.shape.as_slice(), "{name}");
        assert_eq!(v.dtype(), if h.dtype == DType::F32 { Dtype::F32 } else { Dtype::U32 }, "{name}");
        let words: Vec<u32> = v.data().chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(words, h.data, "{name}");
    }
}

#[test]
fn save_load_save_gives_identical_bytes() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("determinism");
    for i in 0..6 {
        let mut ck = random_checkpoint(&mut rng);
        if i % 2 == 1 {
            // Fewer tensors, more extras: the orders of both come from the names alone.
            ck.tensors.retain(|_, _| rng.below(2) == 0);
            for k in 0..20 {
                ck.extra.insert(format!("k{}", rng.next_u64() % 1000 + k), format!("{}", rng.uniform(-1.0, 1.0)));
            }
        }
        let a = dir.path().join(format!("a{i}.safetensors"));
        let b = dir.path().join(format!("b{i}.safetensors"));
        let c = dir.path().join(format!("c{i}.safetensors"));
        ck.save(&a).unwrap();
        let loaded = Checkpoint::load(&a).unwrap();
        assert_same(&loaded, &ck);
        loaded.save(&b).unwrap();
        ck.clone().save(&c).unwrap();
        let bytes_a = std::fs::read(&a).unwrap();
        assert!(bytes_a == std::fs::read(&b).unwrap(), "save, load, save changed the bytes ({i})");
        assert!(bytes_a == std::fs::read(&c).unwrap(), "two saves of one checkpoint differ ({i})");
    }
}

#[test]
fn missing_file_and_directory_loading() {
    let dir = TempDir::new("missing");
    let e = load_err(&dir.path().join("nope.safetensors"));
    assert!(e.contains("no such file"), "{e}");
    // A run directory loads its checkpoint.safetensors, and says so when there is none.
    let e = load_err(&checkpoint_path(dir.path()));
    assert!(e.contains("no such file"), "{e}");
    let e = Checkpoint::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains(&checkpoint_path(dir.path()).display().to_string()) && e.contains("no such file"), "{e}");
}

#[test]
fn truncated_files_are_named_as_truncated() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("truncated");
    let full_path = dir.path().join("full.safetensors");
    random_checkpoint(&mut rng).save(&full_path).unwrap();
    let full = std::fs::read(&full_path).unwrap();
    let n = u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let cuts =
        [0, 1, 7, 8, 9, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 1, 8 + n + 3, (8 + n + full.len()) / 2, full.len() - 1];
    for cut in cuts {
        let e = load_bytes_err(&dir, &full[..cut]);
        assert!(e.contains("truncated"), "cut at {cut} of {}: {e}", full.len());
    }
    Checkpoint::load(&full_path).unwrap();
}

#[test]
fn corrupt_headers_are_reported() {
    let dir = TempDir::new("corrupt");
    // Garbage where the JSON should be.
    let junk = b"\x00\xffnot json at all {{{{\x01";
    let mut garbage = (junk.len() as u64).to_le_bytes().to_vec();
    garbage.extend(junk);
    let e = load_bytes_err(&dir, &garbage);
    assert!(e.contains("corrupt header") && e.contains("JSON"), "{e}");
    // JSON, but not an object.
    let e = load_bytes_err(&dir, &raw_file("[1, 2, 3]", &[]));
    assert!(e.contains("corrupt header") && e.contains("object"), "{e}");
    // A tensor entry that is not a tensor description.
    let e = load_bytes_err(&dir, &raw_file(r#"{"w": {"dtype": "F32", "shape": "big"}}"#, &[]));
    assert!(e.contains("corrupt header") && e.contains("`w`"), "{e}");
    // Metadata values must be strings.
    let e = load_bytes_err(&dir, &raw_file(r#"{"__metadata__": {"format": 1}}"#, &[]));
    assert!(e.contains("__metadata__"), "{e}");
    // A header length field far past the end of the file.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend([b' '; 16]);
    let e = load_bytes_err(&dir, &huge);
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn bad_tensor_data_layout_names_the_tensor() {
    let dir = TempDir::new("layout");
    let meta = serde_json::to_string(&tigel_meta()).unwrap();
    // Data length not matching the shape.
    let e = load_bytes_err(
        &dir,
        &raw_file(
            &format!(r#"{{"__metadata__":{meta},"w":{{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}}}"#),
            &[0; 20],
        ),
    );
    assert!(e.contains("`w`") && e.contains("[2, 3]") && e.contains("24 bytes") && e.contains("20 bytes"), "{e}");
    // Bytes after the last tensor.
    let e = load_bytes_err(
        &dir,
        &raw_file(
            &format!(r#"{{"__metadata__":{meta},"w":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#),
            &[0; 12],
        ),
    );
    assert!(e.contains("corrupt") && e.contains("4 bytes"), "{e}");
    // Overlapping tensors.
    let e = load_bytes_err(
        &dir,
        &raw_file(
            &format!(
                r#"{{"__metadata__":{meta},"a":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}},"b":{{"dtype":"U32","shape":[2],"data_offsets":[4,12]}}}}"#
            ),
            &[0; 12],
        ),
    );
    assert!(e.contains("corrupt") && e.contains("`b`"), "{e}");
}

#[test]
fn files_from_other_tools_and_other_dtypes_are_refused() {
    let dir = TempDir::new("foreign");
    // A valid safetensors file without tigel metadata.
    let f32_bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let e = load_bytes_err(&dir, &foreign_file(&[("weight", Dtype::F32, vec![2], f32_bytes.clone())], None));
    assert!(e.contains("not a tigel checkpoint") && e.contains("`format`"), "{e}");
    // ... with metadata of its own.
    let other: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let e = load_bytes_err(&dir, &foreign_file(&[("weight", Dtype::F32, vec![2], f32_bytes.clone())], Some(other)));
    assert!(e.contains("not a tigel checkpoint") && e.contains("`pt`"), "{e}");
    // An F16 file from another tool: says both what is wrong and which tensor has which dtype.
    let e = load_bytes_err(&dir, &foreign_file(&[("h", Dtype::F16, vec![3], vec![0; 6])], None));
    assert!(e.contains("not a tigel checkpoint") && e.contains("`h`") && e.contains("F16"), "{e}");
    // Tigel metadata, but an F64 tensor.
    let e = load_bytes_err(
        &dir,
        &foreign_file(
            &[("a", Dtype::F32, vec![2], f32_bytes), ("w64", Dtype::F64, vec![2, 1], vec![0; 16])],
            Some(tigel_meta()),
        ),
    );
    assert!(e.contains("`w64`") && e.contains("F64") && e.contains("F32 and U32"), "{e}");
    // A file with tigel metadata written by the safetensors crate itself loads.
    let f32_bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = dir.path().join("ok.safetensors");
    std::fs::write(&p, foreign_file(&[("weight", Dtype::F32, vec![2], f32_bytes)], Some(tigel_meta()))).unwrap();
    let ck = Checkpoint::load(&p).unwrap();
    assert_eq!(ck.tensors["weight"].f32s().unwrap(), [1.0, 2.0]);
}

#[test]
fn bad_metadata_is_reported_by_key() {
    let dir = TempDir::new("meta");
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("format", Some("tigl"), "not a tigel checkpoint"),
        ("format_version", Some("2"), "version `2`"),
        ("format_version", None, "`format_version`"),
        ("kind", None, "missing key `kind`"),
        ("step", Some("-3"), "`step` is `-3`"),
        ("config", Some("{\"a\": "), "`config` is not valid JSON"),
        ("rng", None, "missing key `rng`"),
    ];
    for (key, value, want) in cases {
        let mut meta = tigel_meta();
        match value {
            Some(v) => meta.insert(key.into(), v.into()),
            None => meta.remove(key),
        };
        let e = load_bytes_err(&dir, &foreign_file(&[], Some(meta)));
        assert!(e.contains(want), "{key} = {value:?}: {e}");
    }
}

#[test]
fn wrong_kind_and_wrong_tensors_name_what_is_wrong() {
    let dir = TempDir::new("expect");
    let mut ck = Checkpoint::new("gan", json!({"z_dim": 8}));
    ck.tensors.insert("g.w".into(), HostTensor::from_f32(&[2, 3], &[0.5; 6]).unwrap());
    ck.tensors.insert("g.b".into(), HostTensor::from_f32(&[3], &[0.0; 3]).unwrap());
    ck.tensors.insert("seen".into(), HostTensor::from_u32(&[1], vec![7]).unwrap());
    let path = dir.path().join("x").join("checkpoint.safetensors");
    ck.save(&path).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    let p = path.display().to_string();

    ck.expect_kind("gan").unwrap();
    let e = ck.expect_kind_for("gpt", "`tigel sample gpt`").unwrap_err().to_string();
    assert_eq!(e, format!("checkpoint {p}: holds a `gan` model; `tigel sample gpt` needs a `gpt` checkpoint"));
    let e = ck.expect_kind("ddpm").unwrap_err().to_string();
    assert!(e.contains(&p) && e.contains("`gan`") && e.contains("`ddpm`"), "{e}");

    let good: [(&str, &[usize], DType); 3] =
        [("g.w", &[2, 3], DType::F32), ("g.b", &[3], DType::F32), ("seen", &[1], DType::U32)];
    ck.expect_tensors(&good).unwrap();

    let mut missing = good.to_vec();
    missing.push(("d.w", &[3, 1], DType::F32));
    let e = ck.expect_tensors(&missing).unwrap_err().to_string();
    assert!(e.contains(&p) && e.contains("missing tensor `d.w`") && e.contains("f32 [3, 1]"), "{e}");
    assert!(e.contains("`g.b`, `g.w`, `seen`"), "lists what there is: {e}");

    let mut shape = good;
    shape[0].1 = &[3, 2];
    let e = ck.expect_tensors(&shape).unwrap_err().to_string();
    assert!(e.contains("tensor `g.w` is f32 [2, 3] where f32 [3, 2] is expected"), "{e}");

    let mut dtype = good;
    dtype[2].2 = DType::F32;
    let e = ck.expect_tensors(&dtype).unwrap_err().to_string();
    assert!(e.contains("tensor `seen` is u32 [1] where f32 [1] is expected"), "{e}");

    let e = ck.expect_tensors(&good[..1]).unwrap_err().to_string();
    assert!(e.contains("unexpected tensors `g.b`, `seen`") && e.contains("`gan`"), "{e}");

    let e = ck.get("nope").unwrap_err().to_string();
    assert!(e.contains("no tensor `nope`") && e.contains("`g.w`"), "{e}");
}

#[test]
fn restore_into_checks_shape_and_dtype() {
    let dev = cpu();
    let mut ck = Checkpoint::new("mlp", json!({}));
    ck.tensors.insert("w".into(), HostTensor::from_f32(&[2, 3], &[1.0; 6]).unwrap());
    let wrong_shape = Tensor::empty(&dev, &[3, 2], DType::F32).unwrap();
    let e = ck.restore_into(&dev, "w", &wrong_shape).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("f32 [2, 3]") && e.contains("f32 [3, 2]"), "{e}");
    let wrong_dtype = Tensor::empty(&dev, &[2, 3], DType::U32).unwrap();
    let e = ck.restore_into(&dev, "w", &wrong_dtype).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("u32 [2, 3]"), "{e}");
    let e = ck.restore_into(&dev, "v", &wrong_dtype).unwrap_err().to_string();
    assert!(e.contains("no tensor `v`"), "{e}");
    // The write is in order with work already issued: a later read sees the checkpoint values.
    let t = Tensor::from_f32(&dev, &[2, 3], &[5.0; 6]).unwrap();
    ck.restore_into(&dev, "w", &t).unwrap();
    assert_eq!(t.to_f32(&dev).unwrap(), [1.0; 6]);
}

#[test]
fn invalid_checkpoints_are_not_saved() {
    let dir = TempDir::new("invalid");
    let path = checkpoint_path(dir.path());
    let mut ck = Checkpoint::new("mlp", json!({}));
    ck.extra.insert("step".into(), "5".into());
    let e = ck.save(&path).unwrap_err().to_string();
    assert!(e.contains("`step`") && e.contains("reserved"), "{e}");

    let mut ck = Checkpoint::new("mlp", json!({}));
    ck.tensors.insert("w".into(), HostTensor { shape: vec![2, 2], dtype: DType::F32, data: vec![0; 3] });
    let e = ck.save(&path).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("[2, 2]") && e.contains("3 words"), "{e}");

    let mut ck = Checkpoint::new("mlp", json!({}));
    ck.tensors.insert("__metadata__".into(), HostTensor::from_u32(&[1], vec![0]).unwrap());
    let e = ck.save(&path).unwrap_err().to_string();
    assert!(e.contains("`__metadata__`"), "{e}");

    let e = Checkpoint::new("", json!({})).save(&path).unwrap_err().to_string();
    assert!(e.contains("kind"), "{e}");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn a_failed_save_leaves_the_old_checkpoint_and_no_temp_file() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("atomic");
    let path = checkpoint_path(dir.path());
    let old = random_checkpoint(&mut rng);
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    let mut new = random_checkpoint(&mut rng);
    new.step += 1;
    let total = {
        let p = dir.path().join("sizer").join("c.safetensors");
        new.save(&p).unwrap();
        std::fs::read(&p).unwrap().len() as u64
    };
    std::fs::remove_dir_all(dir.path().join("sizer")).unwrap();

    let faults = [
        SaveFault::AfterBytes(0),
        SaveFault::AfterBytes(5),
        SaveFault::AfterBytes(100),
        SaveFault::AfterBytes(total / 2),
        SaveFault::AfterBytes(total - 1),
        SaveFault::BeforeRename,
    ];
    for fault in faults {
        let e = new.save_with_fault(&path, fault).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("unchanged"), "{fault:?}: {e}");
        assert!(std::fs::read(&path).unwrap() == old_bytes, "{fault:?} changed the old checkpoint");
        assert_eq!(dir.entries(), ["checkpoint.safetensors"], "{fault:?} left files behind");
    }
    assert_same(&Checkpoint::load(&path).unwrap(), &old);

    // A fault past the end of the file is no fault: the save goes through.
    new.save_with_fault(&path, SaveFault::AfterBytes(total)).unwrap();
    assert_same(&Checkpoint::load(&path).unwrap(), &new);
    assert_eq!(dir.entries(), ["checkpoint.safetensors"]);
}

#[test]
fn saving_where_it_cannot_go_fails_cleanly() {
    let dir = TempDir::new("cannot");
    let ck = Checkpoint::new("mlp", json!({"a": 1}));
    // The target is a directory: the rename fails, the temp file goes, the directory stays.
    let target = dir.path().join("checkpoint.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = ck.save(&target).unwrap_err().to_string();
    assert!(e.contains("cannot save") && e.contains("renam"), "{e}");
    assert_eq!(dir.entries(), ["checkpoint.safetensors"]);
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
    // The parent is a file.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = ck.save(&file.join("checkpoint.safetensors")).unwrap_err().to_string();
    assert!(e.contains("cannot create directory"), "{e}");
}

#[test]
fn leftovers_of_a_crashed_save_do_not_matter() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("leftover");
    let path = checkpoint_path(dir.path());
    let first = random_checkpoint(&mut rng);
    first.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    // What a save killed mid-write leaves: partial temp files, including ones with this process's pid (a
    // later process may reuse a crashed one's pid), one of them a directory.
    let pid = std::process::id();
    let leftovers = [
        format!(".checkpoint.safetensors.tmp-{pid}-0"),
        format!(".checkpoint.safetensors.tmp-{pid}-1"),
        format!(".checkpoint.safetensors.tmp-{}-0", pid.wrapping_add(1)),
    ];
    std::fs::create_dir(dir.path().join(&leftovers[0])).unwrap();
    std::fs::write(dir.path().join(&leftovers[1]), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join(&leftovers[2]), &bytes[..100]).unwrap();
    assert_same(&Checkpoint::load(&path).unwrap(), &first);
    assert_same(&Checkpoint::load(dir.path()).unwrap(), &first);

    // A new save steps over them and leaves them alone.
    let mut second = random_checkpoint(&mut rng);
    second.step = first.step + 100;
    second.save(&path).unwrap();
    assert_same(&Checkpoint::load(&path).unwrap(), &second);
    let mut want: Vec<String> = leftovers.to_vec();
    want.push("checkpoint.safetensors".into());
    want.sort();
    assert_eq!(dir.entries(), want);
    assert_eq!(std::fs::read(dir.path().join(&leftovers[1])).unwrap(), &bytes[..bytes.len() / 2]);
}

#[test]
fn concurrent_saves_in_one_process_do_not_collide() {
    let mut rng = Rng::new(seed());
    let dir = TempDir::new("concurrent");
    let path = checkpoint_path(dir.path());
    let cks: Vec<Checkpoint> = (0..4).map(|_| random_checkpoint(&mut rng)).collect();
    std::thread::scope(|s| {
        for ck in &cks {
            s.spawn(|| {
                for _ in 0..5 {
                    ck.save(&path).unwrap();
                }
            });
        }
    });
    // One of them won; whichever it is, the file is whole.
    let got = Checkpoint::load(&path).unwrap();
    let saved = cks.iter().find(|c| c.step == got.step).expect("a checkpoint that nobody saved");
    assert_same(&got, saved);
    assert_eq!(dir.entries(), ["checkpoint.safetensors"]);
}
