//! The gated MLP's gate, fused: silu(u) ⊙ v forward, (du, dv) in one backward kernel (dv its second
//! output); and the gate as the epilogue of the two input projections (`linear_silu_gate`).

use super::matmul::matmul_f64;
use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::gated as eager;
use crate::ops::matmul::{matmul_shape, MatmulOpts};
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

    /// silu(x·W_gate) ⊙ (x·W_up) for x [rows, in] and both weights [in, hidden]: the numbers of two
    /// `matmul`s and `silu_gate`, in one dispatch forward (the gate as the matmul's epilogue); u and v
    /// are kept for the backward.
    pub fn linear_silu_gate(&mut self, x: NodeId, w_gate: NodeId, w_up: NodeId) -> Result<NodeId> {
        for id in [x, w_gate, w_up] {
            self.f32_in("linear_silu_gate", id)?;
        }
        if self.shape(x).len() != 2 || self.shape(w_gate) != self.shape(w_up) || self.shape(w_gate).len() != 2 {
            return Err(Error::invalid(
                "linear_silu_gate",
                format!(
                    "x {:?} must be [rows, in] and both weights one [in, hidden] shape (gate {:?}, up {:?})",
                    self.shape(x),
                    self.shape(w_gate),
                    self.shape(w_up)
                ),
            ));
        }
        let s = matmul_shape(self.shape(x), self.shape(w_gate), &MatmulOpts::default())?.out_shape;
        Ok(self.push(LinearSiluGate, &[x, w_gate, w_up], s, DType::F32))
    }
}

/// Inputs [x, W_gate, W_up]: h = silu(x·W_gate) ⊙ (x·W_up); u = x·W_gate and v = x·W_up are its second
/// outputs.
#[derive(Debug)]
struct LinearSiluGate;

impl OpDef for LinearSiluGate {
    fn name(&self) -> &'static str {
        "linear_silu_gate"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (h, u, v) = eager::linear_silu_gate(f.dev, f.x[0], f.x[1], f.x[2])?;
        Ok((h, vec![u, v]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, wg, wu) = (g.in_node(id, 0), g.in_node(id, 1), g.in_node(id, 2));
        let s = g.shape(id).to_vec();
        let (u, v) = (g.output(id, 1, s.clone()), g.output(id, 2, s.clone()));
        let du = g.push(SiluGateBackward, &[u, v, gy], s.clone(), DType::F32);
        let dv = g.output(du, 1, s);
        // Each projection's backward as a matmul's; dx's gate term adds into the up term's buffer, the
        // order autodiff folds the unfused form's sum in (so the numbers are the same).
        let o = MatmulOpts::default();
        let [dx, dwu] = g.matmul_grads(x, wu, o, dv, None)?;
        let [dx, dwg] = g.matmul_grads(x, wg, o, du, dx)?;
        Ok(vec![dx, dwg, dwu])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let o = MatmulOpts::default();
        let u = matmul_f64(x[0], x[1], o.trans_a, o.trans_b, 1.0);
        let v = matmul_f64(x[0], x[2], o.trans_a, o.trans_b, 1.0);
        SiluGate.reference(&[&u, &v], shape)
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
    fn f16_inputs(&self) -> &'static [usize] {
        &[0, 1]
    }
}
