//! The loop's side of the finiteness guard (`optim::Guard`): every recorded step checks its loss and
//! gradient norm on the device; the loop reads the flags with the losses it reads anyway, and before
//! each evaluation has the weights checked too and waits for the flags, so nothing after the first
//! non-finite value is evaluated, written to metrics.jsonl or saved.

use std::path::Path;

use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::train::Trainer;

/// One recorded step a run step submits, as the guard sees it.
pub struct Guarded<'a> {
    /// How messages name it ("D", "G"; "" when a run has one).
    pub name: &'static str,
    /// Its trainer.
    pub trainer: &'a Trainer,
    /// Its updates per run step (the GAN's D: `d_steps`; else 1).
    pub per_step: u32,
}

/// Starts reading every guard (asynchronous); with `weights`, has the weights checked first.
pub(super) fn read(dev: &Device, guarded: &[Guarded], weights: bool) -> Result<Vec<Download>> {
    guarded
        .iter()
        .map(|g| {
            if weights {
                g.trainer.check_weights(dev)?;
            }
            g.trainer.read_guard(dev)
        })
        .collect()
}

/// Where the last finite state is, for the error: what the run saved last, or what it resumed from.
pub(super) struct Kept<'a> {
    /// The run's checkpoint file.
    pub checkpoint: &'a Path,
    /// The step this run saved last.
    pub saved: Option<u32>,
    /// The checkpoint it resumed from.
    pub resumed_from: Option<&'a Path>,
}

/// Waits for the guards read by `read` and turns the earliest non-finite value into the error that
/// stops the run: the step, what was not finite (and where), and which checkpoint is untouched.
pub(super) fn check(guarded: &[Guarded], reads: Vec<Download>, kept: &Kept) -> Result<()> {
    let mut first: Option<(u32, String)> = None;
    for (g, d) in guarded.iter().zip(reads) {
        let words = d.wait()?;
        if let Some(div) = g.trainer.divergence(&words) {
            let step = div.update.div_ceil(g.per_step.max(1));
            if first.as_ref().is_none_or(|(s, _)| step < *s) {
                let who = if g.name.is_empty() { String::new() } else { format!("{}: ", g.name) };
                first = Some((step, format!("{who}{div}")));
            }
        }
    }
    let Some((step, what)) = first else { return Ok(()) };
    let untouched = match (kept.saved, kept.resumed_from) {
        (Some(s), _) => format!("{} keeps step {s}", kept.checkpoint.display()),
        (None, Some(r)) => format!("the checkpoint resumed from ({}) is untouched", r.display()),
        (None, None) => "nothing was saved".to_string(),
    };
    Err(Error::Other(format!(
        "training diverged at step {step}: {what}; stopped without saving ({untouched}); try a lower learning rate"
    )))
}
