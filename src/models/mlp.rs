//! A multi-layer perceptron: Linear → activation → ... → Linear.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Linear, Param};
use crate::ops::rng::RngState;

/// The shape of an MLP.
#[derive(Clone, Debug)]
pub struct MlpConfig {
    /// Layer widths, input first, output last: [2, 64, 64, 2] is two hidden layers of 64.
    pub sizes: Vec<usize>,
    /// After every layer but the last.
    pub activation: Activation,
}

/// An MLP: `layer{i}.weight` / `layer{i}.bias` per layer.
pub struct Mlp {
    /// The layers, input first.
    pub layers: Vec<Linear>,
    /// After every layer but the last.
    pub activation: Activation,
}

impl Mlp {
    /// Weights drawn from the Philox stream of `seed`.
    pub fn new(dev: &Device, cfg: &MlpConfig, seed: u64) -> Result<Mlp> {
        if cfg.sizes.len() < 2 {
            return Err(Error::invalid(
                "mlp",
                format!("sizes {:?}: give at least an input and an output width", cfg.sizes),
            ));
        }
        let mut rng = RngState::new(seed);
        let layers = cfg
            .sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(dev, &format!("layer{i}"), w[0], w[1], true, &mut rng))
            .collect::<Result<_>>()?;
        Ok(Mlp { layers, activation: cfg.activation })
    }

    /// `x` [batch, in] → [batch, out]; the activation follows every layer but the last, fused into
    /// the layer's product with its bias (`Linear::forward_act`).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let act = (i + 1 < self.layers.len()).then_some(self.activation);
            h = layer.forward_act(g, h, act)?;
        }
        Ok(h)
    }

    /// Every parameter, layer by layer.
    pub fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
}
