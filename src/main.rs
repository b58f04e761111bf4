//! The `tigel` command line.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Counts live heap bytes for `tigel bench soak` (forwards every call to the system allocator).
#[global_allocator]
static ALLOC: tigel::bench::heap::CountingAlloc = tigel::bench::heap::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "tigel",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TIGEL_GIT_COMMIT"), ")"),
    about = "Train generative models on any GPU through hand-written WGSL kernels"
)]
struct Cli {
    /// auto, vulkan, metal, dx12, gl or cpu (default: $TIGEL_BACKEND, else auto). `auto` takes a hardware
    /// GPU when there is one, else the CPU backend; software adapters only when named.
    #[arg(long, global = true)]
    backend: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The adapters wgpu sees, the one --backend (default auto) chooses, its features and key limits.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Times the kernel variants (tile shapes, workgroup sizes, subgroups) on the GPU for the training
    /// benchmarks' steps, keeps the fastest in the tuning cache that later runs use, prints the choices.
    Tune {
        /// Tune for these training benchmarks (mlp, gpt, dcgan, unet); default all, or mlp and gpt with --quick.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Fewer models and timing runs (a minute or two on a software adapter).
        #[arg(long)]
        quick: bool,
    },
    /// Runs every kernel family (small sizes) on every backend here (or on --backend) and checks it
    /// against the CPU backend: one line per family with its largest relative difference.
    Demo {
        /// Side of the square inputs (matrices, images are smaller multiples of it), 1 to 4096.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Prints a shell completion script: `tigel completions bash > /etc/bash_completion.d/tigel`,
    /// `tigel completions zsh > ~/.zfunc/_tigel`, `tigel completions fish > ~/.config/fish/completions/tigel.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Trains a model.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Generates from a trained model.
    Sample {
        #[command(subcommand)]
        what: SampleWhat,
    },
    /// Scores a trained model on held-out data.
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// Writes a checkpoint's weights for PyTorch: safetensors, [out, in] matrices, the EMA weights where
    /// sampling uses them, the GPT in nanoGPT's names (see docs/checkpoints.md).
    Export(cmd::export::ExportArgs),
    /// Benchmarks (kernels: GFLOP/s or GB/s per kernel family, validated before timing).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Also write the results as JSON to this file (`--json FILE`, its old name, still works).
    #[arg(long, alias = "json", value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// Fewer sizes and repeats.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum TrainWhat {
    /// A byte-level GPT language model on a text file (default: tigel's own sources, built in).
    Gpt(cmd::gpt::TrainArgs),
    /// A GAN on a 2-D mixture (ring8, grid25; MLP) or on square images (an even side from 8 to 256, gray or RGB; DCGAN).
    Gan(cmd::gan::TrainArgs),
    /// A denoising diffusion model on a 2-D mixture (ring8, grid25) or an image dataset.
    Diffusion(cmd::diffusion::TrainArgs),
}

#[derive(Subcommand)]
enum SampleWhat {
    /// Continues a prompt with a trained GPT, printing bytes as they come.
    Gpt(cmd::gpt::SampleArgs),
    /// Samples from a trained GAN into a PNG (image grid or 2-D scatter plot) or a .npy file.
    Gan(cmd::gan::SampleArgs),
    /// Samples from a trained diffusion model (DDPM or DDIM, optional guidance) into a PNG or .npy.
    Diffusion(cmd::diffusion::SampleArgs),
}

#[derive(Subcommand)]
enum EvalWhat {
    /// Bits per character of a trained GPT on the held-out last 10% of a text.
    Gpt(cmd::gpt::EvalArgs),
    /// Mixtures: modes covered, high-quality fraction, reverse KL; images: MMD², precision and recall.
    Gan(cmd::gan::EvalArgs),
    /// Mixture metrics (2-D) or MMD² and precision/recall against held-out images of a diffusion model.
    Diffusion(cmd::diffusion::EvalArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Kernel throughput at a few sizes per family, each validated against the CPU backend first.
    Kernels(BenchArgs),
    /// Training steps per second, encode cost per dispatch and the memory plan of each model.
    Train(BenchArgs),
    /// Both.
    All(BenchArgs),
    /// Memory over a long GPT training run (process RSS, device allocations); fails if it grows after warm-up.
    Soak(cmd::bench::SoakArgs),
    /// Two reports side by side (tigel's or the PyTorch reference's JSON): per common case both figures
    /// and the ratio B/A.
    Compare {
        /// The first report (A).
        a: std::path::PathBuf,
        /// The second report (B).
        b: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    quiet_headless_vulkan();
    let cli = Cli::parse();
    // Under `mpirun` (the `mpi` feature): MPI starts here and ends when this is dropped, after the command.
    let _mpi = match cmd::dist::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match cli.cmd {
        Cmd::Info { json } => cmd::info::run(cli.backend.as_deref(), json),
        Cmd::Demo { size } => cmd::demo::run(cli.backend.as_deref(), size),
        Cmd::Tune { models, quick } => cmd::tune::run(cli.backend.as_deref(), &models, quick),
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "tigel", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Train { what: TrainWhat::Gpt(a) } => cmd::gpt::train(cli.backend.as_deref(), a),
        Cmd::Sample { what: SampleWhat::Gpt(a) } => cmd::gpt::sample(cli.backend.as_deref(), a),
        Cmd::Eval { what: EvalWhat::Gpt(a) } => cmd::gpt::eval(cli.backend.as_deref(), a),
        Cmd::Train { what: TrainWhat::Gan(a) } => cmd::gan::train(cli.backend.as_deref(), a),
        Cmd::Sample { what: SampleWhat::Gan(a) } => cmd::gan::sample(cli.backend.as_deref(), a),
        Cmd::Eval { what: EvalWhat::Gan(a) } => cmd::gan::eval(cli.backend.as_deref(), a),
        Cmd::Train { what: TrainWhat::Diffusion(a) } => cmd::diffusion::train(cli.backend.as_deref(), a),
        Cmd::Sample { what: SampleWhat::Diffusion(a) } => cmd::diffusion::sample(cli.backend.as_deref(), a),
        Cmd::Eval { what: EvalWhat::Diffusion(a) } => cmd::diffusion::eval(cli.backend.as_deref(), a),
        Cmd::Export(a) => cmd::export::run(a),
        Cmd::Bench { what: BenchWhat::Soak(a) } => cmd::bench::soak(cli.backend.as_deref(), a),
        Cmd::Bench { what: BenchWhat::Compare { a, b } } => {
            tigel::bench::compare::compare(&a, &b).map(|text| print!("{text}"))
        }
        Cmd::Bench { what } => {
            let (kernels, train, args) = match what {
                BenchWhat::Kernels(a) => (true, false, a),
                BenchWhat::Train(a) => (false, true, a),
                BenchWhat::All(a) => (true, true, a),
                BenchWhat::Compare { .. } | BenchWhat::Soak(_) => unreachable!("matched above"),
            };
            cmd::bench::run(cli.backend.as_deref(), kernels, train, args.out.as_deref(), args.quick)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // On several ranks this ends them all.
            cmd::dist::fail(&e);
            ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on headless machines (servers,
/// CI) when that variable is missing, once per instance. tigel opens no windows, so it points the
/// variable at a private directory when it is unset. Done first thing in `main`, while the process has
/// one thread, which is what makes changing the environment sound.
fn quiet_headless_vulkan() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        use std::os::unix::fs::PermissionsExt;
        // One directory for every run (nothing is written into it), private as the spec asks.
        let dir = std::env::temp_dir().join("tigel-xdg-runtime");
        if std::fs::create_dir_all(&dir).is_ok()
            && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok()
        {
            // SAFETY: called at the start of main, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
