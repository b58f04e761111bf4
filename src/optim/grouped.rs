//! The optimizer's grouped updates: `SLOTS` tensors per dispatch (more in the wide kernels) where the device binds enough
//! buffers (`ops::optim_multi`), and Muon's matrices all together (`optim::muon`).

use super::{Optimizer, OptimizerKind, Rule, State};
use crate::device::Device;
use crate::error::Result;
use crate::ops::optim::AdamConfig;
use crate::ops::optim_multi as multi;
use crate::tensor::Tensor;

impl Optimizer {
    /// Adam's settings for `p`: Muon's AdamW tensors take no decay on gains and offsets.
    pub(super) fn adam_config(&self, c: &AdamConfig, p: &Tensor) -> AdamConfig {
        let no_decay = matches!(self.kind, OptimizerKind::Muon(_)) && p.shape.len() < 2;
        AdamConfig { weight_decay: if no_decay { 0.0 } else { c.weight_decay }, ..*c }
    }

    /// Muon's update of every Muon matrix at once (a no-op without Muon matrices).
    pub(super) fn update_muon(&self, dev: &Device, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        let Some(muon) = &self.muon else { return Ok(()) };
        let (mut p, mut g, mut m) = (Vec::new(), Vec::new(), Vec::new());
        for (i, st) in self.state.iter().enumerate() {
            if let State::Muon(mom) = st {
                p.push(params[i]);
                g.push(grads[i]);
                m.push(mom);
            }
        }
        muon.update(dev, &p, &g, &m, &self.step, &self.clip)
    }

    /// The updates, `SLOTS` tensors per dispatch (Adam's `adam_per_dispatch`): SGD's in order, Adam's in
    /// groups of one weight decay,
    /// Muon's matrices all together. Every tensor's update reads only its own state, so grouping
    /// changes no number.
    pub(super) fn update_multi(&self, dev: &Device, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        let n = crate::kernels::optim::SLOTS;
        match &self.rule {
            Rule::Sgd(c) => {
                for ((p, g), st) in params.chunks(n).zip(grads.chunks(n)).zip(self.state.chunks(n)) {
                    let moms: Vec<&Tensor> = st
                        .iter()
                        .filter_map(|s| match s {
                            State::Sgd(m) => m.as_ref(),
                            _ => None,
                        })
                        .collect();
                    multi::sgd_multi(dev, &self.schedule, c, p, g, &moms, &self.step, &self.clip)?
                }
            }
            Rule::Adam(c) => {
                let mut groups: Vec<(AdamConfig, Vec<usize>)> = Vec::new();
                self.update_muon(dev, params, grads)?;
                for (i, (p, st)) in params.iter().zip(&self.state).enumerate() {
                    match st {
                        State::Muon(_) => {}
                        State::Adam { .. } => {
                            let ci = self.adam_config(c, p);
                            match groups.iter_mut().find(|(g, _)| g.weight_decay == ci.weight_decay) {
                                Some((_, idx)) => idx.push(i),
                                None => groups.push((ci, vec![i])),
                            }
                        }
                        State::Sgd(_) => unreachable!("state is made from the rule"),
                    }
                }
                let n = multi::adam_per_dispatch(dev);
                for (ci, idx) in &groups {
                    for chunk in idx.chunks(n) {
                        let p: Vec<&Tensor> = chunk.iter().map(|&i| params[i]).collect();
                        let g: Vec<&Tensor> = chunk.iter().map(|&i| grads[i]).collect();
                        let (ms, vs): (Vec<&Tensor>, Vec<&Tensor>) = chunk
                            .iter()
                            .filter_map(|&i| match &self.state[i] {
                                State::Adam { m, v } => Some((m, v)),
                                _ => None,
                            })
                            .unzip();
                        multi::adam_multi(dev, &self.schedule, ci, &p, &g, &ms, &vs, &self.step, &self.clip)?
                    }
                }
            }
        }
        Ok(())
    }
}
