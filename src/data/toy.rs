//! 2-D toy datasets, generated on the host from the Philox stream of a seed (the same numbers the
//! device kernels would draw), so a seed fixes a dataset on every machine.

use crate::host::philox::{normal_at, split64, uniform_at};

/// Two interleaved spirals, `n` points (half per class), radius up to 1, with a little Gaussian noise.
/// Returns points [n, 2] (row-major) and class ids [n].
pub fn spirals(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let s = split64(seed);
    let mut xy = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as u32;
        let t = uniform_at(s, [0, 0], i as u32).sqrt();
        let angle = 3.0 * std::f32::consts::PI * t + class as f32 * std::f32::consts::PI;
        let noise = 0.03;
        xy.push(t * angle.cos() + noise * normal_at(s, [0, 1], 2 * i as u32));
        xy.push(t * angle.sin() + noise * normal_at(s, [0, 1], 2 * i as u32 + 1));
        labels.push(class);
    }
    (xy, labels)
}
