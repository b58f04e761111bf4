//! `tigel train|sample|eval gpt`: the byte-level language model from the command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tigel::checkpoint::{checkpoint_path, Checkpoint};
use tigel::data::text::Corpus;
use tigel::models::gpt::{Evaluator, Gpt, GptConfig, GptTrainer, SampleSettings, Sampler, TrainSettings};
use tigel::{Error, Result};

/// Model and training defaults: the best model found to train in about ten minutes on a 2-core CPU
/// (see docs/benchmarks.md for the measurements behind them).
pub const DEFAULT_LAYERS: usize = 4;
pub const DEFAULT_HEADS: usize = 4;
pub const DEFAULT_WIDTH: usize = 128;
pub const DEFAULT_CONTEXT: usize = 128;
pub const DEFAULT_BATCH: usize = 16;
pub const DEFAULT_STEPS: u32 = 4000;
pub const DEFAULT_LR: f32 = 2e-3;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// UTF-8 text file to learn (default: tigel's own sources and docs, built into the binary).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Optimizer steps in this run.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u32,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    /// Embedding width (a multiple of --heads).
    #[arg(long)]
    pub width: Option<usize>,
    /// Context length in bytes.
    #[arg(long)]
    pub context: Option<usize>,
    /// Dropout probability after attention and MLP.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Sequences per step.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Peak learning rate (AdamW, linear warmup then cosine decay to a tenth).
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f32,
    /// Warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validate (and save a checkpoint) every N steps.
    #[arg(long, default_value_t = 500)]
    pub eval_every: u32,
    /// Windows of held-out text in each periodic validation (the final one uses all of it).
    #[arg(long, default_value_t = 256)]
    pub eval_windows: usize,
    /// Run directory for checkpoint.safetensors, config.json and metrics.jsonl (default: the first
    /// free runs/gpt, runs/gpt-2, ...).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory (on --data, which may be new text).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// End with one JSON line of results on stdout.
    #[arg(long)]
    pub json: bool,
    /// Bytes to generate from the trained model at the end (0: none).
    #[arg(long, default_value_t = 300)]
    pub sample_tokens: usize,
}

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (or checkpoint file) of a trained GPT.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue (cut to its last `context` bytes).
    #[arg(long, default_value = "")]
    pub prompt: String,
    #[arg(long, default_value_t = 400)]
    pub tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample among the k most likely bytes (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text whose held-out last 10% is scored (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    let corpus = Corpus::from_arg(a.data.as_deref())?;
    let resume = a.resume.as_deref().map(Checkpoint::load).transpose()?;
    let cfg = match &resume {
        Some(ck) => {
            ck.expect_kind_for(tigel::models::gpt::KIND, "`tigel train gpt --resume`")?;
            let cfg = GptConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?;
            for (flag, given, have) in [
                ("layers", a.layers, cfg.layers),
                ("heads", a.heads, cfg.heads),
                ("width", a.width, cfg.width),
                ("context", a.context, cfg.context),
            ] {
                if given.is_some_and(|g| g != have) {
                    return Err(Error::invalid(
                        "train gpt",
                        format!("--{flag} {} differs from the resumed model's {have}", given.unwrap()),
                    ));
                }
            }
            GptConfig { dropout: a.dropout.unwrap_or(cfg.dropout), ..cfg }
        }
        None => GptConfig {
            layers: a.layers.unwrap_or(DEFAULT_LAYERS),
            heads: a.heads.unwrap_or(DEFAULT_HEADS),
            width: a.width.unwrap_or(DEFAULT_WIDTH),
            context: a.context.unwrap_or(DEFAULT_CONTEXT),
            dropout: a.dropout.unwrap_or(0.0),
        },
    };
    cfg.validate()?;
    corpus.check_context(cfg.context)?;
    let settings = TrainSettings {
        batch: a.batch,
        lr: a.lr,
        min_lr_frac: 0.1,
        warmup: a.warmup,
        steps: a.steps,
        weight_decay: a.weight_decay,
        clip: a.clip,
        seed: a.seed,
    };
    settings.validate()?;
    if a.eval_every == 0 || a.eval_windows == 0 {
        return Err(Error::invalid("train gpt", "--eval-every and --eval-windows must be positive"));
    }
    let dir = super::run_dir("train gpt", "gpt", a.out.as_deref(), a.resume.as_deref())?;

    let dev = super::device(backend)?;
    let start_step = resume.as_ref().map_or(0, |ck| ck.step as u32);
    let model = Gpt::new(&dev, cfg, a.seed)?;
    let t = GptTrainer::new(&dev, model, &corpus, settings, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let eval = Evaluator::new(&dev, &t.model, 32)?;
    let (_, held) = corpus.split();
    std::fs::create_dir_all(&dir).map_err(|e| super::io_err(&dir, e))?;
    let config = json!({"model": cfg.to_json(), "train": settings.to_json(), "data": corpus.name,
                        "data_bytes": corpus.len(), "resumed_from": a.resume, "start_step": start_step});
    super::write_atomic(&dir.join("config.json"), &(serde_json::to_string_pretty(&config).unwrap() + "\n"))?;
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| super::io_err(&metrics_path, e))?;

    let plan = t.trainer().plan();
    eprintln!(
        "gpt: {} layers, {} heads, width {}, context {}: {:.2} M parameters; {} ({} bytes, last 10% held out)",
        cfg.layers,
        cfg.heads,
        cfg.width,
        cfg.context,
        cfg.param_count() as f64 / 1e6,
        corpus.name,
        corpus.len()
    );
    eprintln!(
        "step plan: {} dispatches, planned peak {:.1} MiB of intermediates (allocated {:.1} MiB), {:.1} MiB of weights and data",
        plan.dispatches(),
        plan.planned_peak_bytes() as f64 / 1048576.0,
        plan.allocated_bytes() as f64 / 1048576.0,
        plan.persistent_bytes as f64 / 1048576.0
    );
    eprintln!("writing {}", dir.display());

    // TIGEL_PROFILE=1 on the CPU backend: time per kernel, printed at the end.
    let profile = dev.is_cpu() && std::env::var("TIGEL_PROFILE").is_ok_and(|v| v == "1");
    dev.set_profiling(profile);
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(a.steps as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} < {eta_precise}  {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    // Time spent validating and saving, left out of the training throughput.
    let mut side = 0.0f64;
    let train_secs = |side: f64| (started.elapsed().as_secs_f64() - side).max(1e-9);
    let mut pending = None;
    let mut train_loss = f64::NAN;
    let mut last_val = f64::NAN;
    let log_every = 10u32;
    for i in 1..=a.steps {
        t.step(&dev)?;
        if i % log_every == 0 || i == a.steps {
            // The loss requested at the previous log point has long arrived; ask for this one.
            if let Some(d) = pending.take() {
                train_loss = super::loss_of(d)?;
            }
            pending = Some(t.read_loss(&dev)?);
            let tps = (i as usize * t.tokens_per_step) as f64 / train_secs(side);
            bar.set_position(i as u64);
            bar.set_message(format!("loss {:.3} bits/char  {:.1}k tok/s", train_loss * BITS, tps / 1e3));
        }
        if i % a.eval_every == 0 || i == a.steps {
            if let Some(d) = pending.take() {
                train_loss = super::loss_of(d)?;
            }
            let side_start = Instant::now();
            let windows = if i == a.steps { None } else { Some(a.eval_windows) };
            last_val = eval.bits_per_char(&dev, &corpus, held, windows)?;
            let step = start_step + i;
            let line = json!({"step": step, "train_bits_per_char": train_loss * BITS, "val_bits_per_char": last_val,
                              "val_full": i == a.steps, "elapsed_s": started.elapsed().as_secs_f64(),
                              "train_s": train_secs(side),
                              "tokens_per_s": (i as usize * t.tokens_per_step) as f64 / train_secs(side)});
            writeln!(metrics, "{line}").map_err(|e| super::io_err(&metrics_path, e))?;
            bar.println(format!(
                "step {step}: train {:.3}, held-out {:.3} bits/char{}",
                train_loss * BITS,
                last_val,
                if i == a.steps { " (all held-out text)" } else { "" }
            ));
            t.save(&dev, &checkpoint_path(&dir), &corpus.name)?;
            side += side_start.elapsed().as_secs_f64();
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let tps = (a.steps as usize * t.tokens_per_step) as f64 / train_secs(side);
    eprintln!(
        "done: {} steps in {elapsed:.0} s ({:.0} s training), {:.1}k tokens/s; held-out {last_val:.3} bits/char; checkpoint {}",
        a.steps,
        train_secs(side),
        tps / 1e3,
        checkpoint_path(&dir).display()
    );
    if a.sample_tokens > 0 && !a.json {
        // The first line of the held-out text as the prompt: text the model has not trained on.
        let h = &corpus.bytes[held.0..held.0 + held.1];
        let prompt: Vec<u8> = h.iter().copied().take_while(|&b| b != b'\n').take(cfg.context / 2).collect();
        let s = SampleSettings { tokens: a.sample_tokens, temperature: 0.8, top_k: 40, seed: a.seed };
        println!("sample (prompt from the held-out text, temperature 0.8, top-k 40):");
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&prompt);
        Sampler::new(&dev, &t.model)?.generate(&dev, &prompt, s, |b| {
            let _ = out.write_all(&[b]);
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
    }
    if profile {
        let prof = dev.profile();
        let total: f64 = prof.iter().map(|p| p.2).sum();
        eprintln!("kernel time (CPU backend), {total:.1} s in all:");
        for (name, calls, secs) in prof.iter().take(20) {
            eprintln!("  {name:<44} {calls:>8} calls {secs:>8.2} s {:>5.1}%", 100.0 * secs / total);
        }
    }
    if a.json {
        let v = json!({"steps": start_step + a.steps, "train_loss": train_loss, "train_bits_per_char": train_loss * BITS,
                       "val_bits_per_char": last_val, "tokens_per_s": tps, "elapsed_s": elapsed,
                       "train_s": train_secs(side),
                       "planned_peak_bytes": plan.planned_peak_bytes(), "allocated_peak_bytes": plan.allocated_bytes(),
                       "backend": dev.backend_name(), "device": dev.name(), "out": dir});
        println!("{v}");
    }
    Ok(())
}

const BITS: f64 = tigel::models::gpt::BITS_PER_NAT;

pub fn sample(backend: Option<&str>, a: SampleArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(tigel::models::gpt::KIND, "`tigel sample gpt`")?;
    let dev = super::device(backend)?;
    let model = Gpt::load(&dev, &ck, "`tigel sample gpt`")?;
    let sampler = Sampler::new(&dev, &model)?;
    let s = SampleSettings { tokens: a.tokens, temperature: a.temperature, top_k: a.top_k, seed: a.seed };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(a.prompt.as_bytes());
    let _ = out.flush();
    sampler.generate(&dev, a.prompt.as_bytes(), s, |b| {
        let _ = out.write_all(&[b]);
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(())
}

pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(tigel::models::gpt::KIND, "`tigel eval gpt`")?;
    let corpus = match &a.data {
        Some(p) => Corpus::load(p)?,
        None => match ck.config.get("data").and_then(|d| d.as_str()) {
            Some("<embedded>") | None => Corpus::embedded(),
            Some(p) => Corpus::load(Path::new(p))?,
        },
    };
    let dev = super::device(backend)?;
    let model = Gpt::load(&dev, &ck, "`tigel eval gpt`")?;
    corpus.check_context(model.cfg.context)?;
    let (_, held) = corpus.split();
    let started = Instant::now();
    let bpc = Evaluator::new(&dev, &model, 32)?.bits_per_char(&dev, &corpus, held, None)?;
    if a.json {
        println!(
            "{}",
            json!({"val_bits_per_char": bpc, "held_out_bytes": held.1, "data": corpus.name, "step": ck.step,
                   "backend": dev.backend_name(), "seconds": started.elapsed().as_secs_f64()})
        );
    } else {
        println!("{}: {bpc:.4} bits/char on the held-out last 10% ({} bytes)", corpus.name, held.1);
    }
    Ok(())
}
