//! Ctrl-C and SIGTERM during training: the first finishes the current step, saves a checkpoint and exits
//! with 130; a second exits at once. The library only sees a flag, through the run's observer.

use std::sync::atomic::{AtomicBool, Ordering};

use tigel::run::Outcome;

/// Set by the first Ctrl-C or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// The exit status of a run stopped by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Installs the handler (once per process; a second call changes nothing).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!("\nstopping after this step and saving a checkpoint (again to quit at once)");
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ends the process with [`EXIT_INTERRUPTED`] when the run was stopped by a signal, after saying where
/// it stopped; a run that finished returns.
pub fn exit_if_interrupted(outcome: &Outcome, checkpoint: &std::path::Path) {
    if outcome.interrupted {
        let f = &outcome.finished;
        eprintln!(
            "interrupted after step {}: checkpoint saved to {}; continue with --resume {} --steps {} (the steps \
             left: the same learning-rate schedule)",
            f.start_step + f.steps,
            checkpoint.display(),
            checkpoint.parent().unwrap_or(std::path::Path::new(".")).display(),
            f.planned - f.steps
        );
        std::process::exit(EXIT_INTERRUPTED);
    }
}

/// Ends the process with [`EXIT_INTERRUPTED`] (a follower rank of a run stopped by a signal).
pub fn exit_interrupted() -> ! {
    std::process::exit(EXIT_INTERRUPTED)
}
