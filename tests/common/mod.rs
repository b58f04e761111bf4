//! Shared test helpers: the devices to compare, random inputs with fresh seeds, and tolerance checks.
#![allow(dead_code)]

use tigel::{BackendChoice, Device};

/// The GPU device the equivalence tests run on: `TIGEL_TEST_BACKEND` (default vulkan, which is
/// lavapipe on a machine without a GPU). Under CI=true a missing adapter fails the test; elsewhere the
/// test prints that it skipped.
pub fn gpu() -> Option<Device> {
    let name = std::env::var("TIGEL_TEST_BACKEND").unwrap_or_else(|_| "vulkan".into());
    let choice: BackendChoice = name.parse().expect("TIGEL_TEST_BACKEND");
    match Device::new(choice) {
        Ok(d) => {
            d.set_poison(true);
            Some(d)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no {name} adapter: {e}. Install mesa-vulkan-drivers for lavapipe.");
            }
            eprintln!("skipped: no {name} adapter ({e})");
            None
        }
    }
}

pub fn cpu() -> Device {
    let d = Device::cpu();
    d.set_poison(true);
    d
}

/// A fresh seed per run (printed, so a failure can be replayed with TIGEL_TEST_SEED).
pub fn seed() -> u64 {
    let s = std::env::var("TIGEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("TIGEL_TEST_SEED={s}");
    s
}

/// xorshift64*: small, fast, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Fails with the worst element if any |got - want| > atol + rtol * |want|, or if `got` has a NaN
/// where `want` has none (an unwritten, poisoned element).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() && g.is_nan() {
            continue;
        }
        let err = (g - w).abs();
        let excess = if err.is_nan() { f32::INFINITY } else { err - (atol + rtol * w.abs()) };
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but should be {} (atol {atol}, rtol {rtol}; {} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}
