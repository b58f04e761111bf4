//! The arguments of `tigel train|sample|eval gan` and the defaults per kind of data.

use std::path::PathBuf;

use tigel::data::images::PixelRange;
use tigel::run::ResumeSchedule;

/// Defaults per kind of data (see docs/benchmarks.md for the measurements behind them).
pub(super) struct Defaults {
    pub(super) steps: u32,
    pub(super) batch: usize,
    pub(super) lr: f32,
    pub(super) lr_end: f32,
    pub(super) lr_hold: f32,
    pub(super) z_dim: usize,
    pub(super) width: usize,
    pub(super) depth: usize,
    pub(super) pack: usize,
    pub(super) ema: f32,
    pub(super) r1: f32,
    pub(super) d_steps: u32,
    pub(super) eval_every: u32,
}

/// Steps between metrics.jsonl training lines and plain progress lines.
pub const DEFAULT_LOG_EVERY: u32 = 100;

/// 2-D mixtures (ring8 and others).
pub(super) const MIXTURE: Defaults = Defaults {
    steps: 15000,
    batch: 512,
    lr: 2e-3,
    lr_end: 1.0,
    lr_hold: 0.0,
    z_dim: 8,
    width: 128,
    depth: 3,
    pack: 4,
    ema: 0.9995,
    r1: 0.0,
    d_steps: 1,
    eval_every: 2500,
};
/// grid25's 25 tight modes (docs/benchmarks.md): a larger pack and batch for coverage, more steps, and a
/// decay of the rates over the last tenth for precision.
pub(super) const GRID25: Defaults =
    Defaults { steps: 45000, batch: 1024, pack: 8, lr_end: 0.1, lr_hold: 0.9, eval_every: 5000, ..MIXTURE };
// ---- Image defaults that follow from the data (issue 17): the rule, its text for --help, its figures.

/// The image defaults' rule as `tigel train gan --help` states it (`image_defaults` computes it).
pub(super) const IMAGE_RULE: &str = "\
Image defaults follow from the side S of the images and the number N trained on. The DCGAN halves S while
it stays even and at least 4 to find its first map, and doubles that back in k stages (S = 8: 4x4, k = 1;
S = 16: 4x4, k = 2; S = 28: 7x7, k = 2; S = 32: k = 3; S = 64: k = 4):
  --width      64 / 2^(k-1), at least 16 (G's first map has 64 channels; 128 at S >= 64)
  --batch      64, at most N / 4
  --steps      2,560,000 / (k * S^2) rounded to 100, between 2,000 and 8,000 (S = 8: 8,000; 16: 5,000;
               28 and up: 2,000), at most 100 epochs of N images but at least 500
  --lr         2e-4 (Adam, beta1 0.5); 5e-4 with --d-steps 2 when k = 1 (G and D one convolution deep)
  --z-dim 64, --eval-every a fifth of --steps
These train Fashion-MNIST at 8x8, 16x16 and 28x28 in minutes on 2 CPU cores (docs/benchmarks.md).";

/// Image datasets (a DCGAN): the fields that do not follow from the data.
const IMAGES: Defaults = Defaults {
    steps: 2000,
    batch: 64,
    lr: 2e-4,
    lr_end: 1.0,
    lr_hold: 0.0,
    z_dim: 64,
    width: 32,
    depth: 1,
    pack: 1,
    ema: 0.0,
    r1: 0.0,
    d_steps: 1,
    // Unused: images evaluate every fifth of the run's steps.
    eval_every: 400,
};

/// The defaults for `n` training images of side `side` taking `stages` 2× stages, by `IMAGE_RULE`.
pub(super) fn image_defaults(side: usize, stages: usize, n: usize) -> Defaults {
    let width = (64usize >> (stages.max(1) - 1).min(6)).max(16);
    let batch = 64.min(n / 4 / 2 * 2).max(2);
    let by_size = (2_560_000.0 / (stages.max(1) * side * side) as f64 / 100.0).round() as u32 * 100;
    let epochs = (100 * n / batch).max(500).min(u32::MAX as usize) as u32;
    let steps = by_size.clamp(2000, 8000).min(epochs);
    // One stage: D is a convolution and a linear layer, which a faster pace and two updates per G
    // update keep up with G (8×8 Fashion-MNIST, docs/benchmarks.md).
    let (lr, d_steps) = if stages <= 1 { (5e-4, 2) } else { (IMAGES.lr, IMAGES.d_steps) };
    Defaults { width, batch, steps, lr, d_steps, ..IMAGES }
}

/// `tigel train gan`
#[derive(clap::Args, Debug)]
#[command(after_help = IMAGE_RULE)]
pub struct TrainArgs {
    /// ring8, grid25, or an image file/folder (IDX, .npy, PNG folder; the last 10% held out) [with
    /// --resume, default: the checkpoint's data]. Defaults below depend on it: mixture / grid25 / images.
    #[arg(long)]
    pub data: Option<String>,
    /// Steps (D and G updates) in this run [default: 15000 / 45000 / images: see below].
    #[arg(long)]
    pub steps: Option<u32>,
    /// Real (and generated) samples per step [default: 512 / 1024 / images: see below; with --resume: the
    /// checkpoint's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate of both Adam optimizers, β1 = 0.5 [default: 2e-3 / 2e-3 / images: see below; with
    /// --resume: the checkpoint's].
    #[arg(long)]
    pub lr: Option<f32>,
    /// The learning rates decay linearly to this fraction of --lr at the last step, 1: constant [default:
    /// 1 / 0.1 / 1; with --resume: the checkpoint's]. A resumed run: see --resume-schedule.
    #[arg(long)]
    pub lr_end: Option<f32>,
    /// The fraction of the run before that decay begins, 0 to 1 [default: 0 / 0.9 / 0].
    #[arg(long)]
    pub lr_hold: Option<f32>,
    /// Noise dimension [default: 8 / 8 / 64].
    #[arg(long)]
    pub z_dim: Option<usize>,
    /// MLP hidden width / DCGAN base channels (D's first, G's last) [default: 128 / 128 / images: see below].
    #[arg(long)]
    pub width: Option<usize>,
    /// MLP hidden layers (2-D only) [default: 3].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Samples the discriminator judges together (2-D only) [default: 4 / 8].
    #[arg(long)]
    pub pack: Option<usize>,
    /// Decay per step of the moving average of G's weights used for sampling, 0: off [default: 0.9995 /
    /// 0.9995 / 0].
    #[arg(long)]
    pub ema: Option<f32>,
    /// R1 gradient penalty weight on real data (2-D only; 0: off) [default: 0].
    #[arg(long)]
    pub r1: Option<f32>,
    /// Discriminator updates per generator update [default: 1 / 1 / images: see below].
    #[arg(long)]
    pub d_steps: Option<u32>,
    /// Seed of the weights, the data drawn and the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps between evaluations: scores, samples.png, loss.png and a checkpoint (and at the last step)
    /// [default: 2500 / 5000 / images: see below].
    #[arg(long, alias = "save-every")]
    pub eval_every: Option<u32>,
    /// Steps between metrics.jsonl training lines and plain progress lines (logs that are not a terminal).
    #[arg(long, default_value_t = DEFAULT_LOG_EVERY)]
    pub log_every: u32,
    /// Run directory [default: the first free runs/gan, runs/gan-2, ...; with --resume: the resumed
    /// run's, unless --resume-schedule restart].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory or file; --resume-schedule says what
    /// happens to the step counter and the learning rates.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    // Retention, resume semantics and the pixel range (run::retain, run::resume, data::images).
    /// With --resume: `continue` goes on from the checkpoint's step with its Adam moments, the schedule
    /// that of a run of its step + --steps (a stopped run resumed with the steps it had left follows its
    /// schedule exactly); `restart` starts a new run from its weights: step 0, fresh moments, a new
    /// schedule over --steps, in a new run directory (for new data).
    #[arg(long, value_name = "continue|restart", default_value_t = ResumeSchedule::Continue)]
    pub resume_schedule: ResumeSchedule,
    /// Also keep the last N checkpoints of the evaluations, checkpoint-NNNNNN.safetensors (0: none).
    /// checkpoint.safetensors (the latest) and best.safetensors (lowest reverse KL on a mixture, MMD² on images) are always kept.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep: usize,
    /// The range of float .npy pixels: 0,1, -1,1, 0,255, or auto (read from the values: -1,1 when one
    /// is negative, else 0,1 when all are at most 1, else 0,255). Values outside the range given are an
    /// error naming the file; 8-bit data (IDX, PNG, u1 .npy) is 0..255.
    #[arg(long, value_name = "RANGE", default_value_t = PixelRange::Auto, allow_hyphen_values = true)]
    pub range: PixelRange,
    /// Print the results as one JSON object on stdout (its last line) instead of text; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// `tigel sample gan`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained GAN.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Samples to generate (a grid of ⌈√n⌉ columns, scaled to at least 256 pixels wide).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// FILE.png (an image grid, or a scatter plot of 2-D points with the true modes) or FILE.npy (raw
    /// samples, data units).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `tigel eval gan`
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained GAN.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Data to score against (default: the checkpoint's); images use their held-out last 10%.
    #[arg(long)]
    pub data: Option<String>,
    // The pixel range (data::images).
    /// The range of float .npy pixels: 0,1, -1,1, 0,255, or auto (read from the values: -1,1 when one
    /// is negative, else 0,1 when all are at most 1, else 0,255). Values outside the range given are an
    /// error naming the file (give the one training used); 8-bit data (IDX, PNG, u1 .npy) is 0..255.
    #[arg(long, value_name = "RANGE", default_value_t = PixelRange::Auto, allow_hyphen_values = true)]
    pub range: PixelRange,
    /// Samples to generate and score.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the results as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}
