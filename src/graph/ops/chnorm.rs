//! Channel norms of x [N, C, H, W] (or [N, C]): batch norm with batch statistics (training mode,
//! optionally folding them into running statistics) and group norm. Each is fused: the forward keeps
//! its statistics as second outputs, the backward gives dx with dgamma and dbeta as second outputs.

use super::elementwise::unary_f64;
use super::{Accumulating, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::chnorm::{self as eager, FusedAct};
use crate::tensor::{DType, Tensor};

/// The running statistics a training-mode batch norm updates: `r = (1 − momentum)·r + momentum·batch`
/// (the variance unbiased), f32 [C] each.
#[derive(Debug, Clone)]
pub struct BnRunning {
    /// The running mean, f32 [C].
    pub mean: Tensor,
    /// The running (unbiased) variance, f32 [C].
    pub var: Tensor,
    /// The weight of each batch's statistics.
    pub momentum: f32,
}

impl Graph {
    /// An error unless x is f32 [N, C, H, W] or [N, C] with no empty axis, gamma and beta f32 [C],
    /// and eps finite and positive.
    fn check_chnorm(&self, op: &'static str, x: NodeId, gamma: NodeId, beta: NodeId, eps: f32) -> Result<()> {
        for id in [x, gamma, beta] {
            self.f32_in(op, id)?;
        }
        let xs = self.shape(x).to_vec();
        if !(xs.len() == 2 || xs.len() == 4) || xs.contains(&0) {
            return Err(Error::invalid(op, format!("x of shape {xs:?} must be [N, C, H, W] or [N, C]")));
        }
        for p in [gamma, beta] {
            if self.shape(p) != [xs[1]] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: xs,
                    rhs: self.shape(p).to_vec(),
                    hint: " (gamma and beta must be [C], C the second axis of x)".into(),
                });
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid(op, format!("eps = {eps} must be finite and > 0")));
        }
        Ok(())
    }

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
        self.batch_norm_act(x, gamma, beta, eps, running, None)
    }

    /// `batch_norm` followed by the activation `act` when given, as one node: the pair costs the norm's
    /// kernels alone, forward and backward (the norm's own output is never stored).
    pub fn batch_norm_act(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f32,
        running: Option<BnRunning>,
        act: Option<FusedAct>,
    ) -> Result<NodeId> {
        self.check_chnorm("batch_norm", x, gamma, beta, eps)?;
        let xs = self.shape(x).to_vec();
        let c = xs[1];
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
        Ok(self.push(BatchNorm { eps, running, act }, &[x, gamma, beta], xs, DType::F32))
    }

    /// Group norm of `x` [N, C, H, W] or [N, C]: the C channels form `groups` groups of consecutive
    /// channels, each (sample, group) normalised over its channels and positions, then scaled and shifted
    /// per channel by gamma and beta [C].
    pub fn group_norm(&mut self, x: NodeId, gamma: NodeId, beta: NodeId, groups: usize, eps: f32) -> Result<NodeId> {
        self.group_norm_act(x, gamma, beta, groups, eps, None)
    }

    /// `group_norm` followed by the activation `act` when given, as one node (see `batch_norm_act`).
    pub fn group_norm_act(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        groups: usize,
        eps: f32,
        act: Option<FusedAct>,
    ) -> Result<NodeId> {
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
        self.check_chnorm("group_norm", x, gamma, beta, eps)?;
        Ok(self.push(GroupNorm { groups, eps, act }, &[x, gamma, beta], xs, DType::F32))
    }
}

/// Batch norm with batch statistics: inputs [x, gamma, beta]; keeps the channel mean and rstd as second
/// outputs. With running statistics, each run also folds the batch's into them (in place), so a
/// recorded step keeps them current for eval mode. With `act`, the node's value is act(norm).
#[derive(Debug)]
struct BatchNorm {
    eps: f32,
    running: Option<BnRunning>,
    act: Option<FusedAct>,
}

/// The backward node of a norm node `id` with inputs [x, gamma, beta]: inputs [x, gamma, id, gy, beta]
/// (beta is read only with a fused activation, whose derivative needs the norm's output, recomputed),
/// and a gradient term to add last once autodiff folds a sum into it.
fn norm_backward(g: &mut Graph, def: impl OpDef + 'static, id: NodeId, gy: NodeId) -> NodeId {
    let (x, gamma, beta) = (g.in_node(id, 0), g.in_node(id, 1), g.in_node(id, 2));
    g.push(def, &[x, gamma, id, gy, beta], g.in_shape(id, 0), DType::F32)
}

/// The f64 reference's activation, applied in place.
fn reference_act(act: Option<FusedAct>, data: &mut [f64]) {
    if let Some(a) = act {
        data.iter_mut().for_each(|v| *v = unary_f64(a.op, *v, a.alpha as f64));
    }
}

impl OpDef for BatchNorm {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (y, mean, rstd) = eager::batch_norm_train_act(f.dev, f.x[0], f.x[1], f.x[2], self.eps, self.act)?;
        if let Some(r) = &self.running {
            let s = f.shape;
            let count = s[0] * s[2..].iter().product::<usize>();
            eager::batch_norm_update_running(f.dev, &r.mean, &r.var, &mean, &rstd, r.momentum, self.eps, count)?;
        }
        Ok((y, vec![mean, rstd]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let dx = norm_backward(g, BatchNormBackward { act: self.act, acc: false }, id, gy);
        Ok(g.norm_grads(dx, g.in_node(id, 1)))
    }
    // Running statistics are a side effect on the device; the reference computes the output only.
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (xv, gamma, beta) = (x[0], x[1], x[2]);
        let (n, c) = (xv.shape[0], xv.shape[1]);
        let hw: usize = xv.shape[2..].iter().product();
        let at = |i: usize, ch: usize, p: usize| (i * c + ch) * hw + p;
        let mut data = vec![0.0; xv.data.len()];
        for ch in 0..c {
            let vals = || (0..n).flat_map(move |i| (0..hw).map(move |p| at(i, ch, p)));
            let cnt = (n * hw) as f64;
            let mean = vals().map(|k| xv.data[k]).sum::<f64>() / cnt;
            let var = vals().map(|k| (xv.data[k] - mean).powi(2)).sum::<f64>() / cnt;
            let rstd = 1.0 / (var + self.eps as f64).sqrt();
            for k in vals() {
                data[k] = (xv.data[k] - mean) * rstd * gamma.data[ch] + beta.data[ch];
            }
        }
        reference_act(self.act, &mut data);
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Inputs [x, gamma, the BatchNorm node, dy, beta] (and with `acc` a gradient term to add to dx): dx;
/// dgamma and dbeta are its second outputs.
#[derive(Debug)]
struct BatchNormBackward {
    act: Option<FusedAct>,
    acc: bool,
}

impl OpDef for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let st = f.aux[2];
        let acc = self.acc.then(|| f.x[5]);
        let (x, gamma, dy, beta) = (f.x[0], f.x[1], f.x[3], f.x[4]);
        let (dx, dg, db) = eager::batch_norm_backward_fused(f.dev, x, gamma, beta, &st[0], &st[1], dy, self.act, acc)?;
        Ok((dx, vec![dg, db]))
    }
    // A gradient sum over x folds into the dx pass (a residual input that also feeds the norm).
    fn accumulating(&self) -> Option<Accumulating> {
        (!self.acc).then(|| Accumulating {
            def: std::sync::Arc::new(BatchNormBackward { act: self.act, acc: true }),
            in_place: false,
        })
    }
}

/// Group norm: inputs [x, gamma [C], beta [C]]; keeps each (sample, group)'s mean and rstd as second
/// outputs. With `act`, the node's value is act(norm).
#[derive(Debug)]
struct GroupNorm {
    groups: usize,
    eps: f32,
    act: Option<FusedAct>,
}

impl OpDef for GroupNorm {
    fn name(&self) -> &'static str {
        "group_norm"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (y, mean, rstd) = eager::group_norm_act(f.dev, f.x[0], f.x[1], f.x[2], self.groups, self.eps, self.act)?;
        Ok((y, vec![mean, rstd]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let dx = norm_backward(g, GroupNormBackward { groups: self.groups, act: self.act, acc: false }, id, gy);
        Ok(g.norm_grads(dx, g.in_node(id, 1)))
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (xv, gamma, beta, groups) = (x[0], x[1], x[2], self.groups);
        let c = gamma.data.len();
        let hw = xv.data.len() / (xv.shape[0] * c);
        let len = c / groups * hw;
        let mut data = Vec::with_capacity(xv.data.len());
        for (k, r) in xv.data.chunks(len).enumerate() {
            let mean = r.iter().sum::<f64>() / len as f64;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + self.eps as f64).sqrt();
            let c0 = (k % groups) * (c / groups);
            data.extend(r.iter().enumerate().map(|(j, v)| {
                let ch = c0 + j / hw;
                (v - mean) * rstd * gamma.data[ch] + beta.data[ch]
            }));
        }
        reference_act(self.act, &mut data);
        Ok(Value { shape: shape.to_vec(), data })
    }
}

/// Inputs as `BatchNormBackward`'s, with the GroupNorm node: dx; dgamma and dbeta are its second
/// outputs.
#[derive(Debug)]
struct GroupNormBackward {
    groups: usize,
    act: Option<FusedAct>,
    acc: bool,
}

impl OpDef for GroupNormBackward {
    fn name(&self) -> &'static str {
        "group_norm_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let st = f.aux[2];
        let acc = self.acc.then(|| f.x[5]);
        let (x, gamma, dy, beta) = (f.x[0], f.x[1], f.x[3], f.x[4]);
        let (dx, dg, db) =
            eager::group_norm_backward_fused(f.dev, x, gamma, beta, &st[0], &st[1], dy, self.groups, self.act, acc)?;
        Ok((dx, vec![dg, db]))
    }
    // A gradient sum over x folds into the dx pass (a residual input that also feeds the norm).
    fn accumulating(&self) -> Option<Accumulating> {
        (!self.acc).then(|| Accumulating {
            def: std::sync::Arc::new(GroupNormBackward { groups: self.groups, act: self.act, acc: true }),
            in_place: false,
        })
    }
}
