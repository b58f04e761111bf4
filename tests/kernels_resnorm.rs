//! Resnorm family (`Graph::add_layer_norm`: the residual add fused with the layer norm that reads it,
//! and the one-dispatch layer-norm backward): the forward on the CPU twin and the GPU against the f64
//! reference and each other (`check_op`); and a residual chain (the GPT's pattern, where autodiff folds
//! the residual gradient's sum into the fused backward) against the same chain built from `add` and
//! `layer_norm`, forward and backward, on both engines. The finite-difference check is in graph_grad.rs.
//!
//! Inputs in [−1, 1] (γ in [0.5, 2]), rows of C ≤ 300 features. Tolerances: forward 2e-5 absolute +
//! 2e-5 relative (a row sum of ≤ 300 terms in different orders, a sqrt and a division, then γ ≤ 2:
//! tens of ulp of values ≤ ~8); backward 1e-4 + 1e-4 relative: dγ and dβ sum up to 1024 rows of terms
//! ≤ ~8 in different orders (one workgroup tree on the GPU, row chunks on the CPU and in the unfused
//! backward), and dx passes through several chained norms.
mod common;
use common::*;
use tigel::graph::{Graph, NodeId, Plan};
use tigel::ops::matmul::MatmulOpts;
use tigel::{Device, Tensor};

const FWD: Tol = Tol { atol: 2e-5, rtol: 2e-5 };
const BWD: f32 = 1e-4;

#[test]
fn add_layer_norm_matches_reference_on_cpu_and_gpu() {
    for (n, c) in [(1, 1), (5, 7), (64, 128), (1024, 300)] {
        let ins = [
            uniform(&[n, c], -1.0, 1.0),
            uniform(&[n, c], -1.0, 1.0),
            uniform(&[c], 0.5, 2.0),
            uniform(&[c], -1.0, 1.0),
        ];
        check_op(&format!("add_layer_norm y [{n}, {c}]"), &ins, FWD, |g, x| {
            Ok(g.add_layer_norm(x[0], x[1], x[2], x[3], 1e-5)?.1)
        });
        check_op(&format!("add_layer_norm s [{n}, {c}]"), &ins, FWD, |g, x| {
            Ok(g.add_layer_norm(x[0], x[1], x[2], x[3], 1e-5)?.0)
        });
    }
}

/// A residual chain of `depth` steps x ← x + h·W_i, h ← LN_i(x) (fused, or `add` then `layer_norm`), then
/// Σ h ⊙ w: the last h, then the gradients of x0, h0-side a0, every W, γ and β.
fn chain(dev: &Device, (n, c, depth): (usize, usize, usize), fused: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let mut p = |g: &mut Graph, s: &[usize], lo: f32, hi: f32| {
        g.param(&Tensor::from_f32(dev, s, &rng.vec(s.iter().product(), lo, hi)).unwrap())
    };
    let (x0, a0) = (p(&mut g, &[n, c], -1.0, 1.0), p(&mut g, &[n, c], -1.0, 1.0));
    let mut params = vec![x0, a0];
    let (mut x, mut a) = (x0, a0);
    let mut h = x0;
    for _ in 0..depth {
        let (gamma, beta, w) = (p(&mut g, &[c], 0.5, 2.0), p(&mut g, &[c], -1.0, 1.0), p(&mut g, &[c, c], -0.2, 0.2));
        params.extend([gamma, beta, w]);
        (x, h) = if fused {
            g.add_layer_norm(x, a, gamma, beta, 1e-5).unwrap()
        } else {
            let s = g.add(x, a).unwrap();
            (s, g.layer_norm(s, gamma, beta, 1e-5).unwrap())
        };
        a = g.matmul(h, w, MatmulOpts::default()).unwrap();
    }
    let wt = p(&mut g, &[n, c], -1.0, 1.0);
    let hw = g.mul(h, wt).unwrap();
    let loss = g.sum_all(hw).unwrap();
    let grads = g.backward(loss, &params).unwrap();
    let keep: Vec<NodeId> = std::iter::once(h).chain(grads).collect();
    let plan = Plan::build(dev, &g, &keep, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    keep.iter().map(|&k| plan.value(k).to_f32(dev).unwrap()).collect()
}

#[test]
fn residual_chain_matches_add_then_layer_norm_on_cpu_and_gpu() {
    for shape in [(3, 5, 1), (16, 33, 3), (1024, 128, 2)] {
        let s = seed();
        let fused = chain(&cpu(), shape, true, s);
        let plain = chain(&cpu(), shape, false, s);
        let gpu = with_gpu(|d| chain(d, shape, true, s));
        for (i, (f, u)) in fused.iter().zip(&plain).enumerate() {
            let tol = if i == 0 { FWD.atol } else { BWD };
            assert_close(&format!("{shape:?} output {i}: fused vs unfused (cpu)"), f, u, tol, tol);
            if let Some(gp) = &gpu {
                assert_close(&format!("{shape:?} output {i}: gpu vs cpu twin"), &gp[i], f, tol, tol);
            }
        }
    }
}

#[test]
fn add_layer_norm_refuses_bad_shapes() {
    let d = cpu();
    let mut g = Graph::new();
    let mut t = |s: &[usize]| g.input(&Tensor::from_f32(&d, s, &vec![0.5; s.iter().product()]).unwrap());
    let (x, a, c4, c3) = (t(&[2, 4]), t(&[4, 2]), t(&[4]), t(&[3]));
    assert!(g.add_layer_norm(x, a, c4, c4, 1e-5).is_err());
    let e = g.add_layer_norm(x, x, c3, c4, 1e-5).unwrap_err().to_string();
    assert!(e.contains("add_layer_norm"), "{e}");
    assert!(g.add_layer_norm(x, x, c4, c4, 0.0).is_err());
}
