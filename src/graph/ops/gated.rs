//! The gated MLP's gate, fused: silu(u) ⊙ v forward, (du, dv) in one backward kernel (dv its second
//! output); the gate as the epilogue of the two input projections (`linear_silu_gate`); and, once
//! autodiff is done, the gate's backward as the epilogue of the output projection's backward pair
//! (`Graph::fuse_gate_backward`).

use std::sync::Arc;

use super::matmul::matmul_f64;
use super::{single, Fwd, OpDef, Output, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId, Op};
use crate::ops::gated as eager;
use crate::ops::matmul::{matmul_shape, MatmulOpts};
use crate::tensor::{DType, Tensor};

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
        let du = g.push(LinearSiluGateBackward, &[id, gy], s.clone(), DType::F32);
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

/// Inputs [l, dy] for a `linear_silu_gate` node l: `silu_gate_backward` of l's second outputs u and v
/// (read from l itself, which is older than the products that make dy, so `fuse_gate_backward` can fold
/// this node into them). Not differentiated again.
#[derive(Debug)]
struct LinearSiluGateBackward;

impl OpDef for LinearSiluGateBackward {
    fn name(&self) -> &'static str {
        "linear_silu_gate_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (u, v) = gate_inputs(f, 0, true);
        let (du, dv) = eager::silu_gate_backward(f.dev, u, v, f.x[1])?;
        Ok((du, vec![dv]))
    }
}

/// The gate's u and v among a node's inputs from `at` on: inputs u and v, or (`from_aux`) one
/// `linear_silu_gate` node whose second outputs they are (`LinearSiluGateBackward`'s input).
fn gate_inputs<'a>(f: &Fwd<'a>, at: usize, from_aux: bool) -> (&'a Tensor, &'a Tensor) {
    match from_aux {
        true => (&f.aux[at][0], &f.aux[at][1]),
        false => (f.x[at], f.x[at + 1]),
    }
}

impl Graph {
    /// Folds a `silu_gate_backward` into the backward product pair that makes its dy, where `pair_matmuls`
    /// is about to join x (dH = α0·op(G)·op(W)) and y (dW = α1·op(H)·op(G) (+ r)): when dH is read by
    /// that gate's backward alone (through reshapes, each read by the next alone), both products read
    /// the same G, nothing is f16, no gradient asked for (`roots`) is dH itself, and the gate's u and v
    /// are older than x. x becomes one `matmul_pair_silu_gate_backward` node (value du, second outputs
    /// dW and dv), y passes on dW and the gate's backward node passes on du and dv, so every node
    /// reading them stays as it was. Returns false, changing nothing, where the fold does not apply.
    pub(crate) fn fuse_gate_backward(
        &mut self,
        (x, y): (NodeId, NodeId),
        opts: [MatmulOpts; 2],
        acc: [bool; 2],
        roots: &[NodeId],
    ) -> bool {
        let (nx, ny) = (&self.nodes[x.0], &self.nodes[y.0]);
        let (gy, w, h) = (nx.inputs[0], nx.inputs[1], ny.inputs[0]);
        let f16 = [gy, w, h].iter().any(|&i| self.node(i).dtype != DType::F32);
        if acc[0] || ny.inputs[1] != gy || f16 {
            return false;
        }
        let name = |i: usize| match &self.nodes[i].op {
            Op::Def(d) => d.name(),
            _ => "",
        };
        let mut at = x;
        let gate = loop {
            // dH (or a reshape of it) asked for as a gradient must keep its value.
            if roots.contains(&at) {
                return false;
            }
            let mut users = (at.0 + 1..self.nodes.len()).filter(|&i| self.nodes[i].inputs.contains(&at));
            let (Some(i), None) = (users.next(), users.next()) else { return false };
            match name(i) {
                "reshape" => at = NodeId(i),
                "silu_gate_backward" | "linear_silu_gate_backward" => break NodeId(i),
                _ => return false,
            }
        };
        let gate_in = &self.nodes[gate.0].inputs;
        let (uv, dy) = gate_in.split_at(gate_in.len() - 1);
        if dy[0] != at || uv.iter().any(|i| i.0 >= x.0) {
            return false;
        }
        let def = MatmulPairSiluGateBackward { opts, acc1: acc[1], from_aux: uv.len() == 1 };
        let mut inputs = vec![gy, w, h];
        inputs.extend_from_slice(uv);
        inputs.extend(ny.inputs.get(2).copied());
        let shape = self.shape(gate).to_vec();
        let nx = &mut self.nodes[x.0];
        (nx.op, nx.inputs, nx.shape) = (Op::Def(Arc::new(def)), inputs, shape);
        let ny = &mut self.nodes[y.0];
        (ny.op, ny.inputs) = (Op::Def(Arc::new(Output(1))), vec![x]);
        let ng = &mut self.nodes[gate.0];
        (ng.op, ng.inputs) = (Op::Def(Arc::new(GateGrads)), vec![x]);
        true
    }
}

/// Inputs [G, W, H], the gate's (u, v, or its `linear_silu_gate` node), then dW's term where it
/// accumulates: du of the gate's backward given dH = α0·op(G)·op(W); second outputs dW = α1·op(H)·op(G)
/// (+ r) and dv. One dispatch where it can (`ops::gated::matmul_pair_silu_gate_backward`). Made by
/// `Graph::fuse_gate_backward`; not differentiated again.
#[derive(Debug)]
struct MatmulPairSiluGateBackward {
    opts: [MatmulOpts; 2],
    acc1: bool,
    from_aux: bool,
}

impl OpDef for MatmulPairSiluGateBackward {
    fn name(&self) -> &'static str {
        "matmul_pair_silu_gate_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (u, v) = gate_inputs(f, 3, self.from_aux);
        let dw_into = self.acc1.then(|| f.x[f.x.len() - 1]);
        let j = eager::GateProjectionGrads { g: f.x[0], w: f.x[1], h: f.x[2], u, v, opts: self.opts, dw_into };
        let (du, dv, dw) = eager::matmul_pair_silu_gate_backward(f.dev, j)?;
        Ok((du, vec![dw, dv]))
    }
}

/// Input [a `matmul_pair_silu_gate_backward` node]: its du, with its dv as the second output, where
/// the gate's backward it replaced stood. Not differentiated again.
#[derive(Debug)]
struct GateGrads;

impl OpDef for GateGrads {
    fn name(&self) -> &'static str {
        "silu_gate_grads"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        Ok((f.x[0].clone(), vec![f.aux[0][1].clone()]))
    }
}
