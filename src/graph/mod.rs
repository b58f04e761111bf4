//! The graph IR: a model (and its backward pass) as a list of nodes, each an op over earlier nodes.
//!
//! Nodes are appended in order, so the list is already a topological schedule. Shapes are inferred and
//! checked when a node is added: a bad shape is an error naming the op and both shapes, at model
//! construction, never during a step. Parameters and inputs are existing tensors bound into the graph;
//! every other node is an op defined once in `ops/` (builder, forward, backward rule, f64 reference).
//! `autodiff` appends the backward pass as more nodes of the same ops, `exec` plans memory and records
//! the whole step once for replay, and `reference` evaluates the graph in f64.

pub mod autodiff;
pub mod exec;
pub mod ops;
pub mod reference;
mod saved;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

pub use exec::Plan;
pub use ops::cast::Precision;
pub use ops::chnorm::BnRunning;
pub use ops::{Fwd, OpDef, Outputs};

/// The index of a node in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// The op of a node: a tensor bound from outside, or an op through its definition.
#[derive(Debug, Clone)]
pub enum Op {
    /// A tensor the caller writes before each step (a batch of data).
    Input(Tensor),
    /// A trainable tensor; it receives a gradient from `backward`.
    Param(Tensor),
    /// A tensor held fixed (no gradient).
    Const(Tensor),
    /// Any other op: its definition (see `ops/`).
    Def(Arc<dyn OpDef>),
}

impl Op {
    /// The op's name, used in errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param(_) => "param",
            Op::Const(_) => "const",
            Op::Def(d) => d.name(),
        }
    }
}

/// One node: its op, its inputs, and its inferred output shape and dtype.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// The nodes it reads, in the op's input order.
    pub inputs: Vec<NodeId>,
    /// The output shape.
    pub shape: Vec<usize>,
    /// The output dtype.
    pub dtype: DType,
    /// True when a parameter is upstream: only such nodes get gradients.
    pub requires_grad: bool,
}

/// A model (and, after `backward`, its gradients) as a list of nodes in topological order.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    /// The nodes, each depending only on earlier ones.
    pub nodes: Vec<Node>,
    /// Backward products that may share one dispatch (`Graph::backward` joins them at its end).
    pub(crate) matmul_pairs: Vec<ops::matmul::PairCandidate>,
    /// The precision of the matrix products layers build (`Graph::operand`); f32 unless set. Under
    /// `Mixed` a plan also stores the activations the backward reads as f16 (`saved`).
    pub precision: Precision,
    /// The index of the first node of the first backward pass (`Graph::backward`), if any: the nodes
    /// before it are the forward pass.
    pub(crate) backward_from: Option<usize>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The output shape of node `id`.
    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.0].shape
    }

    fn push_node(&mut self, op: Op, inputs: &[NodeId], shape: Vec<usize>, dtype: DType) -> NodeId {
        let requires_grad = matches!(op, Op::Param(_)) || inputs.iter().any(|i| self.nodes[i.0].requires_grad);
        self.nodes.push(Node { op, inputs: inputs.to_vec(), shape, dtype, requires_grad });
        NodeId(self.nodes.len() - 1)
    }

    /// Appends a node of op `def` over `inputs` with the given output shape and dtype: the last step of
    /// every builder, after it has checked the inputs and inferred the shape.
    pub fn push(&mut self, def: impl OpDef + 'static, inputs: &[NodeId], shape: Vec<usize>, dtype: DType) -> NodeId {
        self.push_node(Op::Def(Arc::new(def)), inputs, shape, dtype)
    }

    /// An error unless node `id` is f32.
    pub(crate) fn f32_in(&self, op: &'static str, id: NodeId) -> Result<()> {
        let n = self.node(id);
        if n.dtype != DType::F32 {
            return Err(Error::DType { op, got: n.dtype.name(), want: "f32" });
        }
        Ok(())
    }

    /// An error unless `a` and `b` are f32 of one shape.
    pub(crate) fn same_shape(&self, op: &'static str, a: NodeId, b: NodeId) -> Result<()> {
        self.f32_in(op, a)?;
        self.f32_in(op, b)?;
        if self.shape(a) != self.shape(b) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape(a).to_vec(),
                rhs: self.shape(b).to_vec(),
                hint: String::new(),
            });
        }
        Ok(())
    }

    /// An error unless `axis` is an axis of node `x`.
    pub(crate) fn check_axis(&self, op: &'static str, x: NodeId, axis: usize) -> Result<()> {
        let shape = self.shape(x);
        if axis >= shape.len() {
            return Err(Error::invalid(op, format!("axis {axis} is out of range for shape {shape:?}")));
        }
        Ok(())
    }

    // ---- leaves ----

    /// An input node: a tensor the caller writes before each step.
    pub fn input(&mut self, t: &Tensor) -> NodeId {
        self.push_node(Op::Input(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    /// A parameter node. Binding the same tensor again returns the same node, so a tensor used in
    /// several places (tied weights) has one gradient, summed over its uses.
    pub fn param(&mut self, t: &Tensor) -> NodeId {
        if let Some(id) = self.param_node(t) {
            return id;
        }
        self.push_node(Op::Param(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    /// The node a parameter tensor is bound to, if any.
    pub fn param_node(&self, t: &Tensor) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| matches!(&n.op, Op::Param(p) if p.buf.same(&t.buf) && p.shape == t.shape))
            .map(NodeId)
    }

    /// A constant node: a tensor held fixed, with no gradient.
    pub fn constant(&mut self, t: &Tensor) -> NodeId {
        self.push_node(Op::Const(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    /// The parameters of the graph, in order of appearance.
    pub fn params(&self) -> Vec<NodeId> {
        (0..self.nodes.len()).map(NodeId).filter(|&i| matches!(self.node(i).op, Op::Param(_))).collect()
    }

    /// The tensor bound to an input, parameter or constant node (None for computed nodes).
    pub fn tensor_of(&self, id: NodeId) -> Option<&Tensor> {
        match &self.node(id).op {
            Op::Input(t) | Op::Param(t) | Op::Const(t) => Some(t),
            Op::Def(_) => None,
        }
    }
}
