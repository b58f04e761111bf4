//! Inference only: load a GPT checkpoint that `tigel train gpt` wrote and continue a prompt, through the
//! library (no training, no command line crate).
//!
//!     cargo run --release -- train gpt --steps 200 --out runs/gpt
//!     cargo run --release --example generate -- runs/gpt "In the beginning" [TOKENS] [TEMPERATURE]
//!
//! The first argument is the run directory or its checkpoint.safetensors. $TIGEL_BACKEND picks the
//! device (default: a GPU if wgpu finds one, else the CPU backend).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use tigel::models::gpt::{SampleSettings, Sampler};
use tigel::prelude::*;

const USAGE: &str = "usage: generate CHECKPOINT [PROMPT] [TOKENS] [TEMPERATURE]\n  CHECKPOINT: a run directory \
                     of `tigel train gpt`, or its checkpoint.safetensors";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or_else(|| Error::Other(USAGE.into()))?);
    let prompt = args.next().unwrap_or_default();
    let tokens = number(args.next(), "TOKENS", 200)?;
    let temperature = number(args.next(), "TEMPERATURE", 0.8)?;
    if let Some(extra) = args.next() {
        return Err(Error::Other(format!("unexpected argument `{extra}`\n{USAGE}")));
    }

    // A missing file, a file that is not a tigel checkpoint, or another model's checkpoint is an error
    // that names the file and what is wrong, before any device work.
    let ck = Checkpoint::load(&path)?;
    ck.expect_kind_for(tigel::models::gpt::KIND, "examples/generate")?;
    let dev = Device::from_env()?;
    // The config comes from the checkpoint; every weight is checked against it as it is restored.
    let model = Gpt::load(&dev, &ck, "examples/generate")?;
    eprintln!(
        "{} on {}: a {}-layer GPT after {} steps",
        ck.source.as_deref().unwrap_or(&path).display(),
        dev.name(),
        model.cfg.layers,
        ck.step
    );

    let sampler = Sampler::new(&dev, &model)?;
    let settings = SampleSettings { tokens, temperature, top_k: 40, seed: 1 };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(prompt.as_bytes());
    sampler.generate(&dev, prompt.as_bytes(), settings, |b| {
        let _ = out.write_all(&[b]);
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(())
}

/// The optional positional argument `what`, or `default` when it is absent.
fn number<T: std::str::FromStr>(arg: Option<String>, what: &str, default: T) -> Result<T> {
    match arg {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| Error::Other(format!("{what} must be a number, not `{s}`\n{USAGE}"))),
    }
}
