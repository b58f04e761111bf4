//! `tigel train|sample|eval gpt`: the byte-level language model from the command line.

mod args;

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tigel::checkpoint::Checkpoint;
use tigel::data::text::Corpus;
use tigel::models::gpt::{
    Evaluator, Gpt, GptConfig, GptTrainer, OptimSettings, SampleSettings, Sampler, TrainSettings, KIND,
};
use tigel::run::{self, gpt::GptRun, report, Cadence, RunDir};
use tigel::{Error, Result};

pub use args::*;

/// `tigel train gpt`: builds the model and its trainer from the arguments (or the resumed checkpoint)
/// and runs the library's training loop.
pub fn train(backend: Option<&str>, a: TrainArgs) -> Result<()> {
    super::signal::install();
    let data = a.data.as_deref().map(|d| std::path::PathBuf::from(super::absolute_data(&d.to_string_lossy())));
    let corpus = Corpus::from_arg(data.as_deref())?;
    let resume = run::resume_checkpoint(a.resume.as_deref(), KIND, "`tigel train gpt --resume`")?
        .map(|c| a.resume_schedule.prepare(c));
    let cfg = match &resume {
        Some(ck) => {
            let cfg = GptConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null))?;
            super::check_resumed(
                "train gpt",
                &[
                    ("layers", super::given(a.layers), cfg.layers.to_string()),
                    ("heads", super::given(a.heads), cfg.heads.to_string()),
                    ("width", super::given(a.width), cfg.width.to_string()),
                    ("context", super::given(a.context), cfg.context.to_string()),
                    ("rope", super::given(a.rope), cfg.rope.to_string()),
                    ("qk-norm", super::given(a.qk_norm), cfg.qk_norm.to_string()),
                    ("gated-mlp", super::given(a.gated_mlp), cfg.gated_mlp.to_string()),
                    ("mlp-hidden", super::given(a.mlp_hidden), cfg.hidden().to_string()),
                    ("untied", super::given(a.untied), cfg.untied.to_string()),
                ],
            )?;
            GptConfig { dropout: a.dropout.unwrap_or(cfg.dropout), ..cfg }
        }
        None => GptConfig {
            layers: a.layers.unwrap_or(DEFAULT_LAYERS),
            heads: a.heads.unwrap_or(DEFAULT_HEADS),
            width: a.width.unwrap_or(DEFAULT_WIDTH),
            context: a.context.unwrap_or(DEFAULT_CONTEXT),
            dropout: a.dropout.unwrap_or(0.0),
            rope: a.rope.unwrap_or(DEFAULT_ROPE),
            qk_norm: a.qk_norm.unwrap_or(DEFAULT_QK_NORM),
            gated_mlp: a.gated_mlp.unwrap_or(DEFAULT_GATED_MLP),
            mlp_hidden: a.mlp_hidden.unwrap_or(0),
            untied: a.untied.unwrap_or(DEFAULT_UNTIED),
        },
    };
    cfg.validate()?;
    corpus.check_context(cfg.context)?;
    if a.sample_tokens as u64 > tigel::models::gpt::MAX_TOKENS {
        let max = tigel::models::gpt::MAX_TOKENS;
        return Err(Error::invalid(
            "train gpt",
            format!("--sample-tokens {} is over the {max} supported", a.sample_tokens),
        ));
    }
    let settings = TrainSettings {
        batch: a.batch,
        lr: a.lr,
        min_lr_frac: a.min_lr_frac,
        warmup: a.warmup,
        steps: a.steps,
        weight_decay: a.weight_decay,
        clip: a.clip,
        seed: a.seed,
        precision: a.precision,
    };
    settings.validate()?;
    // A continued run keeps its optimizer (its state is that optimizer's); older runs trained with AdamW.
    let resumed_optim = match &resume {
        Some(ck) if a.resume_schedule.continues() => Some(OptimSettings::from_config(&ck.config)?.optimizer),
        _ => None,
    };
    let optim = OptimSettings {
        optimizer: a.optimizer.or(resumed_optim).unwrap_or(DEFAULT_OPTIMIZER),
        decay: a.decay,
        cooldown: a.cooldown,
        muon_lr: a.muon_lr,
        muon_momentum: a.muon_momentum,
        loss_scale: a.loss_scale,
    };
    optim.validate()?;
    // The logits of one step: batch · context rows of 256.
    let what = || format!("--batch {} and --context {} give the logits of one step", a.batch, cfg.context);
    tigel::models::check_values("train gpt", what, tigel::models::product(&[a.batch, cfg.context, 256]))?;
    let start_step = super::start_step("train gpt", resume.as_ref(), a.steps)?;
    if a.eval_every == 0 || a.eval_windows == 0 {
        return Err(Error::invalid("train gpt", "--eval-every and --eval-windows must be positive"));
    }
    let into = a.resume.as_deref().filter(|_| a.resume_schedule.continues());
    let dir = RunDir::choose("train gpt", "gpt", a.out.as_deref(), into)?.with_keep(a.keep);

    let dev = super::device(backend)?;
    let t = GptTrainer::with_optim(&dev, Gpt::new(&dev, cfg, a.seed)?, &corpus, settings, optim, start_step)?;
    if let Some(ck) = &resume {
        t.restore(&dev, ck)?;
    }
    let mut gpt = GptRun::new(&dev, t, &corpus, a.eval_windows, dir.path())?;
    let cadence = Cadence { steps: a.steps, eval_every: a.eval_every, log_every: a.log_every, start_step };
    if super::dist::follow(&dev, &mut gpt, &dir, cadence, a.resume.as_deref())? {
        return Ok(());
    }
    for line in gpt.describe() {
        eprintln!("{line}");
    }
    eprintln!("writing {}", dir.path().display());

    // TIGEL_PROFILE=1 on the CPU backend: time per kernel, printed at the end.
    let profile = dev.is_cpu() && std::env::var("TIGEL_PROFILE").is_ok_and(|v| v == "1");
    dev.set_profiling(profile);
    let mut bar = super::progress::Bar::new(a.steps, a.json);
    let outcome = run::train(&dev, &mut gpt, &dir, cadence, a.resume.as_deref(), &mut super::dist::agreed(&mut bar))?;
    eprintln!("{}", outcome.done);
    super::dist::done();
    super::signal::exit_if_interrupted(&outcome, &dir.checkpoint());
    if a.sample_tokens > 0 && !a.json {
        println!("{}", GptRun::sample_header());
        let mut out = std::io::stdout().lock();
        gpt.sample(&dev, a.sample_tokens, a.seed, |b| {
            let _ = out.write_all(b);
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
    }
    if profile {
        for line in report::profile_lines(&dev) {
            eprintln!("{line}");
        }
    }
    if a.json {
        println!("{}", outcome.summary);
    }
    Ok(())
}

/// `tigel sample gpt`: continues a prompt, printing bytes as they come.
pub fn sample(backend: Option<&str>, a: SampleArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel sample gpt`")?;
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

/// `tigel eval gpt`: bits per character on the held-out last 10% of a text.
pub fn eval(backend: Option<&str>, a: EvalArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    ck.expect_kind_for(KIND, "`tigel eval gpt`")?;
    let corpus = match &a.data {
        Some(p) => Corpus::load(p)?,
        None => match ck.config.get("data").and_then(|d| d.as_str()) {
            Some("<embedded>") | None => Corpus::embedded(),
            Some(p) => {
                super::stored_data_exists("eval gpt", p, &ck)?;
                Corpus::load(Path::new(p))?
            }
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
