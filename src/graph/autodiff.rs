//! Reverse-mode autodiff: the backward pass is appended to the graph as ordinary nodes.
//!
//! Each op's backward rule sits beside its forward in `ops/` (`OpDef::backward`) and builds input
//! gradients from graph ops, so the backward pass is planned, captured and replayed like the forward,
//! and differentiating a gradient (a GAN gradient penalty) is one more `backward` call. Every rule is
//! built from differentiable ops except a few: `unary_backward` with respect to x needs the
//! activation's second derivative (provided for the piecewise-linear activations and Square), and the
//! fused norm, attention and loss backward kernels are not differentiated again (their rules say so
//! by name). The embedding's backward is linear and is.

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::error::Result;

impl Graph {
    /// Appends the gradient of `loss` (any shape; seeded with ones) with respect to each of `wrt`, and
    /// returns the gradient nodes in the same order. A `wrt` node that `loss` does not depend on gets a
    /// zero gradient. Gradients reaching a node along several paths are summed.
    pub fn backward(&mut self, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
        self.backward_seeded(loss, wrt, None)
    }

    /// `backward` seeded with the value of node `seed` (an f32 node of as many elements as `loss`)
    /// instead of ones: the gradients of seed · loss. Loss scaling seeds with an input bound to the
    /// device's scale (`optim::LossScaler::seed`), which changes from step to step without a new graph.
    pub fn backward_seeded(&mut self, loss: NodeId, wrt: &[NodeId], seed: Option<NodeId>) -> Result<Vec<NodeId>> {
        let shape = self.shape(loss).to_vec();
        let from = self.nodes.len();
        self.matmul_pairs.clear();
        self.backward_from = Some(self.backward_from.map_or(from, |f| f.min(from)));
        let seed = match seed {
            None => self.fill(&shape, 1.0)?,
            Some(s) if self.node(s).dtype != crate::tensor::DType::F32 => {
                return Err(crate::error::Error::invalid("backward", "the seed must be an f32 node"))
            }
            Some(s) if self.shape(s) == shape => s,
            Some(s) => self.reshape(s, &shape)?,
        };
        let mut grads: HashMap<NodeId, NodeId> = HashMap::new();
        grads.insert(loss, seed);
        // Nodes only depend on earlier nodes, so a reverse sweep over indices sees every consumer of a
        // node before the node itself: its gradient is complete when it is reached.
        for i in (0..=loss.0).rev() {
            let id = NodeId(i);
            let Some(&gy) = grads.get(&id) else { continue };
            if !self.node(id).requires_grad {
                continue;
            }
            let inputs = self.node(id).inputs.clone();
            let fresh = self.nodes.len();
            let gx = match &self.node(id).op {
                Op::Input(_) | Op::Param(_) | Op::Const(_) => vec![],
                Op::Def(d) => d.clone().backward(self, id, gy)?,
            };
            for (x, g) in inputs.iter().copied().zip(gx.iter().copied()) {
                let Some(g) = g else { continue };
                if !self.node(x).requires_grad {
                    continue;
                }
                let acc = match grads.get(&x) {
                    Some(&prev) if self.fold_sum(prev, g, fresh, &gx, &grads) => g,
                    Some(&prev) => self.add(prev, g)?,
                    None => g,
                };
                grads.insert(x, acc);
            }
        }
        let out = wrt
            .iter()
            .map(|&w| match grads.get(&w) {
                Some(&g) => Ok(g),
                None => {
                    let shape = self.shape(w).to_vec();
                    self.fill(&shape, 0.0)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // Last, once every gradient sum is folded: independent products of one rule share a dispatch.
        self.pair_matmuls(from, &out);
        Ok(out)
    }

    /// Folds `prev + g` into g's own op when that op has an accumulating variant (a layer-norm backward
    /// adds prev to dx; a matmul adds into prev's buffer) and nothing else reads g: g was made by the
    /// backward rule just run (index ≥ `fresh`), is that rule's gradient for one input only, and its
    /// other users only pass on its second outputs. An in-place variant makes prev's buffer g's output,
    /// so prev must own its buffer outright: it is made by an op with an in-place accumulating variant
    /// itself (a plain matmul, whose output is always a fresh buffer, never a view), no node reads it,
    /// and it is the gradient of one node only. g's node then computes prev + g itself (one dispatch
    /// fewer, the same sum: floating-point addition commutes). prev is older than g, so the order of
    /// nodes stays topological.
    fn fold_sum(
        &mut self,
        prev: NodeId,
        g: NodeId,
        fresh: usize,
        gx: &[Option<NodeId>],
        grads: &HashMap<NodeId, NodeId>,
    ) -> bool {
        if g.0 < fresh || prev.0 >= g.0 || gx.iter().filter(|&&x| x == Some(g)).count() != 1 {
            return false;
        }
        if self.shape(prev) != self.shape(g) || self.node(prev).dtype != self.node(g).dtype {
            return false;
        }
        let Op::Def(d) = &self.node(g).op else { return false };
        let Some(acc) = d.accumulating() else { return false };
        if acc.in_place {
            let owns_buffer = matches!(&self.node(prev).op, Op::Def(d) if d.accumulating().is_some_and(|a| a.in_place));
            let shared = grads.values().filter(|&&v| v == prev).count() != 1;
            if !owns_buffer || shared || self.nodes.iter().any(|n| n.inputs.contains(&prev)) {
                return false;
            }
        }
        let others_ok = self.nodes[fresh..].iter().filter(|n| n.inputs.contains(&g)).all(|n| match &n.op {
            Op::Def(d) => d.reads_second_output(),
            _ => false,
        });
        if !others_ok {
            return false;
        }
        let node = &mut self.nodes[g.0];
        node.op = Op::Def(acc.def);
        node.inputs.push(prev);
        true
    }

    /// The shape of input `k` of node `id` (backward rules use it to shape their gradients).
    pub(crate) fn in_shape(&self, id: NodeId, k: usize) -> Vec<usize> {
        self.shape(self.node(id).inputs[k]).to_vec()
    }

    /// Input `k` of node `id`.
    pub(crate) fn in_node(&self, id: NodeId, k: usize) -> NodeId {
        self.node(id).inputs[k]
    }
}
