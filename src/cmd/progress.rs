//! The progress bar a training run shows on stderr (hidden with --json), as a `tigel::run` observer.

use indicatif::{ProgressBar, ProgressStyle};
use tigel::run::Observer;

/// An indicatif progress bar over a run's steps; evaluation lines print above it.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar over `steps` steps, or one that shows nothing (`hidden`: --json).
    pub fn new(steps: u32, hidden: bool) -> Bar {
        let bar = if hidden { ProgressBar::hidden() } else { ProgressBar::new(steps as u64) };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} < {eta_precise}  {msg}")
                .expect("a valid template"),
        );
        Bar(bar)
    }
}

impl Observer for Bar {
    fn progress(&mut self, done: u32, message: &str) {
        self.0.set_position(done as u64);
        self.0.set_message(message.to_string());
    }

    fn line(&mut self, text: &str) {
        self.0.println(text);
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
    }

    fn should_stop(&mut self) -> bool {
        super::signal::requested()
    }
}
