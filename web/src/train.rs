//! The page's automated run (`?run=gpt|gan|diffusion&steps=N&seed=S[&data=ring8|shapes]`): a few steps
//! of a regime from a seed, each step's losses read back asynchronously. The same function runs
//! natively (examples/losses.rs), so the page's losses can be compared with tigel's native CPU engine
//! on the same seed and data.

use serde_json::{json, Value};
use tigel::device::{BackendChoice, Instant};
use tigel::{Device, Result};

use crate::data::Data;
use crate::session::Session;

/// What a training run gives: every step's losses, and where the time went.
pub struct Trained {
    /// Each step's losses (`Session::loss_names`).
    pub losses: Vec<Vec<f32>>,
    /// What the losses are.
    pub names: &'static [&'static str],
    /// Seconds building the model and its recorded steps, and the first step (pipelines are made then).
    pub setup_s: f64,
    /// Seconds of the other steps, each step's losses read back before the next step.
    pub steps_s: f64,
}

/// Trains `regime` on `data` for `steps` steps from `seed` on `dev`.
pub async fn losses(dev: &Device, regime: &str, data: Data, steps: u32, seed: u64) -> Result<Trained> {
    let t0 = Instant::now();
    let mut s = Session::new(dev, regime, data, steps, seed)?;
    let mut losses = Vec::with_capacity(steps as usize);
    let mut t1 = t0;
    for i in 0..steps {
        s.step(dev)?;
        losses.push(s.losses(dev).await?);
        if i == 0 {
            t1 = Instant::now();
        }
    }
    Ok(Trained { losses, names: s.loss_names(), setup_s: (t1 - t0).as_secs_f64(), steps_s: t1.elapsed().as_secs_f64() })
}

/// The device the page trains on: the browser's WebGPU, or tigel's CPU engine (`cpu`).
pub async fn device(backend: &str) -> Result<Device> {
    let choice: BackendChoice = backend.parse()?;
    Device::select_async(choice, None).await
}

/// The page's training report: `{regime, data, steps, seed, backend, device, loss_names, losses,
/// first_loss, last_loss, seconds, setup_s, steps_per_s, ok}`; `ok` is false with an `error` when
/// anything failed.
pub async fn run(regime: &str, data: &str, steps: u32, seed: u64, backend: &str) -> Value {
    let mut v = json!({ "regime": regime, "data": data, "steps": steps, "seed": seed, "backend": backend });
    let result = async {
        let data = Data::parse(data).map_err(|e| tigel::Error::invalid("data", e))?;
        let dev = device(backend).await?;
        v["device"] = json!(dev.note());
        losses(&dev, regime, data, steps, seed).await
    }
    .await;
    match result {
        Ok(t) => {
            v["loss_names"] = json!(t.names);
            v["first_loss"] = json!(t.losses.first());
            v["last_loss"] = json!(t.losses.last());
            v["seconds"] = json!(t.setup_s + t.steps_s);
            v["setup_s"] = json!(t.setup_s);
            // The steady state: the steps after the first.
            v["steps_per_s"] = json!(steps.saturating_sub(1) as f64 / t.steps_s);
            let finite = t.losses.iter().flatten().all(|l| l.is_finite());
            v["ok"] = json!(finite && !t.losses.is_empty());
            if !finite {
                v["error"] = json!("a loss is not finite");
            }
            v["losses"] = json!(t.losses);
        }
        Err(e) => {
            v["ok"] = json!(false);
            v["error"] = json!(e.to_string());
        }
    }
    v
}
