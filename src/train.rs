//! A training step: a graph's loss, its gradients, the optimizer update (and an optional EMA of the
//! weights), planned and recorded once, then replayed: one queue submission per step, no host wait.
//! Checkpoints hold the parameters, the optimizer state and step, and whatever the caller adds (its
//! config and RNG state), so a run resumes exactly where it stopped, on the same data or on new data.
//!
//! Every step also feeds a finiteness guard (`optim::Guard`): its loss and its gradient norm are
//! checked on the device and the first non-finite one is recorded, to be read with the losses
//! (`read_guard`, `divergence`); `check_weights` does the same for the weights between steps, and
//! `save` refuses to write a checkpoint that holds a non-finite value.
//!
//! With `TrainConfig::loss_scale` (f16 gradients, `--precision mixed`) the backward is seeded with the
//! device's loss scale and the same guard dispatch unscales, skips a step whose scaled gradients
//! overflowed and adjusts the scale (`optim::scale`); `read_loss_scale` reads it with the losses.

use std::path::Path;

use crate::checkpoint::{Checkpoint, HostTensor};
use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::nn::Param;
use crate::optim::{Ema, Guard, LossScale, LossScaler, NonFinite, Optimizer, OptimizerKind, ScaleState, Schedule};
use crate::tensor::{numel, Tensor};

/// How to optimize.
#[derive(Clone, Copy, Debug)]
pub struct TrainConfig {
    /// The update rule and its hyperparameters.
    pub optimizer: OptimizerKind,
    /// The learning rate over the steps.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f32>,
    /// Keep an exponential moving average of the weights with this decay (with warmup).
    pub ema: Option<f32>,
    /// Scale the loss (f16 gradients, `--precision mixed`): the backward is seeded with the device's
    /// scale and the update unscales (`optim::LossScaler`). None: seeded with 1.
    pub loss_scale: Option<LossScale>,
}

/// A recorded training step over a graph's loss and parameters, with the optimizer (and EMA) state.
pub struct Trainer {
    plan: Plan,
    reduce: Option<crate::dist::Reduce>,
    loss: NodeId,
    params: Vec<Param>,
    opt: Optimizer,
    ema: Option<Ema>,
    guard: Guard,
    scaler: Option<LossScaler>,
}

/// The checkpoint name of the loss-scale state (f32 [4], `optim::LossScaler::state`): saved by a trainer
/// that scales its loss, optional on restore. Optimizer state by its name, so exports leave it out and a
/// restarted schedule zeroes it (a zero scale is not restored: the run starts at its first scale).
pub const LOSS_SCALE: &str = "optim.loss_scale";

/// The first non-finite value a trainer's guard recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The trainer's 1-based update (its step counter after the update) at which it happened.
    pub update: u32,
    /// What was not finite.
    pub what: NonFinite,
    /// The tensor it was first seen in, where known: the parameter whose gradient, or the state
    /// tensor (`Trainer::state` name) whose values, were not finite.
    pub tensor: Option<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.what)?;
        match (&self.tensor, self.what) {
            (Some(t), NonFinite::GradientNorm) => write!(f, " (first non-finite gradient: `{t}`)"),
            (Some(t), _) => write!(f, " (first in `{t}`)"),
            (None, _) => Ok(()),
        }
    }
}

/// Reads `t` back for a checkpoint at `path`, refusing an f32 tensor that holds NaN or Inf (a diverged
/// run must not overwrite a good checkpoint); `name` names it in the error.
pub fn download_finite(dev: &Device, path: &Path, name: &str, t: &Tensor) -> Result<HostTensor> {
    let h = HostTensor::from_device(dev, t)?;
    if h.dtype == crate::tensor::DType::F32 {
        if let Some(i) = h.data.iter().position(|&w| !f32::from_bits(w).is_finite()) {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                msg: format!(
                    "not saved: `{name}` holds a non-finite value ({} at element {i}); the training diverged",
                    f32::from_bits(h.data[i])
                ),
            });
        }
    }
    Ok(h)
}

impl Trainer {
    /// Differentiates `loss` (one element) with respect to `params`, allocates the optimizer state and
    /// records the step. Create it before writing the first batch; the step reads the input tensors
    /// bound into `g` as they are when it runs.
    pub fn new(dev: &Device, g: Graph, loss: NodeId, params: Vec<Param>, cfg: TrainConfig) -> Result<Trainer> {
        let step = crate::ops::optim::step_counter(dev, 0)?;
        Trainer::with_step_counter(dev, g, loss, params, cfg, step)
    }

    /// Like `new`, with a step counter (u32 `[1]`, from `ops::optim::step_counter`) made before the graph,
    /// so graph ops that change every step (dropout) can read it; the optimizer advances it.
    pub fn with_step_counter(
        dev: &Device,
        g: Graph,
        loss: NodeId,
        params: Vec<Param>,
        cfg: TrainConfig,
        step: Tensor,
    ) -> Result<Trainer> {
        Trainer::with_prologue(dev, g, loss, params, cfg, step, || Ok(()))
    }

    /// Like `with_step_counter`, with `prologue` recorded at the start of every step, before the
    /// forward pass: it writes the graph's inputs on the device (a batch drawn from data held there,
    /// indexed by the step counter), so the step reads nothing from the host.
    pub fn with_prologue(
        dev: &Device,
        mut g: Graph,
        loss: NodeId,
        params: Vec<Param>,
        cfg: TrainConfig,
        step: Tensor,
        prologue: impl FnOnce() -> Result<()>,
    ) -> Result<Trainer> {
        if numel(g.shape(loss))? != 1 {
            return Err(Error::invalid(
                "trainer",
                format!("the loss must have one element, it has shape {:?}", g.shape(loss)),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &params {
            if !names.insert(p.name.as_str()) {
                return Err(Error::invalid("trainer", format!("two parameters are named `{}`", p.name)));
            }
        }
        let nodes: Vec<NodeId> = params.iter().map(|p| g.param(&p.tensor)).collect();
        let scaler = cfg.loss_scale.map(|m| LossScaler::new(dev, m)).transpose()?;
        let seed = scaler.as_ref().map(|s| g.input(&s.seed()));
        let grads = g.backward_seeded(loss, &nodes, seed)?;
        let tensors: Vec<&Tensor> = params.iter().map(|p| &p.tensor).collect();
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        let opt = Optimizer::with_names(dev, cfg.optimizer, cfg.schedule, cfg.clip, &tensors, &names, step)?;
        let ema = cfg.ema.map(|d| Ema::new(dev, &tensors, d, true)).transpose()?;
        let guard = Guard::new(dev)?;
        let keep: Vec<NodeId> = std::iter::once(loss).chain(grads).collect();
        // On several ranks (`dist`) the update is recorded apart, after the gradients' allreduce.
        let (plan, reduce) = crate::dist::Reduce::plan(dev, &g, &keep, prologue, |kept| {
            let grads: Vec<&Tensor> = kept[1..].iter().collect();
            // The guard only reads what the step computed (and writes its flag): no number changes.
            opt.update_guarded(dev, &tensors, &grads, &kept[0], &guard, scaler.as_ref())?;
            if let Some(e) = &ema {
                e.update(dev, &tensors, opt.step_tensor())?;
            }
            opt.advance(dev)
        })?;
        Ok(Trainer { plan, reduce, loss, params, opt, ema, guard, scaler })
    }

    /// One training step (forward, backward, update): one submission on a GPU, no wait. On several
    /// ranks: forward and backward, the gradients' allreduce (which waits for them), the update.
    pub fn step(&self, dev: &Device) -> Result<()> {
        match &self.reduce {
            Some(r) => r.step(dev, &self.plan),
            None => self.plan.run(dev),
        }
    }

    /// Starts reading the loss of the latest step back (asynchronous; ordered after it).
    pub fn read_loss(&self, dev: &Device) -> Result<Download> {
        self.plan.read(dev, self.loss)
    }

    /// Starts reading the guard's flag (asynchronous; ordered after the steps submitted so far).
    pub fn read_guard(&self, dev: &Device) -> Result<Download> {
        self.guard.read(dev)
    }

    /// Starts reading the latest step's gradient sums of squares (asynchronous, like `read_loss`);
    /// `grad_norm` turns what arrives into the global gradient norm.
    pub fn read_grad_norm(&self, dev: &Device) -> Result<Download> {
        dev.download(&self.opt.grad_partials().0.buf)
    }

    /// The global gradient norm (L2 over all parameters, before clipping) from the words a
    /// `read_grad_norm` gave.
    pub fn grad_norm(&self, words: &[u32]) -> f64 {
        let n = self.opt.grad_partials().1;
        words.iter().take(n).map(|&w| f32::from_bits(w) as f64).sum::<f64>().sqrt()
    }

    /// Starts reading the loss-scale state (asynchronous, like `read_loss`); None when the loss is not
    /// scaled. `LossScaler::decode` turns what arrives into the scale and the count of skipped steps.
    pub fn read_loss_scale(&self, dev: &Device) -> Option<Result<Download>> {
        self.scaler.as_ref().map(|s| s.read(dev))
    }

    /// The loss-scale state from the words a `read_loss_scale` gave.
    pub fn loss_scale(&self, words: &[u32]) -> ScaleState {
        LossScaler::decode(words)
    }

    /// The loss scaling, if the loss is scaled.
    pub fn scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// Has the guard check every f32 tensor of `state` (weights, optimizer state, EMA) between steps,
    /// as of the latest update: eager dispatches, read with the next `read_guard`.
    pub fn check_weights(&self, dev: &Device) -> Result<()> {
        let mut tag = 0u32;
        for (_, t) in self.state() {
            if t.dtype == crate::tensor::DType::F32 {
                self.guard.check(dev, &t, t.numel(), self.opt.step_tensor(), NonFinite::Weights, 0, tag)?;
                tag = tag.saturating_add(u32::try_from(t.numel()).unwrap_or(u32::MAX));
            }
        }
        Ok(())
    }

    /// What the guard's flag (the words a `read_guard` gave) says: None while everything was finite.
    pub fn divergence(&self, words: &[u32]) -> Option<Divergence> {
        let t = Guard::decode(words)?;
        let tensor = match t.what {
            NonFinite::Loss => None,
            NonFinite::GradientNorm => self.opt.param_of_slot(t.index as usize).map(|i| self.params[i].name.clone()),
            NonFinite::Weights => {
                let mut at = 0usize;
                self.state().into_iter().filter(|(_, x)| x.dtype == crate::tensor::DType::F32).find_map(|(n, x)| {
                    at += x.numel();
                    (at > t.index as usize).then_some(n)
                })
            }
        };
        Some(Divergence { update: t.step, what: t.what, tensor })
    }

    /// The parameters trained, in the order their state is kept.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The optimizer (its state tensors and step counter).
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// The EMA weights, in the order of `params`.
    pub fn ema(&self) -> Option<&[Tensor]> {
        self.ema.as_ref().map(|e| e.tensors())
    }

    /// The recorded step's plan (dispatch count, memory figures).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Every tensor a checkpoint holds: parameters by name, `optim.*`, `ema.<parameter name>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self.params.iter().map(|p| (p.name.clone(), p.tensor.clone())).collect();
        out.extend(self.opt.state_tensors().into_iter().map(|(n, t)| (format!("optim.{n}"), t)));
        if let Some(e) = &self.ema {
            out.extend(e.state_tensors(&self.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()));
        }
        out
    }

    /// Saves the training state (atomically) with the caller's kind, config and RNG state; refuses (and
    /// leaves `path` as it was) when a tensor holds a non-finite value.
    pub fn save(
        &self,
        dev: &Device,
        path: &Path,
        kind: &str,
        config: serde_json::Value,
        rng: serde_json::Value,
    ) -> Result<()> {
        let mut ck = Checkpoint::new(kind, config);
        ck.step = self.opt.current_step(dev)? as u64;
        ck.rng = rng;
        for (name, t) in self.state() {
            let h = download_finite(dev, path, &name, &t)?;
            ck.tensors.insert(name, h);
        }
        if let Some(s) = &self.scaler {
            ck.tensors.insert(LOSS_SCALE.to_string(), download_finite(dev, path, LOSS_SCALE, s.state())?);
        }
        ck.save(path)
    }

    /// Restores parameters, optimizer state and step from a checkpoint made by `save` for a model
    /// of the same kind and shape (each tensor is checked; errors name the first that differs).
    /// A checkpoint's loss-scale state (`LOSS_SCALE`, written by a run that scales its loss) is optional:
    /// a run under dynamic scaling continues from it, any other run leaves it, and without it the scale
    /// starts at its first value.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        let stripped;
        let ck = match ck.tensors.get(LOSS_SCALE) {
            None => ck,
            Some(saved) => {
                if let Some(s) = self.scaler.as_ref().filter(|s| s.interval().is_some()) {
                    let want: (&[usize], _) = (&s.state().shape, s.state().dtype);
                    let scale = saved.data.first().map(|&w| f32::from_bits(w));
                    if (&saved.shape[..], saved.dtype) == want && scale.is_some_and(|x| x.is_finite() && x >= 1.0) {
                        ck.restore_into(dev, LOSS_SCALE, s.state())?;
                    }
                }
                stripped = {
                    let mut c = ck.clone();
                    c.tensors.remove(LOSS_SCALE);
                    c
                };
                &stripped
            }
        };
        let ck = &*ck.with_named_ema("", &self.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        let state = self.state();
        let specs: Vec<(&str, &[usize], crate::tensor::DType)> =
            state.iter().map(|(n, t)| (n.as_str(), &t.shape[..], t.dtype)).collect();
        ck.expect_tensors(&specs)?;
        for (name, t) in &state {
            ck.restore_into(dev, name, t)?;
        }
        Ok(())
    }
}
