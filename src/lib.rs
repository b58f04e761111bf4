//! tigel: train generative models on any GPU through hand-written WGSL compute shaders, with a CPU
//! backend that mirrors every kernel.
//!
//! The crate is a stack of layers; each uses only those below it. Bottom up:
//!
//! - `host`: device-neutral building blocks: the RNG for test and benchmark inputs, file helpers (I/O
//!   errors that name their path, atomic writes), and the host Philox and GEMM that the CPU twins, data
//!   and metrics share.
//! - `kernels`: the kernel registry build.rs makes from shaders/ (entry points, bindings, workgroup
//!   sizes) and the parameter structs the shaders read.
//! - `device`: the engines: wgpu (adapter choice, limits, buffer pool, pipeline cache, capture and
//!   replay) and the CPU backend, one twin per shader family.
//! - `tensor`: a device buffer with a shape and a dtype.
//! - `ops`: the eager ops, one file per kernel family: shape checks, output allocation, one dispatch.
//! - `graph`: the IR with one definition per op (shape, forward, backward, f64 reference), autodiff, and
//!   the planner and executor that record a whole step once and replay it.
//! - `nn`, `optim` and `diffusion`: layers with named parameters; optimizers, learning-rate schedules,
//!   clipping and EMA; noise schedules and the DDPM/DDIM samplers.
//! - `dist`: data-parallel training across processes (ranks): each rank's share of the global batch,
//!   and the gradients' allreduce between the recorded forward-backward and update (MPI behind the
//!   `mpi` feature).
//! - `train`: a recorded training step (forward, backward, update) with its optimizer state.
//! - `models`, `data`, `checkpoint` and `metrics`: the GPT, GAN, diffusion and MLP models; datasets
//!   (text, image sets, 2-D toy distributions); checkpoints (safetensors with tigel's metadata); sample
//!   quality (bits/char, mode coverage, MMD, precision/recall).
//! - `run`: the training loop every regime shares (progress, metrics.jsonl, plots through `plot`,
//!   periodic evaluation and checkpoints, resume).
//! - `bench`: validated kernel throughput and training-step figures.
//!
//! The `tigel` binary (src/cmd) only parses arguments and wires these together. An application that
//! embeds tigel next to its own wgpu code uses the re-exported [`wgpu`], so both agree on its version;
//! [`prelude`] brings in the common types.

#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod dist;
pub mod error;
pub mod graph;
pub mod host;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
#[cfg(feature = "plot")]
pub mod plot;
pub mod run;
pub mod tensor;
pub mod train;

/// The wgpu tigel is built on, so an embedding application uses the same version.
pub use wgpu;

pub use device::{BackendChoice, Buffer, Device, Dispatch, Recording};
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};

/// The common types in one import: `use tigel::prelude::*;`.
pub mod prelude {
    pub use crate::checkpoint::Checkpoint;
    pub use crate::device::{BackendChoice, Device};
    pub use crate::error::{Error, Result};
    pub use crate::graph::{Graph, NodeId};
    pub use crate::models::ddpm::{Diffusion, DiffusionConfig, DiffusionTrainer};
    pub use crate::models::gan::{Gan, GanConfig, GanTrainer};
    pub use crate::models::gpt::{Gpt, GptConfig, GptTrainer};
    pub use crate::models::mlp::{Mlp, MlpConfig};
    pub use crate::models::unet::{Unet, UnetConfig};
    pub use crate::tensor::{DType, Tensor};
    pub use crate::train::{TrainConfig, Trainer};
}
