//! Layout ops: fill, reshape (and detach), transpose, slice and its adjoint pad, concat.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::{strides, unravel, Value};
use crate::graph::{Graph, NodeId};
use crate::ops::layout as eager;
use crate::tensor::{numel, DType};

impl Graph {
    /// A tensor of `shape` filled with `value`.
    pub fn fill(&mut self, shape: &[usize], value: f32) -> Result<NodeId> {
        numel(shape)?;
        Ok(self.push(Fill(value), &[], shape.to_vec(), DType::F32))
    }

    /// The same elements viewed with another shape of the same element count.
    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        if numel(shape)? != numel(self.shape(x))? {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape(x).to_vec(),
                rhs: shape.to_vec(),
                hint: " (element counts differ)".into(),
            });
        }
        let dt = self.node(x).dtype;
        Ok(self.push(Reshape(shape.to_vec()), &[x], shape.to_vec(), dt))
    }

    /// The same value with no gradient flowing back through it (a stop-gradient).
    pub fn detach(&mut self, x: NodeId) -> NodeId {
        let (shape, dt) = (self.shape(x).to_vec(), self.node(x).dtype);
        let id = self.push(Reshape(shape.clone()), &[x], shape, dt);
        self.nodes[id.0].requires_grad = false;
        id
    }

    /// The axes of x permuted: output axis d is input axis `perm[d]`.
    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        let shape = self.shape(x);
        let mut seen = vec![false; shape.len()];
        if perm.len() != shape.len() || perm.iter().any(|&p| p >= shape.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid("transpose", format!("{perm:?} is not a permutation of the axes of {shape:?}")));
        }
        let out = perm.iter().map(|&p| shape[p]).collect();
        let dt = self.node(x).dtype;
        Ok(self.push(Transpose(perm.to_vec()), &[x], out, dt))
    }

    /// Elements `start..start + len` along `axis`.
    pub fn slice(&mut self, x: NodeId, axis: usize, start: usize, len: usize) -> Result<NodeId> {
        self.check_axis("slice", x, axis)?;
        let mut shape = self.shape(x).to_vec();
        if start.checked_add(len).is_none_or(|e| e > shape[axis]) {
            return Err(Error::invalid(
                "slice",
                format!("[{start}, {start}+{len}) is past the end of axis {axis} of {shape:?}"),
            ));
        }
        shape[axis] = len;
        let dt = self.node(x).dtype;
        Ok(self.push(Slice { axis, start, len }, &[x], shape, dt))
    }

    fn pad(&mut self, x: NodeId, shape: &[usize], axis: usize, start: usize) -> Result<NodeId> {
        Ok(self.push(Pad { shape: shape.to_vec(), axis, start }, &[x], shape.to_vec(), DType::F32))
    }

    /// The inputs joined along `axis` (all other axes and the dtype must match).
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        let Some(&first) = xs.first() else { return Err(Error::invalid("concat", "no inputs")) };
        self.check_axis("concat", first, axis)?;
        let mut shape = self.shape(first).to_vec();
        for &x in &xs[1..] {
            let s = self.shape(x);
            let same = s.len() == shape.len() && (0..s.len()).all(|d| d == axis || s[d] == shape[d]);
            if !same || self.node(x).dtype != self.node(first).dtype {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: self.shape(first).to_vec(),
                    rhs: s.to_vec(),
                    hint: format!(" (all axes but {axis} must match)"),
                });
            }
            shape[axis] += s[axis];
        }
        let dt = self.node(first).dtype;
        Ok(self.push(Concat(axis), xs, shape, dt))
    }
}

/// A tensor filled with one value.
#[derive(Debug)]
struct Fill(f32);

impl OpDef for Fill {
    fn name(&self) -> &'static str {
        "fill"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::fill(f.dev, f.shape, self.0)?)
    }
    fn constant(&self) -> bool {
        true
    }
    fn backward(&self, _: &mut Graph, _: NodeId, _: NodeId) -> Result<Vec<Option<NodeId>>> {
        Ok(vec![])
    }
    fn reference(&self, _: &[&Value], shape: &[usize]) -> Result<Value> {
        Ok(Value::full(shape, self.0 as f64))
    }
}

/// The same elements with another shape (no copy).
#[derive(Debug)]
struct Reshape(Vec<usize>);

impl OpDef for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(f.x[0].reshape(&self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let sx = g.in_shape(id, 0);
        Ok(vec![Some(g.reshape(gy, &sx)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(Value { shape: self.0.clone(), data: x[0].data.clone() })
    }
}

/// An axis permutation.
#[derive(Debug)]
struct Transpose(Vec<usize>);

impl OpDef for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::transpose(f.dev, f.x[0], &self.0)?)
    }
    fn backward(&self, g: &mut Graph, _: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![Some(g.transpose(gy, &inv)?)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (src, perm) = (x[0], &self.0);
        let ss = strides(&src.shape);
        let data = (0..src.data.len())
            .map(|i| {
                let idx = unravel(i, shape);
                src.data[(0..perm.len()).map(|d| idx[d] * ss[perm[d]]).sum::<usize>()]
            })
            .collect();
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Elements `start..start + len` along `axis`.
#[derive(Debug)]
struct Slice {
    axis: usize,
    start: usize,
    len: usize,
}

impl OpDef for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::slice(f.dev, f.x[0], self.axis, self.start, self.len)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let sx = g.in_shape(id, 0);
        Ok(vec![Some(g.pad(gy, &sx, self.axis, self.start)?)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let src = x[0];
        let ss = strides(&src.shape);
        let data = (0..shape.iter().product())
            .map(|i| {
                let mut idx = unravel(i, shape);
                idx[self.axis] += self.start;
                src.data[idx.iter().zip(&ss).map(|(a, b)| a * b).sum::<usize>()]
            })
            .collect();
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Writes input 0 into a zero tensor of `shape` at `start` along `axis` (the gradient of `Slice`).
#[derive(Debug)]
struct Pad {
    shape: Vec<usize>,
    axis: usize,
    start: usize,
}

impl OpDef for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let out = eager::fill(f.dev, &self.shape, 0.0)?;
        eager::slice_into(f.dev, f.x[0], &out, self.axis, self.start)?;
        single(out)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let len = g.in_shape(id, 0)[self.axis];
        Ok(vec![Some(g.slice(gy, self.axis, self.start, len)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let src = x[0];
        let os = strides(&self.shape);
        let mut out = Value::full(&self.shape, 0.0);
        for (i, &val) in src.data.iter().enumerate() {
            let mut idx = unravel(i, &src.shape);
            idx[self.axis] += self.start;
            out.data[idx.iter().zip(&os).map(|(a, b)| a * b).sum::<usize>()] = val;
        }
        Ok(out)
    }
}

/// The inputs joined along an axis.
#[derive(Debug)]
struct Concat(usize);

impl OpDef for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::concat(f.dev, f.x, self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let mut out = Vec::new();
        let mut off = 0;
        for k in 0..g.node(id).inputs.len() {
            let len = g.in_shape(id, k)[self.0];
            out.push(Some(g.slice(gy, self.0, off, len)?));
            off += len;
        }
        Ok(out)
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let os = strides(shape);
        let mut out = Value::full(shape, 0.0);
        let mut off = 0;
        for src in x {
            for (i, &val) in src.data.iter().enumerate() {
                let mut idx = unravel(i, &src.shape);
                idx[self.0] += off;
                out.data[idx.iter().zip(&os).map(|(a, b)| a * b).sum::<usize>()] = val;
            }
            off += src.shape[self.0];
        }
        Ok(out)
    }
}
