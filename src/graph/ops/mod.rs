//! The op definitions: one `OpDef` per op, grouped by family, each beside its builder.
//!
//! A family file holds, for every op in it: the builder on `Graph` (checks the inputs and infers the
//! output's shape and dtype, so a bad shape is an error at model construction), the struct that
//! implements `OpDef` (its forward through the eager `crate::ops` functions, its backward rule built
//! from graph ops, its f64 reference), and the f64 helpers the reference needs. The generic machinery
//! (`Graph`, the autodiff driver, the executor, the reference interpreter) dispatches through the trait
//! and knows no op by name.

pub mod attention;
pub mod cast;
pub mod chnorm;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gated;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod qknorm;
pub mod reduce;
pub mod resnorm;
pub mod rope;
pub mod softmax;

use super::reference::Value;
use super::{Graph, NodeId};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// What a forward sees: the device, its inputs' values, their second outputs, and its output shape.
pub struct Fwd<'a> {
    /// The device the step runs on.
    pub dev: &'a Device,
    /// The inputs' values, in the node's input order.
    pub x: &'a [&'a Tensor],
    /// Each input's second outputs (empty for single-output inputs), e.g. a layer norm's row statistics.
    pub aux: &'a [&'a [Tensor]],
    /// The node's output shape, as its builder inferred it.
    pub shape: &'a [usize],
}

/// The value of a node and its second outputs (kept for the backward, taken by `Output` nodes, and
/// freed with the node's value).
pub type Outputs = (Tensor, Vec<Tensor>);

/// Everything the graph knows about one op. Its builder (a method on `Graph` in the same file) checks
/// the inputs and infers the output shape and dtype before pushing the node.
pub trait OpDef: std::fmt::Debug + Send + Sync {
    /// The op's name, used in errors.
    fn name(&self) -> &'static str;

    /// Runs the op through the eager ops (each checks shapes again and dispatches its kernels).
    fn forward(&self, f: &Fwd) -> Result<Outputs>;

    /// The gradients of node `id`'s inputs given the gradient `gy` of its output, appended to `g` as graph
    /// ops (so they can be differentiated again); `None` for an input that gets no gradient.
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let _ = (g, id, gy);
        Err(Error::invalid("backward", format!("the second derivative through {} is not implemented", self.name())))
    }

    /// A variant of this op that adds one more input, appended last, to its result. Autodiff folds a
    /// gradient sum into the op that makes its newer term this way (`Graph::backward`); None: the op
    /// has none.
    fn accumulating(&self) -> Option<Accumulating> {
        None
    }

    /// True for ops whose value depends on nothing (a fill): the planner computes them once, outside the
    /// recorded step, and every run reads that tensor.
    fn constant(&self) -> bool {
        false
    }

    /// True for ops that only pass on another node's second output (`Output`): they read no value of
    /// their input node, so folding work into that node leaves them valid.
    fn reads_second_output(&self) -> bool {
        false
    }

    /// Which second outputs of input `k` this op reads (indices into `Fwd::aux[k]`); None, the default:
    /// any of them. A plan that stores a node's values in f16 while they wait for the backward keeps
    /// only the second outputs its readers there may read (`graph::saved`).
    fn second_outputs_read(&self, k: usize) -> Option<Vec<usize>> {
        let _ = k;
        None
    }

    /// Inputs this op also reads as f16, all together (a plan that keeps them in f16 for the backward
    /// passes them as they are when every one of them is f16, and widens them otherwise); none by
    /// default.
    fn f16_inputs(&self) -> &'static [usize] {
        &[]
    }

    /// The op in f64 on host values, written plainly (the gradient checks' oracle).
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let _ = (x, shape);
        Err(Error::invalid(
            "reference",
            format!("{} has no f64 reference: gradient checks differentiate the forward", self.name()),
        ))
    }
}

/// An op's accumulating variant (`OpDef::accumulating`).
pub struct Accumulating {
    /// The variant: the op's inputs plus the term to add, last.
    pub def: std::sync::Arc<dyn OpDef>,
    /// It adds into the term's own buffer and returns it (so the term must be used nowhere else), rather
    /// than reading it into a fresh output.
    pub in_place: bool,
}

/// One output value from a forward with no second outputs.
pub(crate) fn single(t: Tensor) -> Result<Outputs> {
    Ok((t, vec![]))
}

/// The k-th second output of the input node (k ≥ 1; the node's value is output 0).
#[derive(Debug)]
pub(crate) struct Output(pub usize);

impl OpDef for Output {
    fn name(&self) -> &'static str {
        "output"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(f.aux[0][self.0 - 1].clone())
    }
    fn reads_second_output(&self) -> bool {
        true
    }
    fn second_outputs_read(&self, _: usize) -> Option<Vec<usize>> {
        Some(vec![self.0 - 1])
    }
}

impl Graph {
    /// The `k`-th second output of `node` as a node of `shape` (a fused backward's dgamma and dbeta).
    pub(crate) fn output(&mut self, node: NodeId, k: usize, shape: Vec<usize>) -> NodeId {
        self.push(Output(k), &[node], shape, DType::F32)
    }

    /// The gradients of a fused norm's [x, gamma, beta] from its backward node `dx`, which keeps dgamma
    /// and dbeta as second outputs.
    pub(crate) fn norm_grads(&mut self, dx: NodeId, gamma: NodeId) -> Vec<Option<NodeId>> {
        let c = self.shape(gamma).to_vec();
        let dgamma = self.output(dx, 1, c.clone());
        let dbeta = self.output(dx, 2, c);
        vec![Some(dx), Some(dgamma), Some(dbeta)]
    }
}

/// An elementwise f64 map over one value.
pub(crate) fn map1(x: &Value, f: impl Fn(f64) -> f64) -> Value {
    Value { shape: x.shape.clone(), data: x.data.iter().map(|&v| f(v)).collect() }
}

/// An elementwise f64 map over two values of one shape.
pub(crate) fn map2(a: &Value, b: &Value, f: impl Fn(f64, f64) -> f64) -> Value {
    Value { shape: a.shape.clone(), data: a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect() }
}
