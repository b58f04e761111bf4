//! Initialisers: how a layer fills a fresh parameter tensor.
//!
//! Random initialisers draw from a Philox stream (`RngState`) in the order layers are built, so a seed
//! fixes a model; constant fills draw nothing, so adding a bias never shifts the weights after it.

use crate::device::Device;
use crate::error::Result;
use crate::nn::Param;
use crate::ops::{layout, rng::RngState};

/// How to fill a fresh parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f32),
    /// U(-bound, bound).
    Uniform(f32),
    /// Every value the same (0 for biases and shifts, 1 for norm scales); draws no random numbers.
    Const(f32),
}

impl Init {
    /// N(0, 1/fan_in): unit-variance outputs for unit-variance inputs (LeCun).
    pub fn lecun(fan_in: usize) -> Init {
        Init::Normal(1.0 / (fan_in as f32).sqrt())
    }

    /// N(0, 2/fan_in): unit-variance outputs after a ReLU (He).
    pub fn he(fan_in: usize) -> Init {
        Init::Normal((2.0 / fan_in as f32).sqrt())
    }

    /// A tensor of `shape` filled this way; random draws advance `rng`.
    pub fn tensor(self, dev: &Device, rng: &mut RngState, shape: &[usize]) -> Result<crate::tensor::Tensor> {
        match self {
            Init::Normal(std) => rng.normal(dev, shape, 0.0, std),
            Init::Uniform(bound) => rng.uniform(dev, shape, -bound, bound),
            Init::Const(v) => layout::fill(dev, shape, v),
        }
    }

    /// A parameter named `name` of `shape` filled this way.
    pub fn param(self, dev: &Device, rng: &mut RngState, name: impl Into<String>, shape: &[usize]) -> Result<Param> {
        Ok(Param { name: name.into(), tensor: self.tensor(dev, rng, shape)? })
    }
}
