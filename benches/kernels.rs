//! `cargo bench --bench kernels [-- --json FILE]`: the quick kernel suite on the device named by
//! TIGEL_BACKEND (default auto), printed as a table. Arguments cargo adds (`--bench`) are ignored.

use std::process::ExitCode;

use tigel::bench::{self, Options, Sizes};
use tigel::Device;

fn main() -> ExitCode {
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--json" {
            json = args.next().map(std::path::PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--json=") {
            json = Some(p.into());
        }
    }
    let run = || -> tigel::Result<()> {
        if let Some(p) = &json {
            bench::prepare_output(p)?;
        }
        let dev = Device::from_env()?;
        eprintln!("{}", dev.note());
        let report = bench::run(&dev, &Options { sizes: Sizes::Quick, print: true })?;
        if let Some(p) = &json {
            report.write_json(p)?;
            eprintln!("wrote {}", p.display());
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
