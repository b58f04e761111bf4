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
//! Below the model: `GptTrainer` (a training step that draws its own batch on the device), `Evaluator`
//! (bits per character over held-out text) and `Sampler` (text from a prompt).

use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::data::text::{Corpus, VOCAB};
use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::nn::Param;
use crate::ops::dropout::{self, Dropout};
use crate::ops::elementwise::Unary;
use crate::ops::matmul::MatmulOpts;
use crate::ops::{batch, layout, rng::RngState};
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::{DType, Tensor};
use crate::train::{TrainConfig, Trainer};

/// Checkpoint kind of this model.
pub const KIND: &str = "gpt";
const LN_EPS: f32 = 1e-5;
/// Largest head size the fused attention kernel takes.
pub const MAX_HEAD_DIM: usize = 128;

/// The shape of the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptConfig {
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    /// Tokens of context (the longest sequence; also the training window).
    pub context: usize,
    /// Dropout after attention and after the MLP, training only.
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
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({"vocab": VOCAB, "layers": self.layers, "heads": self.heads, "width": self.width,
               "context": self.context, "dropout": self.dropout})
    }

    pub fn from_json(v: &Value) -> Result<GptConfig> {
        let get = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| Error::invalid("gpt config", format!("missing or invalid field `{k}` in {v}")))
        };
        if get("vocab")? != VOCAB {
            return Err(Error::invalid("gpt config", format!("vocab must be {VOCAB} (bytes), got {}", v["vocab"])));
        }
        let cfg = GptConfig {
            layers: get("layers")?,
            heads: get("heads")?,
            width: get("width")?,
            context: get("context")?,
            dropout: v.get("dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let c = self.width;
        VOCAB * c + self.context * c + self.layers * (12 * c * c + 4 * c) + 2 * c
    }
}

/// One pre-norm block's weights.
pub struct Block {
    pub ln1: [Param; 2],
    /// [width, 3·width]: q | k | v.
    pub qkv: Param,
    pub proj: Param,
    pub ln2: [Param; 2],
    pub fc: Param,
    pub out: Param,
}

pub struct Gpt {
    pub cfg: GptConfig,
    /// [256, width], also the output projection.
    pub wte: Param,
    /// [context, width].
    pub wpe: Param,
    pub blocks: Vec<Block>,
    pub ln_f: [Param; 2],
}

impl Gpt {
    /// A fresh model: weights N(0, 0.02), the two projections that write into the residual stream
    /// scaled by 1/√(2·layers) so the stream's variance does not grow with depth; norms γ = 1, β = 0.
    pub fn new(dev: &Device, cfg: GptConfig, seed: u64) -> Result<Gpt> {
        cfg.validate()?;
        let mut rng = RngState::new(seed);
        let c = cfg.width;
        let resid = 0.02 / ((2 * cfg.layers) as f32).sqrt();
        let mut normal = |name: String, shape: &[usize], std: f32| -> Result<Param> {
            Ok(Param { name, tensor: rng.normal(dev, shape, 0.0, std)? })
        };
        let wte = normal("wte".into(), &[VOCAB, c], 0.02)?;
        let wpe = normal("wpe".into(), &[cfg.context, c], 0.02)?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            blocks.push(Block {
                ln1: norm_params(dev, &format!("h.{i}.ln1"), c)?,
                qkv: normal(format!("h.{i}.attn.qkv"), &[c, 3 * c], 0.02)?,
                proj: normal(format!("h.{i}.attn.proj"), &[c, c], resid)?,
                ln2: norm_params(dev, &format!("h.{i}.ln2"), c)?,
                fc: normal(format!("h.{i}.mlp.fc"), &[c, 4 * c], 0.02)?,
                out: normal(format!("h.{i}.mlp.out"), &[4 * c, c], resid)?,
            });
        }
        let ln_f = norm_params(dev, "ln_f", c)?;
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
        let mut out = vec![self.wte.clone(), self.wpe.clone()];
        for b in &self.blocks {
            out.extend(b.ln1.iter().cloned());
            out.extend([b.qkv.clone(), b.proj.clone()]);
            out.extend(b.ln2.iter().cloned());
            out.extend([b.fc.clone(), b.out.clone()]);
        }
        out.extend(self.ln_f.iter().cloned());
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
        let (c, n) = (self.cfg.width, b * t);
        let mm = MatmulOpts::default();
        let p = |g: &mut Graph, p: &Param| g.param(&p.tensor);
        let mut drop_site = 0u64;
        let mut dropout = |g: &mut Graph, x: NodeId| -> Result<NodeId> {
            let Some(step) = step else { return Ok(x) };
            drop_site += 1;
            let stride = dropout::stride_for(g.shape(x).iter().product())?;
            let d = Dropout { p: self.cfg.dropout, seed: 0x6770_7400 ^ drop_site, offset: 0, stride };
            g.dropout(x, d, step)
        };

        // Embeddings: x = wte[ids] + wpe[0..T].
        let wte = p(g, &self.wte);
        let tok = g.embedding(ids, wte)?;
        let wpe = p(g, &self.wpe);
        let pos = g.slice(wpe, 0, 0, t)?;
        let x = g.add(tok, pos)?;
        let mut x = g.reshape(x, &[n, c])?;

        for blk in &self.blocks {
            // x += proj(attention(LN(x)))
            let h = layer_norm(g, x, &blk.ln1)?;
            let w = p(g, &blk.qkv);
            let qkv = g.matmul(h, w, mm)?;
            let qkv = g.reshape(qkv, &[b, t, 3 * c])?;
            let a = g.attention(qkv, self.cfg.heads, true)?;
            let a = g.reshape(a, &[n, c])?;
            let w = p(g, &blk.proj);
            let a = g.matmul(a, w, mm)?;
            let a = dropout(g, a)?;
            x = g.add(x, a)?;
            // x += out(gelu(fc(LN(x))))
            let h = layer_norm(g, x, &blk.ln2)?;
            let w = p(g, &blk.fc);
            let u = g.matmul(h, w, mm)?;
            let u = g.unary(Unary::Gelu, u)?;
            let w = p(g, &blk.out);
            let m = g.matmul(u, w, mm)?;
            let m = dropout(g, m)?;
            x = g.add(x, m)?;
        }

        let h = layer_norm(g, x, &self.ln_f)?;
        g.matmul(h, wte, MatmulOpts { trans_b: true, ..mm })
    }
}

fn norm_params(dev: &Device, name: &str, c: usize) -> Result<[Param; 2]> {
    Ok([
        Param { name: format!("{name}.gamma"), tensor: layout::fill(dev, &[c], 1.0)? },
        Param { name: format!("{name}.beta"), tensor: layout::fill(dev, &[c], 0.0)? },
    ])
}

fn layer_norm(g: &mut Graph, x: NodeId, p: &[Param; 2]) -> Result<NodeId> {
    let (gamma, beta) = (g.param(&p[0].tensor), g.param(&p[1].tensor));
    g.layer_norm(x, gamma, beta, LN_EPS)
}

fn source(ck: &Checkpoint) -> String {
    ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into())
}

/// nats → bits.
pub const BITS_PER_NAT: f64 = std::f64::consts::LOG2_E;

// ---------------------------------------------------------------------------------------------------
// Training

/// How to train.
#[derive(Clone, Copy, Debug)]
pub struct TrainSettings {
    pub batch: usize,
    /// Peak learning rate (AdamW), reached after `warmup` steps, then a cosine decay to `lr·min_lr_frac`
    /// at the last step.
    pub lr: f32,
    pub min_lr_frac: f32,
    pub warmup: u32,
    /// Steps of this run.
    pub steps: u32,
    pub weight_decay: f32,
    pub clip: f32,
    /// Seed of the initial weights and of the training windows.
    pub seed: u64,
}

impl TrainSettings {
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::invalid("gpt train", m));
        if self.batch == 0 {
            return err(format!("--batch must be a positive integer, got {}", self.batch));
        }
        if self.steps == 0 {
            return err(format!("--steps must be a positive integer, got {}", self.steps));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err(format!("--lr must be a positive number, got {}", self.lr));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({"batch": self.batch, "lr": self.lr, "min_lr_frac": self.min_lr_frac, "warmup": self.warmup,
               "steps": self.steps, "weight_decay": self.weight_decay, "clip": self.clip, "seed": self.seed})
    }
}

/// A recorded training step that draws its batch on the device: the corpus lives there (4 bytes per
/// word), `text_windows` picks B random windows of the training part from the step counter, then the
/// forward, backward and AdamW update run. One submission per step, nothing from the host.
pub struct GptTrainer {
    pub model: Gpt,
    trainer: Trainer,
    /// The optimizer step this run started at (0, or the step of the checkpoint it resumed).
    pub start_step: u32,
    pub settings: TrainSettings,
    pub tokens_per_step: usize,
}

impl GptTrainer {
    /// Builds the step for `model` on `corpus`. `start_step` > 0 (a resumed run) makes the learning rate
    /// decay from `lr` over this run's steps without a second warmup; call `restore` before stepping.
    pub fn new(dev: &Device, model: Gpt, corpus: &Corpus, s: TrainSettings, start_step: u32) -> Result<GptTrainer> {
        s.validate()?;
        corpus.check_context(model.cfg.context)?;
        let (b, t) = (s.batch, model.cfg.context);
        let ((train_start, train_len), _) = corpus.split();
        let words = batch::pack_bytes(&corpus.bytes);
        let corpus_buf = Tensor::from_u32(dev, &[words.len()], &words)?;
        let x = Tensor::empty(dev, &[b, t], DType::U32)?;
        let y = Tensor::empty(dev, &[b * t], DType::U32)?;
        let step = crate::ops::optim::step_counter(dev, start_step)?;

        let mut g = Graph::new();
        let ids = g.input(&x);
        let targets = g.input(&y);
        let logits = model.forward(&mut g, ids, (model.cfg.dropout > 0.0).then_some(&step))?;
        let loss = g.cross_entropy_mean(logits, targets)?;

        let total = start_step + s.steps;
        let warmup = if start_step == 0 { s.warmup.min(s.steps) } else { start_step };
        let schedule = Schedule::Cosine { lr: s.lr, warmup, total, min_lr: s.lr * s.min_lr_frac };
        let cfg = TrainConfig {
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: s.weight_decay },
            schedule,
            clip: (s.clip > 0.0).then_some(s.clip),
            ema: None,
        };
        let seed = s.seed;
        let (xs, ys, step_c, cb) = (x.clone(), y.reshape(&[b, t])?, step.clone(), corpus_buf.clone());
        let trainer = Trainer::with_prologue(dev, g, loss, model.params(), cfg, step, move || {
            batch::text_windows_into(dev, &cb, train_start as u64, train_len as u64, seed, &step_c, &xs, &ys)
        })?;
        Ok(GptTrainer { model, trainer, start_step, settings: s, tokens_per_step: b * t })
    }

    pub fn step(&self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    /// The latest step's mean loss in nats (asynchronous read).
    pub fn read_loss(&self, dev: &Device) -> Result<Download> {
        self.trainer.read_loss(dev)
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Restores weights, optimizer state and step counter.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train gpt --resume`")?;
        self.trainer.restore(dev, ck)
    }

    /// Saves everything needed to sample, evaluate or resume, atomically.
    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let config = json!({"model": self.model.cfg.to_json(), "train": self.settings.to_json(), "data": data});
        self.trainer.save(dev, path, KIND, config, json!({"seed": self.settings.seed}))
    }
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

/// Bits per character of a model over a byte range: non-overlapping windows of `context` bytes, each
/// predicting its next bytes, so every byte after the first is scored once.
pub struct Evaluator {
    plan: Plan,
    ids: Tensor,
    targets: Tensor,
    ce: NodeId,
    batch: usize,
    context: usize,
}

impl Evaluator {
    pub fn new(dev: &Device, model: &Gpt, batch: usize) -> Result<Evaluator> {
        let t = model.cfg.context;
        let ids = Tensor::empty(dev, &[batch, t], DType::U32)?;
        let targets = Tensor::empty(dev, &[batch * t], DType::U32)?;
        let mut g = Graph::new();
        let i = g.input(&ids);
        let tg = g.input(&targets);
        let logits = model.forward(&mut g, i, None)?;
        let ce = g.cross_entropy(logits, tg)?;
        let plan = Plan::build(dev, &g, &[ce], |_| Ok(()))?;
        Ok(Evaluator { plan, ids, targets, ce, batch, context: t })
    }

    /// Mean bits per character over `range` of `corpus`, or over its first `max_windows` windows.
    pub fn bits_per_char(
        &self,
        dev: &Device,
        corpus: &Corpus,
        range: (usize, usize),
        max_windows: Option<usize>,
    ) -> Result<f64> {
        let mut windows = corpus.windows(range, self.context);
        if let Some(m) = max_windows {
            windows.truncate(m.max(1));
        }
        let t = self.context;
        let (mut nats, mut count) = (0.0f64, 0usize);
        for chunk in windows.chunks(self.batch) {
            let mut ids = vec![0u32; self.batch * t];
            let mut tg = vec![0u32; self.batch * t];
            for (r, &(o, n)) in chunk.iter().enumerate() {
                for j in 0..n {
                    ids[r * t + j] = corpus.bytes[o + j] as u32;
                    tg[r * t + j] = corpus.bytes[o + j + 1] as u32;
                }
            }
            dev.write(&self.ids.buf, &ids)?;
            dev.write(&self.targets.buf, &tg)?;
            self.plan.run(dev)?;
            let ce = bytemuck::cast_slice::<u32, f32>(&self.plan.read(dev, self.ce)?.wait()?).to_vec();
            for (r, &(_, n)) in chunk.iter().enumerate() {
                nats += ce[r * t..r * t + n].iter().map(|&v| v as f64).sum::<f64>();
                count += n;
            }
        }
        Ok(nats / count.max(1) as f64 * BITS_PER_NAT)
    }
}

// ---------------------------------------------------------------------------------------------------
// Sampling

/// Generates text: the last `context` bytes in, the next byte's distribution out, one byte at a time.
pub struct Sampler {
    plan: Plan,
    ids: Tensor,
    logits: NodeId,
    context: usize,
}

/// How to pick each next byte.
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    pub tokens: usize,
    /// Logits are divided by it; 0 picks the most likely byte.
    pub temperature: f32,
    /// Keep only the k most likely bytes (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Sampler {
    pub fn new(dev: &Device, model: &Gpt) -> Result<Sampler> {
        let t = model.cfg.context;
        let ids = Tensor::empty(dev, &[1, t], DType::U32)?;
        let mut g = Graph::new();
        let i = g.input(&ids);
        let logits = model.forward(&mut g, i, None)?;
        let plan = Plan::build(dev, &g, &[logits], |_| Ok(()))?;
        Ok(Sampler { plan, ids, logits, context: t })
    }

    /// Continues `prompt` (cut to its last `context` bytes; an empty prompt starts from a newline) by
    /// `s.tokens` bytes, calling `emit` with each as it is drawn.
    pub fn generate(
        &self,
        dev: &Device,
        prompt: &[u8],
        s: SampleSettings,
        mut emit: impl FnMut(u8),
    ) -> Result<Vec<u8>> {
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return Err(Error::invalid("sample", format!("--temperature must be >= 0, got {}", s.temperature)));
        }
        let mut text: Vec<u8> = if prompt.is_empty() { b"\n".to_vec() } else { prompt.to_vec() };
        let mut out = Vec::with_capacity(s.tokens);
        let t = self.context;
        for i in 0..s.tokens {
            let window = &text[text.len().saturating_sub(t)..];
            // Positions after the window hold zeros; causal attention keeps them from the last real one.
            let mut ids = vec![0u32; t];
            for (d, &b) in ids.iter_mut().zip(window) {
                *d = b as u32;
            }
            dev.write(&self.ids.buf, &ids)?;
            self.plan.run(dev)?;
            let all = self.plan.read(dev, self.logits)?.wait()?;
            let row = &bytemuck::cast_slice::<u32, f32>(&all)[(window.len() - 1) * VOCAB..][..VOCAB];
            let u = crate::host::philox::uniform_at(
                crate::host::philox::split64(s.seed),
                crate::host::philox::split64(i as u64),
                0,
            );
            let byte = pick(row, s.temperature, s.top_k, u);
            emit(byte);
            out.push(byte);
            text.push(byte);
        }
        Ok(out)
    }
}

/// Draws from softmax(logits / temperature) restricted to the top k, by inverting the CDF at `u`.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, u: f32) -> u8 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if temperature == 0.0 {
        return order[0] as u8;
    }
    let k = if top_k == 0 { logits.len() } else { top_k.min(logits.len()) };
    let top = &order[..k];
    let m = logits[top[0]] as f64;
    let w: Vec<f64> = top.iter().map(|&i| ((logits[i] as f64 - m) / temperature as f64).exp()).collect();
    let z: f64 = w.iter().sum();
    let mut acc = 0.0;
    let target = u as f64 * z;
    for (&i, &wi) in top.iter().zip(&w) {
        acc += wi;
        if target < acc {
            return i as u8;
        }
    }
    top[k - 1] as u8
}
