//! What `--resume` does to the learning-rate schedule and the step counter (`--resume-schedule`):
//!
//! - `continue` (the default): the step counter goes on from the checkpoint's step S, with the
//!   optimizer's moments, and the schedule is the one a run of S + `--steps` steps would follow (the
//!   same warmup, its decay stretched to end at S + `--steps`). A run stopped at step S and resumed with
//!   the steps it had left follows exactly the schedule it would have followed; a finished run given
//!   more steps picks up part-way down the stretched decay. It writes back into its run directory.
//! - `restart`: the checkpoint's weights (and EMA weights, batch-norm statistics) start a new run: the
//!   step counter starts at 0, the optimizer's moments are reset (they averaged the gradients of the
//!   old data, and Adam's bias correction restarts with them), and the schedule is a fresh warmup and
//!   decay over `--steps`. For training on new data. Its step numbers start again, so it writes into a
//!   new run directory (`--out`, or the first free runs/KIND-N), never the resumed one.

use std::fmt;
use std::str::FromStr;

use crate::checkpoint::Checkpoint;

/// What a resumed run does with the schedule and the step counter (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResumeSchedule {
    /// The step counter and the schedule go on from the checkpoint's step toward the new total.
    #[default]
    Continue,
    /// A new run from the checkpoint's weights: step 0, fresh optimizer moments, a new warmup and decay.
    Restart,
}

impl ResumeSchedule {
    /// Makes the checkpoint to restore for this choice: unchanged for `Continue`; for `Restart` every
    /// optimizer state tensor (`optim.*`, `d.optim.*`, ...: moments and step counters) zeroed and the
    /// step set to 0, as a fresh optimizer has them.
    pub fn prepare(self, mut ck: Checkpoint) -> Checkpoint {
        if self == ResumeSchedule::Restart {
            for (name, t) in ck.tensors.iter_mut() {
                if name.starts_with("optim.") || name.contains(".optim.") {
                    t.data.iter_mut().for_each(|w| *w = 0);
                }
            }
            ck.step = 0;
        }
        ck
    }

    /// Whether the run resumes into its own directory and step count (`Continue`).
    pub fn continues(self) -> bool {
        self == ResumeSchedule::Continue
    }
}

impl FromStr for ResumeSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "continue" => Ok(ResumeSchedule::Continue),
            "restart" => Ok(ResumeSchedule::Restart),
            _ => Err(format!("`{s}`: want continue or restart")),
        }
    }
}

impl fmt::Display for ResumeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResumeSchedule::Continue => "continue",
            ResumeSchedule::Restart => "restart",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::HostTensor;

    #[test]
    fn restart_zeroes_the_optimizer_state_only() {
        let mut ck = Checkpoint::new("gan", serde_json::Value::Null);
        ck.step = 40;
        ck.tensors.insert("w".into(), HostTensor::from_f32(&[2], &[1.0, 2.0]).unwrap());
        ck.tensors.insert("optim.step".into(), HostTensor::from_u32(&[1], vec![40]).unwrap());
        ck.tensors.insert("d.optim.0.m".into(), HostTensor::from_f32(&[2], &[0.5, 0.5]).unwrap());
        ck.tensors.insert("ema.0".into(), HostTensor::from_f32(&[2], &[1.5, 2.5]).unwrap());
        let kept = ResumeSchedule::Continue.prepare(ck.clone());
        assert_eq!(kept, ck);
        let r = ResumeSchedule::Restart.prepare(ck);
        assert_eq!(r.step, 0);
        assert_eq!(r.tensors["optim.step"].data, [0]);
        assert_eq!(r.tensors["d.optim.0.m"].f32s().unwrap(), [0.0, 0.0]);
        assert_eq!(r.tensors["w"].f32s().unwrap(), [1.0, 2.0]);
        assert_eq!(r.tensors["ema.0"].f32s().unwrap(), [1.5, 2.5]);
        assert_eq!("restart".parse::<ResumeSchedule>(), Ok(ResumeSchedule::Restart));
        assert!("again".parse::<ResumeSchedule>().unwrap_err().contains("continue or restart"));
    }
}
