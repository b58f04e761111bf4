//! The arguments of `tigel train|sample|eval gpt` and the model and training defaults.

use std::path::PathBuf;

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
/// Optimizer steps of a run.
pub const DEFAULT_STEPS: u32 = 4000;
/// Peak learning rate.
pub const DEFAULT_LR: f32 = 2e-3;

/// `tigel train gpt`
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// UTF-8 text file to learn (default: tigel's own sources and docs, built into the binary).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Optimizer steps in this run.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u32,
    /// Transformer blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads per block.
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
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Seed of the weights and of the batches drawn.
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

/// `tigel sample gpt`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (or checkpoint file) of a trained GPT.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue (cut to its last `context` bytes).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Bytes to generate.
    #[arg(long, default_value_t = 400)]
    pub tokens: usize,
    /// Sampling temperature (lower: more likely bytes).
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
    /// Run directory (or checkpoint file) of a trained GPT.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text whose held-out last 10% is scored (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}
