//! The graph IR: a model (and its backward pass) as a list of nodes, each an op over earlier nodes.
//!
//! Nodes are appended in order, so the list is already a topological schedule. Shapes are inferred and
//! checked when a node is added: a bad shape is an error naming the op and both shapes, at model
//! construction, never during a step. Parameters and inputs are existing tensors bound into the graph;
//! `autodiff` appends the backward pass as more nodes of the same ops, and `exec` plans memory and
//! records the whole step once for replay.

pub mod autodiff;
pub mod exec;
pub mod reference;

use crate::error::{Error, Result};
use crate::ops::conv::{self, Conv2d};
use crate::ops::elementwise::{broadcast, Binary, Unary};
use crate::ops::matmul::{matmul_shape, MatmulOpts};
use crate::ops::reduce::reduced_shape;
use crate::tensor::{numel, DType, Tensor};

pub use exec::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// The op of a node. Each has a forward (exec.rs, through the eager ops) and a backward rule
/// (autodiff.rs) built from these same ops.
#[derive(Debug, Clone)]
pub enum Op {
    /// A tensor the caller writes before each step (a batch of data).
    Input(Tensor),
    /// A trainable tensor; it receives a gradient from `backward`.
    Param(Tensor),
    /// A tensor held fixed (no gradient).
    Const(Tensor),
    /// A tensor filled with one value.
    Fill(f32),
    Unary(Unary, f32),
    /// dx = dy * f'(x): inputs [x, dy].
    UnaryBackward(Unary, f32),
    Binary(Binary),
    Scalar {
        op: Binary,
        s: f32,
        reverse: bool,
    },
    Matmul(MatmulOpts),
    Sum {
        axis: usize,
        keepdim: bool,
    },
    Mean {
        axis: usize,
        keepdim: bool,
    },
    /// Sums a broadcast result back to a shape that broadcasts to it (gradients of broadcasting ops).
    SumTo(Vec<usize>),
    /// Broadcasts to a shape (gradients of reductions).
    BroadcastTo(Vec<usize>),
    Softmax,
    LogSoftmax,
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// Writes input 0 into a zero tensor of `shape` at `start` along `axis` (gradient of `Slice`).
    Pad {
        shape: Vec<usize>,
        axis: usize,
        start: usize,
    },
    Concat(usize),
    /// Cross-entropy of each row of logits [N, V] against u32 class ids [N]: loss [N].
    CrossEntropy,
    /// Inputs [logits, targets, the CrossEntropy node, g]: dlogits.
    CrossEntropyBackward,
    /// Binary cross-entropy with logits, elementwise over (x, t).
    BceLogits,
    /// Inputs [x, t, g]: dx = (sigmoid(x) − t)·g.
    BceLogitsBackward,
    /// Dropout with a mask regenerated from the Philox stream at the step in `step` (u32 [1]).
    Dropout(crate::ops::dropout::Dropout, Tensor),
    DropoutBackward(crate::ops::dropout::Dropout, Tensor),
    /// Layer norm over the last axis: inputs [x, gamma, beta]; keeps the row mean and rstd for its
    /// backward as second outputs.
    LayerNorm(f32),
    /// Inputs [x, gamma, the LayerNorm node, dy]: dx; dgamma and dbeta are its second outputs, taken by
    /// `Output` nodes.
    LayerNormBackward,
    /// Fused multi-head self-attention of a packed qkv [B, T, 3·C]: out [B, T, C]; keeps the row
    /// logsumexp for its backward.
    Attention {
        heads: usize,
        causal: bool,
    },
    /// Inputs [qkv, the Attention node, dout]: dqkv (recomputes the attention, never stores it).
    AttentionBackward {
        heads: usize,
        causal: bool,
    },
    /// Rows of a table [V, C] picked by u32 ids: inputs [ids, table].
    Embedding,
    /// Inputs [ids, dout]: the table's gradient [V, C] (a deterministic scatter-add).
    EmbeddingBackward(usize),
    /// The k-th second output of the input node (k ≥ 1; the node's value is output 0).
    Output(usize),
    /// 2-D convolution, NCHW: inputs [x, w [Cout, Cin, K, K]].
    Conv2d(Conv2d),
    /// The adjoint of `Conv2d` in x for an input of spatial size `hw`: inputs [dy, w]. As a forward op
    /// it is the transposed convolution.
    Conv2dBackwardInput(Conv2d, (usize, usize)),
    /// The adjoint of `Conv2d` in w for a k×k kernel: inputs [x, dy].
    Conv2dBackwardWeight(Conv2d, usize),
    /// Batch norm with batch statistics (training mode), per channel over N·H·W of x [N, C, H, W] or over
    /// N of x [N, C]: inputs [x, gamma, beta]; keeps the channel mean and rstd as second outputs. With
    /// running statistics, each run also folds the batch's into them (in place), so a recorded step keeps
    /// them current for eval mode.
    BatchNorm {
        eps: f32,
        running: Option<BnRunning>,
    },
    /// Inputs [x, gamma, the BatchNorm node, dy]: dx; dgamma and dbeta are its second outputs.
    BatchNormBackward,
    /// Group norm of x [N, C, H, W] (or [N, C]): inputs [x, gamma [C], beta [C]]; keeps each (sample,
    /// group)'s mean and rstd for its backward as second outputs.
    GroupNorm {
        groups: usize,
        eps: f32,
    },
    /// Inputs [x, gamma, the GroupNorm node, dy]: dx; dgamma and dbeta are its second outputs.
    GroupNormBackward(usize),
}

/// The running statistics a training-mode batch norm updates: `r = (1 − momentum)·r + momentum·batch`
/// (the variance unbiased), f32 [C] each.
#[derive(Debug, Clone)]
pub struct BnRunning {
    pub mean: Tensor,
    pub var: Tensor,
    pub momentum: f32,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param(_) => "param",
            Op::Const(_) => "const",
            Op::Fill(_) => "fill",
            Op::Unary(..) => "unary",
            Op::UnaryBackward(..) => "unary_backward",
            Op::Binary(_) => "binary",
            Op::Scalar { .. } => "scalar",
            Op::Matmul(_) => "matmul",
            Op::Sum { .. } => "sum",
            Op::Mean { .. } => "mean",
            Op::SumTo(_) => "sum_to",
            Op::BroadcastTo(_) => "broadcast_to",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::Reshape(_) => "reshape",
            Op::Transpose(_) => "transpose",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat(_) => "concat",
            Op::CrossEntropy => "cross_entropy",
            Op::CrossEntropyBackward => "cross_entropy_backward",
            Op::BceLogits => "bce_logits",
            Op::BceLogitsBackward => "bce_logits_backward",
            Op::Dropout(..) => "dropout",
            Op::DropoutBackward(..) => "dropout_backward",
            Op::LayerNorm(_) => "layer_norm",
            Op::LayerNormBackward => "layer_norm_backward",
            Op::Attention { .. } => "attention",
            Op::AttentionBackward { .. } => "attention_backward",
            Op::Embedding => "embedding",
            Op::EmbeddingBackward(_) => "embedding_backward",
            Op::Output(_) => "output",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dBackwardInput(..) => "conv2d_backward_input",
            Op::Conv2dBackwardWeight(..) => "conv2d_backward_weight",
            Op::BatchNorm { .. } => "batch_norm",
            Op::BatchNormBackward => "batch_norm_backward",
            Op::GroupNorm { .. } => "group_norm",
            Op::GroupNormBackward(_) => "group_norm_backward",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// True when a parameter is upstream: only such nodes get gradients.
    pub requires_grad: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.0].shape
    }

    pub(crate) fn push(&mut self, op: Op, inputs: &[NodeId], shape: Vec<usize>, dtype: DType) -> NodeId {
        let requires_grad = matches!(op, Op::Param(_)) || inputs.iter().any(|i| self.nodes[i.0].requires_grad);
        self.nodes.push(Node { op, inputs: inputs.to_vec(), shape, dtype, requires_grad });
        NodeId(self.nodes.len() - 1)
    }

    fn f32_in(&self, op: &'static str, id: NodeId) -> Result<()> {
        let n = self.node(id);
        if n.dtype != DType::F32 {
            return Err(Error::DType { op, got: n.dtype.name(), want: "f32" });
        }
        Ok(())
    }

    // ---- leaves ----

    pub fn input(&mut self, t: &Tensor) -> NodeId {
        self.push(Op::Input(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    /// A parameter node. Binding the same tensor again returns the same node, so a tensor used in
    /// several places (tied weights) has one gradient, summed over its uses.
    pub fn param(&mut self, t: &Tensor) -> NodeId {
        if let Some(id) = self.param_node(t) {
            return id;
        }
        self.push(Op::Param(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    /// The node a parameter tensor is bound to, if any.
    pub fn param_node(&self, t: &Tensor) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| matches!(&n.op, Op::Param(p) if p.buf.same(&t.buf) && p.shape == t.shape))
            .map(NodeId)
    }

    pub fn constant(&mut self, t: &Tensor) -> NodeId {
        self.push(Op::Const(t.clone()), &[], t.shape.clone(), t.dtype)
    }

    pub fn fill(&mut self, shape: &[usize], value: f32) -> Result<NodeId> {
        numel(shape)?;
        Ok(self.push(Op::Fill(value), &[], shape.to_vec(), DType::F32))
    }

    // ---- elementwise ----

    pub fn unary(&mut self, op: Unary, x: NodeId) -> Result<NodeId> {
        self.unary_with(op, x, 0.01)
    }

    pub fn unary_with(&mut self, op: Unary, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.f32_in("unary", x)?;
        Ok(self.push(Op::Unary(op, alpha), &[x], self.shape(x).to_vec(), DType::F32))
    }

    pub fn unary_backward(&mut self, op: Unary, alpha: f32, x: NodeId, dy: NodeId) -> Result<NodeId> {
        self.same_shape("unary_backward", x, dy)?;
        Ok(self.push(Op::UnaryBackward(op, alpha), &[x, dy], self.shape(x).to_vec(), DType::F32))
    }

    fn same_shape(&self, op: &'static str, a: NodeId, b: NodeId) -> Result<()> {
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

    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.f32_in("binary", a)?;
        self.f32_in("binary", b)?;
        let (shape, _, _) = broadcast("binary", self.shape(a), self.shape(b))?;
        Ok(self.push(Op::Binary(op), &[a, b], shape, DType::F32))
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Add, a, b)
    }
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Mul, a, b)
    }
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Div, a, b)
    }

    /// `op(x, s)`, or `op(s, x)` when `reverse`.
    pub fn scalar(&mut self, op: Binary, x: NodeId, s: f32, reverse: bool) -> Result<NodeId> {
        self.f32_in("scalar", x)?;
        Ok(self.push(Op::Scalar { op, s, reverse }, &[x], self.shape(x).to_vec(), DType::F32))
    }

    pub fn scale(&mut self, x: NodeId, s: f32) -> Result<NodeId> {
        self.scalar(Binary::Mul, x, s, false)
    }

    // ---- matmul, reductions, softmax ----

    pub fn matmul(&mut self, a: NodeId, b: NodeId, opts: MatmulOpts) -> Result<NodeId> {
        self.f32_in("matmul", a)?;
        self.f32_in("matmul", b)?;
        let s = matmul_shape(self.shape(a), self.shape(b), &opts)?;
        Ok(self.push(Op::Matmul(opts), &[a, b], s.out_shape, DType::F32))
    }

    fn check_axis(&self, op: &'static str, x: NodeId, axis: usize) -> Result<()> {
        let shape = self.shape(x);
        if axis >= shape.len() {
            return Err(Error::invalid(op, format!("axis {axis} is out of range for shape {shape:?}")));
        }
        Ok(())
    }

    pub fn sum(&mut self, x: NodeId, axis: usize, keepdim: bool) -> Result<NodeId> {
        self.f32_in("sum", x)?;
        self.check_axis("sum", x, axis)?;
        let shape = reduced_shape(self.shape(x), axis, keepdim);
        Ok(self.push(Op::Sum { axis, keepdim }, &[x], shape, DType::F32))
    }

    pub fn mean(&mut self, x: NodeId, axis: usize, keepdim: bool) -> Result<NodeId> {
        self.f32_in("mean", x)?;
        self.check_axis("mean", x, axis)?;
        if self.shape(x)[axis] == 0 {
            return Err(Error::invalid("mean", format!("axis {axis} of {:?} is empty", self.shape(x))));
        }
        let shape = reduced_shape(self.shape(x), axis, keepdim);
        Ok(self.push(Op::Mean { axis, keepdim }, &[x], shape, DType::F32))
    }

    /// Mean of every element, shape [1].
    pub fn mean_all(&mut self, x: NodeId) -> Result<NodeId> {
        let n = numel(self.shape(x))?;
        let flat = self.reshape(x, &[n])?;
        let m = self.mean(flat, 0, true)?;
        Ok(m)
    }

    /// Sum of every element, shape [1].
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let n = numel(self.shape(x))?;
        let flat = self.reshape(x, &[n])?;
        self.sum(flat, 0, true)
    }

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
        Ok(self.push(Op::SumTo(shape.to_vec()), &[x], shape.to_vec(), DType::F32))
    }

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
        Ok(self.push(Op::BroadcastTo(shape.to_vec()), &[x], shape.to_vec(), DType::F32))
    }

    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.f32_in("softmax", x)?;
        if self.shape(x).is_empty() {
            return Err(Error::invalid("softmax", "a rank-0 tensor has no last axis"));
        }
        Ok(self.push(Op::Softmax, &[x], self.shape(x).to_vec(), DType::F32))
    }

    pub fn log_softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.f32_in("log_softmax", x)?;
        if self.shape(x).is_empty() {
            return Err(Error::invalid("log_softmax", "a rank-0 tensor has no last axis"));
        }
        Ok(self.push(Op::LogSoftmax, &[x], self.shape(x).to_vec(), DType::F32))
    }

    // ---- layout ----

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
        Ok(self.push(Op::Reshape(shape.to_vec()), &[x], shape.to_vec(), dt))
    }

    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        let shape = self.shape(x);
        let mut seen = vec![false; shape.len()];
        if perm.len() != shape.len() || perm.iter().any(|&p| p >= shape.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid("transpose", format!("{perm:?} is not a permutation of the axes of {shape:?}")));
        }
        let out = perm.iter().map(|&p| shape[p]).collect();
        let dt = self.node(x).dtype;
        Ok(self.push(Op::Transpose(perm.to_vec()), &[x], out, dt))
    }

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
        Ok(self.push(Op::Slice { axis, start, len }, &[x], shape, dt))
    }

    fn pad(&mut self, x: NodeId, shape: &[usize], axis: usize, start: usize) -> Result<NodeId> {
        Ok(self.push(Op::Pad { shape: shape.to_vec(), axis, start }, &[x], shape.to_vec(), DType::F32))
    }

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
        Ok(self.push(Op::Concat(axis), xs, shape, dt))
    }

    // ---- losses and dropout ----

    /// Cross-entropy of each row of `logits` [N, V] against class ids `targets` (u32 [N]), fused with
    /// the log-softmax: shape [N]. Class ids must be < V (the data loader checks them once; the kernel
    /// clamps so a bad id cannot read out of bounds).
    pub fn cross_entropy(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId> {
        self.f32_in("cross_entropy", logits)?;
        let (ls, ts) = (self.shape(logits).to_vec(), self.shape(targets).to_vec());
        if ls.len() != 2 || ts.len() != 1 || ts[0] != ls[0] || self.node(targets).dtype != DType::U32 {
            return Err(Error::ShapeMismatch {
                op: "cross_entropy",
                lhs: ls,
                rhs: ts,
                hint: " (logits [N, V] f32 and targets [N] u32)".into(),
            });
        }
        Ok(self.push(Op::CrossEntropy, &[logits, targets], vec![self.shape(logits)[0]], DType::F32))
    }

    /// Mean cross-entropy over the rows, shape [1].
    pub fn cross_entropy_mean(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId> {
        let ce = self.cross_entropy(logits, targets)?;
        self.mean_all(ce)
    }

    /// Binary cross-entropy with logits, elementwise: max(x,0) − x·t + log(1 + e^−|x|).
    pub fn bce_logits(&mut self, x: NodeId, t: NodeId) -> Result<NodeId> {
        self.same_shape("bce_logits", x, t)?;
        Ok(self.push(Op::BceLogits, &[x, t], self.shape(x).to_vec(), DType::F32))
    }

    /// Dropout at the training step held in `step` (the optimizer's u32 [1] step counter), so each
    /// replay of a recorded step draws a fresh mask.
    pub fn dropout(&mut self, x: NodeId, d: crate::ops::dropout::Dropout, step: &Tensor) -> Result<NodeId> {
        self.f32_in("dropout", x)?;
        if step.dtype != DType::U32 || step.numel() != 1 {
            return Err(Error::invalid("dropout", format!("step must be a u32 [1] counter, got {:?}", step.shape)));
        }
        if d.p == 0.0 {
            return Ok(x);
        }
        Ok(self.push(Op::Dropout(d, step.clone()), &[x], self.shape(x).to_vec(), DType::F32))
    }

    /// The same value with no gradient flowing back through it (a stop-gradient).
    pub fn detach(&mut self, x: NodeId) -> NodeId {
        let (shape, dt) = (self.shape(x).to_vec(), self.node(x).dtype);
        let id = self.push(Op::Reshape(shape.clone()), &[x], shape, dt);
        self.nodes[id.0].requires_grad = false;
        id
    }

    // ---- transformer ops ----

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
        Ok(self.push(Op::LayerNorm(eps), &[x, gamma, beta], xs, DType::F32))
    }

    /// Causal (or full) multi-head self-attention of `qkv` [B, T, 3·C], each token's row holding its
    /// query, key and value, head h in columns h·D..(h+1)·D of each third (D = C / heads): [B, T, C].
    pub fn attention(&mut self, qkv: NodeId, heads: usize, causal: bool) -> Result<NodeId> {
        self.f32_in("attention", qkv)?;
        let s = self.shape(qkv).to_vec();
        if s.len() != 3 || heads == 0 || s[2] == 0 || !s[2].is_multiple_of(3 * heads) {
            return Err(Error::invalid(
                "attention",
                format!("qkv must be [B, T, 3·C] with C divisible by heads = {heads}, got {s:?}"),
            ));
        }
        Ok(self.push(Op::Attention { heads, causal }, &[qkv], vec![s[0], s[1], s[2] / 3], DType::F32))
    }

    /// Rows of `table` [V, C] picked by the u32 `ids` (any shape S): [S..., C].
    pub fn embedding(&mut self, ids: NodeId, table: NodeId) -> Result<NodeId> {
        self.f32_in("embedding", table)?;
        let ts = self.shape(table).to_vec();
        if self.node(ids).dtype != DType::U32 || ts.len() != 2 {
            return Err(Error::ShapeMismatch {
                op: "embedding",
                lhs: self.shape(ids).to_vec(),
                rhs: ts,
                hint: " (ids u32 of any shape and a table [V, C] f32)".into(),
            });
        }
        let mut shape = self.shape(ids).to_vec();
        shape.push(ts[1]);
        Ok(self.push(Op::Embedding, &[ids, table], shape, DType::F32))
    }

    // ---- convolution ----

    /// x [N, Cin, H, W] * w [Cout, Cin, K, K] → [N, Cout, Ho, Wo], Ho = ⌊(H + 2p − K)/s⌋ + 1.
    pub fn conv2d(&mut self, x: NodeId, w: NodeId, opts: Conv2d) -> Result<NodeId> {
        self.f32_in("conv2d", x)?;
        self.f32_in("conv2d", w)?;
        let s = conv::conv2d_shape(self.shape(x), self.shape(w), opts)?;
        Ok(self.push(Op::Conv2d(opts), &[x, w], s.y_shape(), DType::F32))
    }

    /// Transposed convolution with PyTorch's semantics and weight layout: x [N, Cin, H, W],
    /// w [Cin, Cout, K, K] → [N, Cout, (H−1)s − 2p + K + output_padding, ...].
    pub fn conv_transpose2d(&mut self, x: NodeId, w: NodeId, opts: Conv2d, output_padding: usize) -> Result<NodeId> {
        self.f32_in("conv_transpose2d", x)?;
        self.f32_in("conv_transpose2d", w)?;
        // The shape of the convolution this is the adjoint of: its input is our output.
        let s = conv::conv_transpose2d_shape(self.shape(x), self.shape(w), opts, output_padding)?;
        self.conv2d_backward_input(x, w, (s.h, s.w), opts)
    }

    fn conv2d_backward_input(&mut self, dy: NodeId, w: NodeId, hw: (usize, usize), opts: Conv2d) -> Result<NodeId> {
        let (ds, ws) = (self.shape(dy).to_vec(), self.shape(w).to_vec());
        if ds.len() != 4 || ws.len() != 4 || ds[1] != ws[0] {
            return Err(Error::ShapeMismatch {
                op: "conv2d_backward_input",
                lhs: ds,
                rhs: ws,
                hint: " (dy [N, Cout, Ho, Wo] and w [Cout, Cin, K, K])".into(),
            });
        }
        let x = [ds[0], ws[1], hw.0, hw.1];
        let s = conv::conv2d_shape(&x, &ws, opts)?;
        if s.y_shape() != ds {
            return Err(Error::ShapeMismatch {
                op: "conv2d_backward_input",
                lhs: ds,
                rhs: s.y_shape(),
                hint: format!(" (an input of {}x{} gives the second)", hw.0, hw.1),
            });
        }
        Ok(self.push(Op::Conv2dBackwardInput(opts, hw), &[dy, w], x.to_vec(), DType::F32))
    }

    fn conv2d_backward_weight(&mut self, x: NodeId, dy: NodeId, k: usize, opts: Conv2d) -> Result<NodeId> {
        let (xs, ds) = (self.shape(x).to_vec(), self.shape(dy).to_vec());
        let bad = || Error::ShapeMismatch {
            op: "conv2d_backward_weight",
            lhs: xs.clone(),
            rhs: ds.clone(),
            hint: format!(" (x [N, Cin, H, W] and the dy of a {k}x{k} convolution of it)"),
        };
        if xs.len() != 4 || ds.len() != 4 || xs[0] != ds[0] {
            return Err(bad());
        }
        let w = [ds[1], xs[1], k, k];
        let s = conv::conv2d_shape(&xs, &w, opts)?;
        if s.y_shape() != ds {
            return Err(bad());
        }
        Ok(self.push(Op::Conv2dBackwardWeight(opts, k), &[x, dy], w.to_vec(), DType::F32))
    }

    // ---- batch norm ----

    /// Batch norm in training mode of x [N, C, H, W] or [N, C] with gain and bias [C]: each channel is
    /// normalised with its mean and biased variance over the batch (and positions), then scaled and
    /// shifted. `running` (f32 [C] mean and variance) are updated by every run of the plan.
    pub fn batch_norm(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f32,
        running: Option<BnRunning>,
    ) -> Result<NodeId> {
        for id in [x, gamma, beta] {
            self.f32_in("batch_norm", id)?;
        }
        let xs = self.shape(x).to_vec();
        if !(xs.len() == 2 || xs.len() == 4) || xs.contains(&0) {
            return Err(Error::invalid("batch_norm", format!("x of shape {xs:?} must be [N, C, H, W] or [N, C]")));
        }
        let c = xs[1];
        for p in [gamma, beta] {
            if self.shape(p) != [c] {
                return Err(Error::ShapeMismatch {
                    op: "batch_norm",
                    lhs: xs,
                    rhs: self.shape(p).to_vec(),
                    hint: " (gamma and beta must be [C], C the second axis of x)".into(),
                });
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid("batch_norm", format!("eps = {eps} must be finite and > 0")));
        }
        if let Some(r) = &running {
            let count = xs[0] * xs[2..].iter().product::<usize>();
            if r.mean.shape != [c] || r.var.shape != [c] || r.mean.dtype != DType::F32 || r.var.dtype != DType::F32 {
                return Err(Error::invalid(
                    "batch_norm",
                    format!("running statistics must be f32 [{c}], got {:?} and {:?}", r.mean.shape, r.var.shape),
                ));
            }
            if count < 2 || !(0.0..=1.0).contains(&r.momentum) {
                return Err(Error::invalid(
                    "batch_norm",
                    format!(
                        "running statistics need >= 2 values per channel (x is {xs:?}) and momentum in [0, 1] ({})",
                        r.momentum
                    ),
                ));
            }
        }
        Ok(self.push(Op::BatchNorm { eps, running }, &[x, gamma, beta], xs, DType::F32))
    }

    // ---- group norm ----

    /// Group norm of `x` [N, C, H, W] or [N, C]: the C channels form `groups` groups of consecutive
    /// channels, each (sample, group) normalised over its channels and positions, then scaled and shifted
    /// per channel by gamma and beta [C].
    pub fn group_norm(&mut self, x: NodeId, gamma: NodeId, beta: NodeId, groups: usize, eps: f32) -> Result<NodeId> {
        for id in [x, gamma, beta] {
            self.f32_in("group_norm", id)?;
        }
        let xs = self.shape(x).to_vec();
        if !(xs.len() == 2 || xs.len() == 4) || xs.contains(&0) || groups == 0 || !xs[1].is_multiple_of(groups) {
            return Err(Error::invalid(
                "group_norm",
                format!("x must be [N, C, H, W] or [N, C] with C divisible by groups = {groups}, got {xs:?}"),
            ));
        }
        for p in [gamma, beta] {
            if self.shape(p) != [xs[1]] {
                return Err(Error::ShapeMismatch {
                    op: "group_norm",
                    lhs: xs,
                    rhs: self.shape(p).to_vec(),
                    hint: " (gamma and beta must be [C], C the second axis of x)".into(),
                });
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid("group_norm", format!("eps must be positive, got {eps}")));
        }
        Ok(self.push(Op::GroupNorm { groups, eps }, &[x, gamma, beta], xs, DType::F32))
    }

    // ---- composites ----

    /// Mean squared error, shape [1].
    pub fn mse(&mut self, pred: NodeId, target: NodeId) -> Result<NodeId> {
        self.same_shape("mse", pred, target)?;
        let d = self.sub(pred, target)?;
        let sq = self.unary(Unary::Square, d)?;
        self.mean_all(sq)
    }

    /// The parameters of the graph, in order of appearance.
    pub fn params(&self) -> Vec<NodeId> {
        (0..self.nodes.len()).map(NodeId).filter(|&i| matches!(self.node(i).op, Op::Param(_))).collect()
    }

    pub fn tensor_of(&self, id: NodeId) -> Option<&Tensor> {
        match &self.node(id).op {
            Op::Input(t) | Op::Param(t) | Op::Const(t) => Some(t),
            _ => None,
        }
    }
}
