//! `tigel bench kernels|train|all`: validated kernel throughput and training-step figures on the chosen
//! device (see `tigel::bench`).

use std::path::Path;

use tigel::bench::{self, Options, Sizes};
use tigel::host::fs::io_err;
use tigel::Result;

/// Runs the kernel and/or training benchmarks on the chosen device, optionally writing a JSON report.
pub fn run(backend: Option<&str>, kernels: bool, train: bool, json: Option<&Path>, quick: bool) -> Result<()> {
    // A bad JSON path fails now, not after the run; a file made only for this check goes if the run fails.
    let made = json.filter(|p| !p.exists());
    if let Some(path) = json {
        bench::prepare_output(path)?;
    }
    let run = || -> Result<()> {
        let dev = super::device(backend)?;
        let mut out = if kernels {
            let sizes = if quick { Sizes::Quick } else { Sizes::Full };
            bench::run(&dev, &Options { sizes, print: true })?.to_json()
        } else {
            bench::header_json(&dev, quick)
        };
        if train {
            println!("training steps:");
            out["train"] = serde_json::Value::Array(bench::train::run(&dev, quick, true)?);
        }
        if let Some(path) = json {
            bench::prepare_output(path)?;
            let text = serde_json::to_string_pretty(&out).expect("JSON values serialise");
            std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    };
    let r = run();
    if let (Err(_), Some(path)) = (&r, made) {
        let _ = std::fs::remove_file(path);
    }
    r
}
