//! Shared GPT test helpers: small training settings, a text with structure to learn, and the losses
//! of a run of steps.

use tigel::data::text::Corpus;
use tigel::graph::Precision;
use tigel::models::gpt::{GptTrainer, TrainSettings};
use tigel::Device;

/// Batch 3, lr 3e-3 with warmup 2 and a cosine to 10%, weight decay 0.1, clipping at 1, seed 7.
pub fn gpt_settings(steps: u32, precision: Precision) -> TrainSettings {
    TrainSettings {
        batch: 3,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup: 2,
        steps,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 7,
        precision,
    }
}

/// A small text with structure to learn: repeated sentences with a counter, at least `n` bytes.
pub fn gpt_corpus(n: usize) -> Corpus {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("the cat sat on mat {} and the dog ran.\n", i % 7));
        i += 1;
    }
    Corpus { name: "test".into(), bytes: s.into_bytes() }
}

/// The losses of the next `steps` steps (each read back after its step).
pub fn gpt_losses(dev: &Device, t: &GptTrainer, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            t.step(dev).unwrap();
            f32::from_bits(t.read_loss(dev).unwrap().wait().unwrap()[0])
        })
        .collect()
}
