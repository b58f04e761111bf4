//! Host-side building blocks below every other layer: the deterministic RNG for test and benchmark
//! inputs, and file helpers (I/O errors that name their path, atomic writes). Device-neutral: the CPU
//! twins, data, models, metrics and the benchmarks all use these same definitions.

pub mod fs;
pub mod rng;

pub use rng::Rng;
