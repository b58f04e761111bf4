//! The residual stream's layer norm, fused: s = x + a and y = LayerNorm(s) in one kernel, and a backward
//! that makes dx, dγ and dβ in one dispatch, to which autodiff folds the residual gradient's sum.
//!
//! Two nodes carry the two outputs so autodiff needs nothing new: `AddLayerNorm` [x, a, γ, β] has the
//! value s (its backward is the add's) and keeps y and the row statistics as second outputs;
//! `NormOfSum` [s node, γ, β] passes y on and holds the layer norm's backward.

use super::norm::layer_norm_f64;
use super::{map2, single, Accumulating, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::resnorm as eager;
use crate::tensor::DType;

impl Graph {
    /// (s, y) with s = x + a and y = `layer_norm(s, gamma, beta, eps)` over the last axis: the numbers
    /// of `add` then `layer_norm`, in one dispatch (and one backward).
    pub fn add_layer_norm(
        &mut self,
        x: NodeId,
        a: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f32,
    ) -> Result<(NodeId, NodeId)> {
        for id in [x, a, gamma, beta] {
            self.f32_in("add_layer_norm", id)?;
        }
        let xs = self.shape(x).to_vec();
        let c = xs.last().copied().unwrap_or(0);
        if self.shape(a) != xs || self.shape(gamma) != [c] || self.shape(beta) != [c] {
            return Err(Error::ShapeMismatch {
                op: "add_layer_norm",
                lhs: xs,
                rhs: self.shape(a).to_vec(),
                hint: " (a must have x's shape, gamma and beta [C], C the last axis)".into(),
            });
        }
        if c == 0 || !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid("add_layer_norm", format!("needs a non-empty last axis and eps > 0: {xs:?}")));
        }
        let s = self.push(AddLayerNorm(eps), &[x, a, gamma, beta], xs.clone(), DType::F32);
        let y = self.push(NormOfSum(eps), &[s, gamma, beta], xs, DType::F32);
        Ok((s, y))
    }
}

/// Inputs [x, a, γ, β]: s = x + a; keeps [y, stats] as second outputs.
#[derive(Debug)]
struct AddLayerNorm(f32);

impl OpDef for AddLayerNorm {
    fn name(&self) -> &'static str {
        "add_layer_norm"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (s, y, stats) = eager::add_layer_norm(f.dev, f.x[0], f.x[1], f.x[2], f.x[3], self.0)?;
        Ok((s, vec![y, stats]))
    }
    fn backward(&self, _: &mut Graph, _: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        // γ and β reach y only: their gradients come through `NormOfSum`.
        Ok(vec![Some(gy), Some(gy), None, None])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(map2(x[0], x[1], |a, b| a + b))
    }
}

/// Inputs [the AddLayerNorm node, γ, β]: its y.
#[derive(Debug)]
struct NormOfSum(f32);

impl OpDef for NormOfSum {
    fn name(&self) -> &'static str {
        "layer_norm (of add_layer_norm)"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(f.aux[0][0].clone())
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (s, gamma) = (g.in_node(id, 0), g.in_node(id, 1));
        let dx = g.push(NormBackward { acc: false }, &[s, gamma, gy], g.in_shape(id, 0), DType::F32);
        Ok(g.norm_grads(dx, gamma))
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        Ok(layer_norm_f64(x[0], x[1], x[2], self.0, shape))
    }
}

/// Inputs [the AddLayerNorm node (its value s and stats), γ, dy], plus r with `acc`: dx (+ r); dγ and
/// dβ are its second outputs. Not differentiated again.
#[derive(Debug)]
struct NormBackward {
    acc: bool,
}

impl OpDef for NormBackward {
    fn name(&self) -> &'static str {
        "layer_norm_backward_fused"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let stats = &f.aux[0][1];
        let r = self.acc.then(|| f.x[3]);
        let (dx, dg, db) = eager::layer_norm_backward_fused(f.dev, f.x[0], f.x[1], stats, f.x[2], r)?;
        Ok((dx, vec![dg, db]))
    }
    fn f16_inputs(&self) -> &'static [usize] {
        // The sum, as a mixed-precision plan keeps it for the backward.
        &[0]
    }
    fn second_outputs_read(&self, k: usize) -> Option<Vec<usize>> {
        // The sum's row statistics; its normalised rows (output 1) went on through `NormOfSum`.
        Some(if k == 0 { vec![1] } else { vec![] })
    }
    fn accumulating(&self) -> Option<Accumulating> {
        (!self.acc).then(|| Accumulating { def: std::sync::Arc::new(NormBackward { acc: true }), in_place: false })
    }
}
