//! Layer norm over the last axis, fused: the forward keeps each row's (mean, rstd) for the backward,
//! which gives dx with dgamma and dbeta as second outputs in one dispatch (resnorm's
//! `layer_norm_bwd_fused`), to which autodiff folds a residual gradient's sum.

use super::{Accumulating, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::norm as eager;
use crate::tensor::DType;

impl Graph {
    /// Layer norm over the last axis of `x` [..., C] with gain and bias [C]: (x − mean)/√(var + eps)·γ + β.
    pub fn layer_norm(&mut self, x: NodeId, gamma: NodeId, beta: NodeId, eps: f32) -> Result<NodeId> {
        for id in [x, gamma, beta] {
            self.f32_in("layer_norm", id)?;
        }
        let xs = self.shape(x).to_vec();
        let c = xs.last().copied().unwrap_or(0);
        for p in [gamma, beta] {
            if self.shape(p) != [c] {
                return Err(Error::ShapeMismatch {
                    op: "layer_norm",
                    lhs: xs,
                    rhs: self.shape(p).to_vec(),
                    hint: " (gamma and beta must be [C], C the last axis of x)".into(),
                });
            }
        }
        if c == 0 || !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid(
                "layer_norm",
                format!("needs a non-empty last axis and eps > 0: {xs:?}, eps {eps}"),
            ));
        }
        Ok(self.push(LayerNorm(eps), &[x, gamma, beta], xs, DType::F32))
    }
}

/// Inputs [x, gamma, beta]; keeps the row mean and rstd as second outputs.
#[derive(Debug)]
struct LayerNorm(f32);

impl OpDef for LayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (y, stats) = eager::layer_norm_stats(f.dev, f.x[0], f.x[1], f.x[2], self.0)?;
        Ok((y, vec![stats]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, gamma) = (g.in_node(id, 0), g.in_node(id, 1));
        let dx = g.push(LayerNormBackward { acc: false }, &[x, gamma, id, gy], g.in_shape(id, 0), DType::F32);
        Ok(g.norm_grads(dx, gamma))
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        Ok(layer_norm_f64(x[0], x[1], x[2], self.0, shape))
    }
}

/// Layer norm of `xv` over its last axis in f64 (the references of `layer_norm` and `add_layer_norm`).
pub(crate) fn layer_norm_f64(xv: &Value, gamma: &Value, beta: &Value, eps: f32, shape: &[usize]) -> Value {
    let c = gamma.data.len();
    let mut data = Vec::with_capacity(xv.data.len());
    for r in xv.data.chunks(c) {
        let mean = r.iter().sum::<f64>() / c as f64;
        let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        data.extend(r.iter().enumerate().map(|(j, v)| (v - mean) * rstd * gamma.data[j] + beta.data[j]));
    }
    Value { shape: shape.to_vec(), data }
}

/// Inputs [x, gamma, the LayerNorm node, dy], plus r with `acc`: dx (+ r); dgamma and dbeta are its
/// second outputs, taken by `Output` nodes. Not differentiated again.
#[derive(Debug)]
struct LayerNormBackward {
    acc: bool,
}

impl OpDef for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let stats = &f.aux[2][0];
        let r = self.acc.then(|| f.x[4]);
        let (dx, dg, db) = crate::ops::resnorm::layer_norm_backward_fused(f.dev, f.x[0], f.x[1], stats, f.x[3], r)?;
        Ok((dx, vec![dg, db]))
    }
    fn f16_inputs(&self) -> &'static [usize] {
        // x, as a mixed-precision plan keeps it for the backward (the kernel reads it as f16), and the
        // LayerNorm node, whose value (only its stats are read) then needs no f32 copy either.
        &[0, 2]
    }
    fn accumulating(&self) -> Option<Accumulating> {
        (!self.acc).then(|| Accumulating { def: std::sync::Arc::new(LayerNormBackward { acc: true }), in_place: false })
    }
}
