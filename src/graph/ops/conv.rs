//! 2-D convolution (NCHW) and its two adjoints, in x (also the transposed convolution) and in w.
//!
//! The three ops are bilinear and adjoint to one another
//! (⟨dy, conv(x, w)⟩ = ⟨bwd_input(dy, w), x⟩ = ⟨bwd_weight(x, dy), w⟩), so each one's gradients are
//! the other two, and gradients of gradients exist to any order.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::chnorm::FusedAct;
use crate::ops::conv::{self as eager, Conv2d};
use crate::ops::conv_fused::{self as fused, Epi};
use crate::tensor::DType;

impl Graph {
    /// x [N, Cin, H, W] * w [Cout, Cin, K, K] → [N, Cout, Ho, Wo], Ho = ⌊(H + 2p − K)/s⌋ + 1.
    pub fn conv2d(&mut self, x: NodeId, w: NodeId, opts: Conv2d) -> Result<NodeId> {
        self.f32_in("conv2d", x)?;
        self.f32_in("conv2d", w)?;
        let s = eager::conv2d_shape(self.shape(x), self.shape(w), opts)?;
        Ok(self.push(Conv(opts), &[x, w], s.y_shape(), DType::F32))
    }

    /// Transposed convolution with PyTorch's semantics and weight layout: x [N, Cin, H, W],
    /// w [Cin, Cout, K, K] → [N, Cout, (H−1)s − 2p + K + output_padding, ...].
    pub fn conv_transpose2d(&mut self, x: NodeId, w: NodeId, opts: Conv2d, output_padding: usize) -> Result<NodeId> {
        self.f32_in("conv_transpose2d", x)?;
        self.f32_in("conv_transpose2d", w)?;
        // The shape of the convolution this is the adjoint of: its input is our output.
        let s = eager::conv_transpose2d_shape(self.shape(x), self.shape(w), opts, output_padding)?;
        self.conv2d_backward_input(x, w, (s.h, s.w), opts)
    }

    /// act(conv2d(x, w) + b) in one dispatch: b [Cout] or [Cout, 1, 1], `act` one that
    /// `ops::conv_fused::fusable` takes. Without either it is `conv2d`.
    pub fn conv2d_bias_act(
        &mut self,
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        act: Option<FusedAct>,
        opts: Conv2d,
    ) -> Result<NodeId> {
        if b.is_none() && act.is_none() {
            return self.conv2d(x, w, opts);
        }
        self.f32_in("conv2d_bias_act", x)?;
        self.f32_in("conv2d_bias_act", w)?;
        let s = eager::conv2d_shape(self.shape(x), self.shape(w), opts)?;
        self.fused_node(ConvBiasAct::new(opts, act, None), x, w, b, None, s.y_shape())
    }

    /// conv2d(x, w) + b + r in one dispatch: b one value per (image, output channel) ([N, Cout], or any
    /// shape of that many values: a per-sample offset such as a time embedding), r of the output's shape
    /// (a residual sum); each optional. Without either it is `conv2d`.
    pub fn conv2d_add(
        &mut self,
        x: NodeId,
        w: NodeId,
        sample_bias: Option<NodeId>,
        residual: Option<NodeId>,
        opts: Conv2d,
    ) -> Result<NodeId> {
        if sample_bias.is_none() && residual.is_none() {
            return self.conv2d(x, w, opts);
        }
        self.f32_in("conv2d_add", x)?;
        self.f32_in("conv2d_add", w)?;
        let s = eager::conv2d_shape(self.shape(x), self.shape(w), opts)?;
        let def = ConvBiasAct { sample_bias: sample_bias.is_some(), ..ConvBiasAct::new(opts, None, None) };
        self.fused_node(def, x, w, sample_bias, residual, s.y_shape())
    }

    /// act(conv_transpose2d(x, w) + b) in one dispatch (see `conv2d_bias_act`).
    pub fn conv_transpose2d_bias_act(
        &mut self,
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        act: Option<FusedAct>,
        opts: Conv2d,
        output_padding: usize,
    ) -> Result<NodeId> {
        if b.is_none() && act.is_none() {
            return self.conv_transpose2d(x, w, opts, output_padding);
        }
        self.f32_in("conv_transpose2d_bias_act", x)?;
        self.f32_in("conv_transpose2d_bias_act", w)?;
        let s = eager::conv_transpose2d_shape(self.shape(x), self.shape(w), opts, output_padding)?;
        self.fused_node(ConvBiasAct::new(opts, act, Some(output_padding)), x, w, b, None, s.x_shape())
    }

    /// Checks the epilogue of `def` (a bias of one value per channel, or per image and channel for a
    /// `sample_bias`; a fusable activation; a residual of the output's shape) and pushes it.
    fn fused_node(
        &mut self,
        mut def: ConvBiasAct,
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        r: Option<NodeId>,
        shape: Vec<usize>,
    ) -> Result<NodeId> {
        let op = def.name();
        def.bias = b.is_some();
        def.residual = r.is_some();
        if let Some(a) = def.act {
            if !fused::fusable(a.op, a.alpha) {
                return Err(Error::invalid(op, format!("{:?} cannot be fused into a convolution", a.op)));
            }
        }
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            self.f32_in(op, b)?;
            let (want, per) = if def.sample_bias {
                (shape[0] * shape[1], "image and output channel")
            } else {
                (shape[1], "output channel")
            };
            if self.shape(b).iter().product::<usize>() != want {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape(b).to_vec(),
                    rhs: vec![want],
                    hint: format!(" (the bias holds one value per {per})"),
                });
            }
            inputs.push(b);
        }
        if let Some(r) = r {
            self.f32_in(op, r)?;
            if self.shape(r) != &shape[..] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape(r).to_vec(),
                    rhs: shape,
                    hint: " (the residual has the output's shape)".into(),
                });
            }
            inputs.push(r);
        }
        Ok(self.push(def, &inputs, shape, DType::F32))
    }

    fn conv2d_backward_input(&mut self, dy: NodeId, w: NodeId, hw: (usize, usize), opts: Conv2d) -> Result<NodeId> {
        let (ds, ws) = (self.shape(dy).to_vec(), self.shape(w).to_vec());
        if ds.len() != 4 || ws.len() != 4 || ds[1] != ws[0] {
            return Err(Error::ShapeMismatch {
                op: "conv2d_backward_input",
                lhs: ds,
                rhs: ws,
                hint: " (dy [N, Cout, Ho, Wo] and w [Cout, Cin, K, K])".into(),
            });
        }
        let x = [ds[0], ws[1], hw.0, hw.1];
        let s = eager::conv2d_shape(&x, &ws, opts)?;
        if s.y_shape() != ds {
            return Err(Error::ShapeMismatch {
                op: "conv2d_backward_input",
                lhs: ds,
                rhs: s.y_shape(),
                hint: format!(" (an input of {}x{} gives the second)", hw.0, hw.1),
            });
        }
        Ok(self.push(ConvBackwardInput(opts, hw), &[dy, w], x.to_vec(), DType::F32))
    }

    fn conv2d_backward_weight(&mut self, x: NodeId, dy: NodeId, k: usize, opts: Conv2d) -> Result<NodeId> {
        let (xs, ds) = (self.shape(x).to_vec(), self.shape(dy).to_vec());
        let bad = || Error::ShapeMismatch {
            op: "conv2d_backward_weight",
            lhs: xs.clone(),
            rhs: ds.clone(),
            hint: format!(" (x [N, Cin, H, W] and the dy of a {k}x{k} convolution of it)"),
        };
        if xs.len() != 4 || ds.len() != 4 || xs[0] != ds[0] {
            return Err(bad());
        }
        let w = [ds[1], xs[1], k, k];
        let s = eager::conv2d_shape(&xs, &w, opts)?;
        if s.y_shape() != ds {
            return Err(bad());
        }
        Ok(self.push(ConvBackwardWeight(opts, k), &[x, dy], w.to_vec(), DType::F32))
    }
}

/// y = conv2d(x, w): inputs [x, w [Cout, Cin, K, K]].
#[derive(Debug)]
struct Conv(Conv2d);

impl OpDef for Conv {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::conv2d(f.dev, f.x[0], f.x[1], self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, w) = (g.in_node(id, 0), g.in_node(id, 1));
        let (sx, sw) = (g.in_shape(id, 0), g.in_shape(id, 1));
        let gx = g.conv2d_backward_input(gy, w, (sx[2], sx[3]), self.0)?;
        let gw = g.conv2d_backward_weight(x, gy, sw[2], self.0)?;
        Ok(vec![Some(gx), Some(gw)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (xv, w) = (x[0], x[1]);
        let mut y = Value::full(shape, 0.0);
        conv_f64(&xv.shape, &w.shape, shape, self.0, |xi, wi, yi| y.data[yi] += xv.data[xi] * w.data[wi]);
        Ok(y)
    }
}

/// The adjoint of `Conv` in x for an input of spatial size `hw`: inputs [dy, w]. As a forward op it is
/// the transposed convolution.
#[derive(Debug)]
struct ConvBackwardInput(Conv2d, (usize, usize));

impl OpDef for ConvBackwardInput {
    fn name(&self) -> &'static str {
        "conv2d_backward_input"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::conv2d_backward_input(f.dev, f.x[0], f.x[1], self.1, self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (dy, w) = (g.in_node(id, 0), g.in_node(id, 1));
        let k = g.in_shape(id, 1)[2];
        let g_dy = g.conv2d(gy, w, self.0)?;
        let g_w = g.conv2d_backward_weight(gy, dy, k, self.0)?;
        Ok(vec![Some(g_dy), Some(g_w)])
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (dy, w) = (x[0], x[1]);
        let mut dx = Value::full(shape, 0.0);
        conv_f64(shape, &w.shape, &dy.shape, self.0, |xi, wi, yi| dx.data[xi] += dy.data[yi] * w.data[wi]);
        Ok(dx)
    }
}

/// The adjoint of `Conv` in w for a k×k kernel: inputs [x, dy].
#[derive(Debug)]
struct ConvBackwardWeight(Conv2d, usize);

impl OpDef for ConvBackwardWeight {
    fn name(&self) -> &'static str {
        "conv2d_backward_weight"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::conv2d_backward_weight(f.dev, f.x[0], f.x[1], self.1, self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, dy) = (g.in_node(id, 0), g.in_node(id, 1));
        let sx = g.in_shape(id, 0);
        let g_x = g.conv2d_backward_input(dy, gy, (sx[2], sx[3]), self.0)?;
        let g_dy = g.conv2d(x, gy, self.0)?;
        Ok(vec![Some(g_x), Some(g_dy)])
    }
    fn accumulating(&self) -> Option<super::Accumulating> {
        Some(super::Accumulating { def: std::sync::Arc::new(ConvBackwardWeightAcc(self.0, self.1)), in_place: true })
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let (xv, dy) = (x[0], x[1]);
        let mut dw = Value::full(shape, 0.0);
        conv_f64(&xv.shape, shape, &dy.shape, self.0, |xi, wi, yi| dw.data[wi] += xv.data[xi] * dy.data[yi]);
        Ok(dw)
    }
}

/// Inputs [x, dy, r]: r + the weight gradient, added into r's buffer. Autodiff makes it from a
/// `ConvBackwardWeight` whose result is summed with r (a weight used twice), only where nothing else
/// reads r (`Graph::backward`). Not differentiated again.
#[derive(Debug)]
struct ConvBackwardWeightAcc(Conv2d, usize);

impl OpDef for ConvBackwardWeightAcc {
    fn name(&self) -> &'static str {
        "conv2d_backward_weight_acc"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::conv2d_backward_weight_acc(f.dev, f.x[0], f.x[1], self.1, self.0, f.x[2])?)
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let mut dw = ConvBackwardWeight(self.0, self.1).reference(&x[..2], shape)?;
        dw.data.iter_mut().zip(&x[2].data).for_each(|(a, r)| *a += r);
        Ok(dw)
    }
}

/// y = act(conv(x, w) + b) + r, or of the transposed convolution (`transposed`: its output padding):
/// inputs [x, w], then b if `bias`, then r if `residual`. The bias holds one value per channel, or per
/// (image, channel) with `sample_bias`; a sample bias and a residual come without an activation.
#[derive(Debug)]
struct ConvBiasAct {
    opts: Conv2d,
    act: Option<FusedAct>,
    transposed: Option<usize>,
    bias: bool,
    sample_bias: bool,
    residual: bool,
}

impl ConvBiasAct {
    fn new(opts: Conv2d, act: Option<FusedAct>, transposed: Option<usize>) -> ConvBiasAct {
        ConvBiasAct { opts, act, transposed, bias: false, sample_bias: false, residual: false }
    }
}

impl OpDef for ConvBiasAct {
    fn name(&self) -> &'static str {
        match (self.transposed, self.sample_bias || self.residual) {
            (Some(_), _) => "conv_transpose2d_bias_act",
            (None, true) => "conv2d_add",
            (None, false) => "conv2d_bias_act",
        }
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let bias = self.bias.then(|| f.x[2]);
        let residual = self.residual.then(|| f.x[2 + self.bias as usize]);
        let epi = Epi { bias, act: self.act, residual };
        single(match self.transposed {
            Some(op) => fused::conv_transpose2d_bias_act(f.dev, f.x[0], f.x[1], epi, self.opts, op)?,
            None => fused::conv2d_bias_act(f.dev, f.x[0], f.x[1], epi, self.opts)?,
        })
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, w) = (g.in_node(id, 0), g.in_node(id, 1));
        let (sx, sw) = (g.in_shape(id, 0), g.in_shape(id, 1));
        // dz and db in one pass; the plain convolution's adjoints take dz.
        let ys = g.shape(id).to_vec();
        let (dz, db) = match self.act {
            Some(_) => {
                let dz = g.push(ActBiasBackward(self.act), &[id, gy], ys.clone(), DType::F32);
                (dz, self.bias.then(|| g.output(dz, 1, vec![ys[1]])))
            }
            // A bias alone: dz is dy, and db its sum over (N, H, W) (or (H, W) per image), as a
            // broadcast add's backward has it.
            None if self.bias => {
                let to = if self.sample_bias { vec![ys[0], ys[1], 1, 1] } else { vec![ys[1], 1, 1] };
                (gy, Some(g.sum_to(gy, &to)?))
            }
            None => (gy, None),
        };
        let (gx, gw) = match self.transposed {
            Some(_) => (g.conv2d(dz, w, self.opts)?, g.conv2d_backward_weight(dz, x, sw[2], self.opts)?),
            None => (
                g.conv2d_backward_input(dz, w, (sx[2], sx[3]), self.opts)?,
                g.conv2d_backward_weight(x, dz, sw[2], self.opts)?,
            ),
        };
        let mut out = vec![Some(gx), Some(gw)];
        if let Some(db) = db {
            let bs = g.in_shape(id, 2);
            out.push(Some(if g.shape(db) == &bs[..] { db } else { g.reshape(db, &bs)? }));
        }
        if self.residual {
            out.push(Some(gy));
        }
        Ok(out)
    }
    fn reference(&self, x: &[&Value], shape: &[usize]) -> Result<Value> {
        let mut y = match self.transposed {
            Some(_) => ConvBackwardInput(self.opts, (shape[2], shape[3])).reference(&x[..2], shape)?,
            None => Conv(self.opts).reference(&x[..2], shape)?,
        };
        let plane = shape[2] * shape[3];
        let b = self.bias.then(|| x[2]);
        let r = self.residual.then(|| x[2 + self.bias as usize]);
        for (i, v) in y.data.iter_mut().enumerate() {
            if let Some(b) = b {
                *v += b.data[if self.sample_bias { i / plane } else { (i / plane) % shape[1] }];
            }
            if let Some(a) = self.act {
                *v = super::elementwise::unary_f64(a.op, *v, a.alpha as f64);
            }
            if let Some(r) = r {
                *v += r.data[i];
            }
        }
        Ok(y)
    }
}

/// Inputs [y, dy] of a `ConvBiasAct` with an activation and output y: dz = dy · act' (from y), with db [C] = Σ dz over
/// (N, H, W) as its second output. Not differentiated again.
#[derive(Debug)]
struct ActBiasBackward(Option<FusedAct>);

impl OpDef for ActBiasBackward {
    fn name(&self) -> &'static str {
        "conv_act_bias_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (dz, db) = fused::conv_act_bias_backward(f.dev, f.x[0], f.x[1], self.0)?;
        Ok((dz, vec![db]))
    }
}

/// Visits every (x, w, y) flat-index triple of a convolution y = conv2d(x, w): each multiply-add, once.
/// The forward and both adjoints are the same loop with a different accumulation.
fn conv_f64(xs: &[usize], ws: &[usize], ys: &[usize], o: Conv2d, mut f: impl FnMut(usize, usize, usize)) {
    let (n, ci, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, k) = (ws[0], ws[2]);
    let (ho, wo) = (ys[2], ys[3]);
    for b in 0..n {
        for c in 0..co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((b * co + c) * ho + oy) * wo + ox;
                    for i in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * o.stride + ky) as isize - o.padding as isize;
                                let ix = (ox * o.stride + kx) as isize - o.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((b * ci + i) * h + iy as usize) * w + ix as usize;
                                let wi = ((c * ci + i) * k + ky) * k + kx;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}
