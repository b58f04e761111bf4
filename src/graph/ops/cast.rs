//! Casts between f32 and f16 storage (mixed precision: the f16 working copies of weights and the f16
//! activations that matmuls read).

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::cast as eager;
use crate::tensor::DType;

/// The precision a graph's matrix products run at (`Graph::precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything f32.
    #[default]
    F32,
    /// Matrix products read f16 operands (weights' working copies cast once per step, activations
    /// cast where they are produced) and accumulate in f32; gradients, master weights and optimizer
    /// state stay f32 (docs/precision.md).
    Mixed,
}

impl Precision {
    /// "f32" or "mixed", as the command line and run configs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            _ => Err(Error::invalid("precision", format!("`{s}` is not f32 or mixed"))),
        }
    }
}

impl Graph {
    /// `x` as a matrix product's operand at the graph's precision: cast to f16 under `Mixed` (an f32
    /// node), else `x` itself. One cast per node: operands read twice (a norm's output feeding two
    /// projections, a weight used twice) share it.
    pub fn operand(&mut self, x: NodeId) -> Result<NodeId> {
        if self.precision != Precision::Mixed || self.node(x).dtype != DType::F32 {
            return Ok(x);
        }
        let existing = (x.0 + 1..self.nodes.len()).map(NodeId).find(|&i| {
            let n = self.node(i);
            n.inputs == [x] && n.dtype == DType::F16 && matches!(&n.op, crate::graph::Op::Def(d) if d.name() == "cast")
        });
        match existing {
            Some(c) => Ok(c),
            None => self.cast(x, DType::F16),
        }
    }

    /// `x` stored as `to` (f32 <-> f16). Casting to the node's own dtype returns `x` itself. The
    /// backward passes the gradient through unchanged: gradients are f32 at every node (an f16 node's
    /// gradient included), so there is nothing to round, and the rounding's derivative is taken as 1.
    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        self.float_in("cast", x)?;
        if !matches!(to, DType::F32 | DType::F16) {
            return Err(Error::DType { op: "cast", got: to.name(), want: "f32 or f16" });
        }
        if self.node(x).dtype == to {
            return Ok(x);
        }
        Ok(self.push(Cast(to), &[x], self.shape(x).to_vec(), to))
    }

    /// An error unless node `id` is f32 or f16 (a float stored either way).
    pub(crate) fn float_in(&self, op: &'static str, id: NodeId) -> Result<()> {
        match self.node(id).dtype {
            DType::F32 | DType::F16 => Ok(()),
            d => Err(Error::DType { op, got: d.name(), want: "f32 or f16" }),
        }
    }
}

/// y = x stored as the dtype.
#[derive(Debug)]
struct Cast(DType);

impl OpDef for Cast {
    fn name(&self) -> &'static str {
        "cast"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::cast(f.dev, f.x[0], self.0)?)
    }
    fn backward(&self, _: &mut Graph, _: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        Ok(vec![Some(gy)])
    }
    // The value a cast stands for: the reference is exact (f16 rounding is the storage's error, which
    // the kernel tests bound), so finite differences see the identity the backward assumes.
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(x[0].clone())
    }
}
