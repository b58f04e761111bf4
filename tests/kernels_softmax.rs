//! Softmax family: the CPU twin and the GPU against the op's f64 reference and each other (`check_op`),
//! normalisation, large inputs, the folded row grid, and bad input.
//!
//! Tolerances (inputs in [-4, 4], so x - max lies in [-8, 0]):
//! * softmax: 1e-6 absolute + 1e-5 relative. Each output is exp(x - max) / sum: GPU exp may be off by a
//!   few ulp (Vulkan allows 3 + 2|x| ulp, about 1e-6 relative at |x| <= 8), the sum carries at most
//!   (len/256 + 8) roundings and the division one more, a few 1e-6 relative in all. The absolute part
//!   covers outputs so small (exp of a very negative argument) that relative error means nothing.
//! * log-softmax: 1e-5 absolute. Outputs are (x - max) - log(sum), of magnitude up to 8 + log(len) < 17:
//!   the final subtraction rounds at 1 ulp of 16 (1.9e-6), log(sum) adds a few ulp of log(len), and a
//!   relative error e in the sum becomes an absolute error e in its log. For the ±80 inputs the outputs
//!   reach -160, where one rounding is already 7.6e-6, so that test adds one ulp of relative tolerance.
mod common;
use common::*;
use tigel::graph::{Graph, NodeId};
use tigel::ops::softmax as sm;
use tigel::{Device, Result, Tensor};

const SHAPES: &[&[usize]] =
    &[&[1], &[7], &[1, 1], &[257], &[3, 1000], &[5, 7, 11], &[2, 3, 4, 5], &[300, 33], &[2, 5000], &[4, 997]];

const ULP: f32 = 1.0 / (1u32 << 23) as f32;

fn tol(log: bool) -> Tol {
    if log {
        Tol { atol: 1e-5, rtol: 0.0 }
    } else {
        Tol { atol: 1e-6, rtol: 1e-5 }
    }
}

fn op(log: bool) -> impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId> {
    move |g, x| if log { g.log_softmax(x[0]) } else { g.softmax(x[0]) }
}

/// Every row of every engine's output sums to 1 (exp of log-softmax outputs): each of up to 5000 terms
/// carries a few 1e-7 relative error.
fn assert_rows_sum_to_one(what: &str, log: bool, len: usize, c: &Checked) {
    for (engine, y) in c.outputs() {
        for (r, row) in y.chunks(len).enumerate() {
            let s: f64 = row.iter().map(|&v| if log { (v as f64).exp() } else { v as f64 }).sum();
            assert!((s - 1.0).abs() < 1e-5, "{what} on {engine}: row {r} sums to {s}");
        }
    }
}

#[test]
fn cpu_twin_and_gpu_match_f64_reference() {
    // Every variant (workgroup sizes, subgroups) against the twin and the reference, same assertions.
    for_each_variant(&[&tigel::kernels::softmax::SOFTMAX_ROWS], |_| cpu_twin_and_gpu_match_f64_reference_once());
}

fn cpu_twin_and_gpu_match_f64_reference_once() {
    for log in [false, true] {
        for &shape in SHAPES {
            let what = format!("log={log} {shape:?}");
            let c = check_op(&what, &[uniform(shape, -4.0, 4.0)], tol(log), op(log));
            assert_rows_sum_to_one(&what, log, *shape.last().unwrap(), &c);
        }
    }
}

#[test]
fn large_inputs_do_not_overflow() {
    let mut rng = Rng::new(seed());
    let len = 5000;
    // Rows: spread over ±80; all near +80 (a sum of exp(x) without the max shift would reach 2.7e38);
    // all -80; near +100, where exp(x) alone overflows f32.
    let mut x = rng.vec(len, -80.0, 80.0);
    x.extend(rng.vec(len, 79.9, 80.0));
    x.extend(vec![-80.0; len]);
    x.extend(rng.vec(len, 99.0, 100.0));
    // One +80 among -80s, in different threads' strides (index % 256 of 200, 255, 135): a max that
    // missed any thread's partial would leave exp(160) = inf in the sum.
    for at in [200, 255, 4999] {
        let mut row = vec![-80.0; len];
        row[at] = 80.0;
        x.extend(row);
    }
    for log in [false, true] {
        // One ulp relative on top for log-softmax: outputs reach -160 (see the header).
        let t = if log { Tol { rtol: ULP, ..tol(log) } } else { tol(log) };
        let what = format!("large log={log}");
        let c = check_op_on(&what, vec![Data::F32(vec![7, len], x.clone())], t, op(log));
        for (engine, y) in c.outputs() {
            assert!(y.iter().all(|v| v.is_finite()), "{what} on {engine}: inf or NaN");
        }
        assert_rows_sum_to_one(&what, log, len, &c);
    }
}

#[test]
fn row_grid_folds_past_the_dimension_limit() {
    // 70000 rows: more workgroups than the 65535 per-dimension limit, so the grid folds into y.
    for log in [false, true] {
        check_op(&format!("70000 rows log={log}"), &[uniform(&[70000, 2], -4.0, 4.0)], tol(log), op(log));
    }
}

#[test]
fn bad_input_is_an_error() {
    let cpu = Device::cpu();
    let u = Tensor::from_u32(&cpu, &[2, 2], &[1, 2, 3, 4]).unwrap();
    for e in [sm::softmax(&cpu, &u).unwrap_err(), sm::log_softmax(&cpu, &u).unwrap_err()] {
        let e = e.to_string();
        assert!(e.contains("u32") && e.contains("f32"), "{e}");
    }
    let scalar = Tensor::from_f32(&cpu, &[], &[1.0]).unwrap();
    let e = sm::softmax(&cpu, &scalar).unwrap_err().to_string();
    assert!(e.contains("[]"), "{e}");
    // Empty rows give an empty output, no dispatch.
    let empty = Tensor::from_f32(&cpu, &[3, 0], &[]).unwrap();
    assert_eq!(sm::softmax(&cpu, &empty).unwrap().shape, vec![3, 0]);
}
