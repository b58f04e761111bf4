//! Gradient checks: every op's backward rule, run through the real kernels on the CPU backend, against
//! central finite differences of the f64 reference interpreter (graph::reference). One line per op.
//!
//! Tolerance: |analytic − numeric| ≤ 1e-5 + 2e-4·|numeric|. The numeric side is exact to ~1e-9 (f64,
//! h = 1e-6); the analytic side is f32 arithmetic (~1e-6 relative per op, a few ops deep). A wrong
//! rule is off by O(1).
mod common;
use common::*;
use std::collections::HashMap;
use tigel::graph::reference::{eval, Value};
use tigel::graph::{Graph, NodeId, Plan};
use tigel::ops::chnorm::FusedAct;
use tigel::ops::elementwise::{Binary, Unary};
use tigel::ops::matmul::MatmulOpts;
use tigel::{Device, Result, Tensor};

/// Builds `out = build(params)` on random parameters of `shapes` (uniform in [lo, hi]), takes
/// loss = Σ out ⊙ w for a random w, and compares d loss / d params.
fn check(
    name: &str,
    shapes: &[&[usize]],
    lo: f32,
    hi: f32,
    build: impl Fn(&mut Graph, &[NodeId], &Device) -> Result<NodeId>,
) {
    check_drawn(name, shapes, lo, hi, |x| x, build)
}

/// `check` with the parameters drawn as f16 values: a cast to f16 is then exact where the gradient is
/// taken, so the backward rules of f16 paths are checked at the same tolerance.
fn check_f16(
    name: &str,
    shapes: &[&[usize]],
    lo: f32,
    hi: f32,
    build: impl Fn(&mut Graph, &[NodeId], &Device) -> Result<NodeId>,
) {
    check_drawn(name, shapes, lo, hi, tigel::host::f16::round, build)
}

fn check_drawn(
    name: &str,
    shapes: &[&[usize]],
    lo: f32,
    hi: f32,
    map: fn(f32) -> f32,
    build: impl Fn(&mut Graph, &[NodeId], &Device) -> Result<NodeId>,
) {
    let dev = Device::cpu();
    let mut rng = Rng::new(seed() ^ name.len() as u64);
    let mut g = Graph::new();
    let params: Vec<NodeId> = shapes
        .iter()
        .map(|s| {
            let v: Vec<f32> = rng.vec(s.iter().product(), lo, hi).into_iter().map(map).collect();
            g.param(&Tensor::from_f32(&dev, s, &v).unwrap())
        })
        .collect();
    let out = build(&mut g, &params, &dev).unwrap();
    let n_out: usize = g.shape(out).iter().product();
    let w = g.constant(&Tensor::from_f32(&dev, g.shape(out), &rng.vec(n_out, -1.0, 1.0)).unwrap());
    let weighted = g.mul(out, w).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let grads = g.backward(loss, &params).unwrap();
    let plan = Plan::build(&dev, &g, &grads, |_| Ok(())).unwrap();
    plan.run(&dev).unwrap();

    let mut leaves: HashMap<NodeId, Value> = HashMap::new();
    for i in 0..g.nodes.len() {
        if let Some(t) = g.tensor_of(NodeId(i)) {
            let data = match t.dtype {
                tigel::DType::F32 | tigel::DType::F16 => t.to_f32(&dev).unwrap().into_iter().map(f64::from).collect(),
                tigel::DType::U32 => t.to_u32(&dev).unwrap().into_iter().map(f64::from).collect(),
            };
            leaves.insert(NodeId(i), Value { shape: t.shape.clone(), data });
        }
    }
    let f = |leaves: &HashMap<NodeId, Value>| -> f64 { eval(&g, leaves, &[loss]).unwrap()[&loss].data[0] };
    for (p, gnode) in params.iter().zip(&grads) {
        let analytic = plan.value(*gnode).to_f32(&dev).unwrap();
        for (j, &a) in analytic.iter().enumerate() {
            let x0 = leaves[p].data[j];
            let h = 1e-6 * x0.abs().max(1.0);
            leaves.get_mut(p).unwrap().data[j] = x0 + h;
            let up = f(&leaves);
            leaves.get_mut(p).unwrap().data[j] = x0 - h;
            let down = f(&leaves);
            leaves.get_mut(p).unwrap().data[j] = x0;
            let numeric = (up - down) / (2.0 * h);
            let a = a as f64;
            assert!(
                (a - numeric).abs() <= 1e-5 + 2e-4 * numeric.abs(),
                "{name}: d loss / d param{} [{j}] is {a} by the backward rule, {numeric} by finite differences",
                p.0
            );
        }
    }
}

fn mm(ta: bool, tb: bool, alpha: f32) -> MatmulOpts {
    MatmulOpts { trans_a: ta, trans_b: tb, alpha }
}

#[test]
fn grad_unary_ops() {
    for op in Unary::ALL {
        let (lo, hi) = match op {
            Unary::Log | Unary::Sqrt | Unary::Rsqrt | Unary::Recip => (0.3, 3.0),
            // Keep clear of the kinks, where a finite difference straddles two slopes.
            Unary::Relu | Unary::LeakyRelu | Unary::Abs | Unary::Sign => (0.05, 2.0),
            _ => (-2.0, 2.0),
        };
        check(&format!("{op:?}"), &[&[3, 5]], lo, hi, |g, p, _| g.unary_with(op, p[0], 0.2));
        if matches!(op, Unary::Relu | Unary::LeakyRelu | Unary::Abs) {
            check(&format!("{op:?} (negative side)"), &[&[7]], -2.0, -0.05, |g, p, _| g.unary_with(op, p[0], 0.2));
        }
    }
}

#[test]
fn grad_binary_ops_with_broadcasting() {
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min, Binary::Pow] {
        let (lo, hi) = if matches!(op, Binary::Div | Binary::Pow) { (0.5, 2.0) } else { (-2.0, 2.0) };
        check(&format!("{op:?} same shape"), &[&[3, 4], &[3, 4]], lo, hi, |g, p, _| g.binary(op, p[0], p[1]));
        check(&format!("{op:?} [3,4]x[4]"), &[&[3, 4], &[4]], lo, hi, |g, p, _| g.binary(op, p[0], p[1]));
        check(&format!("{op:?} [2,1,3]x[4,1]"), &[&[2, 1, 3], &[4, 1]], lo, hi, |g, p, _| g.binary(op, p[0], p[1]));
    }
}

#[test]
fn grad_scalar_ops() {
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min, Binary::Pow] {
        for reverse in [false, true] {
            check(&format!("{op:?} scalar reverse={reverse}"), &[&[9]], 0.5, 2.0, |g, p, _| {
                g.scalar(op, p[0], 1.3, reverse)
            });
        }
    }
}

#[test]
fn grad_matmul() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let b: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        check(&format!("matmul ta={ta} tb={tb}"), &[a, b], -1.0, 1.0, |g, p, _| g.matmul(p[0], p[1], mm(ta, tb, 0.7)));
    }
    check("matmul batched", &[&[2, 3, 4], &[2, 4, 5]], -1.0, 1.0, |g, p, _| {
        g.matmul(p[0], p[1], mm(false, false, 1.0))
    });
    check("matmul shared B", &[&[2, 3, 4], &[4, 5]], -1.0, 1.0, |g, p, _| g.matmul(p[0], p[1], mm(false, false, 1.0)));
    check("matmul shared A^T", &[&[4, 3], &[3, 4, 5]], -1.0, 1.0, |g, p, _| g.matmul(p[0], p[1], mm(true, false, 1.0)));
    // Gradients summed over several uses (W twice, x twice) fold into the paired backward products.
    check("matmul pairs with folded sums", &[&[3, 4], &[4, 4], &[4, 4]], -1.0, 1.0, |g, p, _| {
        let h = g.matmul(p[0], p[1], mm(false, false, 1.0))?;
        let u = g.matmul(h, p[1], mm(false, true, 0.5))?;
        let v = g.matmul(p[0], p[2], mm(false, false, 1.0))?;
        let s = g.add(u, v)?;
        g.matmul(s, p[2], mm(false, true, 1.0))
    });
}

/// The `matmul_pair` nodes of a graph.
fn pairs(g: &Graph) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == "matmul_pair").count()
}

#[test]
fn backward_pairs_products_only_where_both_are_needed() {
    let dev = Device::cpu();
    let mut rng = Rng::new(seed());
    let mut g = Graph::new();
    let x = g.param(&Tensor::from_f32(&dev, &[3, 4], &rng.vec(12, -1.0, 1.0)).unwrap());
    let w = g.param(&Tensor::from_f32(&dev, &[4, 2], &rng.vec(8, -1.0, 1.0)).unwrap());
    let h = g.matmul(x, w, mm(false, false, 1.0)).unwrap();
    let s = g.sum_all(h).unwrap();
    // dX and dW in one dispatch when both are asked for...
    let mut both = g.clone();
    both.backward(s, &[x, w]).unwrap();
    assert_eq!(pairs(&both), 1);
    // ...but a gradient with respect to x alone computes no dW (and stays differentiable).
    g.backward(s, &[x]).unwrap();
    assert_eq!(pairs(&g), 0);
}

#[test]
fn grad_cast_and_half_matmul() {
    use tigel::DType::{F16, F32};
    check_f16("cast f32 -> f16 -> f32", &[&[3, 5]], -2.0, 2.0, |g, p, _| {
        let h = g.cast(p[0], F16)?;
        g.cast(h, F32)
    });
    for (ta, tb) in [(false, false), (true, true)] {
        let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let b: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        for (ha, hb) in [(true, true), (true, false), (false, true)] {
            check_f16(&format!("matmul f16 a={ha} b={hb} ta={ta} tb={tb}"), &[a, b], -1.0, 1.0, |g, p, _| {
                let x = if ha { g.cast(p[0], F16)? } else { p[0] };
                let y = if hb { g.cast(p[1], F16)? } else { p[1] };
                g.matmul(x, y, mm(ta, tb, 0.7))
            });
        }
    }
    check_f16("matmul f16 batched, shared B", &[&[2, 3, 4], &[4, 5]], -1.0, 1.0, |g, p, _| {
        let (x, y) = (g.cast(p[0], F16)?, g.cast(p[1], F16)?);
        g.matmul(x, y, mm(false, false, 1.0))
    });
}

#[test]
fn grad_reductions_and_broadcasts() {
    for axis in 0..3 {
        for keepdim in [false, true] {
            check(&format!("sum {axis} {keepdim}"), &[&[2, 3, 4]], -1.0, 1.0, |g, p, _| g.sum(p[0], axis, keepdim));
            check(&format!("mean {axis} {keepdim}"), &[&[2, 3, 4]], -1.0, 1.0, |g, p, _| g.mean(p[0], axis, keepdim));
        }
    }
    check("sum_to", &[&[2, 3, 4]], -1.0, 1.0, |g, p, _| g.sum_to(p[0], &[3, 1]));
    check("broadcast_to", &[&[3, 1]], -1.0, 1.0, |g, p, _| g.broadcast_to(p[0], &[2, 3, 4]));
    check("mean_all", &[&[5, 3]], -1.0, 1.0, |g, p, _| g.mean_all(p[0]));
    check("scale_broadcast", &[&[2, 1, 4]], -1.0, 1.0, |g, p, _| g.scale_broadcast(p[0], 1, 3, 0.7));
}

#[test]
fn grad_softmax_family() {
    check("softmax", &[&[3, 7]], -3.0, 3.0, |g, p, _| g.softmax(p[0]));
    check("log_softmax", &[&[3, 7]], -3.0, 3.0, |g, p, _| g.log_softmax(p[0]));
}

#[test]
fn grad_layout_ops() {
    check("reshape", &[&[3, 4]], -1.0, 1.0, |g, p, _| g.reshape(p[0], &[2, 6]));
    check("transpose", &[&[2, 3, 4]], -1.0, 1.0, |g, p, _| g.transpose(p[0], &[2, 0, 1]));
    check("slice", &[&[4, 5]], -1.0, 1.0, |g, p, _| g.slice(p[0], 1, 1, 3));
    check("concat", &[&[2, 3], &[2, 2]], -1.0, 1.0, |g, p, _| g.concat(&[p[0], p[1]], 1));
}

#[test]
fn grad_composites() {
    check("mse", &[&[4, 3], &[4, 3]], -1.0, 1.0, |g, p, _| g.mse(p[0], p[1]));
    // A two-layer perceptron: parameters used twice, gradients summed across paths.
    check("mlp", &[&[4, 3], &[3, 5], &[5], &[5, 2]], -1.0, 1.0, |g, p, _| {
        let h = g.matmul(p[0], p[1], mm(false, false, 1.0))?;
        let h = g.add(h, p[2])?;
        let h = g.unary(Unary::Tanh, h)?;
        let o = g.matmul(h, p[3], mm(false, false, 1.0))?;
        let r = g.unary(Unary::Gelu, p[0])?;
        let r = g.sum(r, 1, true)?;
        g.add(o, r)
    });
}

#[test]
fn grad_losses() {
    // Class ids are a constant bound into the graph; only the logits get a gradient.
    let targets = [3u32, 0, 4, 4, 1];
    check("cross_entropy", &[&[5, 6]], -3.0, 3.0, |g, p, d| {
        let t = g.constant(&Tensor::from_u32(d, &[5], &targets)?);
        g.cross_entropy(p[0], t)
    });
    check("cross_entropy_mean", &[&[5, 6]], -3.0, 3.0, |g, p, d| {
        let t = g.constant(&Tensor::from_u32(d, &[5], &targets)?);
        g.cross_entropy_mean(p[0], t)
    });
    check("bce_logits (both inputs)", &[&[4, 3], &[4, 3]], -3.0, 3.0, |g, p, _| g.bce_logits(p[0], p[1]));
    // The fused mean, with the last layer's bias added in (one per column) and without.
    let t: Vec<f32> = (0..12).map(|i| (i % 5) as f32 / 4.0).collect();
    check("bce_logits_mean", &[&[6, 2]], -3.0, 3.0, |g, p, d| {
        let t = g.constant(&Tensor::from_f32(d, &[6, 2], &t)?);
        g.bce_logits_mean(p[0], t, None)
    });
    check("bce_logits_mean with bias", &[&[6, 2], &[2]], -3.0, 3.0, |g, p, d| {
        let t = g.constant(&Tensor::from_f32(d, &[6, 2], &t)?);
        g.bce_logits_mean(p[0], t, Some(p[1]))
    });
}

#[test]
fn grad_transformer_ops() {
    check("layer_norm", &[&[5, 7], &[7], &[7]], -1.0, 1.0, |g, p, _| g.layer_norm(p[0], p[1], p[2], 1e-5));
    // qkv [B=2, T=5, 3·C] with 2 heads of size 3; causal and full.
    check("attention (causal)", &[&[2, 5, 18]], -1.0, 1.0, |g, p, _| g.attention(p[0], 2, true));
    check("attention (full)", &[&[2, 5, 18]], -1.0, 1.0, |g, p, _| g.attention(p[0], 2, false));
    // Rotary positions on qkv [B=2, T=3, 3·C] with 2 heads of size 4; the angle table is a constant.
    check("rope", &[&[2, 3, 24]], -1.0, 1.0, |g, p, d| {
        let table = tigel::ops::rope::rope_table(4, 4, 10_000.0);
        let table = g.constant(&Tensor::from_f32(d, &[4, 2, 2], &table)?);
        g.rope(p[0], table, 2)
    });
    // x feeds two matmuls: its gradient's sum is folded into the second matmul (accumulating into the
    // first one's buffer), and a third use through an add keeps a plain sum.
    check("matmul gradient sums", &[&[3, 4], &[4, 5], &[4, 5]], -1.0, 1.0, |g, p, _| {
        let o = MatmulOpts::default();
        let (y1, y2) = (g.matmul(p[0], p[1], o)?, g.matmul(p[0], p[2], o)?);
        let y = g.add(y1, y2)?;
        let x5 = g.matmul(p[0], p[2], o)?;
        let y = g.add(y, x5)?;
        g.mul(y, y)
    });
    // One kernel used on two inputs (a discriminator on real and fake images): its gradient's sum is
    // folded into the second weight gradient, added into the first one's buffer.
    check("conv2d gradient sums", &[&[2, 3, 5, 5], &[2, 3, 5, 5], &[4, 3, 3, 3]], -1.0, 1.0, |g, p, _| {
        let o = tigel::ops::conv::Conv2d { stride: 2, padding: 1 };
        let (y1, y2) = (g.conv2d(p[0], p[2], o)?, g.conv2d(p[1], p[2], o)?);
        let y = g.mul(y1, y2)?;
        g.add(y, y1)
    });
    // The fused residual norm: both outputs used, so x and a get the add's and the norm's gradients.
    check("add_layer_norm", &[&[5, 7], &[5, 7], &[7], &[7]], -1.0, 1.0, |g, p, _| {
        let (s, y) = g.add_layer_norm(p[0], p[1], p[2], p[3], 1e-5)?;
        let ss = g.mul(s, s)?;
        g.add(y, ss)
    });
    check("silu_gate", &[&[3, 5], &[3, 5]], -3.0, 3.0, |g, p, _| g.silu_gate(p[0], p[1]));
    check("linear_silu_gate", &[&[3, 4], &[4, 5], &[4, 5]], -1.0, 1.0, |g, p, _| g.linear_silu_gate(p[0], p[1], p[2]));
    // The gate's backward folded into the output projection's backward pair (`fuse_gate_backward`),
    // behind the GPT's reshapes and after the unfused gate.
    check("linear_silu_gate then a projection", &[&[6, 4], &[4, 5], &[4, 5], &[5, 3]], -1.0, 1.0, |g, p, _| {
        let h = g.linear_silu_gate(p[0], p[1], p[2])?;
        let h3 = g.reshape(h, &[2, 3, 5])?;
        let h2 = g.reshape(h3, &[6, 5])?;
        g.matmul(h2, p[3], mm(false, false, 0.5))
    });
    check("silu_gate then a projection", &[&[3, 4], &[4, 5], &[4, 5], &[5, 3]], -1.0, 1.0, |g, p, _| {
        let u = g.matmul(p[0], p[1], mm(false, false, 1.0))?;
        let v = g.matmul(p[0], p[2], mm(false, false, 1.0))?;
        let h = g.silu_gate(u, v)?;
        g.matmul(h, p[3], mm(false, false, 1.0))
    });
    // QK norm on qkv [B=2, T=3, 3·C] with 2 heads of size 4, with rotary positions and without.
    check("qk_norm (rope)", &[&[2, 3, 24], &[4], &[4], &[4], &[4]], -1.0, 1.0, |g, p, d| {
        let table = tigel::ops::rope::rope_table(4, 4, 10_000.0);
        let table = g.constant(&Tensor::from_f32(d, &[4, 2, 2], &table)?);
        g.qk_norm(p[0], [p[1], p[2], p[3], p[4]], Some(table), 2, 1e-5)
    });
    check("qk_norm", &[&[2, 3, 18], &[3], &[3], &[3], &[3]], -1.0, 1.0, |g, p, _| {
        g.qk_norm(p[0], [p[1], p[2], p[3], p[4]], None, 2, 1e-5)
    });
    // Ids repeat (4 twice, 0 twice) and skip rows (3), so the scatter-add sums and leaves zeros.
    check("embedding", &[&[5, 4]], -1.0, 1.0, |g, p, d| {
        let ids = g.input(&Tensor::from_u32(d, &[2, 3], &[0, 4, 4, 1, 0, 2])?);
        g.embedding(ids, p[0])
    });
    // The embedding's backward is linear in dout; its own gradient gathers rows back.
    check("embedding backward (grad of grad)", &[&[5, 4]], -1.0, 1.0, |g, p, d| {
        let ids = g.input(&Tensor::from_u32(d, &[3], &[2, 2, 0])?);
        let e = g.embedding(ids, p[0])?;
        let sq = g.unary(Unary::Square, e)?;
        let s = g.sum_all(sq)?;
        let gt = g.backward(s, &[p[0]])?[0];
        g.unary(Unary::Tanh, gt)
    });
    // A pre-norm block as the GPT builds it: every op above, composed, with a residual.
    check("pre-norm attention block", &[&[8, 6], &[6], &[6], &[6, 18], &[6, 6]], -1.0, 1.0, |g, p, _| {
        let h = g.layer_norm(p[0], p[1], p[2], 1e-5)?;
        let qkv = g.matmul(h, p[3], mm(false, false, 1.0))?;
        let qkv = g.reshape(qkv, &[2, 4, 18])?;
        let a = g.attention(qkv, 3, true)?;
        let a = g.reshape(a, &[8, 6])?;
        let a = g.matmul(a, p[4], mm(false, false, 1.0))?;
        g.add(p[0], a)
    });
}

/// The fused linear layer act(x·W + b) (`Graph::matmul_bias_act`): each activation, from its output
/// (relu, leaky relu, tanh, sigmoid: one kernel) or from the kept pre-activation (GELU, SiLU), a bias
/// alone, transposed operands with a scale, and a batched product.
#[test]
fn grad_matmul_bias_act() {
    use tigel::ops::matmul::MatmulOpts;
    let acts = [
        (Unary::Relu, 0.01),
        (Unary::LeakyRelu, 0.2),
        (Unary::Tanh, 0.01),
        (Unary::Sigmoid, 0.01),
        (Unary::Gelu, 0.01),
        (Unary::Silu, 0.01),
    ];
    let o = MatmulOpts::default();
    for act in acts.into_iter().map(|(op, alpha)| Some(FusedAct { op, alpha })).chain([None]) {
        check(&format!("matmul_bias_act {act:?}"), &[&[5, 4], &[4, 3], &[3]], -1.0, 1.0, |g, p, _| {
            g.matmul_bias_act(p[0], p[1], p[2], act, o)
        });
    }
    let t = MatmulOpts { trans_a: true, trans_b: true, alpha: 0.5 };
    let tanh = Some(FusedAct { op: Unary::Tanh, alpha: 0.01 });
    check("matmul_bias_act transposed", &[&[4, 5], &[3, 4], &[1, 3]], -1.0, 1.0, |g, p, _| {
        g.matmul_bias_act(p[0], p[1], p[2], tanh, t)
    });
    // A gradient penalty through fused layers: ‖d/dx Σ w ⊙ act(x·W + b)‖², which differentiates the
    // epilogue's backward again (from the output: the rectifiers, tanh, sigmoid).
    for (op, alpha) in [(Unary::LeakyRelu, 0.2), (Unary::Tanh, 0.01), (Unary::Sigmoid, 0.01)] {
        let act = Some(FusedAct { op, alpha });
        check(
            &format!("matmul_bias_act gradient penalty {op:?}"),
            &[&[3, 4], &[4, 5], &[5], &[5, 2]],
            -1.0,
            1.0,
            |g, p, _| {
                let h = g.matmul_bias_act(p[0], p[1], p[2], act, o)?;
                let y = g.matmul(h, p[3], o)?;
                let s = g.sum_all(y)?;
                let dx = g.backward(s, &[p[0]])?[0];
                g.mul(dx, dx)
            },
        );
    }
    let silu = Some(FusedAct { op: Unary::Silu, alpha: 0.01 });
    check("matmul_bias_act batched", &[&[2, 3, 4], &[4, 3], &[3]], -1.0, 1.0, |g, p, _| {
        g.matmul_bias_act(p[0], p[1], p[2], silu, o)
    });
}

#[test]
fn grad_convolutions() {
    use tigel::ops::conv::Conv2d;
    let s1 = Conv2d { stride: 1, padding: 1 };
    let s2 = Conv2d { stride: 2, padding: 1 };
    check("conv2d stride 1", &[&[2, 3, 5, 4], &[2, 3, 3, 3]], -1.0, 1.0, |g, p, _| g.conv2d(p[0], p[1], s1));
    check("conv2d stride 2", &[&[1, 2, 7, 6], &[3, 2, 4, 4]], -1.0, 1.0, |g, p, _| g.conv2d(p[0], p[1], s2));
    check("conv_transpose2d stride 2", &[&[2, 3, 3, 4], &[3, 2, 4, 4]], -1.0, 1.0, |g, p, _| {
        g.conv_transpose2d(p[0], p[1], s2, 0)
    });
    check("conv_transpose2d output_padding", &[&[1, 2, 3, 3], &[2, 2, 3, 3]], -1.0, 1.0, |g, p, _| {
        g.conv_transpose2d(p[0], p[1], s2, 1)
    });
    // The fused epilogues: a bias ([C] and [C, 1, 1]) and each activation the kernels fuse.
    let acts = [(Unary::Relu, 0.01), (Unary::LeakyRelu, 0.2), (Unary::Tanh, 0.01), (Unary::Sigmoid, 0.01)];
    for act in acts.into_iter().map(|(op, alpha)| Some(FusedAct { op, alpha })).chain([None]) {
        check(&format!("conv2d_bias_act {act:?}"), &[&[2, 3, 5, 4], &[2, 3, 3, 3], &[2]], -1.0, 1.0, |g, p, _| {
            g.conv2d_bias_act(p[0], p[1], Some(p[2]), act, s2)
        });
        check(
            &format!("conv_transpose2d_bias_act {act:?}"),
            &[&[2, 3, 3, 4], &[3, 2, 4, 4], &[2, 1, 1]],
            -1.0,
            1.0,
            |g, p, _| g.conv_transpose2d_bias_act(p[0], p[1], Some(p[2]), act, s2, 0),
        );
    }
    check("conv2d_bias_act without bias", &[&[1, 2, 5, 5], &[3, 2, 3, 3]], -1.0, 1.0, |g, p, _| {
        g.conv2d_bias_act(p[0], p[1], None, Some(FusedAct { op: Unary::Tanh, alpha: 0.01 }), s1)
    });
    // A per-(image, channel) offset ([N, C] and [N, C, 1, 1]) and a residual sum in the epilogue,
    // together and alone.
    check("conv2d_add", &[&[2, 3, 5, 4], &[2, 3, 3, 3], &[2, 2], &[2, 2, 5, 4]], -1.0, 1.0, |g, p, _| {
        g.conv2d_add(p[0], p[1], Some(p[2]), Some(p[3]), s1)
    });
    check("conv2d_add offset", &[&[2, 3, 5, 4], &[2, 3, 3, 3], &[2, 2, 1, 1]], -1.0, 1.0, |g, p, _| {
        g.conv2d_add(p[0], p[1], Some(p[2]), None, s1)
    });
    check("conv2d_add residual", &[&[1, 2, 7, 6], &[3, 2, 4, 4], &[1, 3, 3, 3]], -1.0, 1.0, |g, p, _| {
        g.conv2d_add(p[0], p[1], None, Some(p[2]), s2)
    });
    // A gradient penalty through a convolution: ‖d/dx Σ leaky(conv(x, w))‖², which differentiates
    // the convolution's backward ops again.
    check("conv gradient penalty", &[&[1, 2, 5, 5], &[2, 2, 3, 3]], -1.0, 1.0, |g, p, _| {
        let y = g.conv2d(p[0], p[1], s2)?;
        let y = g.unary_with(Unary::LeakyRelu, y, 0.2)?;
        let s = g.sum_all(y)?;
        let gx = g.backward(s, &[p[0]])?[0];
        g.unary(Unary::Square, gx)
    });
}

#[test]
fn grad_group_norm() {
    // Two groups of two channels over 3x2 planes, one group (layer-norm-like), and per-channel groups.
    for groups in [2, 1, 4] {
        check("group_norm", &[&[2, 4, 3, 2], &[4], &[4]], -1.0, 1.0, |g, p, _| {
            g.group_norm(p[0], p[1], p[2], groups, 1e-5)
        });
    }
    check("group_norm rank 2", &[&[3, 6], &[6], &[6]], -1.0, 1.0, |g, p, _| g.group_norm(p[0], p[1], p[2], 3, 1e-5));
    // Inside a residual conv block, as the UNet uses it: silu(gn(conv(x))) + x.
    check("group_norm in a block", &[&[2, 4, 4, 4], &[4, 4, 3, 3], &[4], &[4]], -1.0, 1.0, |g, p, _| {
        let h = g.conv2d(p[0], p[1], tigel::ops::conv::Conv2d { stride: 1, padding: 1 })?;
        let h = g.group_norm(h, p[2], p[3], 2, 1e-5)?;
        let h = g.unary(Unary::Silu, h)?;
        g.add(h, p[0])
    });
}

#[test]
fn grad_norm_with_fused_activation() {
    // A norm with the activation after it fused into its node: the rule through act' at the recomputed
    // norm output, for each activation the models fuse.
    let acts = [(Unary::Silu, 0.01), (Unary::Relu, 0.01), (Unary::LeakyRelu, 0.2), (Unary::Tanh, 0.01)];
    for (op, alpha) in acts {
        let act = Some(FusedAct { op, alpha });
        check(&format!("group_norm {op:?}"), &[&[2, 4, 3, 2], &[4], &[4]], -1.0, 1.0, |g, p, _| {
            g.group_norm_act(p[0], p[1], p[2], 2, 1e-5, act)
        });
        check(&format!("batch_norm {op:?}"), &[&[3, 2, 2, 3], &[2], &[2]], -1.0, 1.0, |g, p, _| {
            g.batch_norm_act(p[0], p[1], p[2], 1e-5, None, act)
        });
        check(&format!("batch_norm rows {op:?}"), &[&[6, 4], &[4], &[4]], -1.0, 1.0, |g, p, _| {
            g.batch_norm_act(p[0], p[1], p[2], 1e-5, None, act)
        });
    }
    // A residual around the norm: x's gradient sum is folded into the norm backward's dx pass.
    check("x + group_norm_act(x)", &[&[2, 4, 3, 3], &[4], &[4]], -1.0, 1.0, |g, p, _| {
        let h = g.group_norm_act(p[0], p[1], p[2], 2, 1e-5, Some(FusedAct { op: Unary::Silu, alpha: 0.01 }))?;
        g.add(p[0], h)
    });
    check("x + batch_norm(x)", &[&[3, 2, 2, 3], &[2], &[2]], -1.0, 1.0, |g, p, _| {
        let h = g.batch_norm(p[0], p[1], p[2], 1e-5, None)?;
        g.add(p[0], h)
    });
}

#[test]
fn group_norm_refuses_bad_shapes() {
    let dev = Device::cpu();
    let mut g = Graph::new();
    let x = g.input(&Tensor::from_f32(&dev, &[2, 6, 2, 2], &[0.5; 48]).unwrap());
    let c = g.input(&Tensor::from_f32(&dev, &[6], &[1.0; 6]).unwrap());
    let c4 = g.input(&Tensor::from_f32(&dev, &[4], &[1.0; 4]).unwrap());
    let e = g.group_norm(x, c, c, 4, 1e-5).unwrap_err().to_string();
    assert!(e.contains("groups = 4") && e.contains("[2, 6, 2, 2]"), "{e}");
    let e = g.group_norm(x, c4, c4, 2, 1e-5).unwrap_err().to_string();
    assert!(e.contains("[4]") && e.contains("gamma"), "{e}");
}

#[test]
fn grad_of_grad_through_leaky_relu() {
    // A gradient penalty: ‖d/dx Σ leaky(x·W)‖², differentiated with respect to W and x.
    check("gradient penalty", &[&[3, 4], &[4, 2]], -1.0, 1.0, |g, p, _| {
        let h = g.matmul(p[0], p[1], mm(false, false, 1.0))?;
        let y = g.unary_with(Unary::LeakyRelu, h, 0.2)?;
        let s = g.sum_all(y)?;
        let gx = g.backward(s, &[p[0]])?[0];
        let sq = g.unary(Unary::Square, gx)?;
        g.sum(sq, 1, false)
    });
}

#[test]
fn grad_stops_at_detach_and_bad_shapes_are_refused_at_build_time() {
    let dev = Device::cpu();
    let mut g = Graph::new();
    let a = g.param(&Tensor::from_f32(&dev, &[3], &[1.0, 2.0, 3.0]).unwrap());
    let b = g.param(&Tensor::from_f32(&dev, &[3], &[4.0, 5.0, 6.0]).unwrap());
    let d = g.detach(a);
    let y = g.mul(d, b).unwrap();
    let s = g.sum_all(y).unwrap();
    let grads = g.backward(s, &[a, b]).unwrap();
    let plan = Plan::build(&dev, &g, &grads, |_| Ok(())).unwrap();
    plan.run(&dev).unwrap();
    assert_eq!(plan.value(grads[0]).to_f32(&dev).unwrap(), vec![0.0; 3]);
    assert_eq!(plan.value(grads[1]).to_f32(&dev).unwrap(), vec![1.0, 2.0, 3.0]);

    let c = g.param(&Tensor::from_f32(&dev, &[2, 4], &[0.0; 8]).unwrap());
    let e = g.matmul(c, a, MatmulOpts::default()).unwrap_err().to_string();
    assert!(e.contains("matmul"), "{e}");
    let e = g.add(c, a).unwrap_err().to_string();
    assert!(e.contains("[2, 4]") && e.contains("[3]"), "{e}");
    let e = g.reshape(c, &[3, 3]).unwrap_err().to_string();
    assert!(e.contains("reshape") && e.contains("[3, 3]"), "{e}");
}

#[test]
fn grad_batch_norm() {
    // Per channel over N·H·W (NCHW) and over N ([N, C]), the rule through the batch statistics; then a
    // batch norm between two convolutions and activations as the DCGAN uses it.
    check("batch_norm nchw", &[&[3, 2, 2, 3], &[2], &[2]], -1.0, 1.0, |g, p, _| {
        g.batch_norm(p[0], p[1], p[2], 1e-5, None)
    });
    check("batch_norm rows", &[&[6, 4], &[4], &[4]], -1.0, 1.0, |g, p, _| g.batch_norm(p[0], p[1], p[2], 1e-5, None));
    check("conv, batch_norm, leaky relu", &[&[2, 2, 4, 4], &[3, 2, 3, 3], &[3], &[3]], -1.0, 1.0, |g, p, _| {
        let y = g.conv2d(p[0], p[1], tigel::ops::conv::Conv2d { stride: 2, padding: 1 })?;
        let y = g.batch_norm(y, p[2], p[3], 1e-5, None)?;
        g.unary_with(Unary::LeakyRelu, y, 0.2)
    });
}

#[test]
fn grad_backward_ops() {
    // The backward ops that have rules of their own, each differentiated directly: unary_backward in
    // dy (and in x where f'' exists), pad (slice's backward), conv2d's weight adjoint.
    check("unary_backward Square", &[&[3, 4], &[3, 4]], -2.0, 2.0, |g, p, _| {
        g.unary_backward(Unary::Square, 0.0, p[0], p[1])
    });
    check("unary_backward LeakyRelu", &[&[3, 4], &[3, 4]], 0.05, 2.0, |g, p, _| {
        g.unary_backward(Unary::LeakyRelu, 0.2, p[0], p[1])
    });
    check("unary_backward Tanh (in dy)", &[&[3, 4]], -2.0, 2.0, |g, p, d| {
        let x = g.constant(&Tensor::from_f32(d, &[3, 4], &[0.3; 12])?);
        g.unary_backward(Unary::Tanh, 0.0, x, p[0])
    });
    check("pad (slice backward, grad of grad)", &[&[4, 5]], -1.0, 1.0, |g, p, _| {
        let s = g.slice(p[0], 1, 1, 3)?;
        let sq = g.unary(Unary::Square, s)?;
        let l = g.sum_all(sq)?;
        let gx = g.backward(l, &[p[0]])?[0];
        g.unary(Unary::Tanh, gx)
    });
    check("conv2d backward weight (grad of grad)", &[&[1, 2, 5, 5], &[2, 2, 3, 3]], -1.0, 1.0, |g, p, _| {
        let y = g.conv2d(p[0], p[1], tigel::ops::conv::Conv2d { stride: 2, padding: 1 })?;
        let y = g.unary(Unary::Square, y)?;
        let s = g.sum_all(y)?;
        let gw = g.backward(s, &[p[1]])?[0];
        g.unary(Unary::Tanh, gw)
    });
}

/// A fill (here a target and the gradient seed) is computed once when the plan is built: no run
/// dispatches it, and every run reads the same values.
#[test]
fn fills_are_computed_once_at_plan_time() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    for d in &devs {
        let mut g = Graph::new();
        let x = g.param(&Tensor::from_f32(d, &[2, 3], &[1.0, -2.0, 0.5, 3.0, 0.0, -1.0]).unwrap());
        let t = g.fill(&[2, 3], 2.0).unwrap();
        let diff = g.sub(x, t).unwrap();
        let sq = g.mul(diff, diff).unwrap();
        let loss = g.mean_all(sq).unwrap();
        let gx = g.backward(loss, &[x]).unwrap()[0];
        let plan = Plan::build(d, &g, &[loss, gx], |_| Ok(())).unwrap();
        assert!(plan.dispatch_counts().iter().all(|(k, _)| k != "layout::fill"), "{:?}", plan.dispatch_counts());
        for _ in 0..3 {
            plan.run(d).unwrap();
            let l = plan.value(loss).to_f32(d).unwrap()[0];
            assert!((l - 33.25 / 6.0).abs() < 1e-5, "loss {l}");
            let want: Vec<f32> = [-1.0f32, -4.0, -1.5, 1.0, -2.0, -3.0].iter().map(|v| v / 3.0).collect();
            assert_close("dx", &plan.value(gx).to_f32(d).unwrap(), &want, 1e-6, 1e-6);
        }
    }
}
