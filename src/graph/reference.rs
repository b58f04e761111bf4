//! An f64 reference interpreter of the graph IR, written plainly for clarity, not speed.
//!
//! Gradient checks differentiate it by central finite differences (in f64 the step can be small and
//! the difference exact to ~1e-9) and compare against the engine's analytic gradients, which run the
//! backward rules through the real kernels. It also serves as an independent oracle for the forward ops.

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::ops::elementwise::{broadcast, Binary, Unary};

/// A host tensor in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Multi-index of flat index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

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

/// f'(x): exact for the piecewise-linear ops, else a central difference of the f64 forward (used only
/// for `UnaryBackward` nodes; h = 1e-6 gives ~1e-9 accuracy on these smooth functions).
fn unary_deriv_f64(op: Unary, x: f64, alpha: f64) -> f64 {
    match op {
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

fn broadcast_map(a: &Value, b: &Value, f: impl Fn(f64, f64) -> f64) -> Result<Value> {
    let (shape, sa, sb) = broadcast("reference", &a.shape, &b.shape)?;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let ia: usize = idx.iter().zip(&sa).map(|(x, s)| x * s).sum();
            let ib: usize = idx.iter().zip(&sb).map(|(x, s)| x * s).sum();
            f(a.data[ia], b.data[ib])
        })
        .collect();
    Ok(Value { shape, data })
}

/// Reduces `axis` with `f` over the axis values.
fn reduce_axis(x: &Value, axis: usize, keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Value {
    let outer: usize = x.shape[..axis].iter().product();
    let len = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let vals: Vec<f64> = (0..len).map(|a| x.data[(o * len + a) * inner + i]).collect();
            data.push(f(&vals));
        }
    }
    let mut shape = x.shape.clone();
    if keepdim {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Value { shape, data }
}

fn rows(x: &Value, f: impl Fn(&[f64]) -> Vec<f64>) -> Value {
    let len = *x.shape.last().unwrap();
    let data = x.data.chunks(len.max(1)).flat_map(f).collect();
    Value { shape: x.shape.clone(), data }
}

fn matmul_f64(a: &Value, b: &Value, ta: bool, tb: bool, alpha: f64) -> Value {
    let split = |v: &Value| -> (usize, usize, usize) {
        match v.shape[..] {
            [r, c] => (1, r, c),
            [z, r, c] => (z, r, c),
            _ => unreachable!("checked by the graph"),
        }
    };
    let (za, ra, ca) = split(a);
    let (zb, rb, cb) = split(b);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let n = if tb { rb } else { cb };
    let batch = za.max(zb);
    let mut data = vec![0.0; batch * m * n];
    for z in 0..batch {
        let ao = if za == 1 { 0 } else { z * ra * ca };
        let bo = if zb == 1 { 0 } else { z * rb * cb };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a.data[ao + p * ca + i] } else { a.data[ao + i * ca + p] };
                    let bv = if tb { b.data[bo + j * cb + p] } else { b.data[bo + p * cb + j] };
                    s += av * bv;
                }
                data[(z * m + i) * n + j] = alpha * s;
            }
        }
    }
    let shape = if a.shape.len() == 2 && b.shape.len() == 2 { vec![m, n] } else { vec![batch, m, n] };
    Value { shape, data }
}

/// Evaluates the nodes `keep` depends on. Leaves (inputs, parameters, constants) take their values
/// from `leaves` (f64 host copies).
pub fn eval(g: &Graph, leaves: &HashMap<NodeId, Value>, keep: &[NodeId]) -> Result<HashMap<NodeId, Value>> {
    let order = super::exec::schedule(g, keep);
    let mut v: HashMap<NodeId, Value> = HashMap::new();
    for id in order {
        let node = g.node(id);
        let x = |k: usize| &v[&node.inputs[k]];
        let out = match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Const(_) => leaves
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::invalid("reference", format!("no value given for leaf node {}", id.0)))?,
            Op::Fill(c) => Value { shape: node.shape.clone(), data: vec![*c as f64; node.shape.iter().product()] },
            Op::Unary(op, a) => Value {
                shape: node.shape.clone(),
                data: x(0).data.iter().map(|&t| unary_f64(*op, t, *a as f64)).collect(),
            },
            Op::UnaryBackward(op, a) => Value {
                shape: node.shape.clone(),
                data: x(0)
                    .data
                    .iter()
                    .zip(&x(1).data)
                    .map(|(&t, &dy)| dy * unary_deriv_f64(*op, t, *a as f64))
                    .collect(),
            },
            Op::Binary(op) => broadcast_map(x(0), x(1), |a, b| binary_f64(*op, a, b))?,
            Op::Scalar { op, s, reverse } => Value {
                shape: node.shape.clone(),
                data: x(0)
                    .data
                    .iter()
                    .map(|&t| if *reverse { binary_f64(*op, *s as f64, t) } else { binary_f64(*op, t, *s as f64) })
                    .collect(),
            },
            Op::Matmul(o) => matmul_f64(x(0), x(1), o.trans_a, o.trans_b, o.alpha as f64),
            Op::Sum { axis, keepdim } => reduce_axis(x(0), *axis, *keepdim, |r| r.iter().sum()),
            Op::Mean { axis, keepdim } => {
                reduce_axis(x(0), *axis, *keepdim, |r| r.iter().sum::<f64>() / r.len() as f64)
            }
            Op::SumTo(target) => {
                let src = x(0);
                let mut data = vec![0.0; target.iter().product()];
                let lead = src.shape.len() - target.len();
                let ts = strides(target);
                for (i, &val) in src.data.iter().enumerate() {
                    let idx = unravel(i, &src.shape);
                    let o: usize =
                        (0..target.len()).map(|d| if target[d] == 1 { 0 } else { idx[d + lead] * ts[d] }).sum();
                    data[o] += val;
                }
                Value { shape: target.clone(), data }
            }
            Op::BroadcastTo(target) => {
                let zeros = Value { shape: target.clone(), data: vec![0.0; target.iter().product()] };
                broadcast_map(x(0), &zeros, |a, _| a)?
            }
            Op::Softmax => rows(x(0), |r| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = r.iter().map(|t| (t - m).exp()).sum();
                r.iter().map(|t| (t - m).exp() / s).collect()
            }),
            Op::LogSoftmax => rows(x(0), |r| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + r.iter().map(|t| (t - m).exp()).sum::<f64>().ln();
                r.iter().map(|t| t - lse).collect()
            }),
            Op::Reshape(s) => Value { shape: s.clone(), data: x(0).data.clone() },
            Op::Transpose(perm) => {
                let src = x(0);
                let ss = strides(&src.shape);
                let n = src.data.len();
                let data = (0..n)
                    .map(|i| {
                        let idx = unravel(i, &node.shape);
                        src.data[(0..perm.len()).map(|d| idx[d] * ss[perm[d]]).sum::<usize>()]
                    })
                    .collect();
                Value { shape: node.shape.clone(), data }
            }
            Op::Slice { axis, start, .. } => {
                let src = x(0);
                let ss = strides(&src.shape);
                let n: usize = node.shape.iter().product();
                let data = (0..n)
                    .map(|i| {
                        let mut idx = unravel(i, &node.shape);
                        idx[*axis] += start;
                        src.data[idx.iter().zip(&ss).map(|(a, b)| a * b).sum::<usize>()]
                    })
                    .collect();
                Value { shape: node.shape.clone(), data }
            }
            Op::Pad { shape, axis, start } => {
                let src = x(0);
                let os = strides(shape);
                let mut data = vec![0.0; shape.iter().product()];
                for (i, &val) in src.data.iter().enumerate() {
                    let mut idx = unravel(i, &src.shape);
                    idx[*axis] += start;
                    data[idx.iter().zip(&os).map(|(a, b)| a * b).sum::<usize>()] = val;
                }
                Value { shape: shape.clone(), data }
            }
            Op::Concat(axis) => {
                let os = strides(&node.shape);
                let mut data = vec![0.0; node.shape.iter().product()];
                let mut off = 0;
                for k in 0..node.inputs.len() {
                    let src = x(k);
                    for (i, &val) in src.data.iter().enumerate() {
                        let mut idx = unravel(i, &src.shape);
                        idx[*axis] += off;
                        data[idx.iter().zip(&os).map(|(a, b)| a * b).sum::<usize>()] = val;
                    }
                    off += src.shape[*axis];
                }
                Value { shape: node.shape.clone(), data }
            }
            Op::CrossEntropy => {
                let (lg, t) = (x(0), x(1));
                let cols = lg.shape[1];
                let data = lg
                    .data
                    .chunks(cols)
                    .zip(&t.data)
                    .map(|(r, &c)| {
                        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        m + r.iter().map(|z| (z - m).exp()).sum::<f64>().ln() - r[c as usize]
                    })
                    .collect();
                Value { shape: node.shape.clone(), data }
            }
            Op::CrossEntropyBackward => {
                let (lg, t, g) = (x(0), x(1), x(3));
                let cols = lg.shape[1];
                let mut data = Vec::with_capacity(lg.data.len());
                for (n, r) in lg.data.chunks(cols).enumerate() {
                    let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = r.iter().map(|z| (z - m).exp()).sum();
                    for (v, z) in r.iter().enumerate() {
                        let onehot = (v == t.data[n] as usize) as u8 as f64;
                        data.push(((z - m).exp() / s - onehot) * g.data[n]);
                    }
                }
                Value { shape: node.shape.clone(), data }
            }
            Op::BceLogits => Value {
                shape: node.shape.clone(),
                data: x(0)
                    .data
                    .iter()
                    .zip(&x(1).data)
                    .map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p())
                    .collect(),
            },
            Op::BceLogitsBackward => Value {
                shape: node.shape.clone(),
                data: x(0)
                    .data
                    .iter()
                    .zip(&x(1).data)
                    .zip(&x(2).data)
                    .map(|((&z, &t), &g)| (1.0 / (1.0 + (-z).exp()) - t) * g)
                    .collect(),
            },
            Op::LayerNorm(eps) => {
                let (xv, gamma, beta) = (x(0), x(1), x(2));
                let c = gamma.data.len();
                let mut data = Vec::with_capacity(xv.data.len());
                for r in xv.data.chunks(c) {
                    let mean = r.iter().sum::<f64>() / c as f64;
                    let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
                    let rstd = 1.0 / (var + *eps as f64).sqrt();
                    data.extend(r.iter().enumerate().map(|(j, v)| (v - mean) * rstd * gamma.data[j] + beta.data[j]));
                }
                Value { shape: node.shape.clone(), data }
            }
            Op::Attention { heads, causal } => attention_f64(x(0), *heads, *causal),
            Op::Embedding => {
                let (ids, table) = (x(0), x(1));
                let c = table.shape[1];
                let data = ids.data.iter().flat_map(|&i| table.data[i as usize * c..][..c].iter().copied()).collect();
                Value { shape: node.shape.clone(), data }
            }
            Op::EmbeddingBackward(vocab) => {
                let (ids, dout) = (x(0), x(1));
                let c = node.shape[1];
                let mut data = vec![0.0; vocab * c];
                for (n, &i) in ids.data.iter().enumerate() {
                    for j in 0..c {
                        data[i as usize * c + j] += dout.data[n * c + j];
                    }
                }
                Value { shape: node.shape.clone(), data }
            }
            Op::Conv2d(o) => {
                let (xv, w) = (x(0), x(1));
                let mut y = vec![0.0; node.shape.iter().product()];
                conv_f64(&xv.shape, &w.shape, &node.shape, *o, |xi, wi, yi| y[yi] += xv.data[xi] * w.data[wi]);
                Value { shape: node.shape.clone(), data: y }
            }
            Op::Conv2dBackwardInput(o, _) => {
                let (dy, w) = (x(0), x(1));
                let mut dx = vec![0.0; node.shape.iter().product()];
                conv_f64(&node.shape, &w.shape, &dy.shape, *o, |xi, wi, yi| dx[xi] += dy.data[yi] * w.data[wi]);
                Value { shape: node.shape.clone(), data: dx }
            }
            Op::Conv2dBackwardWeight(o, _) => {
                let (xv, dy) = (x(0), x(1));
                let mut dw = vec![0.0; node.shape.iter().product()];
                conv_f64(&xv.shape, &node.shape, &dy.shape, *o, |xi, wi, yi| dw[wi] += xv.data[xi] * dy.data[yi]);
                Value { shape: node.shape.clone(), data: dw }
            }
            Op::GroupNorm { groups, eps } => {
                let (xv, gamma, beta) = (x(0), x(1), x(2));
                let c = gamma.data.len();
                let hw = xv.data.len() / (xv.shape[0] * c);
                let len = c / groups * hw;
                let mut data = Vec::with_capacity(xv.data.len());
                for (k, r) in xv.data.chunks(len).enumerate() {
                    let mean = r.iter().sum::<f64>() / len as f64;
                    let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
                    let rstd = 1.0 / (var + *eps as f64).sqrt();
                    let c0 = (k % groups) * (c / groups);
                    data.extend(r.iter().enumerate().map(|(j, v)| {
                        let ch = c0 + j / hw;
                        (v - mean) * rstd * gamma.data[ch] + beta.data[ch]
                    }));
                }
                Value { shape: node.shape.clone(), data }
            }
            Op::LayerNormBackward | Op::AttentionBackward { .. } | Op::Output(_) | Op::GroupNormBackward(_) => {
                return Err(Error::invalid(
                    "reference",
                    format!("{} has no f64 reference: gradient checks differentiate the forward", node.op.name()),
                ))
            }
            Op::Dropout(..) | Op::DropoutBackward(..) => {
                return Err(Error::invalid("reference", "dropout has no f64 reference (its mask lives on the device)"))
            }
        };
        v.insert(id, out);
    }
    Ok(v)
}

/// Multi-head self-attention of a packed qkv [B, T, 3·C], unfused: scores, mask, softmax, weighted sum.
fn attention_f64(qkv: &Value, heads: usize, causal: bool) -> Value {
    let (b, t, c3) = (qkv.shape[0], qkv.shape[1], qkv.shape[2]);
    let c = c3 / 3;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let at =
        |bi: usize, ti: usize, part: usize, h: usize, k: usize| qkv.data[(bi * t + ti) * c3 + part * c + h * d + k];
    let mut data = vec![0.0; b * t * c];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..t {
                let n = if causal { i + 1 } else { t };
                let s: Vec<f64> = (0..n)
                    .map(|j| (0..d).map(|k| at(bi, i, 0, h, k) * at(bi, j, 1, h, k)).sum::<f64>() * scale)
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for k in 0..d {
                    data[(bi * t + i) * c + h * d + k] = (0..n).map(|j| e[j] / z * at(bi, j, 2, h, k)).sum();
                }
            }
        }
    }
    Value { shape: vec![b, t, c], data }
}

/// Visits every (x, w, y) flat-index triple of a convolution y = conv2d(x, w): each multiply-add, once.
/// The forward and both adjoints are the same loop with a different accumulation.
fn conv_f64(
    xs: &[usize],
    ws: &[usize],
    ys: &[usize],
    o: crate::ops::conv::Conv2d,
    mut f: impl FnMut(usize, usize, usize),
) {
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
