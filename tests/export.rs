//! `tigel export` end to end on tiny GPT, GAN and diffusion runs: the names, shapes and layouts of what it
//! writes checked against the checkpoint's tensors (transposes, the EMA chosen, no optimizer state), its
//! refusals; and checkpoints with positional EMA names (`ema.0`, written by an older tigel) still loading,
//! resuming and exporting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
mod common;
use common::{output_of, tigel_command};

use safetensors::SafeTensors;
use tigel::checkpoint::{Checkpoint, HostTensor};
use tigel::models::{ddpm::Diffusion, gan::Gan, gan::Layer};

fn tigel(args: &[&str]) -> (i32, String) {
    let (code, _, err) = output_of(tigel_command().args(["--backend", "cpu"]).args(args));
    (code, err)
}

fn ok(args: &[&str]) {
    let (code, err) = tigel(args);
    assert_eq!(code, 0, "tigel {args:?}:\n{err}");
}

fn fails(args: &[&str], needle: &str) {
    let (code, err) = tigel(args);
    assert_ne!(code, 0, "tigel {args:?} should fail");
    assert!(err.contains(needle), "tigel {args:?}: stderr should mention `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "tigel {args:?} panicked:\n{err}");
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An exported file: tensors (f32 values and shape) and metadata.
struct Exported {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    meta: BTreeMap<String, String>,
}

fn read_export(path: &Path) -> Exported {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{n}");
            let vals = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect();
    Exported { tensors, meta }
}

fn f32s(t: &HostTensor) -> Vec<f32> {
    t.f32s().unwrap()
}

/// `t` [r, c] transposed, as [c, r] values.
fn transpose(t: &HostTensor) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (t.shape[0], t.shape[1]);
    let v = f32s(t);
    (vec![c, r], (0..c * r).map(|k| v[(k % r) * c + k / r]).collect())
}

fn assert_same(ex: &Exported, name: &str, want: (Vec<usize>, Vec<f32>)) {
    let got = ex.tensors.get(name).unwrap_or_else(|| panic!("export has no `{name}`: {:?}", ex.tensors.keys()));
    assert_eq!(got.0, want.0, "shape of `{name}`");
    assert_eq!(got.1, want.1, "values of `{name}`");
}

fn no_state(ex: &Exported) {
    for n in ex.tensors.keys() {
        assert!(!n.contains("optim") && !n.contains("ema"), "state tensor `{n}` exported");
    }
}

#[test]
fn gpt_exports_in_nanogpt_names_and_layouts() {
    let d = dir("gpt");
    let run = d.join("run");
    // nanoGPT's own architecture: learned positions, GELU MLP, tied head.
    let model = ["--layers", "2", "--heads", "2", "--width", "16", "--context", "16"];
    let classic = ["--rope", "false", "--qk-norm", "false", "--gated-mlp", "false", "--untied", "false"];
    let mut args = vec!["train", "gpt", "--steps", "2", "--eval-every", "2", "--sample-tokens", "0"];
    args.extend(model);
    args.extend(classic);
    args.extend(["--out", s(&run)]);
    ok(&args);
    let out = d.join("gpt.safetensors");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&out)]);
    let ck = Checkpoint::load(&run).unwrap();
    let ex = read_export(&out);
    no_state(&ex);
    let t = |n: &str| ck.get(n).unwrap();
    let mut want = vec!["lm_head.weight", "transformer.wte.weight", "transformer.wpe.weight"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for i in 0..2 {
        for p in ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "attn.c_attn.weight", "attn.c_proj.weight"] {
            want.push(format!("transformer.h.{i}.{p}"));
        }
        want.push(format!("transformer.h.{i}.mlp.c_fc.weight"));
        want.push(format!("transformer.h.{i}.mlp.c_proj.weight"));
        let h = |p: &str| format!("transformer.h.{i}.{p}");
        assert_same(&ex, &h("attn.c_attn.weight"), transpose(t(&format!("h.{i}.attn.qkv"))));
        assert_same(&ex, &h("attn.c_proj.weight"), transpose(t(&format!("h.{i}.attn.proj"))));
        assert_same(&ex, &h("mlp.c_fc.weight"), transpose(t(&format!("h.{i}.mlp.fc"))));
        assert_same(&ex, &h("mlp.c_proj.weight"), transpose(t(&format!("h.{i}.mlp.out"))));
        assert_same(&ex, &h("ln_1.weight"), (vec![16], f32s(t(&format!("h.{i}.ln1.gamma")))));
        assert_same(&ex, &h("ln_2.bias"), (vec![16], f32s(t(&format!("h.{i}.ln2.beta")))));
    }
    want.extend(["transformer.ln_f.weight".into(), "transformer.ln_f.bias".into()]);
    want.sort();
    assert_eq!(ex.tensors.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(ex.tensors["transformer.h.0.attn.c_attn.weight"].0, vec![48, 16], "c_attn is [3C, C]");
    assert_same(&ex, "transformer.wte.weight", (vec![256, 16], f32s(t("wte"))));
    assert_same(&ex, "lm_head.weight", (vec![256, 16], f32s(t("wte"))));
    assert_same(&ex, "transformer.wpe.weight", (vec![16, 16], f32s(t("wpe"))));
    assert_same(&ex, "transformer.ln_f.bias", (vec![16], f32s(t("ln_f.beta"))));
    assert_eq!(ex.meta["format"], "pt");
    assert_eq!(ex.meta["kind"], "gpt");
    let cfg: serde_json::Value = serde_json::from_str(&ex.meta["config"]).unwrap();
    for (k, v) in [("n_layer", 2), ("n_head", 2), ("n_embd", 16), ("block_size", 16), ("vocab_size", 256)] {
        assert_eq!(cfg[k], v, "{k}: {cfg}");
    }
    assert_eq!(cfg["bias"], false);
    assert_eq!(cfg["gelu"], "tanh");
    for k in ["rope", "qk_norm", "gated_mlp"] {
        assert_eq!(cfg[k], false, "{k}: {cfg}");
    }
    assert_eq!((cfg["tied_lm_head"].clone(), cfg["mlp_hidden"].clone()), (true.into(), 64.into()));
    let side: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("gpt.json")).unwrap()).unwrap();
    assert_eq!(side["config"], cfg);
    assert_eq!(side["tensors"]["transformer.h.1.mlp.c_fc.weight"]["from"], "h.1.mlp.fc");
    assert_eq!(side["tensors"]["transformer.h.1.mlp.c_fc.weight"]["transposed"], true);
    // tigel refuses the export as a checkpoint: it holds weights only.
    fails(&["eval", "gpt", "--checkpoint", s(&out)], "not a tigel checkpoint");
}

/// The options nanoGPT lacks (rotary positions, QK normalisation, the gated MLP, an untied head) export
/// under names in its style, with config keys saying which are on.
#[test]
fn gpt_options_export_in_nanogpt_style_names() {
    let d = dir("gpt-options");
    let run = d.join("run");
    let mut args = vec!["train", "gpt", "--steps", "2", "--eval-every", "2", "--sample-tokens", "0"];
    args.extend(["--layers", "1", "--heads", "2", "--width", "16", "--context", "16", "--mlp-hidden", "32"]);
    args.extend(["--rope", "true", "--qk-norm", "true", "--gated-mlp", "true", "--untied", "true"]);
    args.extend(["--out", s(&run)]);
    ok(&args);
    let out = d.join("gpt.safetensors");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&out)]);
    let ck = Checkpoint::load(&run).unwrap();
    let ex = read_export(&out);
    no_state(&ex);
    let t = |n: &str| ck.get(n).unwrap();
    let h = |p: &str| format!("transformer.h.0.{p}");
    assert!(!ex.tensors.contains_key("transformer.wpe.weight"), "rotary positions have no wpe");
    assert_same(&ex, &h("mlp.c_up.weight"), transpose(t("h.0.mlp.up")));
    assert_same(&ex, &h("mlp.c_fc.weight"), transpose(t("h.0.mlp.fc")));
    assert_eq!(ex.tensors[&h("mlp.c_up.weight")].0, vec![32, 16], "c_up is [hidden, C]");
    assert_same(&ex, &h("attn.q_ln.weight"), (vec![8], f32s(t("h.0.attn.q_ln.gamma"))));
    assert_same(&ex, &h("attn.k_ln.bias"), (vec![8], f32s(t("h.0.attn.k_ln.beta"))));
    assert_same(&ex, "lm_head.weight", transpose(t("lm_head")));
    assert_ne!(ex.tensors["lm_head.weight"].1, ex.tensors["transformer.wte.weight"].1, "the head is untied");
    let cfg: serde_json::Value = serde_json::from_str(&ex.meta["config"]).unwrap();
    for (k, v) in [("rope", true), ("qk_norm", true), ("gated_mlp", true), ("tied_lm_head", false)] {
        assert_eq!(cfg[k], v, "{k}: {cfg}");
    }
    assert_eq!(cfg["mlp_hidden"], 32);
}

/// The GAN export: G's weights are its EMA's, D's its own; linear maps transposed (as the model's layers
/// say), convolution kernels as they are.
fn check_gan_export(ck: &Checkpoint, ex: &Exported) {
    no_state(ex);
    assert_eq!(ex.meta["ema"], "true");
    let m = Gan::load(&tigel::Device::cpu(), ck, "test", false).unwrap();
    let ck = ck.with_named_ema("g.", &m.g.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
    let mut names = Vec::new();
    for (net, layers) in [("g", &m.g.layers), ("d", &m.d.layers)] {
        for l in layers.iter() {
            let (params, linear) = match l {
                Layer::Linear(x) => (x.params(), true),
                Layer::Conv(x) => (x.params(), false),
                Layer::ConvT(x) => (x.params(), false),
                Layer::BatchNorm(x) => (x.params(), false),
                _ => continue,
            };
            for p in params {
                let src = if net == "g" { format!("g.ema.{}", p.name) } else { p.name.clone() };
                let t = ck.get(&src).unwrap();
                let want = if linear && t.shape.len() == 2 { transpose(t) } else { (t.shape.clone(), f32s(t)) };
                assert_same(ex, &p.name, want);
                names.push(p.name);
            }
        }
    }
    for (n, t) in m.g.running() {
        assert_same(ex, &n, (t.shape.clone(), f32s(ck.get(&n).unwrap())));
        names.push(n);
    }
    names.sort();
    assert_eq!(ex.tensors.keys().cloned().collect::<Vec<_>>(), names);
}

#[test]
fn gan_exports_ema_generator_and_discriminator() {
    let d = dir("gan");
    let run = d.join("run");
    let small = ["--width", "8", "--depth", "2", "--batch", "32", "--z-dim", "3"];
    let mut args = vec!["train", "gan", "--data", "ring8", "--steps", "3", "--eval-every", "3"];
    args.extend(small);
    args.extend(["--out", s(&run)]);
    ok(&args);
    let ck = Checkpoint::load(&run).unwrap();
    assert!(ck.tensors.contains_key("g.ema.g.0.w"), "EMA named after its parameter: {:?}", ck.tensors.keys());
    let out = d.join("gan.safetensors");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&out)]);
    check_gan_export(&ck, &read_export(&out));
}

#[test]
fn diffusion_exports_ema_weights() {
    let d = dir("diffusion");
    let run = d.join("run");
    let args = ["train", "diffusion", "--data", "ring8", "--steps", "3", "--save-every", "3", "--hidden", "16"];
    ok(&[&args[..], &["--layers", "2", "--out", s(&run)]].concat());
    let ck = Checkpoint::load(&run).unwrap();
    let out = d.join("diffusion.safetensors");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&out)]);
    check_diffusion_export(&ck, &read_export(&out));
}

/// Every diffusion parameter exported under its name with its EMA value; 2-D maps transposed.
fn check_diffusion_export(ck: &Checkpoint, ex: &Exported) {
    no_state(ex);
    assert_eq!(ex.meta["ema"], "true");
    let m = Diffusion::load(&tigel::Device::cpu(), ck, "test").unwrap();
    let params = m.params();
    let ck = ck.with_named_ema("", &params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
    let mut names = Vec::new();
    for p in params {
        let t = ck.get(&format!("ema.{}", p.name)).unwrap();
        let want = if t.shape.len() == 2 { transpose(t) } else { (t.shape.clone(), f32s(t)) };
        assert_same(ex, &p.name, want);
        names.push(p.name);
    }
    names.sort();
    assert_eq!(ex.tensors.keys().cloned().collect::<Vec<_>>(), names);
}

#[test]
fn export_refuses_bad_input_and_writes_nothing() {
    let d = dir("bad");
    let out = d.join("x.safetensors");
    fails(&["export", "--checkpoint", s(&d.join("nope")), "--out", s(&out)], "no such file");
    let mut ck = Checkpoint::new("mlp", serde_json::json!({}));
    ck.tensors.insert("w".into(), HostTensor::from_f32(&[1], &[1.0]).unwrap());
    let other = d.join("mlp.safetensors");
    ck.save(&other).unwrap();
    fails(&["export", "--checkpoint", s(&other), "--out", s(&out)], "takes a gpt, gan or diffusion checkpoint");
    let legacy = fixture("legacy-ema-gan.safetensors");
    fails(&["export", "--checkpoint", s(&legacy), "--out", s(&d.join("x.bin"))], "must end in .safetensors");
    fails(&["export", "--checkpoint", s(&legacy), "--out", s(&d.join("missing/x.safetensors"))], "does not exist");
    let ro = d.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm.clone()).unwrap();
    // root writes into a read-only directory: only check the refusal where the permission holds.
    if std::fs::write(ro.join("probe"), b"").is_err() {
        fails(&["export", "--checkpoint", s(&legacy), "--out", s(&ro.join("x.safetensors"))], "x.safetensors");
    }
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&ro, perm).unwrap();
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!out.exists() && left.iter().all(|n| !n.to_string_lossy().contains(".tmp")), "left behind: {left:?}");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Checkpoints written before the EMA was named after its parameters (`g.ema.0`, `ema.0`, ...; the two
/// fixtures were made by tigel at commit 3492599: ring8, 20 steps) load with their EMA weights, resume,
/// and export with the EMA chosen.
#[test]
fn positional_ema_checkpoints_still_load_resume_and_export() {
    let dev = tigel::Device::cpu();
    let gan = Checkpoint::load(&fixture("legacy-ema-gan.safetensors")).unwrap();
    assert!(gan.tensors.contains_key("g.ema.0"));
    let m = Gan::load(&dev, &gan, "test", true).unwrap();
    for (i, p) in m.g.params().iter().enumerate() {
        assert_eq!(p.tensor.to_f32(&dev).unwrap(), f32s(gan.get(&format!("g.ema.{i}")).unwrap()), "{}", p.name);
    }
    let diff = Checkpoint::load(&fixture("legacy-ema-diffusion.safetensors")).unwrap();
    assert!(diff.tensors.contains_key("ema.0"));
    let m = Diffusion::load(&dev, &diff, "test").unwrap();
    for (i, p) in m.params().iter().enumerate() {
        assert_eq!(p.tensor.to_f32(&dev).unwrap(), f32s(diff.get(&format!("ema.{i}")).unwrap()), "{}", p.name);
    }

    let d = dir("legacy");
    for (kind, ck, file) in [("gan", &gan, "legacy-ema-gan"), ("diffusion", &diff, "legacy-ema-diffusion")] {
        let out = d.join(format!("{file}.safetensors"));
        ok(&["export", "--checkpoint", s(&fixture(&format!("{file}.safetensors"))), "--out", s(&out)]);
        let ex = read_export(&out);
        if kind == "gan" {
            check_gan_export(ck, &ex);
        } else {
            check_diffusion_export(ck, &ex);
        }
        // Resuming renames the EMA: the new checkpoint holds `ema.<name>` only.
        let run = d.join(kind);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::copy(fixture(&format!("{file}.safetensors")), run.join("checkpoint.safetensors")).unwrap();
        let every = if kind == "gan" { "--eval-every" } else { "--save-every" };
        let next = d.join(format!("{kind}-next"));
        ok(&["train", kind, "--resume", s(&run), "--steps", "2", every, "2", "--out", s(&next)]);
        let resumed = Checkpoint::load(&next).unwrap();
        let named = if kind == "gan" { "g.ema.g.0.w" } else { "ema.time.0.w" };
        assert!(resumed.tensors.contains_key(named), "{:?}", resumed.tensors.keys());
        assert!(!resumed.tensors.keys().any(|n| n.ends_with("ema.0")), "{:?}", resumed.tensors.keys());
    }
}
