//! The `tigel` command line.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tigel", version, about = "Train generative models on any GPU through hand-written WGSL kernels")]
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
    /// Runs each kernel family on every backend here (or on --backend) and checks it against the CPU backend.
    Demo {
        /// Matrix size for the matmul check.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
    /// Benchmarks (kernels: GFLOP/s or GB/s per kernel family, validated before timing).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Fewer sizes and repeats.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Kernel throughput at a few sizes per family, each validated against the CPU backend first.
    Kernels(BenchArgs),
    /// Training steps per second, encode cost per dispatch and the memory plan of each model.
    Train(BenchArgs),
    /// Both.
    All(BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info { json } => cmd::info::run(cli.backend.as_deref(), json),
        Cmd::Demo { size } => cmd::demo::run(cli.backend.as_deref(), size),
        Cmd::Bench { what } => {
            let (kernels, train, args) = match what {
                BenchWhat::Kernels(a) => (true, false, a),
                BenchWhat::Train(a) => (false, true, a),
                BenchWhat::All(a) => (true, true, a),
            };
            cmd::bench::run(cli.backend.as_deref(), kernels, train, args.json.as_deref(), args.quick)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
