//! The arguments of `tigel train|sample|eval gan` and the defaults per kind of data.

use std::path::PathBuf;

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
/// Image datasets (a DCGAN).
pub(super) const IMAGES: Defaults = Defaults {
    steps: 6000,
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
    eval_every: 1000,
};

/// `tigel train gan`
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// ring8, grid25, or an image file/folder (IDX, .npy, PNG folder); with --resume, default: the
    /// checkpoint's data.
    #[arg(long)]
    pub data: Option<String>,
    /// Steps (one D and one G update each) in this run.
    #[arg(long)]
    pub steps: Option<u32>,
    /// Real (and generated) samples per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate of both Adam optimizers (β1 = 0.5).
    #[arg(long)]
    pub lr: Option<f32>,
    /// The learning rates decay linearly to this fraction of --lr at the last step (1: constant).
    /// A resumed run keeps the schedule of the run it continues.
    #[arg(long)]
    pub lr_end: Option<f32>,
    /// The fraction of the run before that decay begins (0: from the first step).
    #[arg(long)]
    pub lr_hold: Option<f32>,
    /// Noise dimension.
    #[arg(long)]
    pub z_dim: Option<usize>,
    /// MLP hidden width / DCGAN base channels.
    #[arg(long)]
    pub width: Option<usize>,
    /// MLP hidden layers.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Samples the discriminator judges together (2-D only).
    #[arg(long)]
    pub pack: Option<usize>,
    /// Decay of the moving average of G's weights used for sampling (0: off).
    #[arg(long)]
    pub ema: Option<f32>,
    /// R1 gradient penalty weight on real data (2-D only; 0: off).
    #[arg(long)]
    pub r1: Option<f32>,
    /// Discriminator updates per generator update.
    #[arg(long)]
    pub d_steps: Option<u32>,
    /// Seed of the weights, the data drawn and the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate, write a sample grid and save a checkpoint every N steps.
    #[arg(long)]
    pub eval_every: Option<u32>,
    /// Run directory (default: the first free runs/gan, runs/gan-2, ...).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue training the checkpoint in this run directory.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// End with one JSON line of results on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `tigel sample gan`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Run directory (or checkpoint file) of a trained GAN.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Samples to generate.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// FILE.png (an image grid, or a scatter plot of 2-D points) or FILE.npy (raw samples).
    #[arg(long)]
    pub out: PathBuf,
}

/// `tigel eval gan`
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run directory (or checkpoint file) of a trained GAN.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data to score against (default: the checkpoint's); images use their held-out last 10%.
    #[arg(long)]
    pub data: Option<String>,
    /// Samples to generate and score.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}
