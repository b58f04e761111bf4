//! Training in the page: a few steps of a regime from a seed, each step's loss read back
//! asynchronously, on a built-in text. The same functions run natively (examples/losses.rs), so the page's losses can be
//! compared with tigel's native CPU engine on the same seed and data.

use serde_json::{json, Value};
use tigel::data::text::Corpus;
use tigel::device::{BackendChoice, Instant};
use tigel::models::gpt::{Gpt, GptConfig, GptTrainer, TrainSettings};
use tigel::{Device, Result};

/// The page's GPT: small enough that a software adapter trains it at a few steps per second.
pub const GPT: GptConfig = GptConfig { layers: 2, heads: 4, width: 64, context: 64, dropout: 0.0 };

/// How the page trains the GPT for `steps` steps from `seed`.
pub fn gpt_settings(steps: u32, seed: u64) -> TrainSettings {
    TrainSettings {
        batch: 8,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup: steps.min(10),
        steps,
        weight_decay: 0.1,
        clip: 1.0,
        seed,
    }
}

/// What a training run gives: every step's mean loss in nats, and where the time went.
pub struct Trained {
    /// Each step's loss.
    pub losses: Vec<f32>,
    /// Seconds building the model and its recorded step, and the first step (pipelines are made then).
    pub setup_s: f64,
    /// Seconds of the other steps, each loss read back before the next step.
    pub steps_s: f64,
}

/// The page's built-in text: the WGSL of every kernel tigel ships (about 100 KB). Fixed by the shaders
/// alone, unlike `Corpus::embedded` (every source and doc), so a native build and a browser build of
/// one commit train on the same bytes even when docs differ between the two builds.
pub fn corpus() -> Result<Corpus> {
    let text: String = tigel::kernels::SHADERS.iter().map(|s| s.source).collect::<Vec<_>>().join("\n");
    Corpus::from_bytes("tigel's kernels (WGSL)".into(), text.into_bytes())
}

/// Trains the page's GPT on `corpus()` for `steps` steps.
pub async fn gpt_losses(dev: &Device, steps: u32, seed: u64) -> Result<Trained> {
    let t0 = Instant::now();
    let corpus = corpus()?;
    let model = Gpt::new(dev, GPT, seed)?;
    let trainer = GptTrainer::new(dev, model, &corpus, gpt_settings(steps, seed), 0)?;
    let mut losses = Vec::with_capacity(steps as usize);
    let mut t1 = t0;
    for i in 0..steps {
        trainer.step(dev)?;
        losses.push(trainer.read_loss(dev)?.f32_async().await?);
        if i == 0 {
            t1 = Instant::now();
        }
    }
    Ok(Trained { losses, setup_s: (t1 - t0).as_secs_f64(), steps_s: t1.elapsed().as_secs_f64() })
}

/// The device the page trains on: the browser's WebGPU, or tigel's CPU engine (`cpu`).
async fn device(backend: &str) -> Result<Device> {
    let choice: BackendChoice = backend.parse()?;
    Device::select_async(choice, None).await
}

/// The page's training report: `{regime, steps, seed, backend, device, losses, first_loss, last_loss,
/// seconds, steps_per_s, ok}`; `ok` is false with an `error` when anything failed.
pub async fn run(regime: &str, steps: u32, seed: u64, backend: &str) -> Value {
    let head = json!({ "regime": regime, "steps": steps, "seed": seed, "backend": backend });
    let fail = |e: String| {
        let mut v = head.clone();
        v["ok"] = json!(false);
        v["error"] = json!(e);
        v
    };
    if regime != "gpt" {
        return fail(format!("regime `{regime}` does not train in the page yet (gpt does)"));
    }
    let dev = match device(backend).await {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    match gpt_losses(&dev, steps, seed).await {
        Ok(t) => {
            let mut v = head;
            v["device"] = json!(dev.note());
            v["first_loss"] = json!(t.losses.first());
            v["last_loss"] = json!(t.losses.last());
            v["seconds"] = json!(t.setup_s + t.steps_s);
            v["setup_s"] = json!(t.setup_s);
            // The steady state: the steps after the first.
            v["steps_per_s"] = json!(steps.saturating_sub(1) as f64 / t.steps_s);
            v["ok"] = json!(t.losses.iter().all(|l| l.is_finite()));
            v["losses"] = json!(t.losses);
            v
        }
        Err(e) => fail(e.to_string()),
    }
}
