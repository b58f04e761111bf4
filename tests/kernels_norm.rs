//! Norm family (layer norm): GPU vs CPU twin, the CPU twin vs an f64 reference, a finite-difference
//! gradient check of the backward against the forward, determinism of the column sums, and bad input.
//!
//! Inputs: x in [-3, 3] plus a per-row offset of up to ±4 (so |mean| is comparable to the spread and the
//! two-pass variance matters), gamma in [-2, 2], beta in [-1, 1], dy in [-1, 1], eps = 1e-5.
//!
//! Tolerances: first-order rounding-error bounds computed per element from the f64 reference (see
//! `reference`), the same shape of bound for both engines. With u = 2^-24 (f32 unit roundoff) and
//! e = (C/32 + 16) u, the relative error bound of a row sum in f32 (the CPU sums in 32 lane partials and a
//! 5-level tree, the GPU in 256 strided partials and an 8-level tree: neither has more than C/32 + 16
//! roundings in any chain),
//! plus 8u for the sqrt and division (Vulkan allows 2 to 2.5 ulp for each):
//! * mean: e · mean|x|. rstd: (e + 8u) · rstd (the variance is a sum of squares, no cancellation; the
//!   mean's error changes it only to second order).
//! * x̂ = (x - mean) · rstd is off by e · (κ + |x̂|), κ = rstd · mean|x| the row's condition number (rows
//!   whose spread is small next to their values, common at C = 2, are ill-conditioned; no formula can
//!   avoid it, so the bound scales with κ).
//! * y: |gamma| times x̂'s bound, plus 4u (|x̂ gamma| + |beta|) for the final multiply-add (GPUs may fuse).
//! * dx = rstd (g - mean(g) - x̂ mean(g x̂)): rstd's relative error times |dx|, mean(g)'s sum error, x̂'s
//!   error through both places it enters, and 3u per term for the subtractions; the terms can cancel, so
//!   the bound is in the terms' magnitudes, not |dx|'s.
//! * dgamma, dbeta: sums over the rows in chunks (chunk + chunks + 2 roundings in any chain) relative to
//!   Σ|term|, plus, for dgamma, Σ|dy| times x̂'s bound.
//!
//! An engine is compared with the f64 reference within its bound B and with the other engine within 2B.
//! The bounds are worst cases (typical errors are 10x smaller) yet orders of magnitude below what a
//! wrong term or index gives.
mod common;
use common::*;
use tigel::ops::norm::{layer_norm, layer_norm_backward};
use tigel::{Device, Tensor};

const EPS: f32 = 1e-5;
const FEATURES: [usize; 5] = [1, 7, 64, 130, 768];
const ROWS: [usize; 3] = [1, 13, 300];

/// Shapes for C features and N rows: flat [N, C], and split leading axes where N factors.
fn shapes(n: usize, c: usize) -> Vec<Vec<usize>> {
    let mut v = vec![vec![n, c]];
    if n == 300 {
        v.push(vec![3, 100, c]);
    }
    if n == 1 {
        v.push(vec![c]);
    }
    v
}

struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn inputs(rng: &mut Rng, n: usize, c: usize) -> Inputs {
    let mut x = rng.vec(n * c, -3.0, 3.0);
    for row in x.chunks_mut(c) {
        let off = rng.uniform(-4.0, 4.0);
        row.iter_mut().for_each(|v| *v += off);
    }
    Inputs { x, gamma: rng.vec(c, -2.0, 2.0), beta: rng.vec(c, -1.0, 1.0), dy: rng.vec(n * c, -1.0, 1.0) }
}

/// Outputs of forward and backward on one device: y, mean, rstd, dx, dgamma, dbeta.
struct Outputs {
    y: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

fn run(d: &Device, shape: &[usize], inp: &Inputs) -> Outputs {
    let c = *shape.last().unwrap();
    let x = Tensor::from_f32(d, shape, &inp.x).unwrap();
    let g = Tensor::from_f32(d, &[c], &inp.gamma).unwrap();
    let b = Tensor::from_f32(d, &[c], &inp.beta).unwrap();
    let dy = Tensor::from_f32(d, shape, &inp.dy).unwrap();
    let (y, mean, rstd) = layer_norm(d, &x, &g, &b, EPS).unwrap();
    assert_eq!(y.shape, shape);
    assert_eq!(mean.shape, [inp.x.len() / c]);
    let (dx, dg, db) = layer_norm_backward(d, &x, &g, &mean, &rstd, &dy).unwrap();
    assert_eq!(dx.shape, shape);
    assert_eq!((dg.shape.as_slice(), db.shape.as_slice()), ([c].as_slice(), [c].as_slice()));
    Outputs {
        y: y.to_f32(d).unwrap(),
        mean: mean.to_f32(d).unwrap(),
        rstd: rstd.to_f32(d).unwrap(),
        dx: dx.to_f32(d).unwrap(),
        dgamma: dg.to_f32(d).unwrap(),
        dbeta: db.to_f32(d).unwrap(),
    }
}

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Straightforward f64 layer norm and its backward, with the per-element error bounds of the header.
struct Reference {
    out: Outputs,
    bound: Outputs,
}

fn reference(c: usize, inp: &Inputs) -> Reference {
    let n = inp.x.len() / c;
    let cf = c as f64;
    let e = (cf / 32.0 + 16.0) * U;
    let new = || Outputs { y: vec![], mean: vec![], rstd: vec![], dx: vec![], dgamma: vec![], dbeta: vec![] };
    let (mut o, mut b) = (new(), new());
    let (mut dg, mut db) = (vec![0f64; c], vec![0f64; c]);
    // Σ|dy x̂|, Σ|dy| (x̂'s bound) and Σ|dy| per column.
    let (mut sg, mut sgx, mut sb) = (vec![0f64; c], vec![0f64; c], vec![0f64; c]);
    for r in 0..n {
        let x: Vec<f64> = inp.x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let dy: Vec<f64> = inp.dy[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let gamma: Vec<f64> = inp.gamma.iter().map(|&v| v as f64).collect();
        let mean = x.iter().sum::<f64>() / cf;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cf;
        let rstd = 1.0 / (var + EPS as f64).sqrt();
        let xh: Vec<f64> = x.iter().map(|v| (v - mean) * rstd).collect();
        let g: Vec<f64> = (0..c).map(|k| dy[k] * gamma[k]).collect();
        let mg = g.iter().sum::<f64>() / cf;
        let mgx = (0..c).map(|k| g[k] * xh[k]).sum::<f64>() / cf;

        let mean_abs = x.iter().map(|v| v.abs()).sum::<f64>() / cf;
        let kappa = rstd * mean_abs;
        let max_xh = xh.iter().fold(0f64, |a, v| a.max(v.abs()));
        let g_abs = g.iter().map(|v| v.abs()).sum::<f64>() / cf;
        let xh_err = |k: usize| (e + 8.0 * U) * (kappa + xh[k].abs());
        o.mean.push(mean as f32);
        o.rstd.push(rstd as f32);
        b.mean.push((e * mean_abs + U * mean.abs()) as f32);
        b.rstd.push(((e + 8.0 * U) * rstd) as f32);
        // mean(g x̂): its own rounding, and x̂'s error weighted by |g|.
        let mgx_err = e * g_abs * max_xh + (e + 8.0 * U) * g_abs * (kappa + max_xh);
        for k in 0..c {
            let y = xh[k] * gamma[k] + inp.beta[k] as f64;
            let dx = rstd * (g[k] - mg - xh[k] * mgx);
            o.y.push(y as f32);
            o.dx.push(dx as f32);
            b.y.push(
                (gamma[k].abs() * xh_err(k) + 4.0 * U * ((xh[k] * gamma[k]).abs() + inp.beta[k].abs() as f64)) as f32,
            );
            let inner = e * g_abs
                + xh[k].abs() * mgx_err
                + mgx.abs() * xh_err(k)
                + 3.0 * U * (g[k].abs() + mg.abs() + (xh[k] * mgx).abs());
            b.dx.push(((e + 8.0 * U) * dx.abs() + rstd * inner) as f32);
            dg[k] += dy[k] * xh[k];
            db[k] += dy[k];
            sg[k] += (dy[k] * xh[k]).abs();
            sgx[k] += dy[k].abs() * xh_err(k);
            sb[k] += dy[k].abs();
        }
    }
    let chunk = n.isqrt().max(8);
    let chain = (chunk + n.div_ceil(chunk) + 2) as f64 * U;
    o.dgamma = dg.iter().map(|&v| v as f32).collect();
    o.dbeta = db.iter().map(|&v| v as f32).collect();
    b.dgamma = (0..c).map(|k| (chain * sg[k] + sgx[k]) as f32).collect();
    b.dbeta = sb.iter().map(|&v| (chain * v) as f32).collect();
    Reference { out: o, bound: b }
}

/// |got - want| <= k · bound element by element (a NaN, e.g. an unwritten poisoned element, fails).
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32], k: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = k * b + f32::MIN_POSITIVE;
        assert!((g - w).abs() <= tol, "{what}: element {i} is {g} but should be {w} (tolerance {tol})");
    }
}

/// Compares all six outputs within k times the reference's bounds.
fn compare(what: &str, got: &Outputs, want: &Outputs, bound: &Outputs, k: f32) {
    assert_within(&format!("{what} mean"), &got.mean, &want.mean, &bound.mean, k);
    assert_within(&format!("{what} rstd"), &got.rstd, &want.rstd, &bound.rstd, k);
    assert_within(&format!("{what} y"), &got.y, &want.y, &bound.y, k);
    assert_within(&format!("{what} dx"), &got.dx, &want.dx, &bound.dx, k);
    assert_within(&format!("{what} dgamma"), &got.dgamma, &want.dgamma, &bound.dgamma, k);
    assert_within(&format!("{what} dbeta"), &got.dbeta, &want.dbeta, &bound.dbeta, k);
}

#[test]
fn layer_norm_gpu_matches_cpu_twin() {
    // Every variant of the row kernels (workgroup sizes, subgroups) against the twin, same assertions.
    use tigel::kernels::norm::{LAYER_NORM_BWD_DX, LAYER_NORM_FWD};
    for_each_variant(&[&LAYER_NORM_FWD, &LAYER_NORM_BWD_DX], |_| layer_norm_gpu_matches_cpu_twin_once());
}

fn layer_norm_gpu_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in FEATURES {
        for n in ROWS {
            let inp = inputs(&mut rng, n, c);
            let r = reference(c, &inp);
            for shape in shapes(n, c) {
                let want = run(&cpu, &shape, &inp);
                let got = run(&gpu, &shape, &inp);
                compare(&format!("gpu {shape:?}"), &got, &want, &r.bound, 2.0);
            }
        }
    }
}

#[test]
fn layer_norm_cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in FEATURES {
        for n in ROWS.into_iter().chain([2048]) {
            let inp = inputs(&mut rng, n, c);
            let r = reference(c, &inp);
            for shape in shapes(n, c) {
                let got = run(&cpu, &shape, &inp);
                compare(&format!("cpu {shape:?}"), &got, &r.out, &r.bound, 1.0);
            }
        }
    }
}

#[test]
fn layer_norm_gpu_matches_f64_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed());
    for (n, c) in [(13, 768), (300, 130), (70, 7)] {
        let inp = inputs(&mut rng, n, c);
        let r = reference(c, &inp);
        let got = run(&gpu, &[n, c], &inp);
        compare(&format!("gpu [{n}, {c}]"), &got, &r.out, &r.bound, 1.0);
    }
}

#[test]
fn layer_norm_column_sums_are_deterministic() {
    // The column sums take no atomics: repeated runs give the same bits on each device.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let inp = inputs(&mut rng, 300, 130);
    for d in &devs {
        let a = run(d, &[300, 130], &inp);
        let b = run(d, &[300, 130], &inp);
        assert_eq!(bits(&a.dgamma), bits(&b.dgamma), "{} dgamma", d.name());
        assert_eq!(bits(&a.dbeta), bits(&b.dbeta), "{} dbeta", d.name());
        assert_eq!(bits(&a.dx), bits(&b.dx), "{} dx", d.name());
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn layer_norm_row_grid_folds_past_the_dimension_limit() {
    // 70000 rows: more workgroups than the 65535 per-dimension limit, so the row grid folds into y.
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (n, c) = (70000, 2);
    let inp = inputs(&mut rng, n, c);
    let r = reference(c, &inp);
    for d in [&cpu, &gpu] {
        let got = run(d, &[n, c], &inp);
        compare(&format!("{} [{n}, {c}]", d.name()), &got, &r.out, &r.bound, 1.0);
    }
}

/// Σ w · y in f64 for the CPU layer norm of x with gamma and beta.
fn weighted_output(d: &Device, shape: &[usize], x: &[f32], gamma: &[f32], beta: &[f32], w: &[f32]) -> f64 {
    let c = *shape.last().unwrap();
    let t = |s: &[usize], v: &[f32]| Tensor::from_f32(d, s, v).unwrap();
    let (y, _, _) = layer_norm(d, &t(shape, x), &t(&[c], gamma), &t(&[c], beta), EPS).unwrap();
    y.to_f32(d).unwrap().iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn layer_norm_grad_matches_finite_differences() {
    // L = Σ w · y with fixed random w, so dL/dy = w. Central differences with step h = 1e-2 on every input
    // element: truncation error is h² / 6 · |L'''|, about 1e-4 here, and the f32 rounding of y (~1e-7 per
    // element, at most 21 elements) divided by 2h adds about 1e-5. Tolerance: 2e-3 absolute + 1e-2
    // relative, while wrong formulas (a missing term) are off by O(0.1 - 1).
    let d = cpu();
    let mut rng = Rng::new(seed());
    let h = 1e-2f32;
    for (n, c) in [(3, 7), (2, 1), (1, 5)] {
        let shape = [n, c];
        let inp = inputs(&mut rng, n, c);
        let w = inp.dy.clone();
        let t = |s: &[usize], v: &[f32]| Tensor::from_f32(&d, s, v).unwrap();
        let (x, g, b) = (t(&shape, &inp.x), t(&[c], &inp.gamma), t(&[c], &inp.beta));
        let (_, mean, rstd) = layer_norm(&d, &x, &g, &b, EPS).unwrap();
        let (dx, dg, db) = layer_norm_backward(&d, &x, &g, &mean, &rstd, &t(&shape, &w)).unwrap();
        let analytic = [dx.to_f32(&d).unwrap(), dg.to_f32(&d).unwrap(), db.to_f32(&d).unwrap()];
        for (which, name) in ["x", "gamma", "beta"].iter().enumerate() {
            let mut numeric = Vec::new();
            let len = if which == 0 { n * c } else { c };
            for i in 0..len {
                let mut vals = [inp.x.clone(), inp.gamma.clone(), inp.beta.clone()];
                let f = |vals: &[Vec<f32>; 3]| weighted_output(&d, &shape, &vals[0], &vals[1], &vals[2], &w);
                let v0 = vals[which][i];
                vals[which][i] = v0 + h;
                let up = f(&vals);
                vals[which][i] = v0 - h;
                let down = f(&vals);
                numeric.push(((up - down) / (2.0 * h as f64)) as f32);
            }
            assert_close(&format!("d{name} [{n}, {c}]"), &analytic[which], &numeric, 2e-3, 1e-2);
        }
    }
}

#[test]
fn layer_norm_bad_input_is_an_error() {
    let d = Device::cpu();
    let f = |s: &[usize]| Tensor::from_f32(&d, s, &vec![0.5; s.iter().product()]).unwrap();
    let x = f(&[4, 3]);
    let (g3, b3) = (f(&[3]), f(&[3]));
    let err = |r: tigel::Result<(Tensor, Tensor, Tensor)>| r.unwrap_err().to_string();

    let e = err(layer_norm(&d, &x, &f(&[4]), &b3, EPS));
    assert!(e.contains("[4, 3]") && e.contains("[4]") && e.contains("gamma"), "{e}");
    let e = err(layer_norm(&d, &x, &g3, &f(&[1, 3]), EPS));
    assert!(e.contains("[1, 3]") && e.contains("beta"), "{e}");
    let u = Tensor::from_u32(&d, &[4, 3], &[1; 12]).unwrap();
    let e = err(layer_norm(&d, &u, &g3, &b3, EPS));
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = err(layer_norm(&d, &f(&[]), &f(&[1]), &f(&[1]), EPS));
    assert!(e.contains("[]"), "{e}");
    let e = err(layer_norm(&d, &Tensor::from_f32(&d, &[2, 0], &[]).unwrap(), &g3, &b3, EPS));
    assert!(e.contains("[2, 0]"), "{e}");
    let e = err(layer_norm(&d, &x, &g3, &b3, -1.0));
    assert!(e.contains("eps"), "{e}");

    let (_, mean, rstd) = layer_norm(&d, &x, &g3, &b3, EPS).unwrap();
    let e = err(layer_norm_backward(&d, &x, &g3, &mean, &rstd, &f(&[3, 4])));
    assert!(e.contains("[4, 3]") && e.contains("[3, 4]") && e.contains("dy"), "{e}");
    let e = err(layer_norm_backward(&d, &x, &g3, &f(&[3]), &rstd, &x));
    assert!(e.contains("[3]") && e.contains("mean"), "{e}");
    let e = err(layer_norm_backward(&d, &x, &g3, &mean, &f(&[5]), &x));
    assert!(e.contains("[5]") && e.contains("rstd"), "{e}");
    let e = err(layer_norm_backward(&d, &x, &f(&[2]), &mean, &rstd, &x));
    assert!(e.contains("[2]") && e.contains("gamma"), "{e}");
    let e = err(layer_norm_backward(&d, &x, &g3, &mean, &rstd, &u));
    assert!(e.contains("u32"), "{e}");
}

#[test]
fn layer_norm_with_no_rows_gives_zero_parameter_gradients() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        let x = Tensor::from_f32(d, &[0, 5], &[]).unwrap();
        let g = Tensor::from_f32(d, &[5], &[1.0; 5]).unwrap();
        let (y, mean, rstd) = layer_norm(d, &x, &g, &g, EPS).unwrap();
        assert_eq!((y.shape.clone(), mean.shape.clone()), (vec![0, 5], vec![0]));
        let (dx, dg, db) = layer_norm_backward(d, &x, &g, &mean, &rstd, &x).unwrap();
        assert_eq!(dx.shape, [0, 5]);
        assert_eq!(dg.to_f32(d).unwrap(), [0.0; 5], "{}", d.name());
        assert_eq!(db.to_f32(d).unwrap(), [0.0; 5], "{}", d.name());
    }
}

/// The statistics-as-one-tensor forward (`layer_norm_stats`) and the one-dispatch backward
/// (`resnorm::layer_norm_backward_fused`, what `Graph::layer_norm` runs) against the three-kernel path,
/// on each engine: y and the statistics exactly on the CPU (the same row code; a GPU compiler may contract
/// the two entry points differently: within 1e-5 there), dx, dgamma and dbeta within the
/// rounding of another summation order (column sums of N terms of size ≤ 20: atol 4e-6·N·20).
#[test]
fn layer_norm_stats_and_fused_backward_match_the_three_kernel_path() {
    let check = |dev: &Device, engine: &str| {
        let mut rng = Rng::new(seed());
        for (n, c) in [(1, 7), (13, 64), (300, 130), (13, 768)] {
            let x = Tensor::from_f32(dev, &[n, c], &rng.vec(n * c, -3.0, 3.0)).unwrap();
            let g = Tensor::from_f32(dev, &[c], &rng.vec(c, -2.0, 2.0)).unwrap();
            let b = Tensor::from_f32(dev, &[c], &rng.vec(c, -1.0, 1.0)).unwrap();
            let dy = Tensor::from_f32(dev, &[n, c], &rng.vec(n * c, -1.0, 1.0)).unwrap();
            let (y, mean, rstd) = layer_norm(dev, &x, &g, &b, EPS).unwrap();
            let (y2, stats) = tigel::ops::norm::layer_norm_stats(dev, &x, &g, &b, EPS).unwrap();
            let what = format!("{engine} [{n}, {c}]");
            let st = stats.to_f32(dev).unwrap();
            let (m, r) = (mean.to_f32(dev).unwrap(), rstd.to_f32(dev).unwrap());
            let inter: Vec<f32> = m.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
            let (yv, y2v) = (y.to_f32(dev).unwrap(), y2.to_f32(dev).unwrap());
            if engine == "cpu" {
                assert_eq!(yv, y2v, "{what} y");
                assert_eq!(st, inter, "{what} stats");
            } else {
                assert_close(&format!("{what} y"), &y2v, &yv, 1e-5, 1e-5);
                assert_close(&format!("{what} stats"), &st, &inter, 1e-5, 1e-5);
            }
            let want = layer_norm_backward(dev, &x, &g, &mean, &rstd, &dy).unwrap();
            let got = tigel::ops::resnorm::layer_norm_backward_fused(dev, &x, &g, &stats, &dy, None).unwrap();
            let atol = 4e-6 * n as f32 * 20.0;
            for (k, (a, w)) in [(&got.0, &want.0), (&got.1, &want.1), (&got.2, &want.2)].into_iter().enumerate() {
                let name = format!("{what} {}", ["dx", "dgamma", "dbeta"][k]);
                assert_close(&name, &a.to_f32(dev).unwrap(), &w.to_f32(dev).unwrap(), atol, 1e-5);
            }
        }
    };
    check(&cpu(), "cpu");
    with_gpu(|d| check(d, "gpu"));
}
