//! Matrix products: plain or batched, either operand stored transposed, scaled by alpha; and the pair
//! of a product's two backward products, joined into one dispatch once autodiff is done.

use std::sync::Arc;

use super::{single, Fwd, OpDef, Output, Outputs};
use crate::error::Result;
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId, Op};
use crate::ops::matmul::{self as eager, matmul_shape, MatmulJob, MatmulOpts};
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
                    return Err(crate::error::Error::invalid(
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
