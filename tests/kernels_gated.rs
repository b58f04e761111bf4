//! Gated family (`Graph::silu_gate`, SwiGLU's silu(u) ⊙ v): the forward on the CPU twin and the GPU
//! against the op's f64 reference and each other (`check_op`), and the backward (du, dv) on both engines
//! against the unfused ops it replaces (`unary(Silu)` then `mul`). The finite-difference check is in
//! graph_grad.rs.
//!
//! Tolerance 1e-5 absolute + 1e-5 relative for u, v in [−4, 4]: each value is a handful of f32
//! operations around one exp (a few ulp on a GPU, whose exp is not correctly rounded), on values of size
//! ≤ 16.
mod common;
use common::*;
use tigel::graph::{Graph, NodeId, Plan};
use tigel::ops::elementwise::Unary;
use tigel::{Device, Tensor};

const TOL: Tol = Tol { atol: 1e-5, rtol: 1e-5 };

#[test]
fn silu_gate_matches_reference_on_cpu_and_gpu() {
    for shape in [vec![1], vec![7, 3], vec![1024, 344], vec![70_001]] {
        let ins = [uniform(&shape, -4.0, 4.0), uniform(&shape, -4.0, 4.0)];
        check_op(&format!("silu_gate {shape:?}"), &ins, TOL, |g, x| g.silu_gate(x[0], x[1]));
    }
}

/// y, du, dv of Σ y ⊙ w, fused or unfused.
fn run(dev: &Device, n: usize, fused: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let mut p = |g: &mut Graph| g.param(&Tensor::from_f32(dev, &[n], &rng.vec(n, -4.0, 4.0)).unwrap());
    let (u, v, w) = (p(&mut g), p(&mut g), p(&mut g));
    let y = if fused {
        g.silu_gate(u, v).unwrap()
    } else {
        let s = g.unary(Unary::Silu, u).unwrap();
        g.mul(s, v).unwrap()
    };
    let yw = g.mul(y, w).unwrap();
    let loss = g.sum_all(yw).unwrap();
    let grads = g.backward(loss, &[u, v]).unwrap();
    let keep: Vec<NodeId> = std::iter::once(y).chain(grads).collect();
    let plan = Plan::build(dev, &g, &keep, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    keep.iter().map(|&k| plan.value(k).to_f32(dev).unwrap()).collect()
}

#[test]
fn silu_gate_backward_matches_the_unfused_ops_on_cpu_and_gpu() {
    for n in [1, 300, 70_001] {
        let s = seed();
        let fused = run(&cpu(), n, true, s);
        let unfused = run(&cpu(), n, false, s);
        let gpu = with_gpu(|d| run(d, n, true, s));
        for (i, what) in ["y", "du", "dv"].iter().enumerate() {
            assert_close(&format!("n={n} {what}: fused vs unfused (cpu)"), &fused[i], &unfused[i], TOL.atol, TOL.rtol);
            if let Some(gp) = &gpu {
                assert_close(&format!("n={n} {what}: gpu vs cpu twin"), &gp[i], &fused[i], TOL.atol, TOL.rtol);
            }
        }
    }
}

#[test]
fn silu_gate_refuses_mismatched_shapes() {
    let d = cpu();
    let mut g = Graph::new();
    let a = g.input(&Tensor::from_f32(&d, &[2, 3], &[0.0; 6]).unwrap());
    let b = g.input(&Tensor::from_f32(&d, &[3, 2], &[0.0; 6]).unwrap());
    let e = g.silu_gate(a, b).unwrap_err().to_string();
    assert!(e.contains("silu_gate"), "{e}");
}
