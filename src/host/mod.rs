//! Host-side building blocks below every other layer: the deterministic RNG for test and benchmark
//! inputs, f16 packing, host Philox (the same random numbers the kernels draw), the multi-threaded host SGEMM, and
//! file helpers (I/O errors that name their path, atomic writes). Device-neutral: the CPU twins, data,
//! models, metrics and the benchmarks all use these same definitions; nothing here imports a layer above.

pub mod f16;
pub mod fs;
pub mod gemm;
pub mod philox;
pub mod rng;

pub use rng::Rng;
