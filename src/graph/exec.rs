//! The planner and executor.
//!
//! `Plan::build` takes the nodes a step needs (everything the kept outputs depend on), computes each
//! node's last use (liveness), and runs the step once through the eager ops inside `Device::capture`,
//! dropping every intermediate right after its last use. The capture's private allocator turns those
//! drops into buffer reuse, so the buffers the capture made are the step's memory plan, and its peak is
//! known before the first step runs. Each `run` replays the recording: one queue submission on a GPU,
//! no host wait; outputs are read back only when asked (`Plan::read`, asynchronous).

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::device::{Device, Download, Recording};
use crate::error::Result;
use crate::ops::{
    attention, chnorm, conv, dropout, elementwise as ew, embedding, layout, loss, matmul, norm, reduce, softmax,
};
use crate::tensor::Tensor;

/// A compiled training (or inference) step.
pub struct Plan {
    rec: Recording,
    kept: HashMap<NodeId, Tensor>,
    /// Bytes of the tensors bound into the graph (inputs, parameters, constants): live across steps.
    pub persistent_bytes: u64,
}

impl Plan {
    /// Plans and records the step that computes `keep` (plus whatever `after` issues, for example an
    /// optimizer update given the kept gradient tensors, inside the same recording).
    pub fn build(
        dev: &Device,
        g: &Graph,
        keep: &[NodeId],
        after: impl FnOnce(&[Tensor]) -> Result<()>,
    ) -> Result<Plan> {
        Plan::build_with(dev, g, keep, || Ok(()), after)
    }

    /// Like `build`, with work recorded ahead of the graph in the same step: `before` can write the
    /// graph's input tensors on the device (sampling a batch from data that lives there), so a step
    /// needs nothing from the host.
    pub fn build_with(
        dev: &Device,
        g: &Graph,
        keep: &[NodeId],
        before: impl FnOnce() -> Result<()>,
        after: impl FnOnce(&[Tensor]) -> Result<()>,
    ) -> Result<Plan> {
        let order = schedule(g, keep);
        let last = last_uses(g, &order, keep);
        let persistent_bytes = order.iter().filter_map(|&i| g.tensor_of(i)).map(|t| t.numel() as u64 * 4).sum();
        let (kept, rec) = dev.capture(|| {
            before()?;
            let mut vals: HashMap<NodeId, Tensor> = HashMap::new();
            // Second outputs of multi-output ops (a cross-entropy's row logsumexp, a layer norm's row
            // statistics, an attention's logsumexp, a layer norm backward's dgamma and dbeta), freed
            // with their node's value.
            let mut aux: HashMap<NodeId, Vec<Tensor>> = HashMap::new();
            for &id in &order {
                let node = g.node(id);
                let ins: Vec<&Tensor> = node.inputs.iter().map(|i| &vals[i]).collect();
                let aux_of = |k: usize| -> &Vec<Tensor> { &aux[&node.inputs[k]] };
                let (out, extra) = match &node.op {
                    Op::CrossEntropy => {
                        let (loss, lse) = loss::cross_entropy(dev, ins[0], ins[1])?;
                        (loss, vec![lse])
                    }
                    Op::CrossEntropyBackward => {
                        (loss::cross_entropy_backward(dev, ins[0], ins[1], &aux_of(2)[0], ins[3])?, vec![])
                    }
                    Op::LayerNorm(eps) => {
                        let (y, mean, rstd) = norm::layer_norm(dev, ins[0], ins[1], ins[2], *eps)?;
                        (y, vec![mean, rstd])
                    }
                    Op::LayerNormBackward => {
                        let st = aux_of(2);
                        let (dx, dg, db) = norm::layer_norm_backward(dev, ins[0], ins[1], &st[0], &st[1], ins[3])?;
                        (dx, vec![dg, db])
                    }
                    Op::Attention { heads, causal } => {
                        let (out, lse) = attention::attention(dev, ins[0], *heads, *causal)?;
                        (out, vec![lse])
                    }
                    Op::AttentionBackward { heads, causal } => {
                        let lse = &aux_of(1)[0];
                        (attention::attention_backward(dev, ins[0], ins[1], lse, ins[2], *heads, *causal)?, vec![])
                    }
                    Op::Output(k) => (aux_of(0)[k - 1].clone(), vec![]),
                    Op::GroupNorm { groups, eps } => {
                        let (y, mean, rstd) = chnorm::group_norm(dev, ins[0], ins[1], ins[2], *groups, *eps)?;
                        (y, vec![mean, rstd])
                    }
                    Op::GroupNormBackward(groups) => {
                        let st = aux_of(2);
                        let (dx, dg, db) =
                            chnorm::group_norm_backward(dev, ins[0], ins[1], &st[0], &st[1], ins[3], *groups)?;
                        (dx, vec![dg, db])
                    }
                    op => (forward(dev, op, &ins, &node.shape)?, vec![]),
                };
                for i in &node.inputs {
                    if last.get(i) == Some(&id) {
                        vals.remove(i);
                        aux.remove(i);
                    }
                }
                if !extra.is_empty() {
                    aux.insert(id, extra);
                }
                vals.insert(id, out);
            }
            drop(aux);
            let kept: Vec<Tensor> = keep.iter().map(|k| vals[k].clone()).collect();
            drop(vals);
            after(&kept)?;
            Ok(keep.iter().copied().zip(kept).collect::<HashMap<_, _>>())
        })?;
        Ok(Plan { rec, kept, persistent_bytes })
    }

    /// Runs the step: one submission on a GPU, never a wait.
    pub fn run(&self, dev: &Device) -> Result<()> {
        dev.replay(&self.rec)
    }

    /// The tensor holding a kept node's value (overwritten by each run).
    pub fn value(&self, id: NodeId) -> &Tensor {
        &self.kept[&id]
    }

    /// Starts reading a kept value back; ordered after the runs issued so far.
    pub fn read(&self, dev: &Device, id: NodeId) -> Result<Download> {
        dev.download(&self.value(id).buf)
    }

    /// Largest sum of live intermediate tensors during a step (bytes), known before the first run.
    pub fn planned_peak_bytes(&self) -> u64 {
        self.rec.planned_peak_bytes
    }

    /// Bytes of buffers the step's plan allocated (size-class rounding and reuse gaps included).
    pub fn allocated_bytes(&self) -> u64 {
        self.rec.allocated_bytes
    }

    pub fn dispatches(&self) -> usize {
        self.rec.len()
    }
}

/// The nodes `keep` depends on, in index order (a topological order, since inputs come first).
pub fn schedule(g: &Graph, keep: &[NodeId]) -> Vec<NodeId> {
    let mut need = vec![false; g.nodes.len()];
    for k in keep {
        need[k.0] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if need[i] {
            for inp in &g.nodes[i].inputs {
                need[inp.0] = true;
            }
        }
    }
    (0..g.nodes.len()).filter(|&i| need[i]).map(NodeId).collect()
}

/// For every scheduled node that is neither kept nor bound from outside, the node that uses it last.
pub fn last_uses(g: &Graph, order: &[NodeId], keep: &[NodeId]) -> HashMap<NodeId, NodeId> {
    let mut last = HashMap::new();
    for &id in order {
        for &i in &g.node(id).inputs {
            last.insert(i, id);
        }
    }
    last.retain(|i, _| !keep.contains(i) && g.tensor_of(*i).is_none());
    last
}

/// The forward of one op, through the eager ops (each checks its shapes again and dispatches).
fn forward(dev: &Device, op: &Op, x: &[&Tensor], shape: &[usize]) -> Result<Tensor> {
    Ok(match op {
        Op::Input(t) | Op::Param(t) | Op::Const(t) => t.clone(),
        Op::Fill(v) => layout::fill(dev, shape, *v)?,
        Op::Unary(u, alpha) => ew::unary_with(dev, *u, x[0], *alpha)?,
        Op::UnaryBackward(u, alpha) => ew::unary_backward(dev, *u, x[0], x[1], *alpha)?,
        Op::Binary(b) => ew::binary(dev, *b, x[0], x[1])?,
        Op::Scalar { op, s, reverse } => ew::scalar(dev, *op, x[0], *s, *reverse)?,
        Op::Matmul(o) => matmul::matmul(dev, x[0], x[1], *o)?,
        Op::Sum { axis, keepdim } => reduce::sum(dev, x[0], *axis, *keepdim)?,
        Op::Mean { axis, keepdim } => reduce::mean(dev, x[0], *axis, *keepdim)?,
        Op::SumTo(target) => sum_to(dev, x[0], target)?,
        Op::BroadcastTo(target) => {
            let zeros = layout::fill(dev, target, 0.0)?;
            ew::add(dev, x[0], &zeros)?
        }
        Op::Softmax => softmax::softmax(dev, x[0])?,
        Op::LogSoftmax => softmax::log_softmax(dev, x[0])?,
        Op::Reshape(s) => x[0].reshape(s)?,
        Op::Transpose(perm) => layout::transpose(dev, x[0], perm)?,
        Op::Slice { axis, start, len } => layout::slice(dev, x[0], *axis, *start, *len)?,
        Op::Pad { shape, axis, start } => {
            let out = layout::fill(dev, shape, 0.0)?;
            layout::slice_into(dev, x[0], &out, *axis, *start)?;
            out
        }
        Op::Concat(axis) => layout::concat(dev, x, *axis)?,
        Op::BceLogits => loss::bce_logits(dev, x[0], x[1])?,
        Op::BceLogitsBackward => loss::bce_logits_backward(dev, x[0], x[1], x[2])?,
        Op::Dropout(d, step) => dropout::dropout(dev, x[0], d, step)?,
        Op::DropoutBackward(d, step) => dropout::dropout_backward(dev, x[0], d, step)?,
        Op::Conv2d(o) => conv::conv2d(dev, x[0], x[1], *o)?,
        Op::Conv2dBackwardInput(o, hw) => conv::conv2d_backward_input(dev, x[0], x[1], *hw, *o)?,
        Op::Conv2dBackwardWeight(o, k) => conv::conv2d_backward_weight(dev, x[0], x[1], *k, *o)?,
        Op::Embedding => embedding::embedding(dev, x[0], x[1])?,
        Op::EmbeddingBackward(vocab) => embedding::embedding_backward(dev, x[0], x[1], *vocab)?,
        Op::CrossEntropy
        | Op::CrossEntropyBackward
        | Op::LayerNorm(_)
        | Op::LayerNormBackward
        | Op::Attention { .. }
        | Op::AttentionBackward { .. }
        | Op::Output(_)
        | Op::GroupNorm { .. }
        | Op::GroupNormBackward(_) => unreachable!("handled by the executor (several outputs)"),
    })
}

/// Sums `x` over the axes where `target` (aligned at the last axis) has extent 1 or is missing.
fn sum_to(dev: &Device, x: &Tensor, target: &[usize]) -> Result<Tensor> {
    let lead = x.shape.len() - target.len();
    let mut t = x.clone();
    for d in 0..x.shape.len() {
        let want = if d < lead { 1 } else { target[d - lead] };
        if want == 1 && t.shape[d] != 1 {
            t = reduce::sum(dev, &t, d, true)?;
        }
    }
    t.reshape(target)
}
