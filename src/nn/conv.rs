//! Conv2d and ConvTranspose2d over NCHW activations, with an optional per-channel bias and activation
//! that their kernel applies as it writes the output (`Graph::conv2d_bias_act`).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Init, Param};
use crate::ops::chnorm::FusedAct;
use crate::ops::conv::Conv2d as ConvOpts;
use crate::ops::rng::RngState;

/// The bias node, if any: [C] or [C, 1, 1] as it is stored (both layouts exist in checkpoints; the fused
/// epilogue reads either).
fn bias_node(g: &mut Graph, b: Option<&Param>) -> Option<NodeId> {
    b.map(|b| g.param(&b.tensor))
}

/// The activation as a convolution's epilogue fuses it, or None where it cannot (`fusable`).
pub fn epilogue_act(a: Activation) -> Option<FusedAct> {
    let f = a.fused();
    crate::ops::conv_fused::fusable(f.op, f.alpha).then_some(f)
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

    /// conv(x, W) (+ b), the bias added by the convolution's kernel.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward_act(g, x, None)
    }

    /// act(conv(x, W) (+ b)) in one dispatch; `act` from `epilogue_act`.
    pub fn forward_act(&self, g: &mut Graph, x: NodeId, act: Option<FusedAct>) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let b = bias_node(g, self.b.as_ref());
        g.conv2d_bias_act(x, w, b, act, self.opts)
    }

    /// conv(x, W) + t + r in one dispatch, for a convolution without a bias of its own: t one offset per
    /// (image, output channel) ([B, Cout]), r a residual of the output's shape; each optional.
    pub fn forward_add(&self, g: &mut Graph, x: NodeId, t: Option<NodeId>, r: Option<NodeId>) -> Result<NodeId> {
        if self.b.is_some() {
            return Err(Error::invalid(
                "conv2d_add",
                format!("{}: a convolution with a bias of its own takes no per-sample offset", self.w.name),
            ));
        }
        let w = g.param(&self.w.tensor);
        g.conv2d_add(x, w, t, r, self.opts)
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

    /// convᵀ(x, W) (+ b), the bias added by the convolution's kernel.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward_act(g, x, None)
    }

    /// act(convᵀ(x, W) (+ b)) in one dispatch; `act` from `epilogue_act`.
    pub fn forward_act(&self, g: &mut Graph, x: NodeId, act: Option<FusedAct>) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let b = bias_node(g, self.b.as_ref());
        g.conv_transpose2d_bias_act(x, w, b, act, self.opts, 0)
    }
}
