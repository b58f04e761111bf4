//! An f64 reference interpreter of the graph IR, written plainly for clarity, not speed.
//!
//! Gradient checks differentiate it by central finite differences (in f64 the step can be small and
//! the difference exact to ~1e-9) and compare against the engine's analytic gradients, which run the
//! backward rules through the real kernels. It also serves as an independent oracle for the forward ops.
//! Each op's f64 math is its `OpDef::reference`, beside its forward; this file holds the driver and the
//! index helpers they share.

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::ops::elementwise::broadcast;

pub use super::ops::elementwise::unary_f64;

/// A host tensor in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: Vec<f64>,
}

impl Value {
    /// A value of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f64) -> Value {
        Value { shape: shape.to_vec(), data: vec![v; shape.iter().product()] }
    }
}

/// Evaluates the nodes `keep` depends on. Leaves (inputs, parameters, constants) take their values
/// from `leaves` (f64 host copies).
pub fn eval(g: &Graph, leaves: &HashMap<NodeId, Value>, keep: &[NodeId]) -> Result<HashMap<NodeId, Value>> {
    let order = super::exec::schedule(g, keep);
    let mut v: HashMap<NodeId, Value> = HashMap::new();
    for id in order {
        let node = g.node(id);
        let out = match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Const(_) => leaves
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::invalid("reference", format!("no value given for leaf node {}", id.0)))?,
            Op::Def(d) => {
                let x: Vec<&Value> = node.inputs.iter().map(|i| &v[i]).collect();
                d.reference(&x, &node.shape)?
            }
        };
        v.insert(id, out);
    }
    Ok(v)
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Multi-index of flat index `i` in `shape`.
pub(crate) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

/// `f(a, b)` elementwise with broadcasting.
pub(crate) fn broadcast_map(a: &Value, b: &Value, f: impl Fn(f64, f64) -> f64) -> Result<Value> {
    let (shape, sa, sb) = broadcast("reference", &a.shape, &b.shape)?;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let ia: usize = idx.iter().zip(&sa).map(|(x, s)| x * s).sum();
            let ib: usize = idx.iter().zip(&sb).map(|(x, s)| x * s).sum();
            f(a.data[ia], b.data[ib])
        })
        .collect();
    Ok(Value { shape, data })
}

/// `f` applied to each row (the last axis) of `x`, giving a row of the same length.
pub(crate) fn rows(x: &Value, f: impl Fn(&[f64]) -> Vec<f64>) -> Value {
    let len = *x.shape.last().unwrap();
    let data = x.data.chunks(len.max(1)).flat_map(f).collect();
    Value { shape: x.shape.clone(), data }
}
