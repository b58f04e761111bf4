//! Softmax and log-softmax along the last axis.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::{rows, Value};
use crate::graph::{Graph, NodeId};
use crate::ops::elementwise::Unary;
use crate::ops::softmax as eager;
use crate::tensor::DType;

impl Graph {
    /// Softmax along the last axis: exp(x − max) / Σ exp(x − max).
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.softmax_node(x, false)
    }

    /// Log-softmax along the last axis: (x − max) − log Σ exp(x − max).
    pub fn log_softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.softmax_node(x, true)
    }

    fn softmax_node(&mut self, x: NodeId, log: bool) -> Result<NodeId> {
        let op = Softmax { log };
        self.f32_in(op.name(), x)?;
        if self.shape(x).is_empty() {
            return Err(Error::invalid(op.name(), "a rank-0 tensor has no last axis"));
        }
        Ok(self.push(op, &[x], self.shape(x).to_vec(), DType::F32))
    }
}

/// Softmax (or log-softmax when `log`) of each row.
#[derive(Debug)]
struct Softmax {
    log: bool,
}

impl OpDef for Softmax {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }

    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(if self.log { eager::log_softmax(f.dev, f.x[0])? } else { eager::softmax(f.dev, f.x[0])? })
    }

    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let last = g.shape(id).len() - 1;
        let dx = if self.log {
            // dx = g − softmax(x) · Σ g
            let s = g.sum(gy, last, true)?;
            let p = g.unary(Unary::Exp, id)?;
            let t = g.mul(p, s)?;
            g.sub(gy, t)?
        } else {
            // dx = y ⊙ (g − Σ g⊙y)
            let gyy = g.mul(gy, id)?;
            let s = g.sum(gyy, last, true)?;
            let d = g.sub(gy, s)?;
            g.mul(id, d)?
        };
        Ok(vec![Some(dx)])
    }

    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(rows(x[0], |r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|t| (t - m).exp()).sum();
            if self.log {
                let lse = m + s.ln();
                r.iter().map(|t| t - lse).collect()
            } else {
                r.iter().map(|t| (t - m).exp() / s).collect()
            }
        }))
    }
}
