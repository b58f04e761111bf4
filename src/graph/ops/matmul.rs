//! Matrix products: plain or batched, either operand stored transposed, scaled by alpha.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::Result;
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::matmul::{self as eager, matmul_shape, MatmulOpts};
use crate::tensor::DType;

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
        // With A' = op(A), B' = op(B): dA' = α·g·B'ᵀ and dB' = α·A'ᵀ·g; a stored-transposed operand
        // takes the transpose of its gradient.
        let opts = |trans_a, trans_b| MatmulOpts { trans_a, trans_b, alpha: o.alpha };
        let ga =
            if o.trans_a { g.matmul(b, gy, opts(o.trans_b, true))? } else { g.matmul(gy, b, opts(false, !o.trans_b))? };
        let gb =
            if o.trans_b { g.matmul(gy, a, opts(true, o.trans_a))? } else { g.matmul(a, gy, opts(!o.trans_a, false))? };
        Ok(vec![Some(g.reduce_batch(ga, &sa)?), Some(g.reduce_batch(gb, &sb)?)])
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
