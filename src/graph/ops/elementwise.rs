//! Elementwise ops: unary activations (and their backward), binary ops with broadcasting, and ops
//! with a scalar operand.

use super::{map1, map2, single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::{broadcast_map, Value};
use crate::graph::{Graph, NodeId};
use crate::ops::elementwise::{self as ew, broadcast, Binary, Unary};
use crate::tensor::DType;

impl Graph {
    /// `op(x)` elementwise (LeakyRelu with slope 0.01).
    pub fn unary(&mut self, op: Unary, x: NodeId) -> Result<NodeId> {
        self.unary_with(op, x, 0.01)
    }

    /// `op(x)` elementwise, with `alpha` the parameter of the ops that take one (LeakyRelu's slope).
    pub fn unary_with(&mut self, op: Unary, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.f32_in("unary", x)?;
        Ok(self.push(UnaryOp(op, alpha), &[x], self.shape(x).to_vec(), DType::F32))
    }

    /// dx = dy · f'(x), elementwise.
    pub fn unary_backward(&mut self, op: Unary, alpha: f32, x: NodeId, dy: NodeId) -> Result<NodeId> {
        self.same_shape("unary_backward", x, dy)?;
        Ok(self.push(UnaryBackward(op, alpha), &[x, dy], self.shape(x).to_vec(), DType::F32))
    }

    /// `op(a, b)` elementwise, broadcasting as NumPy does.
    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.f32_in("binary", a)?;
        self.f32_in("binary", b)?;
        let (shape, _, _) = broadcast("binary", self.shape(a), self.shape(b))?;
        Ok(self.push(BinaryOp(op), &[a, b], shape, DType::F32))
    }

    /// a + b, broadcasting.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Add, a, b)
    }
    /// a − b, broadcasting.
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Sub, a, b)
    }
    /// a · b, broadcasting.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Mul, a, b)
    }
    /// a / b, broadcasting.
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(Binary::Div, a, b)
    }

    /// `op(x, s)`, or `op(s, x)` when `reverse`.
    pub fn scalar(&mut self, op: Binary, x: NodeId, s: f32, reverse: bool) -> Result<NodeId> {
        self.f32_in("scalar", x)?;
        Ok(self.push(Scalar { op, s, reverse }, &[x], self.shape(x).to_vec(), DType::F32))
    }

    /// x · s.
    pub fn scale(&mut self, x: NodeId, s: f32) -> Result<NodeId> {
        self.scalar(Binary::Mul, x, s, false)
    }
}

/// y = op(x) with the op's parameter alpha.
#[derive(Debug)]
struct UnaryOp(Unary, f32);

impl OpDef for UnaryOp {
    fn name(&self) -> &'static str {
        "unary"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::unary_with(f.dev, self.0, f.x[0], self.1)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        Ok(vec![Some(g.unary_backward(self.0, self.1, g.in_node(id, 0), gy)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(map1(x[0], |t| unary_f64(self.0, t, self.1 as f64)))
    }
}

/// dx = dy · f'(x): inputs [x, dy].
#[derive(Debug)]
struct UnaryBackward(Unary, f32);

impl OpDef for UnaryBackward {
    fn name(&self) -> &'static str {
        "unary_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::unary_backward(f.dev, self.0, f.x[0], f.x[1], self.1)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (x, dy) = (g.in_node(id, 0), g.in_node(id, 1));
        // y = dy * f'(x): linear in dy; in x it needs f''.
        let g_dy = g.unary_backward(self.0, self.1, x, gy)?;
        let g_x = if g.node(x).requires_grad {
            match self.0 {
                Unary::Relu | Unary::LeakyRelu | Unary::Abs | Unary::Neg | Unary::Sign => None,
                Unary::Square => {
                    let t = g.mul(dy, gy)?;
                    Some(g.scale(t, 2.0)?)
                }
                other => {
                    return Err(Error::invalid(
                        "backward",
                        format!("the second derivative of {other:?} is not implemented"),
                    ))
                }
            }
        } else {
            None
        };
        Ok(vec![g_x, Some(g_dy)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(map2(x[0], x[1], |t, dy| dy * unary_deriv_f64(self.0, t, self.1 as f64)))
    }
}

/// y = op(a, b) with broadcasting.
#[derive(Debug)]
struct BinaryOp(Binary);

impl OpDef for BinaryOp {
    fn name(&self) -> &'static str {
        "binary"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::binary(f.dev, self.0, f.x[0], f.x[1])?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (a, b) = (g.in_node(id, 0), g.in_node(id, 1));
        let (sa, sb) = (g.in_shape(id, 0), g.in_shape(id, 1));
        let op = self.0;
        let (ga, gb) = match op {
            Binary::Add => (gy, gy),
            Binary::Sub => (gy, g.scale(gy, -1.0)?),
            Binary::Mul => (g.mul(gy, b)?, g.mul(gy, a)?),
            Binary::Div => {
                let ga = g.div(gy, b)?;
                // d(a/b)/db = -a/b² = -(a/b)/b
                let q = g.div(id, b)?;
                let t = g.mul(gy, q)?;
                (ga, g.scale(t, -1.0)?)
            }
            Binary::Max | Binary::Min => {
                // The gradient goes to the larger (smaller) operand; ties go to `a`.
                let cmp = if op == Binary::Max { Binary::Less } else { Binary::Greater };
                let b_wins = g.binary(cmp, a, b)?;
                let a_wins = g.scalar(Binary::Sub, b_wins, 1.0, true)?;
                (g.mul(gy, a_wins)?, g.mul(gy, b_wins)?)
            }
            Binary::Pow => {
                // d(a^b)/da = b·a^b/a; d(a^b)/db = a^b·ln a (a > 0, as the forward requires).
                let t = g.mul(id, b)?;
                let t = g.div(t, a)?;
                let ga = g.mul(gy, t)?;
                let ln = g.unary(Unary::Log, a)?;
                let t = g.mul(id, ln)?;
                (ga, g.mul(gy, t)?)
            }
            Binary::Greater | Binary::Less | Binary::Equal => return Ok(vec![None, None]),
        };
        Ok(vec![Some(g.sum_to(ga, &sa)?), Some(g.sum_to(gb, &sb)?)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        broadcast_map(x[0], x[1], |a, b| binary_f64(self.0, a, b))
    }
}

/// y = op(x, s), or op(s, x) when `reverse`.
#[derive(Debug)]
struct Scalar {
    op: Binary,
    s: f32,
    reverse: bool,
}

impl OpDef for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(ew::scalar(f.dev, self.op, f.x[0], self.s, self.reverse)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (op, s, xi) = (self.op, self.s, g.in_node(id, 0));
        let gx = match (op, self.reverse) {
            (Binary::Add, _) => gy,
            (Binary::Sub, false) => gy,
            (Binary::Sub, true) => g.scale(gy, -1.0)?,
            (Binary::Mul, _) => g.scale(gy, s)?,
            (Binary::Div, false) => g.scale(gy, 1.0 / s)?,
            (Binary::Div, true) => {
                // d(s/x)/dx = -s/x² = -(s/x)/x
                let q = g.div(id, xi)?;
                let t = g.mul(gy, q)?;
                g.scale(t, -1.0)?
            }
            (Binary::Pow, false) => {
                // d(x^s)/dx = s·x^(s-1)
                let p = g.scalar(Binary::Pow, xi, s - 1.0, false)?;
                let t = g.scale(p, s)?;
                g.mul(gy, t)?
            }
            (Binary::Pow, true) => {
                // d(s^x)/dx = s^x·ln s
                let t = g.scale(id, s.ln())?;
                g.mul(gy, t)?
            }
            (Binary::Max | Binary::Min, _) => {
                let keep_op = if op == Binary::Max { Binary::Less } else { Binary::Greater };
                // x loses where x < s (max) / x > s (min); ties keep the gradient.
                let lose = g.scalar(keep_op, xi, s, false)?;
                let keep = g.scalar(Binary::Sub, lose, 1.0, true)?;
                g.mul(gy, keep)?
            }
            (Binary::Greater | Binary::Less | Binary::Equal, _) => return Ok(vec![None]),
        };
        Ok(vec![Some(gx)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let s = self.s as f64;
        Ok(map1(x[0], |t| if self.reverse { binary_f64(self.op, s, t) } else { binary_f64(self.op, t, s) }))
    }
}

/// The activation `op` in f64 (`alpha` is LeakyRelu's slope): the reference the kernel tests use too.
pub fn unary_f64(op: Unary, x: f64, alpha: f64) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    match op {
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Recip => 1.0 / x,
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Tanh => x.tanh(),
        Unary::Sigmoid => sig(x),
        Unary::Relu => x.max(0.0),
        Unary::Gelu => 0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh()),
        Unary::Silu => x * sig(x),
        Unary::Square => x * x,
        Unary::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Unary::LeakyRelu => {
            if x > 0.0 {
                x
            } else {
                alpha * x
            }
        }
    }
}

fn binary_f64(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => a.max(b),
        Binary::Min => a.min(b),
        Binary::Pow => a.powf(b),
        Binary::Greater => (a > b) as u8 as f64,
        Binary::Less => (a < b) as u8 as f64,
        Binary::Equal => (a == b) as u8 as f64,
    }
}

/// f'(x): exact for the polynomial and piecewise-linear ops, else a central difference of the f64
/// forward (used only for `unary_backward` nodes; h = 1e-6 gives ~1e-9 accuracy on these smooth
/// functions). Exact where a gradient check differentiates it again: a finite difference of a finite
/// difference amplifies rounding to ~1e-4.
fn unary_deriv_f64(op: Unary, x: f64, alpha: f64) -> f64 {
    match op {
        Unary::Square => 2.0 * x,
        Unary::Neg => -1.0,
        Unary::Relu => (x > 0.0) as u8 as f64,
        Unary::LeakyRelu => {
            if x > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        Unary::Abs => unary_f64(Unary::Sign, x, 0.0),
        Unary::Sign => 0.0,
        _ => {
            let h = 1e-6 * x.abs().max(1.0);
            (unary_f64(op, x + h, alpha) - unary_f64(op, x - h, alpha)) / (2.0 * h)
        }
    }
}
