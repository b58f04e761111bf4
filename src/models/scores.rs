//! Scores of generated samples against their data source: mixture metrics for 2-D points, MMD² and
//! precision/recall for images.

use serde_json::{json, Value};

use crate::data::mixture::Mixture;
use crate::data::source::Source;
use crate::error::Result;
use crate::metrics::{self, GaussianMixture};

/// Scores of samples against the data.
#[derive(Clone, Debug)]
pub enum Scores {
    /// Mode coverage and quality on a 2-D mixture.
    Mixture(metrics::MixtureMetrics),
    /// Pixel-space scores against held-out images.
    Images {
        /// Squared MMD (Gaussian kernel).
        mmd2: f64,
        /// k-NN precision (k = 3).
        precision: f64,
        /// k-NN recall (k = 3).
        recall: f64,
        /// Images compared.
        n: usize,
    },
}

impl Scores {
    /// The scores as the fields of a JSON object.
    pub fn to_json(&self) -> Value {
        match self {
            Scores::Mixture(m) => json!({"modes_covered": m.modes_covered, "num_modes": m.num_modes,
                "high_quality": m.high_quality, "reverse_kl": m.reverse_kl, "mean_log_density": m.mean_log_density}),
            Scores::Images { mmd2, precision, recall, n } => {
                json!({"mmd2": mmd2, "precision": precision, "recall": recall, "n": n})
            }
        }
    }

    /// The scores as one human-readable line.
    pub fn line(&self) -> String {
        match self {
            Scores::Mixture(m) => format!(
                "{}/{} modes, {:.1}% high quality, reverse KL {:.4}",
                m.modes_covered,
                m.num_modes,
                100.0 * m.high_quality,
                m.reverse_kl
            ),
            Scores::Images { mmd2, precision, recall, n } => {
                format!("MMD² {mmd2:.5}, precision {precision:.3}, recall {recall:.3} (k = 3, {n} images)")
            }
        }
    }
}

/// Mixtures: `mixture_metrics` of `n` samples. Images: MMD² and k = 3 precision/recall in pixel space
/// of `n` samples against `n` held-out images (all of them if fewer).
pub fn evaluate(samples: &[f32], src: &Source) -> Result<Scores> {
    match src {
        Source::Mixture(m) => Ok(Scores::Mixture(metrics::mixture_metrics(samples, *m)?)),
        Source::Images { held, .. } => {
            let dim = held.image_len();
            let n = (samples.len() / dim).min(held.n);
            let real = &held.pixels[..n * dim];
            let fake = &samples[..n * dim];
            let mmd2 = metrics::mmd2(real, fake, dim)?;
            let (precision, recall) = metrics::precision_recall_k(real, fake, dim, 3)?;
            Ok(Scores::Images { mmd2, precision, recall, n })
        }
    }
}

/// The named 2-D data sets score as the Gaussian mixtures they are.
impl GaussianMixture for Mixture {
    fn modes(&self) -> Vec<[f32; 2]> {
        Mixture::modes(*self)
    }
    fn std(&self) -> f32 {
        Mixture::std(*self)
    }
}
