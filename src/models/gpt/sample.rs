//! Sampling from the GPT: text from a prompt, one byte at a time.

use super::Gpt;
use crate::data::text::VOCAB;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::tensor::{DType, Tensor};

/// The most bytes one call of [`Sampler::generate`] draws (1 GiB, kept in memory twice).
pub const MAX_TOKENS: u64 = 1 << 30;

/// Generates text: the last `context` bytes in, the next byte's distribution out, one byte at a time.
pub struct Sampler {
    plan: Plan,
    ids: Tensor,
    logits: NodeId,
    context: usize,
}

/// How to pick each next byte.
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    /// Bytes to generate.
    pub tokens: usize,
    /// Logits are divided by it; 0 picks the most likely byte.
    pub temperature: f32,
    /// Keep only the k most likely bytes (0: all).
    pub top_k: usize,
    /// Seed of the draws (the same seed and prompt give the same text).
    pub seed: u64,
}

impl Sampler {
    /// Plans the model's forward pass over one window of `context` bytes.
    pub fn new(dev: &Device, model: &Gpt) -> Result<Sampler> {
        let t = model.cfg.context;
        let ids = Tensor::empty(dev, &[1, t], DType::U32)?;
        let mut g = Graph::new();
        let i = g.input(&ids);
        let logits = model.forward(&mut g, i, None)?;
        let plan = Plan::build(dev, &g, &[logits], |_| Ok(()))?;
        Ok(Sampler { plan, ids, logits, context: t })
    }

    /// Continues `prompt` (cut to its last `context` bytes; an empty prompt starts from a newline) by
    /// `s.tokens` bytes, calling `emit` with each as it is drawn.
    pub fn generate(
        &self,
        dev: &Device,
        prompt: &[u8],
        s: SampleSettings,
        mut emit: impl FnMut(u8),
    ) -> Result<Vec<u8>> {
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return Err(Error::invalid("sample", format!("--temperature must be >= 0, got {}", s.temperature)));
        }
        // The bytes drawn are kept (and returned): refuse more than memory could hold before drawing any.
        if s.tokens as u64 > MAX_TOKENS {
            return Err(Error::invalid("sample", format!("--tokens {} is over the {MAX_TOKENS} supported", s.tokens)));
        }
        let mut text: Vec<u8> = if prompt.is_empty() { b"\n".to_vec() } else { prompt.to_vec() };
        let mut out = Vec::new();
        let t = self.context;
        for i in 0..s.tokens {
            let window = &text[text.len().saturating_sub(t)..];
            // Positions after the window hold zeros; causal attention keeps them from the last real one.
            let mut ids = vec![0u32; t];
            for (d, &b) in ids.iter_mut().zip(window) {
                *d = b as u32;
            }
            dev.write(&self.ids.buf, &ids)?;
            self.plan.run(dev)?;
            let all = self.plan.read(dev, self.logits)?.wait()?;
            let row = &bytemuck::cast_slice::<u32, f32>(&all)[(window.len() - 1) * VOCAB..][..VOCAB];
            let u = crate::host::philox::uniform_at(
                crate::host::philox::split64(s.seed),
                crate::host::philox::split64(i as u64),
                0,
            );
            let byte = pick(row, s.temperature, s.top_k, u);
            emit(byte);
            out.push(byte);
            text.push(byte);
        }
        Ok(out)
    }
}

/// Draws from softmax(logits / temperature) restricted to the top k, by inverting the CDF at `u`.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, u: f32) -> u8 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if temperature == 0.0 {
        return order[0] as u8;
    }
    let k = if top_k == 0 { logits.len() } else { top_k.min(logits.len()) };
    let top = &order[..k];
    let m = logits[top[0]] as f64;
    let w: Vec<f64> = top.iter().map(|&i| ((logits[i] as f64 - m) / temperature as f64).exp()).collect();
    let z: f64 = w.iter().sum();
    let mut acc = 0.0;
    let target = u as f64 * z;
    for (&i, &wi) in top.iter().zip(&w) {
        acc += wi;
        if target < acc {
            return i as u8;
        }
    }
    top[k - 1] as u8
}
