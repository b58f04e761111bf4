//! The arguments of `tigel train|sample|eval gpt` and the model and training defaults.

use std::path::PathBuf;

use tigel::models::gpt::{Decay, OptimizerChoice};
use tigel::run::ResumeSchedule;

/// Model and training defaults: the best model found to train in about ten minutes on a 2-core CPU
/// (see docs/benchmarks.md for the measurements behind them).
pub const DEFAULT_LAYERS: usize = 4;
/// Attention heads per layer.
pub const DEFAULT_HEADS: usize = 4;
/// Embedding width.
pub const DEFAULT_WIDTH: usize = 128;
/// Context length in bytes.
pub const DEFAULT_CONTEXT: usize = 128;
/// Sequences per step.
pub const DEFAULT_BATCH: usize = 16;
/// Optimizer steps of a run: a Muon step costs about 1.22× an AdamW step on a 2-core CPU (1.22 to 1.33
/// measured under load), so 2,630 Muon steps take no more training time than the 3,500 AdamW steps
/// that matched the old model's 4,000 (docs/benchmarks.md, KJV section).
pub const DEFAULT_STEPS: u32 = 2630;
/// Steps between metrics.jsonl training lines and plain progress lines (about 7 s on a 2-core CPU).
pub const DEFAULT_LOG_EVERY: u32 = 50;
/// Peak learning rate (5e-3 and 8e-3 gave 1.819 and 1.821 bits/char on KJV at 3,270 steps).
pub const DEFAULT_LR: f32 = 5e-3;
/// Linear warmup steps.
pub const DEFAULT_WARMUP: u32 = 100;
/// The learning rate's floor at the last step, as a fraction of the peak (0: a linear decay to zero
/// gave 1.769 bits/char against 1.782 for a cosine to a tenth, Muon at 2,630 steps).
pub const DEFAULT_MIN_LR_FRAC: f32 = 0.0;
/// AdamW's decoupled weight decay.
pub const DEFAULT_WEIGHT_DECAY: f32 = 0.1;
/// The update rule (Muon: 1.877 bits/char on KJV at 1,000 steps against AdamW's 2.000).
pub const DEFAULT_OPTIMIZER: OptimizerChoice = OptimizerChoice::Muon;
/// The learning rate's decay after warmup.
pub const DEFAULT_DECAY: Decay = Decay::Linear;
/// Fraction of the steps the decay takes (1: all after warmup).
pub const DEFAULT_COOLDOWN: f32 = 1.0;
/// Muon's peak learning rate (the blocks' matrices; 0.02 and 0.04 gave 1.877 and 1.874 at 1,000 steps).
pub const DEFAULT_MUON_LR: f32 = 0.02;
/// Muon's Nesterov momentum.
pub const DEFAULT_MUON_MOMENTUM: f32 = 0.95;
/// Rotary positions instead of a learned position table.
pub const DEFAULT_ROPE: bool = true;
/// QK normalisation.
pub const DEFAULT_QK_NORM: bool = true;
/// Gated (SwiGLU) MLP.
pub const DEFAULT_GATED_MLP: bool = true;
/// Separate output projection.
pub const DEFAULT_UNTIED: bool = false;

/// `tigel train gpt`
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// UTF-8 text file to learn; its last 10% is held out (default: tigel's own sources and docs, built
    /// into the binary; with --resume: the checkpoint's data).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Optimizer steps in this run.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u32,
    /// Transformer blocks [default: 4; with --resume: the checkpoint's].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads per block [default: 4; with --resume: the checkpoint's].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Embedding width, a multiple of --heads [default: 128; with --resume: the checkpoint's].
    #[arg(long)]
    pub width: Option<usize>,
    /// Context length in bytes (tokens) [default: 128; with --resume: the checkpoint's].
    #[arg(long)]
    pub context: Option<usize>,
    /// Dropout probability after attention and MLP, 0 to 1 [default: 0; with --resume: the checkpoint's].
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Rotary position embeddings on q and k instead of a learned position table, true or false
    /// [default: true; with --resume: the checkpoint's].
    #[arg(long, value_name = "BOOL")]
    pub rope: Option<bool>,
    /// Layer-normalise q and k per head before attention, true or false [default: true; with --resume:
    /// the checkpoint's].
    #[arg(long, value_name = "BOOL")]
    pub qk_norm: Option<bool>,
    /// Gated MLP, SiLU(x·W) ⊙ x·V (SwiGLU), instead of GELU, true or false [default: true; with
    /// --resume: the checkpoint's].
    #[arg(long, value_name = "BOOL")]
    pub gated_mlp: Option<bool>,
    /// MLP hidden width [default: 4·width, or 8·width/3 for the gated MLP; with --resume: the checkpoint's].
    #[arg(long)]
    pub mlp_hidden: Option<usize>,
    /// A separate output projection instead of the token embedding's transpose, true or false [default:
    /// false; with --resume: the checkpoint's].
    #[arg(long, value_name = "BOOL")]
    pub untied: Option<bool>,
    /// Sequences of --context bytes per step.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Peak learning rate of the AdamW tensors (all of them with --optimizer adamw; the embeddings,
    /// head and norms with muon), linear warmup then --decay to --min-lr-frac of it at the last step; a
    /// resumed run: see --resume-schedule.
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f32,
    /// The update rule: `adamw` (every tensor), or `muon` (orthogonalised Nesterov momentum on the
    /// blocks' matrices at --muon-lr, AdamW at --lr on the embeddings, the head and the norms)
    /// [default: muon; with --resume-schedule continue: the checkpoint's, AdamW for older runs].
    #[arg(long, value_name = "adamw|muon", value_parser = parse_optimizer)]
    pub optimizer: Option<OptimizerChoice>,
    /// Muon's peak learning rate (same warmup and decay as --lr).
    #[arg(long, default_value_t = DEFAULT_MUON_LR)]
    pub muon_lr: f32,
    /// Muon's Nesterov momentum, in (0, 1).
    #[arg(long, default_value_t = DEFAULT_MUON_MOMENTUM)]
    pub muon_momentum: f32,
    /// The learning rate's decay after warmup: `cosine` or `linear`.
    #[arg(long, value_name = "cosine|linear", value_parser = parse_decay, default_value_t = DEFAULT_DECAY)]
    pub decay: Decay,
    /// The fraction of the steps over which the rate decays, in (0, 1]; below 1 the rate holds at its
    /// peak until then (warmup-stable-decay, with --decay linear).
    #[arg(long, default_value_t = DEFAULT_COOLDOWN)]
    pub cooldown: f32,
    /// Warmup steps (linear from 0 to --lr).
    #[arg(long, default_value_t = DEFAULT_WARMUP)]
    pub warmup: u32,
    /// The learning rate at the last step, as a fraction of --lr (0 to 1).
    #[arg(long, default_value_t = DEFAULT_MIN_LR_FRAC)]
    pub min_lr_frac: f32,
    /// AdamW weight decay (decoupled, per step times the learning rate).
    #[arg(long, default_value_t = DEFAULT_WEIGHT_DECAY)]
    pub weight_decay: f32,
    /// Clip the global gradient norm (L2, over all parameters) to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Seed of the weights, the batches drawn and the final sample.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Precision of the matrix products: f32, or mixed (f16 operands, f32 accumulation, gradients,
    /// master weights and optimizer state; docs/precision.md).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub precision: tigel::graph::Precision,
    /// Loss scaling under --precision mixed (its gradients' matrix operands are f16): `dynamic` (start at
    /// 2^16, halve and skip the step on overflow, double after 2000 finite steps), `dynamic:INIT:INTERVAL`,
    /// or a fixed scale N (1: none). Unused at f32.
    #[arg(long, value_name = "dynamic|N", default_value = "dynamic", value_parser = parse_loss_scale)]
    pub loss_scale: tigel::optim::LossScale,
    /// Steps between evaluations: held-out bits/char, a checkpoint, loss.png (and at the last step).
    #[arg(long, alias = "save-every", default_value_t = 500)]
    pub eval_every: u32,
    /// Steps between metrics.jsonl training lines and plain progress lines (logs that are not a terminal).
    #[arg(long, default_value_t = DEFAULT_LOG_EVERY)]
    pub log_every: u32,
    /// Windows of --context bytes of held-out text in each periodic evaluation (the last one uses all of it).
    #[arg(long, default_value_t = 256)]
    pub eval_windows: usize,
    /// Run directory for checkpoint.safetensors, config.json, metrics.jsonl and loss.png [default: the
    /// first free runs/gpt, runs/gpt-2, ...; with --resume: the resumed run's directory, unless
    /// --resume-schedule restart].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory or file (on --data, which may be new
    /// text); --resume-schedule says what happens to the step counter and the learning rate.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    // Retention and resume semantics (run::retain, run::resume).
    /// With --resume: `continue` goes on from the checkpoint's step with its AdamW moments, the schedule
    /// that of a run of its step + --steps (a stopped run resumed with the steps it had left follows its
    /// schedule exactly; the same --warmup); `restart` starts a new run from its weights: step 0, fresh
    /// moments, a new warmup and decay over --steps, in a new run directory (for new data).
    #[arg(long, value_name = "continue|restart", default_value_t = ResumeSchedule::Continue)]
    pub resume_schedule: ResumeSchedule,
    /// Also keep the last N checkpoints of the evaluations, checkpoint-NNNNNN.safetensors (0: none).
    /// checkpoint.safetensors (the latest) and best.safetensors (lowest held-out bits/char) are always kept.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep: usize,
    /// Print the results as one JSON object on stdout (its last line) instead of text; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Bytes to generate from the trained model at the end, temperature 0.8, top-k 40 (0: none; not with --json).
    #[arg(long, default_value_t = 300)]
    pub sample_tokens: usize,
}

/// `tigel sample gpt`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained GPT.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Text to continue (cut to its last `context` bytes).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Bytes (tokens) to generate after the prompt.
    #[arg(long, default_value_t = 400)]
    pub tokens: usize,
    /// Sampling temperature, > 0 (lower: more likely bytes).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample among the k most likely bytes (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `tigel eval gpt`
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained GPT.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Text whose held-out last 10% is scored (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the results as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_optimizer(s: &str) -> Result<OptimizerChoice, String> {
    match s {
        "adamw" => Ok(OptimizerChoice::Adamw),
        "muon" => Ok(OptimizerChoice::Muon),
        _ => Err("expected `adamw` or `muon`".into()),
    }
}

fn parse_decay(s: &str) -> Result<Decay, String> {
    match s {
        "cosine" => Ok(Decay::Cosine),
        "linear" => Ok(Decay::Linear),
        _ => Err("expected `cosine` or `linear`".into()),
    }
}

fn parse_precision(s: &str) -> std::result::Result<tigel::graph::Precision, String> {
    s.parse().map_err(|e: tigel::Error| e.to_string())
}

fn parse_loss_scale(s: &str) -> std::result::Result<tigel::optim::LossScale, String> {
    s.parse().map_err(|e: tigel::Error| e.to_string())
}
