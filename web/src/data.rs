//! The page's data, built in (a page has no files): ring8 (tigel's 2-D mixture) and a small labelled
//! image set drawn in code, so a native build and a browser build train on the same values.

use tigel::data::images::ImageSet;
use tigel::host::Rng;

/// Side of the built-in images (the DCGAN's smallest).
pub const SIDE: usize = 8;
/// Images in the built-in set.
pub const IMAGES: usize = 512;
/// Classes of the built-in set: a horizontal bar, a vertical bar, a square outline, a diagonal.
pub const CLASSES: usize = 4;

/// What a GAN or diffusion run trains on in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// tigel's 8-mode ring of Gaussians.
    Ring8,
    /// `shapes()`: 8×8 gray images of four classes.
    Shapes,
}

impl Data {
    /// `ring8` or `shapes`.
    pub fn parse(s: &str) -> Result<Data, String> {
        match s {
            "" | "ring8" => Ok(Data::Ring8),
            "shapes" | "images" => Ok(Data::Shapes),
            _ => Err(format!("data `{s}`: the page has `ring8` and `shapes` (8×8 images)")),
        }
    }

    /// The name configs and checkpoints store.
    pub fn name(self) -> &'static str {
        match self {
            Data::Ring8 => "ring8",
            Data::Shapes => "shapes",
        }
    }
}

/// `IMAGES` 8×8 gray images in [-1, 1], one class each (cycling), with the shape's place and size drawn
/// from a fixed seed.
pub fn shapes() -> ImageSet {
    let mut rng = Rng::new(0x5a9e5);
    let mut pixels = vec![-1.0f32; IMAGES * SIDE * SIDE];
    let mut labels = Vec::with_capacity(IMAGES);
    let pick = |rng: &mut Rng, lo: usize, hi: usize| {
        lo + ((rng.uniform(0.0, 1.0) * (hi - lo) as f32) as usize).min(hi - lo - 1)
    };
    for i in 0..IMAGES {
        let class = i % CLASSES;
        let img = &mut pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
        let mut on = |y: usize, x: usize| img[y * SIDE + x] = 1.0;
        match class {
            0 => {
                let (y, x0, len) = (pick(&mut rng, 1, 7), pick(&mut rng, 0, 3), pick(&mut rng, 4, 6));
                (x0..(x0 + len).min(SIDE)).for_each(|x| on(y, x));
            }
            1 => {
                let (x, y0, len) = (pick(&mut rng, 1, 7), pick(&mut rng, 0, 3), pick(&mut rng, 4, 6));
                (y0..(y0 + len).min(SIDE)).for_each(|y| on(y, x));
            }
            2 => {
                let s = pick(&mut rng, 3, 6);
                let (y0, x0) = (pick(&mut rng, 0, SIDE - s + 1), pick(&mut rng, 0, SIDE - s + 1));
                for k in 0..s {
                    on(y0, x0 + k);
                    on(y0 + s - 1, x0 + k);
                    on(y0 + k, x0);
                    on(y0 + k, x0 + s - 1);
                }
            }
            _ => {
                let (s, o) = (pick(&mut rng, 4, 8), pick(&mut rng, 0, 2));
                (0..s).for_each(|k| on((k + o).min(SIDE - 1), k));
            }
        }
        labels.push(class as u32);
    }
    ImageSet { n: IMAGES, c: 1, h: SIDE, w: SIDE, pixels, labels: Some(labels), num_classes: CLASSES }
}
