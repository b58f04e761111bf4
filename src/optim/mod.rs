//! Optimizers for training: `Optimizer` (SGD with momentum/Nesterov, Adam, AdamW), with optional
//! gradient clipping by global norm and a learning-rate `Schedule`, and `Ema`, an exponential moving
//! average of the weights. Built on the optim kernel family (`ops::optim`, shaders/optim.wgsl).
//!
//! Where the device binds enough buffers per kernel (`ops::optim_multi::supported`), the updates, the
//! clipping sums and the EMA run over up to `kernels::optim::SLOTS` tensors per dispatch, with the same
//! numbers as one dispatch per tensor.
//!
//! Both allocate their state once, in `new`, and issue their work as ordinary eager dispatches, so a
//! whole training step (forward, backward, `Optimizer::step`) can be recorded once with
//! `Device::capture` and replayed every step: what changes from step to step (the step counter that
//! drives the schedule and Adam's bias correction, the clipping scale) lives in device buffers that the
//! kernels read and update, and nothing is read back to the host.
//!
//! ```no_run
//! # use tigel::{Device, Tensor, Result};
//! # use tigel::optim::{Optimizer, OptimizerKind, Schedule};
//! # fn f(dev: &Device, w: &Tensor, grad_of: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
//! let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
//! let sched = Schedule::Cosine { lr: 3e-4, warmup: 100, total: 10_000, min_lr: 3e-5 };
//! let opt = Optimizer::new(dev, kind, sched, Some(1.0), &[w])?;
//! let (_, step) = dev.capture(|| {
//!     let g = grad_of(w)?;
//!     opt.step(dev, &[w], &[&g])
//! })?;
//! for _ in 0..10_000 {
//!     dev.replay(&step)?;
//! }
//! # Ok(()) }
//! ```

mod grouped;
pub mod guard;
pub mod muon;
pub mod scale;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::layout;
use crate::ops::optim::{self as k, AdamConfig, SgdConfig};
use crate::ops::optim_multi as multi;
use crate::tensor::{DType, Tensor};

pub use crate::ops::optim::Schedule;
pub use guard::{Guard, NonFinite, Tripped};
pub use scale::{LossScale, LossScaler, ScaleState};

/// Which update rule, with its hyper-parameters (the learning rate is the `Schedule`'s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// SGD; `momentum` in [0, 1) (0: plain SGD, no state), Nesterov needs momentum > 0, `weight_decay`
    /// is L2 (added to the gradient).
    Sgd {
        /// Momentum coefficient.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// Adam; `weight_decay` is L2 (added to the gradient, so it passes through the moments).
    Adam {
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// AdamW: decoupled weight decay, `p *= 1 - lr * weight_decay` before the Adam update.
    AdamW {
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
    /// Muon on the hidden matrices, AdamW on the other tensors (`muon::MuonConfig`).
    Muon(muon::MuonConfig),
}

enum Rule {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl OptimizerKind {
    fn rule(&self) -> Rule {
        match *self {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                Rule::Sgd(SgdConfig { momentum, dampening: 0.0, nesterov, weight_decay })
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay } => {
                Rule::Adam(AdamConfig { beta1, beta2, eps, weight_decay, decoupled: false })
            }
            OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                Rule::Adam(AdamConfig { beta1, beta2, eps, weight_decay, decoupled: true })
            }
            OptimizerKind::Muon(c) => Rule::Adam(c.adam()),
        }
    }

    /// Checks the hyper-parameters; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        if let OptimizerKind::Muon(c) = self {
            return c.validate(OP_NEW);
        }
        match self.rule() {
            Rule::Sgd(c) => c.validate(OP_NEW),
            Rule::Adam(c) => c.validate(OP_NEW),
        }
    }
}

const OP_NEW: &str = "Optimizer::new";
const OP_STEP: &str = "Optimizer::step";

/// Optimizer state of one parameter tensor.
enum State {
    /// Momentum buffer (None for momentum 0).
    Sgd(Option<Tensor>),
    Adam {
        m: Tensor,
        v: Tensor,
    },
    /// A Muon matrix's momentum buffer.
    Muon(Tensor),
}

/// An optimizer over a fixed list of parameter tensors. See the module documentation.
pub struct Optimizer {
    kind: OptimizerKind,
    rule: Rule,
    schedule: Schedule,
    max_norm: Option<f32>,
    shapes: Vec<Vec<usize>>,
    state: Vec<State>,
    /// u32 [1]: 0-based index of the current step.
    step: Tensor,
    /// f32 [2]: [scale, total_norm]; [1, 0] for good when clipping is off.
    clip: Tensor,
    /// One-word stand-in bound as the momentum buffer of SGD without momentum (never touched).
    placeholder: Option<Tensor>,
    /// f32 partial sums of the gradients' squares (for clipping and the finiteness guard), and each
    /// tensor's first slot.
    partials: Tensor,
    slots: Vec<usize>,
    n_partials: usize,
    /// The Muon matrices' work, for `OptimizerKind::Muon`.
    muon: Option<muon::Muon>,
    /// Multi-tensor kernels (the device binds enough buffers per kernel).
    multi: bool,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Optimizer({:?}, {:?}, clip {:?}, {} tensors)",
            self.kind,
            self.schedule,
            self.max_norm,
            self.shapes.len()
        )
    }
}

fn check_tensor(op: &'static str, what: &str, i: usize, t: &Tensor) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(Error::invalid(op, format!("{what} {i} {:?} has dtype {}, expected f32", t.shape, t.dtype.name())));
    }
    Ok(())
}

impl Optimizer {
    /// Validates the hyper-parameters and allocates the state: the step counter (0), the clip buffer, the
    /// partial sums for clipping (`clip = Some(max_norm)`), and per tensor the momentum buffer (SGD with
    /// momentum) or m and v (Adam/AdamW), zero-filled. Call it before `Device::capture`.
    pub fn new(
        dev: &Device,
        kind: OptimizerKind,
        schedule: Schedule,
        clip: Option<f32>,
        params: &[&Tensor],
    ) -> Result<Optimizer> {
        // The uploads come first: inside a capture they fail, before anything is recorded.
        let step = k::step_counter(dev, 0).map_err(|e| {
            Error::invalid(OP_NEW, format!("cannot create the step counter ({e}); create optimizers before capture"))
        })?;
        Optimizer::with_step_counter(dev, kind, schedule, clip, params, step)
    }

    /// Like `new`, advancing an existing step counter (u32 [1]) that other kernels of the step also
    /// read, such as dropout, which draws a fresh mask at each step from it.
    pub fn with_step_counter(
        dev: &Device,
        kind: OptimizerKind,
        schedule: Schedule,
        clip: Option<f32>,
        params: &[&Tensor],
        step: Tensor,
    ) -> Result<Optimizer> {
        Optimizer::with_names(dev, kind, schedule, clip, params, &[], step)
    }

    /// Like `with_step_counter`, with the parameters' names, which `OptimizerKind::Muon` reads to tell
    /// the hidden matrices from the embeddings (without names, every rank-2 tensor is a matrix).
    pub fn with_names(
        dev: &Device,
        kind: OptimizerKind,
        schedule: Schedule,
        clip: Option<f32>,
        params: &[&Tensor],
        names: &[&str],
        step: Tensor,
    ) -> Result<Optimizer> {
        if step.dtype != DType::U32 || step.shape != [1] {
            return Err(Error::invalid(
                OP_NEW,
                format!("the step counter must be u32 [1], got {} {:?}", step.dtype.name(), step.shape),
            ));
        }
        kind.validate()?;
        schedule.validate(OP_NEW)?;
        if let Some(c) = clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(
                    OP_NEW,
                    format!("clip max_norm = {c} is out of range: must be finite and > 0"),
                ));
            }
        }
        for (i, p) in params.iter().enumerate() {
            check_tensor(OP_NEW, "parameter", i, p)?;
        }
        let clip_buf = k::clip_buffer(dev)?;
        let zeros = |shape: &[usize]| layout::fill(dev, shape, 0.0);
        let rule = kind.rule();
        let mut state = Vec::with_capacity(params.len());
        let is_muon = |i: usize, p: &Tensor| match kind {
            OptimizerKind::Muon(c) => c.takes(names.get(i).copied().unwrap_or(""), &p.shape),
            _ => false,
        };
        for (i, p) in params.iter().enumerate() {
            if is_muon(i, p) {
                state.push(State::Muon(zeros(&p.shape)?));
                continue;
            }
            state.push(match &rule {
                Rule::Sgd(c) if c.momentum == 0.0 => State::Sgd(None),
                Rule::Sgd(_) => State::Sgd(Some(zeros(&p.shape)?)),
                Rule::Adam(_) => State::Adam { m: zeros(&p.shape)?, v: zeros(&p.shape)? },
            });
        }
        let mut slots = Vec::with_capacity(params.len());
        let mut n_partials = 0;
        for p in params {
            slots.push(n_partials);
            n_partials += k::sumsq_layout(p.numel()).1;
        }
        let placeholder = match &rule {
            Rule::Sgd(c) if c.momentum == 0.0 => Some(Tensor::empty(dev, &[1], DType::F32)?),
            _ => None,
        };
        let partials = Tensor::empty(dev, &[n_partials.max(1)], DType::F32)?;
        let muon = match kind {
            OptimizerKind::Muon(c) => {
                let shapes: Vec<&[usize]> =
                    params.iter().enumerate().filter(|(i, p)| is_muon(*i, p)).map(|(_, p)| &p.shape[..]).collect();
                Some(muon::Muon::new(dev, c, schedule, &shapes)?)
            }
            _ => None,
        };
        Ok(Optimizer {
            kind,
            rule,
            schedule,
            max_norm: clip,
            shapes: params.iter().map(|p| p.shape.clone()).collect(),
            state,
            step,
            clip: clip_buf,
            placeholder,
            partials,
            slots,
            n_partials,
            muon,
            multi: multi::supported(dev),
        })
    }

    /// The update rule.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The clipping threshold on the global gradient norm, if clipping is on.
    pub fn clip(&self) -> Option<f32> {
        self.max_norm
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    /// True when there is no parameter tensor.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// The learning rate at 0-based step `step`, computed on the host exactly as the kernels do.
    pub fn lr_at(&self, step: u32) -> f32 {
        self.schedule.lr_at(step)
    }

    /// The step counter (u32, shape [1]): the 0-based index of the next step. `Ema::update` reads it.
    pub fn step_tensor(&self) -> &Tensor {
        &self.step
    }

    /// The clip buffer (f32, shape [2]): [scale, total_norm] of the latest step ([1, 0] when clipping
    /// is off; with a scaled loss, [clipping factor / S, unscaled norm], or [-1, norm] on a skipped
    /// step). Read it after a step for logging; reading is a download, so not inside a capture.
    pub fn clip_tensor(&self) -> &Tensor {
        &self.clip
    }

    /// Sets the step counter (resuming from a checkpoint). A buffer write: not allowed inside a capture.
    pub fn set_step(&self, dev: &Device, step: u32) -> Result<()> {
        dev.write(&self.step.buf, &[step]).map_err(|e| {
            Error::invalid(
                "Optimizer::set_step",
                format!("cannot write the step counter ({e}); call it outside capture"),
            )
        })
    }

    /// Reads the step counter (a blocking download).
    pub fn current_step(&self, dev: &Device) -> Result<u32> {
        Ok(self.step.to_u32(dev)?[0])
    }

    /// The state to checkpoint, by name: `step` (u32 [1]), and per parameter tensor i `i.momentum` (SGD
    /// with momentum), `i.m` and `i.v` (Adam, AdamW) or `i.muon` (a Muon matrix's momentum). The tensors share the optimizer's buffers: to
    /// restore, write the saved values into them (`Device::write`) and `set_step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), self.step.clone())];
        for (i, s) in self.state.iter().enumerate() {
            match s {
                State::Sgd(Some(m)) => out.push((format!("{i}.momentum"), m.clone())),
                State::Sgd(None) => {}
                State::Adam { m, v } => {
                    out.push((format!("{i}.m"), m.clone()));
                    out.push((format!("{i}.v"), v.clone()));
                }
                State::Muon(m) => out.push((format!("{i}.muon"), m.clone())),
            }
        }
        out
    }

    fn check_step_args_grads(&self, grads: &[&Tensor]) -> Result<()> {
        if grads.len() != self.shapes.len() {
            return Err(Error::invalid(
                OP_STEP,
                format!("the optimizer was made for {} tensors, got {} gradients", self.shapes.len(), grads.len()),
            ));
        }
        for (i, (g, shape)) in grads.iter().zip(&self.shapes).enumerate() {
            check_tensor(OP_STEP, "gradient", i, g)?;
            if &g.shape != shape {
                return Err(Error::ShapeMismatch {
                    op: OP_STEP,
                    lhs: shape.clone(),
                    rhs: g.shape.clone(),
                    hint: format!(" (parameter {i} and its gradient)"),
                });
            }
        }
        Ok(())
    }

    fn check_step_args(&self, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        if params.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(Error::invalid(
                OP_STEP,
                format!(
                    "the optimizer was made for {} parameter tensors, got {} parameters and {} gradients",
                    self.shapes.len(),
                    params.len(),
                    grads.len()
                ),
            ));
        }
        for (i, ((p, g), shape)) in params.iter().zip(grads).zip(&self.shapes).enumerate() {
            check_tensor(OP_STEP, "parameter", i, p)?;
            check_tensor(OP_STEP, "gradient", i, g)?;
            if &p.shape != shape {
                return Err(Error::ShapeMismatch {
                    op: OP_STEP,
                    lhs: shape.clone(),
                    rhs: p.shape.clone(),
                    hint: format!(" (parameter {i}: the optimizer was made for the first shape)"),
                });
            }
            if g.shape != p.shape {
                return Err(Error::ShapeMismatch {
                    op: OP_STEP,
                    lhs: p.shape.clone(),
                    rhs: g.shape.clone(),
                    hint: format!(" (parameter {i} and its gradient)"),
                });
            }
        }
        Ok(())
    }

    /// Clipping (if on) and one update per tensor, without advancing the step counter: for a step that
    /// runs more work (an `Ema::update`) before `advance`. `step` = `update` + `advance`.
    pub fn update(&self, dev: &Device, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        self.check_step_args(params, grads)?;
        if let Some(max_norm) = self.max_norm {
            self.sumsq(dev, grads)?;
            k::clip_scale(dev, &self.partials, self.n_partials, max_norm, &self.clip)?;
        }
        self.apply(dev, params, grads)
    }

    /// The updates of `update` after the clipping (checked arguments).
    fn apply(&self, dev: &Device, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        if self.multi {
            return self.update_multi(dev, params, grads);
        }
        for ((p, g), s) in params.iter().zip(grads).zip(&self.state) {
            match (&self.rule, s) {
                (Rule::Sgd(c), State::Sgd(m)) => k::sgd(
                    dev,
                    &self.schedule,
                    c,
                    p,
                    g,
                    m.as_ref().or(self.placeholder.as_ref()),
                    &self.step,
                    &self.clip,
                )?,
                (Rule::Adam(c), State::Adam { m, v }) => {
                    k::adam(dev, &self.schedule, &self.adam_config(c, p), p, g, m, v, &self.step, &self.clip)?
                }
                (_, State::Muon(_)) => {}
                _ => unreachable!("state is made from the rule"),
            }
        }
        self.update_muon(dev, params, grads)
    }

    fn sumsq(&self, dev: &Device, grads: &[&Tensor]) -> Result<()> {
        if self.multi {
            let n = multi::sumsq_per_dispatch(dev);
            for (g, slots) in grads.chunks(n).zip(self.slots.chunks(n)) {
                multi::sumsq_multi(dev, g, slots, &self.partials)?;
            }
            return Ok(());
        }
        for (g, &slot) in grads.iter().zip(&self.slots) {
            k::sumsq_partial(dev, g, &self.partials, slot)?;
        }
        Ok(())
    }

    /// Has `guard` check the gradients' partial sums of squares (non-finite exactly when the global
    /// norm is) as step `step + 1`: after `update`, which computes them when clipping is on; without
    /// clipping they are computed here (one pass over the gradients, nothing else changes).
    pub fn guard_gradients(&self, dev: &Device, grads: &[&Tensor], guard: &Guard) -> Result<()> {
        self.check_step_args_grads(grads)?;
        if self.max_norm.is_none() {
            self.sumsq(dev, grads)?;
        }
        guard.check(dev, &self.partials, self.n_partials, &self.step, NonFinite::GradientNorm, 1, 0)
    }

    /// The latest step's partial sums of the gradients' squares and their count: the global gradient
    /// norm (before clipping) is the square root of their sum. Every recorded step writes them.
    pub fn grad_partials(&self) -> (&Tensor, usize) {
        (&self.partials, self.n_partials)
    }

    /// The parameter tensor (its index at `new`) whose gradient sums into partial slot `slot`.
    pub fn param_of_slot(&self, slot: usize) -> Option<usize> {
        if slot >= self.n_partials {
            return None;
        }
        Some(self.slots.partition_point(|&s| s <= slot) - 1)
    }

    /// Increments the step counter (on the device).
    pub fn advance(&self, dev: &Device) -> Result<()> {
        k::advance_step(dev, &self.step, 1)
    }

    /// One optimizer step: clipping kernels (if on), the updates, then the step counter's
    /// increment. Eager dispatches: record it inside `Device::capture` to replay it every step.
    pub fn step(&self, dev: &Device, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        self.update(dev, params, grads)?;
        self.advance(dev)
    }
}

/// An exponential moving average of parameter tensors: `ema = d * ema + (1 - d) * p` per update, with
/// d = decay, or with `warmup` d = min(decay, (1 + s) / (10 + s)) where s is the step counter's value when
/// the update runs (between `Optimizer::update` and `Optimizer::advance`, the 0-based index of the step;
/// after `Optimizer::step`, the number of steps taken).
pub struct Ema {
    decay: f32,
    warmup: bool,
    avg: Vec<Tensor>,
    /// Multi-tensor kernels (see `Optimizer`).
    multi: bool,
}

impl std::fmt::Debug for Ema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ema(decay {}, warmup {}, {} tensors)", self.decay, self.warmup, self.avg.len())
    }
}

impl Ema {
    /// Starts the averages as copies of `params`. Call it before `Device::capture` (the copies are
    /// dispatches, which a capture would only record).
    pub fn new(dev: &Device, params: &[&Tensor], decay: f32, warmup: bool) -> Result<Ema> {
        if !(decay.is_finite() && (0.0..=1.0).contains(&decay)) {
            return Err(Error::invalid("Ema::new", format!("decay = {decay} is out of range: must be in [0, 1]")));
        }
        let avg = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                check_tensor("Ema::new", "parameter", i, p)?;
                layout::copy(dev, p)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ema { decay, warmup, avg, multi: multi::supported(dev) })
    }

    /// One update of every average from `params`; `step` is the step counter (`Optimizer::step_tensor`).
    pub fn update(&self, dev: &Device, params: &[&Tensor], step: &Tensor) -> Result<()> {
        if params.len() != self.avg.len() {
            return Err(Error::invalid(
                "Ema::update",
                format!("the average was made for {} tensors, got {}", self.avg.len(), params.len()),
            ));
        }
        if self.multi {
            let n = multi::ema_per_dispatch(dev);
            for (a, p) in self.avg.chunks(n).zip(params.chunks(n)) {
                let a: Vec<&Tensor> = a.iter().collect();
                multi::ema_multi(dev, &a, p, step, self.decay, self.warmup)?;
            }
            return Ok(());
        }
        for (a, p) in self.avg.iter().zip(params) {
            k::ema(dev, a, p, step, self.decay, self.warmup)?;
        }
        Ok(())
    }

    /// The averaged tensors, in the order of `params` at `new`.
    pub fn tensors(&self) -> &[Tensor] {
        &self.avg
    }

    /// The averaged weights by checkpoint name, `ema.<parameter name>` (`names`: the parameters' names
    /// in the order of `params` at `new`).
    pub fn state_tensors(&self, names: &[&str]) -> Vec<(String, Tensor)> {
        self.avg.iter().zip(names).map(|(t, n)| (crate::checkpoint::ema_name(n), t.clone())).collect()
    }

    /// The EMA decay per step.
    pub fn decay(&self) -> f32 {
        self.decay
    }
}
