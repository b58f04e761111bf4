//! Diffusion processes, beside the models: noise schedules by name (`schedule`) and the DDPM / DDIM
//! reverse processes (`sampler`) that run any `Denoiser` from pure noise back to data.
//!
//! The kernels themselves (schedule tables, q_sample, the reverse steps) are ops in `ops::diffusion`.

pub mod sampler;
pub mod schedule;

pub use sampler::{Denoiser, Process, SampleSettings, Sampler, SamplerKind, Samples};
pub use schedule::{ddim_timesteps, parse_schedule, schedule_name, Prediction, Schedule};

/// Width of the sinusoidal timestep embedding a denoiser takes.
pub const TIME_SIN_DIM: usize = 64;
/// Longest period of that embedding.
pub const MAX_PERIOD: f32 = 10_000.0;
