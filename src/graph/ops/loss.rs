//! Losses: cross-entropy against class ids (fused with the log-softmax), binary cross-entropy with
//! logits (elementwise, or as one mean with the last layer's bias added in), and the mean squared error
//! composite.

use super::{map2, single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::elementwise::Unary;
use crate::ops::loss as eager;
use crate::tensor::DType;

impl Graph {
    /// Cross-entropy of each row of `logits` [N, V] against class ids `targets` (u32 [N]), fused with
    /// the log-softmax: shape [N]. Class ids must be < V (the data loader checks them once; the kernel
    /// clamps so a bad id cannot read out of bounds).
    pub fn cross_entropy(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId> {
        self.check_ce("cross_entropy", logits, targets)?;
        Ok(self.push(CrossEntropy, &[logits, targets], vec![self.shape(logits)[0]], DType::F32))
    }

    /// Logits [N, V] f32 and targets [N] u32.
    fn check_ce(&self, op: &'static str, logits: NodeId, targets: NodeId) -> Result<()> {
        self.f32_in(op, logits)?;
        let (ls, ts) = (self.shape(logits).to_vec(), self.shape(targets).to_vec());
        if ls.len() != 2 || ts.len() != 1 || ts[0] != ls[0] || self.node(targets).dtype != DType::U32 {
            return Err(Error::ShapeMismatch {
                op,
                lhs: ls,
                rhs: ts,
                hint: " (logits [N, V] f32 and targets [N] u32)".into(),
            });
        }
        Ok(())
    }

    /// Mean cross-entropy over the rows, shape [1]: `cross_entropy` then `mean_all`, with one backward
    /// dispatch (the mean's broadcast and 1/N scaling happen inside `cross_entropy_bwd`).
    pub fn cross_entropy_mean(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId> {
        self.check_ce("cross_entropy_mean", logits, targets)?;
        if self.shape(logits)[0] == 0 {
            return Err(Error::invalid("cross_entropy_mean", "the logits have no rows"));
        }
        Ok(self.push(CrossEntropyMean, &[logits, targets], vec![1], DType::F32))
    }

    /// Binary cross-entropy with logits, elementwise: max(x,0) − x·t + log(1 + e^−|x|).
    pub fn bce_logits(&mut self, x: NodeId, t: NodeId) -> Result<NodeId> {
        self.same_shape("bce_logits", x, t)?;
        Ok(self.push(BceLogits, &[x, t], self.shape(x).to_vec(), DType::F32))
    }

    /// mean(bce_logits(x + b, t)), shape [1], in one dispatch (its backward in one more): b, when given,
    /// holds one value per column of x [rows, ...] and is added to every row (the bias of the layer that
    /// made x, whose add then costs no dispatch).
    pub fn bce_logits_mean(&mut self, x: NodeId, t: NodeId, b: Option<NodeId>) -> Result<NodeId> {
        self.same_shape("bce_logits_mean", x, t)?;
        let s = self.shape(x).to_vec();
        if s.is_empty() || s.contains(&0) {
            return Err(Error::invalid("bce_logits_mean", format!("the logits {s:?} are empty")));
        }
        let mut inputs = vec![x, t];
        if let Some(b) = b {
            self.f32_in("bce_logits_mean", b)?;
            let cols: usize = s[1..].iter().product();
            if self.shape(b).iter().product::<usize>() != cols {
                return Err(Error::ShapeMismatch {
                    op: "bce_logits_mean",
                    lhs: s,
                    rhs: self.shape(b).to_vec(),
                    hint: format!(" (the bias holds one value per column, {cols})"),
                });
            }
            inputs.push(b);
        }
        Ok(self.push(BceMean, &inputs, vec![1], DType::F32))
    }

    /// Mean squared error, shape [1].
    pub fn mse(&mut self, pred: NodeId, target: NodeId) -> Result<NodeId> {
        self.same_shape("mse", pred, target)?;
        let d = self.sub(pred, target)?;
        let sq = self.unary(Unary::Square, d)?;
        self.mean_all(sq)
    }
}

/// Cross-entropy of each row of logits [N, V] against u32 class ids [N]: loss [N]; keeps the row
/// logsumexp for its backward as a second output.
#[derive(Debug)]
struct CrossEntropy;

impl OpDef for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (loss, lse) = eager::cross_entropy(f.dev, f.x[0], f.x[1])?;
        Ok((loss, vec![lse]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (logits, targets) = (g.in_node(id, 0), g.in_node(id, 1));
        let shape = g.in_shape(id, 0);
        let gl = g.push(CrossEntropyBackward { mean: false }, &[logits, targets, id, gy], shape, DType::F32);
        Ok(vec![Some(gl), None])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (lg, t) = (x[0], x[1]);
        let data = lg
            .data
            .chunks(lg.shape[1])
            .zip(&t.data)
            .map(|(r, &c)| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                m + r.iter().map(|z| (z - m).exp()).sum::<f64>().ln() - r[c as usize]
            })
            .collect();
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// The mean over the rows of `CrossEntropy` (the same two dispatches as `cross_entropy` + `mean_all`);
/// keeps the row logsumexp as a second output.
#[derive(Debug)]
struct CrossEntropyMean;

impl OpDef for CrossEntropyMean {
    fn name(&self) -> &'static str {
        "cross_entropy_mean"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (loss, lse) = eager::cross_entropy(f.dev, f.x[0], f.x[1])?;
        Ok((crate::ops::reduce::mean(f.dev, &loss, 0, true)?, vec![lse]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (logits, targets) = (g.in_node(id, 0), g.in_node(id, 1));
        let shape = g.in_shape(id, 0);
        let gl = g.push(CrossEntropyBackward { mean: true }, &[logits, targets, id, gy], shape, DType::F32);
        Ok(vec![Some(gl), None])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let rows = CrossEntropy.reference(x, &[x[1].data.len()])?;
        let mean = rows.data.iter().sum::<f64>() / rows.data.len() as f64;
        Ok(Value { shape: shape.to_vec(), data: vec![mean] })
    }
}

/// Inputs [logits, targets, the CrossEntropy node, g]: dlogits = (softmax − onehot)·g; with `mean`
/// (the CrossEntropyMean node, g of one element) every row's g is g[0]/N.
#[derive(Debug)]
struct CrossEntropyBackward {
    mean: bool,
}

impl OpDef for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let bwd = if self.mean { eager::cross_entropy_mean_backward_g } else { eager::cross_entropy_backward };
        single(bwd(f.dev, f.x[0], f.x[1], &f.aux[2][0], f.x[3])?)
    }
    fn backward(&self, _: &mut Graph, _: NodeId, _: NodeId) -> Result<Vec<Option<NodeId>>> {
        Err(Error::invalid("backward", format!("the second derivative of {} is not implemented", self.name())))
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (lg, t, g) = (x[0], x[1], x[3]);
        let rows = lg.shape[0];
        let g_of = |n: usize| if self.mean { g.data[0] / rows as f64 } else { g.data[n] };
        let mut data = Vec::with_capacity(lg.data.len());
        for (n, r) in lg.data.chunks(lg.shape[1]).enumerate() {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|z| (z - m).exp()).sum();
            for (v, z) in r.iter().enumerate() {
                let onehot = (v == t.data[n] as usize) as u8 as f64;
                data.push(((z - m).exp() / s - onehot) * g_of(n));
            }
        }
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Binary cross-entropy with logits, elementwise over (x, t).
#[derive(Debug)]
struct BceLogits;

impl OpDef for BceLogits {
    fn name(&self) -> &'static str {
        "bce_logits"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::bce_logits(f.dev, f.x[0], f.x[1])?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, t) = (g.in_node(id, 0), g.in_node(id, 1));
        let gx = g.push(BceLogitsBackward, &[x, t, gy], g.in_shape(id, 0), DType::F32);
        // d/dt = −x
        let gt = if g.node(t).requires_grad {
            let m = g.mul(gy, x)?;
            Some(g.scale(m, -1.0)?)
        } else {
            None
        };
        Ok(vec![Some(gx), gt])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(map2(x[0], x[1], |z, t| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()))
    }
}

/// Inputs [x, t, g]: dx = (sigmoid(x) − t)·g.
#[derive(Debug)]
struct BceLogitsBackward;

impl OpDef for BceLogitsBackward {
    fn name(&self) -> &'static str {
        "bce_logits_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::bce_logits_backward(f.dev, f.x[0], f.x[1], f.x[2])?)
    }
    fn backward(&self, _: &mut Graph, _: NodeId, _: NodeId) -> Result<Vec<Option<NodeId>>> {
        Err(Error::invalid("backward", format!("the second derivative of {} is not implemented", self.name())))
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let data = x[0].data.iter().zip(&x[1].data).zip(&x[2].data);
        Ok(Value {
            shape: shape.to_vec(),
            data: data.map(|((&z, &t), &g)| (1.0 / (1.0 + (-z).exp()) - t) * g).collect(),
        })
    }
}

/// Inputs [x, t] or [x, t, b]: mean(bce(x + b, t)), shape [1].
#[derive(Debug)]
struct BceMean;

impl OpDef for BceMean {
    fn name(&self) -> &'static str {
        "bce_logits_mean"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(crate::ops::bce_mean::bce_mean(f.dev, f.x[0], f.x[1], f.x.get(2).copied())?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let inputs = g.node(id).inputs.clone();
        if g.node(inputs[1]).requires_grad {
            return Err(Error::invalid("backward", "bce_logits_mean takes no gradient for its targets"));
        }
        let mut ins = inputs.clone();
        ins.push(gy);
        let gx = g.push(BceMeanBackward, &ins, g.in_shape(id, 0), DType::F32);
        let mut out = vec![Some(gx), None];
        if let Some(&b) = inputs.get(2) {
            let bs = g.shape(b).to_vec();
            let db = g.output(gx, 1, vec![bs.iter().product()]);
            out.push(Some(if bs.len() == 1 { db } else { g.reshape(db, &bs)? }));
        }
        Ok(out)
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let (xv, t) = (x[0], x[1]);
        let cols = xv.data.len() / xv.shape[0];
        let sum: f64 = (0..xv.data.len())
            .map(|i| {
                let z = xv.data[i] + x.get(2).map_or(0.0, |b| b.data[i % cols]);
                z.max(0.0) - z * t.data[i] + (-z.abs()).exp().ln_1p()
            })
            .sum();
        Ok(Value { shape: vec![1], data: vec![sum / xv.data.len() as f64] })
    }
}

/// Inputs [x, t, (b,) dy]: the logits' gradient of `BceMean`, with the bias's as second output. Not
/// differentiated again.
#[derive(Debug)]
struct BceMeanBackward;

impl OpDef for BceMeanBackward {
    fn name(&self) -> &'static str {
        "bce_logits_mean_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let b = (f.x.len() == 4).then(|| f.x[2]);
        let (dx, db) = crate::ops::bce_mean::bce_mean_backward(f.dev, f.x[0], f.x[1], b, f.x[f.x.len() - 1])?;
        Ok((dx, vec![db]))
    }
}
