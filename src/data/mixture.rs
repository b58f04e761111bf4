//! 2-D Gaussian mixtures, the standard mode-collapse benchmarks for GANs (VEEGAN, PacGAN): equal weights,
//! isotropic components. Samples come from the Philox stream of a seed, so a (seed, offset) pair fixes
//! them bit for bit on every machine.

use crate::error::{Error, Result};
use crate::host::philox::{normal_at, split64, uniform_at};

/// A named 2-D mixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixture {
    /// 8 Gaussians on a circle of radius 2 (mode k at angle 2πk/8), std 0.02.
    Ring8,
    /// 25 Gaussians on the 5×5 grid {-4, -2, 0, 2, 4}², std 0.05.
    Grid25,
}

/// Where the component draws start in the Philox element space; the normals use elements 2j and 2j + 1
/// from 0, so streams stay apart for sample indices below 2^62.
const COMPONENT_STREAM: u64 = 1 << 63;

impl Mixture {
    /// `ring8` or `grid25` (case-insensitive).
    pub fn parse(s: &str) -> Result<Mixture> {
        match s.to_ascii_lowercase().as_str() {
            "ring8" => Ok(Mixture::Ring8),
            "grid25" => Ok(Mixture::Grid25),
            _ => Err(Error::invalid("mixture", format!("unknown mixture `{s}`: choose ring8 or grid25"))),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mixture::Ring8 => "ring8",
            Mixture::Grid25 => "grid25",
        }
    }

    /// The component means.
    pub fn modes(self) -> Vec<[f32; 2]> {
        match self {
            Mixture::Ring8 => (0..8)
                .map(|k| {
                    let a = k as f64 * std::f64::consts::TAU / 8.0;
                    [(2.0 * a.cos()) as f32, (2.0 * a.sin()) as f32]
                })
                .collect(),
            Mixture::Grid25 => (0..25).map(|k| [(k / 5) as f32 * 2.0 - 4.0, (k % 5) as f32 * 2.0 - 4.0]).collect(),
        }
    }

    /// Components.
    pub fn num_modes(self) -> usize {
        match self {
            Mixture::Ring8 => 8,
            Mixture::Grid25 => 25,
        }
    }

    /// The per-coordinate standard deviation of every component.
    pub fn std(self) -> f32 {
        match self {
            Mixture::Ring8 => 0.02,
            Mixture::Grid25 => 0.05,
        }
    }

    /// Samples `offset .. offset + n` of the mixture's sequence for `seed`, as [n, 2] row-major; so
    /// `sample(a + b, s, o)` is `sample(a, s, o)` followed by `sample(b, s, o + a)`.
    ///
    /// Sample j takes its component from uniform element `2^63 + j` of the Philox stream of `seed`
    /// (`floor(u * K)`), and its offsets from the mode from normal elements `2j` (x) and `2j + 1` (y),
    /// scaled by `std()`.
    pub fn sample(self, n: usize, seed: u64, offset: u64) -> Vec<f32> {
        let s = split64(seed);
        let modes = self.modes();
        let k = modes.len();
        let std = self.std();
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n as u64 {
            let j = offset.wrapping_add(i);
            let u = uniform_at(s, split64(COMPONENT_STREAM.wrapping_add(j)), 0);
            let m = modes[((u * k as f32) as usize).min(k - 1)];
            let e = j.wrapping_mul(2);
            out.push(m[0] + std * normal_at(s, split64(e), 0));
            out.push(m[1] + std * normal_at(s, split64(e.wrapping_add(1)), 0));
        }
        out
    }
}
