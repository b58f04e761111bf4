//! Embedding lookup (rows of a table picked by ids) and its backward, a deterministic scatter-add.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::embedding as eager;
use crate::tensor::DType;

impl Graph {
    /// Rows of `table` [V, C] picked by the u32 `ids` (any shape S): [S..., C].
    pub fn embedding(&mut self, ids: NodeId, table: NodeId) -> Result<NodeId> {
        self.f32_in("embedding", table)?;
        let ts = self.shape(table).to_vec();
        if self.node(ids).dtype != DType::U32 || ts.len() != 2 {
            return Err(Error::ShapeMismatch {
                op: "embedding",
                lhs: self.shape(ids).to_vec(),
                rhs: ts,
                hint: " (ids u32 of any shape and a table [V, C] f32)".into(),
            });
        }
        let mut shape = self.shape(ids).to_vec();
        shape.push(ts[1]);
        Ok(self.push(Embedding, &[ids, table], shape, DType::F32))
    }
}

/// Inputs [ids, table]: the picked rows.
#[derive(Debug)]
struct Embedding;

impl OpDef for Embedding {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::embedding(f.dev, f.x[0], f.x[1])?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let st = g.in_shape(id, 1);
        let op = EmbeddingBackward(st[0]);
        Ok(vec![None, Some(g.push(op, &[g.in_node(id, 0), gy], st, DType::F32))])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (ids, table) = (x[0], x[1]);
        let c = table.shape[1];
        let data = ids.data.iter().flat_map(|&i| table.data[i as usize * c..][..c].iter().copied()).collect();
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Inputs [ids, dout]: the table's gradient [V, C] for a vocabulary of V rows.
#[derive(Debug)]
struct EmbeddingBackward(usize);

impl OpDef for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::embedding_backward(f.dev, f.x[0], f.x[1], self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        // Linear in dout: its gradient gathers the rows back.
        Ok(vec![None, Some(g.embedding(g.in_node(id, 0), gy)?)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (ids, dout) = (x[0], x[1]);
        let c = shape[1];
        let mut data = vec![0.0; self.0 * c];
        for (n, &i) in ids.data.iter().enumerate() {
            for j in 0..c {
                data[i as usize * c + j] += dout.data[n * c + j];
            }
        }
        Ok(Value { shape: shape.to_vec(), data })
    }
}
