//! Reduce family: GPU vs CPU twin, the CPU twin vs an f64 reference, argmax ties, the folded row grid,
//! and bad input.
//!
//! Tolerances:
//! * max and argmax: exact. Comparisons round nothing, and both engines resolve ties to the lowest index.
//! * sum and mean: a bound from the summation depth. Adding terms along a chain of k roundings is off from
//!   the exact sum by at most about k·u·Σ|x| (u = 2^-24). `reduce_rows` adds ceil(len/256) strided terms
//!   per thread and then 8 tree levels, so k = ceil(len/256) + 8; `reduce_strided` adds the axis in order,
//!   so k = len. The CPU twin is checked against the f64 sum with that bound; GPU and CPU (each within
//!   it of the exact sum, whatever order a compiler picks at that depth) may differ by twice it. Mean adds
//!   one rounding of the quotient. This is tight enough that a dropped or doubled element fails (one
//!   element is about Σ|x|/len, far above k·u·Σ|x|).
mod common;
use common::*;
use tigel::ops::reduce::{self as red, ReduceOp};
use tigel::{DType, Device, Tensor};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// (shape, axes to reduce). Shapes: 1, primes, rows longer than the workgroup, more than 256 rows.
const CASES: &[(&[usize], &[usize])] = &[
    (&[1], &[0]),
    (&[7], &[0]),
    (&[1, 1], &[0, 1]),
    (&[257], &[0]),
    (&[3, 1000], &[0, 1]),
    (&[5, 7, 11], &[0, 1, 2]),
    (&[2, 3, 4, 5], &[0, 1, 2, 3]),
    (&[300, 33], &[0, 1]),
    (&[2, 5003], &[0, 1]),
    (&[13, 1, 1], &[0, 1]),
];

/// [outer, len, inner] of reducing `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Inputs for an op: continuous for sums; quantised to 17 levels for max/argmax so rows hold many
/// duplicate maxima and the lowest-index rule is exercised everywhere.
fn input(rng: &mut Rng, op: ReduceOp, n: usize) -> Vec<f32> {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => rng.vec(n, -1.0, 1.0),
        _ => (0..n).map(|_| (rng.uniform(-2.0, 2.0) * 4.0).round() / 4.0).collect(),
    }
}

/// Runs one reduction and returns the output shape and raw words (f32 bits or u32 indices).
fn run(d: &Device, op: ReduceOp, shape: &[usize], x: &[f32], axis: usize, keepdim: bool) -> (Vec<usize>, Vec<u32>) {
    let t = Tensor::from_f32(d, shape, x).unwrap();
    let out = red::reduce(d, op, &t, axis, keepdim).unwrap();
    assert_eq!(out.dtype, op.out_dtype());
    (out.shape.clone(), out.to_u32(d).unwrap())
}

fn as_f32(w: &[u32]) -> Vec<f32> {
    w.iter().map(|&b| f32::from_bits(b)).collect()
}

/// Per-output f64 reference: the value (argmax: the first maximum's index) and Σ|x| along the axis.
fn reference(op: ReduceOp, shape: &[usize], x: &[f32], axis: usize) -> Vec<(f64, f64)> {
    let (outer, len, inner) = split(shape, axis);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let vals: Vec<f64> = (0..len).map(|k| x[(o * len + k) * inner + i] as f64).collect();
            let abs: f64 = vals.iter().map(|v| v.abs()).sum();
            let sum: f64 = vals.iter().sum();
            let mut best = 0;
            for (k, &v) in vals.iter().enumerate() {
                if v > vals[best] {
                    best = k;
                }
            }
            let v = match op {
                ReduceOp::Sum => sum,
                ReduceOp::Mean => sum / len as f64,
                ReduceOp::Max => vals[best],
                ReduceOp::ArgMax => best as f64,
            };
            out.push((v, abs));
        }
    }
    out
}

/// Rounding bound (see the header) for one sum or mean output of an axis of `len` with Σ|x| = `abs`.
fn sum_bound(op: ReduceOp, len: usize, inner: usize, abs: f64, value: f64) -> f64 {
    let k = if inner == 1 { len.div_ceil(256) + 8 } else { len } as f64;
    let b = 1.01 * k * U * abs;
    match op {
        ReduceOp::Mean => b / len as f64 + U * value.abs(),
        _ => b,
    }
}

#[test]
fn gpu_matches_cpu_twin() {
    // Every variant of reduce_rows (workgroup sizes, subgroups) against the twin, same assertions.
    for_each_variant(&[&tigel::kernels::reduce::REDUCE_ROWS], |_| gpu_matches_cpu_twin_once());
}

fn gpu_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for op in ReduceOp::ALL {
        for &(shape, axes) in CASES {
            for &axis in axes {
                let keepdim = rng.below(2) == 1;
                let x = input(&mut rng, op, shape.iter().product());
                let what = format!("{op:?} {shape:?} axis {axis} keepdim {keepdim}");
                let (sc, want) = run(&cpu, op, shape, &x, axis, keepdim);
                let (sg, got) = run(&gpu, op, shape, &x, axis, keepdim);
                assert_eq!(sc, red::reduced_shape(shape, axis, keepdim), "{what}: shape");
                assert_eq!(sg, sc, "{what}: shape");
                match op {
                    ReduceOp::ArgMax => assert_eq!(got, want, "{what}"),
                    // Compared as values: -0.0 == 0.0 (a driver may lower the compare-and-select to a
                    // hardware max that orders signed zeros its own way); a poisoned NaN still fails.
                    ReduceOp::Max => assert_eq!(as_f32(&got), as_f32(&want), "{what}"),
                    _ => {
                        let (_, len, inner) = split(shape, axis);
                        let (g, w) = (as_f32(&got), as_f32(&want));
                        for (i, (r, _)) in reference(op, shape, &x, axis).iter().zip(&w).enumerate() {
                            let tol = 2.0 * sum_bound(op, len, inner, r.1, r.0) as f32;
                            assert_close(&format!("{what} output {i}"), &g[i..i + 1], &w[i..i + 1], tol, 0.0);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for op in ReduceOp::ALL {
        for &(shape, axes) in CASES {
            for &axis in axes {
                let x = input(&mut rng, op, shape.iter().product());
                let what = format!("{op:?} {shape:?} axis {axis}");
                let (_, got) = run(&cpu, op, shape, &x, axis, false);
                let (_, len, inner) = split(shape, axis);
                for (i, (&g, &(want, abs))) in got.iter().zip(&reference(op, shape, &x, axis)).enumerate() {
                    match op {
                        ReduceOp::ArgMax => assert_eq!(g as f64, want, "{what} output {i}"),
                        ReduceOp::Max => assert_eq!(f32::from_bits(g) as f64, want, "{what} output {i}"),
                        _ => {
                            let err = (f32::from_bits(g) as f64 - want).abs();
                            let tol = sum_bound(op, len, inner, abs, want);
                            assert!(
                                err <= tol,
                                "{what} output {i}: {} vs {want} (err {err:e}, bound {tol:e})",
                                f32::from_bits(g)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn argmax_ties_resolve_to_the_lowest_index() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    // Rows of several lengths, with the maximum planted at chosen positions among values below it:
    // duplicates inside one thread's stride, across threads, at index 0, and at the last index only.
    let len = 1000;
    let plants: &[&[usize]] =
        &[&[0, 256, 999], &[999], &[3, 259, 515], &[700, 300, 301], &[255, 256], &[17, 16], &[0], &[511, 767, 1, 999]];
    let rows = plants.len();
    let mut x: Vec<f32> = (0..rows * len).map(|_| rng.uniform(-1.0, 0.99)).collect();
    for (r, ps) in plants.iter().enumerate() {
        for &k in *ps {
            x[r * len + k] = 1.0;
        }
    }
    let want: Vec<u32> = plants.iter().map(|ps| *ps.iter().min().unwrap() as u32).collect();
    // The transposed tensor runs the same rows through reduce_strided (axis 0, inner = rows).
    let xt: Vec<f32> = (0..len * rows).map(|i| x[(i % rows) * len + i / rows]).collect();
    for d in &devs {
        let (_, got) = run(d, ReduceOp::ArgMax, &[rows, len], &x, 1, false);
        assert_eq!(got, want, "rows kernel on {}", d.name());
        let (_, got) = run(d, ReduceOp::ArgMax, &[len, rows], &xt, 0, false);
        assert_eq!(got, want, "strided kernel on {}", d.name());
        let (_, got) = run(d, ReduceOp::Max, &[rows, len], &x, 1, false);
        assert_eq!(as_f32(&got), vec![1.0; rows], "max on {}", d.name());
    }
    // A constant row: every element ties, the answer is 0.
    for d in &devs {
        let (_, got) = run(d, ReduceOp::ArgMax, &[2, 300], &[0.5; 600], 1, false);
        assert_eq!(got, vec![0, 0], "constant rows on {}", d.name());
    }
}

#[test]
fn row_grid_folds_past_the_dimension_limit() {
    // 70000 rows need 70000 workgroups: over the 65535 per-dimension limit, so the grid folds into y and
    // the shader recovers the row from (x, y). The extra workgroup of the folded grid must write nothing.
    assert_eq!(tigel::kernels::groups_1d(70000, 1, 65535), [35000, 2, 1]);
    assert_eq!(tigel::kernels::groups_1d(65536 * 3 + 1, 1, 65535), [49153, 4, 1]);
    let Some(gpu) = gpu() else { return };
    if gpu.max_groups_per_dim() >= 70000 {
        eprintln!("note: this adapter allows {} workgroups per dimension; no folding", gpu.max_groups_per_dim());
    }
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let shape = [70000, 2];
    for op in [ReduceOp::Sum, ReduceOp::ArgMax] {
        let x = input(&mut rng, op, 140000);
        let (_, want) = run(&cpu, op, &shape, &x, 1, false);
        let (_, got) = run(&gpu, op, &shape, &x, 1, false);
        // Two-term sums round once, identically everywhere: exact.
        assert_eq!(got, want, "{op:?}");
        for (r, &g) in got.iter().enumerate() {
            let want = match op {
                ReduceOp::Sum => (x[2 * r] + x[2 * r + 1]).to_bits(),
                _ => (x[2 * r + 1] > x[2 * r]) as u32,
            };
            assert_eq!(g, want, "{op:?} row {r}");
        }
    }
}

#[test]
fn sum_all_and_mean_all() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let shape = [6, 7, 61];
    let x = rng.vec(6 * 7 * 61, -1.0, 1.0);
    let exact: f64 = x.iter().map(|&v| v as f64).sum();
    let abs: f64 = x.iter().map(|&v| v.abs() as f64).sum();
    let n = x.len();
    for d in &devs {
        let t = Tensor::from_f32(d, &shape, &x).unwrap();
        let s = red::sum_all(d, &t).unwrap();
        let m = red::mean_all(d, &t).unwrap();
        assert_eq!(s.shape, vec![1]);
        assert_eq!(m.shape, vec![1]);
        let (s, m) = (s.to_f32(d).unwrap()[0] as f64, m.to_f32(d).unwrap()[0] as f64);
        let b = sum_bound(ReduceOp::Sum, n, 1, abs, exact);
        assert!((s - exact).abs() <= b, "sum_all on {}: {s} vs {exact}", d.name());
        let bm = sum_bound(ReduceOp::Mean, n, 1, abs, exact / n as f64);
        assert!((m - exact / n as f64).abs() <= bm, "mean_all on {}: {m} vs {}", d.name(), exact / n as f64);
    }
}

#[test]
fn bad_input_is_an_error() {
    let cpu = Device::cpu();
    let x = Tensor::from_f32(&cpu, &[2, 3], &[0.0; 6]).unwrap();
    for op in ReduceOp::ALL {
        let e = red::reduce(&cpu, op, &x, 2, false).unwrap_err().to_string();
        assert!(e.contains("axis 2") && e.contains("[2, 3]"), "{e}");
    }
    let u = Tensor::from_u32(&cpu, &[4], &[1, 2, 3, 4]).unwrap();
    let e = red::sum(&cpu, &u, 0, false).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = red::argmax(&cpu, &u, 0, false).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = red::sum_all(&cpu, &u).unwrap_err().to_string();
    assert!(e.contains("u32"), "{e}");
    // Max, argmax and mean of an empty axis have no value; the sum of one is 0.
    let empty = Tensor::from_f32(&cpu, &[3, 0], &[]).unwrap();
    for op in [ReduceOp::Mean, ReduceOp::Max, ReduceOp::ArgMax] {
        let e = red::reduce(&cpu, op, &empty, 1, false).unwrap_err().to_string();
        assert!(e.contains("axis 1") && e.contains("[3, 0]") && e.contains("empty"), "{e}");
    }
    assert_eq!(red::sum(&cpu, &empty, 1, false).unwrap().to_f32(&cpu).unwrap(), vec![0.0; 3]);
    assert_eq!(red::sum(&cpu, &empty, 0, true).unwrap().shape, vec![1, 0]);
    let a = red::argmax(&cpu, &x, 1, true).unwrap();
    assert_eq!((a.dtype, a.shape.clone()), (DType::U32, vec![2, 1]));
    assert_eq!(red::max(&cpu, &x, 0, false).unwrap().dtype, DType::F32);
}
