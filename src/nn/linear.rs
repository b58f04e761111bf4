//! Linear: y = x·W + b, with W stored [in, out]; with f32 operands the bias and a following
//! activation run in the product's kernel (`Graph::matmul_bias_act`).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Init, Param};
use crate::ops::matmul::MatmulOpts;
use crate::ops::rng::RngState;
use crate::tensor::DType;

/// y = x·W + b, with W stored [in, out] and an optional bias [out].
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight [in, out].
    pub w: Param,
    /// The bias [out], if any.
    pub b: Option<Param>,
}

impl Linear {
    /// W ~ U(-1/√in, 1/√in) and b = 0, named `{name}.weight` / `{name}.bias`: the scale keeps activations
    /// of order one through a stack.
    pub fn new(
        dev: &Device,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        rng: &mut RngState,
    ) -> Result<Linear> {
        let b = bias.then(|| format!("{name}.bias"));
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        Linear::named(dev, rng, format!("{name}.weight"), b, [fan_in, fan_out], Init::Uniform(bound))
    }

    /// A weight named `w_name` filled by `init`, and a zero bias named `b_name` when given (the names
    /// are the checkpoint's).
    pub fn named(
        dev: &Device,
        rng: &mut RngState,
        w_name: String,
        b_name: Option<String>,
        [fan_in, fan_out]: [usize; 2],
        init: Init,
    ) -> Result<Linear> {
        if fan_in == 0 || fan_out == 0 {
            return Err(Error::invalid(
                "linear",
                format!("{w_name}: sizes must be positive, got {fan_in} -> {fan_out}"),
            ));
        }
        let w = init.param(dev, rng, w_name, &[fan_in, fan_out])?;
        let b = b_name.map(|n| Init::Const(0.0).param(dev, rng, n, &[fan_out])).transpose()?;
        Ok(Linear { w, b })
    }

    /// `x` is [..., in]: a rank-2 batch or a rank-3 batch of sequences. At `Precision::Mixed` the
    /// product reads `x` and the weight as f16 (`Graph::operand`).
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward_act(g, x, None)
    }

    /// act(x·W + b): with a bias and f32 operands (the graph's f32 precision) one fused node, the bias
    /// and the activation applied by the product's kernel as it stores (`Graph::matmul_bias_act`; a GELU
    /// or SiLU runs as its own op after it); otherwise the product, the bias add and the activation as
    /// separate ops. `x` is read as `forward` reads it.
    pub fn forward_act(&self, g: &mut Graph, x: NodeId, act: Option<Activation>) -> Result<NodeId> {
        let x = g.operand(x)?;
        self.forward_keep_input_act(g, x, act)
    }

    /// `forward` with `x` read as it is, whatever the graph's precision (the weight still follows it):
    /// for an input that is kept in f32 for another backward anyway, where an f16 copy would add memory.
    pub fn forward_keep_input(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward_keep_input_act(g, x, None)
    }

    fn forward_keep_input_act(&self, g: &mut Graph, x: NodeId, act: Option<Activation>) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let w = g.operand(w)?;
        let f32s = g.node(x).dtype == DType::F32 && g.node(w).dtype == DType::F32;
        let y = match &self.b {
            Some(b) if f32s => {
                let b = g.param(&b.tensor);
                let fused = act.map(Activation::fused);
                return self.rows(g, x, |g, x2| g.matmul_bias_act(x2, w, b, fused, MatmulOpts::default()));
            }
            Some(b) => {
                let y = self.rows(g, x, |g, x2| g.matmul(x2, w, MatmulOpts::default()))?;
                let b = g.param(&b.tensor);
                g.add(y, b)?
            }
            None => self.rows(g, x, |g, x2| g.matmul(x2, w, MatmulOpts::default()))?,
        };
        act.map_or(Ok(y), |a| a.forward(g, y))
    }

    /// x·W and the bias node apart, for a consumer that adds the bias itself in its own kernel
    /// (`Graph::bce_logits_mean`); `x` is read as `forward` reads it.
    pub fn forward_split(&self, g: &mut Graph, x: NodeId) -> Result<(NodeId, Option<NodeId>)> {
        let x = g.operand(x)?;
        let y = self.product(g, x)?;
        Ok((y, self.b.as_ref().map(|b| g.param(&b.tensor))))
    }

    /// x·W for `x` [..., in].
    fn product(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.param(&self.w.tensor);
        let w = g.operand(w)?;
        self.rows(g, x, |g, x2| g.matmul(x2, w, MatmulOpts::default()))
    }

    /// `f` applied to `x` [..., in] as one [rows, in] matrix (leading axes folded into rows, one
    /// product), its [rows, out] result given x's leading axes back.
    fn rows(&self, g: &mut Graph, x: NodeId, f: impl FnOnce(&mut Graph, NodeId) -> Result<NodeId>) -> Result<NodeId> {
        if g.shape(x).len() == 2 {
            return f(g, x);
        }
        let s = g.shape(x).to_vec();
        let rows: usize = s[..s.len() - 1].iter().product();
        let x2 = g.reshape(x, &[rows, s[s.len() - 1]])?;
        let y2 = f(g, x2)?;
        let mut out = s;
        *out.last_mut().unwrap() = self.w.tensor.shape[1];
        g.reshape(y2, &out)
    }

    /// The weight, then the bias.
    pub fn params(&self) -> Vec<Param> {
        std::iter::once(self.w.clone()).chain(self.b.clone()).collect()
    }

    /// The same, mutable (to swap in other weights).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.w).chain(self.b.as_mut()).collect()
    }
}
