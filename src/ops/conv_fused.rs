//! Convolutions with a fused epilogue, y = act(conv + b[channel]): the bias and the activation are
//! applied by the convolution kernel as it writes each result (shaders/conv.wgsl), so a layer costs one
//! dispatch. Their backward starts with `conv_act_bias_backward`, which turns dy into the
//! pre-activation's gradient and the bias gradient in one pass (shaders/conv_epilogue.wgsl); the two
//! adjoints of the plain convolution then take it from there.
//!
//! Here too the launchers of conv2d_fwd and conv2d_bwd_input, which the plain convolutions (ops::conv)
//! run with `Epi::NONE`.
//!
//! The activation's derivative is taken from the output y (the pre-activation is never stored), which
//! only some activations allow: `fusable` names them.

use super::chnorm::FusedAct;
use super::conv::{self, rank4_f32, Conv2d, ConvShape};
use super::elementwise::Unary;
use super::u32_of;
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::conv::{ConvParams, EpilogueParams, CONV2D_BWD_INPUT, CONV2D_FWD, CONV_ACT_BIAS_BWD};
use crate::kernels::groups_1d;
use crate::tensor::{DType, Tensor};

/// What a convolution kernel applies to each result before writing it: y = act(conv + b) + r, the bias
/// one value per output channel [C] or per (image, channel) [N, C] (any shape of that many values), the
/// activation a unary op and its parameter, the residual r of y's shape (conv2d only); each optional.
#[derive(Clone, Copy, Debug)]
pub struct Epi<'a> {
    /// One value per output channel, or per image and output channel.
    pub bias: Option<&'a Tensor>,
    /// A `fusable` activation and its parameter.
    pub act: Option<FusedAct>,
    /// Added to each result last.
    pub residual: Option<&'a Tensor>,
}

impl Epi<'_> {
    /// Nothing: the plain convolution.
    pub const NONE: Epi<'static> = Epi { bias: None, act: None, residual: None };

    /// Sets the params for an output of `channels` channels (a bias of other than `channels` values is
    /// one per image, as `check` admits).
    pub(super) fn set(&self, p: &mut ConvParams, channels: usize) {
        p.bias = self.bias.map_or(0, |b| if b.numel() == channels { 1 } else { 2 });
        p.residual = self.residual.is_some() as u32;
        if let Some(a) = self.act {
            p.act = a.op as u32 + 1;
            p.alpha = a.alpha;
        }
    }

    /// Checks the bias against the output [n, channels, ..] (`y`), the activation and the residual.
    fn check(&self, op: &'static str, y: &[usize]) -> Result<()> {
        let (n, channels) = (y[0], y[1]);
        if let Some(b) = self.bias {
            let k = b.numel();
            if b.dtype != DType::F32 || (k != channels && k != n * channels) || b.buf.words() < k {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the bias {:?} ({}) must hold {channels} f32 values, one per channel, or {}, one per image and channel",
                        b.shape,
                        b.dtype.name(),
                        n * channels
                    ),
                ));
            }
        }
        if let Some(r) = self.residual {
            if r.dtype != DType::F32 || r.shape != y {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: r.shape.clone(),
                    rhs: y.to_vec(),
                    hint: " (the residual must be f32 of the output's shape)".into(),
                });
            }
        }
        check_act(op, self.act)
    }
}

/// Whether the epilogue can fuse `op`: its derivative must follow from its output (relu, leaky relu
/// with a positive slope, tanh, sigmoid).
pub fn fusable(op: Unary, alpha: f32) -> bool {
    matches!(op, Unary::Relu | Unary::Tanh | Unary::Sigmoid) || (op == Unary::LeakyRelu && alpha > 0.0)
}

fn check_act(op: &'static str, act: Option<FusedAct>) -> Result<()> {
    match act {
        Some(a) if !fusable(a.op, a.alpha) => {
            Err(Error::invalid(op, format!("{:?} (parameter {}) cannot be fused into a convolution", a.op, a.alpha)))
        }
        _ => Ok(()),
    }
}

/// act(conv2d(x, w) + b) + r: x [N, Cin, H, W], w [Cout, Cin, K, K], b [Cout] or [N, Cout] (any shape of
/// that many values), r of the output's shape.
pub fn conv2d_bias_act(dev: &Device, x: &Tensor, w: &Tensor, epi: Epi, opts: Conv2d) -> Result<Tensor> {
    const OP: &str = "conv2d_bias_act";
    let ctx = format!("x {:?}, w {:?}", x.shape, w.shape);
    rank4_f32(OP, "x", x, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    let s = conv::conv2d_shape(&x.shape, &w.shape, opts)?;
    epi.check(OP, &s.y_shape())?;
    run_fwd(dev, OP, &s, x, w, epi)
}

/// act(conv_transpose2d(x, w) + b): x [N, Cin, H, W], w [Cin, Cout, K, K], b [Cout] or [N, Cout].
pub fn conv_transpose2d_bias_act(
    dev: &Device,
    x: &Tensor,
    w: &Tensor,
    epi: Epi,
    opts: Conv2d,
    output_padding: usize,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d_bias_act";
    let ctx = format!("x {:?}, w {:?}", x.shape, w.shape);
    rank4_f32(OP, "x", x, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    let s = conv::conv_transpose2d_shape(&x.shape, &w.shape, opts, output_padding)?;
    if epi.residual.is_some() {
        return Err(Error::invalid(OP, "a transposed convolution's epilogue takes no residual"));
    }
    epi.check(OP, &s.x_shape())?;
    run_bwd_input(dev, OP, &s, x, w, epi)
}

/// The backward of the epilogue from its output y [N, C, H, W] and dy (y's shape): the
/// pre-activation's gradient dz = dy · act'(y's pre-image) and the bias gradient db [C] = Σ dz over
/// (N, H, W), in one dispatch.
pub fn conv_act_bias_backward(
    dev: &Device,
    y: &Tensor,
    dy: &Tensor,
    act: Option<FusedAct>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "conv_act_bias_backward";
    let ctx = format!("y {:?}, dy {:?}", y.shape, dy.shape);
    rank4_f32(OP, "y", y, &ctx)?;
    rank4_f32(OP, "dy", dy, &ctx)?;
    if y.shape != dy.shape {
        return Err(Error::ShapeMismatch { op: OP, lhs: y.shape.clone(), rhs: dy.shape.clone(), hint: String::new() });
    }
    check_act(OP, act)?;
    let (n, c, hw) = (y.shape[0], y.shape[1], y.shape[2] * y.shape[3]);
    let dz = Tensor::empty(dev, &y.shape, DType::F32)?;
    let db = Tensor::empty(dev, &[c], DType::F32)?;
    let (code, alpha) = act.map_or((0, 0.0), |a| (a.op as u32 + 1, a.alpha));
    let p = EpilogueParams {
        n: u32_of(OP, "batch", n)?,
        c: u32_of(OP, "channels", c)?,
        hw: u32_of(OP, "pixels per plane", hw)?,
        act: code,
        alpha,
        ..Default::default()
    };
    let g = groups_1d(c, 1, dev.max_groups_per_dim());
    dev.dispatch(Dispatch::new(&CONV_ACT_BIAS_BWD, &p, &[&y.buf, &dy.buf, &dz.buf, &db.buf], g))?;
    Ok((dz, db))
}

/// y [n, co, ho, wo] = conv(x [n, ci, h, w], w [co, ci, k, k]) for a checked shape, through `epi`.
pub(super) fn run_fwd(
    dev: &Device,
    op: &'static str,
    s: &ConvShape,
    x: &Tensor,
    w: &Tensor,
    epi: Epi,
) -> Result<Tensor> {
    let y = Tensor::empty(dev, &s.y_shape(), DType::F32)?;
    let mut p = s.params(op)?;
    epi.set(&mut p, s.co);
    let g = conv::grid(dev, op, s, &mut p, s.co, s.n * s.ho * s.wo, 1)?;
    let (b, r) = (epi.bias.unwrap_or(w), epi.residual.unwrap_or(w));
    dev.dispatch(Dispatch::new(&CONV2D_FWD, &p, &[&x.buf, &w.buf, &b.buf, &r.buf, &y.buf], g))?;
    Ok(y)
}

/// dx [n, ci, h, w] from dy [n, co, ho, wo] and w [co, ci, k, k] for a checked shape, through `epi`.
pub(super) fn run_bwd_input(
    dev: &Device,
    op: &'static str,
    s: &ConvShape,
    dy: &Tensor,
    w: &Tensor,
    epi: Epi,
) -> Result<Tensor> {
    let dx = Tensor::empty(dev, &s.x_shape(), DType::F32)?;
    let mut p = s.params(op)?;
    epi.set(&mut p, s.ci);
    // One z per stride phase; columns: the pixels of the largest phase.
    let phases = s.stride.saturating_mul(s.stride);
    let cols = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
    let g = conv::grid(dev, op, s, &mut p, s.ci, cols, phases)?;
    let b = epi.bias.unwrap_or(w);
    dev.dispatch(Dispatch::new(&CONV2D_BWD_INPUT, &p, &[&dy.buf, &w.buf, &b.buf, &dx.buf], g))?;
    Ok(dx)
}
