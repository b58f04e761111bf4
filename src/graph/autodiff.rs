//! Reverse-mode autodiff: the backward pass is appended to the graph as ordinary nodes.
//!
//! Each op's rule sits in `rule` beside the others and builds input gradients from graph ops, so the
//! backward pass is planned, captured and replayed like the forward, and differentiating a gradient
//! (a GAN gradient penalty) is one more `backward` call. Every op's rule is built from differentiable
//! ops except `UnaryBackward` with respect to `x`, which needs the activation's second derivative:
//! it is provided for the piecewise-linear activations (Relu, LeakyRelu, Abs, Neg, Sign: zero) and for
//! Square (2·dy); the others return an error naming the op if a second derivative is asked of them.
//! The fused norm and transformer ops (layer norm, batch norm, attention) have first derivatives only: their backward
//! kernels are not differentiated again; the embedding's backward is linear and is.

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::ops::elementwise::{Binary, Unary};
use crate::ops::matmul::MatmulOpts;
use crate::tensor::DType;

impl Graph {
    /// Appends the gradient of `loss` (any shape; seeded with ones) with respect to each of `wrt`, and
    /// returns the gradient nodes in the same order. A `wrt` node that `loss` does not depend on gets a
    /// zero gradient. Gradients reaching a node along several paths are summed.
    pub fn backward(&mut self, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
        let shape = self.shape(loss).to_vec();
        let seed = self.fill(&shape, 1.0)?;
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
            let gx = self.rule(id, gy)?;
            for (x, g) in inputs.into_iter().zip(gx) {
                let Some(g) = g else { continue };
                if !self.node(x).requires_grad {
                    continue;
                }
                let acc = match grads.get(&x) {
                    Some(&prev) => self.add(prev, g)?,
                    None => g,
                };
                grads.insert(x, acc);
            }
        }
        wrt.iter()
            .map(|&w| match grads.get(&w) {
                Some(&g) => Ok(g),
                None => {
                    let shape = self.shape(w).to_vec();
                    self.fill(&shape, 0.0)
                }
            })
            .collect()
    }

    /// Gradients of node `id`'s inputs given the gradient `gy` of its output (None: no gradient).
    fn rule(&mut self, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let node = self.node(id).clone();
        let x = |k: usize| node.inputs[k];
        let shape_of = |g: &Graph, k: usize| g.shape(node.inputs[k]).to_vec();
        Ok(match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Fill(_) => vec![],
            Op::Unary(op, alpha) => vec![Some(self.unary_backward(*op, *alpha, x(0), gy)?)],
            Op::UnaryBackward(op, alpha) => {
                // y = dy * f'(x): linear in dy; in x it needs f''.
                let g_dy = self.unary_backward(*op, *alpha, x(0), gy)?;
                let g_x = if self.node(x(0)).requires_grad {
                    match op {
                        Unary::Relu | Unary::LeakyRelu | Unary::Abs | Unary::Neg | Unary::Sign => None,
                        Unary::Square => {
                            let t = self.mul(x(1), gy)?;
                            Some(self.scale(t, 2.0)?)
                        }
                        other => {
                            return Err(Error::invalid(
                                "backward",
                                format!("the second derivative of {other:?} is not implemented"),
                            ))
                        }
                    }
                } else {
                    None
                };
                vec![g_x, Some(g_dy)]
            }
            Op::Binary(op) => {
                let (a, b) = (x(0), x(1));
                let (sa, sb) = (shape_of(self, 0), shape_of(self, 1));
                let (ga, gb) = match op {
                    Binary::Add => (gy, gy),
                    Binary::Sub => (gy, self.scale(gy, -1.0)?),
                    Binary::Mul => (self.mul(gy, b)?, self.mul(gy, a)?),
                    Binary::Div => {
                        let ga = self.div(gy, b)?;
                        // d(a/b)/db = -a/b² = -(a/b)/b
                        let q = self.div(id, b)?;
                        let t = self.mul(gy, q)?;
                        (ga, self.scale(t, -1.0)?)
                    }
                    Binary::Max | Binary::Min => {
                        // The gradient goes to the larger (smaller) operand; ties go to `a`.
                        let cmp = if *op == Binary::Max { Binary::Less } else { Binary::Greater };
                        let b_wins = self.binary(cmp, a, b)?;
                        let a_wins = self.scalar(Binary::Sub, b_wins, 1.0, true)?;
                        (self.mul(gy, a_wins)?, self.mul(gy, b_wins)?)
                    }
                    Binary::Pow => {
                        // d(a^b)/da = b·a^b/a; d(a^b)/db = a^b·ln a (a > 0, as the forward requires).
                        let t = self.mul(id, b)?;
                        let t = self.div(t, a)?;
                        let ga = self.mul(gy, t)?;
                        let ln = self.unary(Unary::Log, a)?;
                        let t = self.mul(id, ln)?;
                        (ga, self.mul(gy, t)?)
                    }
                    Binary::Greater | Binary::Less | Binary::Equal => return Ok(vec![None, None]),
                };
                vec![Some(self.sum_to(ga, &sa)?), Some(self.sum_to(gb, &sb)?)]
            }
            Op::Scalar { op, s, reverse } => {
                let (s, xi) = (*s, x(0));
                let g = match (op, reverse) {
                    (Binary::Add, _) => gy,
                    (Binary::Sub, false) => gy,
                    (Binary::Sub, true) => self.scale(gy, -1.0)?,
                    (Binary::Mul, _) => self.scale(gy, s)?,
                    (Binary::Div, false) => self.scale(gy, 1.0 / s)?,
                    (Binary::Div, true) => {
                        // d(s/x)/dx = -s/x² = -(s/x)/x
                        let q = self.div(id, xi)?;
                        let t = self.mul(gy, q)?;
                        self.scale(t, -1.0)?
                    }
                    (Binary::Pow, false) => {
                        // d(x^s)/dx = s·x^(s-1)
                        let p = self.scalar(Binary::Pow, xi, s - 1.0, false)?;
                        let t = self.scale(p, s)?;
                        self.mul(gy, t)?
                    }
                    (Binary::Pow, true) => {
                        // d(s^x)/dx = s^x·ln s
                        let t = self.scale(id, s.ln())?;
                        self.mul(gy, t)?
                    }
                    (Binary::Max | Binary::Min, _) => {
                        let keep_op = if *op == Binary::Max { Binary::Less } else { Binary::Greater };
                        // x loses where x < s (max) / x > s (min); ties keep the gradient.
                        let lose = self.scalar(keep_op, xi, s, false)?;
                        let keep = self.scalar(Binary::Sub, lose, 1.0, true)?;
                        self.mul(gy, keep)?
                    }
                    (Binary::Greater | Binary::Less | Binary::Equal, _) => return Ok(vec![None]),
                };
                vec![Some(g)]
            }
            Op::Matmul(o) => {
                let (a, b) = (x(0), x(1));
                let (sa, sb) = (shape_of(self, 0), shape_of(self, 1));
                // With A' = op(A), B' = op(B): dA' = α·g·B'ᵀ and dB' = α·A'ᵀ·g; a stored-transposed
                // operand takes the transpose of its gradient.
                let opts = |trans_a, trans_b| MatmulOpts { trans_a, trans_b, alpha: o.alpha };
                let ga = if o.trans_a {
                    self.matmul(b, gy, opts(o.trans_b, true))?
                } else {
                    self.matmul(gy, b, opts(false, !o.trans_b))?
                };
                let gb = if o.trans_b {
                    self.matmul(gy, a, opts(true, o.trans_a))?
                } else {
                    self.matmul(a, gy, opts(!o.trans_a, false))?
                };
                vec![Some(self.reduce_batch(ga, &sa)?), Some(self.reduce_batch(gb, &sb)?)]
            }
            Op::Sum { axis, keepdim } | Op::Mean { axis, keepdim } => {
                let sx = shape_of(self, 0);
                let mut kept = sx.clone();
                kept[*axis] = 1;
                let g = if *keepdim { gy } else { self.reshape(gy, &kept)? };
                let g = self.broadcast_to(g, &sx)?;
                let g = if matches!(node.op, Op::Mean { .. }) { self.scale(g, 1.0 / sx[*axis] as f32)? } else { g };
                vec![Some(g)]
            }
            Op::SumTo(_) => {
                let sx = shape_of(self, 0);
                vec![Some(self.broadcast_to(gy, &sx)?)]
            }
            Op::BroadcastTo(_) => {
                let sx = shape_of(self, 0);
                vec![Some(self.sum_to(gy, &sx)?)]
            }
            Op::Softmax => {
                // dx = y ⊙ (g − Σ g⊙y) along the last axis
                let last = node.shape.len() - 1;
                let gyy = self.mul(gy, id)?;
                let s = self.sum(gyy, last, true)?;
                let d = self.sub(gy, s)?;
                vec![Some(self.mul(id, d)?)]
            }
            Op::LogSoftmax => {
                // dx = g − softmax(x) · Σ g
                let last = node.shape.len() - 1;
                let s = self.sum(gy, last, true)?;
                let p = self.unary(Unary::Exp, id)?;
                let t = self.mul(p, s)?;
                vec![Some(self.sub(gy, t)?)]
            }
            Op::Reshape(_) => {
                let sx = shape_of(self, 0);
                vec![Some(self.reshape(gy, &sx)?)]
            }
            Op::Transpose(perm) => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                vec![Some(self.transpose(gy, &inv)?)]
            }
            Op::Slice { axis, start, .. } => {
                let sx = shape_of(self, 0);
                vec![Some(self.pad(gy, &sx, *axis, *start)?)]
            }
            Op::Pad { axis, start, .. } => {
                let len = shape_of(self, 0)[*axis];
                vec![Some(self.slice(gy, *axis, *start, len)?)]
            }
            Op::Concat(axis) => {
                let mut out = Vec::new();
                let mut off = 0;
                for k in 0..node.inputs.len() {
                    let len = shape_of(self, k)[*axis];
                    out.push(Some(self.slice(gy, *axis, off, len)?));
                    off += len;
                }
                out
            }
            Op::CrossEntropy => {
                let (logits, targets) = (x(0), x(1));
                let g = self.push(Op::CrossEntropyBackward, &[logits, targets, id, gy], shape_of(self, 0), DType::F32);
                vec![Some(g), None]
            }
            Op::BceLogits => {
                let (xi, t) = (x(0), x(1));
                let gx = self.push(Op::BceLogitsBackward, &[xi, t, gy], shape_of(self, 0), DType::F32);
                // d/dt = −x
                let gt = if self.node(t).requires_grad {
                    let m = self.mul(gy, xi)?;
                    Some(self.scale(m, -1.0)?)
                } else {
                    None
                };
                vec![Some(gx), gt]
            }
            Op::Dropout(d, step) => {
                let sx = shape_of(self, 0);
                vec![Some(self.push(Op::DropoutBackward(*d, step.clone()), &[gy], sx, DType::F32))]
            }
            // Dropout's backward is the same linear map (same mask), so it is its own derivative.
            Op::DropoutBackward(d, step) => {
                let sx = shape_of(self, 0);
                vec![Some(self.push(Op::DropoutBackward(*d, step.clone()), &[gy], sx, DType::F32))]
            }
            Op::LayerNorm(_) => {
                let (xi, gamma) = (x(0), x(1));
                let dx = self.push(Op::LayerNormBackward, &[xi, gamma, id, gy], shape_of(self, 0), DType::F32);
                let c = shape_of(self, 1);
                let dgamma = self.push(Op::Output(1), &[dx], c.clone(), DType::F32);
                let dbeta = self.push(Op::Output(2), &[dx], c, DType::F32);
                vec![Some(dx), Some(dgamma), Some(dbeta)]
            }
            Op::Attention { heads, causal } => {
                let op = Op::AttentionBackward { heads: *heads, causal: *causal };
                vec![Some(self.push(op, &[x(0), id, gy], shape_of(self, 0), DType::F32))]
            }
            Op::Embedding => {
                let vocab = shape_of(self, 1)[0];
                vec![None, Some(self.push(Op::EmbeddingBackward(vocab), &[x(0), gy], shape_of(self, 1), DType::F32))]
            }
            Op::EmbeddingBackward(_) => {
                // Linear in dout: its gradient gathers the rows back.
                vec![None, Some(self.embedding(x(0), gy)?)]
            }
            // The three convolution ops are bilinear and adjoint to one another
            // (⟨dy, conv(x, w)⟩ = ⟨bwd_input(dy, w), x⟩ = ⟨bwd_weight(x, dy), w⟩), so each one's
            // gradients are the other two, and gradients of gradients exist to any order.
            Op::Conv2d(o) => {
                let (xi, w) = (x(0), x(1));
                let (sx, sw) = (shape_of(self, 0), shape_of(self, 1));
                let gx = self.conv2d_backward_input(gy, w, (sx[2], sx[3]), *o)?;
                let gw = self.conv2d_backward_weight(xi, gy, sw[2], *o)?;
                vec![Some(gx), Some(gw)]
            }
            Op::Conv2dBackwardInput(o, _) => {
                let (dy, w) = (x(0), x(1));
                let k = shape_of(self, 1)[2];
                let g_dy = self.conv2d(gy, w, *o)?;
                let g_w = self.conv2d_backward_weight(gy, dy, k, *o)?;
                vec![Some(g_dy), Some(g_w)]
            }
            Op::Conv2dBackwardWeight(o, _) => {
                let (xi, dy) = (x(0), x(1));
                let sx = shape_of(self, 0);
                let g_x = self.conv2d_backward_input(dy, gy, (sx[2], sx[3]), *o)?;
                let g_dy = self.conv2d(xi, gy, *o)?;
                vec![Some(g_x), Some(g_dy)]
            }
            Op::BatchNorm { .. } => {
                let (xi, gamma) = (x(0), x(1));
                let dx = self.push(Op::BatchNormBackward, &[xi, gamma, id, gy], shape_of(self, 0), DType::F32);
                let c = shape_of(self, 1);
                let dgamma = self.push(Op::Output(1), &[dx], c.clone(), DType::F32);
                let dbeta = self.push(Op::Output(2), &[dx], c, DType::F32);
                vec![Some(dx), Some(dgamma), Some(dbeta)]
            }
            Op::GroupNorm { groups, .. } => {
                let (xi, gamma) = (x(0), x(1));
                let dx = self.push(Op::GroupNormBackward(*groups), &[xi, gamma, id, gy], shape_of(self, 0), DType::F32);
                let c = shape_of(self, 1);
                let dgamma = self.push(Op::Output(1), &[dx], c.clone(), DType::F32);
                let dbeta = self.push(Op::Output(2), &[dx], c, DType::F32);
                vec![Some(dx), Some(dgamma), Some(dbeta)]
            }
            Op::LayerNormBackward
            | Op::AttentionBackward { .. }
            | Op::Output(_)
            | Op::BatchNormBackward
            | Op::GroupNormBackward(_) => {
                return Err(Error::invalid(
                    "backward",
                    format!("the second derivative through {} is not implemented", node.op.name()),
                ))
            }
            Op::CrossEntropyBackward | Op::BceLogitsBackward => {
                return Err(Error::invalid(
                    "backward",
                    format!("the second derivative of {} is not implemented", node.op.name()),
                ))
            }
        })
    }

    /// Sums a batched matmul gradient over the batch when the operand was a shared rank-2 matrix (or a
    /// batch-1 rank-3 one).
    fn reduce_batch(&mut self, g: NodeId, shape: &[usize]) -> Result<NodeId> {
        if self.shape(g) == shape {
            return Ok(g);
        }
        let s = self.sum(g, 0, false)?;
        self.reshape(s, shape)
    }
}
