//! Reductions along one axis, and the two broadcasting adjoints (sum_to, broadcast_to) that the
//! gradients of broadcasting ops and of reductions need.

use super::{single, Fwd, OpDef, Outputs};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::reference::{broadcast_map, strides, unravel, Value};
use crate::graph::{Graph, NodeId};
use crate::ops::elementwise::{self as ew, broadcast};
use crate::ops::reduce::{self as eager, reduced_shape};
use crate::tensor::{numel, DType, Tensor};

impl Graph {
    /// Sum along `axis` (kept as extent 1 when `keepdim`).
    pub fn sum(&mut self, x: NodeId, axis: usize, keepdim: bool) -> Result<NodeId> {
        self.f32_in("sum", x)?;
        self.check_axis("sum", x, axis)?;
        let shape = reduced_shape(self.shape(x), axis, keepdim);
        Ok(self.push(Reduce { mean: false, axis, keepdim }, &[x], shape, DType::F32))
    }

    /// Mean along `axis` (kept as extent 1 when `keepdim`); the axis must not be empty.
    pub fn mean(&mut self, x: NodeId, axis: usize, keepdim: bool) -> Result<NodeId> {
        self.f32_in("mean", x)?;
        self.check_axis("mean", x, axis)?;
        if self.shape(x)[axis] == 0 {
            return Err(Error::invalid("mean", format!("axis {axis} of {:?} is empty", self.shape(x))));
        }
        let shape = reduced_shape(self.shape(x), axis, keepdim);
        Ok(self.push(Reduce { mean: true, axis, keepdim }, &[x], shape, DType::F32))
    }

    /// Mean of every element, shape [1].
    pub fn mean_all(&mut self, x: NodeId) -> Result<NodeId> {
        let n = numel(self.shape(x))?;
        let flat = self.reshape(x, &[n])?;
        self.mean(flat, 0, true)
    }

    /// Sum of every element, shape [1].
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let n = numel(self.shape(x))?;
        let flat = self.reshape(x, &[n])?;
        self.sum(flat, 0, true)
    }

    /// Sums a broadcast result back to `shape`, which must broadcast to x's shape (gradients of
    /// broadcasting ops). Returns x itself when the shapes are equal.
    pub fn sum_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        let (b, _, _) = broadcast("sum_to", shape, self.shape(x))?;
        if b != self.shape(x) {
            return Err(Error::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape(x).to_vec(),
                rhs: shape.to_vec(),
                hint: " (the target must broadcast to the input)".into(),
            });
        }
        if shape == self.shape(x) {
            return Ok(x);
        }
        Ok(self.push(SumTo(shape.to_vec()), &[x], shape.to_vec(), DType::F32))
    }

    /// `x * s` broadcast along `axis` (extent 1 in x) to `extent`: a mean's gradient in one dispatch.
    pub fn scale_broadcast(&mut self, x: NodeId, axis: usize, extent: usize, s: f32) -> Result<NodeId> {
        self.f32_in("scale_broadcast", x)?;
        self.check_axis("scale_broadcast", x, axis)?;
        if self.shape(x)[axis] != 1 {
            return Err(Error::invalid("scale_broadcast", format!("axis {axis} of {:?} must be 1", self.shape(x))));
        }
        let mut shape = self.shape(x).to_vec();
        shape[axis] = extent;
        Ok(self.push(ScaleBroadcast { axis, extent, s }, &[x], shape, DType::F32))
    }

    /// Broadcasts x to `shape` (gradients of reductions). Returns x itself when the shapes are equal.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        let (b, _, _) = broadcast("broadcast_to", self.shape(x), shape)?;
        if b != shape {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: self.shape(x).to_vec(),
                rhs: shape.to_vec(),
                hint: " (the input must broadcast to the target)".into(),
            });
        }
        if shape == self.shape(x) {
            return Ok(x);
        }
        Ok(self.push(BroadcastTo(shape.to_vec()), &[x], shape.to_vec(), DType::F32))
    }
}

/// Sum or mean along one axis.
#[derive(Debug)]
struct Reduce {
    mean: bool,
    axis: usize,
    keepdim: bool,
}

impl OpDef for Reduce {
    fn name(&self) -> &'static str {
        if self.mean {
            "mean"
        } else {
            "sum"
        }
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let r = if self.mean { eager::mean } else { eager::sum };
        single(r(f.dev, f.x[0], self.axis, self.keepdim)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let sx = g.in_shape(id, 0);
        let mut kept = sx.clone();
        kept[self.axis] = 1;
        let gr = if self.keepdim { gy } else { g.reshape(gy, &kept)? };
        let gr = if self.mean && sx[self.axis] > 1 {
            g.scale_broadcast(gr, self.axis, sx[self.axis], 1.0 / sx[self.axis] as f32)?
        } else {
            let gr = g.broadcast_to(gr, &sx)?;
            if self.mean {
                g.scale(gr, 1.0 / sx[self.axis] as f32)?
            } else {
                gr
            }
        };
        Ok(vec![Some(gr)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let mean = self.mean;
        Ok(reduce_axis(x[0], self.axis, self.keepdim, |r| {
            let s = r.iter().sum::<f64>();
            if mean {
                s / r.len() as f64
            } else {
                s
            }
        }))
    }
}

/// Sums input 0 over the axes where the target shape (aligned at the last axis) is 1 or missing.
#[derive(Debug)]
struct SumTo(Vec<usize>);

impl OpDef for SumTo {
    fn name(&self) -> &'static str {
        "sum_to"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(sum_to(f.dev, f.x[0], &self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let sx = g.in_shape(id, 0);
        Ok(vec![Some(g.broadcast_to(gy, &sx)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let (src, target) = (x[0], &self.0);
        let mut data = vec![0.0; target.iter().product()];
        let lead = src.shape.len() - target.len();
        let ts = strides(target);
        for (i, &val) in src.data.iter().enumerate() {
            let idx = unravel(i, &src.shape);
            let o: usize = (0..target.len()).map(|d| if target[d] == 1 { 0 } else { idx[d + lead] * ts[d] }).sum();
            data[o] += val;
        }
        Ok(Value { shape: target.clone(), data })
    }
}

/// Broadcasts input 0 to a shape.
#[derive(Debug)]
struct BroadcastTo(Vec<usize>);

impl OpDef for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::broadcast_to(f.dev, f.x[0], &self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let sx = g.in_shape(id, 0);
        Ok(vec![Some(g.sum_to(gy, &sx)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        broadcast_map(x[0], &Value::full(&self.0, 0.0), |a, _| a)
    }
}

/// `x * s` broadcast along one axis.
#[derive(Debug)]
struct ScaleBroadcast {
    axis: usize,
    extent: usize,
    s: f32,
}

impl OpDef for ScaleBroadcast {
    fn name(&self) -> &'static str {
        "scale_broadcast"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::scale_broadcast(f.dev, f.x[0], self.axis, self.extent, self.s)?)
    }
    fn backward(&self, g: &mut Graph, _: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let gs = g.sum(gy, self.axis, true)?;
        Ok(vec![Some(g.scale(gs, self.s)?)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let s = self.s as f64;
        broadcast_map(x[0], &Value::full(shape, 0.0), |a, _| a * s)
    }
}

/// Sums `x` over the axes where `target` (aligned at the last axis) has extent 1 or is missing.
/// Adjacent axes that are both summed or both kept are merged first (extent-1 axes dropped), so each run
/// of summed axes costs one reduction: [N, C, H, W] to [N, C, 1, 1] is one sum over H·W.
fn sum_to(dev: &Device, x: &Tensor, target: &[usize]) -> Result<Tensor> {
    let lead = x.shape.len() - target.len();
    // (extent, summed) per run of merged axes.
    let mut runs: Vec<(usize, bool)> = Vec::new();
    for (d, &e) in x.shape.iter().enumerate() {
        let summed = d < lead || target[d - lead] == 1;
        match runs.last_mut() {
            _ if e == 1 => {}
            Some((ext, s)) if *s == summed => *ext *= e,
            _ => runs.push((e, summed)),
        }
    }
    let mut t = x.reshape(&runs.iter().map(|r| r.0).collect::<Vec<_>>())?;
    for (d, &(_, summed)) in runs.iter().enumerate() {
        if summed {
            t = eager::sum(dev, &t, d, true)?;
        }
    }
    t.reshape(target)
}

/// Reduces `axis` with `f` over the axis values.
fn reduce_axis(x: &Value, axis: usize, keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Value {
    let outer: usize = x.shape[..axis].iter().product();
    let len = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let vals: Vec<f64> = (0..len).map(|a| x.data[(o * len + a) * inner + i]).collect();
            data.push(f(&vals));
        }
    }
    let mut shape = x.shape.clone();
    if keepdim {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Value { shape, data }
}
