//! Sampling the GAN: G in eval mode over z from the host's Philox stream of a seed.

use super::{GanConfig, Net};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::host::philox::{normal_at, split64};
use crate::nn::BnMode;
use crate::tensor::{DType, Tensor};

/// Generates samples in the data's own scale: G in eval mode, z from the host's Philox stream of a seed.
pub struct Sampler {
    plan: Plan,
    z: Tensor,
    out: NodeId,
    batch: usize,
    cfg: GanConfig,
}

impl Sampler {
    /// Plans `generator` in eval mode over batches of `batch` z rows.
    pub fn new(dev: &Device, cfg: &GanConfig, generator: &Net, batch: usize) -> Result<Sampler> {
        let z = Tensor::empty(dev, &[batch, cfg.z_dim], DType::F32)?;
        let mut g = Graph::new();
        let zi = g.input(&z);
        let out = generator.forward(&mut g, zi, BnMode::Eval)?;
        let plan = Plan::build(dev, &g, &[out], |_| Ok(()))?;
        Ok(Sampler { plan, z, out, batch, cfg: cfg.clone() })
    }

    /// `n` samples ([n, ...] row-major), the same for the same seed.
    pub fn sample(&self, dev: &Device, n: usize, seed: u64) -> Result<Vec<f32>> {
        if n == 0 {
            return Err(Error::invalid("sample gan", "--n must be a positive integer, got 0"));
        }
        let (zd, len) = (self.cfg.z_dim, self.cfg.sample_len());
        let what = || format!("--n {n} samples of {len} values");
        crate::models::check_values("sample gan", what, crate::models::product(&[n, len]))?;
        let key = split64(seed ^ 0x5a3b_1e00);
        let mut out = Vec::with_capacity(n * len);
        let mut done = 0;
        while done < n {
            let z: Vec<f32> =
                (0..self.batch * zd).map(|i| normal_at(key, split64((done * zd + i) as u64), 0)).collect();
            dev.write(&self.z.buf, &z)?;
            self.plan.run(dev)?;
            let v = self.plan.value(self.out).to_f32(dev)?;
            let take = (n - done).min(self.batch);
            out.extend(v[..take * len].iter().map(|x| x * self.cfg.scale));
            done += take;
        }
        Ok(out)
    }
}
