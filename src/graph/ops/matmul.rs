//! Matrix products: plain or batched, either operand stored transposed, scaled by alpha; and the pair
//! of a product's two backward products, joined into one dispatch once autodiff is done; and the fused
//! linear layer act(x·W + b) (`Graph::matmul_bias_act`).

use std::sync::Arc;

use super::elementwise::unary_f64;
use super::{single, Fwd, OpDef, Output, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId, Op};
use crate::ops::chnorm::FusedAct;
use crate::ops::conv_fused::fusable;
use crate::ops::elementwise::{Binary, Unary};
use crate::ops::matmul::{self as eager, matmul_shape, MatmulJob, MatmulOpts};
use crate::ops::matmul_fused as fused;
use crate::tensor::{DType, Tensor};

impl Graph {
    /// α·op(a)·op(b) for rank-2 or batched rank-3 operands (a rank-2 operand is shared by the batch);
    /// either operand may be f16 (`Graph::cast`), the product is f32.
    pub fn matmul(&mut self, a: NodeId, b: NodeId, opts: MatmulOpts) -> Result<NodeId> {
        self.float_in("matmul", a)?;
        self.float_in("matmul", b)?;
        let s = matmul_shape(self.shape(a), self.shape(b), &opts)?;
        Ok(self.push(Matmul(opts), &[a, b], s.out_shape, DType::F32))
    }

    /// Sums a batched matmul gradient over the batch when the operand was a shared rank-2 matrix (or a
    /// batch-1 rank-3 one).
    fn reduce_batch(&mut self, g: NodeId, shape: &[usize]) -> Result<NodeId> {
        if self.shape(g) == shape {
            return Ok(g);
        }
        let s = self.sum(g, 0, false)?;
        self.reshape(s, shape)
    }

    /// The gradients of y = α·op(a)·op(b)'s operands given gy, before any sum over a shared operand's
    /// batch: with A' = op(A), B' = op(B), dA' = α·gy·B'ᵀ and dB' = α·A'ᵀ·gy; a stored-transposed
    /// operand takes the transpose of its gradient. An operand that needs no gradient gets none
    /// (autodiff would drop it), so its product is never made. With `into`, dA is added into that
    /// node's buffer (a `MatmulAcc`: `into` must be a fresh product nothing else reads). The two
    /// products are candidates for one dispatch (`pair_matmuls`). A product with an f16 operand (under
    /// `Precision::Mixed`) reads gy as f16 too (`Graph::operand`: one cast per gradient node, shared by
    /// both products), so its backward products, like its forward, read f16 operands only; a scaled
    /// loss (`optim::LossScaler`) keeps small gradients above f16's underflow.
    pub(crate) fn matmul_grads(
        &mut self,
        a: NodeId,
        b: NodeId,
        o: MatmulOpts,
        gy: NodeId,
        into: Option<NodeId>,
    ) -> Result<[Option<NodeId>; 2]> {
        let half = |g: &Graph, x: NodeId| g.node(x).dtype == DType::F16;
        let gy = if half(self, a) || half(self, b) { self.operand(gy)? } else { gy };
        let opts = |trans_a, trans_b| MatmulOpts { trans_a, trans_b, alpha: o.alpha };
        let (oa, ia) = if o.trans_a { (opts(o.trans_b, true), [b, gy]) } else { (opts(false, !o.trans_b), [gy, b]) };
        let (ob, ib) = if o.trans_b { (opts(true, o.trans_a), [gy, a]) } else { (opts(!o.trans_a, false), [a, gy]) };
        let ga = match (self.node(a).requires_grad, into) {
            (false, _) => None,
            (true, None) => Some(self.matmul(ia[0], ia[1], oa)?),
            (true, Some(r)) => {
                let s = matmul_shape(self.shape(ia[0]), self.shape(ia[1]), &oa)?.out_shape;
                if s != self.shape(r) {
                    return Err(Error::invalid(
                        "matmul",
                        format!("a gradient {s:?} cannot accumulate into {:?}", self.shape(r)),
                    ));
                }
                Some(self.push(MatmulAcc(oa), &[ia[0], ia[1], r], s, DType::F32))
            }
        };
        let gb = if self.node(b).requires_grad { Some(self.matmul(ib[0], ib[1], ob)?) } else { None };
        if let (Some(x), Some(y)) = (ga, gb) {
            self.matmul_pairs.push(PairCandidate { nodes: [x, y], opts: [oa, ob] });
        }
        Ok([ga, gb])
    }

    /// Joins each candidate pair made since node `from` into one `MatmulPair` node (its value the first
    /// product, its second output the second, which the second node then passes on), where the gradients
    /// `roots` need both products (a product nothing needs is never computed) and the second reads only
    /// nodes older than the first. Runs after every gradient sum is folded (a folded product adds into
    /// its term's buffer: the pair keeps that), and the pair is not differentiated again. A pair whose
    /// first product feeds a gated MLP's gate backward alone takes that backward as its epilogue
    /// (`fuse_gate_backward`).
    pub(crate) fn pair_matmuls(&mut self, from: usize, roots: &[NodeId]) {
        let cands = std::mem::take(&mut self.matmul_pairs);
        let mut need = vec![false; self.nodes.len()];
        roots.iter().for_each(|r| need[r.0] = true);
        for i in (from..self.nodes.len()).rev() {
            if need[i] {
                for inp in &self.nodes[i].inputs {
                    need[inp.0] = true;
                }
            }
        }
        for c in cands {
            let [x, y] = c.nodes;
            let is_product = |n: &super::super::Node| {
                matches!(&n.op, Op::Def(d) if (d.name() == "matmul" && n.inputs.len() == 2)
                    || (d.name() == "matmul_acc" && n.inputs.len() == 3))
            };
            let (nx, ny) = (&self.nodes[x.0], &self.nodes[y.0]);
            if x.0 < from || x >= y || !need[x.0] || !need[y.0] || !is_product(nx) || !is_product(ny) {
                continue;
            }
            if ny.inputs.iter().any(|i| *i >= x) {
                continue;
            }
            let acc = [nx.inputs.len() == 3, ny.inputs.len() == 3];
            let mut inputs = vec![nx.inputs[0], nx.inputs[1], ny.inputs[0], ny.inputs[1]];
            inputs.extend(nx.inputs.get(2).copied());
            inputs.extend(ny.inputs.get(2).copied());
            if self.fuse_gate_backward((x, y), c.opts, acc, roots) {
                continue;
            }
            self.nodes[x.0].op = Op::Def(Arc::new(MatmulPair { opts: c.opts, acc }));
            self.nodes[x.0].inputs = inputs;
            self.nodes[y.0].op = Op::Def(Arc::new(Output(1)));
            self.nodes[y.0].inputs = vec![x];
        }
    }
}

/// Two products a backward rule made, independent of each other: candidates for one dispatch.
#[derive(Debug, Clone)]
pub(crate) struct PairCandidate {
    /// The product nodes, the older first.
    nodes: [NodeId; 2],
    /// Their options (folding a gradient sum into a product keeps them).
    opts: [MatmulOpts; 2],
}

/// y = α·op(a)·op(b).
#[derive(Debug)]
struct Matmul(MatmulOpts);

impl OpDef for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        single(eager::matmul(f.dev, f.x[0], f.x[1], self.0)?)
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let o = self.0;
        let (a, b) = (g.in_node(id, 0), g.in_node(id, 1));
        let (sa, sb) = (g.in_shape(id, 0), g.in_shape(id, 1));
        let [ga, gb] = g.matmul_grads(a, b, o, gy, None)?;
        let ga = ga.map(|x| g.reduce_batch(x, &sa)).transpose()?;
        let gb = gb.map(|x| g.reduce_batch(x, &sb)).transpose()?;
        Ok(vec![ga, gb])
    }
    fn accumulating(&self) -> Option<super::Accumulating> {
        Some(super::Accumulating { def: std::sync::Arc::new(MatmulAcc(self.0)), in_place: true })
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        Ok(matmul_f64(x[0], x[1], self.0.trans_a, self.0.trans_b, self.0.alpha as f64))
    }
}

/// Inputs [a, b, r]: r + α·op(a)·op(b), computed into r's buffer (the matmul kernel's accumulate
/// store). Autodiff makes it, from a `Matmul` whose result is summed with r, only where nothing else
/// reads r (`Graph::backward`). Not differentiated again.
#[derive(Debug)]
struct MatmulAcc(MatmulOpts);

impl OpDef for MatmulAcc {
    fn name(&self) -> &'static str {
        "matmul_acc"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let out = f.x[2].clone();
        eager::matmul_into(f.dev, f.x[0], f.x[1], self.0, &out, true)?;
        single(out)
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let mut v = matmul_f64(x[0], x[1], self.0.trans_a, self.0.trans_b, self.0.alpha as f64);
        v.data.iter_mut().zip(&x[2].data).for_each(|(a, r)| *a += r);
        Ok(v)
    }
}

/// Inputs [a0, b0, a1, b1] then, for each product that accumulates, its term: the value is
/// α0·op(a0)·op(b0) (+ r0), the second output α1·op(a1)·op(b1) (+ r1), in one dispatch where it can
/// (`ops::matmul::matmul_pair_dispatches`). An accumulating product adds into its term's buffer, as
/// `MatmulAcc`. Made by `Graph::pair_matmuls`; not differentiated again.
#[derive(Debug)]
struct MatmulPair {
    opts: [MatmulOpts; 2],
    acc: [bool; 2],
}

impl OpDef for MatmulPair {
    fn name(&self) -> &'static str {
        "matmul_pair"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let mut terms = f.x[4..].iter();
        let mut out = |i: usize| -> Result<Tensor> {
            match self.acc[i] {
                true => Ok((*terms.next().expect("one term per accumulating product")).clone()),
                false => {
                    let s = matmul_shape(&f.x[2 * i].shape, &f.x[2 * i + 1].shape, &self.opts[i])?;
                    Tensor::empty(f.dev, &s.out_shape, DType::F32)
                }
            }
        };
        let (c0, c1) = (out(0)?, out(1)?);
        let job = |i: usize, c| MatmulJob {
            a: f.x[2 * i],
            b: f.x[2 * i + 1],
            opts: self.opts[i],
            out: c,
            accumulate: self.acc[i],
        };
        eager::matmul_pair_into(f.dev, [job(0, &c0), job(1, &c1)])?;
        Ok((c0, vec![c1]))
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let o = self.opts[0];
        let mut v = matmul_f64(x[0], x[1], o.trans_a, o.trans_b, o.alpha as f64);
        if self.acc[0] {
            v.data.iter_mut().zip(&x[4].data).for_each(|(a, r)| *a += r);
        }
        Ok(v)
    }
}

pub(super) fn matmul_f64(a: &Value, b: &Value, ta: bool, tb: bool, alpha: f64) -> Value {
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

// ---------------------------------------------------------------------------------------------
// Fused linear layers: act(α·op(a)·op(b) + bias), the bias and the activation in the product's store
// (ops::matmul_fused), and their backward's first pass.

impl Graph {
    /// act(α·op(a)·op(b) + bias), bias [N] (any shape of N values) added to every row, for f32
    /// operands, in one dispatch. An activation whose derivative does not follow from its output (GELU,
    /// SiLU: not `ops::conv_fused::fusable`) has the kernel store the pre-activation too, kept as the
    /// node's second output. The backward computes the activation's derivative and the bias gradient
    /// in one pass before the two products.
    pub fn matmul_bias_act(
        &mut self,
        a: NodeId,
        b: NodeId,
        bias: NodeId,
        act: Option<FusedAct>,
        opts: MatmulOpts,
    ) -> Result<NodeId> {
        const OP: &str = "matmul_bias_act";
        for x in [a, b, bias] {
            self.f32_in(OP, x)?;
        }
        let s = matmul_shape(self.shape(a), self.shape(b), &opts)?;
        if self.shape(bias).iter().product::<usize>() != s.n {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape(bias).to_vec(),
                rhs: vec![s.n],
                hint: " (the bias holds one value per column of the product)".into(),
            });
        }
        let keep = act.is_some_and(|x| !fusable(x.op, x.alpha));
        Ok(self.push(MatmulBiasAct { opts, act, keep }, &[a, b, bias], s.out_shape, DType::F32))
    }
}

/// y = act(α·op(a)·op(b) + bias): inputs [a, b, bias]. With `keep` the kernel also stores the
/// pre-activation z, the second output, for the backward.
#[derive(Debug)]
struct MatmulBiasAct {
    opts: MatmulOpts,
    act: Option<FusedAct>,
    keep: bool,
}

impl OpDef for MatmulBiasAct {
    fn name(&self) -> &'static str {
        "matmul_bias_act"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (a, b, bias) = (f.x[0], f.x[1], f.x[2]);
        match (self.act, self.keep) {
            (Some(_), true) => {
                let (y, z) = fused::matmul_bias_act_keep(f.dev, a, b, self.opts, bias, self.act)?;
                Ok((y, vec![z]))
            }
            _ => single(fused::matmul_bias_act(f.dev, a, b, self.opts, bias, self.act)?),
        }
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (a, b) = (g.in_node(id, 0), g.in_node(id, 1));
        let (sa, sb, sbias) = (g.in_shape(id, 0), g.in_shape(id, 1), g.in_shape(id, 2));
        let ys = g.shape(id).to_vec();
        let n = *ys.last().expect("a product has rank 2 or 3");
        let (dz, db) = match self.act {
            // A bias alone: dz is dy, and db its column sums, as a broadcast add's backward has them.
            None => (gy, g.sum_to(gy, &[n])?),
            Some(_) => {
                // The derivative from y, or from the kept pre-activation z.
                let t = if self.keep { g.output(id, 1, ys.clone()) } else { id };
                let d = g.push(ActBiasBackward { act: self.act, from_out: !self.keep }, &[t, gy], ys, DType::F32);
                (d, g.output(d, 1, vec![n]))
            }
        };
        let [ga, gb] = g.matmul_grads(a, b, self.opts, dz, None)?;
        let ga = ga.map(|x| g.reduce_batch(x, &sa)).transpose()?;
        let gb = gb.map(|x| g.reduce_batch(x, &sb)).transpose()?;
        let db = if g.shape(db) == &sbias[..] { db } else { g.reshape(db, &sbias)? };
        Ok(vec![ga, gb, Some(db)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let mut v = matmul_f64(x[0], x[1], self.opts.trans_a, self.opts.trans_b, self.opts.alpha as f64);
        let n = x[2].data.len();
        for (i, e) in v.data.iter_mut().enumerate() {
            *e += x[2].data[i % n];
            if let Some(a) = self.act {
                *e = unary_f64(a.op, *e, a.alpha as f64);
            }
        }
        Ok(v)
    }
}

/// Inputs [t, dy] of a `MatmulBiasAct` with an activation, t its output y (`from_out`) or its kept
/// pre-activation z: dz = dy · act', with db [N] = Σ dz over the rows as the second output. From the
/// output it is differentiated again (a gradient penalty through a layer), as the derivative in y of
/// dy · act'(y): 0 for the rectifiers, dy · (−2y) for tanh, dy · (1 − 2y) for sigmoid; from z it is not.
#[derive(Debug)]
struct ActBiasBackward {
    act: Option<FusedAct>,
    from_out: bool,
}

impl OpDef for ActBiasBackward {
    fn name(&self) -> &'static str {
        "matmul_act_bias_backward"
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let (dz, db) = fused::matmul_act_bias_backward(f.dev, f.x[0], f.x[1], self.act, self.from_out)?;
        Ok((dz, vec![db]))
    }
    fn backward(&self, g: &mut Graph, id: NodeId, gdz: NodeId) -> Result<Vec<Option<NodeId>>> {
        let (Some(act), true) = (self.act, self.from_out) else {
            return Err(Error::invalid(
                "backward",
                "the second derivative of a GELU or SiLU epilogue is not implemented",
            ));
        };
        let (t, dy) = (g.in_node(id, 0), g.in_node(id, 1));
        let shape = g.shape(id).to_vec();
        // d/d dy: gdz · act'(y), this op again (its bias sum unused).
        let gdy = g.push(ActBiasBackward { act: self.act, from_out: true }, &[t, gdz], shape, DType::F32);
        // d/dy: gdz · dy · act''(y) in terms of y.
        let gt = match act.op {
            Unary::Tanh | Unary::Sigmoid => {
                let u = g.mul(gdz, dy)?;
                let d2 = match act.op {
                    Unary::Tanh => g.scale(t, -2.0)?,
                    _ => {
                        let m = g.scale(t, -2.0)?;
                        g.scalar(Binary::Add, m, 1.0, false)?
                    }
                };
                Some(g.mul(u, d2)?)
            }
            _ => None,
        };
        Ok(vec![gt, Some(gdy)])
    }
    fn reference(&self, x: &[&Value], _: &[usize]) -> Result<Value> {
        let (Some(a), true) = (self.act, self.from_out) else {
            return Err(Error::invalid("reference", "matmul_act_bias_backward from z has no f64 reference"));
        };
        let d = |y: f64| match a.op {
            Unary::Tanh => 1.0 - y * y,
            Unary::Sigmoid => y * (1.0 - y),
            Unary::Relu if y <= 0.0 => 0.0,
            Unary::LeakyRelu if y <= 0.0 => a.alpha as f64,
            _ => 1.0,
        };
        let data = x[0].data.iter().zip(&x[1].data).map(|(&y, &g)| g * d(y)).collect();
        Ok(Value { shape: x[0].shape.clone(), data })
    }
}
