//! The arguments of `tigel train|sample|eval diffusion` and the defaults per kind of data.

use std::path::PathBuf;

use tigel::data::images::PixelRange;
use tigel::run::ResumeSchedule;

/// Defaults per kind of data (docs/benchmarks.md has the measurements behind them).
pub(super) struct Defaults {
    pub(super) steps: u32,
    pub(super) batch: usize,
    pub(super) lr: f32,
    pub(super) schedule: &'static str,
    pub(super) timesteps: usize,
    pub(super) prediction: &'static str,
}

/// 2-D mixtures (ring8 and others).
pub(super) const MIXTURE: Defaults =
    Defaults { steps: 15000, batch: 256, lr: 2e-3, schedule: "cosine", timesteps: 1000, prediction: "eps" };
/// grid25's 25 tight modes need more steps: at 15,000 its log-density gap is 0.50 nats, at 25,000 0.20.
pub(super) const GRID25: Defaults = Defaults { steps: 25000, ..MIXTURE };
/// Images: the fields that do not follow from the data. They are those of the measured 28×28
/// Fashion-MNIST run (docs/benchmarks.md). Images predict v: an ε-predicting UNet's
/// x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ multiplies its error by up to 1/√ᾱ_T (10⁴ for the cosine schedule), which left
/// deterministic DDIM samples blotchy; v keeps x̂_0 bounded.
pub(super) const IMAGES: Defaults =
    Defaults { steps: 3500, batch: 32, lr: 1.5e-3, schedule: "cosine", timesteps: 500, prediction: "v" };

/// How the image defaults follow from the data (`tigel train diffusion --help`).
pub(super) const IMAGE_RULE: &str = "\
Image defaults follow from the images' height H, width W and the number N trained on. The UNet has base 16
and as many levels as halve H and W while both stay even and at least 4 after halving, at most 4
(8x8: mults 1,2, lowest 4x4; 16x16: 1,2,2, 4x4; 28x28: 1,2,2, 7x7; 32x32: 1,2,2,2, 4x4; 64x64: 1,2,2,2,
8x8), with self-attention at the lowest level when it has at most 256 positions. Then:
  --batch      32, at most N / 4
  --steps      2,744,000 / (H * W) rounded to 100, between 3,500 and 8,000 (the pixels the 28x28 run
               trains on: 8x8 and 16x16: 8,000; 28x28 and up: 3,500), at most 100 epochs of N images but
               at least 500
  --lr 1.5e-3, --timesteps 500, --schedule cosine, --prediction v
These train Fashion-MNIST at 8x8, 16x16 and 28x28 on 2 CPU cores (docs/benchmarks.md).";

/// The defaults for `n` training images of `h`×`w`, by `IMAGE_RULE` (the UNet: `UnetConfig::for_image`).
pub(super) fn image_defaults(h: usize, w: usize, n: usize) -> Defaults {
    let batch = IMAGES.batch.min(n / 4).max(1);
    let pixels = h.saturating_mul(w).max(1) as f64;
    let by_size = ((2_744_000.0 / pixels / 100.0).round() as u32 * 100).clamp(3500, 8000);
    let epochs = (100 * n / batch).max(500).min(u32::MAX as usize) as u32;
    Defaults { steps: by_size.min(epochs), batch, ..IMAGES }
}

/// Steps between metrics.jsonl training lines and plain progress lines.
pub const DEFAULT_LOG_EVERY: u32 = 100;
/// DDIM's reverse steps when `--sample-steps` is not given.
pub(super) const DEFAULT_DDIM_STEPS: usize = 50;
/// Points the mixture's training set holds (generated once, uploaded once).
pub(super) const MIXTURE_POINTS: usize = 100_000;

/// `tigel train diffusion`
#[derive(clap::Args, Debug)]
#[command(after_help = IMAGE_RULE)]
pub struct TrainArgs {
    /// ring8, grid25, or an image dataset (IDX file, .npy, folder of PNGs); the last 10% of images is held out.
    /// With --resume, default: the checkpoint's data.
    #[arg(long)]
    pub data: Option<String>,
    /// Optimizer steps in this run [default: 15000 for ring8, 25000 for grid25; images: see below].
    #[arg(long)]
    pub steps: Option<u32>,
    /// Noise schedule: linear or cosine [default: cosine].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Diffusion timesteps T [default: 1000 for mixtures, 500 for images].
    #[arg(long)]
    pub timesteps: Option<usize>,
    /// What the network predicts: eps (the noise) or v [default: eps for mixtures, v for images].
    #[arg(long)]
    pub prediction: Option<String>,
    /// Samples per step [default: 256 for mixtures; images: see below].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (AdamW, linear warmup then cosine decay to a tenth at the last step; a resumed
    /// run: see --resume-schedule) [default: 2e-3 for mixtures, 1.5e-3 for images].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Warmup steps (linear from 0 to --lr).
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    /// AdamW weight decay (decoupled, per step times the learning rate).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip the global gradient norm (L2, over all parameters) to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Decay per step of the EMA of the weights used for sampling.
    #[arg(long, default_value_t = 0.999)]
    pub ema: f32,
    /// MLP denoiser (mixtures): hidden width, also the time embedding's [default: 256].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// MLP denoiser (mixtures): hidden layers [default: 3].
    #[arg(long)]
    pub layers: Option<usize>,
    /// UNet (images): channels of the first level [default: 16].
    #[arg(long)]
    pub base: Option<usize>,
    /// UNet (images): channel multipliers per level, comma separated, one level each [default: from the
    /// image size, see below].
    #[arg(long, value_delimiter = ',')]
    pub mults: Option<Vec<usize>>,
    /// UNet (images): no self-attention at the lowest level (there is by default when it has at most 256
    /// positions).
    #[arg(long)]
    pub no_attention: bool,
    /// Train a class-conditional model (for classifier-free guidance) on the dataset's labels.
    #[arg(long)]
    pub conditional: bool,
    /// Probability, 0 to 1, of dropping a label to the null class during training (--conditional).
    #[arg(long, default_value_t = 0.1)]
    pub p_uncond: f32,
    /// Seed of the weights, the data drawn and the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps between evaluations: the mean loss, samples.png, loss.png and a checkpoint (and at the last step).
    #[arg(long, alias = "save-every", default_value_t = 500)]
    pub eval_every: u32,
    /// Steps between metrics.jsonl training lines and plain progress lines (logs that are not a terminal).
    #[arg(long, default_value_t = DEFAULT_LOG_EVERY)]
    pub log_every: u32,
    /// Run directory for checkpoint.safetensors, config.json, metrics.jsonl, loss.png and samples.png
    /// [default: the first free runs/diffusion, runs/diffusion-2, ...; with --resume: the resumed run's, unless
    /// --resume-schedule restart].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory or file: the model is the checkpoint's;
    /// --resume-schedule says what happens to the step counter and the learning rate.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    // Retention, resume semantics and the pixel range (run::retain, run::resume, data::images).
    /// With --resume: `continue` goes on from the checkpoint's step with its AdamW moments, the schedule
    /// that of a run of its step + --steps (a stopped run resumed with the steps it had left follows its
    /// schedule exactly; the same --warmup); `restart` starts a new run from its weights: step 0, fresh moments, a new
    /// schedule over --steps, in a new run directory (for new data).
    #[arg(long, value_name = "continue|restart", default_value_t = ResumeSchedule::Continue)]
    pub resume_schedule: ResumeSchedule,
    /// Also keep the last N checkpoints of the evaluations, checkpoint-NNNNNN.safetensors (0: none).
    /// checkpoint.safetensors (the latest) and best.safetensors (lowest mean training loss of an evaluation interval) are always kept.
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

/// `tigel sample diffusion`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained
    /// diffusion model.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Samples to generate (per class with --per-class).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// ddpm (ancestral, all T steps) or ddim (deterministic, --sample-steps steps).
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// DDIM steps (with --sampler ddim) [default: 50].
    #[arg(long)]
    pub sample_steps: Option<usize>,
    /// DDIM's update (with --sampler ddim): 2, second-order multistep (DPM-Solver++(2M)), or 1, DDIM's own
    /// first-order step [default: 2].
    #[arg(long)]
    pub order: Option<usize>,
    /// Class to generate (class-conditional models).
    #[arg(long)]
    pub label: Option<u32>,
    /// Classifier-free guidance weight, 1: none (needs --label and a class-conditional model) [default: 1].
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Write x_t at a few steps of the reverse process instead of the final samples only.
    #[arg(long)]
    pub trajectory: bool,
    /// One row of --n samples for each class label, in label order (class-conditional image models).
    #[arg(long)]
    pub per_class: bool,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Samples per forward pass (memory against speed).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// FILE.png (an image grid scaled to at least 256 pixels wide, or a scatter plot of 2-D points with
    /// the true modes) or FILE.npy (raw samples, data units).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `tigel eval diffusion`
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run directory (its latest checkpoint) or checkpoint file (e.g. RUN/best.safetensors) of a trained
    /// diffusion model.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// The data to compare with (default: the data the checkpoint was trained on); images are compared
    /// with the held-out last 10%.
    #[arg(long)]
    pub data: Option<String>,
    // The pixel range (data::images).
    /// The range of float .npy pixels: 0,1, -1,1, 0,255, or auto (read from the values: -1,1 when one
    /// is negative, else 0,1 when all are at most 1, else 0,255). Values outside the range given are an
    /// error naming the file (give the one training used); 8-bit data (IDX, PNG, u1 .npy) is 0..255.
    #[arg(long, value_name = "RANGE", default_value_t = PixelRange::Auto, allow_hyphen_values = true)]
    pub range: PixelRange,
    /// Samples to generate (default: 2000 for mixtures, 500 for images).
    #[arg(long)]
    pub n: Option<usize>,
    /// ddpm (ancestral, all T steps) or ddim (deterministic, --sample-steps steps).
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// DDIM steps (with --sampler ddim) [default: 50].
    #[arg(long)]
    pub sample_steps: Option<usize>,
    /// DDIM's update (with --sampler ddim): 2, second-order multistep (DPM-Solver++(2M)), or 1, DDIM's own
    /// first-order step [default: 2].
    #[arg(long)]
    pub order: Option<usize>,
    /// Guidance weight for a class-conditional image model (samples are spread evenly over the classes)
    /// [default: 1].
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Samples per forward pass (memory against speed).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Print the results as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}
