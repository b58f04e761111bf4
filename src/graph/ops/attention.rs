//! Fused multi-head self-attention of a packed qkv: the forward keeps each row's logsumexp, and the
//! backward recomputes the attention from it (never storing the T×T weights).

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::attention as eager;
use crate::tensor::DType;

impl Graph {
    /// Causal (or full) multi-head self-attention of `qkv` [B, T, 3·C], each token's row holding its
    /// query, key and value, head h in columns h·D..(h+1)·D of each third (D = C / heads): [B, T, C].
    pub fn attention(&mut self, qkv: NodeId, heads: usize, causal: bool) -> Result<NodeId> {
        self.f32_in("attention", qkv)?;
        let s = self.shape(qkv).to_vec();
        if s.len() != 3 || heads == 0 || s[2] == 0 || !s[2].is_multiple_of(3 * heads) {
            return Err(Error::invalid(
                "attention",
                format!("qkv must be [B, T, 3·C] with C divisible by heads = {heads}, got {s:?}"),
            ));
        }
        Ok(self.push(Attention { heads, causal }, &[qkv], vec![s[0], s[1], s[2] / 3], DType::F32))
    }
}

/// qkv [B, T, 3·C] → out [B, T, C]; keeps the row logsumexp as a second output.
#[derive(Debug)]
struct Attention {
    heads: usize,
    causal: bool,
}

impl OpDef for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (out, lse) = eager::attention(f.dev, f.x[0], self.heads, self.causal)?;
        Ok((out, vec![lse]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let op = AttentionBackward { heads: self.heads, causal: self.causal };
        Ok(vec![Some(g.push(op, &[g.in_node(id, 0), id, gy], g.in_shape(id, 0), DType::F32))])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(attention_f64(x[0], self.heads, self.causal))
    }
}

/// Inputs [qkv, the Attention node, dout]: dqkv (recomputes the attention). Not differentiated again.
#[derive(Debug)]
struct AttentionBackward {
    heads: usize,
    causal: bool,
}

impl OpDef for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let lse = &f.aux[1][0];
        single(eager::attention_backward(f.dev, f.x[0], f.x[1], lse, f.x[2], self.heads, self.causal)?)
    }
    fn f16_inputs(&self) -> &'static [usize] {
        // qkv and the output, as a mixed-precision plan keeps them for the backward.
        &[0, 1]
    }
    fn second_outputs_read(&self, k: usize) -> Option<Vec<usize>> {
        // The attention's row logsumexp; not those of qkv's node (a QK norm's statistics).
        Some(if k == 1 { vec![0] } else { vec![] })
    }
}

/// Multi-head self-attention of a packed qkv [B, T, 3·C], unfused: scores, mask, softmax, weighted sum.
fn attention_f64(qkv: &Value, heads: usize, causal: bool) -> Value {
    let (b, t, c3) = (qkv.shape[0], qkv.shape[1], qkv.shape[2]);
    let c = c3 / 3;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let at =
        |bi: usize, ti: usize, part: usize, h: usize, k: usize| qkv.data[(bi * t + ti) * c3 + part * c + h * d + k];
    let mut data = vec![0.0; b * t * c];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..t {
                let n = if causal { i + 1 } else { t };
                let s: Vec<f64> = (0..n)
                    .map(|j| (0..d).map(|k| at(bi, i, 0, h, k) * at(bi, j, 1, h, k)).sum::<f64>() * scale)
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for k in 0..d {
                    data[(bi * t + i) * c + h * d + k] = (0..n).map(|j| e[j] / z * at(bi, j, 2, h, k)).sum();
                }
            }
        }
    }
    Value { shape: vec![b, t, c], data }
}
