//! `tigel bench kernels`: validated kernel throughput on the chosen device (see `tigel::bench`).

use std::path::Path;

use tigel::bench::{self, Options, Sizes};
use tigel::Result;

pub fn kernels(backend: Option<&str>, json: Option<&Path>, quick: bool) -> Result<()> {
    // A bad JSON path fails now, not after the run; a file made only for this check goes if the run fails.
    let made = json.filter(|p| !p.exists());
    if let Some(path) = json {
        bench::prepare_output(path)?;
    }
    let run = || -> Result<()> {
        let dev = super::device(backend)?;
        let report = bench::run(&dev, &Options { sizes: if quick { Sizes::Quick } else { Sizes::Full }, print: true })?;
        if let Some(path) = json {
            report.write_json(path)?;
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
