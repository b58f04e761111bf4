//! `tigel bench kernels|train|all`: validated kernel throughput and training-step figures on the chosen
//! device (see `tigel::bench`); `tigel bench soak`: memory over a long training run (`tigel::bench::soak`).

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

/// `tigel bench soak`'s arguments.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Training steps.
    #[arg(long, default_value_t = 10_000)]
    steps: u32,
    /// A tiny GPT (1 layer, width 32, context 32, batch 4) instead of `train gpt`'s default model, for
    /// slow devices such as lavapipe.
    #[arg(long)]
    tiny: bool,
    /// Layers, instead of the model's (4, or 1 with --tiny).
    #[arg(long)]
    layers: Option<usize>,
    /// Width, instead of the model's (128, or 32 with --tiny); a multiple of the heads (4, or 2 with --tiny).
    #[arg(long)]
    width: Option<usize>,
    /// Context, instead of the model's (128, or 32 with --tiny).
    #[arg(long)]
    context: Option<usize>,
    /// Sequences per step, instead of the model's (16, or 4 with --tiny).
    #[arg(long)]
    batch: Option<usize>,
    /// Steps between memory samples (default: 250, or 20 with --tiny).
    #[arg(long)]
    sample_every: Option<u32>,
    /// Steps between evaluations and checkpoint saves (default: 500, or 50 with --tiny).
    #[arg(long)]
    eval_every: Option<u32>,
    /// Also write the report (settings, growth after warm-up, every sample) as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Trains the GPT for `--steps` steps in a temporary run directory, sampling process and device memory,
/// and fails if either grew after warm-up.
pub fn soak(backend: Option<&str>, a: SoakArgs) -> Result<()> {
    use tigel::bench::soak::{self, SoakSettings};
    if let Some(path) = &a.json {
        bench::prepare_output(path)?;
    }
    let mut s = if a.tiny { SoakSettings::tiny_gpt(a.steps) } else { SoakSettings::default_gpt(a.steps) };
    if let Some(e) = a.sample_every {
        s.sample_every = e;
    }
    if let Some(e) = a.eval_every {
        s.eval_every = e;
    }
    s.model.layers = a.layers.unwrap_or(s.model.layers);
    s.model.width = a.width.unwrap_or(s.model.width);
    s.model.context = a.context.unwrap_or(s.model.context);
    s.batch = a.batch.unwrap_or(s.batch);
    let dev = super::device(backend)?;
    let dir = std::env::temp_dir().join(format!("tigel-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let report = soak::run(&dev, &s, &dir, &mut |line| println!("{line}"));
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    for line in report.summary_lines() {
        println!("{line}");
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("JSON values serialise");
        std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))?;
        eprintln!("wrote {}", path.display());
    }
    if !report.flat() {
        return Err(tigel::Error::Other("bench soak: memory grew after warm-up (see the table above)".into()));
    }
    Ok(())
}
