//! What a run shows, kept out of the loop: the loop reports through an [`Observer`] (the command line's
//! is a progress bar; an embedding application passes its own or [`Quiet`]), and the few tables a run
//! prints are formatted here as lines, never written by the library itself.

use serde_json::Value;

use crate::device::Device;

/// Receives a run's progress. Every method has a default that does nothing.
pub trait Observer {
    /// `done` steps of this run are done; `message` says how training goes (losses, throughput).
    fn progress(&mut self, _done: u32, _message: &str) {}
    /// The gradient norm(s) of the step the latest progress message describes, as text to show beside
    /// it (`grad norm 0.412`, or `grad norm D 0.52 G 1.31` for a regime with two nets); called just
    /// before that `progress`.
    fn gradient(&mut self, _text: &str) {}
    /// A line worth keeping on screen (an evaluation's result).
    fn line(&mut self, _text: &str) {}
    /// A plain progress line, one per `log_every` steps (see [`plain_line`]): for logs that are not a
    /// terminal, where a progress bar shows nothing.
    fn log(&mut self, _text: &str) {}
    /// The loop has finished (a progress display clears itself here).
    fn finish(&mut self) {}
    /// Asked after every step: true stops the run there, after saving a checkpoint (the command line
    /// answers from its Ctrl-C and SIGTERM handler).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that shows nothing.
pub struct Quiet;

impl Observer for Quiet {}

/// The CPU backend's time per kernel (profiling on), the 20 most expensive, as lines to print.
pub fn profile_lines(dev: &Device) -> Vec<String> {
    let prof = dev.profile();
    let total: f64 = prof.iter().map(|p| p.2).sum();
    let mut out = vec![format!("kernel time (CPU backend), {total:.1} s in all:")];
    for (name, calls, secs) in prof.iter().take(20) {
        out.push(format!("  {name:<44} {calls:>8} calls {secs:>8.2} s {:>5.1}%", 100.0 * secs / total));
    }
    out
}

/// A metrics.jsonl training line as plain text: `step N` then each figure by its key, in alphabetical
/// order, with `train_s` last as `train 12.3 s`: `step 300  loss_bits_per_char 2.345  lr 0.00192 ...`.
pub fn plain_line(line: &Value) -> String {
    let Some(o) = line.as_object() else { return line.to_string() };
    let mut s = format!("step {}", o.get("step").unwrap_or(&Value::Null));
    for (k, v) in o.iter().filter(|(k, _)| !matches!(k.as_str(), "kind" | "step" | "elapsed_s" | "train_s")) {
        s.push_str(&format!("  {k} {}", figure(v)));
    }
    if let Some(t) = o.get("train_s").and_then(Value::as_f64) {
        s.push_str(&format!("  train {t:.1} s"));
    }
    s
}

/// A number for reading: whole above 1000, four significant digits down to 0.001, then `1.23e-4`; `-`
/// for a missing or non-finite value (JSON writes those as null).
pub fn figure(v: &Value) -> String {
    match v.as_f64() {
        _ if v.is_u64() || v.is_i64() => v.to_string(),
        Some(x) => {
            let a = x.abs();
            if a >= 1000.0 {
                format!("{x:.0}")
            } else if a == 0.0 {
                "0".into()
            } else if a < 1e-3 {
                format!("{x:.2e}")
            } else {
                let digits = (3 - a.log10().floor() as i32).max(0) as usize;
                format!("{x:.digits$}")
            }
        }
        None if v.is_null() => "-".into(),
        None => v.to_string(),
    }
}
