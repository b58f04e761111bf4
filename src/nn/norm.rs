//! Normalisations with a learned scale γ and shift β: LayerNorm (over the last axis), GroupNorm (over
//! channel groups of NCHW) and BatchNorm (over the batch, with optional running statistics).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{BnRunning, Graph, NodeId};
use crate::nn::{Activation, Init, Param};
use crate::ops::elementwise::{Binary, Unary};
use crate::ops::rng::RngState;
use crate::tensor::Tensor;

/// γ = 1 named `{name}.gamma` and β = 0 named `{name}.beta`, each [c].
fn scale_shift(dev: &Device, name: &str, c: usize) -> Result<(Param, Param)> {
    // Constants draw no random numbers; a throwaway stream keeps the signature of `Init::param`.
    let mut none = RngState::new(0);
    Ok((
        Init::Const(1.0).param(dev, &mut none, format!("{name}.gamma"), &[c])?,
        Init::Const(0.0).param(dev, &mut none, format!("{name}.beta"), &[c])?,
    ))
}

/// Layer norm over the last axis.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Scale γ [c].
    pub gamma: Param,
    /// Shift β [c].
    pub beta: Param,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// γ = 1, β = 0 over `c` features, named `{name}.gamma` / `{name}.beta`.
    pub fn new(dev: &Device, name: &str, c: usize, eps: f32) -> Result<LayerNorm> {
        let (gamma, beta) = scale_shift(dev, name, c)?;
        Ok(LayerNorm { gamma, beta, eps })
    }

    /// (x − mean) / √(var + eps) · γ + β along the last axis.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (gamma, beta) = (g.param(&self.gamma.tensor), g.param(&self.beta.tensor));
        g.layer_norm(x, gamma, beta, self.eps)
    }

    /// γ, then β.
    pub fn params(&self) -> Vec<Param> {
        vec![self.gamma.clone(), self.beta.clone()]
    }
}

/// Group norm of NCHW activations: statistics over each group of channels and all positions.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    /// Scale γ [C].
    pub gamma: Param,
    /// Shift β [C].
    pub beta: Param,
    /// Channel groups (dividing C).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
}

impl GroupNorm {
    /// γ = 1, β = 0 over `c` channels in `groups` groups, named `{name}.gamma` / `{name}.beta`.
    pub fn new(dev: &Device, name: &str, c: usize, groups: usize, eps: f32) -> Result<GroupNorm> {
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(Error::invalid("group norm", format!("{name}: {groups} groups do not divide {c} channels")));
        }
        let (gamma, beta) = scale_shift(dev, name, c)?;
        Ok(GroupNorm { gamma, beta, groups, eps })
    }

    /// The normalised, scaled and shifted `x` [B, C, H, W].
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (gamma, beta) = (g.param(&self.gamma.tensor), g.param(&self.beta.tensor));
        g.group_norm(x, gamma, beta, self.groups, self.eps)
    }

    /// `act(forward(x))`, the activation fused into the norm's kernels.
    pub fn forward_act(&self, g: &mut Graph, x: NodeId, act: Activation) -> Result<NodeId> {
        let (gamma, beta) = (g.param(&self.gamma.tensor), g.param(&self.beta.tensor));
        g.group_norm_act(x, gamma, beta, self.groups, self.eps, Some(act.fused()))
    }

    /// γ, then β.
    pub fn params(&self) -> Vec<Param> {
        vec![self.gamma.clone(), self.beta.clone()]
    }
}

/// How batch norms run: training mode (batch statistics; `update` folds them into the running ones),
/// or eval mode (running statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnMode {
    /// Batch statistics; with `update`, also fold them into the running statistics.
    Train {
        /// Update the running statistics.
        update: bool,
    },
    /// The running statistics.
    Eval,
}

/// Running mean and variance of a batch norm (state, not trained), named `{name}.running_mean` /
/// `{name}.running_var`.
#[derive(Clone, Debug)]
pub struct Running {
    /// Running mean [C], starts at 0.
    pub mean: Param,
    /// Running variance [C], starts at 1.
    pub var: Param,
}

/// Batch norm over the batch axis (and the positions of NCHW activations).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Scale γ [C].
    pub gamma: Param,
    /// Shift β [C].
    pub beta: Param,
    /// Running statistics for eval mode; None for a norm that only ever runs in training mode.
    pub running: Option<Running>,
    /// Added to the variance.
    pub eps: f32,
    /// Weight of the new batch's statistics in the running update.
    pub momentum: f32,
}

impl BatchNorm {
    /// γ = 1, β = 0 over `c` channels named `{name}.gamma` / `{name}.beta`; with `running`, running
    /// statistics named `{name}.running_mean` / `{name}.running_var`.
    pub fn new(dev: &Device, name: &str, c: usize, running: bool, eps: f32, momentum: f32) -> Result<BatchNorm> {
        let running = if running {
            let mut none = RngState::new(0);
            Some(Running {
                mean: Init::Const(0.0).param(dev, &mut none, format!("{name}.running_mean"), &[c])?,
                var: Init::Const(1.0).param(dev, &mut none, format!("{name}.running_var"), &[c])?,
            })
        } else {
            None
        };
        let (gamma, beta) = scale_shift(dev, name, c)?;
        Ok(BatchNorm { gamma, beta, running, eps, momentum })
    }

    /// `x` [B, C] or [B, C, H, W] normalised in `mode`.
    pub fn forward(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<NodeId> {
        self.forward_act(g, x, mode, None)
    }

    /// `act(forward(x, mode))`; in training mode the activation is fused into the norm's kernels.
    pub fn forward_act(&self, g: &mut Graph, x: NodeId, mode: BnMode, act: Option<Activation>) -> Result<NodeId> {
        let (gm, bt) = (g.param(&self.gamma.tensor), g.param(&self.beta.tensor));
        match mode {
            BnMode::Train { update } => {
                let r = self.running.as_ref().filter(|_| update).map(|r| BnRunning {
                    mean: r.mean.tensor.clone(),
                    var: r.var.tensor.clone(),
                    momentum: self.momentum,
                });
                g.batch_norm_act(x, gm, bt, self.eps, r, act.map(Activation::fused))
            }
            BnMode::Eval => {
                let Some(r) = &self.running else {
                    return Err(Error::invalid(
                        "batch norm",
                        format!("{}: this batch norm keeps no running statistics", self.gamma.name),
                    ));
                };
                let y = self.eval(g, x, gm, bt, &r.mean.tensor, &r.var.tensor)?;
                act.map_or(Ok(y), |a| a.forward(g, y))
            }
        }
    }

    /// Eval mode as a per-channel affine map of graph ops:
    /// y = x · γ/√(var + eps) + (β − mean · γ/√(var + eps)).
    fn eval(
        &self,
        g: &mut Graph,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        mean: &Tensor,
        var: &Tensor,
    ) -> Result<NodeId> {
        let c = mean.shape[0];
        let (m, v) = (g.constant(mean), g.constant(var));
        let v = g.scalar(Binary::Add, v, self.eps, false)?;
        let inv = g.unary(Unary::Rsqrt, v)?;
        let a = g.mul(gamma, inv)?;
        let ma = g.mul(m, a)?;
        let b = g.sub(beta, ma)?;
        let (a, b) =
            if g.shape(x).len() == 4 { (g.reshape(a, &[c, 1, 1])?, g.reshape(b, &[c, 1, 1])?) } else { (a, b) };
        let y = g.mul(x, a)?;
        g.add(y, b)
    }

    /// γ, then β (the trained parameters).
    pub fn params(&self) -> Vec<Param> {
        vec![self.gamma.clone(), self.beta.clone()]
    }

    /// γ and β, mutable (to swap in other weights).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }

    /// The running mean, then the running variance (empty without them).
    pub fn running(&self) -> Vec<Param> {
        self.running.iter().flat_map(|r| [r.mean.clone(), r.var.clone()]).collect()
    }
}
