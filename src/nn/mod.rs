//! Layers with named parameters, shared by every model.
//!
//! A layer owns its parameter tensors under the names checkpoints use, and builds its part of the graph
//! in `forward(&self, g, x)`. Random initialisation draws from a Philox stream (`RngState`) in the order
//! layers are built, so a seed fixes a model. One file per layer family: `linear`, `embedding`, `conv`
//! (Conv2d, ConvTranspose2d), `norm` (LayerNorm, GroupNorm, BatchNorm), `init` (the initialisers).

pub mod conv;
pub mod embedding;
pub mod init;
pub mod linear;
pub mod norm;

pub use conv::{Conv2d, ConvTranspose2d};
pub use embedding::Embedding;
pub use init::Init;
pub use linear::Linear;
pub use norm::{BatchNorm, BnMode, GroupNorm, LayerNorm};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::ops::chnorm::FusedAct;
use crate::ops::elementwise::Unary;
use crate::tensor::Tensor;

/// A named trainable tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// The name checkpoints and optimizer state use.
    pub name: String,
    /// The values.
    pub tensor: Tensor,
}

/// Activation functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// x for x > 0, else α·x.
    LeakyRelu(f32),
    /// GELU (tanh approximation).
    Gelu,
    /// x·σ(x).
    Silu,
    /// tanh(x).
    Tanh,
    /// σ(x).
    Sigmoid,
}

impl Activation {
    /// The activation applied to every element of `x`.
    pub fn forward(self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let a = self.fused();
        g.unary_with(a.op, x, a.alpha)
    }

    /// The activation as a unary op with its parameter, as a norm fuses it (`GroupNorm::forward_act`).
    pub fn fused(self) -> FusedAct {
        // Ops without a parameter keep `Graph::unary`'s default.
        let (op, alpha) = match self {
            Activation::Relu => (Unary::Relu, 0.01),
            Activation::LeakyRelu(a) => (Unary::LeakyRelu, a),
            Activation::Gelu => (Unary::Gelu, 0.01),
            Activation::Silu => (Unary::Silu, 0.01),
            Activation::Tanh => (Unary::Tanh, 0.01),
            Activation::Sigmoid => (Unary::Sigmoid, 0.01),
        };
        FusedAct { op, alpha }
    }
}
