//! Cases of the larger kernel families (fused attention, conv2d and its gradients, the AdamW step) and
//! their checks: tolerances against the CPU twin (on a GPU) and direct f64 references on a few output
//! elements (on the CPU backend). The tolerances follow the family tests (tests/kernels_attention.rs,
//! tests/kernels_conv.rs, tests/kernels_optim.rs), where they are justified.

use super::validate::compare;
use super::{Case, Check, Input};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::attention as at;
use crate::ops::conv::{self as cv, Conv2d, ConvShape};
use crate::ops::elementwise::{self as ew, Unary};
use crate::ops::optim::{self, AdamConfig, Schedule};
use crate::tensor::Tensor;

const HOST: &str = "the f64 reference";

/// Largest |v| of a slice (0 for an empty one).
fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0f64, |m, x| m.max(x.abs()))
}

/// Compares `got[idx]` with an f64 value; the error names the element.
fn check_one(got: &[f32], idx: usize, want: f64, tol: f64, what: &dyn Fn() -> String) -> Result<f64> {
    let g = got[idx];
    compare(HOST, &[g], &[want as f32], |_| tol).map_err(|_| {
        Error::Other(format!("wrong result: {} is {g} where {HOST} gives {want} (tolerance {tol:e})", what()))
    })
}

// ---------------------------------------------------------------------------------------------------
// Attention

/// Fused causal self-attention on qkv [B, T, 3·H·D] (inputs uniform in [-1.5, 1.5) as in the family
/// test). `backward`: the case runs the forward and then the backward, as a training step does, and
/// its result is dqkv; otherwise the result is out.
#[derive(Clone, Copy, Debug)]
pub struct AttnCase {
    /// Batch.
    pub b: usize,
    /// Sequence length.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Head size.
    pub d: usize,
    /// Run the backward after the forward; the result is dqkv.
    pub backward: bool,
}

/// Family-test tolerance (2e-5 of the compared tensor's largest magnitude, measured worst 2.4e-6 at T =
/// 70), grown with sqrt(T / 64) for longer rows: each output sums up to T terms.
fn attn_tol(t: usize, scale: f64) -> f64 {
    2e-5 * (t as f64 / 64.0).sqrt().max(1.0) * scale
}

impl AttnCase {
    fn c(&self) -> usize {
        self.h * self.d
    }

    pub(super) fn twin_tol(&self, want: &[f32]) -> f64 {
        attn_tol(self.t, max_abs(want.iter().map(|&v| v as f64)))
    }

    /// out rows for queries {0..4, T-1} and, for the backward, dQ of those rows and dK, dV of keys
    /// {0..4, T-1}, of the first and last (batch, head), from the probabilities computed in f64.
    pub(super) fn against_host(&self, data: &[Vec<f32>], got: &[f32]) -> Result<f64> {
        let AttnCase { b, t, h, d, backward } = *self;
        let c = self.c();
        let qkv = &data[0];
        let scale = 1.0 / (d as f64).sqrt();
        let mut rows: Vec<usize> = (0..t.min(4)).collect();
        if t > 4 {
            rows.push(t - 1);
        }
        // Every (index into got, f64 value) checked; the tolerance scales with their largest magnitude.
        let mut checks: Vec<(usize, f64, String)> = Vec::new();
        let mut pairs = vec![(0, 0), (b - 1, h - 1)];
        pairs.dedup();
        for &(bi, hi) in &pairs {
            let q = |i: usize, e: usize| qkv[(bi * t + i) * 3 * c + hi * d + e] as f64;
            let k = |j: usize, e: usize| qkv[(bi * t + j) * 3 * c + c + hi * d + e] as f64;
            let v = |j: usize, e: usize| qkv[(bi * t + j) * 3 * c + 2 * c + hi * d + e] as f64;
            // P[i][j], causal (j <= i).
            let mut p = vec![0f64; t * t];
            for i in 0..t {
                let s: Vec<f64> = (0..=i).map(|j| (0..d).map(|e| q(i, e) * k(j, e)).sum::<f64>() * scale).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for j in 0..=i {
                    p[i * t + j] = (s[j] - m).exp() / z;
                }
            }
            let out = |i: usize, e: usize| (0..=i).map(|j| p[i * t + j] * v(j, e)).sum::<f64>();
            if !backward {
                for &i in &rows {
                    for e in 0..d {
                        checks.push(((bi * t + i) * c + hi * d + e, out(i, e), format!("out[{bi}, {i}, h{hi}, {e}]")));
                    }
                }
                continue;
            }
            let dout = &data[1];
            let go = |i: usize, e: usize| dout[(bi * t + i) * c + hi * d + e] as f64;
            // dP = dO·Vᵀ, delta_i = Σ_j P dP = dO_i·O_i, dS = P (dP - delta).
            let mut ds = vec![0f64; t * t];
            for i in 0..t {
                let o: Vec<f64> = (0..d).map(|e| out(i, e)).collect();
                let delta: f64 = (0..d).map(|e| go(i, e) * o[e]).sum();
                for j in 0..=i {
                    let dp: f64 = (0..d).map(|e| go(i, e) * v(j, e)).sum();
                    ds[i * t + j] = p[i * t + j] * (dp - delta);
                }
            }
            let base = |i: usize| (bi * t + i) * 3 * c + hi * d;
            for &r in &rows {
                for e in 0..d {
                    let dq = scale * (0..=r).map(|j| ds[r * t + j] * k(j, e)).sum::<f64>();
                    let dk = scale * (r..t).map(|i| ds[i * t + r] * q(i, e)).sum::<f64>();
                    let dv = (r..t).map(|i| p[i * t + r] * go(i, e)).sum::<f64>();
                    checks.push((base(r) + e, dq, format!("dq[{bi}, {r}, h{hi}, {e}]")));
                    checks.push((base(r) + c + e, dk, format!("dk[{bi}, {r}, h{hi}, {e}]")));
                    checks.push((base(r) + 2 * c + e, dv, format!("dv[{bi}, {r}, h{hi}, {e}]")));
                }
            }
        }
        let tol = attn_tol(t, max_abs(checks.iter().map(|c| c.1)));
        let mut max_err = 0f64;
        for (idx, want, what) in &checks {
            max_err = max_err.max(check_one(got, *idx, *want, tol, &|| what.clone())?);
        }
        Ok(max_err)
    }
}

/// FLOP of causal attention: QKᵀ and P·V are 2·T·T·D each per (batch, head), half of it under the
/// mask: 2·B·H·T²·D forward; the backward recomputes QKᵀ and computes dV, dP, dQ, dK (5 products):
/// 2.5 times the forward, 7·B·H·T²·D for both.
pub fn attention_case(b: usize, t: usize, h: usize, d: usize, backward: bool) -> Case {
    let c = h * d;
    let (b64, t64, h64, d64, c64) = (b as u64, t as u64, h as u64, d as u64, c as u64);
    let fwd_flop = 2 * b64 * h64 * t64 * t64 * d64;
    let fwd_bytes = 4 * (3 * b64 * t64 * c64 + b64 * t64 * c64 + b64 * h64 * t64);
    // Backward reads qkv, out, dout, lse and writes dqkv.
    let bwd_bytes = 4 * (3 * b64 * t64 * c64 + 2 * b64 * t64 * c64 + b64 * h64 * t64 + 3 * b64 * t64 * c64);
    let qkv = Input::uniform(vec![b, t, 3 * c], -1.5, 1.5);
    let shape = format!("b{b} t{t} h{h} d{d}");
    let check = Check::Attention(AttnCase { b, t, h, d, backward });
    if backward {
        Case::new(
            "attention",
            "causal_fwd_bwd",
            shape,
            fwd_flop * 7 / 2,
            fwd_bytes + bwd_bytes,
            vec![qkv, Input::uniform(vec![b, t, c], -1.0, 1.0)],
            check,
            move |dev, x| {
                let (out, lse) = at::attention(dev, &x[0], h, true)?;
                at::attention_backward(dev, &x[0], &out, &lse, &x[1], h, true)
            },
        )
    } else {
        Case::new("attention", "causal_fwd", shape, fwd_flop, fwd_bytes, vec![qkv], check, move |dev, x| {
            Ok(at::attention(dev, &x[0], h, true)?.0)
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Convolution

/// Which conv2d kernel a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvDir {
    /// y = conv2d(x, w); inputs [x, w].
    Forward,
    /// dx from dy and w; inputs [dy, w].
    BackwardInput,
    /// dw from x and dy; inputs [x, dy].
    BackwardWeight,
}

/// A conv2d case: the shape and which of the three passes runs.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    /// Batch, channels, sizes, kernel, stride and padding.
    pub s: ConvShape,
    /// Forward, or which gradient.
    pub dir: ConvDir,
}

impl ConvCase {
    fn opts(&self) -> Conv2d {
        Conv2d { stride: self.s.stride, padding: self.s.padding }
    }

    /// Terms summed per output element (tests/kernels_conv.rs).
    fn terms(&self) -> usize {
        let s = &self.s;
        match self.dir {
            ConvDir::Forward => s.ci * s.k * s.k,
            ConvDir::BackwardInput => s.co * s.k * s.k,
            ConvDir::BackwardWeight => s.n * s.ho * s.wo,
        }
    }

    /// R·(1 + sqrt(T))·max Σ|terms| with R = 2e-6 (two f32 results in different summation orders; the
    /// family test's GPU-vs-CPU bound). Σ|terms| is the same op on |inputs|, on the CPU backend.
    pub(super) fn twin_tol(&self, cpu: &Device, cin: &[Tensor]) -> Result<f64> {
        let a0 = ew::unary(cpu, Unary::Abs, &cin[0])?;
        let a1 = ew::unary(cpu, Unary::Abs, &cin[1])?;
        let mag = self.run(cpu, &a0, &a1)?.to_f32(cpu)?;
        let mag = max_abs(mag.iter().map(|&v| v as f64));
        Ok(2e-6 * (1.0 + (self.terms() as f64).sqrt()) * mag.max(1e-3))
    }

    fn run(&self, dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = &self.s;
        match self.dir {
            ConvDir::Forward => cv::conv2d(dev, a, b, self.opts()),
            ConvDir::BackwardInput => cv::conv2d_backward_input(dev, a, b, (s.h, s.w), self.opts()),
            ConvDir::BackwardWeight => cv::conv2d_backward_weight(dev, a, b, s.k, self.opts()),
        }
    }

    /// Direct loops from the definition on a few elements (first/last batch or channel, corner and
    /// middle positions), within R·(1 + sqrt(T))·max Σ|terms| with R = 1e-6 (the family test's bound
    /// against f64).
    pub(super) fn against_host(&self, data: &[Vec<f32>], got: &[f32]) -> Result<f64> {
        let s = self.s;
        let (st, pd) = (s.stride as isize, s.padding as isize);
        let xi = |x: &[f32], n: usize, c: usize, ih: isize, iw: isize| -> Option<f64> {
            (ih >= 0 && iw >= 0 && (ih as usize) < s.h && (iw as usize) < s.w)
                .then(|| x[((n * s.ci + c) * s.h + ih as usize) * s.w + iw as usize] as f64)
        };
        let wi = |w: &[f32], o: usize, c: usize, kh: usize, kw: usize| w[((o * s.ci + c) * s.k + kh) * s.k + kw] as f64;
        let yi =
            |y: &[f32], n: usize, o: usize, oh: usize, ow: usize| y[((n * s.co + o) * s.ho + oh) * s.wo + ow] as f64;
        let ends = |len: usize| {
            let mut v = vec![0, len - 1];
            v.dedup();
            v
        };
        let spots = |a: usize, b: usize| {
            let mut v = vec![(0, 0), (a / 2, b / 2), (a - 1, b - 1)];
            v.dedup();
            v
        };
        // (index, value, Σ|terms|, name)
        let mut checks: Vec<(usize, f64, f64, String)> = Vec::new();
        match self.dir {
            ConvDir::Forward => {
                let (x, w) = (&data[0], &data[1]);
                for n in ends(s.n) {
                    for o in ends(s.co) {
                        for (oh, ow) in spots(s.ho, s.wo) {
                            let (mut acc, mut mag) = (0f64, 0f64);
                            for c in 0..s.ci {
                                for kh in 0..s.k {
                                    for kw in 0..s.k {
                                        let ih = oh as isize * st - pd + kh as isize;
                                        let iw = ow as isize * st - pd + kw as isize;
                                        if let Some(xv) = xi(x, n, c, ih, iw) {
                                            let t = xv * wi(w, o, c, kh, kw);
                                            acc += t;
                                            mag += t.abs();
                                        }
                                    }
                                }
                            }
                            let idx = ((n * s.co + o) * s.ho + oh) * s.wo + ow;
                            checks.push((idx, acc, mag, format!("y[{n}, {o}, {oh}, {ow}]")));
                        }
                    }
                }
            }
            ConvDir::BackwardInput => {
                let (dy, w) = (&data[0], &data[1]);
                for n in ends(s.n) {
                    for c in ends(s.ci) {
                        for (ih, iw) in spots(s.h, s.w) {
                            let (mut acc, mut mag) = (0f64, 0f64);
                            for o in 0..s.co {
                                for kh in 0..s.k {
                                    for kw in 0..s.k {
                                        let (th, tw) = (ih as isize + pd - kh as isize, iw as isize + pd - kw as isize);
                                        if th < 0 || tw < 0 || th % st != 0 || tw % st != 0 {
                                            continue;
                                        }
                                        let (oh, ow) = ((th / st) as usize, (tw / st) as usize);
                                        if oh < s.ho && ow < s.wo {
                                            let t = yi(dy, n, o, oh, ow) * wi(w, o, c, kh, kw);
                                            acc += t;
                                            mag += t.abs();
                                        }
                                    }
                                }
                            }
                            let idx = ((n * s.ci + c) * s.h + ih) * s.w + iw;
                            checks.push((idx, acc, mag, format!("dx[{n}, {c}, {ih}, {iw}]")));
                        }
                    }
                }
            }
            ConvDir::BackwardWeight => {
                let (x, dy) = (&data[0], &data[1]);
                for o in ends(s.co) {
                    for c in ends(s.ci) {
                        for (kh, kw) in spots(s.k, s.k) {
                            let (mut acc, mut mag) = (0f64, 0f64);
                            for n in 0..s.n {
                                for oh in 0..s.ho {
                                    for ow in 0..s.wo {
                                        let ih = oh as isize * st - pd + kh as isize;
                                        let iw = ow as isize * st - pd + kw as isize;
                                        if let Some(xv) = xi(x, n, c, ih, iw) {
                                            let t = xv * yi(dy, n, o, oh, ow);
                                            acc += t;
                                            mag += t.abs();
                                        }
                                    }
                                }
                            }
                            let idx = ((o * s.ci + c) * s.k + kh) * s.k + kw;
                            checks.push((idx, acc, mag, format!("dw[{o}, {c}, {kh}, {kw}]")));
                        }
                    }
                }
            }
        }
        let mag = checks.iter().fold(0f64, |m, c| m.max(c.2));
        let tol = 1e-6 * (1.0 + (self.terms() as f64).sqrt()) * mag.max(1e-3);
        let mut max_err = 0f64;
        for (idx, want, _, what) in &checks {
            max_err = max_err.max(check_one(got, *idx, *want, tol, &|| what.clone())?);
        }
        Ok(max_err)
    }
}

/// conv2d of x [n, ci, hw, hw] with a [co, ci, k, k] kernel, stride and padding, in direction `dir`.
/// FLOP: 2·N·Co·Ho·Wo·Ci·K² in each direction; bytes: the op's two inputs and its output once.
#[allow(clippy::too_many_arguments)]
pub fn conv_case(
    n: usize,
    ci: usize,
    hw: usize,
    co: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dir: ConvDir,
) -> Case {
    let opts = Conv2d { stride, padding };
    let s = cv::conv2d_shape(&[n, ci, hw, hw], &[co, ci, k, k], opts).expect("benchmark conv shapes are valid");
    let (xs, ws, ys) = (s.x_shape(), s.w_shape(), s.y_shape());
    let numel = |v: &[usize]| v.iter().product::<usize>() as u64;
    let (x_n, w_n, y_n) = (numel(&xs), numel(&ws), numel(&ys));
    let (name, inputs, bytes) = match dir {
        ConvDir::Forward => ("fwd", vec![xs, ws], 4 * (x_n + w_n + y_n)),
        ConvDir::BackwardInput => ("bwd_input", vec![ys, ws], 4 * (y_n + w_n + x_n)),
        ConvDir::BackwardWeight => ("bwd_weight", vec![xs, ys], 4 * (x_n + y_n + w_n)),
    };
    let case = ConvCase { s, dir };
    Case::new(
        "conv2d",
        name,
        format!("x[{n},{ci},{hw},{hw}] w[{co},{ci},{k},{k}] s{stride} p{padding}"),
        2 * s.macs() as u64,
        bytes,
        inputs.into_iter().map(|sh| Input::uniform(sh, -1.0, 1.0)).collect(),
        Check::Conv(case),
        move |dev, x| case.run(dev, &x[0], &x[1]),
    )
}

// ---------------------------------------------------------------------------------------------------
// AdamW

/// One AdamW step at optimizer step `step` (t = step + 1) with a constant learning rate and no
/// clipping. The step is well past the start (1000) so that the bias corrections 1 - β^t do not cancel
/// (at t = 1, 1 - 0.999 amplifies the GPU pow's few-ulp error 1000 times; tests/kernels_optim.rs).
#[derive(Clone, Copy, Debug)]
pub struct AdamCase {
    /// Parameters updated.
    pub n: usize,
    /// Optimizer steps already done.
    pub step: u32,
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl AdamCase {
    /// (p', |m̂/(sqrt(v̂) + eps)|) of element i in f64: p' = p·(1 - lr·wd) - lr·m̂/(sqrt(v̂) + eps),
    /// m̂ = (β1·m + (1-β1)·g)/(1-β1^t), v̂ = (β2·v + (1-β2)·g²)/(1-β2^t), from the f32 hyper-parameters.
    fn closed_form(&self, data: &[Vec<f32>], i: usize) -> (f64, f64) {
        let (p, g, m, v) = (data[0][i] as f64, data[1][i] as f64, data[2][i] as f64, data[3][i] as f64);
        let (lr, b1, b2, eps, wd) =
            (self.lr as f64, self.beta1 as f64, self.beta2 as f64, self.eps as f64, self.weight_decay as f64);
        let t = self.step as f64 + 1.0;
        let m1 = (b1 * m + (1.0 - b1) * g) / (1.0 - b1.powf(t));
        let v1 = (b2 * v + (1.0 - b2) * g * g) / (1.0 - b2.powf(t));
        let u = m1 / (v1.sqrt() + eps);
        (p * (1.0 - lr * wd) - lr * u, u.abs())
    }

    /// The family test's bound: 1e-6 relative plus 1e-4 of the step's size (there lr, its |update| <= 1
    /// for Adam; here lr·max(1, |m̂/(sqrt(v̂) + eps)|), as the inputs are a random optimizer state). The
    /// error of pow in the bias corrections scales the update, not the parameter.
    pub(super) fn tol(&self, data: &[Vec<f32>], i: usize, want: f64) -> f64 {
        let u = self.closed_form(data, i).1;
        1e-4 * self.lr as f64 * u.max(1.0) + 1e-6 * want.abs()
    }

    /// The closed form on 64 spread elements.
    pub(super) fn against_host(&self, data: &[Vec<f32>], got: &[f32]) -> Result<f64> {
        let mut max_err = 0f64;
        for i in (0..64).map(|i| i * (self.n - 1) / 63) {
            let want = self.closed_form(data, i).0;
            let tol = self.tol(data, i, want);
            max_err = max_err.max(check_one(got, i, want, tol, &|| format!("param[{i}]"))?);
        }
        Ok(max_err)
    }
}

/// AdamW over `n` parameters: bandwidth-bound, so counted in bytes only (0 FLOP): reads param, grad,
/// m, v and writes param, m, v: 28·n bytes. v is drawn in [0.01, 1) (a second moment is positive, and
/// away from 0 so the update stays O(lr)).
pub fn adam_case(n: usize) -> Case {
    let a = AdamCase { n, step: 1000, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    let cfg = AdamConfig { beta1: a.beta1, beta2: a.beta2, eps: a.eps, weight_decay: a.weight_decay, decoupled: true };
    let sched = Schedule::Constant { lr: a.lr };
    let f = |lo, hi| Input::uniform(vec![n], lo, hi);
    let step = Input { shape: vec![1], lo: 0.0, hi: 0.0, fixed_u32: Some(a.step) };
    let clip = Input::uniform(vec![2], 1.0, 1.0);
    Case::new(
        "optim",
        "adamw",
        format!("[{n}]"),
        0,
        28 * n as u64,
        vec![f(-1.0, 1.0), f(-1.0, 1.0), f(-1.0, 1.0), f(0.01, 1.0), step, clip],
        Check::Adam(a),
        move |dev, x| {
            optim::adam(dev, &sched, &cfg, &x[0], &x[1], &x[2], &x[3], &x[4], &x[5])?;
            Ok(x[0].clone())
        },
    )
}
