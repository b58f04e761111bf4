//! Samples as the page shows them, drawn by tigel's own samplers on the CPU engine (in wasm) from a
//! checkpoint of the session: a browser reads the GPU only asynchronously, and the samplers read as
//! they go. The checkpoint is the one `Session::checkpoint` makes for saving, so what the page shows is
//! what `tigel sample` would draw from the saved file.

use serde_json::{json, Value};
use tigel::checkpoint::Checkpoint;
use tigel::data::mixture::Mixture;
use tigel::diffusion::{SampleSettings, Sampler as DiffusionSampler, SamplerKind};
use tigel::models::{ddpm, gan, gpt};
use tigel::{Device, Error, Result};

/// Points drawn for a 2-D scatter.
pub const POINTS: usize = 500;
/// Images per class (or in all, for an unconditional model) in a grid.
pub const PER_CLASS: usize = 4;

/// Samples of the model `ck` holds: `{"kind": "text", "text"}` (the GPT continuing `prompt` by `tokens`
/// bytes), `{"kind": "points", "points": [x, y, ...], "modes": [[x, y], ...]}` or `{"kind": "images",
/// "n", "c", "h", "w", "pixels": [...] in [-1, 1], "labels"}`.
pub fn sample(ck: &Checkpoint, prompt: &str, tokens: usize, seed: u64) -> Result<Value> {
    let cpu = Device::cpu();
    match ck.kind.as_str() {
        gpt::KIND => {
            let m = gpt::Gpt::load(&cpu, ck, "the page's sampler")?;
            let s = gpt::SampleSettings { tokens, temperature: 0.8, top_k: 0, seed };
            let out = gpt::Sampler::new(&cpu, &m)?.generate(&cpu, prompt.as_bytes(), s, |_| {})?;
            Ok(json!({ "kind": "text", "text": String::from_utf8_lossy(&out) }))
        }
        gan::KIND => {
            let m = gan::Gan::load(&cpu, ck, "the page's sampler", true)?;
            let n = if m.cfg.is_image() { PER_CLASS * PER_CLASS } else { POINTS };
            let x = gan::Sampler::new(&cpu, &m.cfg, &m.g, n)?.sample(&cpu, n, seed)?;
            Ok(shaped(&m.cfg.data_shape, x, None))
        }
        ddpm::KIND => {
            let m = ddpm::Diffusion::load(&cpu, ck, "the page's sampler")?;
            let sampler = DiffusionSampler::new(&cpu, &m)?;
            let image = m.cfg.sample_shape.len() == 3;
            let classes = m.cfg.num_classes;
            let settings = |label: Option<u32>| SampleSettings {
                sampler: SamplerKind::ddim(25),
                label,
                guidance: if label.is_some() { 2.0 } else { 1.0 },
                seed,
                clip: if image { 1.0 } else { 0.0 },
                keep_at: vec![],
            };
            if classes == 0 {
                let n = if image { PER_CLASS * PER_CLASS } else { POINTS };
                let x = sampler.sample(&cpu, n, n, &settings(None))?.x;
                return Ok(shaped(&m.cfg.sample_shape, x, None));
            }
            let (mut x, mut labels) = (Vec::new(), Vec::new());
            for c in 0..classes as u32 {
                x.extend(sampler.sample(&cpu, PER_CLASS, PER_CLASS, &settings(Some(c)))?.x);
                labels.extend([c; PER_CLASS]);
            }
            Ok(shaped(&m.cfg.sample_shape, x, Some(labels)))
        }
        k => Err(Error::invalid("sample", format!("a `{k}` model: the page samples gpt, gan and diffusion"))),
    }
}

/// Points with ring8's modes, or images.
fn shaped(shape: &[usize], x: Vec<f32>, labels: Option<Vec<u32>>) -> Value {
    if let [c, h, w] = shape {
        let n = x.len() / (c * h * w);
        return json!({ "kind": "images", "n": n, "c": c, "h": h, "w": w, "pixels": x, "labels": labels });
    }
    json!({ "kind": "points", "points": x, "modes": Mixture::Ring8.modes() })
}
