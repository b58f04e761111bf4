//! Evaluating the GPT: bits per character over held-out text.

use super::{Gpt, BITS_PER_NAT};
use crate::data::text::Corpus;
use crate::device::Device;
use crate::error::Result;
use crate::graph::{Graph, NodeId, Plan};
use crate::tensor::{DType, Tensor};

/// Bits per character of a model over a byte range: non-overlapping windows of `context` bytes, each
/// predicting its next bytes, so every byte after the first is scored once.
pub struct Evaluator {
    plan: Plan,
    ids: Tensor,
    targets: Tensor,
    ce: NodeId,
    batch: usize,
    context: usize,
}

impl Evaluator {
    /// Plans the model's forward pass over `batch` windows at a time.
    pub fn new(dev: &Device, model: &Gpt, batch: usize) -> Result<Evaluator> {
        let t = model.cfg.context;
        let ids = Tensor::empty(dev, &[batch, t], DType::U32)?;
        let targets = Tensor::empty(dev, &[batch * t], DType::U32)?;
        let mut g = Graph::new();
        let i = g.input(&ids);
        let tg = g.input(&targets);
        let logits = model.forward(&mut g, i, None)?;
        let ce = g.cross_entropy(logits, tg)?;
        let plan = Plan::build(dev, &g, &[ce], |_| Ok(()))?;
        Ok(Evaluator { plan, ids, targets, ce, batch, context: t })
    }

    /// Mean bits per character over `range` of `corpus`, or over its first `max_windows` windows.
    pub fn bits_per_char(
        &self,
        dev: &Device,
        corpus: &Corpus,
        range: (usize, usize),
        max_windows: Option<usize>,
    ) -> Result<f64> {
        let mut windows = corpus.windows(range, self.context);
        if let Some(m) = max_windows {
            windows.truncate(m.max(1));
        }
        let t = self.context;
        let (mut nats, mut count) = (0.0f64, 0usize);
        for chunk in windows.chunks(self.batch) {
            let mut ids = vec![0u32; self.batch * t];
            let mut tg = vec![0u32; self.batch * t];
            for (r, &(o, n)) in chunk.iter().enumerate() {
                for j in 0..n {
                    ids[r * t + j] = corpus.bytes[o + j] as u32;
                    tg[r * t + j] = corpus.bytes[o + j + 1] as u32;
                }
            }
            dev.write(&self.ids.buf, &ids)?;
            dev.write(&self.targets.buf, &tg)?;
            self.plan.run(dev)?;
            let ce = bytemuck::cast_slice::<u32, f32>(&self.plan.read(dev, self.ce)?.wait()?).to_vec();
            for (r, &(_, n)) in chunk.iter().enumerate() {
                nats += ce[r * t..r * t + n].iter().map(|&v| v as f64).sum::<f64>();
                count += n;
            }
        }
        Ok(nats / count.max(1) as f64 * BITS_PER_NAT)
    }
}
