//! Dynamic loss scaling for f16 gradients (`--precision mixed`): the backward is seeded with a scale S
//! instead of 1, so gradients too small for f16 stay representable, and the optimizer's clip-and-guard
//! dispatch (`ops::optim::clip_guard_scaled`) unscales them in the clip scale it already computes. When
//! the scaled gradients overflow (their sum of squares is not finite) the step is skipped (weights,
//! optimizer state, EMA and step counter unchanged) and S halves; after `interval` finite steps in a row
//! S doubles. S lives on the device, so a step never waits for the host.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::ops::optim as k;
use crate::tensor::{DType, Tensor};

/// The scale a run starts at under dynamic scaling (2^16, as automatic mixed precision does).
pub const DEFAULT_INIT: f32 = 65536.0;
/// Finite steps in a row after which dynamic scaling doubles the scale.
pub const DEFAULT_INTERVAL: u32 = 2000;

/// How the loss is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LossScale {
    /// Start at `init`, halve on overflow (skipping the step), double after `interval` finite steps.
    Dynamic {
        /// The first step's scale (a power of two keeps the unscaling exact).
        init: f32,
        /// Finite steps in a row before the scale doubles.
        interval: u32,
    },
    /// A fixed scale (1: no scaling); a non-finite gradient norm stops the run as at f32.
    Fixed(f32),
}

impl Default for LossScale {
    fn default() -> LossScale {
        LossScale::Dynamic { init: DEFAULT_INIT, interval: DEFAULT_INTERVAL }
    }
}

impl LossScale {
    /// Checks the values; the error names `--loss-scale`.
    pub fn validate(&self) -> Result<()> {
        let (s, ok_interval) = match *self {
            LossScale::Dynamic { init, interval } => (init, (1..=1 << 24).contains(&interval)),
            LossScale::Fixed(s) => (s, true),
        };
        if !(s.is_finite() && s >= 1.0 && ok_interval) {
            return Err(Error::invalid(
                "gpt train",
                format!(
                    "--loss-scale {self} is out of range: the scale must be finite and >= 1, the interval in 1..=2^24"
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for LossScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LossScale::Dynamic { init: DEFAULT_INIT, interval: DEFAULT_INTERVAL } => f.write_str("dynamic"),
            LossScale::Dynamic { init, interval } => write!(f, "dynamic:{init}:{interval}"),
            LossScale::Fixed(s) => write!(f, "{s}"),
        }
    }
}

impl FromStr for LossScale {
    type Err = Error;

    /// `dynamic`, `dynamic:INIT:INTERVAL`, or a fixed scale N (>= 1).
    fn from_str(s: &str) -> Result<LossScale> {
        let bad = || {
            Error::invalid(
                "gpt train",
                format!("--loss-scale `{s}`: expected `dynamic`, `dynamic:INIT:INTERVAL` or a fixed scale N >= 1"),
            )
        };
        let v = match s.split(':').collect::<Vec<_>>()[..] {
            ["dynamic"] => LossScale::default(),
            ["dynamic", init, interval] => LossScale::Dynamic {
                init: init.parse().map_err(|_| bad())?,
                interval: interval.parse().map_err(|_| bad())?,
            },
            [n] => LossScale::Fixed(n.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        v.validate().map_err(|_| bad())?;
        Ok(v)
    }
}

impl From<LossScale> for String {
    fn from(v: LossScale) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for LossScale {
    type Error = Error;
    fn try_from(s: String) -> Result<LossScale> {
        s.parse()
    }
}

/// What the device's loss-scale state says after a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleState {
    /// The scale the next step's loss is seeded with.
    pub scale: f32,
    /// Steps skipped so far (their scaled gradients overflowed).
    pub skipped: u32,
    /// The scale the latest step's gradients carried (its gradient norm is the partials' over this).
    pub used: f32,
}

/// The loss-scale state on the device (f32 [4]: [S, finite steps in a row, steps skipped, the latest
/// step's S]; see `ops::optim::loss_scale_buffer`).
pub struct LossScaler {
    mode: LossScale,
    state: Tensor,
}

impl std::fmt::Debug for LossScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LossScaler({})", self.mode)
    }
}

impl LossScaler {
    /// The state at the mode's first scale. Call it before `Device::capture` (it uploads).
    pub fn new(dev: &Device, mode: LossScale) -> Result<LossScaler> {
        mode.validate()?;
        let init = match mode {
            LossScale::Dynamic { init, .. } => init,
            LossScale::Fixed(s) => s,
        };
        Ok(LossScaler { mode, state: k::loss_scale_buffer(dev, init)? })
    }

    /// How it scales.
    pub fn mode(&self) -> LossScale {
        self.mode
    }

    /// The scale as a one-element f32 tensor (the state's first word): the backward's seed.
    pub fn seed(&self) -> Tensor {
        Tensor { buf: self.state.buf.clone(), shape: vec![1], dtype: DType::F32 }
    }

    /// The whole state tensor.
    pub fn state(&self) -> &Tensor {
        &self.state
    }

    /// The doubling interval under dynamic scaling (None: fixed).
    pub fn interval(&self) -> Option<u32> {
        match self.mode {
            LossScale::Dynamic { interval, .. } => Some(interval),
            LossScale::Fixed(_) => None,
        }
    }

    /// Starts reading the state back (asynchronous; ordered after the work submitted so far).
    pub fn read(&self, dev: &Device) -> Result<Download> {
        dev.download(&self.state.buf)
    }

    /// The state's words as read.
    pub fn decode(words: &[u32]) -> ScaleState {
        let f = |i: usize| words.get(i).map_or(f32::NAN, |&w| f32::from_bits(w));
        ScaleState { scale: f(0), skipped: f(2) as u32, used: f(3) }
    }
}
