//! Attention family: the fused forward (out, lse) and backward (dqkv), causal and not, CPU twin against
//! an unfused f64 reference, GPU against the CPU twin, the backward against finite differences of the
//! forward, the folded workgroup grid, large scores, bad input, and the small-tile variant that a device
//! with WebGPU's default 16 KiB of workgroup memory takes, against the full tiles and the CPU twin.
//!
//! Tolerances are relative to the scale of the tensor compared: atol = TOL * max|want| (lse, whose
//! entries sit near log T, also gets TOL absolute). Inputs are uniform in [-1.5, 1.5), so scaled scores
//! stay within a few units and every output is a sum of at most T = 70 products of O(1) terms.
//! * CPU twin vs f64, and GPU vs CPU twin: TOL = 2e-5. Each f32 result rounds its ~T-term sums once per
//!   term (worst case ~T * eps / 2 = 4e-6 of the tensor's scale, typically sqrt(T) * eps ~ 5e-7), its
//!   exp is within a few ulp (Vulkan allows 3 + 2|x| ulp), and the backward's dS = P (dP - delta)
//!   cancels by a small factor for these inputs. Measured worst: 1.2e-6 (CPU vs f64), 2.4e-6 (GPU vs
//!   CPU: online vs whole-row softmax, vec4 dot products, split partial sums). One key dropped,
//!   doubled or seen through a wrong mask moves an output by ~1/T of its scale (> 1e-2).
//! * Large scores (inputs in [-10, 10), D = 64): TOL_LARGE = 1e-4. Scores spread over +-150; each
//!   carries an absolute rounding error up to ~1e-5 (64 products of |q k| ~ 25 each, eps 6e-8, scale
//!   1/8), which becomes a relative error of that size in its probability, and exp adds a few 1e-6
//!   (Vulkan allows 3 + 2|x| ulp): ~2e-5 in the worst case. Measured worst: 1.2e-5.
//! * Finite differences (CPU): central differences with step 1e-2 in f32 inputs, loss = sum(out * w)
//!   accumulated in f64. Truncation error ~ h^2 / 6 * |f'''| ~ 1e-5, f32 rounding of the loss ~ 1e-6 /
//!   (2h) ~ 1e-4; compared with atol 2e-3 + rtol 2e-2.
mod common;
use common::*;
use tigel::kernels::attention::{variant, FULL, MAX_HEAD_DIM, SMALL, SMALL_MAX_HEAD_DIM};
use tigel::ops::attention as at;
use tigel::{Device, Tensor};

const TOL: f32 = 2e-5;
const TOL_LARGE: f32 = 1e-4;

/// (B, T, H, D): T = 1, primes and lengths off the 16 / 8 tiles, D from 6 (not a multiple of 4) to 128,
/// several heads and batches.
const SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 8),
    (2, 7, 3, 16),
    (1, 33, 2, 32),
    (2, 70, 2, 64),
    (1, 17, 1, 128),
    (3, 16, 4, 8),
    (2, 9, 3, 6),
    (1, 20, 1, 40),
    (1, 1, 2, 64),
    (2, 25, 1, 12),
];

struct Fwd {
    out: Vec<f64>,
    lse: Vec<f64>,
}

/// Unfused f64 attention: S = Q K^T * scale, causal mask, P = softmax(S), O = P V, lse = log sum exp(S).
/// Returns also P per (b, h) ([T, T], masked entries 0) for the backward.
fn reference_fwd((b, t, h, d): (usize, usize, usize, usize), qkv: &[f32], causal: bool) -> (Fwd, Vec<Vec<f64>>) {
    let c = h * d;
    let scale = 1.0 / (d as f64).sqrt();
    let at = |bi: usize, i: usize, part: usize, hi: usize, k: usize| {
        qkv[(bi * t + i) * 3 * c + part * c + hi * d + k] as f64
    };
    let mut out = vec![0.0; b * t * c];
    let mut lse = vec![0.0; b * h * t];
    let mut probs = Vec::new();
    for bi in 0..b {
        for hi in 0..h {
            let mut p = vec![0.0; t * t];
            for i in 0..t {
                let n = if causal { i + 1 } else { t };
                let s: Vec<f64> = (0..n)
                    .map(|j| (0..d).map(|k| at(bi, i, 0, hi, k) * at(bi, j, 1, hi, k)).sum::<f64>() * scale)
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|&x| (x - m).exp()).sum();
                lse[(bi * h + hi) * t + i] = m + z.ln();
                for j in 0..n {
                    p[i * t + j] = (s[j] - m).exp() / z;
                }
                for k in 0..d {
                    out[(bi * t + i) * c + hi * d + k] = (0..n).map(|j| p[i * t + j] * at(bi, j, 2, hi, k)).sum();
                }
            }
            probs.push(p);
        }
    }
    (Fwd { out, lse }, probs)
}

/// The backward by its explicit formulas: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)),
/// dQ = dS K * scale, dK = dS^T Q * scale.
fn reference_bwd(
    (b, t, h, d): (usize, usize, usize, usize),
    qkv: &[f32],
    dout: &[f32],
    probs: &[Vec<f64>],
) -> Vec<f64> {
    let c = h * d;
    let scale = 1.0 / (d as f64).sqrt();
    let at = |bi: usize, i: usize, part: usize, hi: usize, k: usize| {
        qkv[(bi * t + i) * 3 * c + part * c + hi * d + k] as f64
    };
    let go = |bi: usize, i: usize, hi: usize, k: usize| dout[(bi * t + i) * c + hi * d + k] as f64;
    let mut dqkv = vec![0.0; b * t * 3 * c];
    for bi in 0..b {
        for hi in 0..h {
            let p = &probs[bi * h + hi];
            let mut ds = vec![0.0; t * t];
            for i in 0..t {
                let dp: Vec<f64> =
                    (0..t).map(|j| (0..d).map(|k| go(bi, i, hi, k) * at(bi, j, 2, hi, k)).sum()).collect();
                let rs: f64 = (0..t).map(|j| p[i * t + j] * dp[j]).sum();
                for j in 0..t {
                    ds[i * t + j] = p[i * t + j] * (dp[j] - rs);
                }
            }
            for i in 0..t {
                for k in 0..d {
                    let row = (bi * t + i) * 3 * c + hi * d + k;
                    dqkv[row] = scale * (0..t).map(|j| ds[i * t + j] * at(bi, j, 1, hi, k)).sum::<f64>();
                    dqkv[row + c] = scale * (0..t).map(|j| ds[j * t + i] * at(bi, j, 0, hi, k)).sum::<f64>();
                    dqkv[row + 2 * c] = (0..t).map(|j| p[j * t + i] * go(bi, j, hi, k)).sum::<f64>();
                }
            }
        }
    }
    dqkv
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |a, &x| a.max(x.abs()))
}

/// Compares with atol = tol * max|want| (+ `floor`).
#[track_caller]
fn check(what: &str, got: &[f32], want: &[f32], tol: f32, floor: f32) {
    assert_close(what, got, want, tol * max_abs(want) + floor, 0.0);
}

/// Forward on `dev`: (out, lse).
fn fwd(dev: &Device, shape: (usize, usize, usize, usize), qkv: &[f32], causal: bool) -> (Vec<f32>, Vec<f32>) {
    let (b, t, h, d) = shape;
    let x = Tensor::from_f32(dev, &[b, t, 3 * h * d], qkv).unwrap();
    let (out, lse) = at::attention(dev, &x, h, causal).unwrap();
    assert_eq!(out.shape, [b, t, h * d]);
    assert_eq!(lse.shape, [b, h, t]);
    (out.to_f32(dev).unwrap(), lse.to_f32(dev).unwrap())
}

/// Backward on `dev` from the given forward results.
fn bwd(
    dev: &Device,
    shape: (usize, usize, usize, usize),
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    causal: bool,
) -> Vec<f32> {
    let (b, t, h, d) = shape;
    let x = Tensor::from_f32(dev, &[b, t, 3 * h * d], qkv).unwrap();
    let o = Tensor::from_f32(dev, &[b, t, h * d], out).unwrap();
    let l = Tensor::from_f32(dev, &[b, h, t], lse).unwrap();
    let g = Tensor::from_f32(dev, &[b, t, h * d], dout).unwrap();
    let dx = at::attention_backward(dev, &x, &o, &l, &g, h, causal).unwrap();
    assert_eq!(dx.shape, x.shape);
    dx.to_f32(dev).unwrap()
}

fn inputs(rng: &mut Rng, (b, t, h, d): (usize, usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    (rng.vec(b * t * 3 * h * d, -1.5, 1.5), rng.vec(b * t * h * d, -1.5, 1.5))
}

#[test]
fn attention_cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for &shape in SHAPES {
        for causal in [true, false] {
            let (qkv, dout) = inputs(&mut rng, shape);
            let (want, probs) = reference_fwd(shape, &qkv, causal);
            let (out, lse) = fwd(&cpu, shape, &qkv, causal);
            let what = format!("{shape:?} causal={causal}");
            check(&format!("out {what}"), &out, &f32s(&want.out), TOL, 0.0);
            check(&format!("lse {what}"), &lse, &f32s(&want.lse), TOL, TOL);
            let dqkv = bwd(&cpu, shape, &qkv, &out, &lse, &dout, causal);
            check(&format!("dqkv {what}"), &dqkv, &f32s(&reference_bwd(shape, &qkv, &dout, &probs)), TOL, 0.0);
        }
    }
}

#[test]
fn attention_gpu_matches_cpu_twin() {
    // The forward's row statistics in workgroup memory, then with subgroups where the adapter has them.
    use tigel::kernels::attention::ATTENTION_FWD;
    for_each_variant(&[&ATTENTION_FWD], |_| attention_gpu_matches_cpu_twin_once());
}

fn attention_gpu_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for &shape in SHAPES {
        for causal in [true, false] {
            let (qkv, dout) = inputs(&mut rng, shape);
            let what = format!("{shape:?} causal={causal}");
            let (out, lse) = fwd(&cpu, shape, &qkv, causal);
            let (gout, glse) = fwd(&gpu, shape, &qkv, causal);
            check(&format!("out {what}"), &gout, &out, TOL, 0.0);
            check(&format!("lse {what}"), &glse, &lse, TOL, TOL);
            // Both backwards from the same forward results, so only the backward kernels differ.
            let want = bwd(&cpu, shape, &qkv, &out, &lse, &dout, causal);
            let got = bwd(&gpu, shape, &qkv, &out, &lse, &dout, causal);
            check(&format!("dqkv {what}"), &got, &want, TOL, 0.0);
        }
    }
}

#[test]
fn attention_large_scores_do_not_overflow() {
    // Inputs in [-10, 10) with D = 64: scaled scores spread over about +-150, and in each (b, h) the
    // last query equals the first key, a score of 800 (a one-hot row), far past the 88 where exp
    // overflows f32 without the running max. Compared with the f64 reference on both devices, with
    // each form of the forward's row statistics on the GPU.
    use tigel::kernels::attention::ATTENTION_FWD;
    for_each_variant(&[&ATTENTION_FWD], |_| attention_large_scores_do_not_overflow_once());
}

fn attention_large_scores_do_not_overflow_once() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let shape = (2, 21, 2, 64);
    let (b, t, h, d) = shape;
    let mut qkv = rng.vec(b * t * 3 * h * d, -10.0, 10.0);
    let c = h * d;
    for bi in 0..b {
        for k in 0..c {
            let x = if k % 2 == 0 { 10.0 } else { -10.0 };
            qkv[(bi * t + t - 1) * 3 * c + k] = x;
            qkv[bi * t * 3 * c + c + k] = x;
        }
    }
    let dout = rng.vec(b * t * h * d, -1.0, 1.0);
    for causal in [true, false] {
        let (want, probs) = reference_fwd(shape, &qkv, causal);
        let want_dx = f32s(&reference_bwd(shape, &qkv, &dout, &probs));
        for dev in &devs {
            let what = format!("causal={causal} on {}", dev.name());
            let (out, lse) = fwd(dev, shape, &qkv, causal);
            assert!(out.iter().chain(&lse).all(|x| x.is_finite()), "{what}: inf or NaN");
            check(&format!("out {what}"), &out, &f32s(&want.out), TOL_LARGE, 0.0);
            check(&format!("lse {what}"), &lse, &f32s(&want.lse), TOL_LARGE, TOL_LARGE);
            let dx = bwd(dev, shape, &qkv, &out, &lse, &dout, causal);
            check(&format!("dqkv {what}"), &dx, &want_dx, TOL_LARGE, 0.0);
        }
    }
}

#[test]
fn attention_grid_folds_past_the_dimension_limit() {
    // 33000 batches x 2 heads of one token: 66000 workgroups, over the 65535 per-dimension limit, so
    // the grid folds into y. With T = 1 each query sees only itself: out = v. The backward kernels
    // take the same grid and index it with the same code (flat_id, then `groups` as the bound); they
    // are left out because lavapipe spends ~150 us on each of their workgroups.
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let shape = (33000, 1, 2, 8);
    let (qkv, _) = inputs(&mut rng, shape);
    let (out, lse) = fwd(&cpu, shape, &qkv, true);
    let (gout, glse) = fwd(&gpu, shape, &qkv, true);
    let v: Vec<f32> = qkv.chunks(48).flat_map(|r| r[32..48].to_vec()).collect();
    check("out cpu", &out, &v, TOL, 0.0);
    check("out gpu", &gout, &out, TOL, 0.0);
    check("lse gpu", &glse, &lse, TOL, TOL);
}

#[test]
fn attention_backward_grad_matches_finite_differences() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (shape, causal) in [((2, 5, 2, 8), true), ((1, 6, 3, 4), false), ((1, 9, 1, 16), true)] {
        let (b, t, h, d) = shape;
        let (qkv, w) = inputs(&mut rng, shape);
        // loss = sum(out * w), so dout = w.
        let loss = |x: &[f32]| -> f64 {
            fwd(&cpu, shape, x, causal).0.iter().zip(&w).map(|(&o, &w)| o as f64 * w as f64).sum()
        };
        let (out, lse) = fwd(&cpu, shape, &qkv, causal);
        let dqkv = bwd(&cpu, shape, &qkv, &out, &lse, &w, causal);
        let n = b * t * 3 * h * d;
        // A few entries of each of q, k and v (c = h*d columns each), and the first and last token.
        let c = h * d;
        let mut picks: Vec<usize> = (0..12).map(|_| rng.below(n)).collect();
        picks.extend([0, c, 2 * c, n - 1, n - c - 1, n - 2 * c - 1]);
        let step = 1e-2f32;
        for &i in &picks {
            let mut x = qkv.clone();
            x[i] = qkv[i] + step;
            let up = loss(&x);
            x[i] = qkv[i] - step;
            let down = loss(&x);
            let fd = (up - down) / (2.0 * step as f64);
            let an = dqkv[i] as f64;
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
                "{shape:?} causal={causal}: dqkv[{i}] = {an}, finite difference {fd}"
            );
        }
    }
}

#[test]
fn attention_bad_input_is_an_error() {
    let cpu = Device::cpu();
    let t = |shape: &[usize]| Tensor::from_f32(&cpu, shape, &vec![0.5; shape.iter().product()]).unwrap();
    let err = |r: tigel::Result<(Tensor, Tensor)>| r.unwrap_err().to_string();
    // Rank 2, last dim not a multiple of 3 * heads, no heads, head dim over the maximum.
    let e = err(at::attention(&cpu, &t(&[4, 24]), 2, true));
    assert!(e.contains("attention") && e.contains("[4, 24]"), "{e}");
    let e = err(at::attention(&cpu, &t(&[1, 4, 25]), 2, true));
    assert!(e.contains("[1, 4, 25]") && e.contains("heads"), "{e}");
    let e = err(at::attention(&cpu, &t(&[1, 4, 24]), 0, true));
    assert!(e.contains("[1, 4, 24]") && e.contains("heads"), "{e}");
    let big = 3 * (MAX_HEAD_DIM + 1);
    let e = err(at::attention(&cpu, &t(&[1, 2, big]), 1, false));
    assert!(e.contains(&format!("[1, 2, {big}]")) && e.contains(&MAX_HEAD_DIM.to_string()), "{e}");
    let u = Tensor::from_u32(&cpu, &[1, 2, 6], &[0; 12]).unwrap();
    let e = err(at::attention(&cpu, &u, 1, true));
    assert!(e.contains("u32") && e.contains("f32"), "{e}");

    // Backward: each of out, lse, dout of the wrong shape is named with qkv's shape.
    let (qkv, out, lse, dout) = (t(&[2, 3, 12]), t(&[2, 3, 4]), t(&[2, 2, 3]), t(&[2, 3, 4]));
    assert!(at::attention_backward(&cpu, &qkv, &out, &lse, &dout, 2, true).is_ok());
    for (o, l, g, bad) in [
        (t(&[2, 3, 5]), lse.clone(), dout.clone(), "[2, 3, 5]"),
        (out.clone(), t(&[2, 3, 2]), dout.clone(), "[2, 3, 2]"),
        (out.clone(), lse.clone(), t(&[3, 3, 4]), "[3, 3, 4]"),
    ] {
        let e = at::attention_backward(&cpu, &qkv, &o, &l, &g, 2, true).unwrap_err().to_string();
        assert!(e.contains("attention_backward") && e.contains(bad) && e.contains("[2, 3, 12]"), "{e}");
    }
    let e = at::attention_backward(&cpu, &t(&[2, 3, 13]), &out, &lse, &dout, 2, true).unwrap_err().to_string();
    assert!(e.contains("[2, 3, 13]"), "{e}");

    // An empty sequence gives empty outputs and no dispatch.
    let (o, l) = at::attention(&cpu, &t(&[2, 0, 12]), 2, true).unwrap();
    assert_eq!((o.shape, l.shape), (vec![2, 0, 4], vec![2, 2, 0]));
}

#[test]
fn attention_variant_follows_the_workgroup_memory_limit() {
    // The registry's figures: the full tiles need over WebGPU's default 16 KiB, the small ones fit it.
    assert_eq!(FULL.workgroup_memory(), 27136);
    assert!(SMALL.workgroup_memory() <= 16384, "{}", SMALL.workgroup_memory());
    assert!(std::ptr::eq(variant(32768, MAX_HEAD_DIM).unwrap(), &FULL));
    assert!(std::ptr::eq(variant(32768, 8).unwrap(), &FULL));
    assert!(std::ptr::eq(variant(16384, SMALL_MAX_HEAD_DIM).unwrap(), &SMALL));
    assert!(variant(16384, SMALL_MAX_HEAD_DIM + 1).is_none());
    assert!(variant(32768, MAX_HEAD_DIM + 1).is_none());
}

#[test]
fn attention_small_tiles_match_full_tiles_and_cpu_twin() {
    // Same lanes, splits and summation order as the full tiles (only the tile pitch differs), so the
    // results are bit-identical to the full tiles' and within TOL of the CPU twin.
    let Some(full) = gpu() else { return };
    let small = webgpu_defaults_device(&full);
    assert_eq!(small.max_workgroup_memory(), 16384);
    // The small device has no subgroups: the full tiles' forward in the same (workgroup-memory) form.
    full.use_variant(&tigel::kernels::attention::ATTENTION_FWD, "").unwrap();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for &shape in SHAPES.iter().filter(|s| s.3 <= SMALL_MAX_HEAD_DIM) {
        for causal in [true, false] {
            let (qkv, dout) = inputs(&mut rng, shape);
            let what = format!("{shape:?} causal={causal}");
            let (out, lse) = fwd(&full, shape, &qkv, causal);
            let (sout, slse) = fwd(&small, shape, &qkv, causal);
            assert_close(&format!("out small vs full {what}"), &sout, &out, 0.0, 0.0);
            assert_close(&format!("lse small vs full {what}"), &slse, &lse, 0.0, 0.0);
            let (cout, clse) = fwd(&cpu, shape, &qkv, causal);
            check(&format!("out small vs cpu {what}"), &sout, &cout, TOL, 0.0);
            check(&format!("lse small vs cpu {what}"), &slse, &clse, TOL, TOL);
            let want = bwd(&full, shape, &qkv, &cout, &clse, &dout, causal);
            let got = bwd(&small, shape, &qkv, &cout, &clse, &dout, causal);
            assert_close(&format!("dqkv small vs full {what}"), &got, &want, 0.0, 0.0);
            let twin = bwd(&cpu, shape, &qkv, &cout, &clse, &dout, causal);
            check(&format!("dqkv small vs cpu {what}"), &got, &twin, TOL, 0.0);
        }
    }
    // Past the small tiles' head dim the device's limit is named, before any dispatch.
    let d = SMALL_MAX_HEAD_DIM + 4;
    let x = Tensor::from_f32(&small, &[1, 2, 3 * d], &vec![0.5; 6 * d]).unwrap();
    let e = at::attention(&small, &x, 1, true).unwrap_err().to_string();
    assert!(e.contains("max_compute_workgroup_storage_size") && e.contains(&format!("head dim {d}")), "{e}");
}

#[test]
fn attention_small_variants_match_cpu_twin() {
    // Every tile variant of the small tiles, on the adapter opened with WebGPU's default limits (where
    // the small tiles run), against the CPU twin within TOL.
    use tigel::kernels::attention::ATTENTION_SMALL_FWD;
    let Some(full) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for v in ATTENTION_SMALL_FWD.variants() {
        // Subgroup variants on a device opened with subgroups where the adapter has them.
        let small = webgpu_defaults_device_with(&full, tigel::wgpu::Features::SUBGROUP);
        small.set_tune_mode(tigel::device::TuneMode::Off);
        if let Err(e) = small.use_variant(&ATTENTION_SMALL_FWD, v.variant_name()) {
            assert!(v.shader_info().is_some_and(|s| s.subgroups), "{}: {e}", v.name());
            eprintln!("variant {}: this adapter cannot run it, skipped", v.name());
            continue;
        }
        for &shape in SHAPES.iter().filter(|s| s.3 <= SMALL_MAX_HEAD_DIM) {
            for causal in [true, false] {
                let (qkv, _) = inputs(&mut rng, shape);
                let what = format!("{} {shape:?} causal={causal}", v.name());
                let (sout, slse) = fwd(&small, shape, &qkv, causal);
                let (cout, clse) = fwd(&cpu, shape, &qkv, causal);
                check(&format!("out vs cpu {what}"), &sout, &cout, TOL, 0.0);
                check(&format!("lse vs cpu {what}"), &slse, &clse, TOL, TOL);
            }
        }
    }
}
