//! The loop of a rank other than 0 in a data-parallel run (`dist`): the same steps as [`super::train`],
//! with the finiteness guard checked at the same steps (every rank holds the same weights, so every rank
//! stops at the same step with the same error), and nothing evaluated, written or shown: rank 0 alone
//! writes the run directory. [`Agreed`] makes a stop asked for on one rank (Ctrl-C, SIGTERM) stop every
//! rank after the same step.

use super::{guard, Cadence, Observer, Regime, RunDir, READ_EVERY};
use crate::device::{Device, Download};
use crate::error::{Error, Result};

/// Runs `regime` for `cadence.steps` steps as a follower rank: the steps, the guard's checks at each
/// read point and before each evaluation of rank 0, and `observer`'s stop (wrap it in [`Agreed`], as
/// rank 0 does). `dir` and `resumed_from` only word the guard's error as rank 0 words it. Returns the
/// steps run.
pub fn follow<R: Regime + ?Sized>(
    dev: &Device,
    regime: &mut R,
    dir: &RunDir,
    cadence: Cadence,
    resumed_from: Option<&std::path::Path>,
    observer: &mut dyn Observer,
) -> Result<u32> {
    if cadence.eval_every == 0 {
        return Err(Error::invalid("run", "the evaluation interval must be positive"));
    }
    let checkpoint = dir.checkpoint();
    let mut kept = guard::Kept { checkpoint: &checkpoint, saved: None, resumed_from };
    let mut pending: Option<Vec<Download>> = None;
    let log_every = cadence.log_every.max(1);
    for i in 1..=cadence.steps {
        regime.step(dev)?;
        let last = i == cadence.steps;
        let stop = !last && observer.should_stop();
        if i % READ_EVERY == 0 || i % log_every == 0 || last {
            if let Some(p) = pending.take() {
                guard::check(&regime.guarded(), p, &kept)?;
            }
            pending = Some(guard::read(dev, &regime.guarded(), false)?);
        }
        if i % cadence.eval_every == 0 || last || stop {
            if let Some(p) = pending.take() {
                guard::check(&regime.guarded(), p, &kept)?;
            }
            let guarded = regime.guarded();
            guard::check(&guarded, guard::read(dev, &guarded, true)?, &kept)?;
            kept.saved = Some(cadence.start_step + i);
        }
        if stop {
            return Ok(i);
        }
    }
    Ok(cadence.steps)
}

/// An observer whose stop is agreed by every rank: true on all as soon as one asks (one tiny allreduce
/// per step on several ranks); everything else goes to the observer wrapped.
pub struct Agreed<'a>(pub &'a mut dyn Observer);

impl Observer for Agreed<'_> {
    fn progress(&mut self, done: u32, message: &str) {
        self.0.progress(done, message)
    }
    fn gradient(&mut self, text: &str) {
        self.0.gradient(text)
    }
    fn line(&mut self, text: &str) {
        self.0.line(text)
    }
    fn log(&mut self, text: &str) {
        self.0.log(text)
    }
    fn finish(&mut self) {
        self.0.finish()
    }
    fn should_stop(&mut self) -> bool {
        let mine = self.0.should_stop();
        match crate::dist::world() {
            Some(w) => w.any(mine).unwrap_or(mine),
            None => mine,
        }
    }
}
