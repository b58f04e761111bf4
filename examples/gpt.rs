//! A byte-level GPT through the library API: train on a text, score held-out text, generate.
//!
//!     cargo run --release --example gpt [FILE]      (default: tigel's own sources, built in)

use tigel::data::text::Corpus;
use tigel::models::gpt::{Evaluator, Gpt, GptConfig, GptTrainer, SampleSettings, Sampler, TrainSettings};
use tigel::{Device, Result};

fn main() -> Result<()> {
    let dev = Device::from_env()?; // a GPU if wgpu finds one, else the CPU backend ($TIGEL_BACKEND to choose)
    let path = std::env::args().nth(1);
    let corpus = Corpus::from_arg(path.as_deref().map(std::path::Path::new))?;

    let cfg = GptConfig { layers: 2, heads: 4, width: 64, context: 64, dropout: 0.0, ..GptConfig::default() };
    let train = TrainSettings {
        batch: 16,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup: 50,
        steps: 400,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 1,
        precision: Default::default(),
    };
    // The corpus goes to the device once; each step draws its own windows there and runs forward,
    // backward and AdamW as one recorded submission.
    let trainer = GptTrainer::new(&dev, Gpt::new(&dev, cfg, train.seed)?, &corpus, train, 0)?;
    for step in 1..=train.steps {
        trainer.step(&dev)?;
        if step % 100 == 0 {
            let nats = trainer.read_loss(&dev)?.f32()? as f64;
            println!("step {step}: {:.3} bits/char", nats * tigel::models::gpt::BITS_PER_NAT);
        }
    }

    let (_, held) = corpus.split();
    let bpc = Evaluator::new(&dev, &trainer.model, 32)?.bits_per_char(&dev, &corpus, held, None)?;
    println!("held-out: {bpc:.3} bits/char");

    let s = SampleSettings { tokens: 200, temperature: 0.8, top_k: 40, seed: 1 };
    let text = Sampler::new(&dev, &trainer.model)?.generate(&dev, b"fn ", s, |_| {})?;
    println!("fn {}", String::from_utf8_lossy(&text));
    Ok(())
}
