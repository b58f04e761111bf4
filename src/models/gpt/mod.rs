//! A byte-level GPT: a decoder-only transformer language model, read top to bottom.
//!
//! tokens ──► token embedding + position embedding
//!        ──► L × [ x += attention(LN(x)) ; x += MLP(LN(x)) ]      (pre-norm residual blocks)
//!        ──► LN ──► logits = h · Wteᵀ                             (output weights tied to the input embedding)
//!
//! Attention is one fused kernel over a packed q|k|v projection (no T×T matrix in memory); the MLP is
//! width → 4·width → width with GELU. Options (`GptConfig`, all off in old checkpoints): rotary positions
//! instead of the position table, QK normalisation, a gated SiLU MLP, an untied output projection. Matrices carry no bias (the layer norms hold the only offsets),
//! which saves a pass per layer at no cost in quality. Activations stay rank 2, [B·T, width], so every
//! weight gradient is one matmul over the whole batch.
//!
//! Beside the model: `train` (`GptTrainer`, a step that draws its own batch on the device), `eval`
//! (`Evaluator`, bits per character over held-out text) and `sample` (`Sampler`, text from a prompt).

mod block;
mod eval;
mod sample;
mod train;

use block::ResidDropout;
pub use block::{Attention, Block, Mlp, Rotary};
pub use eval::Evaluator;
pub use sample::{pick, SampleSettings, Sampler, MAX_TOKENS};
pub use train::{Decay, GptTrainer, OptimSettings, OptimizerChoice, TrainSettings, EMBEDDING_NAMES};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::data::text::VOCAB;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Embedding, Init, LayerNorm, Linear, Param};
use crate::ops::matmul::MatmulOpts;
use crate::ops::rng::RngState;
use crate::tensor::Tensor;

/// Checkpoint kind of this model.
pub const KIND: &str = "gpt";
/// Added to the variance in every layer norm.
const LN_EPS: f32 = 1e-5;
/// Std of the initial weights (GPT-2's).
const INIT_STD: f32 = 0.02;
/// Largest head size the fused attention kernel takes.
pub const MAX_HEAD_DIM: usize = 128;
/// nats → bits.
pub const BITS_PER_NAT: f64 = std::f64::consts::LOG2_E;

/// The shape of the model (`tigel train gpt` defaults: 4 layers, 4 heads, width 128, context 128,
/// dropout 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block (width / heads ≤ `MAX_HEAD_DIM`).
    pub heads: usize,
    /// Embedding width (a multiple of heads).
    pub width: usize,
    /// Tokens of context (the longest sequence; also the training window).
    pub context: usize,
    /// Dropout after attention and after the MLP, training only (0: off; absent in old checkpoints).
    #[serde(default)]
    pub dropout: f32,
    /// Rotary position embeddings on q and k instead of a learned position table (absent in old
    /// checkpoints: off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rope: bool,
    /// Layer norm of q and k over each head's values before attention (old checkpoints: off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// Gated MLP, SiLU(x·W_fc) ⊙ x·W_up, instead of GELU(x·W_fc) (old checkpoints: off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub gated_mlp: bool,
    /// MLP hidden width (0: 4·width, or for the gated MLP the multiple of 16 nearest 8·width/3, the same
    /// parameters and FLOPs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mlp_hidden: usize,
    /// A separate output projection instead of the token embedding's transpose (old checkpoints: tied).
    #[serde(default, skip_serializing_if = "is_false")]
    pub untied: bool,
}

/// Options that are off are not written, so the old model's config reads as it always has.
fn is_false(b: &bool) -> bool {
    !*b
}

/// See `is_false`.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for GptConfig {
    /// `tigel train gpt`'s shape (4 layers, 4 heads, width 128, context 128) with every architecture
    /// option off: the model old checkpoints hold.
    fn default() -> GptConfig {
        GptConfig {
            layers: 4,
            heads: 4,
            width: 128,
            context: 128,
            dropout: 0.0,
            rope: false,
            qk_norm: false,
            gated_mlp: false,
            mlp_hidden: 0,
            untied: false,
        }
    }
}

impl GptConfig {
    /// Every size positive, width divisible by heads, head size within the attention kernel's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, v: usize| {
            Err(Error::invalid("gpt config", format!("--{field} must be a positive integer, got {v}")))
        };
        for (f, v) in [("layers", self.layers), ("heads", self.heads), ("width", self.width), ("context", self.context)]
        {
            if v == 0 {
                return bad(f, v);
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::invalid(
                "gpt config",
                format!("--width {} must be divisible by --heads {}", self.width, self.heads),
            ));
        }
        if self.width / self.heads > MAX_HEAD_DIM {
            return Err(Error::invalid(
                "gpt config",
                format!("head size width/heads = {} is over {MAX_HEAD_DIM}; use more heads", self.width / self.heads),
            ));
        }
        if self.rope && (self.width / self.heads) % 2 == 1 {
            return Err(Error::invalid(
                "gpt config",
                format!("rotary positions need an even head size, got width/heads = {}", self.width / self.heads),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid("gpt config", format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        // Checked before anything is built: a huge --layers or --width must not reach the allocator.
        let (l, c, t, h) = (self.layers as u64, self.width as u64, self.context as u64, self.mlp_hidden as u64);
        let params = (|| {
            let mlp = c.checked_mul(h.max(c.checked_mul(4)?))?.checked_mul(3)?;
            let block = c.checked_mul(c)?.checked_mul(4)?.checked_add(mlp)?.checked_add(c.checked_mul(8)?)?;
            l.checked_mul(block)?.checked_add((2 * VOCAB as u64 + t + 2).checked_mul(c)?)
        })();
        let what = || format!("--layers {l}, --width {c} and --context {t} give the GPT's parameters");
        crate::models::check_values("gpt config", what, params)?;
        Ok(())
    }

    /// The config as checkpoints store it, with the vocabulary size beside the fields.
    pub fn to_json(&self) -> Value {
        let mut v = super::config_json(self);
        v["vocab"] = VOCAB.into();
        v
    }

    /// The config a checkpoint stores (its vocabulary must be bytes), validated.
    pub fn from_json(v: &Value) -> Result<GptConfig> {
        let vocab = v.get("vocab").and_then(Value::as_u64);
        if vocab != Some(VOCAB as u64) {
            return Err(Error::invalid("gpt config", format!("vocab must be {VOCAB} (bytes), got {}", v["vocab"])));
        }
        let cfg: GptConfig = super::config_from_json("gpt config", v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The MLP's hidden width.
    pub fn hidden(&self) -> usize {
        match (self.mlp_hidden, self.gated_mlp) {
            (0, false) => 4 * self.width,
            (0, true) => ((8 * self.width / 3 + 8) / 16 * 16).max(16),
            (h, _) => h,
        }
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let (c, h) = (self.width, self.hidden());
        let mlp = if self.gated_mlp { 3 * c * h } else { 2 * c * h };
        let qk = if self.qk_norm { 4 * (c / self.heads) } else { 0 };
        let pos = if self.rope { 0 } else { self.context * c };
        let head = if self.untied { VOCAB * c } else { 0 };
        VOCAB * c + pos + head + self.layers * (4 * c * c + mlp + 4 * c + qk) + 2 * c
    }
}

/// The whole model.
pub struct Gpt {
    /// Its shape.
    pub cfg: GptConfig,
    /// Token embedding [256, width], also the output projection unless `untied`.
    pub wte: Embedding,
    /// Learned position embedding [context, width] (None with rotary positions).
    pub wpe: Option<Param>,
    /// Rotary tables (with `rope`).
    pub rotary: Option<Rotary>,
    /// The output projection [width, 256] (with `untied`).
    pub head: Option<Linear>,
    /// The residual blocks.
    pub blocks: Vec<Block>,
    /// The final norm.
    pub ln_f: LayerNorm,
}

impl Gpt {
    /// A fresh model: weights N(0, 0.02), the two projections that write into the residual stream
    /// scaled by 1/√(2·layers) so the stream's variance does not grow with depth; norms γ = 1, β = 0.
    pub fn new(dev: &Device, cfg: GptConfig, seed: u64) -> Result<Gpt> {
        cfg.validate()?;
        let mut rng = RngState::new(seed);
        let c = cfg.width;
        let resid_std = INIT_STD / ((2 * cfg.layers) as f32).sqrt();
        let wte = Embedding::new(dev, &mut rng, "wte", VOCAB, c, Init::Normal(INIT_STD))?;
        let (wpe, rotary) = if cfg.rope {
            (None, Some(Rotary::new(dev, cfg.context, c / cfg.heads)?))
        } else {
            (Some(Init::Normal(INIT_STD).param(dev, &mut rng, "wpe", &[cfg.context, c])?), None)
        };
        let blocks = (0..cfg.layers).map(|i| Block::new(dev, &mut rng, i, &cfg, resid_std)).collect::<Result<_>>()?;
        let ln_f = LayerNorm::new(dev, "ln_f", c, LN_EPS)?;
        let head = if cfg.untied {
            Some(Linear::named(dev, &mut rng, "lm_head".into(), None, [c, VOCAB], Init::Normal(INIT_STD))?)
        } else {
            None
        };
        Ok(Gpt { cfg, wte, wpe, rotary, head, blocks, ln_f })
    }

    /// The model a checkpoint holds (its config and weights).
    pub fn load(dev: &Device, ck: &Checkpoint, needed_by: &str) -> Result<Gpt> {
        ck.expect_kind_for(KIND, needed_by)?;
        let cfg = GptConfig::from_json(ck.config.get("model").unwrap_or(&Value::Null))
            .map_err(|e| Error::Checkpoint { path: source(ck), msg: format!("bad model config: {e}") })?;
        let m = Gpt::new(dev, cfg, 0)?;
        for p in m.params() {
            ck.restore_into(dev, &p.name, &p.tensor)?;
        }
        Ok(m)
    }

    /// Every parameter, named as in checkpoints.
    pub fn params(&self) -> Vec<Param> {
        let mut out = vec![self.wte.table.clone()];
        out.extend(self.wpe.clone());
        for b in &self.blocks {
            out.extend(b.params());
        }
        out.extend(self.ln_f.params());
        if let Some(h) = &self.head {
            out.extend(h.params());
        }
        out
    }

    /// Logits [B·T, 256] for token ids [B, T] (T ≤ context). `step` (the optimizer's step counter)
    /// turns dropout on: each step draws a fresh mask. None: no dropout (evaluation, sampling).
    pub fn forward(&self, g: &mut Graph, ids: NodeId, step: Option<&Tensor>) -> Result<NodeId> {
        let (b, t) = match g.shape(ids) {
            &[b, t] if t <= self.cfg.context => (b, t),
            s => {
                return Err(Error::invalid(
                    "gpt",
                    format!("token ids must be [B, T] with T <= context {}, got {s:?}", self.cfg.context),
                ))
            }
        };
        let drop = ResidDropout { p: self.cfg.dropout, step };

        // Embeddings: x = wte[ids] + wpe[0..T] (rotary positions: x = wte[ids]), as [B·T, C].
        let mut x = self.wte.forward(g, ids)?;
        if let Some(wpe) = &self.wpe {
            let wpe = g.param(&wpe.tensor);
            let pos = g.slice(wpe, 0, 0, t)?;
            x = g.add(x, pos)?;
        }
        let mut x = g.reshape(x, &[b * t, self.cfg.width])?;

        // Each block returns the stream and the next norm's output of it (the last one: the final norm's).
        let first = self.blocks.first().map_or(&self.ln_f, |b| &b.ln1);
        let mut h = first.forward(g, x)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let next = self.blocks.get(i + 1).map_or(&self.ln_f, |b| &b.ln1);
            (x, h) = blk.forward(g, (x, h), (b, t), (i, self.rotary.as_ref()), &drop, next)?;
        }

        // Output projection: logits = LN(x) · Wteᵀ (tied), or LN(x) · W_head.
        if let Some(head) = &self.head {
            return head.forward(g, h);
        }
        let wte = g.param(&self.wte.table.tensor);
        let (h, wte) = (g.operand(h)?, g.operand(wte)?);
        g.matmul(h, wte, MatmulOpts { trans_b: true, ..MatmulOpts::default() })
    }
}

/// Where a checkpoint came from, for error messages.
fn source(ck: &Checkpoint) -> String {
    ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into())
}
