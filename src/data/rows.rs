//! A data source as training rows: what the GAN trainer uploads, and each source's sample shape and scale.

use crate::data::source::Source;

/// The training data as the trainer holds it: rows of `sample_len` values, in the model's scale.
pub struct TrainData {
    /// Row-major values, [N, sample shape...].
    pub rows: Vec<f32>,
    /// [N, sample shape...].
    pub shape: Vec<usize>,
}

/// Points drawn once from a mixture (fixed seed) for training.
pub const MIXTURE_POINTS: usize = 100_000;

impl TrainData {
    /// A mixture: `MIXTURE_POINTS` points (fixed seed) divided by `scale`; images: the training pixels.
    pub fn from_source(src: &Source, scale: f32) -> TrainData {
        match src {
            Source::Mixture(m) => TrainData {
                rows: m.sample(MIXTURE_POINTS, 0x6a17, 0).into_iter().map(|v| v / scale).collect(),
                shape: vec![MIXTURE_POINTS, 2],
            },
            Source::Images { train, .. } => {
                TrainData { rows: train.pixels.clone(), shape: vec![train.n, train.c, train.h, train.w] }
            }
        }
    }
}

/// The per-sample shape and scale of a data source.
pub fn data_shape_of(src: &Source) -> (Vec<usize>, f32) {
    match src {
        Source::Mixture(m) => {
            let extent = m.modes().iter().flat_map(|p| [p[0].abs(), p[1].abs()]).fold(0.0f32, f32::max);
            (vec![2], extent)
        }
        Source::Images { train, .. } => (vec![train.c, train.h, train.w], 1.0),
    }
}
