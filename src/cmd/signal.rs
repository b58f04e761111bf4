//! Ctrl-C and SIGTERM during training: the first finishes the current step, saves a checkpoint and exits
//! with 130; a second exits at once. Signals within `SAME_REQUEST` of the first count as the same
//! request: a tool such as `timeout -s INT` signals the process and its process group at once, so one
//! request can arrive twice. The library only sees a flag, through the run's observer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tigel::run::Outcome;

/// Set by the first Ctrl-C or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// When the first signal came.
static FIRST: OnceLock<Instant> = OnceLock::new();

/// Signals this soon after the first are the same request, not a second press (a person's second
/// Ctrl-C comes later than this).
const SAME_REQUEST: Duration = Duration::from_millis(250);

/// The exit status of a run stopped by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Installs the handler (once per process; a second call changes nothing).
pub fn install() {
    // The handler runs on one thread, one signal at a time.
    let _ = ctrlc::set_handler(|| {
        let now = Instant::now();
        if STOP.swap(true, Ordering::SeqCst) {
            if FIRST.get().is_some_and(|first| now.duration_since(*first) < SAME_REQUEST) {
                return;
            }
            std::process::exit(EXIT_INTERRUPTED);
        }
        let _ = FIRST.set(now);
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
