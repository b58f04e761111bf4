//! What a training run shows while it trains, as a `tigel::run` observer: a progress bar on stderr when
//! stderr is a terminal, and plain progress lines (one per `--log-every` steps, with the evaluation
//! lines) where the output is not a terminal: on stdout when it is redirected (`> log.txt`, nohup, CI),
//! else on stderr when that is (`--json` keeps stdout for its one JSON line).

use std::io::{IsTerminal as _, Write as _};

use indicatif::{ProgressBar, ProgressStyle};
use tigel::run::Observer;

/// Where the plain lines go.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plain {
    Stdout,
    Stderr,
}

/// An indicatif progress bar over a run's steps (evaluation lines print above it) and/or plain lines.
pub struct Bar {
    bar: ProgressBar,
    plain: Option<Plain>,
    /// The latest gradient norm(s), shown after the regime's message.
    gradient: String,
}

impl Bar {
    /// A display for a run of `steps` steps; `json`: stdout carries the results line only.
    pub fn new(steps: u32, json: bool) -> Bar {
        let (out_tty, err_tty) = (std::io::stdout().is_terminal(), std::io::stderr().is_terminal());
        let bar = if err_tty { ProgressBar::new(steps as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} < {eta_precise}  {msg}")
                .expect("a valid template"),
        );
        let plain = match (json, out_tty, err_tty) {
            (false, false, _) => Some(Plain::Stdout),
            (_, _, false) => Some(Plain::Stderr),
            _ => None,
        };
        Bar { bar, plain, gradient: String::new() }
    }

    fn plain(&self, text: &str) {
        match self.plain {
            Some(Plain::Stdout) => {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{text}");
                let _ = o.flush();
            }
            Some(Plain::Stderr) => eprintln!("{text}"),
            None => {}
        }
    }
}

impl Observer for Bar {
    fn progress(&mut self, done: u32, message: &str) {
        self.bar.set_position(done as u64);
        if self.gradient.is_empty() {
            self.bar.set_message(message.to_string());
        } else {
            self.bar.set_message(format!("{message}  {}", self.gradient));
        }
    }

    fn gradient(&mut self, text: &str) {
        self.gradient = text.to_string();
    }

    fn line(&mut self, text: &str) {
        if !self.bar.is_hidden() {
            self.bar.println(text);
        }
        self.plain(text);
    }

    fn log(&mut self, text: &str) {
        self.plain(text);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }

    fn should_stop(&mut self) -> bool {
        super::signal::requested()
    }
}
