//! Layers: functions that add parameters and nodes to a graph.
//!
//! A layer owns its parameter tensors (so checkpoints and optimizers can name them) and builds its part
//! of the graph in `forward`. Initialisation draws from the Philox generator, so a seed fixes a model.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::elementwise::Unary;
use crate::ops::matmul::MatmulOpts;
use crate::ops::{layout, rng};
use crate::tensor::Tensor;

/// A named trainable tensor.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
}

/// y = x·W + b, with W stored [in, out].
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Param,
    pub b: Option<Param>,
}

impl Linear {
    /// W ~ U(-1/√in, 1/√in) and b = 0: the scale keeps activations of order one through a stack.
    pub fn new(
        dev: &Device,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        rng: &mut rng::RngState,
    ) -> Result<Linear> {
        if fan_in == 0 || fan_out == 0 {
            return Err(Error::invalid("linear", format!("{name}: sizes must be positive, got {fan_in} -> {fan_out}")));
        }
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = rng.uniform(dev, &[fan_in, fan_out], -bound, bound)?;
        let b = if bias { Some(layout::fill(dev, &[fan_out], 0.0)?) } else { None };
        Ok(Linear {
            w: Param { name: format!("{name}.weight"), tensor: w },
            b: b.map(|t| Param { name: format!("{name}.bias"), tensor: t }),
        })
    }

    /// `x` is [..., in]: a rank-2 batch or a rank-3 batch of sequences.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let y = match g.shape(x).len() {
            2 => g.matmul(x, w, MatmulOpts::default())?,
            _ => {
                // Fold leading axes into rows: one [rows, in] x [in, out] product.
                let s = g.shape(x).to_vec();
                let rows: usize = s[..s.len() - 1].iter().product();
                let x2 = g.reshape(x, &[rows, s[s.len() - 1]])?;
                let y2 = g.matmul(x2, w, MatmulOpts::default())?;
                let mut out = s.clone();
                *out.last_mut().unwrap() = self.w.tensor.shape[1];
                g.reshape(y2, &out)?
            }
        };
        match &self.b {
            Some(b) => {
                let b = g.param(&b.tensor);
                g.add(y, b)
            }
            None => Ok(y),
        }
    }

    pub fn params(&self) -> Vec<Param> {
        std::iter::once(self.w.clone()).chain(self.b.clone()).collect()
    }
}

/// Activation functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
}

impl Activation {
    pub fn forward(self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        match self {
            Activation::Relu => g.unary(Unary::Relu, x),
            Activation::LeakyRelu(a) => g.unary_with(Unary::LeakyRelu, x, a),
            Activation::Gelu => g.unary(Unary::Gelu, x),
            Activation::Silu => g.unary(Unary::Silu, x),
            Activation::Tanh => g.unary(Unary::Tanh, x),
            Activation::Sigmoid => g.unary(Unary::Sigmoid, x),
        }
    }
}
