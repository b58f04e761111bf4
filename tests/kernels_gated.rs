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

/// Tolerance of the gate as a matmul epilogue, inputs in [−1, 1]: u and v are f32 dot products of up
/// to 64 terms (error about √K·eps·Σ|terms|, ~1e-6 here), then the gate (a few ulp).
const LINEAR_TOL: Tol = Tol { atol: 2e-5, rtol: 2e-5 };

#[test]
fn linear_silu_gate_matches_reference_on_cpu_and_gpu() {
    for (rows, c, h) in [(1, 1, 1), (7, 5, 3), (70, 33, 130), (128, 64, 96)] {
        let ins = [uniform(&[rows, c], -1.0, 1.0), uniform(&[c, h], -1.0, 1.0), uniform(&[c, h], -1.0, 1.0)];
        check_op(&format!("linear_silu_gate {rows}x{c}x{h}"), &ins, LINEAR_TOL, |g, x| {
            g.linear_silu_gate(x[0], x[1], x[2])
        });
    }
}

/// h, dx, dW_gate, dW_up of Σ h ⊙ w for h = silu(x·W_gate) ⊙ (x·W_up), fused (one dispatch forward) or
/// as two matmuls and `silu_gate`.
fn run_linear(dev: &Device, (rows, c, hid): (usize, usize, usize), fused: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let mut p = |g: &mut Graph, s: &[usize]| {
        g.param(&Tensor::from_f32(dev, s, &rng.vec(s.iter().product(), -1.0, 1.0)).unwrap())
    };
    let (x, wg, wu, w) = (p(&mut g, &[rows, c]), p(&mut g, &[c, hid]), p(&mut g, &[c, hid]), p(&mut g, &[rows, hid]));
    let h = if fused {
        g.linear_silu_gate(x, wg, wu).unwrap()
    } else {
        let o = tigel::ops::matmul::MatmulOpts::default();
        let u = g.matmul(x, wg, o).unwrap();
        let v = g.matmul(x, wu, o).unwrap();
        g.silu_gate(u, v).unwrap()
    };
    let hw = g.mul(h, w).unwrap();
    let loss = g.sum_all(hw).unwrap();
    let grads = g.backward(loss, &[x, wg, wu]).unwrap();
    let keep: Vec<NodeId> = std::iter::once(h).chain(grads).collect();
    let plan = Plan::build(dev, &g, &keep, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    keep.iter().map(|&k| plan.value(k).to_f32(dev).unwrap()).collect()
}

#[test]
fn linear_silu_gate_matches_the_unfused_ops_on_cpu_and_gpu() {
    for shape in [(3, 4, 5), (70, 33, 130), (128, 64, 96)] {
        let s = seed();
        let fused = run_linear(&cpu(), shape, true, s);
        let unfused = run_linear(&cpu(), shape, false, s);
        let gpu = with_gpu(|d| run_linear(d, shape, true, s));
        for (i, what) in ["h", "dx", "dW_gate", "dW_up"].iter().enumerate() {
            // The CPU twins run the same arithmetic in the same order: the same numbers, not merely close.
            assert_eq!(fused[i], unfused[i], "{shape:?} {what}: fused vs unfused (cpu)");
            if let Some(gp) = &gpu {
                let t = LINEAR_TOL;
                assert_close(&format!("{shape:?} {what}: gpu vs cpu twin"), &gp[i], &fused[i], t.atol, t.rtol);
            }
        }
    }
}
