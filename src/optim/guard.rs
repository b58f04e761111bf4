//! The finiteness guard: a sticky flag on the device (u32 [4]: [tripped, step, what, index]) that the
//! `guard_finite` kernel sets at the first non-finite value it is shown: a step's loss, its gradients'
//! partial sums of squares (non-finite exactly when the global gradient norm is), or, outside the step,
//! the weights. Inside the training step `Optimizer::update_guarded` checks the loss and the partial sums
//! in the dispatch that computes the clip scale (`clip_guard`): no extra dispatch with clipping, one
//! without, and no host wait; the run loop reads the flag with the losses it already reads
//! asynchronously.

use super::{LossScaler, Optimizer};
use crate::device::{Device, Download};
use crate::error::Result;
use crate::kernels::optim::{GUARD_GRADIENT, GUARD_LOSS, GUARD_WEIGHTS};
use crate::ops::optim as k;
use crate::tensor::Tensor;

/// What the guard found non-finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    /// The step's loss.
    Loss,
    /// The global gradient norm (a gradient, or the sum of their squares, was NaN or Inf).
    GradientNorm,
    /// A weight or optimizer-state tensor, checked after a step.
    Weights,
}

impl NonFinite {
    /// The code the kernel records (`kernels::optim::GUARD_*`).
    pub fn code(self) -> u32 {
        match self {
            NonFinite::Loss => GUARD_LOSS,
            NonFinite::GradientNorm => GUARD_GRADIENT,
            NonFinite::Weights => GUARD_WEIGHTS,
        }
    }

    /// The kind a recorded code stands for.
    pub fn from_code(code: u32) -> Option<NonFinite> {
        match code {
            GUARD_LOSS => Some(NonFinite::Loss),
            GUARD_GRADIENT => Some(NonFinite::GradientNorm),
            GUARD_WEIGHTS => Some(NonFinite::Weights),
            _ => None,
        }
    }
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NonFinite::Loss => "the loss is not finite",
            NonFinite::GradientNorm => "the gradient norm is not finite",
            NonFinite::Weights => "the weights are not finite",
        })
    }
}

/// What a tripped guard recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tripped {
    /// The step counter plus the check's offset: inside a training step, its 1-based number.
    pub step: u32,
    /// What was not finite.
    pub what: NonFinite,
    /// The check's tag plus the index of the first non-finite value it saw.
    pub index: u32,
}

/// A sticky finiteness flag on the device.
pub struct Guard {
    flag: Tensor,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Guard {
    /// A clear flag. Call it before `Device::capture` (it uploads).
    pub fn new(dev: &Device) -> Result<Guard> {
        Ok(Guard { flag: k::guard_flag(dev)? })
    }

    /// The flag tensor (u32 [4]).
    pub fn flag(&self) -> &Tensor {
        &self.flag
    }

    /// Dispatches the check of `x[..n]`: unless tripped already, a non-finite value trips the flag with
    /// step `step[0] + offset`, `what` and index `tag` + its position.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        dev: &Device,
        x: &Tensor,
        n: usize,
        step: &Tensor,
        what: NonFinite,
        offset: u32,
        tag: u32,
    ) -> Result<()> {
        k::guard_finite(dev, x, n, step, &self.flag, what.code(), offset, tag)
    }

    /// Starts reading the flag back (asynchronous; ordered after the work submitted so far).
    pub fn read(&self, dev: &Device) -> Result<Download> {
        dev.download(&self.flag.buf)
    }

    /// The flag's words as read: what tripped it, or None while it is clear.
    pub fn decode(words: &[u32]) -> Option<Tripped> {
        match words {
            [1, step, what, index, ..] => {
                NonFinite::from_code(*what).map(|what| Tripped { step: *step, what, index: *index })
            }
            _ => None,
        }
    }
}

impl Optimizer {
    /// `update` with the step's guard folded in: the gradients' partial sums (always computed), then one
    /// dispatch that computes the clip scale (when clipping is on) and has `guard` check `loss` and then
    /// the partial sums as step `step + 1` (what `guard.check` on the loss and `guard_gradients` record),
    /// then the updates. The same numbers as `update`: the guard only reads. With `scaler` the gradients
    /// are those of the loss times its scale: the same dispatch unscales them in the clip scale and, under
    /// dynamic scaling, skips a step whose gradients overflowed (`ops::optim::clip_guard_scaled`).
    pub fn update_guarded(
        &self,
        dev: &Device,
        params: &[&Tensor],
        grads: &[&Tensor],
        loss: &Tensor,
        guard: &Guard,
        scaler: Option<&LossScaler>,
    ) -> Result<()> {
        self.check_step_args(params, grads)?;
        self.sumsq(dev, grads)?;
        match scaler {
            None => k::clip_guard(
                dev,
                &self.partials,
                self.n_partials,
                self.max_norm,
                loss,
                &self.step,
                &self.clip,
                &guard.flag,
                1,
            )?,
            Some(s) => k::clip_guard_scaled(
                dev,
                &self.partials,
                self.n_partials,
                self.max_norm,
                loss,
                &self.step,
                &self.clip,
                &guard.flag,
                s.state(),
                s.interval(),
                1,
            )?,
        }
        self.apply(dev, params, grads)
    }
}
