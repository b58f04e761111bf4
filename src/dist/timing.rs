//! Where a data-parallel step's time goes on this rank: waiting for the forward and backward pass (the
//! gradients' download, which also waits for the previous update), and the allreduce with its write
//! back. Counted over the process's life; `tigel train` prints it at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static COMPUTE_NS: AtomicU64 = AtomicU64::new(0);
static REDUCE_NS: AtomicU64 = AtomicU64::new(0);
static REDUCTIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The totals so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Seconds spent submitting the forward and backward passes and waiting for their gradients.
    pub compute_s: f64,
    /// Seconds spent summing the gradients across ranks and writing them back.
    pub reduce_s: f64,
    /// Allreduces done (one per recorded step: the GAN's D and G steps count apart).
    pub reductions: u64,
    /// Bytes each rank contributed to them.
    pub bytes: u64,
}

impl Timing {
    /// The totals so far in this process.
    pub fn now() -> Timing {
        Timing {
            compute_s: COMPUTE_NS.load(Ordering::Relaxed) as f64 * 1e-9,
            reduce_s: REDUCE_NS.load(Ordering::Relaxed) as f64 * 1e-9,
            reductions: REDUCTIONS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    /// One line: time per allreduce split into compute and allreduce, and the bytes sent.
    pub fn line(&self) -> String {
        let n = self.reductions.max(1) as f64;
        format!(
            "data-parallel: {} allreduces of {:.1} KiB; per allreduced step {:.2} ms forward+backward(+update), {:.2} ms allreduce ({:.0}% of the step)",
            self.reductions,
            self.bytes as f64 / n / 1024.0,
            1e3 * self.compute_s / n,
            1e3 * self.reduce_s / n,
            100.0 * self.reduce_s / (self.compute_s + self.reduce_s).max(1e-12)
        )
    }
}

pub(super) fn add(compute: Duration, reduce: Duration, bytes: usize) {
    COMPUTE_NS.fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
    REDUCE_NS.fetch_add(reduce.as_nanos() as u64, Ordering::Relaxed);
    REDUCTIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}
