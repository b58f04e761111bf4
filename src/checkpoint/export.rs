//! `tigel export`: a checkpoint's weights alone, in PyTorch's conventions, as a safetensors file that
//! `safetensors.torch.load_file` reads and a PyTorch model loads with `load_state_dict(strict=True)`.
//!
//! What changes from the checkpoint:
//! - only weights: no optimizer state (`optim.*`, `d.optim.*`, `g.optim.*`), no step counters;
//! - the EMA weights where sampling uses them: a GAN's generator and a diffusion model take the values of
//!   `g.ema.<name>` / `ema.<name>` under the parameter's own name (metadata `ema` says whether);
//! - layouts: tigel's linear maps are `x · W` with W [in, out], PyTorch's `nn.Linear` holds [out, in], so
//!   every 2-D weight but an embedding table is transposed; a convolution bias [C, 1, 1] becomes [C];
//!   convolution kernels are already PyTorch's ([out, in, kh, kw]; transposed ones [in, out, kh, kw]);
//! - the GPT's names become nanoGPT's (`transformer.h.0.attn.c_attn.weight`, ...) with `lm_head.weight`
//!   tied to `transformer.wte.weight` (or the untied head's own); the options nanoGPT lacks get names in
//!   its style (`attn.q_ln`/`attn.k_ln` for QK normalisation, `mlp.c_up` for the gated MLP's second
//!   projection; no `wpe` with rotary positions) and keys in the config; GAN and diffusion weights keep
//!   tigel's names.
//!
//! Metadata (strings): `format` = "pt", `exported_by` = "tigel", `kind`, `step`, `ema`, `config` (JSON:
//! for the GPT nanoGPT's config, else the model config) and `tigel_config` (the checkpoint's whole config).
//! The file is not a tigel checkpoint: tigel refuses to resume from it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::host::fs::{io_err, write_atomic, write_atomic_with};
use crate::tensor::DType;

use super::{ema_name, Checkpoint, HostTensor};

/// Weight tables looked up by row (never transposed): the GPT's token and position embeddings and a
/// diffusion model's class embedding.
pub const EMBEDDINGS: [&str; 3] = ["wte", "wpe", "classes"];

/// A checkpoint's weights in PyTorch's conventions, ready to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The tensors by exported name (all f32).
    pub tensors: BTreeMap<String, HostTensor>,
    /// The safetensors metadata (see the module doc).
    pub metadata: BTreeMap<String, String>,
    /// The model's config as `config` holds it (for the GPT: nanoGPT's fields).
    pub config: Value,
    /// Per exported tensor, the checkpoint tensor it came from and whether it was transposed.
    pub sources: BTreeMap<String, (String, bool)>,
}

/// The model config nanoGPT's `GPTConfig` takes for a tigel GPT config (`model` of a `gpt` checkpoint),
/// with the facts a nanoGPT-style model needs to match tigel exactly beside it, including the options
/// nanoGPT lacks (rotary positions, QK normalisation, the gated MLP, an untied head): each is a key the
/// loading model reads (benches/reference/load_export.py), false for a model without it. `mlp_hidden` is
/// the hidden width of the checkpoint's MLP (its `h.0.mlp.fc` tensor's columns).
pub fn nanogpt_config(model: &Value, mlp_hidden: usize) -> std::result::Result<Value, String> {
    let get = |k: &str| model.get(k).and_then(Value::as_u64).ok_or_else(|| format!("model config has no `{k}`"));
    let on = |k: &str| model.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(json!({
        "n_layer": get("layers")?, "n_head": get("heads")?, "n_embd": get("width")?,
        "block_size": get("context")?, "vocab_size": get("vocab")?,
        "bias": false, "ln_bias": true, "ln_eps": 1e-5, "gelu": "tanh", "tied_lm_head": !on("untied"),
        "dropout": 0.0, "mlp_hidden": mlp_hidden, "gated_mlp": on("gated_mlp"), "qk_norm": on("qk_norm"),
        "rope": on("rope"), "rope_base": 10_000.0
    }))
}

/// Exports the weights of a `gpt`, `gan` or `diffusion` checkpoint (see the module doc). A checkpoint
/// whose EMA tensors are named by position (an older tigel) must be renamed first
/// (`Checkpoint::with_named_ema`, which needs the model's parameter order).
pub fn export(ck: &Checkpoint) -> Result<Export> {
    let err = |msg: String| Error::Checkpoint {
        path: ck.source.as_ref().map_or_else(|| "(in memory)".into(), |p| p.display().to_string()),
        msg,
    };
    let ema_prefix = match ck.kind.as_str() {
        "gpt" => None,
        "gan" => Some("g."),
        "diffusion" => Some(""),
        k => return Err(err(format!("holds a `{k}` model; `tigel export` takes a gpt, gan or diffusion checkpoint"))),
    };
    if let Some(pre) = ema_prefix {
        if ck.tensors.contains_key(&format!("{pre}ema.0")) {
            return Err(err("its EMA tensors are named by position (an older tigel): rename them first".into()));
        }
    }
    let model = ck.config.get("model").cloned().unwrap_or(Value::Null);
    let mut ex =
        Export { tensors: BTreeMap::new(), metadata: BTreeMap::new(), config: model, sources: BTreeMap::new() };
    let mut used_ema = false;
    for (name, t) in ck.tensors.iter().filter(|(n, _)| is_weight(n)) {
        let (from, value) = match ema_prefix.map(|pre| format!("{pre}{}", ema_name(name))) {
            Some(e) if ck.tensors.contains_key(&e) && (ck.kind != "gan" || name.starts_with("g.")) => {
                used_ema = true;
                (e.clone(), &ck.tensors[&e])
            }
            _ => (name.clone(), t),
        };
        if value.shape != t.shape || value.dtype != DType::F32 {
            return Err(err(format!("tensor `{from}` is not an f32 tensor of the shape of `{name}`")));
        }
        let (to, transpose) = if ck.kind == "gpt" { gpt_name(name).map_err(err)? } else { other_name(name, t) };
        let mut out = if transpose { transposed(value) } else { value.clone() };
        if name.ends_with(".b") && out.shape.len() == 3 && out.shape[1..] == [1, 1] {
            out.shape.truncate(1);
        }
        ex.sources.insert(to.clone(), (from, transpose));
        ex.tensors.insert(to, out);
    }
    if ck.kind == "gpt" {
        let hidden = ck.tensors.get("h.0.mlp.fc").and_then(|t| t.shape.get(1).copied()).unwrap_or(0);
        ex.config = nanogpt_config(&ex.config, hidden).map_err(err)?;
        if !ex.tensors.contains_key("lm_head.weight") {
            let wte = ex.tensors.get("transformer.wte.weight").cloned().ok_or_else(|| err("no tensor `wte`".into()))?;
            ex.sources.insert("lm_head.weight".into(), ("wte".into(), false));
            ex.tensors.insert("lm_head.weight".into(), wte);
        }
    }
    for (k, v) in [
        ("format", "pt".to_string()),
        ("exported_by", "tigel".into()),
        ("kind", ck.kind.clone()),
        ("step", ck.step.to_string()),
        ("ema", used_ema.to_string()),
        ("config", ex.config.to_string()),
        ("tigel_config", ck.config.to_string()),
    ] {
        ex.metadata.insert(k.into(), v);
    }
    Ok(ex)
}

/// A model weight rather than optimizer or EMA state: no `optim` or `ema` among the name's first two
/// components (`optim.0.m`, `g.optim.step`, `ema.x`, `g.ema.g.0.w` are state).
fn is_weight(name: &str) -> bool {
    !name.split('.').take(2).any(|c| c == "optim" || c == "ema")
}

/// nanoGPT's name for a GPT weight, and whether its layout is transposed.
fn gpt_name(name: &str) -> std::result::Result<(String, bool), String> {
    let parts: Vec<&str> = name.split('.').collect();
    let norm = |ln: &str, p: &str| match p {
        "gamma" => Ok(format!("{ln}.weight")),
        "beta" => Ok(format!("{ln}.bias")),
        _ => Err(format!("unexpected GPT tensor `{name}`")),
    };
    Ok(match parts[..] {
        ["wte"] => ("transformer.wte.weight".into(), false),
        ["wpe"] => ("transformer.wpe.weight".into(), false),
        ["ln_f", p] => (norm("transformer.ln_f", p)?, false),
        ["h", i, "ln1", p] => (norm(&format!("transformer.h.{i}.ln_1"), p)?, false),
        ["h", i, "ln2", p] => (norm(&format!("transformer.h.{i}.ln_2"), p)?, false),
        ["h", i, "attn", "qkv"] => (format!("transformer.h.{i}.attn.c_attn.weight"), true),
        ["h", i, "attn", "proj"] => (format!("transformer.h.{i}.attn.c_proj.weight"), true),
        ["h", i, "mlp", "fc"] => (format!("transformer.h.{i}.mlp.c_fc.weight"), true),
        ["h", i, "mlp", "out"] => (format!("transformer.h.{i}.mlp.c_proj.weight"), true),
        ["h", i, "mlp", "up"] => (format!("transformer.h.{i}.mlp.c_up.weight"), true),
        ["h", i, "attn", "q_ln", p] => (norm(&format!("transformer.h.{i}.attn.q_ln"), p)?, false),
        ["h", i, "attn", "k_ln", p] => (norm(&format!("transformer.h.{i}.attn.k_ln"), p)?, false),
        ["lm_head"] => ("lm_head.weight".into(), true),
        _ => return Err(format!("unexpected GPT tensor `{name}`")),
    })
}

/// GAN and diffusion weights keep their names; every 2-D weight but an embedding table is a linear map
/// [in, out], transposed to [out, in].
fn other_name(name: &str, t: &HostTensor) -> (String, bool) {
    let embedding = EMBEDDINGS.contains(&name);
    let running = name.ends_with(".running_mean") || name.ends_with(".running_var");
    (name.to_string(), t.shape.len() == 2 && !embedding && !running)
}

/// A 2-D tensor transposed.
fn transposed(t: &HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut data = vec![0u32; t.data.len()];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor { shape: vec![c, r], dtype: t.dtype, data }
}

impl Export {
    /// The safetensors file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.data.iter().flat_map(|w| w.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .zip(self.tensors.values())
            .map(|((n, b), t)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| Error::invalid("export", format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid("export", e.to_string()))
    }

    /// The sidecar JSON written beside `out`: `out` with the extension `.json` (`gpt.safetensors` →
    /// `gpt.json`).
    pub fn sidecar_path(out: &Path) -> PathBuf {
        out.with_extension("json")
    }

    /// The sidecar's content: kind, step, ema, config, the checkpoint's config, and per tensor its shape,
    /// its source tensor and whether it was transposed.
    pub fn sidecar(&self) -> Value {
        let tensors: serde_json::Map<String, Value> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                let (from, tr) = &self.sources[n];
                (n.clone(), json!({"shape": t.shape, "dtype": "F32", "from": from, "transposed": tr}))
            })
            .collect();
        let m = &self.metadata;
        json!({
            "format": "pt", "exported_by": "tigel", "kind": m["kind"], "step": m["step"].parse::<u64>().unwrap_or(0),
            "ema": m["ema"] == "true", "config": self.config,
            "tigel_config": serde_json::from_str::<Value>(&m["tigel_config"]).unwrap_or(Value::Null),
            "tensors": tensors,
        })
    }

    /// Writes the safetensors file to `out` and the sidecar JSON beside it, each atomically: a failed
    /// write leaves no partial file (and an existing file as it was). `out` must end in `.safetensors`.
    pub fn write(&self, out: &Path) -> Result<()> {
        if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(Error::invalid(
                "export",
                format!("--out {}: the file name must end in .safetensors", out.display()),
            ));
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(io_err(out, std::io::Error::new(std::io::ErrorKind::NotFound, "its directory does not exist")));
        }
        let bytes = self.to_bytes()?;
        let side = serde_json::to_vec_pretty(&self.sidecar()).map_err(|e| Error::invalid("export", e.to_string()))?;
        write_atomic_with(out, |w| w.write_all(&bytes).map_err(|e| io_err(out, e)))?;
        write_atomic(&Self::sidecar_path(out), &side)
    }
}
