//! The training loop every regime shares. Each step is submitted without a wait; every [`READ_EVERY`]
//! steps the loop takes the losses it asked for at the previous read point (long arrived) and asks for
//! the latest (an asynchronous read), then reports progress. The losses of every `log_every`-th step,
//! once they arrive, make a `"kind": "train"` line of metrics.jsonl and a plain progress line; every
//! `eval_every` steps, and at the last, the regime evaluates, the loop saves the checkpoint (and keeps
//! the best and periodic ones, [`retain`]), appends its `"kind": "eval"` line, shows it and redraws the
//! plots. The gradient norm of each recorded step is read with the losses (no extra wait) and joins the
//! training lines and the progress display. Time spent evaluating and saving is kept apart, so
//! throughput and `train_s` count training alone. docs/metrics.md lists the keys.
//!
//! A regime (the GPT, the GAN, diffusion: [`gpt`], [`gan`], [`diffusion`]) plugs in through [`Regime`];
//! what is shown goes through a [`report::Observer`], so the library draws nothing itself.

pub mod diffusion;
pub mod dir;
pub mod follow;
pub mod gan;
pub mod gpt;
pub mod guard;
pub mod history;
pub mod report;
pub mod resume;
pub mod retain;

use std::path::Path;

use serde_json::{json, Value};

use crate::device::{Device, Download, Instant};
use crate::error::Result;
pub use dir::{resume_checkpoint, MetricsLog, RunDir};
pub use follow::{follow, Agreed};
pub use guard::Guarded;
pub use history::History;
pub use report::{Observer, Quiet};
pub use resume::ResumeSchedule;
pub use retain::Best;

/// Steps between loss reads and progress reports.
pub const READ_EVERY: u32 = 10;

/// One training regime as the loop drives it.
pub trait Regime {
    /// One training step: submissions only, no wait.
    fn step(&mut self, dev: &Device) -> Result<()>;
    /// Starts reading the latest step's losses back (asynchronous; one f32 each).
    fn read_losses(&self, dev: &Device) -> Result<Vec<Download>>;
    /// The recorded steps a run step submits, whose finiteness guards the loop reads.
    fn guarded(&self) -> Vec<Guarded<'_>>;
    /// The losses asked for by the previous `read_losses`, as they arrived.
    fn take_losses(&mut self, losses: &[f64]);
    /// The progress message at a log point.
    fn progress(&self, at: At, clock: &Clock) -> String;
    /// The regime's part of the metrics.jsonl line of step `at`, whose losses `take_losses` has just
    /// been given (losses, learning rate, throughput over `train_s` seconds); the loop adds `kind`,
    /// `step`, `elapsed_s` and `train_s`.
    fn train_metrics(&self, _at: At, _train_s: f64) -> Value {
        json!({})
    }
    /// Redraws the regime's pictures in the run directory `dir` (loss.png from the metrics lines so far,
    /// `history`; samples.png for the generative regimes), after each evaluation.
    fn plot(&self, _dir: &Path, _history: &History) -> Result<()> {
        Ok(())
    }
    /// The key of the evaluation line's figure that picks the best checkpoint (lower is better), or
    /// None to keep no best checkpoint.
    fn best_key(&self) -> Option<&'static str> {
        None
    }
    /// Evaluates at `at`: the metrics.jsonl line and the line to show.
    fn evaluate(&mut self, dev: &Device, at: At, clock: &Clock) -> Result<Evaluation>;
    /// Saves the checkpoint (atomically) to `path`.
    fn save(&self, dev: &Device, path: &Path) -> Result<()>;
    /// The run's part of config.json (model, training settings, data); the loop adds `resumed_from`
    /// and `start_step`.
    fn config(&self) -> Value;
    /// The line that closes the run.
    fn done(&self, fin: &Finished, checkpoint: &Path) -> String;
    /// The run's results as one JSON object.
    fn summary(&self, dev: &Device, fin: &Finished) -> Value;
}

/// Where the loop stands when it calls the regime.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// Steps done in this run.
    pub i: u32,
    /// The optimizer step, counting the steps of the run resumed.
    pub step: u32,
    /// Whether this is the run's last step.
    pub last: bool,
}

/// What an evaluation gives.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The metrics.jsonl line.
    pub metrics: Value,
    /// The line to show.
    pub line: String,
}

/// A run's wall clock, with the time spent evaluating and saving ("side" time) kept apart.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
    side: f64,
}

impl Clock {
    /// Seconds since the loop started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Seconds spent training: elapsed less side time (never zero).
    pub fn train_s(&self) -> f64 {
        (self.elapsed_s() - self.side).max(1e-9)
    }
}

/// How long this run trains and how often it evaluates.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// Steps in this run.
    pub steps: u32,
    /// Evaluate (and save) every this many steps, and at the last.
    pub eval_every: u32,
    /// Write a metrics.jsonl training line and a plain progress line every this many steps (and at the
    /// last); 0 is taken as 1.
    pub log_every: u32,
    /// The optimizer step the run starts at (a resumed run's; else 0).
    pub start_step: u32,
}

/// A finished run's timing.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    /// Steps in this run.
    pub steps: u32,
    /// Steps this run was asked for (more than `steps` when the observer stopped it).
    pub planned: u32,
    /// The optimizer step the run started at.
    pub start_step: u32,
    /// Wall-clock seconds of the loop.
    pub elapsed_s: f64,
    /// Seconds of it spent training (evaluation and saving left out).
    pub train_s: f64,
}

impl Finished {
    /// The closing line every regime prints: "done: N steps in E s{detail}; checkpoint PATH", where
    /// `detail` is the regime's own figures (rates, scores).
    pub fn done_line(&self, detail: &str, checkpoint: &Path) -> String {
        format!("done: {} steps in {:.0} s{detail}; checkpoint {}", self.steps, self.elapsed_s, checkpoint.display())
    }
}

/// What [`train`] returns: the timing, the closing line and the results.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The timing.
    pub finished: Finished,
    /// The line that closes the run ([`Regime::done`]).
    pub done: String,
    /// The results ([`Regime::summary`]).
    pub summary: Value,
    /// Whether the observer stopped the run early ([`Observer::should_stop`]); the checkpoint holds the
    /// last step done.
    pub interrupted: bool,
    /// The best checkpoint of the run directory when the run ended (its path, the figure's key, its step
    /// and figure), when the regime names a figure ([`Regime::best_key`]).
    pub best: Option<(std::path::PathBuf, &'static str, Best)>,
}

/// A loss read back: the first f32 of a download.
pub fn loss_value(d: Download) -> Result<f64> {
    Ok(d.f32()? as f64)
}

/// Runs `regime` for `cadence.steps` steps into `dir`: creates and locks it, and at each evaluation
/// saves the checkpoint (and the copies [`retain`] keeps), then writes config.json (with `resumed_from`)
/// and appends to metrics.jsonl, so they describe the same step after any crash. At the first non-finite loss, gradient norm or
/// weight (the guard, see [`guard`]) it stops with an error naming the step, before anything of that
/// step is evaluated, logged or saved. When the observer asks it to stop (Ctrl-C), it evaluates and
/// saves the step it is at and returns with `interrupted` set.
pub fn train<R: Regime + ?Sized>(
    dev: &Device,
    regime: &mut R,
    dir: &RunDir,
    cadence: Cadence,
    resumed_from: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    if cadence.eval_every == 0 {
        return Err(crate::Error::invalid("run", "the evaluation interval must be positive"));
    }
    // One commit point: config.json and the metrics line are written after the checkpoint they describe,
    // and a resume drops metrics lines past its checkpoint, so the three agree after any crash.
    let _lock = dir.lock("run")?;
    let mut config = regime.config();
    if let Some(c) = config.as_object_mut() {
        c.insert("resumed_from".into(), json!(resumed_from));
        c.insert("start_step".into(), json!(cadence.start_step));
    }
    let mut metrics = dir.metrics(cadence.start_step)?;
    let checkpoint = dir.checkpoint();
    // The lines kept from the run resumed: the plots continue them, the best figure is read from them.
    let earlier = dir.read_metrics();
    let mut retention = retain::Retention::open(dir, cadence.start_step, regime.best_key(), &earlier)?;
    let mut history = History::default();
    for line in earlier {
        history.push(line);
    }

    let mut clock = Clock { started: Instant::now(), side: 0.0 };
    let mut pending: Option<Pending> = None;
    let mut kept = guard::Kept { checkpoint: &checkpoint, saved: None, resumed_from };
    let steps = cadence.steps;
    // The steps this run made: all of them, or up to a stop asked for by the observer.
    let mut ran = steps;
    let mut interrupted = false;
    let log_every = cadence.log_every.max(1);
    for i in 1..=steps {
        regime.step(dev)?;
        let at = At { i, step: cadence.start_step + i, last: i == steps };
        let stop = !at.last && observer.should_stop();
        let log = i % log_every == 0 || at.last;
        if i % READ_EVERY == 0 || log {
            // The losses (and guards) asked for at the previous read point have long arrived; ask for these.
            take_pending(regime, &mut pending, &kept, &mut metrics, &mut history, observer)
                .inspect_err(|_| observer.finish())?;
            let (train_s, elapsed_s) = (clock.train_s(), clock.elapsed_s());
            let guards = guard::read(dev, &regime.guarded(), false)?;
            let reads = regime.read_losses(dev)?;
            let norms = regime.guarded().iter().map(|g| g.trainer.read_grad_norm(dev)).collect::<Result<_>>()?;
            let scales =
                regime.guarded().iter().map(|g| g.trainer.read_loss_scale(dev).transpose()).collect::<Result<_>>()?;
            pending = Some(Pending { at, train_s, elapsed_s, log, reads, guards, norms, scales });
            observer.progress(i, &regime.progress(at, &clock));
        }
        if i % cadence.eval_every == 0 || at.last || stop {
            take_pending(regime, &mut pending, &kept, &mut metrics, &mut history, observer)
                .inspect_err(|_| observer.finish())?;
            let side_start = Instant::now();
            let (train_s, elapsed_s) = (clock.train_s(), clock.elapsed_s());
            // Evaluating waits anyway: check everything up to this step first, weights included.
            let guarded = regime.guarded();
            guard::check(&guarded, guard::read(dev, &guarded, true)?, &kept).inspect_err(|_| observer.finish())?;
            let e = regime.evaluate(dev, at, &clock)?;
            // Checkpoint first (and its kept copies), then config.json, then the metrics line: one
            // commit point.
            regime.save(dev, &checkpoint)?;
            kept.saved = Some(at.step);
            let mut line = json!({"kind": "eval"});
            merge(&mut line, e.metrics);
            merge(&mut line, json!({"step": at.step, "elapsed_s": elapsed_s, "train_s": train_s}));
            let best = retention.saved(&checkpoint, at.step, &line)?;
            if regime.best_key().is_some() {
                merge(&mut line, json!({"best": best}));
            }
            dir.write_config(&config)?;
            metrics.append(&line)?;
            history.push(line);
            observer.line(&e.line);
            regime.plot(dir.path(), &history)?;
            clock.side += side_start.elapsed().as_secs_f64();
        }
        if stop {
            (ran, interrupted) = (i, true);
            break;
        }
    }
    observer.finish();
    let finished = Finished {
        steps: ran,
        planned: steps,
        start_step: cadence.start_step,
        elapsed_s: clock.elapsed_s(),
        train_s: clock.train_s(),
    };
    let best = retention.best();
    let mut done = regime.done(&finished, &checkpoint);
    if let Some((path, key, b)) = &best {
        done.push_str(&format!("; best {} (step {}, {key} {:.4})", path.display(), b.step, b.value));
    }
    Ok(Outcome { finished, done, summary: regime.summary(dev, &finished), interrupted, best })
}

/// Reads under way: the step they are of, the training time then, whether they make a log line, the
/// losses and the guards.
struct Pending {
    at: At,
    train_s: f64,
    elapsed_s: f64,
    log: bool,
    reads: Vec<Download>,
    guards: Vec<Download>,
    norms: Vec<Download>,
    /// The loss-scale states of the trainers that scale their loss.
    scales: Vec<Option<Download>>,
}

/// Adds the keys of the object `more` to the object `v` (a key already there is replaced).
pub fn merge(v: &mut Value, more: Value) {
    if let (Some(o), Value::Object(m)) = (v.as_object_mut(), more) {
        o.extend(m);
    }
}

/// Checks the guards of an earlier read, if one is pending, and hands its losses to the regime (never
/// those of a step past the first non-finite value) and its gradient norms to the observer; a log
/// step's make a training line of metrics.jsonl (kept in `history` for the plots) and a plain progress
/// line.
fn take_pending<R: Regime + ?Sized>(
    regime: &mut R,
    pending: &mut Option<Pending>,
    kept: &guard::Kept,
    metrics: &mut MetricsLog,
    history: &mut History,
    observer: &mut dyn Observer,
) -> Result<()> {
    let Some(p) = pending.take() else { return Ok(()) };
    guard::check(&regime.guarded(), p.guards, kept)?;
    let losses = p.reads.into_iter().map(loss_value).collect::<Result<Vec<f64>>>()?;
    regime.take_losses(&losses);
    let guarded = regime.guarded();
    let mut norms = serde_json::Map::new();
    let mut shown = String::from("grad norm");
    for ((g, d), sc) in guarded.iter().zip(p.norms).zip(p.scales) {
        let mut norm = g.trainer.grad_norm(&d.wait()?);
        let key = |k: &str| if g.name.is_empty() { k.to_string() } else { format!("{k}_{}", g.name.to_lowercase()) };
        if let Some(sc) = sc {
            // A scaled loss's gradients carry its scale: the norm logged is the unscaled one.
            let st = g.trainer.loss_scale(&sc.wait()?);
            norm /= st.used as f64;
            norms.insert(key("loss_scale"), json!(st.scale));
            norms.insert(key("skipped"), json!(st.skipped));
        }
        norms.insert(key("grad_norm"), json!(norm));
        let who = if g.name.is_empty() { String::new() } else { format!(" {}", g.name) };
        shown.push_str(&format!("{who} {}", report::figure(&json!(norm))));
    }
    observer.gradient(&shown);
    if p.log {
        let mut line = json!({"kind": "train", "step": p.at.step});
        merge(&mut line, regime.train_metrics(p.at, p.train_s));
        merge(&mut line, Value::Object(norms));
        merge(&mut line, json!({"elapsed_s": p.elapsed_s, "train_s": p.train_s}));
        metrics.append(&line)?;
        observer.log(&report::plain_line(&line));
        history.push(line);
    }
    Ok(())
}
