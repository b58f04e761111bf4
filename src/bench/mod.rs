//! The kernel benchmark behind `tigel bench kernels` and `cargo bench --bench kernels`.
//!
//! Each case issues one op (eager calls on input tensors made beforehand) and is validated before it
//! is timed: on a GPU its result is compared with the CPU twin on the same inputs; on the CPU backend,
//! where the twin would only be compared with itself, with a host reference instead (matmul: an f64
//! product of a few rows). A mismatch is an `Err` naming the case, so a wrong kernel never reports a
//! speed. Timing replays a `Device::capture` of the case, so it excludes encoding and allocation.
//!
//! Counting convention (FLOP are arithmetic operations the op defines; bytes are the minimum traffic to
//! and from memory, f32 = 4 bytes, every input read once and every output written once):
//!
//! | case                     | FLOP            | bytes                                         |
//! |--------------------------|-----------------|-----------------------------------------------|
//! | matmul M,N,K (batch B)   | 2·B·M·N·K       | 4·B·(M·K + K·N + M·N)                         |
//! | elementwise binary (add) | n               | 12·n (two reads, one write)                   |
//! | elementwise unary (exp)  | n               | 8·n                                           |
//! | reduce sum of rows       | n               | 4·n + 4·rows                                  |
//! | softmax rows             | 5·n (max, sub, exp, sum, div) | 8·n (one read, one write: the second pass re-reads a row the cache holds) |
//! | transpose2d              | 0               | 8·n                                           |
//! | rng normal               | 0               | 4·n (written only)                            |
//! | copy                     | 0               | 8·n                                           |
//!
//! GFLOP/s is reported where the FLOP count is not 0, GB/s everywhere.
//!
//! Files: `case` (what a case is: inputs, op, check), `cases` (the list per size), `runner` (validate,
//! then time), `validate` (the comparisons and the host references), `report` (results as JSON, the
//! run's header and date), `families` (the attention, conv2d and AdamW cases), `train` (training
//! steps), `compare` (two reports side by side).

mod case;
mod cases;
pub mod compare;
pub mod demo;
mod families;
pub mod heap;
mod report;
mod runner;
pub mod soak;
pub mod train;
mod validate;

pub use case::{Case, Check, Input};
pub use cases::cases;
pub use families::{AdamCase, AttnCase, ConvCase, ConvDir};
pub use report::{header_json, prepare_output, utc_now_iso, write_json, CaseResult, Report};
pub use runner::{run, run_cases};

/// Which sizes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// Every size of every family (software adapters get capped sizes).
    Full,
    /// One mid size per family, fewer repeats.
    Quick,
    /// Small shapes and three repeats, for tests of the benchmark itself.
    Tiny,
}

/// How a kernel run goes.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Which sizes to run.
    pub sizes: Sizes,
    /// Print the table to stdout as cases finish.
    pub print: bool,
}
