//! What a run shows, kept out of the loop: the loop reports through an [`Observer`] (the command line's
//! is a progress bar; an embedding application passes its own or [`Quiet`]), and the few tables a run
//! prints are formatted here as lines, never written by the library itself.

use crate::device::Device;

/// Receives a run's progress. Every method has a default that does nothing.
pub trait Observer {
    /// `done` steps of this run are done; `message` says how training goes (losses, throughput).
    fn progress(&mut self, _done: u32, _message: &str) {}
    /// A line worth keeping on screen (an evaluation's result).
    fn line(&mut self, _text: &str) {}
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
