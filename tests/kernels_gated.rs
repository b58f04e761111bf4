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

/// Tolerance of the gate's backward as a matmul epilogue, G, W, H in [−1, 1] and u, v in [−2, 2]: dH is
/// an f32 dot product of up to 130 terms (error about √K·eps·Σ|terms|, ≤ 1e-5 here), then the gate's
/// backward multiplies it by v ⊙ silu'(u) (≤ 2.2) and adds a few ulp around one exp.
const GATE_BWD_TOL: Tol = Tol { atol: 5e-5, rtol: 2e-5 };

/// du, dv, dW of a gated MLP's output-projection backward for G [rows, out], W [hidden, out] and H, u,
/// v [rows, hidden] (dH = α·G·Wᵀ, dW = α·Hᵀ·G, added to a random term with `acc`): fused in one dispatch
/// or as the `matmul_pair` then `silu_gate_backward`.
fn run_gate_bwd(
    dev: &Device,
    (rows, hid, out): (usize, usize, usize),
    alpha: f32,
    acc: bool,
    fused: bool,
    seed: u64,
) -> Vec<Vec<f32>> {
    use tigel::ops::gated::{matmul_pair_silu_gate_backward, silu_gate_backward, GateProjectionGrads};
    use tigel::ops::matmul::{matmul_pair_into, MatmulJob, MatmulOpts};
    let mut rng = Rng::new(seed);
    let mut t = |s: &[usize], r: f32| Tensor::from_f32(dev, s, &rng.vec(s.iter().product(), -r, r)).unwrap();
    let (g, w, h, u, v) =
        (t(&[rows, out], 1.0), t(&[hid, out], 1.0), t(&[rows, hid], 1.0), t(&[rows, hid], 2.0), t(&[rows, hid], 2.0));
    let term = t(&[hid, out], 1.0);
    let o0 = MatmulOpts { trans_a: false, trans_b: true, alpha };
    let o1 = MatmulOpts { trans_a: true, trans_b: false, alpha };
    let (du, dv, dw) = if fused {
        let dw_into = acc.then_some(&term);
        let j = GateProjectionGrads { g: &g, w: &w, h: &h, u: &u, v: &v, opts: [o0, o1], dw_into };
        matmul_pair_silu_gate_backward(dev, j).unwrap()
    } else {
        let dh = Tensor::empty(dev, &[rows, hid], tigel::DType::F32).unwrap();
        let dw = if acc { term.clone() } else { Tensor::empty(dev, &[hid, out], tigel::DType::F32).unwrap() };
        let job = |a, b, opts, out, accumulate| MatmulJob { a, b, opts, out, accumulate };
        matmul_pair_into(dev, [job(&g, &w, o0, &dh, false), job(&h, &g, o1, &dw, acc)]).unwrap();
        let (du, dv) = silu_gate_backward(dev, &u, &v, &dh).unwrap();
        (du, dv, dw)
    };
    [du, dv, dw].iter().map(|x| x.to_f32(dev).unwrap()).collect()
}

#[test]
fn matmul_pair_silu_gate_backward_matches_the_unfused_ops_on_cpu_and_gpu() {
    // Odd shapes and 64-wide tile boundaries on either side, with and without alpha and accumulation.
    let cases = [
        ((1, 1, 1), 1.0, false),
        ((7, 5, 3), 0.5, true),
        ((65, 63, 33), 1.0, false),
        ((64, 64, 64), 1.0, true),
        ((130, 129, 65), 0.7, false),
        ((128, 96, 130), 1.0, false),
    ];
    let gpu = gpu();
    for (shape, alpha, acc) in cases {
        let s = seed();
        let fused = run_gate_bwd(&cpu(), shape, alpha, acc, true, s);
        let unfused = run_gate_bwd(&cpu(), shape, alpha, acc, false, s);
        let on_gpu = gpu.as_ref().map(|d| run_gate_bwd(d, shape, alpha, acc, true, s));
        for (i, what) in ["du", "dv", "dW"].iter().enumerate() {
            // The CPU twin runs the same arithmetic in the same order: the same numbers, not merely close.
            assert_eq!(fused[i], unfused[i], "{shape:?} alpha={alpha} acc={acc} {what}: fused vs unfused (cpu)");
            if let Some(gp) = &on_gpu {
                let t = GATE_BWD_TOL;
                let name = format!("{shape:?} alpha={alpha} acc={acc} {what}: gpu vs cpu twin");
                assert_close(&name, &gp[i], &fused[i], t.atol, t.rtol);
            }
        }
    }
}

/// A gated MLP (`linear_silu_gate`, reshapes as the GPT's, the output projection): its backward folds
/// the gate's backward into the projection's pair (graph_grad.rs checks the gradients it gives), except
/// where the projection reads an f16 weight (the fused kernels read f32 operands) or dH is itself a
/// gradient asked for (then it keeps its value).
#[test]
fn gated_mlp_backward_runs_the_gate_in_the_projection_pair() {
    let dev = cpu();
    for (half, want_dh) in [(false, false), (true, false), (false, true)] {
        let mut rng = Rng::new(seed());
        let mut g = Graph::new();
        let mut p = |g: &mut Graph, s: &[usize]| {
            g.param(&Tensor::from_f32(&dev, s, &rng.vec(s.iter().product(), -1.0, 1.0)).unwrap())
        };
        let (x, wg, wu, wd) = (p(&mut g, &[6, 5]), p(&mut g, &[5, 7]), p(&mut g, &[5, 7]), p(&mut g, &[7, 5]));
        let h = g.linear_silu_gate(x, wg, wu).unwrap();
        let h3 = g.reshape(h, &[2, 3, 7]).unwrap();
        let h2 = g.reshape(h3, &[6, 7]).unwrap();
        let w = if half { g.cast(wd, tigel::DType::F16).unwrap() } else { wd };
        let y = g.matmul(h2, w, tigel::ops::matmul::MatmulOpts::default()).unwrap();
        let loss = g.sum_all(y).unwrap();
        let wrt: &[NodeId] = if want_dh { &[x, wg, wu, wd, h2] } else { &[x, wg, wu, wd] };
        let grads = g.backward(loss, wrt).unwrap();
        let plan = Plan::build(&dev, &g, &grads, |_| Ok(())).unwrap();
        let counts = plan.dispatch_counts();
        let n = |k: &str| counts.iter().find(|(name, _)| name == k).map_or(0, |c| c.1);
        let fused = n("matmul_pair_gate::matmul_pair_silu_gate_bwd");
        let want = if half || want_dh { (0, 1) } else { (1, 0) };
        assert_eq!((fused, n("gated::silu_gate_bwd")), want, "half={half} want_dh={want_dh}: {counts:?}");
        if want_dh {
            // dH = 1·W_dᵀ per row (the loss sums y): every row is W_d's row sums.
            plan.run(&dev).unwrap();
            let dh = plan.value(grads[4]).to_f32(&dev).unwrap();
            let wdv = g.tensor_of(wd).unwrap().to_f32(&dev).unwrap();
            let rows: Vec<f32> = wdv.chunks(5).map(|r| r.iter().sum()).collect();
            assert_close("dH", &dh, &rows.repeat(6), 1e-6, 1e-6);
        }
    }
}
