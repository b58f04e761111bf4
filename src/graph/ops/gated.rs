//! The gated MLP's gate, fused: silu(u) ⊙ v forward, (du, dv) in one backward kernel (dv its second
//! output).

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::gated as eager;
use crate::tensor::DType;

impl Graph {
    /// silu(u) ⊙ v (SwiGLU's gate) for u and v of one shape: the numbers of `unary(Silu, u)` times v in
    /// one dispatch (one backward).
    pub fn silu_gate(&mut self, u: NodeId, v: NodeId) -> Result<NodeId> {
        self.f32_in("silu_gate", u)?;
        self.f32_in("silu_gate", v)?;
        if self.shape(u) != self.shape(v) {
            return Err(Error::ShapeMismatch {
                op: "silu_gate",
                lhs: self.shape(u).to_vec(),
                rhs: self.shape(v).to_vec(),
                hint: " (u and v must have one shape)".into(),
            });
        }
        Ok(self.push(SiluGate, &[u, v], self.shape(u).to_vec(), DType::F32))
    }
}

/// Inputs [u, v].
#[derive(Debug)]
struct SiluGate;

impl OpDef for SiluGate {
    fn name(&self) -> &'static str {
        "silu_gate"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::silu_gate(f.dev, f.x[0], f.x[1])?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (u, v) = (g.in_node(id, 0), g.in_node(id, 1));
        let du = g.push(SiluGateBackward, &[u, v, gy], g.in_shape(id, 0), DType::F32);
        let dv = g.output(du, 1, g.in_shape(id, 1));
        Ok(vec![Some(du), Some(dv)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let data = x[0].data.iter().zip(&x[1].data).map(|(&u, &v)| u / (1.0 + (-u).exp()) * v).collect();
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Inputs [u, v, dy]: du; dv is its second output. Not differentiated again.
#[derive(Debug)]
struct SiluGateBackward;

impl OpDef for SiluGateBackward {
    fn name(&self) -> &'static str {
        "silu_gate_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (du, dv) = eager::silu_gate_backward(f.dev, f.x[0], f.x[1], f.x[2])?;
        Ok((du, vec![dv]))
    }
}
