//! What `--data` names for the GAN and diffusion regimes: a 2-D mixture generated in code (`ring8`,
//! `grid25`) or an image dataset on disk (IDX, .npy, a folder of PNGs; see `images::load_images`).
//! Both regimes open their data here, so they accept the same arguments and refuse the same mistakes.

use std::path::Path;

use super::images::{load_images_in, split_holdout, ImageSet, PixelRange};
use super::mixture::Mixture;
use crate::error::{Error, Result};

/// The fraction of an image dataset held out for evaluation (the last images of the file).
pub const IMAGE_HOLDOUT: f64 = 0.1;

/// What a GAN or diffusion model trains on.
#[derive(Debug)]
pub enum Source {
    /// A named 2-D mixture.
    Mixture(Mixture),
    /// Training images and the held-out last `IMAGE_HOLDOUT` of them.
    Images {
        /// The images trained on.
        train: ImageSet,
        /// The held-out images the scores compare against.
        held: ImageSet,
    },
}

impl Source {
    /// `ring8` / `grid25` (any case), else a path. A path that does not exist is an error naming it and
    /// the mixtures, so a typo in a mixture name is not reported as a missing file only.
    pub fn open(spec: &str) -> Result<Source> {
        Source::open_in(spec, PixelRange::Auto)
    }

    /// `open` with the pixel range of float image data given (`--range`); a range other than `auto`
    /// for a mixture is an error.
    pub fn open_in(spec: &str, range: PixelRange) -> Result<Source> {
        if let Ok(m) = Mixture::parse(spec) {
            if range != PixelRange::Auto {
                return Err(Error::invalid(
                    "--range",
                    format!("--range {range} is for image data; `{spec}` is a 2-D mixture"),
                ));
            }
            return Ok(Source::Mixture(m));
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(Error::invalid(
                "--data",
                format!("`{spec}` is neither a mixture (ring8, grid25) nor an existing file or folder"),
            ));
        }
        let set = load_images_in(path, range)?;
        // Samples are written as gray or RGB PNGs: refuse other channel counts now, not after training.
        if set.c != 1 && set.c != 3 {
            return Err(Error::invalid(
                "--data",
                format!("`{spec}` has {} channels per image: want 1 (gray) or 3 (RGB)", set.c),
            ));
        }
        let min = min_images();
        if set.n < min {
            return Err(Error::invalid(
                "--data",
                format!(
                    "`{spec}` holds {} image(s); at least {min} are needed (the last {}% is held out for evaluation)",
                    set.n,
                    IMAGE_HOLDOUT * 100.0
                ),
            ));
        }
        let (train, held) = split_holdout(set, IMAGE_HOLDOUT)?;
        Ok(Source::Images { train, held })
    }

    /// One line for logs: the mixture's name, or `N×C×H×W images (K classes)`.
    pub fn describe(&self) -> String {
        match self {
            Source::Mixture(m) => format!("{} (2-D mixture, {} modes, std {})", m.name(), m.num_modes(), m.std()),
            Source::Images { train, held } => {
                let classes =
                    if train.labels.is_some() { format!(", {} classes", train.num_classes) } else { String::new() };
                format!("{} + {} held-out images of {}×{}×{}{classes}", train.n, held.n, train.c, train.h, train.w)
            }
        }
    }
}

/// The fewest images a dataset may hold: at least one held out (the last [`IMAGE_HOLDOUT`], rounded, as
/// [`split_holdout`] counts it) and at least one left to train on.
pub fn min_images() -> usize {
    let held = |n: usize| ((n as f64 * IMAGE_HOLDOUT).round() as usize).min(n);
    (1..1_000_000).find(|&n| held(n) >= 1 && held(n) < n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixtures_and_missing_paths() {
        assert!(matches!(Source::open("RING8").unwrap(), Source::Mixture(Mixture::Ring8)));
        assert!(matches!(Source::open("grid25").unwrap(), Source::Mixture(Mixture::Grid25)));
        let e = Source::open("/nonexistent/ring9").unwrap_err().to_string();
        assert!(e.contains("ring9") && e.contains("ring8"), "{e}");
    }

    #[test]
    fn min_images_is_the_real_minimum() {
        let m = min_images();
        assert_eq!(m, 5);
        let split = |n| {
            split_holdout(
                ImageSet { n, c: 1, h: 1, w: 1, pixels: vec![0.0; n], labels: None, num_classes: 0 },
                IMAGE_HOLDOUT,
            )
            .unwrap()
        };
        let (t, h) = split(m);
        assert!(t.n > 0 && h.n > 0);
        let (t, h) = split(m - 1);
        assert!(t.n == 0 || h.n == 0);
    }
}
