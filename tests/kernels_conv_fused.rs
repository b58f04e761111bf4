//! The convolution's fused epilogue (bias and activation in conv2d_fwd / conv2d_bwd_input), its backward
//! (conv_act_bias_bwd) and the mean BCE with a bias (bce_mean): each against the unfused ops it
//! replaces on the same device, and the GPU against the CPU twin, on random inputs of odd shapes.
//!
//! Tolerances: the fused forward adds the bias to and applies the activation on the same f32 result as
//! the unfused ops, so the two agree to a few ulps (1e-6 relative; the GPU's unfused chain is separate
//! dispatches of the same arithmetic). The GPU and the CPU twin sum the convolution in different orders
//! (2e-5 on these small sums of at most 17·16 products of values in [-1, 1)). The bias gradient and the
//! BCE mean are sums of up to a few thousand terms, in different orders: 1e-5 relative to their size.
mod common;
use common::*;
use tigel::ops::bce_mean::{bce_mean, bce_mean_backward};
use tigel::ops::chnorm::FusedAct;
use tigel::ops::conv::{self as cv, Conv2d};
use tigel::ops::conv_fused::{self as cf, Epi};
use tigel::ops::elementwise::{self as ew, Unary};
use tigel::ops::{loss, reduce};
use tigel::{Device, Tensor};

/// (n, ci, co, h, w, k, stride, padding).
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

/// Odd sizes, one channel, a 4x4 stride-2 DCGAN layer.
const CASES: [Case; 4] =
    [(3, 5, 7, 9, 7, 3, 1, 1), (2, 1, 3, 13, 11, 4, 2, 1), (1, 17, 1, 6, 6, 4, 2, 1), (2, 3, 5, 5, 7, 1, 2, 0)];

const ACTS: [Option<(Unary, f32)>; 5] = [
    None,
    Some((Unary::Relu, 0.01)),
    Some((Unary::LeakyRelu, 0.2)),
    Some((Unary::Tanh, 0.01)),
    Some((Unary::Sigmoid, 0.01)),
];

fn up(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn fused(a: Option<(Unary, f32)>) -> Option<FusedAct> {
    a.map(|(op, alpha)| FusedAct { op, alpha })
}

/// The fused forward of case `c` (transposed or not) on `d`, and the unfused chain's pre-activation
/// z = conv + b and output act(z).
fn forward(
    d: &Device,
    c: Case,
    transposed: bool,
    act: Option<(Unary, f32)>,
    bias: bool,
    v: &(Vec<f32>, Vec<f32>, Vec<f32>),
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>) {
    let (n, ci, co, h, w, k, s, p) = c;
    let o = Conv2d { stride: s, padding: p };
    let x = up(d, &[n, ci, h, w], &v.0);
    let wt = if transposed { up(d, &[ci, co, k, k], &v.1) } else { up(d, &[co, ci, k, k], &v.1) };
    let b = up(d, &[co], &v.2);
    let epi = Epi { bias: bias.then_some(&b), act: fused(act), residual: None };
    let y = if transposed {
        cf::conv_transpose2d_bias_act(d, &x, &wt, epi, o, 0).unwrap()
    } else {
        cf::conv2d_bias_act(d, &x, &wt, epi, o).unwrap()
    };
    let plain = if transposed { cv::conv_transpose2d(d, &x, &wt, o, 0) } else { cv::conv2d(d, &x, &wt, o) }.unwrap();
    let z = if bias { ew::add(d, &plain, &b.reshape(&[co, 1, 1]).unwrap()).unwrap() } else { plain };
    let ya = match act {
        Some((op, alpha)) => ew::unary_with(d, op, &z, alpha).unwrap(),
        None => z.clone(),
    };
    assert_eq!(y.shape, z.shape);
    (y.to_f32(d).unwrap(), z.to_f32(d).unwrap(), ya.to_f32(d).unwrap(), y.shape.clone())
}

fn inputs(rng: &mut Rng, c: Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, ci, co, h, w, k, ..) = c;
    (rng.vec(n * ci * h * w, -1.0, 1.0), rng.vec(co * ci * k * k, -1.0, 1.0), rng.vec(co, -1.0, 1.0))
}

/// The convolution's three kernels, which share their variants.
const CONV: &[&tigel::kernels::Kernel] = &[
    &tigel::kernels::conv::CONV2D_FWD,
    &tigel::kernels::conv::CONV2D_BWD_INPUT,
    &tigel::kernels::conv::CONV2D_BWD_WEIGHT,
];

/// Fused = unfused on each device, and the GPU's fused result = the CPU twin's, for every variant of the
/// convolution kernels.
#[test]
fn conv_epilogue_matches_unfused_ops_and_cpu_twin() {
    for_each_variant(CONV, |_| epilogue_once());
}

fn epilogue_once() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for c in CASES {
        let v = inputs(&mut rng, c);
        for transposed in [false, true] {
            for act in ACTS {
                for bias in [false, true] {
                    let what = format!("{c:?} transposed {transposed} {act:?} bias {bias}");
                    let mut first: Option<Vec<f32>> = None;
                    for d in &devs {
                        let (y, _, ya, _) = forward(d, c, transposed, act, bias, &v);
                        assert_close(&format!("{what}: fused vs unfused"), &y, &ya, 1e-6, 1e-6);
                        match &first {
                            None => first = Some(y),
                            Some(want) => assert_close(&format!("{what}: GPU vs CPU twin"), &y, want, 2e-5, 2e-5),
                        }
                    }
                }
            }
        }
    }
}

/// A per-(image, channel) bias (conv2d and the transposed convolution) and a residual (conv2d) in the
/// epilogue: the fused result = the unfused ops on each device, and the GPU = the CPU twin, for every
/// variant of the convolution kernels.
#[test]
fn conv_sample_bias_and_residual_match_unfused_ops_and_cpu_twin() {
    for_each_variant(CONV, |_| sample_bias_and_residual_once());
}

fn sample_bias_and_residual_once() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for c in CASES {
        let (n, ci, co, h, w, k, s, p) = c;
        let o = Conv2d { stride: s, padding: p };
        let v = inputs(&mut rng, c);
        let ys = cv::conv2d_shape(&[n, ci, h, w], &[co, ci, k, k], o).unwrap().y_shape();
        let (bv, rv) = (rng.vec(n * co, -1.0, 1.0), rng.vec(ys.iter().product(), -1.0, 1.0));
        let tb = rng.vec(n * ci, -1.0, 1.0);
        for (bias, residual) in [(true, true), (true, false), (false, true)] {
            let what = format!("{c:?} sample bias {bias} residual {residual}");
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for d in &devs {
                let x = up(d, &[n, ci, h, w], &v.0);
                let wt = up(d, &[co, ci, k, k], &v.1);
                let (b, r) = (up(d, &[n, co], &bv), up(d, &ys, &rv));
                let epi = Epi { bias: bias.then_some(&b), act: None, residual: residual.then_some(&r) };
                let y = cf::conv2d_bias_act(d, &x, &wt, epi, o).unwrap().to_f32(d).unwrap();
                let mut want = cv::conv2d(d, &x, &wt, o).unwrap();
                if bias {
                    want = ew::add(d, &want, &b.reshape(&[n, co, 1, 1]).unwrap()).unwrap();
                }
                if residual {
                    want = ew::add(d, &want, &r).unwrap();
                }
                assert_close(&format!("{what}: fused vs unfused"), &y, &want.to_f32(d).unwrap(), 1e-6, 1e-6);
                // The transposed convolution (of y's shape back to x's) with one bias per (image, input channel).
                let (yt, b2) = (up(d, &ys, &rv), up(d, &[n, ci], &tb));
                let epi = Epi { bias: Some(&b2), act: None, residual: None };
                let t = cf::conv_transpose2d_bias_act(d, &yt, &wt, epi, o, 0).unwrap();
                let plain = cv::conv_transpose2d(d, &yt, &wt, o, 0).unwrap();
                let tw = ew::add(d, &plain, &b2.reshape(&[n, ci, 1, 1]).unwrap()).unwrap().to_f32(d).unwrap();
                let t = t.to_f32(d).unwrap();
                assert_close(&format!("{what}: transposed fused vs unfused"), &t, &tw, 1e-6, 1e-6);
                match &first {
                    None => first = Some((y, t)),
                    Some((wy, wt)) => {
                        assert_close(&format!("{what}: GPU vs CPU twin"), &y, wy, 2e-5, 2e-5);
                        assert_close(&format!("{what}: transposed GPU vs CPU twin"), &t, wt, 2e-5, 2e-5);
                    }
                }
            }
        }
    }
}

/// conv_act_bias_bwd: dz = the unfused activation backward at the pre-activation, db = Σ dz over
/// (N, H, W); the GPU agrees with the CPU twin.
#[test]
fn conv_act_bias_backward_matches_unfused_ops_and_cpu_twin() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for c in CASES {
        let v = inputs(&mut rng, c);
        for act in ACTS {
            let what = format!("{c:?} {act:?}");
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for d in &devs {
                let (y, z, _, shape) = forward(d, c, false, act, true, &v);
                let dy = Rng::new(7).vec(y.len(), -1.0, 1.0);
                let (yt, zt, dyt) = (up(d, &shape, &y), up(d, &shape, &z), up(d, &shape, &dy));
                let (dz, db) = cf::conv_act_bias_backward(d, &yt, &dyt, fused(act)).unwrap();
                let want = match act {
                    Some((op, alpha)) => ew::unary_backward(d, op, &zt, &dyt, alpha).unwrap(),
                    None => dyt.clone(),
                };
                let planes = want.reshape(&[shape[0], shape[1], shape[2] * shape[3]]).unwrap();
                let per_image = reduce::sum(d, &planes, 2, false).unwrap();
                let want_db = reduce::sum(d, &per_image, 0, false).unwrap().to_f32(d).unwrap();
                let (dz, db) = (dz.to_f32(d).unwrap(), db.to_f32(d).unwrap());
                // tanh' and sigmoid' from the output (1 - y², y(1 - y)) against the forms at z: a few ulps.
                assert_close(&format!("{what}: dz"), &dz, &want.to_f32(d).unwrap(), 1e-6, 1e-5);
                assert_close(&format!("{what}: db"), &db, &want_db, 1e-5, 1e-5);
                match &first {
                    None => first = Some((dz, db)),
                    Some((wz, wb)) => {
                        assert_close(&format!("{what}: dz GPU vs CPU twin"), &dz, wz, 1e-5, 1e-5);
                        assert_close(&format!("{what}: db GPU vs CPU twin"), &db, wb, 1e-4, 1e-5);
                    }
                }
            }
        }
    }
}

/// bce_mean = mean(bce_logits(x + b, t)); its backward = bce_logits_backward at x + b with dy/n, and
/// db the column sums; the GPU agrees with the CPU twin. Shapes [rows, cols] with one and several
/// columns, rows past one workgroup's 256 threads.
#[test]
fn bce_mean_matches_unfused_ops_and_cpu_twin() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for (rows, cols) in [(64, 1), (7, 3), (300, 5), (1, 1)] {
        let n = rows * cols;
        let (x, t, b) = (rng.vec(n, -6.0, 6.0), rng.vec(n, 0.0, 1.0), rng.vec(cols, -1.0, 1.0));
        let g = rng.vec(1, 0.5, 2.0);
        for bias in [false, true] {
            let what = format!("[{rows}, {cols}] bias {bias}");
            let mut first: Option<(Vec<f32>, Vec<f32>, Vec<f32>)> = None;
            for d in &devs {
                let (xt, tt, bt, gt) =
                    (up(d, &[rows, cols], &x), up(d, &[rows, cols], &t), up(d, &[cols], &b), up(d, &[1], &g));
                let bb = bias.then_some(&bt);
                let l = bce_mean(d, &xt, &tt, bb).unwrap().to_f32(d).unwrap();
                let z = if bias { ew::add(d, &xt, &bt).unwrap() } else { xt.clone() };
                let want = reduce::mean_all(d, &loss::bce_logits(d, &z, &tt).unwrap()).unwrap().to_f32(d).unwrap();
                assert_close(&format!("{what}: loss"), &l, &want, 1e-6, 1e-5);
                let (dx, db) = bce_mean_backward(d, &xt, &tt, bb, &gt).unwrap();
                let gs = up(d, &[1], &[g[0] * (1.0 / n as f32)]);
                let want_dx = loss::bce_logits_backward(d, &z, &tt, &gs).unwrap();
                let want_db = reduce::sum(d, &want_dx, 0, false).unwrap().to_f32(d).unwrap();
                let (dx, db) = (dx.to_f32(d).unwrap(), db.to_f32(d).unwrap());
                assert_close(&format!("{what}: dx"), &dx, &want_dx.to_f32(d).unwrap(), 0.0, 1e-6);
                assert_close(&format!("{what}: db"), &db, &want_db, 1e-6, 1e-5);
                match &first {
                    None => first = Some((l, dx, db)),
                    Some((wl, wx, wb)) => {
                        assert_close(&format!("{what}: loss GPU vs CPU twin"), &l, wl, 1e-6, 1e-5);
                        assert_close(&format!("{what}: dx GPU vs CPU twin"), &dx, wx, 1e-7, 1e-5);
                        assert_close(&format!("{what}: db GPU vs CPU twin"), &db, wb, 1e-6, 1e-5);
                    }
                }
            }
        }
    }
}

/// Bad biases and activations the epilogue cannot fuse are errors naming them.
#[test]
fn conv_epilogue_bad_inputs_are_errors() {
    let d = cpu();
    let x = up(&d, &[1, 2, 5, 5], &[0.5; 50]);
    let w = up(&d, &[3, 2, 3, 3], &[0.5; 54]);
    let b = up(&d, &[2], &[0.0; 2]);
    let o = Conv2d { stride: 1, padding: 1 };
    let e =
        cf::conv2d_bias_act(&d, &x, &w, Epi { bias: Some(&b), act: None, residual: None }, o).unwrap_err().to_string();
    assert!(e.contains("bias") && e.contains('3'), "{e}");
    let gelu = Some(FusedAct { op: Unary::Gelu, alpha: 0.01 });
    let e = cf::conv2d_bias_act(&d, &x, &w, Epi { bias: None, act: gelu, residual: None }, o).unwrap_err().to_string();
    assert!(e.contains("Gelu"), "{e}");
    let neg = Some(FusedAct { op: Unary::LeakyRelu, alpha: -0.5 });
    assert!(cf::conv2d_bias_act(&d, &x, &w, Epi { bias: None, act: neg, residual: None }, o).is_err());
    // A residual of another shape than the output's, and any residual on a transposed convolution.
    let r = up(&d, &[1, 3, 5, 4], &[0.5; 60]);
    let e = cf::conv2d_bias_act(&d, &x, &w, Epi { bias: None, act: None, residual: Some(&r) }, o).unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
    let wt = up(&d, &[2, 3, 3, 3], &[0.5; 54]);
    let e = cf::conv_transpose2d_bias_act(&d, &x, &wt, Epi { bias: None, act: None, residual: Some(&x) }, o, 0);
    assert!(e.unwrap_err().to_string().contains("residual"));
    let t = up(&d, &[1, 2, 5, 5], &[0.5; 50]);
    let e = bce_mean(&d, &x, &t, Some(&b)).unwrap_err().to_string();
    assert!(e.contains("bias"), "{e}");
}
