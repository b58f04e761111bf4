//! tigel: train generative models on any GPU through hand-written WGSL compute shaders, with a CPU
//! backend that mirrors every kernel.
//!
//! Layers, bottom up: `kernels` (the registry build.rs makes from shaders/), `device` (the wgpu and CPU
//! engines), `tensor`, `ops` (one file per kernel family), `graph` (IR, autodiff, planner/executor),
//! `nn` (layers), `optim` (optimizers, schedules, clipping, EMA), `train` (a recorded training step),
//! `checkpoint` (saved models and training state), `diffusion` (noise schedules, DDPM/DDIM samplers),
//! `models`, `data` (toy sets, 2-D mixtures, image sets), `metrics` (sample quality), `plot` (scatter
//! plots); `bench` measures the kernels.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod graph;
pub mod host;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod tensor;
pub mod train;

pub use device::{BackendChoice, Buffer, Device, Dispatch, Recording};
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
