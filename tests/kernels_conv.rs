//! Conv family: conv2d and conv_transpose2d, forward and both backwards. GPU vs CPU twin, the CPU twin vs
//! direct f64 loops written here from the definitions, finite-difference gradients on the CPU backend,
//! and errors for bad shapes.
//!
//! Tolerance: every output element is a sum of T products (T = Cin*K*K for the forward, at most
//! Cout*K*K for the input gradient, N*Ho*Wo for the weight gradient). An f32 sum of T terms is off by
//! about sqrt(T) * eps * sum|terms| with random signs, so results are compared with
//!   atol = R * (1 + sqrt(T)) * max over the output of sum|terms|
//! with R = 1e-6 (about 8 eps) against the f64 reference and R = 2e-6 between GPU and CPU twin (two f32
//! results with different summation orders: 16-deep tiles on the GPU, packed SGEMM blocks on the CPU).
//! Inputs are uniform in [-1, 1): one missing or doubled term is off by ~1/4 on average, far above it.
mod common;
use common::*;
use tigel::ops::conv::{self as cv, Conv2d};
use tigel::{Device, Tensor};

/// One geometry, in the layout of the op it is used for. conv2d: x [n, ci, h, w], w [co, ci, k, k].
/// conv_transpose2d: x [n, ci, h, w], w [ci, co, k, k], output_padding `op`.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
}

#[allow(clippy::too_many_arguments)]
const fn cfg(n: usize, ci: usize, co: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Cfg {
    Cfg { n, ci, co, h, w, k, s, p }
}

/// Strides 1, 2 (and 3), padding 0/1/2, K in {1, 3, 4, 5}, odd and 1x1 spatial sizes, 1, 3, 5, 17
/// channels, batch 1 and 3; more than one 64-wide tile along channels, pixels and taps (the 70-channel
/// and 14x14 cases); a stride larger than the kernel (input gradient phases no tap reaches); a kernel as
/// large as the padded input; a weight gradient the GPU splits over the batch; channels, pixels and taps
/// that are not multiples of the variants' 128-wide blocks.
const CASES: [Cfg; 19] = [
    cfg(1, 1, 1, 1, 1, 1, 1, 0),
    cfg(3, 3, 5, 7, 9, 3, 1, 1),
    cfg(1, 5, 3, 7, 9, 4, 2, 1),
    cfg(3, 17, 5, 13, 13, 5, 2, 2),
    cfg(1, 3, 17, 1, 1, 3, 1, 1),
    cfg(3, 5, 1, 9, 7, 1, 1, 0),
    cfg(1, 1, 3, 13, 13, 3, 2, 0),
    cfg(3, 3, 3, 7, 9, 5, 1, 2),
    cfg(1, 17, 17, 8, 6, 4, 2, 2),
    cfg(3, 1, 5, 1, 1, 1, 2, 0),
    cfg(1, 5, 5, 7, 9, 1, 2, 1),
    cfg(2, 17, 70, 13, 11, 3, 2, 1),
    cfg(3, 70, 3, 9, 9, 3, 1, 1),
    cfg(1, 3, 5, 5, 5, 5, 1, 0),
    cfg(3, 1, 1, 13, 13, 4, 2, 2),
    cfg(1, 3, 3, 7, 9, 3, 3, 1),
    // 17x16 outputs: enough pixels per image that the GPU splits the weight gradient over the batch.
    cfg(3, 3, 5, 17, 16, 3, 1, 1),
    // DCGAN-like, at batch 2.
    cfg(2, 64, 128, 14, 14, 4, 2, 1),
    // 130 channels: three 64-row tiles, a 128-row block and a part of one (the block variants).
    cfg(2, 3, 130, 6, 5, 3, 2, 1),
];

fn opts(c: &Cfg) -> Conv2d {
    Conv2d { stride: c.s, padding: c.p }
}

fn out_len(len: usize, c: &Cfg) -> usize {
    (len + 2 * c.p - c.k) / c.s + 1
}

/// output_padding for a transposed case (varied with the case, always below the stride), or None when
/// the padding would leave no output.
fn out_pad(i: usize, c: &Cfg) -> Option<usize> {
    let op = i % c.s;
    let len = |l: usize| ((l - 1) * c.s + c.k + op).checked_sub(2 * c.p).filter(|&v| v > 0);
    len(c.h).and(len(c.w)).map(|_| op)
}

fn t_out_len(len: usize, c: &Cfg, op: usize) -> usize {
    (len - 1) * c.s + c.k + op - 2 * c.p
}

/// Every (x index, w index, y index) of a conv2d's products, by the forward definition:
/// y[b, o, oh, ow] += x[b, i, oh*s - p + kh, ow*s - p + kw] * w[o, i, kh, kw].
fn conv_terms(c: &Cfg, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (out_len(c.h, c), out_len(c.w, c));
    for b in 0..c.n {
        for o in 0..c.co {
            for oh in 0..ho {
                for ow in 0..wo {
                    for i in 0..c.ci {
                        for kh in 0..c.k {
                            for kw in 0..c.k {
                                let ih = (oh * c.s + kh) as isize - c.p as isize;
                                let iw = (ow * c.s + kw) as isize - c.p as isize;
                                if ih < 0 || iw < 0 || ih >= c.h as isize || iw >= c.w as isize {
                                    continue;
                                }
                                let xi = ((b * c.ci + i) * c.h + ih as usize) * c.w + iw as usize;
                                let wi = ((o * c.ci + i) * c.k + kh) * c.k + kw;
                                let yi = ((b * c.co + o) * ho + oh) * wo + ow;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every (x index, w index, y index) of a transposed conv's products, by PyTorch's definition (each
/// input pixel spreads the kernel over the output):
/// y[b, o, ih*s - p + kh, iw*s - p + kw] += x[b, i, ih, iw] * w[i, o, kh, kw].
fn conv_t_terms(c: &Cfg, op: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (t_out_len(c.h, c, op), t_out_len(c.w, c, op));
    for b in 0..c.n {
        for i in 0..c.ci {
            for ih in 0..c.h {
                for iw in 0..c.w {
                    for o in 0..c.co {
                        for kh in 0..c.k {
                            for kw in 0..c.k {
                                let oh = (ih * c.s + kh) as isize - c.p as isize;
                                let ow = (iw * c.s + kw) as isize - c.p as isize;
                                if oh < 0 || ow < 0 || oh >= ho as isize || ow >= wo as isize {
                                    continue;
                                }
                                let xi = ((b * c.ci + i) * c.h + ih) * c.w + iw;
                                let wi = ((i * c.co + o) * c.k + kh) * c.k + kw;
                                let yi = ((b * c.co + o) * ho + oh as usize) * wo + ow as usize;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The three f64 results (y from x and w, dx from dy and w, dw from x and dy) and each one's largest
/// sum|terms| and term count, from a term enumerator.
struct Reference {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    /// (max sum|terms|, max terms) for y, dx, dw.
    bounds: [(f64, usize); 3],
}

/// Calls its argument with every (x index, w index, y index) of one op's products.
type Terms<'a> = &'a dyn Fn(&mut dyn FnMut(usize, usize, usize));

fn reference(terms: Terms, x: &[f32], w: &[f32], dy: &[f32]) -> Reference {
    let mut acc = [vec![0f64; dy.len()], vec![0f64; x.len()], vec![0f64; w.len()]];
    let mut mag = acc.clone();
    let mut cnt = [vec![0usize; dy.len()], vec![0usize; x.len()], vec![0usize; w.len()]];
    terms(&mut |xi, wi, yi| {
        let (xv, wv, dv) = (x[xi] as f64, w[wi] as f64, dy[yi] as f64);
        for (slot, at, t) in [(0, yi, xv * wv), (1, xi, dv * wv), (2, wi, xv * dv)] {
            acc[slot][at] += t;
            mag[slot][at] += t.abs();
            cnt[slot][at] += 1;
        }
    });
    let bound = |s: usize| (mag[s].iter().cloned().fold(0.0, f64::max), cnt[s].iter().cloned().max().unwrap_or(0));
    let f = |v: &Vec<f64>| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    Reference { y: f(&acc[0]), dx: f(&acc[1]), dw: f(&acc[2]), bounds: [bound(0), bound(1), bound(2)] }
}

fn tol(r: f64, (mag, terms): (f64, usize)) -> f32 {
    (r * (1.0 + (terms as f64).sqrt()) * mag.max(1e-3)) as f32
}

/// Results of the three ops on one device: (y, dx, dw).
type Triple = (Vec<f32>, Vec<f32>, Vec<f32>);

fn up(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn run_conv(d: &Device, c: &Cfg, x: &[f32], w: &[f32], dy: &[f32]) -> Triple {
    let (ho, wo) = (out_len(c.h, c), out_len(c.w, c));
    let xt = up(d, &[c.n, c.ci, c.h, c.w], x);
    let wt = up(d, &[c.co, c.ci, c.k, c.k], w);
    let dyt = up(d, &[c.n, c.co, ho, wo], dy);
    let y = cv::conv2d(d, &xt, &wt, opts(c)).unwrap();
    assert_eq!(y.shape, vec![c.n, c.co, ho, wo]);
    let dx = cv::conv2d_backward_input(d, &dyt, &wt, (c.h, c.w), opts(c)).unwrap();
    assert_eq!(dx.shape, xt.shape);
    let dw = cv::conv2d_backward_weight(d, &xt, &dyt, c.k, opts(c)).unwrap();
    assert_eq!(dw.shape, wt.shape);
    (y.to_f32(d).unwrap(), dx.to_f32(d).unwrap(), dw.to_f32(d).unwrap())
}

fn run_conv_t(d: &Device, c: &Cfg, op: usize, x: &[f32], w: &[f32], dy: &[f32]) -> Triple {
    let (ho, wo) = (t_out_len(c.h, c, op), t_out_len(c.w, c, op));
    let xt = up(d, &[c.n, c.ci, c.h, c.w], x);
    let wt = up(d, &[c.ci, c.co, c.k, c.k], w);
    let dyt = up(d, &[c.n, c.co, ho, wo], dy);
    let y = cv::conv_transpose2d(d, &xt, &wt, opts(c), op).unwrap();
    assert_eq!(y.shape, vec![c.n, c.co, ho, wo]);
    let dx = cv::conv_transpose2d_backward_input(d, &dyt, &wt, opts(c)).unwrap();
    assert_eq!(dx.shape, xt.shape);
    let dw = cv::conv_transpose2d_backward_weight(d, &xt, &dyt, c.k, opts(c)).unwrap();
    assert_eq!(dw.shape, wt.shape);
    (y.to_f32(d).unwrap(), dx.to_f32(d).unwrap(), dw.to_f32(d).unwrap())
}

/// Random x, w, dy for a conv2d case.
fn conv_inputs(rng: &mut Rng, c: &Cfg) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ho, wo) = (out_len(c.h, c), out_len(c.w, c));
    (
        rng.vec(c.n * c.ci * c.h * c.w, -1.0, 1.0),
        rng.vec(c.co * c.ci * c.k * c.k, -1.0, 1.0),
        rng.vec(c.n * c.co * ho * wo, -1.0, 1.0),
    )
}

fn conv_t_inputs(rng: &mut Rng, c: &Cfg, op: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ho, wo) = (t_out_len(c.h, c, op), t_out_len(c.w, c, op));
    (
        rng.vec(c.n * c.ci * c.h * c.w, -1.0, 1.0),
        rng.vec(c.ci * c.co * c.k * c.k, -1.0, 1.0),
        rng.vec(c.n * c.co * ho * wo, -1.0, 1.0),
    )
}

fn compare(what: &str, got: &Triple, want: &Triple, r: &Reference, rr: f64) {
    assert_close(&format!("{what}: forward"), &got.0, &want.0, tol(rr, r.bounds[0]), 0.0);
    assert_close(&format!("{what}: backward_input"), &got.1, &want.1, tol(rr, r.bounds[1]), 0.0);
    assert_close(&format!("{what}: backward_weight"), &got.2, &want.2, tol(rr, r.bounds[2]), 0.0);
}

#[test]
fn conv2d_gpu_matches_cpu_twin() {
    // The family form and every variant (depths, register blocks, block shapes).
    for_each_variant(CONV, |name| {
        let Some(gpu) = gpu() else { return };
        let cpu = cpu();
        let mut rng = Rng::new(seed());
        for c in &CASES {
            let (x, w, dy) = conv_inputs(&mut rng, c);
            let r = reference(&|f| conv_terms(c, f), &x, &w, &dy);
            let want = run_conv(&cpu, c, &x, &w, &dy);
            let got = run_conv(&gpu, c, &x, &w, &dy);
            compare(&format!("conv2d {c:?} variant `{name}`"), &got, &want, &r, 2e-6);
        }
    });
}

/// The convolution's three kernels, which share their variants.
const CONV: &[&tigel::kernels::Kernel] = &[
    &tigel::kernels::conv::CONV2D_FWD,
    &tigel::kernels::conv::CONV2D_BWD_INPUT,
    &tigel::kernels::conv::CONV2D_BWD_WEIGHT,
];

/// The accumulating weight gradient (r + dw added into r's buffer, through the shader's `+=` store with
/// one split or the accumulating reduction of the splits) is r + dw exactly on each device, and the GPU
/// agrees with the CPU twin.
#[test]
fn conv_backward_weight_acc_is_the_sum_and_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in &CASES {
        let (x, w, dy) = conv_inputs(&mut rng, c);
        let r0 = rng.vec(w.len(), -1.0, 1.0);
        let run = |d: &Device| {
            let (xt, dyt) =
                (up(d, &[c.n, c.ci, c.h, c.w], &x), up(d, &[c.n, c.co, out_len(c.h, c), out_len(c.w, c)], &dy));
            let r = up(d, &[c.co, c.ci, c.k, c.k], &r0);
            let fused = cv::conv2d_backward_weight_acc(d, &xt, &dyt, c.k, opts(c), &r).unwrap();
            assert!(fused.buf.same(&r.buf) || c.co * c.ci * c.k * c.k == 1, "{c:?}: added into r's buffer");
            let dw = cv::conv2d_backward_weight(d, &xt, &dyt, c.k, opts(c)).unwrap().to_f32(d).unwrap();
            let unfused: Vec<f32> = r0.iter().zip(&dw).map(|(a, b)| a + b).collect();
            (fused.to_f32(d).unwrap(), unfused)
        };
        let (g, gu) = run(&gpu);
        let (k, ku) = run(&cpu);
        assert_eq!(g, gu, "{c:?}: GPU fused vs unfused");
        assert_eq!(k, ku, "{c:?}: CPU fused vs unfused");
        assert_close(&format!("conv2d_backward_weight_acc {c:?}"), &g, &k, 1e-3, 1e-4);
    }
}

#[test]
fn conv_transpose2d_gpu_matches_cpu_twin() {
    for_each_variant(CONV, |name| {
        let Some(gpu) = gpu() else { return };
        let cpu = cpu();
        let mut rng = Rng::new(seed());
        for (i, c) in CASES.iter().enumerate() {
            let Some(op) = out_pad(i, c) else { continue };
            let (x, w, dy) = conv_t_inputs(&mut rng, c, op);
            let r = reference(&|f| conv_t_terms(c, op, f), &x, &w, &dy);
            let want = run_conv_t(&cpu, c, op, &x, &w, &dy);
            let got = run_conv_t(&gpu, c, op, &x, &w, &dy);
            compare(&format!("conv_transpose2d {c:?} output_padding {op} variant `{name}`"), &got, &want, &r, 2e-6);
        }
    });
}

#[test]
fn conv2d_cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in &CASES {
        let (x, w, dy) = conv_inputs(&mut rng, c);
        let r = reference(&|f| conv_terms(c, f), &x, &w, &dy);
        let got = run_conv(&cpu, c, &x, &w, &dy);
        compare(&format!("conv2d {c:?}"), &got, &(r.y.clone(), r.dx.clone(), r.dw.clone()), &r, 1e-6);
    }
}

#[test]
fn conv_transpose2d_cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (i, c) in CASES.iter().enumerate() {
        let Some(op) = out_pad(i, c) else { continue };
        let (x, w, dy) = conv_t_inputs(&mut rng, c, op);
        let r = reference(&|f| conv_t_terms(c, op, f), &x, &w, &dy);
        let got = run_conv_t(&cpu, c, op, &x, &w, &dy);
        let what = format!("conv_transpose2d {c:?} output_padding {op}");
        compare(&what, &got, &(r.y.clone(), r.dx.clone(), r.dw.clone()), &r, 1e-6);
    }
}

#[test]
fn conv2d_cpu_twin_groups_of_images() {
    // Larger batches than CASES: the twin groups images (several per GEMM when Ho*Wo is small, one per
    // GEMM when it is large) and splits the weight gradient into 2 partial sums of several groups each.
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in [cfg(16, 5, 7, 9, 9, 3, 2, 1), cfg(7, 3, 4, 18, 17, 3, 1, 1), cfg(6, 8, 5, 16, 17, 1, 1, 0)] {
        let (x, w, dy) = conv_inputs(&mut rng, &c);
        let r = reference(&|f| conv_terms(&c, f), &x, &w, &dy);
        let got = run_conv(&cpu, &c, &x, &w, &dy);
        compare(&format!("conv2d {c:?}"), &got, &(r.y.clone(), r.dx.clone(), r.dw.clone()), &r, 1e-6);
    }
}

#[test]
fn conv_backward_weight_is_deterministic() {
    // Split partial sums (2 on the CPU, 3 on a GPU here) added in a fixed order: runs agree bit for bit.
    let c = cfg(3, 17, 70, 17, 16, 3, 1, 1);
    let mut rng = Rng::new(seed());
    let (x, w, dy) = conv_inputs(&mut rng, &c);
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        let a = run_conv(d, &c, &x, &w, &dy);
        let b = run_conv(d, &c, &x, &w, &dy);
        assert!(a.2.iter().zip(&b.2).all(|(p, q)| p.to_bits() == q.to_bits()), "{}: dw differs between runs", d.name());
        assert!(a.0.iter().zip(&b.0).all(|(p, q)| p.to_bits() == q.to_bits()), "{}: y differs between runs", d.name());
    }
}

#[test]
fn conv_ops_replay_from_a_capture() {
    // The graph records ops with Device::capture and replays them: the split weight gradient's scratch
    // partial sums and their reduce must come out of a replay as they do eagerly.
    let c = cfg(3, 5, 7, 17, 16, 3, 1, 1);
    let mut rng = Rng::new(seed());
    let (x, w, dy) = conv_inputs(&mut rng, &c);
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        let eager = run_conv(d, &c, &x, &w, &dy);
        let xt = up(d, &[c.n, c.ci, c.h, c.w], &x);
        let wt = up(d, &[c.co, c.ci, c.k, c.k], &w);
        let dyt = up(d, &[c.n, c.co, 17, 16], &dy);
        let (outs, rec) = d
            .capture(|| {
                Ok([
                    cv::conv2d(d, &xt, &wt, opts(&c))?,
                    cv::conv2d_backward_input(d, &dyt, &wt, (c.h, c.w), opts(&c))?,
                    cv::conv2d_backward_weight(d, &xt, &dyt, c.k, opts(&c))?,
                ])
            })
            .unwrap();
        d.replay(&rec).unwrap();
        let got: Vec<Vec<f32>> = outs.iter().map(|t| t.to_f32(d).unwrap()).collect();
        for (what, g, e) in [("y", &got[0], &eager.0), ("dx", &got[1], &eager.1), ("dw", &got[2], &eager.2)] {
            assert!(g.iter().zip(e).all(|(p, q)| p.to_bits() == q.to_bits()), "{}: replayed {what} differs", d.name());
        }
    }
}

/// sum(y * r) in f64 (products of two f32 are exact in f64).
fn dot(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// A forward as a function of (x, w), on the host data.
type Forward<'a> = &'a dyn Fn(&[f32], &[f32]) -> Vec<f32>;

/// Central differences of L = sum(f(x, w) * r) at a few random elements of x and of w, against the
/// gradients gx, gw. L is linear in each argument, so a central difference is exact up to rounding
/// for any step; the step is 0.5 to keep rounding small beside it. Only the outputs the element reaches
/// change (the others are computed by the same operations in the same order), so the rounding is
/// that of about Cout*K*K outputs of size <= sum|terms|: 1e-3 absolute + 1e-4 relative covers it, while
/// a wrong gradient element is off by O(1).
#[allow(clippy::too_many_arguments)]
fn check_fd(what: &str, rng: &mut Rng, f: Forward, x: &[f32], w: &[f32], r: &[f32], gx: &[f32], gw: &[f32]) {
    const STEP: f32 = 0.5;
    for (name, which) in [("x", 0), ("w", 1)] {
        let (base, grad) = if which == 0 { (x, gx) } else { (w, gw) };
        for _ in 0..6 {
            let i = rng.below(base.len());
            let mut plus = base.to_vec();
            let mut minus = base.to_vec();
            plus[i] += STEP;
            minus[i] -= STEP;
            let (lp, lm) = if which == 0 {
                (dot(&f(&plus, w), r), dot(&f(&minus, w), r))
            } else {
                (dot(&f(x, &plus), r), dot(&f(x, &minus), r))
            };
            let fd = ((lp - lm) / (2.0 * STEP as f64)) as f32;
            let g = grad[i];
            assert!(
                (fd - g).abs() <= 1e-3 + 1e-4 * g.abs(),
                "{what}: d/d{name}[{i}] is {g} by the backward, {fd} by central differences"
            );
        }
    }
}

const GRAD_CASES: [Cfg; 4] = [
    cfg(2, 3, 4, 7, 9, 3, 1, 1),
    cfg(1, 5, 3, 9, 8, 4, 2, 1),
    cfg(2, 2, 3, 7, 7, 5, 2, 2),
    cfg(1, 3, 2, 6, 5, 1, 2, 0),
];

#[test]
fn conv2d_grad_finite_differences() {
    let d = cpu();
    let mut rng = Rng::new(seed());
    for c in &GRAD_CASES {
        let (x, w, r) = conv_inputs(&mut rng, c);
        let (_, gx, gw) = run_conv(&d, c, &x, &w, &r);
        let f = |x: &[f32], w: &[f32]| {
            let xt = up(&d, &[c.n, c.ci, c.h, c.w], x);
            let wt = up(&d, &[c.co, c.ci, c.k, c.k], w);
            cv::conv2d(&d, &xt, &wt, opts(c)).unwrap().to_f32(&d).unwrap()
        };
        check_fd(&format!("conv2d {c:?}"), &mut rng, &f, &x, &w, &r, &gx, &gw);
    }
}

#[test]
fn conv_transpose2d_grad_finite_differences() {
    let d = cpu();
    let mut rng = Rng::new(seed());
    for (i, c) in GRAD_CASES.iter().enumerate() {
        let op = out_pad(i + 1, c).unwrap();
        let (x, w, r) = conv_t_inputs(&mut rng, c, op);
        let (_, gx, gw) = run_conv_t(&d, c, op, &x, &w, &r);
        let f = |x: &[f32], w: &[f32]| {
            let xt = up(&d, &[c.n, c.ci, c.h, c.w], x);
            let wt = up(&d, &[c.ci, c.co, c.k, c.k], w);
            cv::conv_transpose2d(&d, &xt, &wt, opts(c), op).unwrap().to_f32(&d).unwrap()
        };
        check_fd(&format!("conv_transpose2d {c:?} output_padding {op}"), &mut rng, &f, &x, &w, &r, &gx, &gw);
    }
}

#[test]
fn conv_bad_shapes_are_errors_naming_them() {
    let d = Device::cpu();
    let t = |shape: &[usize]| Tensor::from_f32(&d, shape, &vec![0.5; shape.iter().product()]).unwrap();
    let s1 = Conv2d { stride: 1, padding: 0 };
    let s2p1 = Conv2d { stride: 2, padding: 1 };
    let expect = |r: tigel::Result<Tensor>, op: &str, parts: &[&str]| {
        let e = r.expect_err("an error").to_string();
        assert!(e.starts_with(op), "{e}");
        for p in parts {
            assert!(e.contains(p), "`{e}` does not name {p}");
        }
    };
    let x = t(&[2, 3, 8, 8]);
    // Channel mismatch.
    expect(cv::conv2d(&d, &x, &t(&[4, 5, 3, 3]), s1), "conv2d", &["[2, 3, 8, 8]", "[4, 5, 3, 3]"]);
    // Kernel larger than the padded input.
    expect(
        cv::conv2d(&d, &t(&[1, 3, 4, 4]), &t(&[2, 3, 7, 7]), s1),
        "conv2d",
        &["[1, 3, 4, 4]", "[2, 3, 7, 7]", "7x7"],
    );
    // Zero stride.
    expect(
        cv::conv2d(&d, &x, &t(&[4, 3, 3, 3]), Conv2d { stride: 0, padding: 1 }),
        "conv2d",
        &["[2, 3, 8, 8]", "stride"],
    );
    // Non-square kernel, wrong rank, wrong dtype.
    expect(cv::conv2d(&d, &x, &t(&[4, 3, 3, 2]), s1), "conv2d", &["[4, 3, 3, 2]"]);
    expect(cv::conv2d(&d, &t(&[3, 8, 8]), &t(&[4, 3, 3, 3]), s1), "conv2d", &["[3, 8, 8]"]);
    let xu = Tensor::from_u32(&d, &[2, 3, 8, 8], &[0; 384]).unwrap();
    expect(cv::conv2d(&d, &xu, &t(&[4, 3, 3, 3]), s1), "conv2d", &["u32"]);
    // Backward to the input: an input size that does not give dy's size, channel mismatch.
    let w = t(&[4, 3, 3, 3]);
    let dy = t(&[2, 4, 4, 4]);
    expect(
        cv::conv2d_backward_input(&d, &dy, &w, (8, 8), s1),
        "conv2d_backward_input",
        &["[2, 4, 4, 4]", "8x8", "6x6"],
    );
    assert_eq!(cv::conv2d_backward_input(&d, &dy, &w, (8, 8), s2p1).unwrap().shape, vec![2, 3, 8, 8]);
    assert_eq!(cv::conv2d_backward_input(&d, &dy, &w, (7, 7), s2p1).unwrap().shape, vec![2, 3, 7, 7]);
    expect(
        cv::conv2d_backward_input(&d, &t(&[2, 5, 4, 4]), &w, (8, 8), s2p1),
        "conv2d_backward_input",
        &["[2, 5, 4, 4]", "[4, 3, 3, 3]"],
    );
    expect(cv::conv2d_backward_input(&d, &dy, &w, (1, 1), s1), "conv2d_backward_input", &["1x1", "3x3"]);
    // Backward to the weights: dy of the wrong size or batch.
    expect(
        cv::conv2d_backward_weight(&d, &x, &t(&[2, 4, 5, 5]), 3, s2p1),
        "conv2d_backward_weight",
        &["[2, 3, 8, 8]", "[2, 4, 5, 5]"],
    );
    expect(
        cv::conv2d_backward_weight(&d, &x, &t(&[1, 4, 4, 4]), 3, s2p1),
        "conv2d_backward_weight",
        &["[1, 4, 4, 4]", "batch"],
    );
    expect(cv::conv2d_backward_weight(&d, &x, &dy, 0, s2p1), "conv2d_backward_weight", &["[2, 4, 4, 4]"]);

    // Transposed: channel mismatch (w is [Cin, Cout, K, K]), output_padding >= stride, padding that
    // leaves nothing, zero stride, dy that no output_padding explains.
    let wt = t(&[3, 4, 4, 4]);
    expect(
        cv::conv_transpose2d(&d, &x, &t(&[4, 3, 4, 4]), s2p1, 0),
        "conv_transpose2d",
        &["[2, 3, 8, 8]", "[4, 3, 4, 4]"],
    );
    expect(cv::conv_transpose2d(&d, &x, &wt, s2p1, 2), "conv_transpose2d", &["[2, 3, 8, 8]", "output_padding 2"]);
    expect(
        cv::conv_transpose2d(&d, &t(&[1, 3, 1, 1]), &wt, Conv2d { stride: 1, padding: 2 }, 0),
        "conv_transpose2d",
        &["[1, 3, 1, 1]", "padding"],
    );
    expect(cv::conv_transpose2d(&d, &x, &wt, Conv2d { stride: 0, padding: 0 }, 0), "conv_transpose2d", &["stride"]);
    let y = cv::conv_transpose2d(&d, &x, &wt, s2p1, 1).unwrap();
    assert_eq!(y.shape, vec![2, 4, 17, 17]);
    assert_eq!(cv::conv_transpose2d_backward_input(&d, &y, &wt, s2p1).unwrap().shape, vec![2, 3, 8, 8]);
    assert_eq!(cv::conv_transpose2d_backward_weight(&d, &x, &y, 4, s2p1).unwrap().shape, vec![3, 4, 4, 4]);
    expect(
        cv::conv_transpose2d_backward_weight(&d, &x, &t(&[2, 4, 19, 19]), 4, s2p1),
        "conv_transpose2d_backward_weight",
        &["[2, 3, 8, 8]", "[2, 4, 19, 19]"],
    );
    expect(
        cv::conv_transpose2d_backward_input(&d, &y, &t(&[3, 5, 4, 4]), s2p1),
        "conv_transpose2d_backward_input",
        &["[2, 4, 17, 17]", "[3, 5, 4, 4]"],
    );
}
