//! QK-norm family (the fused per-head layer norm of q and k with rotary positions, `Graph::qk_norm`):
//! the forward on the CPU twin and the GPU against the op's f64 reference and each other (`check_op`);
//! the backward (dqkv and the four norm parameters' gradients) on the GPU against the CPU twin; and the
//! fused op against the ops it replaces (slices, two layer norms on [B·T·heads, D] views, a concat and
//! rope), forward and backward, on both engines. The finite-difference check is in graph_grad.rs.
//!
//! Inputs: qkv in [−1, 1], γ in [0.5, 2], β in [−1, 1], table entries (cos, sin) of real angles.
//! Tolerances: forward 2e-5 absolute + 2e-5 relative: each output is a head's mean and variance
//! (D ≤ 32 terms summed in different orders by the two engines and the unfused layer norm, a few ulp
//! each), a sqrt and a division (2.5 ulp on a GPU), times γ ≤ 2 plus β, then one rotation (two products
//! and a sum): a few tens of ulp of values of size ≤ 4, well under 2e-5. Backward 1e-4 absolute + 1e-4
//! relative: dqkv adds two head sums of D terms and a multiplication by rstd (up to ~1/0.3 for heads of
//! values in [−1, 1]); dγ and dβ sum B·T·heads terms of size ≤ ~8 in different orders (fixed trees
//! here, row chunks in the unfused layer norm), whose rounding grows with the square root of the count.
mod common;
use common::*;
use tigel::graph::{Graph, NodeId, Plan};
use tigel::ops::qknorm as qk;
use tigel::ops::rope::rope_table;
use tigel::{Device, Tensor};

const FWD: Tol = Tol { atol: 2e-5, rtol: 2e-5 };
const BWD: f32 = 1e-4;

/// (B, T, heads, D, rope): one head of 2, odd counts, no rope with an odd head size, the default
/// GPT's attention shape (16 · 128 rows of 4 heads of 32, past 65535 threads... in workgroups of 256).
const CASES: [(usize, usize, usize, usize, bool); 5] =
    [(1, 1, 1, 2, true), (2, 5, 2, 4, true), (3, 7, 3, 5, false), (2, 9, 3, 8, false), (16, 128, 4, 32, true)];

fn ins(b: usize, t: usize, h: usize, d: usize) -> Vec<In> {
    vec![
        uniform(&[b, t, 3 * h * d], -1.0, 1.0),
        uniform(&[d], 0.5, 2.0),
        uniform(&[d], -1.0, 1.0),
        uniform(&[d], 0.5, 2.0),
        uniform(&[d], -1.0, 1.0),
    ]
}

#[test]
fn qk_norm_matches_reference_on_cpu_and_gpu() {
    for (b, t, h, d, rope) in CASES {
        let name = format!("qk_norm B={b} T={t} heads={h} D={d} rope={rope}");
        // The table as an input of (cos, sin)-sized entries, so the reference sees it too.
        let mut inputs = ins(b, t, h, d);
        if rope {
            inputs.push(uniform(&[t, d / 2, 2], -1.0, 1.0));
        }
        check_op(&name, &inputs, FWD, |g, x| g.qk_norm(x[0], [x[1], x[2], x[3], x[4]], x.get(5).copied(), h, 1e-5));
    }
}

/// The output and the gradients of qkv, γ_q, β_q, γ_k, β_k of Σ y ⊙ w, fused or through the ops it
/// replaces.
fn run(dev: &Device, (b, t, h, d, rope): (usize, usize, usize, usize, bool), fused: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let c = h * d;
    let mut g = Graph::new();
    let mut param = |g: &mut Graph, shape: &[usize], lo: f32, hi: f32| {
        let n = shape.iter().product();
        g.param(&Tensor::from_f32(dev, shape, &rng.vec(n, lo, hi)).unwrap())
    };
    let x = param(&mut g, &[b, t, 3 * c], -1.0, 1.0);
    let (gq, bq) = (param(&mut g, &[d], 0.5, 2.0), param(&mut g, &[d], -1.0, 1.0));
    let (gk, bk) = (param(&mut g, &[d], 0.5, 2.0), param(&mut g, &[d], -1.0, 1.0));
    let w = param(&mut g, &[b, t, 3 * c], -1.0, 1.0);
    let table = rope.then(|| g.constant(&Tensor::from_f32(dev, &[t, d / 2, 2], &rope_table(t, d, 10_000.0)).unwrap()));
    let y = if fused {
        g.qk_norm(x, [gq, bq, gk, bk], table, h, 1e-5).unwrap()
    } else {
        let norm = |g: &mut Graph, z: NodeId, gamma: NodeId, beta: NodeId| {
            let z = g.reshape(z, &[b * t * h, d]).unwrap();
            let z = g.layer_norm(z, gamma, beta, 1e-5).unwrap();
            g.reshape(z, &[b, t, c]).unwrap()
        };
        let (q, k, v) = (g.slice(x, 2, 0, c).unwrap(), g.slice(x, 2, c, c).unwrap(), g.slice(x, 2, 2 * c, c).unwrap());
        let (q, k) = (norm(&mut g, q, gq, bq), norm(&mut g, k, gk, bk));
        let y = g.concat(&[q, k, v], 2).unwrap();
        match table {
            Some(tab) => g.rope(y, tab, h).unwrap(),
            None => y,
        }
    };
    let yw = g.mul(y, w).unwrap();
    let loss = g.sum_all(yw).unwrap();
    let grads = g.backward(loss, &[x, gq, bq, gk, bk]).unwrap();
    let keep: Vec<NodeId> = std::iter::once(y).chain(grads).collect();
    let plan = Plan::build(dev, &g, &keep, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    keep.iter().map(|&k| plan.value(k).to_f32(dev).unwrap()).collect()
}

#[test]
fn qk_norm_backward_matches_cpu_twin_and_the_unfused_ops() {
    let names = ["y", "dqkv", "dgamma_q", "dbeta_q", "dgamma_k", "dbeta_k"];
    for case in CASES {
        let s = seed();
        let fused_cpu = run(&cpu(), case, true, s);
        let unfused_cpu = run(&cpu(), case, false, s);
        let gpu = with_gpu(|d| (run(d, case, true, s), run(d, case, false, s)));
        for (i, n) in names.iter().enumerate() {
            let tol = if i == 0 { FWD.atol } else { BWD };
            let what = format!("{case:?} {n}");
            assert_close(&format!("{what}: fused vs unfused (cpu)"), &fused_cpu[i], &unfused_cpu[i], tol, tol);
            if let Some((fg, ug)) = &gpu {
                assert_close(&format!("{what}: gpu vs cpu twin"), &fg[i], &fused_cpu[i], tol, tol);
                assert_close(&format!("{what}: fused vs unfused (gpu)"), &fg[i], &ug[i], tol, tol);
            }
        }
    }
}

#[test]
fn qk_norm_refuses_bad_shapes() {
    let dev = cpu();
    let mut g = Graph::new();
    let t = |g: &mut Graph, s: &[usize]| g.input(&Tensor::from_f32(&dev, s, &vec![0.5; s.iter().product()]).unwrap());
    let x = t(&mut g, &[2, 3, 24]);
    let p4 = t(&mut g, &[4]);
    let p3 = t(&mut g, &[3]);
    // 24 = 3 · 2 heads · 4: γ must be [4].
    let e = g.qk_norm(x, [p3, p4, p4, p4], None, 2, 1e-5).unwrap_err().to_string();
    assert!(e.contains("qk_norm") && e.contains("[4]"), "{e}");
    // 24 is not 3 · 5 heads · D.
    let e = g.qk_norm(x, [p4, p4, p4, p4], None, 5, 1e-5).unwrap_err().to_string();
    assert!(e.contains("qk_norm"), "{e}");
    // A table for a head size of 2, not 4.
    let tab = t(&mut g, &[3, 1, 2]);
    assert!(g.qk_norm(x, [p4, p4, p4, p4], Some(tab), 2, 1e-5).is_err());
    let e = g.qk_norm(x, [p4, p4, p4, p4], None, 2, 0.0).unwrap_err().to_string();
    assert!(e.contains("eps"), "{e}");
}

#[test]
fn qk_norm_backward_in_one_dispatch_matches_the_two_kernels() {
    // qk_norm_bwd_fused runs qk_norm_bwd_dx's and qk_norm_bwd_params' code: the same numbers, on each engine.
    let check = |dev: &Device, engine: &str| {
        let mut rng = Rng::new(seed());
        for (b, t, h, d, rope) in CASES {
            let c = h * d;
            let x = Tensor::from_f32(dev, &[b, t, 3 * c], &rng.vec(b * t * 3 * c, -1.0, 1.0)).unwrap();
            let p = |rng: &mut Rng, lo, hi| Tensor::from_f32(dev, &[d], &rng.vec(d, lo, hi)).unwrap();
            let (gq, bq, gk, bk) =
                (p(&mut rng, 0.5, 2.0), p(&mut rng, -1.0, 1.0), p(&mut rng, 0.5, 2.0), p(&mut rng, -1.0, 1.0));
            let dy = Tensor::from_f32(dev, &[b, t, 3 * c], &rng.vec(b * t * 3 * c, -1.0, 1.0)).unwrap();
            let table = rope.then(|| Tensor::from_f32(dev, &[t, d / 2, 2], &rope_table(t, d, 10_000.0)).unwrap());
            let (_, stats) = qk::qk_norm(dev, &x, [&gq, &bq, &gk, &bk], table.as_ref(), h, 1e-5).unwrap();
            let run =
                |one| qk::qk_norm_backward_with(dev, &x, [&gq, &gk], &stats, table.as_ref(), &dy, h, one).unwrap();
            let ((dx1, g1), (dx2, g2)) = (run(true), run(false));
            let what = format!("{engine} {:?}", (b, t, h, d, rope));
            assert_eq!(dx1.to_f32(dev).unwrap(), dx2.to_f32(dev).unwrap(), "{what} dqkv");
            for (k, (a, w)) in g1.iter().zip(&g2).enumerate() {
                assert_eq!(a.to_f32(dev).unwrap(), w.to_f32(dev).unwrap(), "{what} parameter gradient {k}");
            }
        }
    };
    check(&cpu(), "cpu");
    with_gpu(|d| check(d, "gpu"));
}
