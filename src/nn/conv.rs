//! Conv2d and ConvTranspose2d over NCHW activations, with an optional per-channel bias.

use crate::device::Device;
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::nn::{Init, Param};
use crate::ops::conv::Conv2d as ConvOpts;
use crate::ops::rng::RngState;

/// Adds a per-channel bias, if any, to NCHW `x`: [C] is reshaped to [C, 1, 1], [C, 1, 1] is used as it is
/// (both layouts exist in checkpoints).
fn add_bias(g: &mut Graph, x: NodeId, b: Option<&Param>) -> Result<NodeId> {
    let Some(b) = b else { return Ok(x) };
    let shape = b.tensor.shape.clone();
    let b = g.param(&b.tensor);
    let b = if shape.len() == 1 { g.reshape(b, &[shape[0], 1, 1])? } else { b };
    g.add(x, b)
}

/// The parts both convolutions share: a zero bias on request, and the kernel then the bias as parameters.
macro_rules! kernel_and_bias {
    ($layer:ident) => {
        impl $layer {
            /// The same with a zero bias named `name` of `shape` ([Cout] or [Cout, 1, 1]).
            pub fn with_bias(
                mut self,
                dev: &Device,
                rng: &mut RngState,
                name: impl Into<String>,
                shape: &[usize],
            ) -> Result<Self> {
                self.b = Some(Init::Const(0.0).param(dev, rng, name, shape)?);
                Ok(self)
            }

            /// The kernel, then the bias.
            pub fn params(&self) -> Vec<Param> {
                std::iter::once(self.w.clone()).chain(self.b.clone()).collect()
            }

            /// The same, mutable (to swap in other weights).
            pub fn params_mut(&mut self) -> Vec<&mut Param> {
                std::iter::once(&mut self.w).chain(self.b.as_mut()).collect()
            }
        }
    };
}
kernel_and_bias!(Conv2d);
kernel_and_bias!(ConvTranspose2d);

/// A convolution: weight [Cout, Cin, k, k], x [B, Cin, H, W] → [B, Cout, H', W'].
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// The kernel [Cout, Cin, k, k].
    pub w: Param,
    /// The bias, [Cout] or [Cout, 1, 1], if any.
    pub b: Option<Param>,
    /// Stride and padding.
    pub opts: ConvOpts,
}

impl Conv2d {
    /// A `k`×`k` convolution from `cin` to `cout` channels, its kernel named `name` and filled by `init`.
    pub fn new(
        dev: &Device,
        rng: &mut RngState,
        name: impl Into<String>,
        [cout, cin, k]: [usize; 3],
        opts: ConvOpts,
        init: Init,
    ) -> Result<Conv2d> {
        Ok(Conv2d { w: init.param(dev, rng, name, &[cout, cin, k, k])?, b: None, opts })
    }

    /// conv(x, W) (+ b).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let y = g.conv2d(x, w, self.opts)?;
        add_bias(g, y, self.b.as_ref())
    }
}

/// A transposed convolution (the adjoint of `Conv2d`): weight [Cin, Cout, k, k]; with k 4, stride 2 and
/// padding 1 it doubles H and W.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    /// The kernel [Cin, Cout, k, k].
    pub w: Param,
    /// The bias, [Cout] or [Cout, 1, 1], if any.
    pub b: Option<Param>,
    /// Stride and padding of the convolution this is the adjoint of.
    pub opts: ConvOpts,
}

impl ConvTranspose2d {
    /// A `k`×`k` transposed convolution from `cin` to `cout` channels, its kernel named `name`.
    pub fn new(
        dev: &Device,
        rng: &mut RngState,
        name: impl Into<String>,
        [cin, cout, k]: [usize; 3],
        opts: ConvOpts,
        init: Init,
    ) -> Result<ConvTranspose2d> {
        Ok(ConvTranspose2d { w: init.param(dev, rng, name, &[cin, cout, k, k])?, b: None, opts })
    }

    /// convᵀ(x, W) (+ b).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let y = g.conv_transpose2d(x, w, self.opts, 0)?;
        add_bias(g, y, self.b.as_ref())
    }
}
