//! Rotary position embeddings on a packed q|k|v projection; the backward is the inverse rotation.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::Result;
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::rope::{self as eager, rope_shapes};
use crate::tensor::DType;

impl Graph {
    /// qkv [B, T, 3C] with q and k rotated by their positions' angles, read from `table` [context ≥ T,
    /// D/2, 2] of (cos, sin) (`ops::rope::rope_table`); heads of D = C / heads values, D even. The table
    /// gets no gradient.
    pub fn rope(&mut self, qkv: NodeId, table: NodeId, heads: usize) -> Result<NodeId> {
        self.f32_in("rope", qkv)?;
        self.f32_in("rope", table)?;
        rope_shapes(self.shape(qkv), self.shape(table), heads)?;
        Ok(self.push(Rope { heads, sign: 1.0 }, &[qkv, table], self.shape(qkv).to_vec(), DType::F32))
    }
}

/// Inputs [qkv, table]; `sign` −1 rotates back (the backward).
#[derive(Debug)]
struct Rope {
    heads: usize,
    sign: f32,
}

impl OpDef for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::rope(f.dev, f.x[0], f.x[1], self.heads, self.sign)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        // A rotation's transpose is its inverse.
        let back = Rope { heads: self.heads, sign: -self.sign };
        let table = g.in_node(id, 1);
        Ok(vec![Some(g.push(back, &[gy, table], g.shape(gy).to_vec(), DType::F32)), None])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (qkv, table) = (x[0], x[1]);
        let (t, w) = (shape[1], shape[2]);
        let c = w / 3;
        let hd = c / self.heads;
        let half = hd / 2;
        let mut data = qkv.data.clone();
        for (r, row) in data.chunks_mut(w).enumerate() {
            let src = &qkv.data[r * w..(r + 1) * w];
            let pos = r % t;
            for head in 0..2 * self.heads {
                for j in 0..half {
                    let (cs, sn) =
                        (table.data[(pos * half + j) * 2], self.sign as f64 * table.data[(pos * half + j) * 2 + 1]);
                    let (a, b) = (head * hd + j, head * hd + j + half);
                    row[a] = src[a] * cs - src[b] * sn;
                    row[b] = src[b] * cs + src[a] * sn;
                }
            }
        }
        Ok(Value { shape: shape.to_vec(), data })
    }
}
