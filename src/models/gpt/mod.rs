//! A byte-level GPT: a decoder-only transformer language model, read top to bottom.
//!
//! tokens ──► token embedding + position embedding
//!        ──► L × [ x += attention(LN(x)) ; x += MLP(LN(x)) ]      (pre-norm residual blocks)
//!        ──► LN ──► logits = h · Wteᵀ                             (output weights tied to the input embedding)
//!
//! Attention is one fused kernel over a packed q|k|v projection (no T×T matrix in memory); the MLP is
//! width → 4·width → width with GELU. Matrices carry no bias (the layer norms hold the only offsets),
//! which saves a pass per layer at no cost in quality. Activations stay rank 2, [B·T, width], so every
//! weight gradient is one matmul over the whole batch.
//!
//! Beside the model: `train` (`GptTrainer`, a step that draws its own batch on the device), `eval`
//! (`Evaluator`, bits per character over held-out text) and `sample` (`Sampler`, text from a prompt).

mod eval;
mod sample;
mod train;

pub use eval::Evaluator;
pub use sample::{pick, SampleSettings, Sampler, MAX_TOKENS};
pub use train::{GptTrainer, TrainSettings};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::data::text::VOCAB;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Param};
use crate::ops::dropout::{self, Dropout};
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
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid("gpt config", format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        // Checked before anything is built: a huge --layers or --width must not reach the allocator.
        let (l, c, t) = (self.layers as u64, self.width as u64, self.context as u64);
        let params = (|| {
            let block = c.checked_mul(c)?.checked_mul(12)?.checked_add(c.checked_mul(4)?)?;
            l.checked_mul(block)?.checked_add((VOCAB as u64 + t + 2).checked_mul(c)?)
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

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let c = self.width;
        VOCAB * c + self.context * c + self.layers * (12 * c * c + 4 * c) + 2 * c
    }
}

/// Dropout on the residual branches while training (`step` is the optimizer's step counter, so each
/// step draws a fresh mask); the identity when evaluating or sampling.
struct ResidDropout<'a> {
    p: f32,
    step: Option<&'a Tensor>,
}

impl ResidDropout<'_> {
    /// Site k (1, 2, ... through the model) has its own mask stream.
    fn apply(&self, g: &mut Graph, x: NodeId, site: u64) -> Result<NodeId> {
        let Some(step) = self.step else { return Ok(x) };
        let stride = dropout::stride_for(g.shape(x).iter().product())?;
        let d = Dropout { p: self.p, seed: 0x6770_7400 ^ site, offset: 0, stride };
        g.dropout(x, d, step)
    }
}

/// Causal multi-head self-attention over a packed q|k|v projection.
pub struct Attention {
    /// [width, 3·width]: q | k | v.
    pub qkv: Linear,
    /// [width, width], writes into the residual stream.
    pub proj: Linear,
    /// Heads.
    pub heads: usize,
}

impl Attention {
    fn new(dev: &Device, rng: &mut RngState, name: &str, cfg: &GptConfig, resid_std: f32) -> Result<Attention> {
        let c = cfg.width;
        Ok(Attention {
            qkv: Linear::named(dev, rng, format!("{name}.qkv"), None, [c, 3 * c], Init::Normal(INIT_STD))?,
            proj: Linear::named(dev, rng, format!("{name}.proj"), None, [c, c], Init::Normal(resid_std))?,
            heads: cfg.heads,
        })
    }

    /// x [B·T, C] → proj(attention(q, k, v)) [B·T, C], for sequences of length `t`.
    pub fn forward(&self, g: &mut Graph, x: NodeId, b: usize, t: usize) -> Result<NodeId> {
        let c = g.shape(x)[1];
        let qkv = self.qkv.forward(g, x)?;
        let qkv = g.reshape(qkv, &[b, t, 3 * c])?;
        let a = g.attention(qkv, self.heads, true)?;
        let a = g.reshape(a, &[b * t, c])?;
        self.proj.forward(g, a)
    }
}

/// The feed-forward part of a block: width → 4·width → GELU → width.
pub struct Mlp {
    /// [width, 4·width].
    pub fc: Linear,
    /// [4·width, width], writes into the residual stream.
    pub out: Linear,
}

impl Mlp {
    fn new(dev: &Device, rng: &mut RngState, name: &str, c: usize, resid_std: f32) -> Result<Mlp> {
        Ok(Mlp {
            fc: Linear::named(dev, rng, format!("{name}.fc"), None, [c, 4 * c], Init::Normal(INIT_STD))?,
            out: Linear::named(dev, rng, format!("{name}.out"), None, [4 * c, c], Init::Normal(resid_std))?,
        })
    }

    /// out(gelu(fc(x))).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let u = self.fc.forward(g, x)?;
        let u = Activation::Gelu.forward(g, u)?;
        self.out.forward(g, u)
    }
}

/// One pre-norm residual block: x += attn(LN(x)); x += mlp(LN(x)).
pub struct Block {
    /// Norm before attention.
    pub ln1: LayerNorm,
    /// Self-attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub ln2: LayerNorm,
    /// Feed-forward.
    pub mlp: Mlp,
}

impl Block {
    /// Block `i`, its parameters named `h.{i}.*`.
    fn new(dev: &Device, rng: &mut RngState, i: usize, cfg: &GptConfig, resid_std: f32) -> Result<Block> {
        let c = cfg.width;
        Ok(Block {
            ln1: LayerNorm::new(dev, &format!("h.{i}.ln1"), c, LN_EPS)?,
            attn: Attention::new(dev, rng, &format!("h.{i}.attn"), cfg, resid_std)?,
            ln2: LayerNorm::new(dev, &format!("h.{i}.ln2"), c, LN_EPS)?,
            mlp: Mlp::new(dev, rng, &format!("h.{i}.mlp"), c, resid_std)?,
        })
    }

    /// x [B·T, C] through the block; block `i` uses dropout sites 2i+1 and 2i+2.
    fn forward(
        &self,
        g: &mut Graph,
        x: NodeId,
        (b, t): (usize, usize),
        i: usize,
        drop: &ResidDropout,
    ) -> Result<NodeId> {
        let h = self.ln1.forward(g, x)?;
        let a = self.attn.forward(g, h, b, t)?;
        let a = drop.apply(g, a, 2 * i as u64 + 1)?;
        let x = g.add(x, a)?;
        let h = self.ln2.forward(g, x)?;
        let m = self.mlp.forward(g, h)?;
        let m = drop.apply(g, m, 2 * i as u64 + 2)?;
        g.add(x, m)
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.ln1.params();
        v.extend(self.attn.qkv.params());
        v.extend(self.attn.proj.params());
        v.extend(self.ln2.params());
        v.extend(self.mlp.fc.params());
        v.extend(self.mlp.out.params());
        v
    }
}

/// The whole model.
pub struct Gpt {
    /// Its shape.
    pub cfg: GptConfig,
    /// Token embedding [256, width], also the output projection.
    pub wte: Embedding,
    /// Position embedding [context, width].
    pub wpe: Param,
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
        let wpe = Init::Normal(INIT_STD).param(dev, &mut rng, "wpe", &[cfg.context, c])?;
        let blocks = (0..cfg.layers).map(|i| Block::new(dev, &mut rng, i, &cfg, resid_std)).collect::<Result<_>>()?;
        let ln_f = LayerNorm::new(dev, "ln_f", c, LN_EPS)?;
        Ok(Gpt { cfg, wte, wpe, blocks, ln_f })
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
        let mut out = vec![self.wte.table.clone(), self.wpe.clone()];
        for b in &self.blocks {
            out.extend(b.params());
        }
        out.extend(self.ln_f.params());
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

        // Embeddings: x = wte[ids] + wpe[0..T], as [B·T, C].
        let tok = self.wte.forward(g, ids)?;
        let wpe = g.param(&self.wpe.tensor);
        let pos = g.slice(wpe, 0, 0, t)?;
        let x = g.add(tok, pos)?;
        let mut x = g.reshape(x, &[b * t, self.cfg.width])?;

        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(g, x, (b, t), i, &drop)?;
        }

        // Tied output projection: logits = LN(x) · Wteᵀ.
        let h = self.ln_f.forward(g, x)?;
        let wte = g.param(&self.wte.table.tensor);
        g.matmul(h, wte, MatmulOpts { trans_b: true, ..MatmulOpts::default() })
    }
}

/// Where a checkpoint came from, for error messages.
fn source(ck: &Checkpoint) -> String {
    ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into())
}
