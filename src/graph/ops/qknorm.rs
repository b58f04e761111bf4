//! QK normalisation, fused: per-head layer norm of q and k on the packed q|k|v projection with rotary
//! positions in the same kernel. The forward keeps each head's mean and rstd for the backward, which
//! gives dqkv with the four norm parameters' gradients as second outputs.

use super::{Fwd, OpDef, Outputs};
use crate::error::Result;
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::qknorm::{self as eager, qk_norm_shapes};
use crate::tensor::DType;

impl Graph {
    /// qkv [B, T, 3C] with each of q's heads (D = C / heads values) layer-normalised with γ_q, β_q [D],
    /// each of k's with γ_k, β_k [D], then q and k rotated by `rope`'s table [context ≥ T, D/2, 2] when
    /// given (as `Graph::rope`); v unchanged. The same numbers as slicing q and k out, `layer_norm` on
    /// [B·T·heads, D] views, concatenating and `rope`, in one dispatch (two backward).
    pub fn qk_norm(
        &mut self,
        qkv: NodeId,
        [gq, bq, gk, bk]: [NodeId; 4],
        rope: Option<NodeId>,
        heads: usize,
        eps: f32,
    ) -> Result<NodeId> {
        for id in [qkv, gq, bq, gk, bk].into_iter().chain(rope) {
            self.f32_in("qk_norm", id)?;
        }
        let (_, _, _, d) = qk_norm_shapes(self.shape(qkv), rope.map(|t| self.shape(t)), heads)?;
        for p in [gq, bq, gk, bk] {
            if self.shape(p) != [d] {
                return Err(crate::error::Error::ShapeMismatch {
                    op: "qk_norm",
                    lhs: self.shape(qkv).to_vec(),
                    rhs: self.shape(p).to_vec(),
                    hint: format!(" (γ and β must be [{d}], the head size)"),
                });
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(crate::error::Error::invalid("qk_norm", format!("eps must be > 0, got {eps}")));
        }
        let inputs: Vec<NodeId> = [qkv, gq, bq, gk, bk].into_iter().chain(rope).collect();
        let def = QkNorm { heads, eps, rope: rope.is_some() };
        Ok(self.push(def, &inputs, self.shape(qkv).to_vec(), DType::F32))
    }
}

/// Inputs [qkv, γ_q, β_q, γ_k, β_k, (table)]; keeps the heads' (mean, rstd) as a second output.
#[derive(Debug)]
struct QkNorm {
    heads: usize,
    eps: f32,
    rope: bool,
}

impl OpDef for QkNorm {
    fn name(&self) -> &'static str {
        "qk_norm"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let x = f.x;
        let table = self.rope.then(|| x[5]);
        let (y, stats) = eager::qk_norm(f.dev, x[0], [x[1], x[2], x[3], x[4]], table, self.heads, self.eps)?;
        Ok((y, vec![stats]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let ins: Vec<NodeId> = (0..if self.rope { 6 } else { 5 }).map(|k| g.in_node(id, k)).collect();
        let mut back = vec![ins[0], ins[1], ins[3], id, gy];
        back.extend(ins.get(5));
        let def = QkNormBackward { heads: self.heads, rope: self.rope };
        let dx = g.push(def, &back, g.in_shape(id, 0), DType::F32);
        let d = g.shape(ins[1]).to_vec();
        let mut out = vec![Some(dx)];
        out.extend((1..=4).map(|k| Some(g.output(dx, k, d.clone()))));
        if self.rope {
            out.push(None);
        }
        Ok(out)
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (t, w) = (shape[1], shape[2]);
        let d = w / 3 / self.heads;
        let mut data = x[0].data.clone();
        for (r, row) in data.chunks_mut(w).enumerate() {
            for s in 0..2 * self.heads {
                let (g, b) = if s < self.heads { (x[1], x[2]) } else { (x[3], x[4]) };
                let h = &mut row[s * d..(s + 1) * d];
                let mean = h.iter().sum::<f64>() / d as f64;
                let var = h.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + self.eps as f64).sqrt();
                for (j, v) in h.iter_mut().enumerate() {
                    *v = (*v - mean) * rstd * g.data[j] + b.data[j];
                }
                if self.rope {
                    let half = d / 2;
                    let pos = r % t;
                    for j in 0..half {
                        let (cs, sn) = (x[5].data[(pos * half + j) * 2], x[5].data[(pos * half + j) * 2 + 1]);
                        let (a, bb) = (h[j], h[j + half]);
                        h[j] = a * cs - bb * sn;
                        h[j + half] = bb * cs + a * sn;
                    }
                }
            }
        }
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Inputs [qkv, γ_q, γ_k, the QkNorm node, dy, (table)]: dqkv; dγ_q, dβ_q, dγ_k, dβ_k are its second
/// outputs, taken by `Output` nodes. Not differentiated again.
#[derive(Debug)]
struct QkNormBackward {
    heads: usize,
    rope: bool,
}

impl OpDef for QkNormBackward {
    fn name(&self) -> &'static str {
        "qk_norm_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let x = f.x;
        let stats = &f.aux[3][0];
        let table = self.rope.then(|| x[5]);
        let (dx, [a, b, c, d]) = eager::qk_norm_backward(f.dev, x[0], [x[1], x[2]], stats, table, x[4], self.heads)?;
        Ok((dx, vec![a, b, c, d]))
    }
    fn f16_inputs(&self) -> &'static [usize] {
        // qkv, as a mixed-precision plan keeps it for the backward, and the QkNorm node, whose value
        // (only its stats are read) then needs no f32 copy either.
        &[0, 3]
    }
}
