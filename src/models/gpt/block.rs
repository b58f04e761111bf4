//! One transformer block and its two halves: causal self-attention (optionally with QK normalisation and
//! rotary positions) and the feed-forward MLP (GELU, or gated SiLU: SwiGLU).

use super::{GptConfig, INIT_STD, LN_EPS};
use crate::device::Device;
use crate::error::Result;
use crate::graph::{Graph, NodeId, Precision};
use crate::nn::{Activation, Init, LayerNorm, Linear, Param};
use crate::ops::dropout::{self, Dropout};
use crate::ops::rng::RngState;
use crate::tensor::Tensor;

/// Base of the rotary angles: pair j of a head turns by position · ROPE_BASE^(−2j/head size).
const ROPE_BASE: f64 = 10_000.0;

/// Dropout on the residual branches while training (`step` is the optimizer's step counter, so each
/// step draws a fresh mask); the identity when evaluating or sampling.
pub(super) struct ResidDropout<'a> {
    pub(super) p: f32,
    pub(super) step: Option<&'a Tensor>,
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

/// The rotary angle table [context, head size / 2, 2] of (cos, sin): a constant of the model, not a
/// parameter.
pub struct Rotary {
    /// The table (`ops::rope::rope_table`).
    pub table: Tensor,
}

impl Rotary {
    /// The table for `context` positions and heads of `head_dim` values (even).
    pub fn new(dev: &Device, context: usize, head_dim: usize) -> Result<Rotary> {
        let v = crate::ops::rope::rope_table(context, head_dim, ROPE_BASE);
        Ok(Rotary { table: Tensor::from_f32(dev, &[context, head_dim / 2, 2], &v)? })
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
    /// Layer norms of q and of k over each head's values (`qk_norm`), shared by the heads.
    pub qk_norm: Option<(LayerNorm, LayerNorm)>,
}

impl Attention {
    fn new(dev: &Device, rng: &mut RngState, name: &str, cfg: &GptConfig, resid_std: f32) -> Result<Attention> {
        let c = cfg.width;
        let hd = c / cfg.heads;
        let qk_norm = if cfg.qk_norm {
            Some((
                LayerNorm::new(dev, &format!("{name}.q_ln"), hd, LN_EPS)?,
                LayerNorm::new(dev, &format!("{name}.k_ln"), hd, LN_EPS)?,
            ))
        } else {
            None
        };
        Ok(Attention {
            qkv: Linear::named(dev, rng, format!("{name}.qkv"), None, [c, 3 * c], Init::Normal(INIT_STD))?,
            proj: Linear::named(dev, rng, format!("{name}.proj"), None, [c, c], Init::Normal(resid_std))?,
            heads: cfg.heads,
            qk_norm,
        })
    }

    /// x [B·T, C] → proj(attention(q, k, v)) [B·T, C], for sequences of length `t`. QK norm and rotary
    /// positions run as one fused op on the packed projection (`Graph::qk_norm`): the same numbers as
    /// slicing q and k out, normalising each head, concatenating and rotating, in one dispatch.
    pub fn forward(&self, g: &mut Graph, x: NodeId, b: usize, t: usize, rope: Option<&Rotary>) -> Result<NodeId> {
        let c = g.shape(x)[1];
        let qkv = self.qkv.forward(g, x)?;
        let mut qkv = g.reshape(qkv, &[b, t, 3 * c])?;
        let table = rope.map(|r| g.constant(&r.table));
        match (&self.qk_norm, table) {
            (Some((qn, kn)), table) => {
                let p = |g: &mut Graph, n: &LayerNorm| (g.param(&n.gamma.tensor), g.param(&n.beta.tensor));
                let ((gq, bq), (gk, bk)) = (p(g, qn), p(g, kn));
                qkv = g.qk_norm(qkv, [gq, bq, gk, bk], table, self.heads, qn.eps)?;
            }
            (None, Some(table)) => qkv = g.rope(qkv, table, self.heads)?,
            (None, None) => {}
        }
        let a = g.attention(qkv, self.heads, true)?;
        let a = g.reshape(a, &[b * t, c])?;
        // The attention's backward keeps its f32 output: an f16 copy for the projection would add memory.
        self.proj.forward_keep_input(g, a)
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.qkv.params();
        if let Some((q, k)) = &self.qk_norm {
            v.extend(q.params());
            v.extend(k.params());
        }
        v.extend(self.proj.params());
        v
    }
}

/// The feed-forward part of a block: width → hidden → GELU → width, or with `gated_mlp`
/// width → (SiLU(x·W_fc) ⊙ x·W_up) → width (SwiGLU).
pub struct Mlp {
    /// [width, hidden].
    pub fc: Linear,
    /// [width, hidden], the gated MLP's second input projection.
    pub up: Option<Linear>,
    /// [hidden, width], writes into the residual stream.
    pub out: Linear,
}

impl Mlp {
    fn new(dev: &Device, rng: &mut RngState, name: &str, cfg: &GptConfig, resid_std: f32) -> Result<Mlp> {
        let (c, h) = (cfg.width, cfg.hidden());
        let lin = |rng: &mut RngState, n: &str, shape, std| {
            Linear::named(dev, rng, format!("{name}.{n}"), None, shape, Init::Normal(std))
        };
        let fc = lin(rng, "fc", [c, h], INIT_STD)?;
        let up = if cfg.gated_mlp { Some(lin(rng, "up", [c, h], INIT_STD)?) } else { None };
        Ok(Mlp { fc, up, out: lin(rng, "out", [h, c], resid_std)? })
    }

    /// out(gelu(fc(x))), or out(silu(fc(x)) ⊙ up(x)).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let u = match &self.up {
            None => {
                let u = self.fc.forward(g, x)?;
                Activation::Gelu.forward(g, u)?
            }
            Some(up) if self.fc.b.is_none() && up.b.is_none() && g.precision == Precision::F32 => {
                // Both projections and silu(u) ⊙ v in one dispatch: the numbers of two matmuls and the gate.
                // (Its kernel reads f32 operands; under mixed precision the projections read f16 ones.)
                let s = g.shape(x).to_vec();
                let (c, rows) = (s[s.len() - 1], s[..s.len() - 1].iter().product::<usize>());
                let x2 = g.reshape(x, &[rows, c])?;
                let (wg, wu) = (g.param(&self.fc.w.tensor), g.param(&up.w.tensor));
                let h = g.linear_silu_gate(x2, wg, wu)?;
                let mut out = s;
                *out.last_mut().expect("rank checked by reshape") = up.w.tensor.shape[1];
                g.reshape(h, &out)?
            }
            Some(up) => {
                // silu(u) ⊙ v fused: the numbers of the activation then the product, one dispatch.
                let u = self.fc.forward(g, x)?;
                let v = up.forward(g, x)?;
                g.silu_gate(u, v)?
            }
        };
        self.out.forward(g, u)
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.fc.params();
        if let Some(up) = &self.up {
            v.extend(up.params());
        }
        v.extend(self.out.params());
        v
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
    pub(super) fn new(dev: &Device, rng: &mut RngState, i: usize, cfg: &GptConfig, resid_std: f32) -> Result<Block> {
        let c = cfg.width;
        Ok(Block {
            ln1: LayerNorm::new(dev, &format!("h.{i}.ln1"), c, LN_EPS)?,
            attn: Attention::new(dev, rng, &format!("h.{i}.attn"), cfg, resid_std)?,
            ln2: LayerNorm::new(dev, &format!("h.{i}.ln2"), c, LN_EPS)?,
            mlp: Mlp::new(dev, rng, &format!("h.{i}.mlp"), cfg, resid_std)?,
        })
    }

    /// The residual stream x [B·T, C] and h = LN1(x) through the block: x += attn(h); x += mlp(LN2(x)).
    /// Returns x and `next`(x), `next` being the norm that reads the stream after the block (the next
    /// block's LN1, or the final norm): each residual add runs fused with the norm that reads its sum
    /// (`Graph::add_layer_norm`). Block `i` uses dropout sites 2i+1 and 2i+2.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        g: &mut Graph,
        (x, h): (NodeId, NodeId),
        (b, t): (usize, usize),
        (i, rope): (usize, Option<&Rotary>),
        drop: &ResidDropout,
        next: &LayerNorm,
    ) -> Result<(NodeId, NodeId)> {
        let a = self.attn.forward(g, h, b, t, rope)?;
        let a = drop.apply(g, a, 2 * i as u64 + 1)?;
        let (x, h) = add_norm(g, &self.ln2, x, a)?;
        let m = self.mlp.forward(g, h)?;
        let m = drop.apply(g, m, 2 * i as u64 + 2)?;
        add_norm(g, next, x, m)
    }

    /// The block's parameters, in checkpoint order (the old model's order when no option is on).
    pub(super) fn params(&self) -> Vec<Param> {
        let mut v = self.ln1.params();
        v.extend(self.attn.params());
        v.extend(self.ln2.params());
        v.extend(self.mlp.params());
        v
    }
}

/// (x + a, norm(x + a)) in one fused op.
pub(super) fn add_norm(g: &mut Graph, norm: &LayerNorm, x: NodeId, a: NodeId) -> Result<(NodeId, NodeId)> {
    let (gamma, beta) = (g.param(&norm.gamma.tensor), g.param(&norm.beta.tensor));
    g.add_layer_norm(x, a, gamma, beta, norm.eps)
}
