//! Softmax family: GPU vs CPU twin, the CPU twin vs an f64 reference, normalisation, large inputs, the
//! folded row grid, and bad input.
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
use tigel::ops::softmax as sm;
use tigel::{Device, Tensor};

const SHAPES: &[&[usize]] =
    &[&[1], &[7], &[1, 1], &[257], &[3, 1000], &[5, 7, 11], &[2, 3, 4, 5], &[300, 33], &[2, 5000], &[4, 997]];

const ULP: f32 = 1.0 / (1u32 << 23) as f32;

fn run(d: &Device, log: bool, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let t = Tensor::from_f32(d, shape, x).unwrap();
    let out = if log { sm::log_softmax(d, &t) } else { sm::softmax(d, &t) }.unwrap();
    assert_eq!(out.shape, shape);
    out.to_f32(d).unwrap()
}

fn tol(log: bool) -> (f32, f32) {
    if log {
        (1e-5, 0.0)
    } else {
        (1e-6, 1e-5)
    }
}

/// f64 softmax or log-softmax of each row of length `len`.
fn reference(log: bool, len: usize, x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(len) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for &v in row {
            let y = v as f64 - m;
            out.push(if log { y - s.ln() } else { y.exp() / s } as f32);
        }
    }
    out
}

/// Row sums of softmax outputs (or of exp of log-softmax outputs), in f64.
fn row_sums(log: bool, len: usize, y: &[f32]) -> Vec<f64> {
    y.chunks(len).map(|r| r.iter().map(|&v| if log { (v as f64).exp() } else { v as f64 }).sum()).collect()
}

#[test]
fn gpu_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for log in [false, true] {
        for &shape in SHAPES {
            let x = rng.vec(shape.iter().product(), -4.0, 4.0);
            let (atol, rtol) = tol(log);
            let want = run(&cpu, log, shape, &x);
            let got = run(&gpu, log, shape, &x);
            assert_close(&format!("log={log} {shape:?}"), &got, &want, atol, rtol);
            // Normalisation: rows sum to 1 (each of up to 5000 terms carries a few 1e-7 relative error).
            for (r, s) in row_sums(log, *shape.last().unwrap(), &got).iter().enumerate() {
                assert!((s - 1.0).abs() < 1e-5, "log={log} {shape:?} row {r} sums to {s}");
            }
        }
    }
}

#[test]
fn cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for log in [false, true] {
        for &shape in SHAPES {
            let x = rng.vec(shape.iter().product(), -4.0, 4.0);
            let (atol, rtol) = tol(log);
            let got = run(&cpu, log, shape, &x);
            let len = *shape.last().unwrap();
            assert_close(&format!("log={log} {shape:?}"), &got, &reference(log, len, &x), atol, rtol);
            for (r, s) in row_sums(log, len, &got).iter().enumerate() {
                assert!((s - 1.0).abs() < 1e-5, "log={log} {shape:?} row {r} sums to {s}");
            }
        }
    }
}

#[test]
fn large_inputs_do_not_overflow() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
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
    let shape = [7, len];
    for log in [false, true] {
        let want = reference(log, len, &x);
        let (atol, rtol) = tol(log);
        // One ulp relative on top for log-softmax: outputs reach -160 (see the header).
        let rtol = if log { ULP } else { rtol };
        for d in &devs {
            let got = run(d, log, &shape, &x);
            assert!(got.iter().all(|v| v.is_finite()), "log={log} on {}: inf or NaN", d.name());
            assert_close(&format!("log={log} on {}", d.name()), &got, &want, atol, rtol);
            for (r, s) in row_sums(log, len, &got).iter().enumerate() {
                assert!((s - 1.0).abs() < 1e-5, "log={log} on {} row {r} sums to {s}", d.name());
            }
        }
    }
}

#[test]
fn row_grid_folds_past_the_dimension_limit() {
    // 70000 rows: more workgroups than the 65535 per-dimension limit, so the grid folds into y.
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let x = rng.vec(140000, -4.0, 4.0);
    for log in [false, true] {
        let (atol, rtol) = tol(log);
        let want = reference(log, 2, &x);
        assert_close(&format!("log={log} cpu"), &run(&cpu, log, &[70000, 2], &x), &want, atol, rtol);
        assert_close(&format!("log={log} gpu"), &run(&gpu, log, &[70000, 2], &x), &want, atol, rtol);
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
