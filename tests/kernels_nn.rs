//! Neural-network kernels: unary backward (elementwise family), losses (cross-entropy fused with
//! log-softmax, binary cross-entropy with logits, MSE composed) and dropout. GPU vs CPU twin, the CPU twin's
//! gradients against f64 central differences of the forward formulas (tests named `*grad*`), identities,
//! dropout statistics and replay behaviour, and bad input.
//!
//! Tolerances, GPU vs CPU twin:
//! * unary_backward: 2e-5 absolute + 2e-5 relative, as the forward ops: the derivatives go through exp,
//!   sin, cos and inverseSqrt, which GPUs do not round correctly (a few ulp), then one multiply by dy.
//! * cross-entropy loss and lse: 1e-5 absolute. Both are log(sum) + (max - x) of magnitude up to
//!   16 + log(V) < 23 (logits in [-8, 8]): a rounding there is 1.9e-6, GPU log adds a few ulp of log(V),
//!   and a relative error e of the sum (GPU exp, len/256 + 8 additions) is an absolute error e in its log.
//! * cross-entropy dlogits: 1e-6 absolute + 1e-5 relative: softmax(x) = exp(x - lse) with lse off by
//!   ~2e-6 absolute between engines (relative 2e-6 in the probability) and GPU exp a few ulp; the absolute
//!   part covers probabilities so small that relative error means nothing.
//! * bce forward: 1e-5 absolute + 1e-6 relative. max(x, 0) - x t reaches 30 (|x| <= 30), where a driver
//!   may fuse x t into the subtraction (one rounding less, ulp(30) = 1.9e-6 apart); log(1 + exp(-|x|)) is
//!   below 0.7 and carries a few ulp of GPU exp/log.
//! * bce backward: 1e-6 absolute + 1e-5 relative: sigmoid through GPU exp (a few ulp of a value <= 1),
//!   minus t, times dy.
//! * dropout: the masks are compared exactly (integer Philox and an exact comparison), the kept values to
//!   one f32 ulp (x times the same f32 scale: one correctly rounded multiply on both engines).
//!
//! Finite-difference checks (CPU twin, f32, against central differences of an f64 reimplementation of the
//! forward formula, h = 1e-5 * max(1, |x|)): 1e-4 relative, plus an absolute floor that the f32 evaluation
//! of the analytic formula needs where the derivative nearly vanishes (stated per test). The f64 difference
//! quotient itself is accurate to about 1e-9 relative here (truncation h^2 f''' / 6, rounding 1e-16 |f| / h).
mod common;
use common::*;
use tigel::graph::reference::unary_f64;
use tigel::host::philox as crng;
use tigel::ops::dropout::{self as dr, Dropout};
use tigel::ops::elementwise::{self as ew, Unary};
use tigel::ops::loss;
use tigel::ops::softmax;
use tigel::{Device, Tensor};

const ULP: f32 = 1.0 / (1u32 << 23) as f32;

// ---------------------------------------------------------------------------------------------------
// unary_backward

const SIZES: [usize; 3] = [1, 7, 4099];
const ALPHA: f32 = 0.2;

fn domain(op: Unary) -> (f32, f32) {
    match op {
        Unary::Log | Unary::Sqrt | Unary::Rsqrt => (0.05, 10.0),
        Unary::Recip => (0.25, 4.0),
        Unary::Exp => (-10.0, 10.0),
        _ => (-6.0, 6.0),
    }
}

fn unary_bwd(d: &Device, op: Unary, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let tx = Tensor::from_f32(d, &[x.len()], x).unwrap();
    let tdy = Tensor::from_f32(d, &[dy.len()], dy).unwrap();
    let dx = ew::unary_backward(d, op, &tx, &tdy, ALPHA).unwrap();
    assert_eq!(dx.shape, vec![x.len()]);
    dx.to_f32(d).unwrap()
}

/// Central difference of `f` at x in f64.
fn central(mut f: impl FnMut(f64) -> f64, x: f64) -> f64 {
    let h = 1e-5 * x.abs().max(1.0);
    (f(x + h) - f(x - h)) / (2.0 * h)
}

#[test]
fn unary_backward_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for op in Unary::ALL {
        for n in SIZES {
            let (lo, hi) = domain(op);
            let x = rng.vec(n, lo, hi);
            let dy = rng.vec(n, -2.0, 2.0);
            let want = unary_bwd(&cpu, op, &x, &dy);
            let got = unary_bwd(&gpu, op, &x, &dy);
            assert_close(&format!("{op:?}' n={n}"), &got, &want, 2e-5, 2e-5);
        }
    }
}

/// Atol 1e-6 |dy|: the f32 analytic formula is accurate to a few ulp of its O(1) terms (cos near its
/// zeros, Gelu and Silu near their stationary points, the vanishing tails), which is absolute, not relative.
#[test]
fn unary_backward_grad_matches_finite_differences() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let n = 2000;
    for op in Unary::ALL {
        let (lo, hi) = domain(op);
        // Keep clear of the kinks of abs, relu, leaky_relu and sign, where the difference quotient straddles.
        let x: Vec<f32> = rng.vec(n, lo, hi).into_iter().map(|v| if v.abs() < 0.01 { v + 0.02 } else { v }).collect();
        let dy = rng.vec(n, -2.0, 2.0);
        let got = unary_bwd(&cpu, op, &x, &dy);
        for i in 0..n {
            let fd = central(|v| unary_f64(op, v, ALPHA as f64), x[i] as f64) * dy[i] as f64;
            let err = (got[i] as f64 - fd).abs();
            let tol = 1e-4 * fd.abs() + 1e-6 * (dy[i] as f64).abs();
            assert!(err <= tol, "{op:?}'({}) * {}: twin {} vs finite difference {fd}", x[i], dy[i], got[i]);
        }
    }
}

#[test]
fn unary_backward_kinks_take_the_documented_values() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        let x = [0.0f32, -0.0, 3.0, -3.0];
        let dy = [1.5f32; 4];
        let cases: [(Unary, [f32; 4]); 4] = [
            (Unary::Abs, [0.0, 0.0, 1.5, -1.5]),
            (Unary::Relu, [0.0, 0.0, 1.5, 0.0]),
            (Unary::LeakyRelu, [1.5 * ALPHA, 1.5 * ALPHA, 1.5, 1.5 * ALPHA]),
            (Unary::Sign, [0.0; 4]),
        ];
        for (op, want) in cases {
            assert_eq!(unary_bwd(d, op, &x, &dy), want, "{op:?}' on {}", d.name());
        }
        // Saturated tails give exact zeros or ones, never NaN.
        let big = [-100.0f32, 100.0];
        let ones = [1.0f32; 2];
        assert_eq!(unary_bwd(d, Unary::Tanh, &big, &ones), [0.0, 0.0], "{}", d.name());
        assert_eq!(unary_bwd(d, Unary::Sigmoid, &big, &ones), [0.0, 0.0], "{}", d.name());
        assert_eq!(unary_bwd(d, Unary::Silu, &big, &ones), [0.0, 1.0], "{}", d.name());
        assert_eq!(unary_bwd(d, Unary::Gelu, &big, &ones), [0.0, 1.0], "{}", d.name());
    }
}

// ---------------------------------------------------------------------------------------------------
// cross-entropy

const CE_N: [usize; 3] = [1, 7, 300];
const CE_V: [usize; 4] = [1, 5, 257, 1000];

struct Ce {
    loss: Vec<f32>,
    lse: Vec<f32>,
    dx: Vec<f32>,
}

fn ce_run(d: &Device, n: usize, v: usize, x: &[f32], t: &[u32], g: &[f32]) -> Ce {
    let tx = Tensor::from_f32(d, &[n, v], x).unwrap();
    let tt = Tensor::from_u32(d, &[n], t).unwrap();
    let tg = Tensor::from_f32(d, &[n], g).unwrap();
    let (loss, lse) = loss::cross_entropy(d, &tx, &tt).unwrap();
    assert_eq!((loss.shape.clone(), lse.shape.clone()), (vec![n], vec![n]));
    let dx = loss::cross_entropy_backward(d, &tx, &tt, &lse, &tg).unwrap();
    assert_eq!(dx.shape, vec![n, v]);
    Ce { loss: loss.to_f32(d).unwrap(), lse: lse.to_f32(d).unwrap(), dx: dx.to_f32(d).unwrap() }
}

fn targets(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(v) as u32).collect()
}

/// log-sum-exp of a row in f64.
fn lse_f64(row: &[f64]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    m + row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

#[test]
fn cross_entropy_matches_cpu_twin() {
    // Every variant of the forward (workgroup sizes, subgroups), the same assertions.
    for_each_variant(&[&tigel::kernels::loss::CROSS_ENTROPY_FWD], |_| cross_entropy_matches_cpu_twin_once());
}

fn cross_entropy_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in CE_N {
        for v in CE_V {
            let x = rng.vec(n * v, -8.0, 8.0);
            let t = targets(&mut rng, n, v);
            let g = rng.vec(n, 0.1, 2.0);
            let want = ce_run(&cpu, n, v, &x, &t, &g);
            let got = ce_run(&gpu, n, v, &x, &t, &g);
            let what = format!("[{n}, {v}]");
            assert_close(&format!("loss {what}"), &got.loss, &want.loss, 1e-5, 0.0);
            assert_close(&format!("lse {what}"), &got.lse, &want.lse, 1e-5, 0.0);
            assert_close(&format!("dlogits {what}"), &got.dx, &want.dx, 1e-6, 1e-5);
        }
    }
}

#[test]
fn cross_entropy_rows_fold_past_the_dimension_limit() {
    for_each_variant(&[&tigel::kernels::loss::CROSS_ENTROPY_FWD], |_| cross_entropy_rows_fold_once());
}

fn cross_entropy_rows_fold_once() {
    // 70000 rows: more workgroups than the 65535 per-dimension limit, so the forward grid folds into y.
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (n, v) = (70000, 2);
    let x = rng.vec(n * v, -8.0, 8.0);
    let t = targets(&mut rng, n, v);
    let g = vec![1.0 / n as f32; n];
    let want = ce_run(&cpu, n, v, &x, &t, &g);
    let got = ce_run(&gpu, n, v, &x, &t, &g);
    assert_close("loss", &got.loss, &want.loss, 1e-5, 0.0);
    assert_close("lse", &got.lse, &want.lse, 1e-5, 0.0);
    assert_close("dlogits", &got.dx, &want.dx, 1e-6, 1e-5);
}

/// The twin's loss and lse against f64 (1e-5 absolute, as GPU vs twin: the twin rounds the same way), and
/// its gradient against central differences of the f64 loss sum_n g[n] (lse(x_n) - x_n[t_n]); atol
/// 1e-7 |g|: the twin's p - [v == t] rounds at 6e-8 near -1, and probabilities near 1e-7 carry
/// that much absolute error relative to the difference quotient's 1e-10.
#[test]
fn cross_entropy_grad_matches_finite_differences() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (n, v) in [(1, 1), (7, 5), (3, 257), (2, 1000)] {
        let x = rng.vec(n * v, -8.0, 8.0);
        let t = targets(&mut rng, n, v);
        let g = rng.vec(n, 0.1, 2.0);
        let got = ce_run(&cpu, n, v, &x, &t, &g);
        for r in 0..n {
            let mut row: Vec<f64> = x[r * v..(r + 1) * v].iter().map(|&a| a as f64).collect();
            let tr = t[r] as usize;
            let lse = lse_f64(&row);
            assert!((got.lse[r] as f64 - lse).abs() < 1e-5, "[{n}, {v}] row {r}: lse {} vs {lse}", got.lse[r]);
            let want_loss = lse - row[tr];
            assert!((got.loss[r] as f64 - want_loss).abs() < 1e-5, "row {r}: loss {} vs {want_loss}", got.loss[r]);
            for k in 0..v {
                let x0 = row[k];
                let fd = central(
                    |a| {
                        row[k] = a;
                        let l = lse_f64(&row) - row[tr];
                        row[k] = x0;
                        l
                    },
                    x0,
                ) * g[r] as f64;
                let dx = got.dx[r * v + k] as f64;
                let tol = 1e-4 * fd.abs() + 1e-7 * g[r] as f64;
                assert!((dx - fd).abs() <= tol, "[{n}, {v}] d/dx[{r}, {k}] (target {tr}): twin {dx} vs {fd}");
            }
        }
    }
}

#[test]
fn cross_entropy_is_minus_log_softmax_at_the_target_and_gradient_rows_sum_to_zero() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        for (n, v) in [(7, 5), (300, 257), (5, 1000)] {
            let x = rng.vec(n * v, -8.0, 8.0);
            let t = targets(&mut rng, n, v);
            let g = rng.vec(n, 0.1, 2.0);
            let got = ce_run(d, n, v, &x, &t, &g);
            let ls = softmax::log_softmax(d, &Tensor::from_f32(d, &[n, v], &x).unwrap()).unwrap().to_f32(d).unwrap();
            let want: Vec<f32> = (0..n).map(|r| -ls[r * v + t[r] as usize]).collect();
            // Both are (max - x) + log(sum) through the same reduction: 1e-5 as GPU vs twin.
            assert_close(&format!("{} [{n}, {v}]", d.name()), &got.loss, &want, 1e-5, 0.0);
            for (r, (row, &gr)) in got.dx.chunks(v).zip(&g).enumerate() {
                // V probabilities, each within a few 1e-7 relative, sum to 1 within 1e-5; times g.
                let s: f64 = row.iter().map(|&a| a as f64).sum();
                assert!(s.abs() <= 1e-5 * gr as f64, "{} [{n}, {v}] row {r}: gradient sums to {s}", d.name());
            }
        }
    }
}

#[test]
fn cross_entropy_mean_and_its_backward() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, v) = (13, 37);
    let x = rng.vec(n * v, -8.0, 8.0);
    let t = targets(&mut rng, n, v);
    let per_row = ce_run(&devs[0], n, v, &x, &t, &vec![1.0 / n as f32; n]);
    let mean = per_row.loss.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    for d in &devs {
        let tx = Tensor::from_f32(d, &[n, v], &x).unwrap();
        let tt = Tensor::from_u32(d, &[n], &t).unwrap();
        let (m, lse) = loss::cross_entropy_mean(d, &tx, &tt).unwrap();
        assert_eq!(m.shape, vec![1]);
        assert_close(&format!("mean on {}", d.name()), &m.to_f32(d).unwrap(), &[mean as f32], 1e-5, 0.0);
        let dx = loss::cross_entropy_mean_backward(d, &tx, &tt, &lse).unwrap().to_f32(d).unwrap();
        assert_close(&format!("mean backward on {}", d.name()), &dx, &per_row.dx, 1e-6, 1e-5);
        // The one-dispatch form (g of one element, scaled by 1/N in the kernel) against g = 1/N per row:
        // bit for bit with g = 1, and g[0]/N per row for any g.
        let one = Tensor::from_f32(d, &[1], &[1.0]).unwrap();
        let fused = loss::cross_entropy_mean_backward_g(d, &tx, &tt, &lse, &one).unwrap().to_f32(d).unwrap();
        assert_eq!(fused, dx, "fused mean backward on {}", d.name());
        let gv = rng.uniform(-3.0, 3.0);
        let g1 = Tensor::from_f32(d, &[1], &[gv]).unwrap();
        let gn = Tensor::from_f32(d, &[n], &vec![gv * (1.0 / n as f32); n]).unwrap();
        let fused = loss::cross_entropy_mean_backward_g(d, &tx, &tt, &lse, &g1).unwrap().to_f32(d).unwrap();
        let unfused = loss::cross_entropy_backward(d, &tx, &tt, &lse, &gn).unwrap().to_f32(d).unwrap();
        assert_eq!(fused, unfused, "fused vs unfused mean backward, g = {gv}, on {}", d.name());
    }
}

/// The GPU's one-dispatch mean backward against the CPU twin's, on random logits and upstream g.
#[test]
fn cross_entropy_mean_backward_g_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (n, v) in [(1, 5), (13, 37), (300, 257)] {
        let x = rng.vec(n * v, -8.0, 8.0);
        let t = targets(&mut rng, n, v);
        let gv = rng.uniform(-3.0, 3.0);
        let run = |d: &Device| {
            let tx = Tensor::from_f32(d, &[n, v], &x).unwrap();
            let tt = Tensor::from_u32(d, &[n], &t).unwrap();
            let (_, lse) = loss::cross_entropy_mean(d, &tx, &tt).unwrap();
            let g = Tensor::from_f32(d, &[1], &[gv]).unwrap();
            loss::cross_entropy_mean_backward_g(d, &tx, &tt, &lse, &g).unwrap().to_f32(d).unwrap()
        };
        assert_close(&format!("mean backward g n={n} v={v}"), &run(&gpu), &run(&cpu), 1e-6, 1e-5);
    }
}

#[test]
fn cross_entropy_clamps_out_of_range_targets_and_check_targets_reports_them() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, v) = (4, 9);
    let x = rng.vec(n * v, -4.0, 4.0);
    let bad = [2u32, 9, 1000, u32::MAX];
    let clamped = [2u32, 8, 8, 8];
    let g = vec![1.0f32; n];
    for d in &devs {
        let a = ce_run(d, n, v, &x, &bad, &g);
        let b = ce_run(d, n, v, &x, &clamped, &g);
        assert_eq!(a.loss, b.loss, "{}", d.name());
        assert_eq!(a.dx, b.dx, "{}", d.name());
        let e = loss::check_targets_tensor(d, &Tensor::from_u32(d, &[n], &bad).unwrap(), v).unwrap_err().to_string();
        assert!(e.contains("target 1") && e.contains("class 9") && e.contains("9 classes"), "{e}");
    }
    assert!(loss::check_targets(&clamped, v).is_ok());
    assert!(loss::check_targets(&[], 0).is_ok());
    assert!(loss::check_targets(&[0], 0).is_err());
}

// ---------------------------------------------------------------------------------------------------
// binary cross-entropy with logits

fn bce_run(d: &Device, x: &[f32], t: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let tx = Tensor::from_f32(d, &[n], x).unwrap();
    let tt = Tensor::from_f32(d, &[n], t).unwrap();
    let tdy = Tensor::from_f32(d, &[dy.len()], dy).unwrap();
    let l = loss::bce_logits(d, &tx, &tt).unwrap().to_f32(d).unwrap();
    let dx = loss::bce_logits_backward(d, &tx, &tt, &tdy).unwrap().to_f32(d).unwrap();
    (l, dx)
}

/// -t log(sigmoid(x)) - (1 - t) log(1 - sigmoid(x)) in f64, through softplus so large |x| stays exact.
fn bce_f64(x: f64, t: f64) -> f64 {
    let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
    t * softplus(-x) + (1.0 - t) * softplus(x)
}

#[test]
fn bce_logits_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in SIZES {
        for full in [false, true] {
            let x = rng.vec(n, -30.0, 30.0);
            let t = rng.vec(n, 0.0, 1.0);
            let dy = if full { rng.vec(n, -2.0, 2.0) } else { vec![rng.uniform(0.1, 2.0)] };
            let (lw, dw) = bce_run(&cpu, &x, &t, &dy);
            let (lg, dg) = bce_run(&gpu, &x, &t, &dy);
            assert_close(&format!("bce n={n}"), &lg, &lw, 1e-5, 1e-6);
            assert_close(&format!("bce' n={n} full={full}"), &dg, &dw, 1e-6, 1e-5);
        }
    }
}

/// Forward against f64 within 1e-5 (a few roundings of values up to 30, as GPU vs twin); backward
/// against central differences with atol 5e-7 |dy|: sigmoid(x) - t is formed from a few f32 roundings of
/// a value <= 1, which is absolute error where the two nearly cancel.
#[test]
fn bce_logits_grad_matches_finite_differences() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let n = 4099;
    for full in [false, true] {
        let x = rng.vec(n, -30.0, 30.0);
        let t = rng.vec(n, 0.0, 1.0);
        let dy = if full { rng.vec(n, -2.0, 2.0) } else { vec![rng.uniform(0.1, 2.0)] };
        let (l, dx) = bce_run(&cpu, &x, &t, &dy);
        for i in 0..n {
            let (xi, ti) = (x[i] as f64, t[i] as f64);
            let want = bce_f64(xi, ti);
            assert!((l[i] as f64 - want).abs() <= 1e-5 + 1e-6 * want, "bce({xi}, {ti}) = {} vs {want}", l[i]);
            let d = dy[if full { i } else { 0 }] as f64;
            let fd = central(|a| bce_f64(a, ti), xi) * d;
            let tol = 1e-4 * fd.abs() + 5e-7 * d.abs();
            assert!((dx[i] as f64 - fd).abs() <= tol, "bce'({xi}, {ti}) * {d}: twin {} vs {fd}", dx[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// MSE (composed)

#[test]
fn mse_and_its_backward_match_a_reference() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let shape = [17, 31];
    let n = 17 * 31;
    let p = rng.vec(n, -3.0, 3.0);
    let t = rng.vec(n, -3.0, 3.0);
    let g = rng.uniform(0.5, 2.0);
    let want = p.iter().zip(&t).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>() / n as f64;
    let want_dx: Vec<f32> =
        p.iter().zip(&t).map(|(&a, &b)| (2.0 * (a - b) as f64 / n as f64 * g as f64) as f32).collect();
    for d in &devs {
        let tp = Tensor::from_f32(d, &shape, &p).unwrap();
        let tt = Tensor::from_f32(d, &shape, &t).unwrap();
        let m = loss::mse(d, &tp, &tt).unwrap();
        assert_eq!(m.shape, vec![1]);
        // A mean of 527 squares of values up to 36: 1e-5 relative covers the f32 sum.
        assert_close(&format!("mse on {}", d.name()), &m.to_f32(d).unwrap(), &[want as f32], 0.0, 1e-5);
        let dx = loss::mse_backward(d, &tp, &tt, &Tensor::from_f32(d, &[1], &[g]).unwrap()).unwrap();
        assert_eq!(dx.shape, shape);
        // Three f32 roundings (difference, scale, g).
        assert_close(&format!("mse' on {}", d.name()), &dx.to_f32(d).unwrap(), &want_dx, 1e-9, 4.0 * ULP);
    }
}

// ---------------------------------------------------------------------------------------------------
// dropout

/// The kept elements by direct per-element draws of the rng snippet's twin, with the step's base offset in
/// u64 arithmetic (independent of the kernels' 32-bit pieces).
fn mask_ref(d: &Dropout, n: usize, step: u32) -> Vec<bool> {
    let base = crng::split64(d.offset.wrapping_add(step as u64 * d.stride as u64));
    (0..n).map(|i| crng::uniform_at(crng::split64(d.seed), base, i as u32) >= d.p).collect()
}

fn drop_run(dev: &Device, d: &Dropout, x: &[f32], step: u32, backward: bool) -> Vec<f32> {
    let tx = Tensor::from_f32(dev, &[x.len()], x).unwrap();
    let ts = Tensor::from_u32(dev, &[1], &[step]).unwrap();
    let out = if backward { dr::dropout_backward(dev, &tx, d, &ts) } else { dr::dropout(dev, &tx, d, &ts) }.unwrap();
    assert_eq!(out.shape, vec![x.len()]);
    out.to_f32(dev).unwrap()
}

/// Inputs with no zeros, so a zero output means a dropped element.
fn nonzero(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(0.5, 1.5) * if rng.below(2) == 0 { -1.0 } else { 1.0 }).collect()
}

fn kept(y: &[f32]) -> Vec<bool> {
    y.iter().map(|&v| v != 0.0).collect()
}

#[track_caller]
fn check_dropout(what: &str, y: &[f32], x: &[f32], mask: &[bool], d: &Dropout) {
    assert_eq!(kept(y), mask, "{what}: mask");
    let want: Vec<f32> = x.iter().zip(mask).map(|(&v, &k)| if k { v * d.scale() } else { 0.0 }).collect();
    assert_close(what, y, &want, 0.0, ULP);
}

#[test]
fn dropout_matches_cpu_twin_and_the_direct_stream() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in [1usize, 7, 4099, 100_003] {
        let x = nonzero(&mut rng, n);
        // Steps and strides that exercise the 32x32 -> 64 product's high word and the offset's carries.
        let cases = [
            (0.1f32, 0u64, dr::stride_for(n).unwrap(), 0u32),
            (0.5, rng.next_u64() % 1000, dr::stride_for(n).unwrap() + 8, 1),
            (0.9, (1u64 << 32) - 3, 1 << 31, 3_000_000_000),
            (0.3, rng.next_u64(), 0xFFFF_FFFC, u32::MAX),
        ];
        for (p, offset, stride, step) in cases {
            let d = Dropout { p, seed: rng.next_u64(), offset, stride };
            let mask = mask_ref(&d, n, step);
            for backward in [false, true] {
                let what = format!("n={n} p={p} step={step} backward={backward}");
                let yc = drop_run(&cpu, &d, &x, step, backward);
                let yg = drop_run(&gpu, &d, &x, step, backward);
                check_dropout(&format!("cpu {what}"), &yc, &x, &mask, &d);
                check_dropout(&format!("gpu {what}"), &yg, &x, &mask, &d);
            }
        }
    }
}

#[test]
fn dropout_statistics_steps_and_directions() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let n = 100_000;
    let x = nonzero(&mut rng, n);
    for dev in &devs {
        for p in [0.1f32, 0.5, 0.9] {
            let d = Dropout::new(p, rng.next_u64(), 0, n).unwrap();
            let m0 = kept(&drop_run(dev, &d, &x, 0, false));
            let m1 = kept(&drop_run(dev, &d, &x, 1, false));
            // Kept fraction: standard deviation sqrt(p (1 - p) / n) <= 0.0016, so 0.01 is over 6 sigma.
            for m in [&m0, &m1] {
                let frac = m.iter().filter(|&&k| k).count() as f64 / n as f64;
                assert!((frac - (1.0 - p as f64)).abs() < 0.01, "{} p={p}: kept {frac}", dev.name());
            }
            // Independent masks differ in a fraction 2 p (1 - p) (>= 0.18 here) of the elements.
            let diff = m0.iter().zip(&m1).filter(|(a, b)| a != b).count() as f64 / n as f64;
            let expect = 2.0 * p as f64 * (1.0 - p as f64);
            assert!(
                (diff - expect).abs() < 0.01,
                "{} p={p}: steps 0 and 1 differ in {diff}, expected {expect}",
                dev.name()
            );
            // The backward regenerates the forward's mask.
            assert_eq!(kept(&drop_run(dev, &d, &x, 1, true)), m1, "{} p={p}: backward mask", dev.name());
        }
        // p = 0: the identity, bit for bit.
        let d = Dropout::new(0.0, 5, 0, n).unwrap();
        for backward in [false, true] {
            let y = drop_run(dev, &d, &x, 7, backward);
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn dropout_sites_do_not_share_stream_elements() {
    let sizes = [5usize, 8, 1];
    let sites = Dropout::sites(0.5, 9, &sizes).unwrap();
    assert!(sites.iter().all(|s| s.stride == 20));
    assert_eq!(sites.iter().map(|s| s.offset).collect::<Vec<_>>(), vec![0, 8, 16]);
    let mut used = std::collections::HashSet::new();
    for step in 0..4u64 {
        for (s, &n) in sites.iter().zip(&sizes) {
            for i in 0..n as u64 {
                assert!(used.insert(s.offset + step * s.stride as u64 + i), "stream element reused");
            }
        }
    }
}

/// The point of the step buffer: one captured plan, replayed at successive steps, draws a fresh mask at
/// each step (the one eager dropout gives at that step).
#[test]
fn captured_dropout_draws_a_new_mask_per_replayed_step() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let n = 1000;
    let x = nonzero(&mut rng, n);
    for dev in &devs {
        let d = Dropout::new(0.5, rng.next_u64(), 64, n).unwrap();
        let tx = Tensor::from_f32(dev, &[n], &x).unwrap();
        let step = Tensor::from_u32(dev, &[1], &[0]).unwrap();
        let (y, rec) = dev.capture(|| dr::dropout(dev, &tx, &d, &step)).unwrap();
        let mut masks = Vec::new();
        for s in [0u32, 1, 2] {
            dev.write(&step.buf, &[s]).unwrap();
            dev.replay(&rec).unwrap();
            let got = y.to_f32(dev).unwrap();
            check_dropout(&format!("{} replay at step {s}", dev.name()), &got, &x, &mask_ref(&d, n, s), &d);
            masks.push(kept(&got));
        }
        assert_ne!(masks[0], masks[1]);
        assert_ne!(masks[1], masks[2]);
    }
}

// ---------------------------------------------------------------------------------------------------
// bad input

#[test]
fn bad_input_is_an_error_naming_the_shapes() {
    let d = Device::cpu();
    let f = |shape: &[usize]| Tensor::from_f32(&d, shape, &vec![0.5; shape.iter().product()]).unwrap();
    let u = |shape: &[usize]| Tensor::from_u32(&d, shape, &vec![0; shape.iter().product()]).unwrap();

    // unary_backward: shapes and dtypes.
    let e = ew::unary_backward(&d, Unary::Tanh, &f(&[2, 3]), &f(&[3, 2]), 0.0).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    let e = ew::unary_backward(&d, Unary::Tanh, &u(&[2]), &f(&[2]), 0.0).unwrap_err().to_string();
    assert!(e.contains("u32"), "{e}");

    // cross-entropy: logits rank, targets dtype and length, lse and g shapes.
    for shape in [&[6][..], &[2, 3, 1][..]] {
        let e = loss::cross_entropy(&d, &f(shape), &u(&[2])).unwrap_err().to_string();
        assert!(e.contains(&format!("{shape:?}")) && e.contains("rank 2"), "{e}");
    }
    let e = loss::cross_entropy(&d, &f(&[2, 3]), &f(&[2])).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32") && e.contains("[2]"), "{e}");
    let e = loss::cross_entropy(&d, &f(&[2, 3]), &u(&[3])).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3]"), "{e}");
    let e = loss::cross_entropy(&d, &f(&[2, 3]), &u(&[2, 1])).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2, 1]"), "{e}");
    let e = loss::cross_entropy(&d, &f(&[2, 0]), &u(&[2])).unwrap_err().to_string();
    assert!(e.contains("[2, 0]"), "{e}");
    let e = loss::cross_entropy_backward(&d, &f(&[2, 3]), &u(&[2]), &f(&[3]), &f(&[2])).unwrap_err().to_string();
    assert!(e.contains("lse") && e.contains("[3]"), "{e}");
    let e = loss::cross_entropy_backward(&d, &f(&[2, 3]), &u(&[2]), &f(&[2]), &f(&[1])).unwrap_err().to_string();
    assert!(e.contains("g must") && e.contains("[1]"), "{e}");

    // bce and mse: shapes.
    let e = loss::bce_logits(&d, &f(&[4]), &f(&[5])).unwrap_err().to_string();
    assert!(e.contains("[4]") && e.contains("[5]"), "{e}");
    let e = loss::bce_logits_backward(&d, &f(&[4]), &f(&[4]), &f(&[2])).unwrap_err().to_string();
    assert!(e.contains("[4]") && e.contains("[2]"), "{e}");
    let e = loss::mse(&d, &f(&[4, 1]), &f(&[4])).unwrap_err().to_string();
    assert!(e.contains("[4, 1]") && e.contains("[4]"), "{e}");
    let e = loss::mse_backward(&d, &f(&[4]), &f(&[4]), &f(&[2])).unwrap_err().to_string();
    assert!(e.contains("[2]"), "{e}");

    // dropout: p out of range, a bad stride, a step counter that is not one u32 word.
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        assert!(Dropout::new(p, 1, 0, 4).unwrap_err().to_string().contains("[0, 1)"));
        let bad = Dropout { p, seed: 1, offset: 0, stride: 4 };
        let e = dr::dropout(&d, &f(&[4]), &bad, &u(&[1])).unwrap_err().to_string();
        assert!(e.contains(&format!("p = {p}")) && e.contains("[4]"), "{e}");
        let e = dr::dropout_backward(&d, &f(&[4]), &bad, &u(&[1])).unwrap_err().to_string();
        assert!(e.contains(&format!("p = {p}")), "{e}");
    }
    let ok = Dropout::new(0.5, 1, 0, 4).unwrap();
    let e = dr::dropout(&d, &f(&[5]), &ok, &u(&[1])).unwrap_err().to_string();
    assert!(e.contains("stride 4") && e.contains("[5]"), "{e}");
    let e = dr::dropout(&d, &f(&[4]), &Dropout { stride: 6, ..ok }, &u(&[1])).unwrap_err().to_string();
    assert!(e.contains("stride 6"), "{e}");
    let e = dr::dropout(&d, &f(&[4]), &ok, &u(&[2])).unwrap_err().to_string();
    assert!(e.contains("step") && e.contains("[2]"), "{e}");
    let e = dr::dropout(&d, &f(&[4]), &ok, &f(&[1])).unwrap_err().to_string();
    assert!(e.contains("step") && e.contains("f32"), "{e}");
}
