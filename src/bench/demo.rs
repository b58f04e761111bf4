//! The checks `tigel demo` runs: one representative op per kernel family on small random inputs, with
//! the tolerance it must meet against the CPU backend. The command (src/cmd/demo.rs) runs them on every
//! backend present and prints one line per family and backend.

use crate::host::Rng;
use crate::ops::conv::Conv2d;
use crate::ops::dropout::Dropout;
use crate::ops::{
    attention, batch, chnorm, conv, diffusion, dropout, elementwise as ew, embedding, layout, loss, matmul, norm,
    optim, reduce, rng, rope, sample, softmax,
};
use crate::{Device, Result, Tensor};

/// One kernel family's check: a representative op on small random inputs.
pub struct Check {
    /// The family (its shaders/*.wgsl file).
    pub family: &'static str,
    /// What runs.
    pub name: &'static str,
    /// Max |got - want| allowed, relative to max |want| (0: bit-exact).
    pub tol: f32,
    /// Runs the op on a device.
    pub run: fn(&Device, &Inputs) -> Result<Tensor>,
}

/// The inputs every check draws from (host values, uploaded to each device alike).
pub struct Inputs {
    /// n·n values in [-1, 1).
    pub a: Vec<f32>,
    /// n·n more.
    pub b: Vec<f32>,
    /// The size: matrices are n × n.
    pub n: usize,
}

impl Inputs {
    /// `len` values uniform in [lo, hi) from a stream of their own.
    fn u(&self, seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        Rng::new(seed).vec(len, lo, hi)
    }

    /// `len` integers below `below`.
    fn ids(&self, seed: u64, len: usize, below: usize) -> Vec<u32> {
        let mut r = Rng::new(seed);
        (0..len).map(|_| r.below(below) as u32).collect()
    }
}

fn t(d: &Device, shape: &[usize], v: &[f32]) -> Result<Tensor> {
    Tensor::from_f32(d, shape, v)
}

/// u32 results (ids) as f32, so every check compares one way.
fn ids_as_f32(d: &Device, x: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = x.to_u32(d)?.into_iter().map(|v| v as f32).collect();
    t(d, &x.shape, &v)
}

/// One check per kernel family (some families have two).
pub const CHECKS: &[Check] = &[
    Check {
        family: "matmul",
        name: "A·B",
        tol: 1e-5,
        run: |d, i| matmul::matmul(d, &t(d, &[i.n, i.n], &i.a)?, &t(d, &[i.n, i.n], &i.b)?, Default::default()),
    },
    Check {
        family: "matmul",
        name: "A·Bᵀ",
        tol: 1e-5,
        run: |d, i| {
            let opts = matmul::MatmulOpts { trans_b: true, ..Default::default() };
            matmul::matmul(d, &t(d, &[i.n, i.n], &i.a)?, &t(d, &[i.n, i.n], &i.b)?, opts)
        },
    },
    Check {
        family: "elementwise",
        name: "gelu(a) * b + a",
        tol: 1e-5,
        run: |d, i| {
            let (a, b) = (t(d, &[i.n, i.n], &i.a)?, t(d, &[i.n, i.n], &i.b)?);
            ew::add(d, &ew::mul(d, &ew::unary(d, ew::Unary::Gelu, &a)?, &b)?, &a)
        },
    },
    Check { family: "softmax", name: "rows", tol: 1e-5, run: |d, i| softmax::softmax(d, &t(d, &[i.n, i.n], &i.a)?) },
    Check {
        family: "reduce",
        name: "sum over rows",
        tol: 1e-5,
        run: |d, i| reduce::sum(d, &t(d, &[i.n, i.n], &i.a)?, 0, false),
    },
    Check {
        family: "layout",
        name: "transpose",
        tol: 0.0,
        run: |d, i| layout::transpose2d(d, &t(d, &[i.n, i.n], &i.a)?),
    },
    Check { family: "rng", name: "philox normal", tol: 0.0, run: |d, i| rng::normal(d, &[i.n, i.n], 7, 0, 0.0, 1.0) },
    Check {
        family: "attention",
        name: "causal, 2 heads of 8",
        tol: 2e-5,
        run: |d, i| {
            let tl = i.n.clamp(4, 64);
            attention::attention(d, &t(d, &[2, tl, 48], &i.u(11, 2 * tl * 48, -1.5, 1.5))?, 2, true).map(|r| r.0)
        },
    },
    Check {
        family: "rope",
        name: "rotary q, k of 2 heads of 8",
        tol: 1e-5,
        run: |d, i| {
            let tl = i.n.clamp(4, 64);
            let table = t(d, &[tl, 4, 2], &rope::rope_table(tl, 8, 10_000.0))?;
            rope::rope(d, &t(d, &[2, tl, 48], &i.u(12, 2 * tl * 48, -1.5, 1.5))?, &table, 2, 1.0)
        },
    },
    Check {
        family: "norm",
        name: "layer norm",
        tol: 1e-5,
        run: |d, i| {
            let x = t(d, &[i.n, 64], &i.u(12, i.n * 64, -2.0, 2.0))?;
            let (g, b) = (t(d, &[64], &i.u(13, 64, 0.5, 1.5))?, t(d, &[64], &i.u(14, 64, -0.5, 0.5))?);
            norm::layer_norm(d, &x, &g, &b, 1e-5).map(|r| r.0)
        },
    },
    Check {
        family: "chnorm",
        name: "group norm, 4 groups",
        tol: 1e-5,
        run: |d, i| {
            let x = t(d, &[2, 8, 8, 8], &i.u(15, 2 * 8 * 64, -2.0, 2.0))?;
            let (g, b) = (t(d, &[8], &i.u(16, 8, 0.5, 1.5))?, t(d, &[8], &i.u(17, 8, -0.5, 0.5))?);
            chnorm::group_norm(d, &x, &g, &b, 4, 1e-5).map(|r| r.0)
        },
    },
    Check {
        family: "conv",
        name: "conv2d 3x3, padding 1",
        tol: 1e-5,
        run: |d, i| {
            let s = (i.n / 4).clamp(4, 32);
            let x = t(d, &[2, 4, s, s], &i.u(18, 2 * 4 * s * s, -1.0, 1.0))?;
            let w = t(d, &[8, 4, 3, 3], &i.u(19, 8 * 4 * 9, -0.5, 0.5))?;
            conv::conv2d(d, &x, &w, Conv2d { stride: 1, padding: 1 })
        },
    },
    Check {
        family: "embedding",
        name: "lookup",
        tol: 0.0,
        run: |d, i| {
            let ids = Tensor::from_u32(d, &[i.n], &i.ids(20, i.n, 256))?;
            embedding::embedding(d, &ids, &t(d, &[256, 32], &i.u(21, 256 * 32, -1.0, 1.0))?)
        },
    },
    Check {
        family: "loss",
        name: "cross-entropy",
        tol: 1e-5,
        run: |d, i| {
            let logits = t(d, &[i.n, 64], &i.u(22, i.n * 64, -4.0, 4.0))?;
            loss::cross_entropy(d, &logits, &Tensor::from_u32(d, &[i.n], &i.ids(23, i.n, 64))?).map(|r| r.0)
        },
    },
    Check {
        family: "dropout",
        name: "p = 0.3",
        tol: 0.0,
        run: |d, i| {
            let len = i.n * i.n;
            let p = Dropout::new(0.3, 7, 0, len)?;
            dropout::dropout(d, &t(d, &[len], &i.a)?, &p, &optim::step_counter(d, 3)?)
        },
    },
    Check {
        family: "optim",
        name: "EMA update",
        tol: 1e-6,
        run: |d, i| {
            let avg = t(d, &[i.n * i.n], &i.a)?;
            optim::ema(d, &avg, &t(d, &[i.n * i.n], &i.b)?, &optim::step_counter(d, 5)?, 0.9, false)?;
            Ok(avg)
        },
    },
    Check {
        family: "diffusion",
        name: "timestep embedding",
        tol: 1e-4,
        run: |d, i| {
            let steps = Tensor::from_u32(d, &[i.n], &i.ids(24, i.n, 1000))?;
            diffusion::timestep_embedding(d, &steps, 32, 10000.0)
        },
    },
    Check {
        family: "sample",
        name: "rows drawn",
        tol: 0.0,
        run: |d, i| {
            let data = t(d, &[256, 4], &i.u(25, 1024, -1.0, 1.0))?;
            sample::sample_rows(d, &data, None, 32, 5, &optim::step_counter(d, 2)?).map(|r| r.0)
        },
    },
    Check {
        family: "batch",
        name: "text windows",
        tol: 0.0,
        run: |d, i| {
            let bytes: Vec<u8> = i.ids(26, 4096, 256).into_iter().map(|v| v as u8).collect();
            let corpus = Tensor::from_u32(d, &[1024], &batch::pack_bytes(&bytes))?;
            let (x, _) = batch::text_windows(d, &corpus, 0, 4096, 4, 16, 3, &optim::step_counter(d, 1)?)?;
            ids_as_f32(d, &x)
        },
    },
];

/// max |got - want| over max |want| (infinite where only one of them is NaN).
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| if g.is_nan() != w.is_nan() { f32::INFINITY } else { m.max((g - w).abs()) })
        / scale
}
